"""Convolutions: minidiff's conv2d primitive against the im2col formula it replaced and PyTorch eager.

Run: ``python benchmarks/conv.py [--quick] [--repeats N] [--batches 1,16,64] [--json PATH]``.  Not a test:
prints Markdown tables.

* Layers of the paper's CNN shape, float32, 3×3 kernels with padding 1: conv 1→64 at 28×28, 64→64 at
  28×28 and 64→64 at 14×14, each as ``f`` (the convolution with bias), ``f + grad`` (value and
  gradient of ``Σ y·r`` for a fixed ``r``: input and weights, only weights for the 1-channel first
  layer, whose input is data) and ``JVP`` (tangents on the same inputs).
* The whole CNN as ``minidiff bench rfrb --model cnn`` builds it (``md.nn.models.cnn``: four 3×3×64
  convolutions without padding, two 2×2 max-pools, dense 1024 and 10, cross-entropy): loss, loss and
  gradient of every parameter, and one JVP along a direction of every parameter.
* ``old``: the formula conv2d used before it became a primitive (kept below: pad, nine strided slices,
  stack, one matmul, all differentiated op by op); ``new``: ``md.nn.functional.conv2d``; ``PyTorch``:
  ``torch.nn.functional.conv2d`` / ``torch.autograd.grad`` / ``torch.func.jvp`` with
  ``torch.set_num_threads(2)`` (skipped, with its name, when torch is not importable).
* **Each system runs in its own process** (``--worker SYSTEM``, started by the main process once per
  round, rounds rotating the order of the systems as ``minidiff bench peers`` does), with
  ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` = 2.  Each worker warms every call up, then times it
  ``--inner`` times; median and quartiles over rounds × inner.  (Until this was so, PyTorch ran inside
  minidiff's process and took about twice as long as it does alone: that column flattered minidiff.)
  The main process never imports torch.
* Winograd F(2×2, 3×3) (NumPy, float32; not used by minidiff): forward time beside the im2col kernel
  of the primitive on the 64-channel layers, and both float32 results' largest error against a float64
  direct convolution, relative to the largest output magnitude.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import minidiff as md  # noqa: E402
from minidiff.bench.environment import environment  # noqa: E402
from minidiff.bench.peers import round_orders  # noqa: E402
from minidiff.bench.timing import measure_interleaved, summarize  # noqa: E402
from minidiff.primitives import convolution as conv_kernels  # noqa: E402

F = md.nn.functional
THREADS = 2
SYSTEMS = ("old", "new", "PyTorch")
torch = None  # imported by the PyTorch worker only (``_import_torch``), never by the main process


def _import_torch():
    """Import PyTorch into this (worker) process with THREADS threads; None if it is not installed."""
    global torch
    try:
        import torch as torch_module
    except ImportError:  # pragma: no cover - depends on the machine
        return None
    torch_module.set_num_threads(THREADS)
    torch = torch_module
    return torch


#: (name, in channels, out channels, image side); 3×3 kernels, stride 1, padding 1
LAYERS = [
    ("conv 1→64, 28×28", 1, 64, 28),
    ("conv 64→64, 28×28", 64, 64, 28),
    ("conv 64→64, 14×14", 64, 64, 14),
]
TASKS = ("f", "f + grad", "JVP")


# ----------------------------------------------------------------------------- the old formula
def _pair(v):
    return (int(v), int(v)) if not isinstance(v, (tuple, list)) else (int(v[0]), int(v[1]))


def old_conv2d(x, w, b=None, stride=1, padding=0):
    """conv2d as it was before the primitive: im2col by nine strided slices + stack, one matmul."""
    ops = md.primitives.ops
    o, c, kh, kw = w.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    if ph or pw:
        x = ops.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, _, h, wd = x.shape
    ho, wo = (h - kh) // sh + 1, (wd - kw) // sw + 1
    windows = [
        x[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    cols = ops.reshape(ops.stack(windows, axis=2), (n, c * kh * kw, ho * wo))
    y = ops.reshape(ops.matmul(ops.reshape(w, (o, c * kh * kw)), cols), (n, o, ho, wo))
    return y + ops.reshape(b, (1, o, 1, 1)) if b is not None else y


@contextlib.contextmanager
def old_formula():
    """Within the block ``md.nn.functional.conv2d`` (hence ``nn.Conv2d``) is the old formula."""
    saved = F.conv2d
    F.conv2d = old_conv2d
    try:
        yield
    finally:
        F.conv2d = saved


# ----------------------------------------------------------------------------- one layer
def layer_calls(system, c_in, c_out, side, batch, seed):
    """task → zero-argument call of ``system`` for one layer at one batch size (inputs drawn from
    ``seed``, so every worker process builds the same arrays)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c_in, side, side)).astype(np.float32)
    w = (rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    r = rng.standard_normal((batch, c_out, side, side)).astype(np.float32)
    tx, tw = rng.standard_normal(x.shape).astype(np.float32), rng.standard_normal(w.shape).astype(np.float32)
    data = c_in == 1  # the first layer: its input is data, with no gradient and no tangent
    if system == "PyTorch":
        return _torch_layer(x, w, b, r, tx, tw, data)
    conv = old_conv2d if system == "old" else F.conv2d
    X, W, B, R, TX, TW = (md.tensor(a) for a in (x, w, b, r, tx, tw))
    calls = {"f": lambda: conv(X, W, B, padding=1)}
    if data:
        g = md.value_and_grad(lambda w_: (conv(X, w_, B, padding=1) * R).sum())
        calls["f + grad"] = lambda: g(W)
        calls["JVP"] = lambda: md.jvp(lambda w_: conv(X, w_, B, padding=1), (W,), (TW,))
    else:
        g2 = md.value_and_grad(lambda x_, w_: (conv(x_, w_, B, padding=1) * R).sum(), argnums=(0, 1))
        calls["f + grad"] = lambda: g2(X, W)
        calls["JVP"] = lambda: md.jvp(lambda x_, w_: conv(x_, w_, B, padding=1), (X, W), (TX, TW))
    return calls


def _torch_layer(x, w, b, r, tx, tw, data):
    conv = torch.nn.functional.conv2d
    xt, wt, bt, rt, txt, twt = (torch.from_numpy(a) for a in (x, w, b, r, tx, tw))
    xg, wg = xt.clone().requires_grad_(not data), wt.clone().requires_grad_()

    def f():
        with torch.no_grad():
            return conv(xt, wt, bt, padding=1)

    def grad():
        loss = (conv(xg, wg, bt, padding=1) * rt).sum()
        return loss, torch.autograd.grad(loss, (wg,) if data else (xg, wg))

    if data:
        jvp = lambda: torch.func.jvp(lambda w_: conv(xt, w_, bt, padding=1), (wt,), (twt,))  # noqa: E731
    else:
        jvp = lambda: torch.func.jvp(lambda x_, w_: conv(x_, w_, bt, padding=1), (xt, wt), (txt, twt))  # noqa: E731
    return {"f": f, "f + grad": grad, "JVP": jvp}


# ----------------------------------------------------------------------------- the paper's CNN
def cnn_calls(system, batch, seed):
    """task → call of ``system`` for the paper's CNN (``md.nn.models.cnn``) at one batch size, and the
    system's loss (float32) on the same parameters and data as every other system."""
    model = md.nn.models.cnn(seed=0)
    params = model.parameters()
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    X, Y = md.tensor(x), md.tensor(y)
    leaves, tree = md.pytree.flatten(params)
    dirs = md.pytree.unflatten(
        tree, [md.tensor(rng.standard_normal(p.shape).astype(np.float32)) for p in leaves]
    )
    if system == "PyTorch":
        return _torch_cnn(model, leaves, dirs, x, y)

    def loss(p):
        return F.cross_entropy(model.apply(p, X), Y)

    vg = md.value_and_grad(loss)
    ctx = old_formula if system == "old" else contextlib.nullcontext

    def run(fn):
        with ctx():
            return fn()

    calls = {
        "f": lambda: run(lambda: loss(params)),
        "f + grad": lambda: run(lambda: vg(params)),
        "JVP": lambda: run(lambda: md.jvp(loss, (params,), (dirs,))),
    }
    return calls, float(run(lambda: loss(params)))


def _torch_cnn(model, leaves, dirs, x, y):
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(1, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10),
    )  # fmt: skip
    # minidiff names a Sequential's parameters as PyTorch does ("0.weight", ..., "13.bias")
    name_of = {id(t): n for n, t in model.named_parameters()}
    names = [name_of[id(p)] for p in leaves]
    values = {n: torch.from_numpy(p.numpy().copy()) for n, p in zip(names, leaves)}
    tangents = {n: torch.from_numpy(d.numpy().copy()) for n, d in zip(names, md.pytree.flatten(dirs)[0])}
    net.load_state_dict(values)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    ce = torch.nn.functional.cross_entropy

    def f():
        with torch.no_grad():
            return ce(net(xt), yt)

    def grad():
        loss = ce(net(xt), yt)
        return loss, torch.autograd.grad(loss, list(net.parameters()))

    def loss_of(p):
        return ce(torch.func.functional_call(net, p, (xt,)), yt)

    calls = {"f": f, "f + grad": grad, "JVP": lambda: torch.func.jvp(loss_of, (values,), (tangents,))}
    return calls, float(f())


