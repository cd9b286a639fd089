"""Engine overhead: per-op dispatch cost, and an MLP in minidiff against hand-written NumPy.

Run: ``python benchmarks/overhead.py [--repeats N] [--json PATH] [--dispatch-only]``.  Not a test: prints a
table.  With PyTorch installed, the same dispatch loops and the MLP's f + grad run in PyTorch eager beside
minidiff's, in the same process.

* dispatch: one-element ``a + b`` without AD, under ``jvp`` (per op of a 200-op chain), and recorded
  on the tape plus walked backward (per op, the same chain).
* MLP 784→1024→1024→10, ReLU, softmax cross-entropy, batch 64, float32: minidiff's ``jvp`` (all
  parameters perturbed) and ``grad`` against the same forward-mode and backward computations written
  by hand in NumPy.  Targets (issue 12): dispatch ≤ 3.5 µs plain, ≤ 12 µs per op under ``jvp``, ≤ 10 µs
  per op recorded and walked back; the MLP within 1.15× of the hand-written times and its f + grad
  within 1.0× of PyTorch eager.

Every timing is :func:`minidiff.bench.timing.measure`: warm-up calls, then repeats of ``number`` calls,
reported as the median and the interquartile range.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import minidiff as md
from minidiff.bench.allocator import allocator_state, keep_freed_memory
from minidiff.bench.environment import environment
from minidiff.bench.timing import measure, measure_interleaved
from minidiff.nn import functional as F

CHAIN = 200


# ----------------------------------------------------------------------------- dispatch
def dispatch(repeats, clock=time.perf_counter):
    a, b = md.tensor([1.0]), md.tensor([2.0])

    def chain(x):
        for _ in range(CHAIN):
            x = x + b
        return x

    plain = measure(lambda: a + b, repeats, number=2000, clock=clock)
    fwd = measure(lambda: md.jvp(chain, (a,), (b,)), repeats, number=5, clock=clock)
    g = md.grad(lambda x: chain(x).sum())
    rev = measure(lambda: g(a), repeats, number=5, clock=clock)
    leaf = md.tensor([1.0], requires_grad=True)

    def tape():
        chain(leaf).sum().backward()

    tape_t = measure(tape, repeats, number=5, clock=clock)
    return _per_op({"plain": plain, "jvp": fwd, "grad": rev, "tape_backward": tape_t})


def _per_op(rows):
    """µs per op: median, IQR, quartiles and every sample (``plain`` is one op; the others a chain)."""
    out = {}
    for name, m in rows.items():
        scale = 1e6 if name == "plain" else 1e6 / CHAIN
        key = "plain" if name == "plain" else f"{name}_per_op"
        out[f"{key}_us"] = m.median * scale
        out[f"{key}_iqr_us"] = m.iqr * scale
        out[f"{key}_q1_us"], out[f"{key}_q3_us"] = m.q1 * scale, m.q3 * scale
        out[f"{key}_samples_us"] = [t * scale for t in m.samples]
    return out


def torch_dispatch(repeats, clock=time.perf_counter):
    """The same loops in PyTorch eager (float64 one-element tensors), or None without torch: ``a + b``;
    the chain under ``torch.func.jvp`` and under forward-mode dual tensors (``torch.autograd.forward_ad``);
    recorded and walked back by ``torch.func.grad`` and by ``.backward()`` on a ``requires_grad`` leaf."""
    try:
        import torch
        import torch.autograd.forward_ad as fwad
    except ImportError:
        return None
    a, b = torch.tensor([1.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)

    def chain(x):
        for _ in range(CHAIN):
            x = x + b
        return x

    def dual():
        with fwad.dual_level():
            fwad.unpack_dual(chain(fwad.make_dual(a, b)))

    g = torch.func.grad(lambda x: chain(x).sum())
    leaf = a.clone().requires_grad_()

    def tape():
        chain(leaf).sum().backward()

    rows = {
        "plain": measure(lambda: a + b, repeats, number=2000, clock=clock),
        "jvp": measure(lambda: torch.func.jvp(chain, (a,), (b,)), repeats, number=5, clock=clock),
        "dual": measure(dual, repeats, number=5, clock=clock),
        "grad": measure(lambda: g(a), repeats, number=5, clock=clock),
        "tape_backward": measure(tape, repeats, number=5, clock=clock),
    }
    out = _per_op(rows)
    out["torch"] = torch.__version__
    out["torch_threads"] = torch.get_num_threads()
    return out


def numpy_protocol(repeats):
    """What NumPy's protocols add to a call: ``np.add``/``np.sum`` on tensors against ``md.add``/``md.sum``."""
    a, b = md.tensor([1.0]), md.tensor([2.0])
    rows = {
        "md.add": lambda: md.add(a, b),
        "np.add (__array_ufunc__)": lambda: np.add(a, b),
        "md.sum": lambda: md.sum(a),
        "np.sum (__array_function__)": lambda: np.sum(a),
    }
    out = {}
    for name, fn in rows.items():
        m = measure(fn, repeats, number=2000)
        out[name] = {"median_us": m.median * 1e6, "iqr_us": m.iqr * 1e6}
    return out


