"""``minidiff bench peers``: the paper's models (logreg, MLP, CNN; as ``minidiff bench rfrb``) timed in
minidiff and in whichever of PyTorch, JAX and HIPS autograd is importable, side by side.

Each system runs in its own process (``python -m minidiff.bench.workers.<system>_worker``, one JSON job
in, one JSON line out; see :mod:`minidiff.bench.workers`), one process at a time.  For each model and
batch size (every check is done before the first timing, so a refusal comes early):

1. minidiff draws the parameters (``seed``), a minibatch (``seed + 1``) and a direction v (``seed + 2``)
   and writes them as ``.npy`` files to a temporary folder that every system reads;
2. **check**: every system computes the loss f and the JVP ∇f·v there.  A system whose loss differs from
   minidiff's by more than ``rtol·max(1, |f|)``, or whose JVP differs by more than ``rtol·‖∇f‖·rms(v)``
   (the typical size of ∇f·v for a v of independent entries: ‖∇f‖ from minidiff, rms(v) the root mean
   square of v's entries) is refused for that model: it is not timed, and a message names the system,
   the model and the two values;
3. **timing**, in ``rounds`` rounds; in each, every system runs once (``warmup`` untimed calls, then
   ``repeats`` timed calls of f, f + ∇f, the JVP and the forward gradient), the order rotating from
   round to round so that a change of load on a shared machine falls on all systems alike.

The result gives each system's medians and quartiles (all rounds pooled), its Rf (forward gradient ÷ f)
and Rb (f + ∇f ÷ f), and minidiff ÷ each peer for f, f + grad, JVP, Rf and Rb with a quartile spread.
A peer that is not installed is skipped and named.  JAX reads ``XLA_FLAGS`` (``--xla-flags`` sets it for
the JAX worker); the flags used are recorded.

>>> from minidiff.bench.peers import PEERS, round_orders
>>> sorted(PEERS)
['autograd', 'jax', 'torch']
>>> round_orders(["minidiff", "torch", "jax"], 3)
[['minidiff', 'torch', 'jax'], ['torch', 'jax', 'minidiff'], ['jax', 'minidiff', 'torch']]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .. import backend
from ..primitives.random import Generator
from .arguments import (
    choice_list,
    dtype,
    int_list,
    nonnegative_int,
    output_file,
    positive_float,
    positive_int,
    seed,
    write_json,
    xla_flags,
)
from .environment import environment
from .rfrb import build_model, synthetic_batch
from .timing import ratio, summarize
from .workers import QUANTITIES

SCHEMA = "minidiff.peers/1"
MODEL_NAMES = ("logreg", "mlp", "cnn")
#: Default tolerance of the agreement check, by dtype (see the module's docstring for what it scales).
RTOL = {"float32": 1e-4, "float64": 1e-10}
#: What is compared, minidiff ÷ peer: the three timings, and Rf, Rb (each system's own ratios).
COMPARED = ("f", "f_grad", "jvp", "Rf", "Rb")
SHOWN = {"f": "f", "f_grad": "f+grad", "jvp": "JVP", "Rf": "Rf", "Rb": "Rb"}


@dataclass(frozen=True)
class Peer:
    """A system: its name, how it is shown, its worker module, and what must be importable to run it."""

    name: str
    label: str
    module: str
    requires: tuple[str, ...] = ()


MINIDIFF = Peer("minidiff", "minidiff", "minidiff.bench.workers.minidiff_worker")
#: The peers, by name.  Tests add a fake one (a NumPy worker) here.
PEERS: dict[str, Peer] = {
    "torch": Peer("torch", "PyTorch eager", "minidiff.bench.workers.torch_worker", ("torch",)),
    "jax": Peer("jax", "JAX jit", "minidiff.bench.workers.jax_worker", ("jax", "jaxlib")),
    "autograd": Peer("autograd", "HIPS autograd", "minidiff.bench.workers.autograd_worker", ("autograd",)),
}


#: The peers compared by default (the table may hold more: tests add fakes).
DEFAULT_PEERS = ("torch", "jax", "autograd")


class PeerFailure(RuntimeError):
    """A worker process failed (it crashed, timed out, or reported an error)."""


def missing(peer: Peer) -> str | None:
    """Why ``peer`` cannot run here (a module it needs is not installed), or None."""
    absent = [name for name in peer.requires if importlib.util.find_spec(name) is None]
    return f"not installed (no module named {', '.join(absent)})" if absent else None


def round_orders(systems: Sequence[str], rounds: int) -> list[list[str]]:
    """The order of the systems in each round: the list rotated by one place per round."""
    k = len(systems)
    return [list(systems[r % k :]) + list(systems[: r % k]) for r in range(rounds)]


# ----------------------------------------------------------------------------- inputs
def model_plan(model) -> list[str]:
    """The layer list of one of the paper's models, as the workers read it (:mod:`..workers`)."""
    from ..nn.modules import Conv2d, Flatten, Linear, MaxPool2d, ReLU

    plan = []
    for name, layer in model.named_modules():
        if not name or "." in name:
            continue
        if isinstance(layer, Conv2d) and (layer.stride, layer.padding) != ((1, 1), (0, 0)):
            raise ValueError(f"bench peers: {name} is a convolution with stride or padding; not supported")
        if isinstance(layer, MaxPool2d) and (layer.kernel_size, layer.stride) != ((2, 2), (2, 2)):
            raise ValueError(f"bench peers: {name} is not a 2×2 max-pool; not supported")
        kinds = {Linear: "linear", Conv2d: "conv", ReLU: "relu", MaxPool2d: "maxpool2", Flatten: "flatten"}
        kind = kinds.get(type(layer))
        if kind is None:
            raise ValueError(f"bench peers: layer {name} ({type(layer).__name__}) has no peer equivalent")
        plan.append(kind)
    return plan


