"""PyTorch's worker for ``minidiff bench peers`` (the protocol: :mod:`minidiff.bench.workers`).

Eager mode: reverse mode by ``torch.autograd.grad``, forward mode by ``torch.func.jvp`` (dual tensors).
``job["threads"] > 0`` sets ``torch.set_num_threads``.  PyTorch and NumPy (to read the ``.npy`` files)
are imported inside :func:`handle` only, so importing this module needs neither.
"""

from __future__ import annotations

import os
import sys

from . import QUANTITIES, count_params, serve, time_calls


def forward(torch, plan: list[str], params: list, x):
    F = torch.nn.functional
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
            x = x.reshape(x.shape[0], -1)
    return x


def handle(job: dict) -> dict:
    import numpy
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    torch.manual_seed(job.get("seed", 0))
    plan, folder = job["plan"], job["dir"]
    dtype = getattr(torch, job["dtype"])

    def load(name, dt=dtype):
        return torch.from_numpy(numpy.load(os.path.join(folder, f"{name}.npy"))).to(dt)

    n = count_params(plan)
    params = [load(f"p{i}") for i in range(n)]
    v = [load(f"v{i}") for i in range(n)]
    x, y = load("x"), load("y", torch.int64)

    def loss(*p):
        return torch.nn.functional.cross_entropy(forward(torch, plan, list(p), x), y)

    info = {"system": "torch", "version": torch.__version__, "threads": torch.get_num_threads()}
    if job["task"] == "check":
        with torch.no_grad():
            value, d = torch.func.jvp(loss, tuple(params), tuple(v))
        return {"loss": value.item(), "jvp": d.item(), "info": info}
    leaves = [p.clone().requires_grad_(True) for p in params]

    def f_grad():
        value = loss(*leaves)
        return value, torch.autograd.grad(value, leaves)

    def forward_gradient():
        with torch.no_grad():
            u = [torch.randn_like(p) for p in params]
            value, d = torch.func.jvp(loss, tuple(params), tuple(u))
            return value, [d * ui for ui in u]

    def jvp():
        with torch.no_grad():
            return torch.func.jvp(loss, tuple(params), tuple(v))

    def f():
        with torch.no_grad():
            return loss(*params)

    calls = {"f": f, "f_grad": f_grad, "jvp": jvp, "forward_gradient": forward_gradient}
    assert tuple(calls) == QUANTITIES
    return {"samples": time_calls(calls, job["repeats"], job["warmup"]), "info": info}


if __name__ == "__main__":
    sys.exit(serve(handle))