# ----------------------------------------------------------------------------- the MLP
SIZES = (784, 1024, 1024, 10)


def init_params(rng, dtype=np.float32):
    params = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        w = (rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)).astype(dtype)
        params.append((w, np.zeros(fan_out, dtype)))
    return params


def md_loss(params, x, y):
    h = x
    for i, (w, b) in enumerate(params):
        h = F.linear(h, w, b)
        if i < len(params) - 1:
            h = md.relu(h)
    return F.cross_entropy(h, y)


def np_jvp(params, tangents, x, y):
    """Hand-written forward mode: the loss and its derivative along ``tangents``."""
    h, dh = x, np.zeros_like(x)
    last = len(params) - 1
    for i, ((w, b), (dw, db)) in enumerate(zip(params, tangents)):
        z = h @ w.T + b
        dz = dh @ w.T + h @ dw.T + db
        if i < last:
            mask = z > 0
            h, dh = z * mask, dz * mask
        else:
            h, dh = z, dz
    loss, p, rows = _np_cross_entropy(h, y)
    dloss = np.mean((p * dh).sum(axis=1) - dh[rows, y])
    return loss, dloss


def _np_cross_entropy(z, y):
    """Softmax cross-entropy of logits ``z``, its softmax (a fresh array the caller may change) and the
    row indices."""
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    loss = np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, y])
    return loss, e / s, rows


def np_grad(params, x, y):
    """Hand-written backprop: the loss and its gradient."""
    hs, zs = [x], []
    last = len(params) - 1
    for i, (w, b) in enumerate(params):
        z = hs[-1] @ w.T + b
        zs.append(z)
        hs.append(np.maximum(z, 0) if i < last else z)
    loss, g, rows = _np_cross_entropy(zs[-1], y)
    g[rows, y] -= 1
    g /= len(y)
    grads = [None] * len(params)
    for i in range(last, -1, -1):
        w = params[i][0]
        grads[i] = (g.T @ hs[i], g.sum(axis=0))
        if i > 0:
            g = (g @ w) * (zs[i - 1] > 0)
    return loss, grads


