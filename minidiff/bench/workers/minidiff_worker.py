"""minidiff's worker for ``minidiff bench peers`` (the protocol: :mod:`minidiff.bench.workers`).

Arrays are read through ``minidiff.backend`` (this module imports no NumPy itself).
"""

from __future__ import annotations

import os
import sys

import minidiff as md
from minidiff import backend
from minidiff.nn import functional as F

from . import QUANTITIES, count_params, serve, time_calls


def load(folder: str, name: str, dtype: str | None = None) -> md.Tensor:
    array = backend.numpy_module.load(os.path.join(folder, f"{name}.npy"))
    return md.asarray(array if dtype is None else array.astype(dtype))


def norm(tensors: list) -> float:
    """The Euclidean norm of a list of tensors taken as one vector (in float64)."""
    return sum(float(md.sum(t.astype("float64") ** 2).item()) for t in tensors) ** 0.5


def rms(tensors: list) -> float:
    """The root mean square of the entries of a list of tensors."""
    return norm(tensors) / sum(t.size for t in tensors) ** 0.5


def forward(plan: list[str], params: list, x: md.Tensor) -> md.Tensor:
    """The plan's network applied to ``x`` with ``params`` (weight, bias of each dense/conv layer)."""
    k = 0
    for layer in plan:
        if layer in ("linear", "conv"):
            op = F.linear if layer == "linear" else F.conv2d
            x, k = op(x, params[k], params[k + 1]), k + 2
        elif layer == "relu":
            x = F.relu(x)
        elif layer == "maxpool2":
            x = F.max_pool2d(x, 2)
        else:  # flatten
            x = md.reshape(x, (x.shape[0], -1))
    return x


def handle(job: dict) -> dict:
    plan, folder, dtype = job["plan"], job["dir"], job["dtype"]
    n = count_params(plan)
    params = [load(folder, f"p{i}", dtype) for i in range(n)]
    v = [load(folder, f"v{i}", dtype) for i in range(n)]
    x, y = load(folder, "x", dtype), load(folder, "y")

    def loss(p):
        return F.cross_entropy(forward(plan, p, x), y)

    info = {"system": "minidiff", "version": md.__version__, "numpy": backend.numpy_module.__version__}
    if job["task"] == "check":
        f, d = md.jvp(loss, (params,), (v,))
        g = md.grad(loss)(params)
        return {"loss": f.item(), "jvp": d.item(), "grad_norm": norm(g), "v_rms": rms(v), "info": info}
    value_and_grad = md.value_and_grad(loss)
    rng = md.random.Generator(job.get("seed", 0))
    calls = {
        "f": lambda: loss(params),
        "f_grad": lambda: value_and_grad(params),
        "jvp": lambda: md.jvp(loss, (params,), (v,)),
        "forward_gradient": lambda: md.forward_grad(loss, params, rng),
    }
    assert tuple(calls) == QUANTITIES
    return {"samples": time_calls(calls, job["repeats"], job["warmup"]), "info": info}


if __name__ == "__main__":
    sys.exit(serve(handle))
