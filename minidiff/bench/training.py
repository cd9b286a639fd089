"""Training comparison: forward gradient descent against backprop SGD on the embedded digits.

Both methods use the paper's schedule η_i = η₀·exp(−k·i) and the same minibatches.  Loss is recorded
against iterations and against the wall-clock time of the training steps alone.

Tf/Tb (definition): smooth each run's minibatch-loss curve with an exponential moving average
(weight ``smoothing`` on the newest loss); take L* = the lowest smoothed loss *both* runs attain, i.e.
the larger of the two minima; Tf and Tb are the wall-clock times at which the forward-gradient run and
the backprop run first reach L*; Tf/Tb is their ratio.  Below 1, forward gradients got there sooner.
"""

from __future__ import annotations

import math

from ..errors import check_number
from ..nn import functional as F
from ..primitives.creation import asarray
from ..primitives.random import Generator
from ..tensor import pytree
from ..transforms.core import value_and_grad
from ..transforms.forward_gradient import FGD
from .environment import environment
from .rfrb import build_model
from .timing import timed

METHODS = ("fgd", "sgd")


def digits_data(model_name: str, dtype="float32", device=None, seed: int = 0):
    """digits28 train/test split shaped for the model (flat 784 for the MLPs, NCHW for the CNN)."""
    from .. import data

    flat = model_name != "cnn"
    x, y = data.load_digits(size=28, dtype=dtype, device=device, flatten=flat)
    x_tr, x_te, y_tr, y_te = data.train_test_split(x, y, test_fraction=0.2, seed=seed)
    return (x_tr, y_tr), (x_te, y_te)


def accuracy(model, params, x, y, batch: int = 512) -> float:
    from ..primitives.ops import argmax

    hits = 0
    for i in range(0, x.shape[0], batch):
        logits = model.apply(params, x[i : i + batch])
        hits += int((argmax(logits, axis=1) == y[i : i + batch]).sum().item())
    return hits / max(x.shape[0], 1)


def train(
    model_name: str = "mlp",
    method: str = "fgd",
    steps: int = 1000,
    lr: float = 2e-4,
    decay: float = 1e-4,
    batch: int = 64,
    seed: int = 0,
    distribution: str = "normal",
    clip: float | None = None,
    dtype="float32",
    device=None,
    progress=None,
    splits=None,
) -> dict:
    """Train one model with FGD or SGD for ``steps`` minibatches; return the loss history."""
    if method not in METHODS:
        raise ValueError(f"train: unknown method {method!r}; choose one of {METHODS}")
    check_number("train", "steps", steps, low=1, integer=True)
    check_number("train", "lr", lr, low=0)
    from .. import data

    model, _ = build_model(model_name, dtype=dtype, device=device, seed=seed)
    (x_tr, y_tr), (x_te, y_te) = (
        splits if splits is not None else digits_data(model_name, dtype, device, seed)
    )
    fgd = FGD(lr=lr, decay=decay, distribution=distribution, clip=clip, rng=Generator(seed + 1, device))
    state = {"params": model.parameters(), "step": 0}
    one_step = _step_function(model, method, fgd, lr, decay, state)
    batches = lambda epoch: data.batches(x_tr, y_tr, batch, seed=seed + epoch)  # noqa: E731
    history, diverged = run_steps(one_step, batches, steps, progress=progress)
    params = state["params"]
    return {
        "schema": "minidiff.train/1",
        "model": model_name,
        "method": method,
        "lr": lr,
        "decay": decay,
        "batch": batch,
        "steps": len(history["step"]),
        "distribution": distribution if method == "fgd" else None,
        "clip": clip,
        "diverged": diverged,
        "history": history,
        "train_accuracy": accuracy(model, params, x_tr, y_tr),
        "test_accuracy": accuracy(model, params, x_te, y_te),
        "environment": environment(device),
    }


def _step_function(model, method, fgd, lr, decay, state):
    """``step(xb, yb) -> loss value``: one FGD step, or one SGD step at η₀·exp(−k·i), updating
    ``state["params"]``; the minibatch is moved to the device inside the step (and so timed)."""

    def step(xb, yb):
        xb, yb = asarray(xb), asarray(yb)
        f = lambda p: F.cross_entropy(model.apply(p, xb), yb)  # noqa: E731
        if method == "fgd":
            loss, state["params"] = fgd.step(f, state["params"])
        else:
            lr_i = lr * math.exp(-decay * state["step"])
            loss, g = value_and_grad(f)(state["params"])
            state["params"] = pytree.tree_map(lambda p, gp: p - lr_i * gp, state["params"], g)
        state["step"] += 1
        return loss.item()

    return step


def run_steps(step, batches, steps: int, seconds: float = math.inf, progress=None) -> tuple[dict, bool]:
    """Call ``step(xb, yb) -> loss value`` on the minibatches of epoch after epoch (``batches(epoch)``)
    until ``steps`` steps or ``seconds`` of step time, or a non-finite loss (diverged).

    Each step is timed alone (:func:`~minidiff.bench.timing.timed`), so the history's seconds are
    training time only.  Returns ``({"step": [...], "seconds": [...], "loss": [...]}, diverged)``.
    """
    history: dict[str, list] = {"step": [], "seconds": [], "loss": []}
    elapsed, epoch = 0.0, 0
    while len(history["step"]) < steps and elapsed < seconds:
        for xb, yb in batches(epoch):
            value, dt = timed(lambda: step(xb, yb))  # noqa: B023 - called at once
            elapsed += dt
            history["step"].append(len(history["step"]) + 1)
            history["seconds"].append(elapsed)
            history["loss"].append(value)
            if progress is not None:
                progress(1)
            if not math.isfinite(value):
                return history, True
            if len(history["step"]) >= steps or elapsed >= seconds:
                break
        epoch += 1
    return history, False


def smooth(losses, weight: float = 0.05):
    """Exponential moving average of a loss curve (``weight`` on the newest value)."""
    out, avg = [], None
    for v in losses:
        avg = v if avg is None else (1 - weight) * avg + weight * v
        out.append(avg)
    return out


def tf_over_tb(fgd_run: dict, sgd_run: dict, weight: float = 0.05) -> dict:
    """Tf/Tb as defined in this module's docstring, with L*, Tf and Tb."""
    sf, sb = smooth(fgd_run["history"]["loss"], weight), smooth(sgd_run["history"]["loss"], weight)
    finite_f = [v for v in sf if math.isfinite(v)]
    finite_b = [v for v in sb if math.isfinite(v)]
    if not finite_f or not finite_b:
        return {"L_star": float("nan"), "Tf": float("nan"), "Tb": float("nan"), "Tf_over_Tb": float("nan")}
    target = max(min(finite_f), min(finite_b))

    def first_time(curve, run):
        for v, t in zip(curve, run["history"]["seconds"]):
            if v <= target:
                return t
        return float("nan")

    tf, tb = first_time(sf, fgd_run), first_time(sb, sgd_run)
    return {"L_star": target, "Tf": tf, "Tb": tb, "Tf_over_Tb": tf / tb if tb else float("nan")}