# ----------------------------------------------------------------------------- Winograd F(2×2, 3×3)
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def _bt_rows(d, out):
    """``Bᵀ d`` along the axis of ``d`` given as four slices: ``(d0 − d2, d1 + d2, d2 − d1, d1 − d3)``."""
    d0, d1, d2, d3 = d
    np.subtract(d0, d2, out=out[0])
    np.add(d1, d2, out=out[1])
    np.subtract(d2, d1, out=out[2])
    np.subtract(d1, d3, out=out[3])


def winograd_conv3x3(x, w):
    """3×3 convolution, stride 1, padding 1, by Winograd F(2×2, 3×3) in the dtype of ``x``: the input
    cut into 4×4 tiles (stride 2), each transformed ``Bᵀ d B`` (additions only), 16 GEMMs
    ``(O, C) @ (C, tiles)`` against the transformed kernels ``G g Gᵀ``, and each 4×4 product mapped to a
    2×2 output tile by ``Aᵀ m A`` (additions only): 16 multiplications per 2×2 outputs instead of 36."""
    n, c, h, wd = x.shape
    o, dt = w.shape[0], x.dtype
    th, tw = (h + 1) // 2, (wd + 1) // 2
    pad = np.zeros((c, n, 2 * th + 2, 2 * tw + 2), dt)
    pad[:, :, 1 : 1 + h, 1 : 1 + wd] = x.transpose(1, 0, 2, 3)
    s = pad.strides
    tiles = np.lib.stride_tricks.as_strided(
        pad, (c, n, th, tw, 4, 4), (s[0], s[1], 2 * s[2], 2 * s[3], s[2], s[3])
    )
    rows = np.empty((4, c, n, th, tw, 4), dt)
    _bt_rows([tiles[..., i, :] for i in range(4)], rows)
    v = np.empty((4, 4, c, n, th, tw), dt)
    _bt_rows([rows[..., j] for j in range(4)], [v[:, j] for j in range(4)])
    u = np.einsum("ai,ocij,bj->aboc", _G, w.astype(np.float64), _G).astype(dt)
    m = np.matmul(u.reshape(16, o, c), v.reshape(16, c, -1)).reshape(4, 4, o, n, th, tw)
    t = (m[0] + m[1] + m[2], m[1] - m[2] - m[3])  # Aᵀ m along the first tile axis
    y = np.empty((n, o, th, 2, tw, 2), dt)
    for i, ti in enumerate(t):  # then m A along the second
        y[:, :, :, i, :, 0] = (ti[0] + ti[1] + ti[2]).transpose(1, 0, 2, 3)
        y[:, :, :, i, :, 1] = (ti[1] - ti[2] - ti[3]).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(y.reshape(n, o, 2 * th, 2 * tw)[:, :, :h, :wd])