def write_inputs(model_name: str, batch: int, dtype: str, seed: int, folder: str) -> dict:
    """Write the parameters (``p<i>.npy``), the minibatch (``x.npy``, ``y.npy``) and the direction
    (``v<i>.npy``) of ``model_name`` into ``folder``; return the plan and the parameter count."""
    model, shape = build_model(model_name, dtype=dtype, seed=seed)
    params = [p for _, p in model.named_parameters()]
    x, y = synthetic_batch(shape, batch, dtype=dtype, seed=seed + 1)
    rng = Generator(seed + 2)
    v = [rng.normal(p.shape, dtype=dtype) for p in params]
    save = backend.numpy_module.save
    for i, (p, d) in enumerate(zip(params, v)):
        save(os.path.join(folder, f"p{i}.npy"), p.numpy())
        save(os.path.join(folder, f"v{i}.npy"), d.numpy())
    save(os.path.join(folder, "x.npy"), x.numpy())
    save(os.path.join(folder, "y.npy"), y.numpy().astype("int64"))
    return {"plan": model_plan(model), "parameters": sum(p.size for p in params)}


# ----------------------------------------------------------------------------- workers
def worker_env(peer: Peer, threads: int, xla_flags: str | None) -> dict:
    """The environment of a worker: minidiff importable, thread counts if given, XLA_FLAGS for JAX."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if threads:
        for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[key] = str(threads)
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    return env


def run_worker(peer: Peer, job: dict, env: dict, timeout: float) -> dict:
    """Run ``peer``'s worker on ``job`` in a new process; its JSON answer (:class:`PeerFailure` if none)."""
    what = f"{peer.name} worker ({job['task']}, {job['model']} batch {job['batch']})"
    try:
        done = subprocess.run(
            [sys.executable, "-m", peer.module],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise PeerFailure(f"{what}: no answer within {timeout:g} s (--timeout)") from None
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PeerFailure(f"{what}: exit status {done.returncode}, no result ({tail})")
    if "error" in answer:
        raise PeerFailure(f"{what}: {answer['error']}")
    return answer


# ----------------------------------------------------------------------------- the check
def bounds(ours: dict, rtol: float) -> dict:
    """The largest accepted difference from minidiff's check ``ours``: ``rtol·max(1, |f|)`` for the loss,
    ``rtol·‖∇f‖·rms(v)`` for the JVP (the typical size of ∇f·v for a v of independent entries)."""
    return {"loss": rtol * max(1.0, abs(ours["loss"])), "jvp": rtol * ours["grad_norm"] * ours["v_rms"]}


def disagreement(peer: str, model: str, ours: dict, theirs: dict, rtol: float) -> str | None:
    """Why ``theirs`` (a peer's check) does not agree with ``ours`` (minidiff's), or None."""
    limit = bounds(ours, rtol)
    for key, what in (("loss", "loss"), ("jvp", "JVP ∇f·v")):
        a, b = ours[key], theirs[key]
        if not (math.isfinite(b) and abs(a - b) <= limit[key]):
            return (
                f"{peer} is refused for {model}: its {what} is {b!r}, minidiff's is {a!r} "
                f"(difference {abs(a - b):.3g} > {limit[key]:.3g} allowed by rtol {rtol:g})"
            )
    return None


# ----------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class Settings:
    """What ``run_peers`` is asked to do (the command's options)."""

    models: tuple[str, ...] = MODEL_NAMES
    batches: tuple[int, ...] = (64,)
    peers: tuple[str, ...] = DEFAULT_PEERS
    rounds: int = 5
    repeats: int = 5
    warmup: int = 2
    dtype: str = "float32"
    seed: int = 0
    rtol: float | None = None
    threads: int = 0
    xla_flags: str | None = None
    timeout: float = 600.0

    def tolerance(self) -> float:
        return RTOL[self.dtype] if self.rtol is None else self.rtol


Runner = Callable[[Peer, dict, dict, float], dict]


def run_peers(
    settings: Settings, runner: Runner | None = None, log: Callable[[str], None] | None = None
) -> dict:
    """Check and time every model and batch size of ``settings`` in minidiff and the importable peers.

    ``runner(peer, job, env, timeout)`` runs one job (default: a new process; tests pass their own).
    Returns the JSON-ready result (schema ``minidiff.peers/1``)."""
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    runner = runner or run_worker
    systems: dict[str, dict] = {"minidiff": {"label": MINIDIFF.label, "status": "ran"}}
    skipped = {}
    for name in settings.peers:
        peer = PEERS[name]
        reason = missing(peer)
        systems[name] = {"label": peer.label, "status": "skipped" if reason else "ran"}
        if reason:
            systems[name]["reason"] = skipped[name] = reason
            log(f"skipping {name} ({peer.label}): {reason}")
    session = _Session(settings, systems, runner, log)
    with tempfile.TemporaryDirectory(prefix="minidiff-peers-") as tmp:
        jobs = [(m, b, os.path.join(tmp, f"{m}-{b}")) for m in settings.models for b in settings.batches]
        checked = [session.check(model, batch, folder) for model, batch, folder in jobs]  # all, first
        runs = [session.time(prepared) for prepared in checked]
    for name, entry in systems.items():
        if entry["status"] == "ran" and not any(name in run["timings"] for run in runs):
            entry["status"] = "refused"
    env = environment()
    env["XLA_FLAGS"] = worker_env(PEERS["jax"], 0, settings.xla_flags).get("XLA_FLAGS")
    return {
        "schema": SCHEMA,
        "units": "seconds",
        "settings": {**settings.__dict__, "rtol": settings.tolerance()},
        "systems": systems,
        "skipped": skipped,
        "refused": session.refused,
        "runs": runs,
        "environment": env,
    }


class _Session:
    """The workers of one ``run_peers``: every job goes through :meth:`call`; refusals are collected."""

    def __init__(self, settings: Settings, systems: dict, runner: Runner, log: Callable[[str], None]):
        self.settings, self.systems, self.runner, self.log = settings, systems, runner, log
        self.envs = {n: worker_env(_peer(n), settings.threads, settings.xla_flags) for n in systems}
        self.refused: list[dict] = []

    def call(self, name: str, base: dict, job: dict) -> dict:
        answer = self.runner(_peer(name), {**base, **job}, self.envs[name], self.settings.timeout)
        self.systems[name].setdefault("info", answer.get("info"))
        return answer

    def refuse(self, name: str, base: dict, message: str) -> None:
        self.refused.append(
            {"system": name, "model": base["model"], "batch": base["batch"], "message": message}
        )
        self.log(f"error: {message}")

    def check(self, model: str, batch: int, folder: str) -> dict:
        """Write the inputs of ``model`` at ``batch``, run every system's check, refuse who disagrees."""
        s = self.settings
        os.mkdir(folder)
        inputs = write_inputs(model, batch, s.dtype, s.seed, folder)
        base = {"model": model, "batch": batch, "dtype": s.dtype, "seed": s.seed, "dir": folder}
        base["plan"] = inputs["plan"]
        live = [n for n, entry in self.systems.items() if entry["status"] == "ran"]
        self.log(f"{model}, batch {batch}: checking {', '.join(live)}")
        job = {"task": "check", "threads": s.threads}
        checks = {"minidiff": self.call("minidiff", base, job)}
        for name in live[1:]:
            try:
                checks[name] = self.call(name, base, job)
            except PeerFailure as exc:
                self.refuse(name, base, str(exc))
                continue
            why = disagreement(
                name, f"{model} (batch {batch})", checks["minidiff"], checks[name], s.tolerance()
            )
            if why:
                self.refuse(name, base, why)
                checks[name]["refused"] = True
        limit = bounds(checks["minidiff"], s.tolerance())
        checks = {n: _check_row(c, checks["minidiff"], limit) for n, c in checks.items()}
        return {"base": base, "inputs": inputs, "checks": checks}

    def time(self, prepared: dict) -> dict:
        """The rounds of one model and batch size, the order rotating; the summary of the samples."""
        s, base, checks = self.settings, prepared["base"], prepared["checks"]
        orders = round_orders([n for n, c in checks.items() if not c["refused"]], s.rounds)
        samples: dict[str, dict[str, list]] = {n: {q: [] for q in QUANTITIES} for n in orders[0]}
        job = {"task": "time", "repeats": s.repeats, "warmup": s.warmup, "threads": s.threads}
        for r, order in enumerate(orders):
            self.log(f"{base['model']}, batch {base['batch']}: round {r + 1}/{s.rounds} ({', '.join(order)})")
            for name in (n for n in order if n in samples):  # (not those that failed in an earlier round)
                try:
                    answer = self.call(name, base, job)
                except PeerFailure as exc:
                    if name == "minidiff":
                        raise
                    self.refuse(name, base, str(exc))
                    del samples[name]
                    continue
                for q, values in answer["samples"].items():
                    samples[name][q].extend(values)
        return _summary(base["model"], base["batch"], prepared["inputs"], checks, orders, samples)


def _check_row(c: dict, ours: dict, limit: dict) -> dict:
    row = {"loss": c["loss"], "jvp": c["jvp"], "refused": bool(c.get("refused"))}
    row.update({key: c[key] for key in ("grad_norm", "v_rms") if key in c})
    for key in ("loss", "jvp"):
        row[f"{key}_difference"] = abs(c[key] - ours[key])
        row[f"{key}_allowed"] = limit[key]
    return row


def _peer(name: str) -> Peer:
    return MINIDIFF if name == "minidiff" else PEERS[name]


def _summary(model, batch, inputs, checks, orders, samples) -> dict:
    timings = {n: {q: summarize(s[q]) for q in QUANTITIES} for n, s in samples.items()}
    own = {
        n: {"Rf": ratio(t["forward_gradient"], t["f"]), "Rb": ratio(t["f_grad"], t["f"])}
        for n, t in timings.items()
    }
    ratios = {}
    for name in timings:
        if name == "minidiff":
            continue
        r = {q: ratio(timings["minidiff"][q], timings[name][q]) for q in ("f", "f_grad", "jvp")}
        for key in ("Rf", "Rb"):
            a, b = own["minidiff"][key], own[name][key]
            r[key] = {
                "value": a["value"] / b["value"],
                "low": a["low"] / b["high"],
                "high": a["high"] / b["low"],
            }
        ratios[name] = r
    return {
        "model": model,
        "batch": batch,
        "parameters": inputs["parameters"],
        "plan": inputs["plan"],
        "check": checks,
        "order": orders,
        "timings": {n: {q: m.as_dict() for q, m in t.items()} for n, t in timings.items()},
        "own_ratios": own,
        "minidiff_over_peer": ratios,
    }


# ----------------------------------------------------------------------------- output
def format_peers(result: dict) -> str:
    """The result as text: per model, each system's medians and Rf, Rb, then minidiff ÷ each peer."""
    labels = {n: e["label"] for n, e in result["systems"].items()}
    s = result["settings"]
    lines = [
        f"minidiff ÷ peer ({s['dtype']}, {s['rounds']} rounds × {s['repeats']} repeats, order rotating; "
        f"agreement rtol {s['rtol']:g}; lower is better, 1.0 = parity)"
    ]
    for name, reason in result["skipped"].items():
        lines.append(f"  skipped {name} ({labels[name]}): {reason}")
    for item in result["refused"]:
        lines.append(f"  refused: {item['message']}")
    for run in result["runs"]:
        lines.append(f"{run['model']}, batch {run['batch']}, {run['parameters']:,} parameters")
        lines.append(f"  {'system':16s}{'f ms':>10s}{'f+grad ms':>11s}{'JVP ms':>10s}{'Rf':>7s}{'Rb':>7s}")
        for name, t in run["timings"].items():
            own = run["own_ratios"][name]
            ms = "".join(
                f"{t[q]['median'] * 1e3:{w}.3f}" for q, w in (("f", 10), ("f_grad", 11), ("jvp", 10))
            )
            lines.append(f"  {labels[name]:16s}{ms}{own['Rf']['value']:7.2f}{own['Rb']['value']:7.2f}")
        for name, r in run["minidiff_over_peer"].items():
            cells = "  ".join(
                f"{SHOWN[q]} {r[q]['value']:.2f} [{r[q]['low']:.2f}, {r[q]['high']:.2f}]" for q in COMPARED
            )
            lines.append(f"  minidiff ÷ {labels[name]}: {cells}")
    xla = result["environment"].get("XLA_FLAGS")
    lines.append(f"XLA_FLAGS: {xla!r}; threads: {s['threads'] or 'library defaults'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the command
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models", type=choice_list(MODEL_NAMES), default=MODEL_NAMES, help="comma-separated models"
    )
    p.add_argument("--batch", type=int_list, default=(64,), help="comma-separated batch sizes")
    p.add_argument(
        "--peers",
        type=choice_list(PEERS),
        default=DEFAULT_PEERS,
        help="peers to compare with (those not installed are skipped and named)",
    )
    p.add_argument("--rounds", type=positive_int, default=5, help="rounds; each runs every system once")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed calls of each job per round")
    p.add_argument("--warmup", type=nonnegative_int, default=2, help="untimed calls first, in every round")
    p.add_argument("--dtype", type=dtype, default="float32", help="float32 or float64")
    p.add_argument("--seed", type=seed, default=0, help="seed of the parameters (data: +1, v: +2)")
    p.add_argument(
        "--rtol",
        type=positive_float,
        default=None,
        help="tolerance of the loss and JVP check (default 1e-4 for float32, 1e-10 for float64)",
    )
    p.add_argument(
        "--threads",
        type=nonnegative_int,
        default=0,
        help="threads of every worker (OMP/OPENBLAS/MKL_NUM_THREADS, torch.set_num_threads; XLA keeps its "
        "own pool: limit it with --xla-flags); 0 keeps each library's own",
    )
    p.add_argument(
        "--xla-flags",
        type=xla_flags,
        default=None,
        metavar="FLAGS",
        help="XLA_FLAGS for the JAX worker, given with '=' as in --xla-flags=--xla_cpu_use_thunk_runtime=false "
        "(default: the XLA_FLAGS of the environment); recorded in the result",
    )
    p.add_argument("--timeout", type=positive_float, default=600.0, help="seconds allowed per worker run")
    p.add_argument("--json", type=output_file, metavar="PATH", help="write the result as JSON")


def run(args: argparse.Namespace) -> int:
    """``minidiff bench peers``: exit status 1 if a peer was refused or failed, else 0."""
    settings = Settings(
        models=tuple(args.models),
        batches=tuple(args.batch),
        peers=tuple(args.peers),
        rounds=args.rounds,
        repeats=args.repeats,
        warmup=args.warmup,
        dtype=args.dtype,
        seed=args.seed,
        rtol=args.rtol,
        threads=args.threads,
        xla_flags=args.xla_flags,
        timeout=args.timeout,
    )
    try:
        result = run_peers(settings)
    except PeerFailure as exc:  # minidiff's own worker failed: nothing to compare with
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_peers(result))
    write_json(result, args.json)
    return 1 if result["refused"] else 0
