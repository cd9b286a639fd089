"""Rf and Rb under control (the protocol of design.md, "Measuring"), for any ``loss(params)``.

runtime(f) is one evaluation of the loss on one minibatch.  Rf is the time of one forward-gradient
evaluation — sample v, evaluate f and ∇f·v in one forward-mode pass, form (∇f·v)·v — over runtime(f),
with v and the estimate in buffers reused from call to call, as in a training loop; the sampling of v
is also timed apart, Rjvp is the JVP pass alone (f and ∇f·v along a given v), and Rf_floor = Rjvp +
sampling / runtime(f), what Rf cannot go below.
Rb is the time of one reverse-mode evaluation of f and ∇f over runtime(f).  Each is a median over
repeats after warm-up with its quartiles, every ratio with a quartile-based spread; the FLOP model
(counted from the primitives executed), the peak memory of each mode, the allocator setting and the
environment are recorded beside them.

:func:`measure_loss` measures a function of a pytree of tensors; :func:`rfrb` is the same for an
``md.nn`` model with softmax cross-entropy on one minibatch (``minidiff bench rfrb``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .. import backend
from ..errors import DTypeError, ShapeError, check_number
from ..nn import functional as F
from ..nn.modules import Module
from ..primitives.creation import asarray
from ..primitives.random import Generator
from ..tensor.core import DeviceLike, DTypeLike, Tensor
from ..tensor.pytree import PyTree
from ..transforms.core import jvp, value_and_grad
from ..transforms.forward_gradient import (
    ForwardGradientWorkspace,
    check_fgd_settings,
    forward_grad,
    sample_directions,
)
from .environment import environment
from .flops import executed_flop_model
from .memory import peak_memory
from .timing import Measurement, measure, ratio

SCHEMA = "minidiff.rfrb/2"
DEPTH_SCHEMA = "minidiff.depth/2"

#: What is timed, in order (each a :class:`~minidiff.bench.Measurement` in the result, in seconds).
TIMED = ("runtime_f", "sample_v", "jvp", "forward_pass", "forward_gradient", "backprop")
#: Every ratio of the result (``{"value", "low", "high"}``): numerator and denominator timings.
RATIOS = {
    "Rf": ("forward_gradient", "runtime_f"),
    "Rf_without_sampling": ("forward_pass", "runtime_f"),
    "Rjvp": ("jvp", "runtime_f"),
    "Rb": ("backprop", "runtime_f"),
    "Rf_over_Rb": ("forward_gradient", "backprop"),
}
#: What Rf cannot go below: the JVP pass plus drawing v (``Rf_floor``: their medians' sum over
#: runtime(f), the band from the quartiles as for a ratio); the rest of Rf is forming (∇f·v)·v.
FLOOR = (("jvp", "sample_v"), "runtime_f")

#: model name -> (builder, shape of one input example)
MODELS = {
    "logreg": ("logreg", (784,)),
    "mlp": ("mlp", (784,)),
    "cnn": ("cnn", (1, 28, 28)),
}


def build_model(
    name: str, dtype: DTypeLike = "float32", device: DeviceLike = None, seed: int = 0, **kwargs: Any
) -> tuple[Module, tuple[int, ...]]:
    """One of the paper's models by name (``logreg``, ``mlp``, ``cnn``, ``mlp_depth``)."""
    from ..nn import models

    if name == "mlp_depth":
        return models.mlp_depth(dtype=dtype, device=device, rng=Generator(seed, device), **kwargs), (784,)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    builder, shape = MODELS[name]
    return getattr(models, builder)(dtype=dtype, device=device, rng=Generator(seed, device), **kwargs), shape


def synthetic_batch(
    input_shape: tuple[int, ...],
    batch: int,
    classes: int = 10,
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
    seed: int = 1,
) -> tuple[Tensor, Tensor]:
    """A fixed random minibatch (timings do not depend on the values)."""
    rng = Generator(seed, device)
    return rng.normal((batch,) + tuple(input_shape), dtype=dtype), rng.randint(0, classes, (batch,))