def direct_conv_float64(x, w):
    """The reference: a direct 3×3, padding 1 convolution in float64 (nine shifted products)."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, h, wd = x.shape
    pad = np.zeros((n, c, h + 2, wd + 2))
    pad[:, :, 1:-1, 1:-1] = x
    return sum(
        np.einsum("oc,nchw->nohw", w[:, :, i, j], pad[:, :, i : i + h, j : j + wd])
        for i in range(3)
        for j in range(3)
    )


def winograd_rows(batches, repeats, warmup, rng):
    rows = []
    for name, c_in, c_out, side in LAYERS[1:]:
        for batch in batches:
            x = rng.standard_normal((batch, c_in, side, side)).astype(np.float32)
            w = (rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(np.float32)
            calls = {
                "im2col": lambda x=x, w=w: conv_kernels._conv_impl(np, x, w, (1, 1), (1, 1)),
                "Winograd": lambda x=x, w=w: winograd_conv3x3(x, w),
            }
            times = measure_interleaved(calls, repeats=repeats, warmup=warmup)
            ref = direct_conv_float64(x, w)
            scale = np.abs(ref).max()
            errors = {k: float(np.abs(fn() - ref).max() / scale) for k, fn in calls.items()}
            rows.append({"layer": name, "batch": batch, "times": _ms(times), "relative_error": errors})
    return rows


# ----------------------------------------------------------------------------- running and printing
def _ms(times):
    return {
        k: {"median_ms": m.median * 1e3, "q1_ms": m.q1 * 1e3, "q3_ms": m.q3 * 1e3} for k, m in times.items()
    }


def _items(batches):
    """(key, label, batch, builder) for every layer and batch, then the paper's CNN at every batch."""
    items = [
        (f"layer{i}/{batch}", name, batch, lambda system, i=i, c=c, o=o, s=s, b=batch: (
            layer_calls(system, c, o, s, b, [0, i, b]), None))
        for i, (name, c, o, s) in enumerate(LAYERS)
        for batch in batches
    ]  # fmt: skip
    items += [
        (f"cnn/{batch}", "paper CNN", batch, lambda system, b=batch: cnn_calls(system, b, [1, b]))
        for batch in batches
    ]
    return items


