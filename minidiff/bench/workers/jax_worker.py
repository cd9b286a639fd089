"""JAX's worker for ``minidiff bench peers`` (the protocol: :mod:`minidiff.bench.workers`).

Every timed function is ``jax.jit``-compiled (compilation falls in the warm-up) and waited for with
``block_until_ready``.  XLA reads its flags from the ``XLA_FLAGS`` environment variable, which the bench
sets from ``--xla-flags`` and records; the worker reports what it saw.  JAX and NumPy are imported
inside :func:`handle` only.  float64 needs ``jax_enable_x64``, switched on for a float64 job.

Checked against minidiff (loss and JVP of the three models) with jax 0.10.2 (jaxlib 0.10.2) on NumPy 2.4;
``tests/test_bench_peers.py`` runs the check on the MLP wherever the library is installed.
"""

from __future__ import annotations

import os
import sys

from . import QUANTITIES, count_params, serve, time_calls


def forward(jax, plan: list[str], params: list, x):
    jnp, lax = jax.numpy, jax.lax
    k = 0
    for layer in plan:
        if layer == "linear":
            x, k = x @ params[k].T + params[k + 1], k + 2
        elif layer == "conv":
            dims = ("NCHW", "OIHW", "NCHW")
            y = lax.conv_general_dilated(x, params[k], (1, 1), "VALID", dimension_numbers=dims)
            x, k = y + params[k + 1][None, :, None, None], k + 2
        elif layer == "relu":
            x = jnp.maximum(x, 0)
        elif layer == "maxpool2":
            x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        else:  # flatten
            x = x.reshape(x.shape[0], -1)
    return x


def handle(job: dict) -> dict:
    import jax
    import numpy

    if job["dtype"] == "float64":
        jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    plan, folder = job["plan"], job["dir"]

    def load(name, dt=job["dtype"]):
        return jnp.asarray(numpy.load(os.path.join(folder, f"{name}.npy")).astype(dt))

    n = count_params(plan)
    params = [load(f"p{i}") for i in range(n)]
    v = [load(f"v{i}") for i in range(n)]
    x, y = load("x"), load("y", "int32")

    def loss(p):
        logits = forward(jax, plan, p, x)
        picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)

    def jvp(p, u):
        return jax.jvp(loss, (p,), (u,))

    def forward_gradient(p, key):
        keys = jax.random.split(key, len(p))
        u = [jax.random.normal(k, q.shape, q.dtype) for k, q in zip(keys, p)]
        f, d = jvp(p, u)
        return f, [d * ui for ui in u]

    info = {
        "system": "jax",
        "version": jax.__version__,
        "backend": jax.default_backend(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
    }
    f_jit, grad_jit = jax.jit(loss), jax.jit(jax.value_and_grad(loss))
    jvp_jit, fg_jit = jax.jit(jvp), jax.jit(forward_gradient)
    if job["task"] == "check":
        f, d = jvp_jit(params, v)
        return {"loss": float(f), "jvp": float(d), "info": info}
    state = {"key": jax.random.PRNGKey(job.get("seed", 0))}

    def fresh_key():
        state["key"], key = jax.random.split(state["key"])
        return key

    calls = {
        "f": lambda: f_jit(params).block_until_ready(),
        "f_grad": lambda: jax.block_until_ready(grad_jit(params)),
        "jvp": lambda: jax.block_until_ready(jvp_jit(params, v)),
        "forward_gradient": lambda: jax.block_until_ready(fg_jit(params, fresh_key())),
    }
    assert tuple(calls) == QUANTITIES
    return {"samples": time_calls(calls, job["repeats"], job["warmup"]), "info": info}


if __name__ == "__main__":
    sys.exit(serve(handle))