def measure_loss(
    loss: Callable[..., Any],
    params: PyTree,
    *,
    name: str | None = None,
    repeats: int = 20,
    warmup: int = 3,
    distribution: str = "normal",
    seed: int = 0,
    memory: bool = True,
    flops: bool = True,
    profile: bool = False,
    clock: Callable[[], float] | None = None,
) -> dict:
    """Measure runtime(f), Rf, Rjvp, Rb and Rf/Rb of ``loss(params)``, a scalar function of a pytree of
    float tensors (the schema ``minidiff.rfrb/2``, as ``minidiff bench rfrb --json`` writes it).

    ``name`` labels the result (default: the function's name); ``distribution`` is the law of v
    (``"normal"`` or ``"rademacher"``), drawn from ``seed``; ``memory`` adds the peak memory of each
    mode, ``flops`` the FLOP model counted from the primitives executed (``None`` with a reason in
    ``flop_model_note`` when the loss runs no matrix product), ``profile`` the seconds per primitive
    group of each pass (:func:`minidiff.bench.profile_loss`).  ``clock`` replaces the timer (tests).

    >>> import minidiff as md
    >>> from minidiff.bench import measure_loss
    >>> x = md.random.Generator(1).normal((32, 10))
    >>> def my_loss(p):
    ...     return md.mean(md.tanh(x @ p["w1"]) @ p["w2"])
    >>> params = {"w1": md.ones((10, 16)), "w2": md.ones((16,))}
    >>> r = measure_loss(my_loss, params, repeats=2, warmup=1)
    >>> r["name"], r["units"], r["parameters"], r["flop_model"]["forward_flops"]
    ('my_loss', 'seconds', 176, 11264)
    >>> sorted(r["Rf_over_Rb"])
    ['high', 'low', 'value']
    """
    fn_name = getattr(loss, "__qualname__", type(loss).__name__)
    leaves = _check_inputs(fn_name, loss, params, repeats, warmup, distribution, seed)
    device, dtype = leaves[0].device, leaves[0].dtype
    rng = Generator(seed, device)
    calls = _mode_calls(loss, params, rng, distribution)
    timing = {"device": device} if clock is None else {"device": device, "clock": clock}
    t = {key: measure(calls[key], repeats, warmup, **timing) for key in TIMED}
    result = {
        "schema": SCHEMA,
        "name": name or fn_name,
        "units": "seconds",
        "seed": seed,
        "warmup": warmup,
        "repeats": repeats,
        "dtype": str(dtype),
        "device": device.name,
        "distribution": distribution,
        "parameters": sum(p.size for p in leaves),
        **{key: m.as_dict() for key, m in t.items()},
        **{key: ratio(t[num], t[den]) for key, (num, den) in RATIOS.items()},
        "Rf_floor": floor_ratio([t[k] for k in FLOOR[0]], t[FLOOR[1]]),
    }
    if flops:
        model, note = executed_flop_model(loss, params, sample_directions(params, seed, distribution))
        result["flop_model"] = model
        if note:
            result["flop_model_note"] = note
    if memory:
        peaks = {
            "f": "runtime_f",
            "jvp": "jvp",
            "forward_gradient": "forward_gradient_first_call",
            "backprop": "backprop",
        }
        result["peak_memory_bytes"] = {k: peak_memory(calls[key], device) for k, key in peaks.items()}
    if profile:
        from .profile import profile_loss

        result["profile"] = profile_loss(loss, params, distribution=distribution, seed=seed)
    result["environment"] = environment(device)
    return result


def floor_ratio(parts: Sequence[Measurement], den: Measurement) -> dict:
    """``Σ parts / den`` as a ratio with its band: the medians' sum over the median, and (Σ q1)/q3,
    (Σ q3)/q1 — the quartile band of :func:`~minidiff.bench.timing.ratio` for a sum of timings.

    >>> from minidiff.bench.timing import summarize
    >>> floor_ratio([summarize([1.0, 2.0, 3.0]), summarize([1.0])], summarize([1.0, 1.0, 1.0]))
    {'value': 3.0, 'low': 2.5, 'high': 3.5}
    """
    return {
        "value": sum(p.median for p in parts) / den.median,
        "low": sum(p.q1 for p in parts) / den.q3 if den.q3 else float("nan"),
        "high": sum(p.q3 for p in parts) / den.q1 if den.q1 else float("nan"),
    }