def worker(system, batches, warmup, inner):
    """In this process: warm up and time ``inner`` calls of every task of every item for ``system``;
    returns {key: {"samples": {task: [seconds]}, "loss": float or None}}, or {"skipped": reason}."""
    if system == "PyTorch" and _import_torch() is None:
        return {"skipped": "torch is not importable"}
    out = {}
    for key, _, _, build in _items(batches):
        calls, loss = build(system)
        samples = {}
        for task, call in calls.items():
            for _ in range(warmup):
                call()
            times = []
            for _ in range(inner):
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
            samples[task] = times
        out[key] = {"samples": samples, "loss": loss}
    return out


def _worker_env():
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[key] = str(THREADS)
    return env


def run_worker(system, batches, warmup, inner):
    """Start a worker process for ``system`` and return its JSON answer."""
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", system]
    args += ["--batches", ",".join(map(str, batches)), "--warmup", str(warmup), "--inner", str(inner)]
    done = subprocess.run(args, capture_output=True, text=True, env=_worker_env())
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"conv benchmark: the {system} worker failed (exit {done.returncode}): {tail}")
    return json.loads(lines[-1])


def measure_in_processes(batches, rounds, warmup, inner, log=print):
    """rows as before: each system timed in its own process, one process per system per round, the
    order rotating from round to round; median and quartiles over rounds × inner samples."""
    samples, losses, skipped = {}, {}, {}
    for r, order in enumerate(round_orders(SYSTEMS, rounds)):
        for system in order:
            answer = run_worker(system, batches, warmup, inner)
            if "skipped" in answer:
                skipped[system] = answer["skipped"]
                continue
            for key, got in answer.items():
                for task, times in got["samples"].items():
                    samples.setdefault(key, {}).setdefault(task, {}).setdefault(system, []).extend(times)
                if got["loss"] is not None:
                    losses.setdefault(key, {})[system] = got["loss"]
        log(f"round {r + 1}/{rounds} done ({', '.join(order)})", file=sys.stderr)
    rows = []
    for key, label, batch, _ in _items(batches):
        times = {
            task: _ms({system: summarize(v) for system, v in by_system.items()})
            for task, by_system in samples[key].items()
        }
        row = {"what": label, "batch": batch, "times": times}
        if key in losses:
            row["losses"] = losses[key]
            row["loss_spread"] = max(losses[key].values()) - min(losses[key].values())
        rows.append(row)
    return rows, skipped


