"""The worker side of ``minidiff bench peers``: one system (minidiff, PyTorch, JAX, HIPS autograd) in its
own process, run as ``python -m minidiff.bench.workers.<system>_worker``.

A worker reads one JSON job (from its first argument, else from stdin), builds the loss of the job's
model on the parameters and data that the bench wrote as ``.npy`` files, and prints one JSON line:

* ``{"task": "check", ...}`` → ``{"loss": f, "jvp": ∇f·v, "info": {...}}`` on the given direction v;
* ``{"task": "time", ...}`` → ``{"samples": {quantity: [seconds, ...]}, "info": {...}}``, where the
  quantities (:data:`QUANTITIES`) are f; f and ∇f by reverse mode; f and ∇f·v along the given v; and
  the forward gradient (v drawn from a standard normal, f and ∇f·v in one forward pass, (∇f·v)·v formed);
* on any failure ``{"error": "..."}`` and exit status 1.

The model is a *plan*, the layer list of the minidiff model (``["conv", "relu", "maxpool2", "flatten",
"linear", ...]``), each ``linear``/``conv`` taking the next two arrays (weight, bias) of ``params``, so
every system computes the same function as ``minidiff bench rfrb``: dense layers ``x @ W.T + b``,
convolutions NCHW/OIHW without padding, 2×2 max-pooling, mean softmax cross-entropy.

The job's files (in ``job["dir"]``): ``p0.npy`` … (the parameters, in plan order), ``x.npy``, ``y.npy``
(int64 labels) and ``v0.npy`` … (the direction, shaped like the parameters).

>>> from minidiff.bench.workers import QUANTITIES, read_job
>>> QUANTITIES
('f', 'f_grad', 'jvp', 'forward_gradient')
>>> read_job(['{"task": "check"}'])["task"]
'check'
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

#: What a timing job measures, in order.
QUANTITIES = ("f", "f_grad", "jvp", "forward_gradient")
#: The layers a plan may hold.
LAYERS = ("linear", "conv", "relu", "maxpool2", "flatten")


def read_job(argv: list[str] | None = None) -> dict:
    """The job: JSON text in ``argv[0]`` if given, else read from stdin."""
    argv = sys.argv[1:] if argv is None else argv
    text = argv[0] if argv else sys.stdin.read()
    job = json.loads(text)
    if not isinstance(job, dict) or job.get("task") not in ("check", "time"):
        raise ValueError(f"a worker job is a JSON object with task 'check' or 'time', got {text[:80]!r}")
    return job


def count_params(plan: list[str]) -> int:
    """How many arrays (weights and biases) a plan takes."""
    unknown = [layer for layer in plan if layer not in LAYERS]
    if unknown:
        raise ValueError(f"unknown layers {unknown} in the plan; a worker knows {LAYERS}")
    return 2 * sum(layer in ("linear", "conv") for layer in plan)


def time_calls(calls: dict[str, Callable[[], Any]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of every call of ``calls`` (one of each per repeat, after ``warmup`` untimed calls each).

    Each call must return only once its work is done (JAX: ``block_until_ready``)."""
    from ..timing import measure_interleaved

    timed = measure_interleaved(calls, repeats=repeats, warmup=warmup)
    return {name: list(m.samples) for name, m in timed.items()}


def serve(handle: Callable[[dict], dict], argv: list[str] | None = None) -> int:
    """Run one job through ``handle(job) -> result`` and print the result (or the error) as one JSON line."""
    try:
        result = handle(read_job(argv))
    except Exception as exc:  # reported to the bench, which names the system and the model
        last = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}{where}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0