def _check_inputs(
    fn_name: str, loss: Any, params: PyTree, repeats: int, warmup: int, distribution: str, seed: Any
) -> list:
    """The parameter leaves, after checking the settings, the leaves and one evaluation of the loss."""
    op = f"measure_loss({fn_name})"
    check_number(op, "repeats", repeats, low=1, integer=True)
    check_number(op, "warmup", warmup, low=0, integer=True)
    check_number(op, "seed", seed, low=0, integer=True)
    check_fgd_settings(op, distribution=distribution)
    if not callable(loss):
        raise TypeError(
            f"measure_loss: the loss must be a function of the parameters, got {type(loss).__name__}"
        )
    leaves = _labelled_leaves(params)
    if not leaves:
        raise ValueError(f"{op}: params holds no tensor; pass a tensor or a dict/list/tuple of tensors")
    for path, leaf in leaves:
        if not isinstance(leaf, Tensor):
            raise TypeError(
                f"{op}: parameter {path} is a {type(leaf).__name__}, not a tensor; convert it with md.asarray"
            )
        if leaf.dtype.kind != "f":
            raise DTypeError(
                f"{op}: parameter {path} is a {leaf.dtype} tensor of shape {leaf.shape}; only floating-point "
                "parameters carry derivatives (convert with .astype('float32'))"
            )
    _check_loss_value(op, loss, params)
    return [leaf for _, leaf in leaves]


def _check_loss_value(op: str, loss: Callable[..., Any], params: PyTree) -> None:
    out = loss(params)
    if not isinstance(out, Tensor) or out.shape != ():
        what = f"shape {out.shape}" if isinstance(out, Tensor) else f"a {type(out).__name__}"
        raise ShapeError(
            f"{op}: the loss must return a scalar tensor, got {what}; reduce it (md.sum, md.mean)"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        forward_grad(loss, params, 0)
    if any("does not depend on the parameters" in str(w.message) for w in caught):
        raise ValueError(f"{op}: the loss does not depend on the parameters; there is no gradient to measure")


def _labelled_leaves(tree: PyTree, path: str = "") -> list[tuple[str, object]]:
    """``(path, leaf)`` of every leaf, as ``params['w'][0]``, in the order of ``pytree.flatten``."""
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in _labelled_leaves(tree[k], f"{path}[{k!r}]")]
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        return [x for i, t in enumerate(tree) for x in _labelled_leaves(t, f"{path}[{i}]")]
    if tree is None:
        return []
    return [(f"params{path}", tree)]


def _mode_calls(f: Callable[..., Any], params: PyTree, rng: Any, distribution: str) -> dict:
    """What is timed (:data:`TIMED`): f; sampling v; the JVP pass along a given v; the forward pass
    with a given v and (∇f·v)·v formed; the whole forward gradient (sampling included); reverse mode.

    The forward gradient runs as a training loop runs it (``md.optim.FGD``): v is drawn into, and the
    estimate formed in, buffers reused from call to call (a
    :class:`~minidiff.transforms.forward_gradient.ForwardGradientWorkspace`); sampling v alone fills a
    reused buffer too.  Peak memory is taken on a first call (``forward_gradient_first_call``, a new
    workspace), so it counts those buffers."""
    grad_fn = value_and_grad(f)
    v = sample_directions(params, rng, distribution)
    sampled, given, drawn = ForwardGradientWorkspace(), ForwardGradientWorkspace(), ForwardGradientWorkspace()
    return {
        "runtime_f": lambda: f(params),
        "sample_v": lambda: sample_directions(
            params, rng, distribution, out=drawn.buffers("directions", params)
        ),
        "jvp": lambda: jvp(f, (params,), (v,)),
        "forward_pass": lambda: forward_grad(f, params, rng, directions=v, workspace=given),
        "forward_gradient": lambda: forward_grad(
            f, params, rng, distribution=distribution, workspace=sampled
        ),
        "forward_gradient_first_call": lambda: forward_grad(
            f, params, rng, distribution=distribution, workspace=ForwardGradientWorkspace()
        ),
        "backprop": lambda: grad_fn(params),
    }