def _cell(t):
    return f"{t['median_ms']:.1f} [{t['q1_ms']:.1f}–{t['q3_ms']:.1f}]" if t else "—"


def _ratio(a, b):
    return f"{a['median_ms'] / b['median_ms']:.2f}" if a and b else "—"


def print_table(rows):
    print(
        "| what | batch | task | old ms [q1–q3] | new ms [q1–q3] | PyTorch ms [q1–q3] | new ÷ old | new ÷ PyTorch |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        for task in TASKS:
            t = row["times"][task]
            old, new, pt = t.get("old"), t.get("new"), t.get("PyTorch")
            print(
                f"| {row['what']} | {row['batch']} | {task} | {_cell(old)} | {_cell(new)} | {_cell(pt)} | "
                f"{_ratio(new, old)} | {_ratio(new, pt)} |"
            )


def print_winograd(rows):
    print(
        "| layer | batch | im2col f ms [q1–q3] | Winograd f ms [q1–q3] | im2col rel. error | Winograd rel. error |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        t, e = r["times"], r["relative_error"]
        print(
            f"| {r['layer']} | {r['batch']} | {_cell(t['im2col'])} | {_cell(t['Winograd'])} | "
            f"{e['im2col']:.1e} | {e['Winograd']:.1e} |"
        )


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="batch 1 and 2, two rounds: a smoke run")
    p.add_argument(
        "--repeats", type=int, default=None, help="rounds of worker processes (default 7; --quick: 2)"
    )
    p.add_argument("--inner", type=int, default=1, help="timed calls per task in each worker (default 1)")
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed calls per task first (default 2; --quick: 1)"
    )
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,16,64)")
    p.add_argument("--json", default=None, help="write the results and the environment here")
    p.add_argument("--worker", choices=SYSTEMS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    batches = [int(b) for b in (args.batches or ("1,2" if args.quick else "1,16,64")).split(",")]
    repeats = args.repeats or (2 if args.quick else 7)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if args.worker:
        print(json.dumps(worker(args.worker, batches, warmup, args.inner)))
        return {}
    rows, skipped = measure_in_processes(batches, repeats, warmup, args.inner)
    wino = winograd_rows(batches, repeats, warmup, np.random.default_rng(0))
    env = environment()
    env["torch"] = skipped.get("PyTorch", "in its own process")
    env["torch_threads"] = None if "PyTorch" in skipped else THREADS
    env["blas_threads"] = f"{THREADS} (OPENBLAS_NUM_THREADS in every worker)"
    print(f"machine: {env['cpu']}, {env['logical_cores']} cores; BLAS threads: {env['blas_threads']}; "
          f"PyTorch: {env['torch']}, {THREADS} threads; float32; each system in its own process, "
          f"{repeats} rounds × {args.inner} calls")  # fmt: skip
    print()
    print_table(rows)
    print()
    print_winograd(wino)
    result = {
        "settings": {
            "quick": args.quick, "batches": batches, "repeats": repeats, "warmup": warmup,
            "inner": args.inner, "separate_processes": True,
        },
        "rows": rows,
        "winograd": wino,
        "environment": env,
    }  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