def mlp(repeats, batch=64):
    rng = np.random.default_rng(0)
    params = init_params(rng)
    tangents = [
        (rng.standard_normal(w.shape).astype(np.float32), rng.standard_normal(b.shape).astype(np.float32))
        for w, b in params
    ]
    x = rng.standard_normal((batch, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], batch)
    mp = [(md.tensor(w), md.tensor(b)) for w, b in params]
    mt = [(md.tensor(w), md.tensor(b)) for w, b in tangents]
    mx, my = md.tensor(x), md.tensor(y)

    # the two implementations agree before they are timed
    l_np, d_np = np_jvp(params, tangents, x, y)
    l_md, d_md = md.jvp(lambda p: md_loss(p, mx, my), (mp,), (mt,))
    assert np.allclose(l_np, l_md.item(), rtol=1e-4) and np.allclose(d_np, d_md.item(), rtol=1e-3, atol=1e-4)
    _, g_np = np_grad(params, x, y)
    g_md = md.grad(md_loss)(mp, mx, my)
    assert np.allclose(g_np[0][0], g_md[0][0].numpy(), rtol=1e-3, atol=1e-5)

    grad_fn = md.grad(md_loss)
    rows = {
        "jvp numpy": measure(lambda: np_jvp(params, tangents, x, y), repeats),
        "jvp minidiff": measure(lambda: md.jvp(lambda p: md_loss(p, mx, my), (mp,), (mt,)), repeats),
        "grad numpy": measure(lambda: np_grad(params, x, y), repeats),
        "grad minidiff": measure(lambda: grad_fn(mp, mx, my), repeats),
    }
    out = {k: {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3} for k, m in rows.items()}
    out["jvp_ratio"] = rows["jvp minidiff"].median / rows["jvp numpy"].median
    out["grad_ratio"] = rows["grad minidiff"].median / rows["grad numpy"].median
    return out


def torch_mlp(repeats, batch=64):
    """f + grad of the same MLP, parameters and minibatch in PyTorch eager (``torch.autograd.grad``) and
    in minidiff (``md.grad``), interleaved, or None without torch; checks the loss against minidiff's
    first.  Both use their default threads (OpenBLAS and PyTorch: one per core here), or PyTorch as many
    as ``OPENBLAS_NUM_THREADS`` gives NumPy's BLAS when that is set."""
    try:
        import torch
    except ImportError:
        return None
    if os.environ.get("OPENBLAS_NUM_THREADS"):  # as many threads as NumPy's BLAS was given
        torch.set_num_threads(int(os.environ["OPENBLAS_NUM_THREADS"]))
    rng = np.random.default_rng(0)
    params = init_params(rng)
    x = rng.standard_normal((batch, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], batch)
    tp = [(torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)) for w, b in params]
    flat = [t for pair in tp for t in pair]
    tx, ty = torch.tensor(x), torch.tensor(y)

    def loss():
        h = tx
        for i, (w, b) in enumerate(tp):
            h = torch.nn.functional.linear(h, w, b)
            if i < len(tp) - 1:
                h = torch.relu(h)
        return torch.nn.functional.cross_entropy(h, ty)

    mp = [(md.tensor(w), md.tensor(b)) for w, b in params]
    assert np.allclose(loss().item(), md_loss(mp, md.tensor(x), md.tensor(y)).item(), rtol=1e-4)
    grad_fn = md.grad(md_loss)
    mx, my = md.tensor(x), md.tensor(y)
    calls = {
        "f+grad torch": lambda: torch.autograd.grad(loss(), flat),
        "f+grad minidiff": lambda: grad_fn(mp, mx, my),
    }
    rows = measure_interleaved(calls, repeats)  # one call of each per round: load falls on both alike
    out = {k: {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3} for k, m in rows.items()}
    out["ratio"] = rows["f+grad minidiff"].median / rows["f+grad torch"].median
    out["torch_threads"] = torch.get_num_threads()
    return out


SIGNS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32) * 2 - 1


