"""HIPS autograd's worker for ``minidiff bench peers`` (the protocol: :mod:`minidiff.bench.workers`).

Reverse mode by ``autograd.value_and_grad``, forward mode by ``autograd.make_jvp``; convolutions as
im2col (strided slices and one matrix product) and 2×2 max-pooling as a reshape and a max, written in
``autograd.numpy``, which is what an autograd user writes.  autograd and NumPy are imported inside
:func:`handle` only.

Checked against minidiff (loss and JVP of the three models) with autograd 1.9.1 on NumPy 2.4;
``tests/test_bench_peers.py`` runs the check on the MLP wherever the library is installed.
"""

from __future__ import annotations

import os
import sys

from . import QUANTITIES, count_params, serve, time_calls


def forward(anp, plan: list[str], params: list, x):
    k = 0
    for layer in plan:
        if layer == "linear":
            x, k = anp.dot(x, params[k].T) + params[k + 1], k + 2
        elif layer == "conv":
            x, k = _conv(anp, x, params[k]) + params[k + 1][None, :, None, None], k + 2
        elif layer == "relu":
            x = anp.maximum(x, 0.0)
        elif layer == "maxpool2":
            n, c, h, w = x.shape
            x = anp.max(
                anp.reshape(x[:, :, : h // 2 * 2, : w // 2 * 2], (n, c, h // 2, 2, w // 2, 2)), (3, 5)
            )
        else:  # flatten
            x = anp.reshape(x, (x.shape[0], -1))
    return x


def _conv(anp, x, w):
    o, c, kh, kw = w.shape
    n, _, h, wd = x.shape
    ho, wo = h - kh + 1, wd - kw + 1
    cols = anp.stack([x[:, :, i : i + ho, j : j + wo] for i in range(kh) for j in range(kw)], axis=2)
    cols = anp.reshape(cols, (n, c * kh * kw, ho * wo))
    y = anp.matmul(anp.reshape(w, (o, c * kh * kw)), cols)
    return anp.reshape(y, (n, o, ho, wo))


def handle(job: dict) -> dict:
    import autograd
    import autograd.numpy as anp
    import numpy

    plan, folder, dtype = job["plan"], job["dir"], job["dtype"]

    def load(name, dt=dtype):
        return numpy.load(os.path.join(folder, f"{name}.npy")).astype(dt)

    n = count_params(plan)
    params = [load(f"p{i}") for i in range(n)]
    v = [load(f"v{i}") for i in range(n)]
    x, y = load("x"), load("y", "int64")
    rows = numpy.arange(x.shape[0])

    def loss(p):
        logits = forward(anp, plan, p, x)
        top = anp.max(logits, axis=1, keepdims=True)
        lse = anp.log(anp.sum(anp.exp(logits - top), axis=1)) + top[:, 0]
        return anp.mean(lse - logits[rows, y])

    def jvp(u):
        return autograd.make_jvp(loss)(params)(u)

    rng = numpy.random.default_rng(job.get("seed", 0))

    def forward_gradient():
        u = [rng.standard_normal(p.shape, dtype=p.dtype) for p in params]
        f, d = jvp(u)
        return f, [d * ui for ui in u]

    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    version: str | None
    try:
        version = installed("autograd")
    except PackageNotFoundError:  # imported from a source folder
        version = getattr(autograd, "__version__", None)
    info = {"system": "autograd", "version": version, "numpy": numpy.__version__}
    if job["task"] == "check":
        f, d = jvp(v)
        return {"loss": float(f), "jvp": float(d), "info": info}
    value_and_grad = autograd.value_and_grad(loss)
    calls = {
        "f": lambda: loss(params),
        "f_grad": lambda: value_and_grad(params),
        "jvp": lambda: jvp(v),
        "forward_gradient": forward_gradient,
    }
    assert tuple(calls) == QUANTITIES
    return {"samples": time_calls(calls, job["repeats"], job["warmup"]), "info": info}


if __name__ == "__main__":
    sys.exit(serve(handle))
