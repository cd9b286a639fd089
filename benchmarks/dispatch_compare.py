"""Per-op dispatch of two (or more) minidiff trees side by side, and PyTorch's, in alternating rounds.

Run: ``python benchmarks/dispatch_compare.py OLD_TREE NEW_TREE [--rounds 5] [--repeats 15] [--clock wall|cpu]
[--json PATH]``,
e.g. with the old tree unpacked by ``git archive main | tar -x -C /tmp/old_md``.  Each round runs
``benchmarks/overhead.py --dispatch-only`` (this file's copy, so every tree is timed by the same code)
once per tree, one after the other, each in its own process with ``PYTHONPATH`` set to that tree; the
samples of every round are pooled and summarized as the median and quartiles, in µs per op.  PyTorch's
numbers are pooled over every run (each run times it too).  The load average is recorded before and
after.  Machines shared with other jobs are noisy: alternating rounds spread the noise over every tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = (
    ("plain", "plain", "plain, no AD (one add)"),
    ("jvp_per_op", "jvp_per_op", "jvp (torch.func.jvp), per op"),
    ("jvp_per_op", "dual_per_op", "jvp (torch forward-AD duals), per op"),
    ("grad_per_op", "grad_per_op", "grad: record + backward, per op"),
    ("tape_backward_per_op", "tape_backward_per_op", "tape .backward(): record + backward, per op"),
)


def run_once(tree: str, repeats: int, clock: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        path = fh.name
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    cmd = [
        sys.executable,
        os.path.join(HERE, "overhead.py"),
        "--dispatch-only",
        "--repeats",
        str(repeats),
        "--clock",
        clock,
    ]
    subprocess.run([*cmd, "--json", path], env=env, check=True, stdout=subprocess.DEVNULL)
    with open(path) as fh:
        result = json.load(fh)
    os.unlink(path)
    return result


def quartiles(samples: list[float]) -> tuple[float, float, float]:
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return statistics.median(samples), q1, q3


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="minidiff source trees (the directory holding minidiff/)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=15, help="samples per row in each run")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="see overhead.py --clock")
    parser.add_argument("--json", help="write the pooled results to this JSON file")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    pooled: dict = {tree: {} for tree in args.trees}
    torch_pooled: dict = {}
    for _ in range(args.rounds):
        for tree in args.trees:
            r = run_once(tree, args.repeats, args.clock)
            for key, _, _ in ROWS:
                pooled[tree].setdefault(key, []).extend(r["dispatch"][key + "_samples_us"])
            if r.get("torch_dispatch"):
                for _, key, _ in ROWS:
                    torch_pooled.setdefault(key, []).extend(r["torch_dispatch"][key + "_samples_us"])
    load_after = os.getloadavg()
    summary = {
        "trees": {t: {k: quartiles(v) for k, v in rows.items()} for t, rows in pooled.items()},
        "torch": {k: quartiles(v) for k, v in torch_pooled.items()},
        "clock": args.clock,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }
    _print(summary, args.trees)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)


def _print(summary: dict, trees: list[str]) -> None:
    cell = lambda m: f"{m[0]:.2f} [{m[1]:.2f}, {m[2]:.2f}]"  # noqa: E731
    names = [os.path.basename(os.path.abspath(t)) for t in trees] + ["PyTorch"]
    print(f"µs per op ({summary['clock']} clock), median [q1, q3], pooled over {summary['rounds']} rounds")
    print(f"{'':44s}" + "".join(f"{n:>24s}" for n in names))
    for ours, theirs, label in ROWS:
        cells = [cell(summary["trees"][t][ours]) for t in trees]
        cells.append(cell(summary["torch"][theirs]) if theirs in summary["torch"] else "—")
        print(f"{label:44s}" + "".join(f"{c:>24s}" for c in cells))
    before = ", ".join(f"{x:.2f}" for x in summary["loadavg_before"])
    after = ", ".join(f"{x:.2f}" for x in summary["loadavg_after"])
    print(f"load average before: {before}; after: {after}")


if __name__ == "__main__":
    main()