def np_rademacher(rng, shape):
    """The hand-written twin of minidiff's sampler: eight signs per random byte, by table lookup."""
    n = int(np.prod(shape))
    words = rng.integers(0, 256, size=(n + 7) // 8, dtype=np.uint8)
    return np.take(SIGNS, words, axis=0).reshape(-1)[:n].reshape(shape)


def rfrb_against_numpy(repeats, batch=64, distribution="normal"):
    """Rf and Rb of minidiff and of hand-written NumPy on the same MLP, minibatch and sampler."""
    rng = np.random.default_rng(0)
    params = init_params(rng)
    x = rng.standard_normal((batch, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], batch)
    calls = {**_numpy_calls(params, x, y, rng, distribution), **_minidiff_calls(params, x, y, distribution)}
    t = {name: measure(fn, repeats) for name, fn in calls.items()}
    out = {k: {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3} for k, m in t.items()}
    for who in ("numpy", "minidiff"):
        out[f"{who} Rf"] = t[f"{who} forward gradient"].median / t[f"{who} f"].median
        out[f"{who} Rb"] = t[f"{who} backprop"].median / t[f"{who} f"].median
    out["Rf minidiff / numpy"] = out["minidiff Rf"] / out["numpy Rf"]
    out["Rb minidiff / numpy"] = out["minidiff Rb"] / out["numpy Rb"]
    out["distribution"] = distribution
    return out


def _numpy_calls(params, x, y, rng, distribution):
    """f, one forward gradient (v drawn from ``rng``) and backprop, written by hand in NumPy."""
    draw = (
        (lambda shape: rng.standard_normal(shape, dtype=np.float32))
        if distribution == "normal"
        else (lambda shape: np_rademacher(rng, shape))
    )

    def np_fg():
        v = [(draw(w.shape), draw(b.shape)) for w, b in params]
        loss, d = np_jvp(params, v, x, y)
        return loss, [(d * vw, d * vb) for vw, vb in v]

    return {
        "numpy f": lambda: _np_loss(params, x, y),
        "numpy forward gradient": np_fg,
        "numpy backprop": lambda: np_grad(params, x, y),
    }


def _minidiff_calls(params, x, y, distribution):
    """The same three with minidiff: f, ``md.forward_grad`` and ``md.value_and_grad``."""
    mp = [(md.tensor(w), md.tensor(b)) for w, b in params]
    mx, my = md.tensor(x), md.tensor(y)
    mrng = md.random.Generator(0)
    f = lambda p: md_loss(p, mx, my)  # noqa: E731
    vg = md.value_and_grad(f)
    return {
        "minidiff f": lambda: f(mp),
        "minidiff forward gradient": lambda: md.forward_grad(f, mp, mrng, distribution=distribution),
        "minidiff backprop": lambda: vg(mp),
    }


def _np_loss(params, x, y):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b
        if i < len(params) - 1:
            h = np.maximum(h, 0)
    m = h.max(axis=1, keepdims=True)
    return np.mean(np.log(np.exp(h - m).sum(axis=1)) + m[:, 0] - h[np.arange(len(y)), y])


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.keep_freed_memory:
        keep_freed_memory()
    if args.mlp_vs_torch_only:
        tm = torch_mlp(args.repeats)
        if tm:
            _print_torch_mlp(tm)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"schema": 3, "torch_mlp": tm, "environment": environment()}, fh, indent=2)
        return
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    d = dispatch(args.repeats, clock)
    td = torch_dispatch(args.repeats, clock)
    _print_dispatch(d, td)
    result = {"schema": 3, "clock": args.clock, "dispatch": d, "torch_dispatch": td}
    if not args.dispatch_only:
        npp = numpy_protocol(args.repeats)
        m = mlp(args.repeats)
        tm = torch_mlp(args.repeats)
        fg = {dist: rfrb_against_numpy(args.repeats, distribution=dist) for dist in ("normal", "rademacher")}
        _print_protocols(npp)
        _print_mlp(m, tm)
        _print_rfrb(fg)
        result.update({"numpy_protocol": npp, "mlp": m, "torch_mlp": tm, "rfrb": fg})
    if args.json:
        result.update({"environment": environment(), "allocator": allocator_state()})
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="make glibc keep freed memory (mallopt) before measuring",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="dispatch timings by the wall clock, or by this thread's CPU time (time.thread_time: "
        "not counting the time other jobs hold the core, steadier on a shared machine)",
    )
    parser.add_argument(
        "--dispatch-only", action="store_true", help="measure only the per-op dispatch (and PyTorch's)"
    )
    parser.add_argument(
        "--mlp-vs-torch-only",
        action="store_true",
        help="measure only the MLP's f + grad against PyTorch eager (interleaved)",
    )
    return parser


