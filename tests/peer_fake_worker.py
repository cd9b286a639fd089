"""A fake peer for ``minidiff bench peers`` tests: the dense models (logreg, MLP) in plain NumPy, forward
and reverse mode written out by hand, speaking the worker protocol of :mod:`minidiff.bench.workers`.

Run as ``python -m peer_fake_worker`` with this folder on ``PYTHONPATH``.  Environment knobs for the
tests: ``FAKE_PEER_LOSS_SHIFT`` / ``FAKE_PEER_JVP_SHIFT`` add a constant to the loss / JVP it reports
(a peer that computes something else).  A plan with a convolution is refused with an error.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from minidiff.bench.workers import count_params, serve, time_calls


def _forward(plan, params, x):
    """Logits and what reverse mode needs (the input of each dense layer, the mask of each ReLU)."""
    k, saved = 0, []
    for layer in plan:
        if layer == "linear":
            saved.append(("linear", k, x))
            x, k = x @ params[k].T + params[k + 1], k + 2
        elif layer == "relu":
            saved.append(("relu", x > 0))
            x = np.maximum(x, 0)
        elif layer != "flatten":
            raise ValueError(f"the fake peer knows dense layers only, not {layer!r}")
    return x, saved


def _softmax_ce(logits, y):
    top = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - top)
    lse = np.log(e.sum(axis=1)) + top[:, 0]
    p = e / e.sum(axis=1, keepdims=True)
    return np.mean(lse - logits[np.arange(len(y)), y]), p


def loss(plan, params, x, y):
    return _softmax_ce(_forward(plan, params, x)[0], y)[0]


def value_and_grad(plan, params, x, y):
    logits, saved = _forward(plan, params, x)
    f, p = _softmax_ce(logits, y)
    g = p.copy()
    g[np.arange(len(y)), y] -= 1
    g /= len(y)
    grads = [None] * len(params)
    for entry in reversed(saved):
        if entry[0] == "relu":
            g = g * entry[1]
        else:
            _, k, inp = entry
            grads[k], grads[k + 1] = g.T @ inp, g.sum(axis=0)
            g = g @ params[k]
    return f, grads


def jvp(plan, params, v, x, y):
    k, t = 0, np.zeros_like(x)
    for layer in plan:
        if layer == "linear":
            w, b = params[k], params[k + 1]
            t = t @ w.T + x @ v[k].T + v[k + 1]
            x, k = x @ w.T + b, k + 2
        elif layer == "relu":
            t, x = t * (x > 0), np.maximum(x, 0)
        elif layer != "flatten":
            raise ValueError(f"the fake peer knows dense layers only, not {layer!r}")
    f, p = _softmax_ce(x, y)
    picked = t[np.arange(len(y)), y]
    return f, np.mean((p * t).sum(axis=1) - picked)


def handle(job):
    plan, folder, dtype = job["plan"], job["dir"], job["dtype"]

    def load(name, dt=dtype):
        return np.load(os.path.join(folder, f"{name}.npy")).astype(dt)

    n = count_params(plan)
    params = [load(f"p{i}") for i in range(n)]
    v = [load(f"v{i}") for i in range(n)]
    x, y = load("x"), load("y", "int64")
    info = {"system": "fake", "version": np.__version__}
    if job["task"] == "check":
        f, d = jvp(plan, params, v, x, y)
        f += float(os.environ.get("FAKE_PEER_LOSS_SHIFT", 0))
        d += float(os.environ.get("FAKE_PEER_JVP_SHIFT", 0))
        return {"loss": float(f), "jvp": float(d), "info": info}
    rng = np.random.default_rng(job.get("seed", 0))

    def forward_gradient():
        u = [rng.standard_normal(p.shape).astype(dtype) for p in params]
        f, d = jvp(plan, params, u, x, y)
        return f, [d * ui for ui in u]

    calls = {
        "f": lambda: loss(plan, params, x, y),
        "f_grad": lambda: value_and_grad(plan, params, x, y),
        "jvp": lambda: jvp(plan, params, v, x, y),
        "forward_gradient": forward_gradient,
    }
    return {"samples": time_calls(calls, job["repeats"], job["warmup"]), "info": info}


if __name__ == "__main__":
    sys.exit(serve(handle))