def rfrb(
    model: Module,
    input_shape: tuple[int, ...],
    batch: int = 64,
    repeats: int = 20,
    warmup: int = 3,
    distribution: str = "normal",
    seed: int = 0,
    memory: bool = True,
    data: tuple[Tensor, Tensor] | None = None,
    clock: Callable[[], float] | None = None,
    name: str = "model",
    profile: bool = False,
) -> dict:
    """:func:`measure_loss` of ``model`` (an ``md.nn`` module) with softmax cross-entropy on one
    minibatch: ``data = (x, y)``, or a fixed synthetic batch of ``batch`` examples of ``input_shape``."""
    params = model.parameters()
    leaves = [leaf for _, leaf in _labelled_leaves(params) if isinstance(leaf, Tensor)]
    if not leaves:
        raise ValueError(f"rfrb: the model {type(model).__name__} has no parameters to differentiate")
    device, dtype = leaves[0].device, leaves[0].dtype
    x, y = data if data is not None else synthetic_batch(input_shape, batch, dtype=dtype, device=device)
    x, y = asarray(x, device=device), asarray(y, device=device)

    def cross_entropy_loss(p: PyTree) -> Tensor:
        return F.cross_entropy(model.apply(p, x), y)

    r = measure_loss(
        cross_entropy_loss,
        params,
        name=name,
        repeats=repeats,
        warmup=warmup,
        distribution=distribution,
        seed=seed,
        memory=memory,
        profile=profile,
        clock=clock,
    )
    return {**r, "batch": int(x.shape[0]), "data": "synthetic" if data is None else "given"}


def depth_sweep(
    layers: Sequence[int] = (1, 2, 5, 10, 20, 50, 100),
    width: int = 1024,
    batch: int = 64,
    repeats: int = 5,
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
    distribution: str = "normal",
    progress: Callable[[int], Any] | None = None,
    warmup: int = 1,
    seed: int = 0,
) -> dict:
    """Rf, Rb and peak memory of each mode for MLPs of increasing depth (one flat row per depth, each
    ratio with its quartile-based spread as ``<ratio>_low`` and ``<ratio>_high``)."""
    rows = []
    for n in layers:
        model, shape = build_model("mlp_depth", dtype=dtype, device=device, n_hidden_layers=n, width=width)
        r = rfrb(
            model,
            shape,
            batch=batch,
            repeats=repeats,
            warmup=warmup,
            distribution=distribution,
            seed=seed,
            name=f"mlp_depth_{n}",
        )
        rows.append(_depth_row(n, r))
        if progress is not None:
            progress(n)
    return {
        "schema": DEPTH_SCHEMA,
        "units": "seconds",
        "width": width,
        "batch": batch,
        "dtype": str(dtype),
        "distribution": distribution,
        "seed": seed,
        "warmup": warmup,
        "repeats": repeats,
        "rows": rows,
        "environment": environment(backend.get_device(device)),
    }


def _depth_row(n: int, r: dict) -> dict:
    mem = r["peak_memory_bytes"]
    row = {"layers": n, "parameters": r["parameters"]}
    for key in ("Rf", "Rb", "Rf_over_Rb"):
        row.update({key: r[key]["value"], f"{key}_low": r[key]["low"], f"{key}_high": r[key]["high"]})
    return {
        **row,
        "flop_Rf": r["flop_model"]["Rf"],
        "flop_Rb": r["flop_model"]["Rb"],
        "peak_memory_forward_gradient": mem["forward_gradient"],
        "peak_memory_backprop": mem["backprop"],
        "memory_ratio_backprop_over_forward": mem["backprop"] / max(mem["forward_gradient"], 1),
        "runtime_f": r["runtime_f"]["median"],
    }
