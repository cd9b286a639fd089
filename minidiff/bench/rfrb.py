"""Rf and Rb under control (the protocol of design.md, "Measuring").

runtime(f) is one evaluation of the loss on one minibatch.  Rf is the time of one forward-gradient
evaluation — sample v, evaluate f and ∇f·v in one forward-mode pass, form (∇f·v)·v — over runtime(f);
the sampling of v is also timed apart.  Rb is the time of one reverse-mode evaluation of f and ∇f over
runtime(f).  Each is a median over repeats after warm-up with its quartiles; the FLOP-model values,
the peak memory of each mode, the allocator setting and the environment are recorded beside them.
"""

from __future__ import annotations

from .. import backend
from ..nn import functional as F
from ..primitives.creation import asarray
from ..primitives.random import Generator
from ..transforms.core import value_and_grad
from ..transforms.forward_gradient import forward_grad, sample_directions
from .environment import environment
from .flops import flop_model, layer_flops
from .memory import peak_memory
from .timing import measure, ratio

SCHEMA = "minidiff.rfrb/1"

#: model name -> (builder, shape of one input example)
MODELS = {
    "logreg": ("logreg", (784,)),
    "mlp": ("mlp", (784,)),
    "cnn": ("cnn", (1, 28, 28)),
}


def build_model(name: str, dtype="float32", device=None, seed: int = 0, **kwargs):
    """One of the paper's models by name (``logreg``, ``mlp``, ``cnn``, ``mlp_depth``)."""
    from ..nn import models

    if name == "mlp_depth":
        return models.mlp_depth(dtype=dtype, device=device, rng=Generator(seed, device), **kwargs), (784,)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    builder, shape = MODELS[name]
    return getattr(models, builder)(dtype=dtype, device=device, rng=Generator(seed, device), **kwargs), shape


def synthetic_batch(input_shape, batch: int, classes: int = 10, dtype="float32", device=None, seed: int = 1):
    """A fixed random minibatch (timings do not depend on the values)."""
    rng = Generator(seed, device)
    return rng.normal((batch,) + tuple(input_shape), dtype=dtype), rng.randint(0, classes, (batch,))


def rfrb(
    model,
    input_shape,
    batch: int = 64,
    repeats: int = 20,
    warmup: int = 3,
    distribution: str = "normal",
    seed: int = 0,
    memory: bool = True,
    data=None,
    clock=None,
) -> dict:
    """Measure runtime(f), Rf, Rb and Rf/Rb of ``model`` with softmax cross-entropy on one minibatch."""
    params = model.parameters()
    leaves = _leaves(params)
    device, dtype = leaves[0].device, leaves[0].dtype
    x, y = data if data is not None else synthetic_batch(input_shape, batch, dtype=dtype, device=device)
    x, y = asarray(x, device=device), asarray(y, device=device)

    def f(p):
        return F.cross_entropy(model.apply(p, x), y)

    rng = Generator(seed, device)
    calls = _mode_calls(f, params, rng, distribution)
    timing = {"device": device} if clock is None else {"device": device, "clock": clock}
    t = {name: measure(fn, repeats, warmup, **timing) for name, fn in calls.items()}
    result = {
        "schema": SCHEMA,
        "batch": batch,
        "dtype": str(dtype),
        "device": device.name,
        "distribution": distribution,
        "repeats": repeats,
        "parameters": sum(p.size for p in leaves),
        **{name: m.as_dict() for name, m in t.items()},
        "Rf": ratio(t["forward_gradient"], t["runtime_f"]),
        "Rf_without_sampling": ratio(t["forward_pass"], t["runtime_f"]),
        "Rb": ratio(t["backprop"], t["runtime_f"]),
        "Rf_over_Rb": t["forward_gradient"].median / t["backprop"].median,
        "flop_model": flop_model(f for _, _, f in layer_flops(model, (batch,) + tuple(input_shape))),
        "environment": environment(device),
    }
    if memory:
        peaks = {"f": "runtime_f", "forward_gradient": "forward_gradient", "backprop": "backprop"}
        result["peak_memory_bytes"] = {k: peak_memory(calls[name], device) for k, name in peaks.items()}
    return result


def _mode_calls(f, params, rng, distribution) -> dict:
    """What is timed, in order: f; sampling v; the forward pass with a given v; the whole forward
    gradient (sampling included); reverse mode (f and ∇f)."""
    grad_fn = value_and_grad(f)
    v = sample_directions(params, rng, distribution)
    return {
        "runtime_f": lambda: f(params),
        "sample_v": lambda: sample_directions(params, rng, distribution),
        "forward_pass": lambda: forward_grad(f, params, rng, directions=v),
        "forward_gradient": lambda: forward_grad(f, params, rng, distribution=distribution),
        "backprop": lambda: grad_fn(params),
    }


def _leaves(tree):
    from ..tensor.pytree import flatten

    return flatten(tree)[0]


def depth_sweep(
    layers=(1, 2, 5, 10, 20, 50, 100),
    width: int = 1024,
    batch: int = 64,
    repeats: int = 5,
    dtype="float32",
    device=None,
    distribution="normal",
    progress=None,
) -> dict:
    """Rf, Rb and peak memory of each mode for MLPs of increasing depth."""
    rows = []
    for n in layers:
        model, shape = build_model("mlp_depth", dtype=dtype, device=device, n_hidden_layers=n, width=width)
        r = rfrb(model, shape, batch=batch, repeats=repeats, warmup=1, distribution=distribution)
        mem = r["peak_memory_bytes"]
        rows.append(
            {
                "layers": n,
                "parameters": r["parameters"],
                "Rf": r["Rf"]["value"],
                "Rb": r["Rb"]["value"],
                "Rf_over_Rb": r["Rf_over_Rb"],
                "flop_Rf": r["flop_model"]["Rf"],
                "flop_Rb": r["flop_model"]["Rb"],
                "peak_memory_forward_gradient": mem["forward_gradient"],
                "peak_memory_backprop": mem["backprop"],
                "memory_ratio_backprop_over_forward": mem["backprop"] / max(mem["forward_gradient"], 1),
                "runtime_f": r["runtime_f"]["median"],
            }
        )
        if progress is not None:
            progress(n)
    return {
        "schema": "minidiff.depth/1",
        "width": width,
        "batch": batch,
        "rows": rows,
        "environment": environment(backend.get_device(device)),
    }
