"""BLAS threads for DEER's small products: the cost of the policy and its effect, side by side.

Run: ``PYTHONPATH=. python benchmarks/blas_threads.py [--quick] [--busy-core] [--sizes 1,4,8,16,32] [--repeats N]
[--json PATH]``.
Not a test (tests/test_benchmark_scripts.py runs it with ``--quick``).

Measures, in interleaved rounds (one call of each per round, median and quartiles):

``enter``       ``minidiff.backend.blas_threads(1)`` entered and left, when BLAS runs more threads
                (``switch``) and when one thread is already in force (``in force``), in µs;
``scan``        ``affine_scan`` of a GRU-sized random recurrence (batch 1, T, n), ms;
``deer``        ``deer_rnn`` forward of the GRU cell (batch 1, T, n), ms;

each with the library's own threads (``MINIDIFF_SMALL_PRODUCT_THREADS=off``) and under the policy.
``--busy-core`` runs everything with one core kept busy by a spin-loop process (stopped at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
import timeit

import minidiff as md
from minidiff import backend
from minidiff.bench.deer_bench import busy_core
from minidiff.bench.environment import environment
from minidiff.deer import affine_scan, cells, deer_rnn


def _overhead(repeats: int) -> dict:
    def enter() -> None:
        with backend.blas_threads(1):
            pass

    switch = min(timeit.repeat(enter, number=200, repeat=repeats)) / 200 * 1e6
    with backend.blas_threads(1):
        in_force = min(timeit.repeat(enter, number=2000, repeat=repeats)) / 2000 * 1e6
    return {"switch_us": switch, "in_force_us": in_force}


@contextlib.contextmanager
def _policy(on: bool):
    old = os.environ.get(backend.SMALL_PRODUCT_THREADS_ENV)
    if on:
        os.environ.pop(backend.SMALL_PRODUCT_THREADS_ENV, None)
    else:
        os.environ[backend.SMALL_PRODUCT_THREADS_ENV] = "off"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(backend.SMALL_PRODUCT_THREADS_ENV, None)
        else:
            os.environ[backend.SMALL_PRODUCT_THREADS_ENV] = old


def _jobs(n: int, T: int) -> dict:
    f, init, _ = cells.CELLS["gru"]
    p = init(n, n, seed=0, dtype="float32")
    xs = md.random.Generator(0).normal((1, T, n), dtype="float32")
    y0 = md.zeros((1, n), dtype="float32")
    A = md.random.Generator(1).normal((1, T, n, n), dtype="float32") * (0.5 / n**0.5)
    return {"scan": lambda: affine_scan(A, xs, y0), "deer": lambda: deer_rnn(f, y0, xs, p)}


def _quartiles(samples: list[float]) -> dict:
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else samples * 3
    return {"median": statistics.median(samples), "q1": q[0], "q3": q[-1]}


def measure(sizes, T: int, repeats: int) -> list[dict]:
    rows = []
    for n in sizes:
        jobs = _jobs(n, T)
        times: dict = {(job, on): [] for job in jobs for on in (False, True)}
        for fn in jobs.values():
            for on in (False, True):
                with _policy(on):
                    fn()  # warm-up
        for _ in range(repeats):
            for job, fn in jobs.items():
                for on in (False, True):
                    with _policy(on):
                        start = time.perf_counter()
                        fn()
                        times[(job, on)].append(time.perf_counter() - start)
        for job in jobs:
            rows.append(
                {
                    "n": n,
                    "T": T,
                    "job": job,
                    "library_threads": _quartiles(times[(job, False)]),
                    "policy": _quartiles(times[(job, True)]),
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    out = [
        "| n | T | job | library threads ms [q1–q3] | policy ms [q1–q3] | speedup |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["library_threads"], r["policy"]
        out.append(
            f"| {r['n']} | {r['T']} | {r['job']} | {a['median'] * 1e3:.1f} [{a['q1'] * 1e3:.1f}–{a['q3'] * 1e3:.1f}] "
            f"| {b['median'] * 1e3:.1f} [{b['q1'] * 1e3:.1f}–{b['q3'] * 1e3:.1f}] | {a['median'] / b['median']:.2f} |"
        )
    return "\n".join(out)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 2, T = 200, 2 rounds (a smoke run)")
    ap.add_argument("--busy-core", action="store_true", help="keep one core busy with a spin loop")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--sizes", default="1,4,8,16,32", help="comma-separated state sizes n")
    ap.add_argument("--json", help="write the result as JSON")
    args = ap.parse_args(argv)
    sizes, T, repeats = (
        ((2,), 200, 2) if args.quick else (tuple(int(t) for t in args.sizes.split(",")), 10000, args.repeats)
    )
    with busy_core() if args.busy_core else contextlib.nullcontext():
        result = {
            "overhead": _overhead(5),
            "rows": measure(sizes, T, repeats),
            "busy_core": args.busy_core,
            "environment": environment(),
        }
    o = result["overhead"]
    print(
        f"blas_threads(1): {o['switch_us']:.2f} us when it sets the count, {o['in_force_us']:.2f} us when in force"
    )
    print(table(result["rows"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