def _print_dispatch(d, td=None):
    """minidiff's per-op times beside PyTorch's (if installed); median [q1, q3] in µs."""
    print(f"{'dispatch (one-element add), µs: median [q1, q3]':48s} {'minidiff':>22s} {'PyTorch':>22s}")
    for key, label, theirs, target in (
        ("plain", "plain, no AD", "plain", "≤ 3.5"),
        ("jvp_per_op", "under jvp, per op (torch.func.jvp)", "jvp_per_op", "≤ 12"),
        ("jvp_per_op", "under jvp, per op (torch forward-AD duals)", "dual_per_op", "≤ 12"),
        ("grad_per_op", "grad: recorded + backward, per op", "grad_per_op", "≤ 10"),
        ("tape_backward_per_op", "tape style: recorded + backward, per op", "tape_backward_per_op", "≤ 10"),
    ):
        ours = _cell(d, key)
        peer = _cell(td, theirs) if td else "—"
        print(f"{'  ' + label:48s} {ours:>22s} {peer:>22s}   target {target}")
    print()


def _cell(d, key):
    return f"{d[key + '_us']:.2f} [{d[key + '_q1_us']:.2f}, {d[key + '_q3_us']:.2f}]"


def _print_protocols(npp):
    print(f"{'NumPy protocols (one-element tensors)':44s} {'median':>10s} {'IQR':>9s}")
    for k, r in npp.items():
        print(f"{'  ' + k:44s} {r['median_us']:8.2f}µs {r['iqr_us']:7.2f}µs")
    print()


def _print_mlp(m, tm=None):
    print(f"{'MLP 784-1024-1024-10, batch 64, float32':44s} {'median':>10s} {'IQR':>9s}")
    for k in ("jvp numpy", "jvp minidiff", "grad numpy", "grad minidiff"):
        print(f"{'  ' + k:44s} {m[k]['median_ms']:8.2f}ms {m[k]['iqr_ms']:7.2f}ms")
    print(f"{'  jvp minidiff / numpy':44s} {m['jvp_ratio']:8.3f}×  (target ≤ 1.15×)")
    print(f"{'  grad minidiff / numpy':44s} {m['grad_ratio']:8.3f}×  (target ≤ 1.15×)")
    if tm:
        _print_torch_mlp(tm)
    print()


def _print_torch_mlp(tm):
    for k in ("f+grad torch", "f+grad minidiff"):
        print(f"{'  ' + k:44s} {tm[k]['median_ms']:8.2f}ms {tm[k]['iqr_ms']:7.2f}ms")
    print(
        f"{'  f+grad minidiff / PyTorch eager':44s} {tm['ratio']:8.3f}×  (target ≤ 1.0×, threads {tm['torch_threads']})"
    )


def _print_rfrb(fg):
    print(f"Rf and Rb, same MLP and minibatch, allocator {allocator_state()['mode']}")
    print(
        f"{'  sampler':14s} {'who':10s} {'f ms':>8s} {'fwd-grad ms':>12s} {'backprop ms':>12s} {'Rf':>7s} {'Rb':>7s}"
    )
    for dist, r in fg.items():
        for who in ("numpy", "minidiff"):
            print(
                f"  {dist:12s} {who:10s} {r[who + ' f']['median_ms']:8.2f} {r[who + ' forward gradient']['median_ms']:12.2f} "
                f"{r[who + ' backprop']['median_ms']:12.2f} {r[who + ' Rf']:7.3f} {r[who + ' Rb']:7.3f}"
            )
        print(
            f"  {dist:12s} minidiff/numpy: Rf {r['Rf minidiff / numpy']:.3f}×, Rb {r['Rb minidiff / numpy']:.3f}× "
            "(targets ≤ 1.15×)"
        )


if __name__ == "__main__":
    main()
