"""Gradient checkpointing and linearization: memory and time, against their plain counterparts.

Run: ``python benchmarks/checkpoint_linearize.py [--depth D] [--segment K] [--repeats N] [--json PATH]``.
Not a test: prints two tables.

* A deep residual MLP chain, ``h ← h + tanh(h W₁ + b) W₂`` repeated ``depth`` times, float32, and a
  squared loss.  ``grad`` of the loss with respect to every parameter, plain and with
  ``md.checkpoint`` around each segment of ``segment`` blocks: the bytes the tape keeps
  (``md.tape_stats`` of the tape-style loss, deterministic), the peak memory of one ``grad`` call
  (``minidiff.bench.memory.peak_memory``: tracemalloc, which NumPy reports its buffers to), and the time.
* ``md.linearize`` of the chain's output with respect to the parameters: one ``f_jvp(v)`` against
  one ``md.jvp`` (which evaluates the chain again each time), and the one-off cost of ``linearize``.

Times are :func:`minidiff.bench.timing.measure_interleaved` (one call of each per round: medians and
interquartile ranges).
"""

from __future__ import annotations

import argparse
import json

import minidiff as md
from minidiff.bench.environment import environment
from minidiff.bench.memory import peak_memory
from minidiff.bench.timing import measure_interleaved


def init(depth, width, batch, seed=0):
    g = md.random.Generator(seed)
    scale = 1.0 / width**0.5
    params = [
        {
            "w1": g.normal((width, width), dtype="float32") * scale,
            "b": md.zeros(width, dtype="float32"),
            "w2": g.normal((width, width), dtype="float32") * (0.5 * scale),
        }
        for _ in range(depth)
    ]
    return params, g.normal((batch, width), dtype="float32")


def block(h, p):
    return h + md.tanh(h @ p["w1"] + p["b"]) @ p["w2"]


def segment_fn(h, ps):
    for p in ps:
        h = block(h, p)
    return h


def chain(params, x, segment=0):
    """The chain's output; with ``segment > 0`` each run of ``segment`` blocks is checkpointed."""
    if not segment:
        return segment_fn(x, params)
    seg = md.checkpoint(segment_fn)
    h = x
    for i in range(0, len(params), segment):
        h = seg(h, params[i : i + segment])
    return h


def loss(params, x, segment=0):
    return md.mean(chain(params, x, segment) ** 2)


def tape_bytes(params, x, segment):
    leaves = md.pytree.tree_map(lambda t: md.tensor(t.numpy(), requires_grad=True), params)
    return sum(e["bytes"] for e in md.tape_stats(loss(leaves, x, segment)).values())


def checkpoint_table(depth, width, batch, segment, repeats):
    params, x = init(depth, width, batch)
    plain = md.grad(lambda p: loss(p, x))
    ck = md.grad(lambda p: loss(p, x, segment))
    out = {
        "plain": {"tape_bytes": tape_bytes(params, x, 0), "peak_bytes": peak_memory(lambda: plain(params))},
        "checkpoint": {
            "tape_bytes": tape_bytes(params, x, segment),
            "peak_bytes": peak_memory(lambda: ck(params)),
        },
    }
    times = measure_interleaved({"plain": lambda: plain(params), "checkpoint": lambda: ck(params)}, repeats)
    for k, m in times.items():
        out[k].update(median_ms=m.median * 1e3, iqr_ms=m.iqr * 1e3)
    f = measure_interleaved({"f": lambda: loss(params, x)}, repeats)["f"]
    out["f_ms"] = f.median * 1e3
    out["weights_bytes"] = sum(t.size * 4 for t in md.pytree.flatten(params)[0])
    return out


def linearize_table(depth, width, batch, repeats):
    params, x = init(depth, width, batch)
    v = md.pytree.tree_map(lambda t: md.random.Generator(1).normal(t.shape, dtype="float32"), params)
    f = lambda p: chain(p, x)  # noqa: E731
    _, f_jvp = md.linearize(f, params)
    times = measure_interleaved(
        {
            "jvp": lambda: md.jvp(f, (params,), (v,)),
            "linearize's f_jvp": lambda: f_jvp(v),
            "linearize (once)": lambda: md.linearize(f, params),
            "f": lambda: f(params),
        },
        repeats,
    )
    out = {k: {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3} for k, m in times.items()}
    out["linearize's f_jvp"]["peak_bytes"] = peak_memory(lambda: f_jvp(v))
    out["jvp"]["peak_bytes"] = peak_memory(lambda: md.jvp(f, (params,), (v,)))
    err = md.abs(f_jvp(v) - md.jvp(f, (params,), (v,))[1]).max().item()
    out["max_abs_difference"] = err
    return out


def main(argv=None):
    args = _parser().parse_args(argv)
    ck = checkpoint_table(args.depth, args.width, args.batch, args.segment, args.repeats)
    lin = linearize_table(args.depth, args.width, args.batch, args.repeats)
    _print(args, ck, lin)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"args": vars(args), "checkpoint": ck, "linearize": lin, "environment": environment()},
                fh,
                indent=1,
            )


def _parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=16, help="residual blocks (default 16)")
    p.add_argument("--width", type=int, default=256, help="features per layer (default 256)")
    p.add_argument("--batch", type=int, default=1024, help="rows of the input (default 1024)")
    p.add_argument("--segment", type=int, default=4, help="blocks per checkpointed segment (default 4)")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds (default 20)")
    p.add_argument("--json", help="write the results to this JSON file")
    return p


def _print(args, ck, lin):
    mib = 2.0**20
    print(
        f"residual MLP chain: depth {args.depth}, width {args.width}, batch {args.batch}, float32; "
        f"f = {ck['f_ms']:.1f} ms; weights {ck['weights_bytes'] / mib:.1f} MiB"
    )
    print(f"{'grad':34s} {'tape keeps':>11s} {'peak memory':>12s} {'median':>10s} {'IQR':>8s}")
    for k, name in (("plain", "plain"), ("checkpoint", f"checkpoint, segments of {args.segment}")):
        r = ck[k]
        print(
            f"{name:34s} {r['tape_bytes'] / mib:7.1f} MiB {r['peak_bytes'] / mib:8.1f} MiB "
            f"{r['median_ms']:8.1f}ms {r['iqr_ms']:6.1f}ms"
        )
    print()
    print(f"{'J·v at one point':34s} {'peak memory':>12s} {'median':>10s} {'IQR':>8s}")
    for k in ("jvp", "linearize's f_jvp", "linearize (once)", "f"):
        r = lin[k]
        peak = f"{r['peak_bytes'] / mib:8.1f} MiB" if "peak_bytes" in r else " " * 12
        print(f"{k:34s} {peak} {r['median_ms']:8.1f}ms {r['iqr_ms']:6.1f}ms")
    print(f"max |f_jvp(v) - jvp(v)| = {lin['max_abs_difference']:.2e}")


if __name__ == "__main__":
    main()
