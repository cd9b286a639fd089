"""The forward gradient's own cost on the paper's MLP (784-1024-1024-10, batch 64, float32): Rf beside its
floor (Rjvp + sampling) and Rb, for one or more source trees side by side (issue 12, target 6).

Each run is `minidiff.bench.rfrb.rfrb` (the protocol of ``minidiff bench rfrb``) in a fresh process
with PYTHONPATH set to one tree; the trees take turns, round after round, for each distribution, so a
change of load falls on all of them alike.  ``--clock cpu`` times with the main thread's CPU time
(``time.thread_time``: user and system time, page faults included, time spent waiting for the CPU
excluded) and sets one BLAS thread so all the work is on that thread: on a shared, loaded machine it
is far steadier than the wall clock (``--clock wall``, the CLI's, with the BLAS threads as they are).
The table gives the median over rounds of each run's medians, with the range over rounds.

``--parts`` instead times, in one process of the current tree and interleaved, the pieces: sampling
into fresh arrays or into reused buffers, NumPy's float32 normal sampler against Box–Muller on raw
bits, and the forward gradient with and without a workspace, with page faults per call.

    python benchmarks/forward_gradient_cost.py --trees /tmp/old,. --rounds 4 --clock cpu
    python benchmarks/forward_gradient_cost.py --trees /tmp/old,. --rounds 4 --clock cpu --keep-freed-memory
    python benchmarks/forward_gradient_cost.py --parts --clock cpu
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

KEYS = ("runtime_f", "sample_v", "jvp", "forward_gradient", "backprop")


def worker(args: argparse.Namespace) -> None:
    """One rfrb run of the MLP in this process; prints its JSON."""
    from minidiff.bench.allocator import keep_freed_memory
    from minidiff.bench.rfrb import build_model, rfrb

    if args.keep_freed_memory:
        assert keep_freed_memory()
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    model, shape = build_model("mlp")
    r = rfrb(
        model,
        shape,
        batch=64,
        repeats=args.repeats,
        warmup=3,
        distribution=args.distribution,
        memory=False,
        clock=clock,
        name="mlp",
    )
    print(json.dumps({k: r[k]["median"] for k in KEYS}))


def drive(args: argparse.Namespace) -> None:
    trees = [os.path.abspath(t) for t in args.trees.split(",")]
    env = dict(os.environ)
    if args.clock == "cpu":
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    runs: dict = {}
    for _ in range(args.rounds):
        for dist in ("rademacher", "normal"):
            for tree in trees:
                cmd = [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--worker",
                    "--distribution",
                    dist,
                    "--clock",
                    args.clock,
                    "--repeats",
                    str(args.repeats),
                ]
                cmd += ["--keep-freed-memory"] if args.keep_freed_memory else []
                out = subprocess.run(
                    cmd, cwd=tree, env={**env, "PYTHONPATH": tree}, capture_output=True, text=True, check=True
                ).stdout
                runs.setdefault((dist, tree), []).append(json.loads(out.splitlines()[-1]))
    print(
        f"clock {args.clock}, allocator {'keep freed memory' if args.keep_freed_memory else 'default'}, "
        f"{args.rounds} rounds, load {os.getloadavg()[0]:.2f} (1-min average at the end)\n"
    )
    print("| v | tree | f ms | Rf | floor (Rjvp + sampling) | Rjvp | sampling | Rb | Rf/Rb |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (dist, tree), rs in runs.items():

        def spread(fn):
            xs = sorted(fn(r) for r in rs)
            return f"{statistics.median(xs):.2f} [{xs[0]:.2f}–{xs[-1]:.2f}]"

        cells = [
            spread(lambda r: r["runtime_f"] * 1e3),
            spread(lambda r: r["forward_gradient"] / r["runtime_f"]),
            spread(lambda r: (r["jvp"] + r["sample_v"]) / r["runtime_f"]),
            spread(lambda r: r["jvp"] / r["runtime_f"]),
            spread(lambda r: r["sample_v"] / r["runtime_f"]),
            spread(lambda r: r["backprop"] / r["runtime_f"]),
            spread(lambda r: r["forward_gradient"] / r["backprop"]),
        ]
        print(f"| {dist} | {tree} | " + " | ".join(cells) + " |")


def parts(args: argparse.Namespace) -> None:
    import minidiff as md
    from minidiff.bench.rfrb import build_model, synthetic_batch
    from minidiff.bench.timing import measure_interleaved
    from minidiff.nn import functional as F

    model, shape = build_model("mlp")
    x, y = synthetic_batch(shape, 64)
    params = model.parameters()

    def loss(p):
        return F.cross_entropy(model.apply(p, x), y)

    rng = md.random.Generator(0)
    leaves = md.pytree.flatten(params)[0]
    v = md.sample_directions(params, rng, "rademacher")
    buf = md.ForwardGradientWorkspace().buffers("directions", params)
    ws_r, ws_n, grad_fn = (
        md.ForwardGradientWorkspace(),
        md.ForwardGradientWorkspace(),
        md.value_and_grad(loss),
    )
    calls = {
        "f": lambda: loss(params),
        "JVP pass": lambda: md.jvp(loss, (params,), (v,)),
        "backprop": lambda: grad_fn(params),
        "Rademacher v, fresh arrays": lambda: [rng.rademacher(p.shape, dtype=p.dtype) for p in leaves],
        "Rademacher v, reused buffer": lambda: md.sample_directions(params, rng, "rademacher", out=buf),
        "normal v, NumPy's sampler, fresh": lambda: [rng.normal(p.shape, dtype=p.dtype) for p in leaves],
        "normal v, Box–Muller, reused buffer": lambda: md.sample_directions(params, rng, "normal", out=buf),
        "forward gradient (Rademacher), fresh": lambda: md.forward_grad(
            loss, params, rng, distribution="rademacher"
        ),
        "forward gradient (Rademacher), workspace": lambda: md.forward_grad(
            loss, params, rng, distribution="rademacher", workspace=ws_r
        ),
        "forward gradient (normal), workspace": lambda: md.forward_grad(loss, params, rng, workspace=ws_n),
    }
    faults = {}
    for name, fn in calls.items():
        fn(), fn()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            fn()
        faults[name] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    m = measure_interleaved(calls, repeats=args.repeats, warmup=2, clock=clock)
    f = m["f"].median
    print(f"clock {args.clock}, {args.repeats} interleaved rounds, load {os.getloadavg()[0]:.2f}\n")
    print("| what | ms | quartiles | ÷ f | page faults per call |")
    print("|---|---|---|---|---|")
    for name, t in m.items():
        print(
            f"| {name} | {t.median * 1e3:.3f} | {t.q1 * 1e3:.3f}–{t.q3 * 1e3:.3f} | {t.median / f:.3f} | "
            f"{faults[name]:.0f} |"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trees", default=".", help="comma-separated source trees to alternate (default: .)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--keep-freed-memory", action="store_true")
    p.add_argument("--parts", action="store_true", help="time the pieces in one process instead")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--distribution", default="rademacher", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.parts and args.clock == "cpu" and os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        print("(with --clock cpu, set OPENBLAS_NUM_THREADS=1 so that the BLAS work is on the timed thread)")
    worker(args) if args.worker else parts(args) if args.parts else drive(args)


if __name__ == "__main__":
    main()
