"""``md.vmap`` against a Python loop, for every primitive; ``md.jacfwd`` against ``md.jacrev``.

For every op spec of ``tests/opspecs.py`` (the non-differentiable primitives included) Hypothesis
draws a case and a batch of examples, and ``vmap(f)`` must equal stacking ``f`` applied to each
example, for every pattern of batched and unbatched (``in_axes=None``) arguments, with the batch
axis at a drawn position of each input and of the output.  The batching rules of the derivative
rules are exercised by ``jacfwd``/``jacrev`` (vectorized JVPs and VJPs) and per-example gradients.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opspecs import DIFF_SPECS, SPECS, hyp_settings, tensors

import minidiff as md

#: vmapped float64 results against the per-example loop: the same arithmetic, batched
BATCH64 = dict(rtol=1e-10, atol=1e-12)
#: jacfwd against jacrev in float64
JAC64 = dict(rtol=1e-9, atol=1e-10)


def _np(x):
    return x.numpy() if isinstance(x, md.Tensor) else np.asarray(x)


def assert_batch_close(got, want, what, tol=BATCH64):
    got, want = _np(got), _np(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != per-example {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != per-example {want.dtype}"
    if want.dtype.kind in "biu":
        assert np.array_equal(got, want), f"{what}: values differ"
        return
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    assert np.allclose(got, want, rtol=tol["rtol"], atol=tol["atol"] * scale, equal_nan=True), (
        f"{what}: max abs error {float(np.nanmax(np.abs(got - want))):.3g}"
    )


def _patterns(n):
    """Every non-empty subset of the n arguments to batch (the others get in_axes=None)."""
    return [p for p in itertools.product([True, False], repeat=n) if any(p)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@hyp_settings(10)
@given(data=st.data(), size=st.integers(1, 3))
def test_vmap_equals_stacking_per_example(spec, data, size):
    case = data.draw(spec.case, label="case")
    examples = [tensors(case.draw_values(data.draw)) for _ in range(size)]
    n = len(case.shapes)
    for pattern in _patterns(n):
        in_axes, args = [], []
        for i, batched in enumerate(pattern):
            if not batched:
                in_axes.append(None)
                args.append(examples[0][i])
                continue
            stacked = np.stack([ex[i].numpy() for ex in examples])
            ax = data.draw(st.integers(-stacked.ndim, stacked.ndim - 1), label=f"in_axis {i}")
            in_axes.append(ax)
            args.append(md.tensor(np.moveaxis(stacked, 0, ax)))
        per_example = [
            case.f(*[examples[k][i] if b else examples[0][i] for i, b in enumerate(pattern)])
            for k in range(size)
        ]
        out_nd = per_example[0].ndim + 1
        out_axis = data.draw(st.integers(0, out_nd - 1), label="out_axes")
        want = np.moveaxis(np.stack([_np(o) for o in per_example]), 0, out_axis)
        got = md.vmap(case.f, in_axes=tuple(in_axes), out_axes=out_axis)(*args)
        assert_batch_close(got, want, f"vmap in_axes={tuple(in_axes)} out_axes={out_axis}")


@pytest.mark.parametrize("spec", DIFF_SPECS, ids=lambda s: s.name)
@hyp_settings(6)
@given(data=st.data())
def test_jacfwd_equals_jacrev(spec, data):
    case = data.draw(spec.case, label="case")
    args = tensors(case.draw_values(data.draw))
    out = case.f(*args)
    argnums = tuple(range(len(args)))
    jf = md.jacfwd(case.f, argnums=argnums)(*args)
    jr = md.jacrev(case.f, argnums=argnums)(*args)
    for i, (a, b) in enumerate(zip(jf, jr)):
        assert a.shape == out.shape + args[i].shape, f"jacfwd shape {a.shape} for input {i}"
        assert_batch_close(a, b, f"jacfwd vs jacrev, input {i}", {**JAC64, **spec.agree})


# ----------------------------------------------------------------------------- per-example derivatives
SAMPLE = [
    "sin",
    "divide",
    "matmul",
    "einsum",
    "getitem_advanced",
    "max",
    "solve",
    "softmax",
    "conv2d",
    "where",
]


@pytest.mark.parametrize("spec", [s for s in DIFF_SPECS if s.name in SAMPLE], ids=lambda s: s.name)
@hyp_settings(6)
@given(data=st.data(), size=st.integers(1, 3))
def test_vmap_of_grad_and_jvp_equals_loop(spec, data, size):
    """Per-example gradients (vmap of grad) and per-example JVPs: the rules batch correctly."""
    case = data.draw(spec.case, label="case")
    examples = [tensors(case.draw_values(data.draw)) for _ in range(size)]
    n = len(case.shapes)
    stacked = [md.tensor(np.stack([ex[i].numpy() for ex in examples])) for i in range(n)]

    def loss(*xs):
        return md.sum(md.sin(case.f(*xs)))

    grads = md.vmap(md.grad(loss, argnums=tuple(range(n))))(*stacked)
    for i in range(n):
        want = np.stack([md.grad(loss, argnums=i)(*ex).numpy() for ex in examples])
        assert_batch_close(grads[i], want, f"vmap(grad) input {i}")

    tangents = [md.tensor(np.random.default_rng(k).standard_normal(s.shape)) for k, s in enumerate(stacked)]
    got = md.vmap(lambda xs, ts: md.jvp(case.f, tuple(xs), tuple(ts))[1])(stacked, tangents)
    want = np.stack(
        [md.jvp(case.f, ex, tuple(t[k] for t in tangents))[1].numpy() for k, ex in enumerate(examples)]
    )
    assert_batch_close(got, want, "vmap(jvp)")


# ----------------------------------------------------------------------------- hand-picked cases
def _rand(*shape, seed=0):
    return md.tensor(np.random.default_rng(seed).standard_normal(shape))


def _loop(f, args, in_axes):
    size = next(a.shape[ax] for a, ax in zip(args, in_axes) if ax is not None)
    outs = []
    for k in range(size):
        outs.append(
            f(*[a if ax is None else md.moveaxis(a, ax, 0)[k] for a, ax in zip(args, in_axes)]).numpy()
        )
    return np.stack(outs)


MATMUL_CASES = [
    # (x shape, y shape, in_axes): 1-D operands on either side, batched or shared
    ((3, 4), (4,), (0, None)),
    ((3, 4), (3, 4), (0, 0)),
    ((4,), (3, 4), (None, 0)),
    ((3, 4), (4, 2), (0, None)),
    ((4, 2), (3, 2), (None, 0)),
    ((3, 4), (4, 2, 3), (0, 2)),
    ((4, 3), (3, 4), (1, 0)),
    ((3, 2, 5, 4), (4,), (0, None)),
    ((3, 4), (2, 4, 5), (0, None)),
]


@pytest.mark.parametrize("xs, ys, in_axes", MATMUL_CASES)
def test_vmap_matmul_with_1d_operands(xs, ys, in_axes):
    x, y = _rand(*xs, seed=1), _rand(*ys, seed=2)
    got = md.vmap(md.matmul, in_axes=in_axes)(x, y)
    assert_batch_close(got, _loop(md.matmul, (x, y), in_axes), f"matmul {xs} {ys} {in_axes}")
    jac = md.vmap(md.jacrev(md.matmul, argnums=(0, 1)), in_axes=in_axes)(x, y)
    jac_f = md.vmap(md.jacfwd(md.matmul, argnums=(0, 1)), in_axes=in_axes)(x, y)
    for a, b in zip(jac, jac_f):
        assert_batch_close(a, b, "vmap(jacrev) vs vmap(jacfwd)", JAC64)


EINSUM_CASES = [
    ("ij,jk->ik", (3, 2, 4), (4, 5), (0, None)),
    ("ij,jk->ik", (2, 4), (3, 4, 5), (None, 0)),
    ("i,i->", (3, 4), (4, 3), (0, 1)),
    ("bij,bjk->bik", (2, 3, 4, 2), (2, 3, 2, 5), (1, 1)),
    ("ij->", (3, 2, 2), None, (0,)),
    ("...ij,...jk->...ik", (3, 2, 2, 4), (4, 1), (0, None)),
    ("ij,k->i", (2, 3), (3, 4), (None, 0)),
]


@pytest.mark.parametrize("spec, xs, ys, in_axes", EINSUM_CASES)
def test_vmap_einsum(spec, xs, ys, in_axes):
    args = (_rand(*xs, seed=3),) + ((_rand(*ys, seed=4),) if ys else ())

    def f(*ops):
        return md.einsum(spec, *ops)

    assert_batch_close(md.vmap(f, in_axes=in_axes)(*args), _loop(f, args, in_axes), spec)


GETITEM_CASES = [
    # indices with advanced parts: adjacent, split by a slice (NumPy moves them first), with ints
    (lambda x: x[[0, 2, 2], :], (3, 4)),
    (lambda x: x[:, [3, 0]], (3, 4)),
    (lambda x: x[[1, 0], :, [2, 2]], (3, 4, 5)),
    (lambda x: x[0, :, [1, 3]], (3, 4, 5)),
    (lambda x: x[[0, 1], 2], (3, 4, 5)),
    (lambda x: x[:, 1, [0, 0, 4]], (3, 4, 5)),
    (lambda x: x[np.array([[0, 1], [2, 0]]), :, 1], (3, 4, 5)),
    (lambda x: x[None, [1, 2], None, 0], (3, 4)),
    (lambda x: x[np.array([True, False, True])], (3, 4)),
]


@pytest.mark.parametrize("k", range(len(GETITEM_CASES)))
def test_vmap_getitem_with_advanced_indices(k):
    f, shape = GETITEM_CASES[k]
    x = _rand(4, *shape, seed=k)
    assert_batch_close(md.vmap(f)(x), _loop(f, (x,), (0,)), "vmap(getitem)")
    xt = md.moveaxis(x, 0, -1)
    assert_batch_close(md.vmap(f, in_axes=-1)(xt), _loop(f, (x,), (0,)), "vmap(getitem) in_axes=-1")
    # the transpose (scatter) batches too: per-example VJPs, and jacrev = jacfwd
    u = md.ones_like(f(x[0]))
    got = md.vmap(lambda z: md.vjp(f, z)[1](u)[0])(x)
    want = np.stack([md.vjp(f, x[i])[1](u)[0].numpy() for i in range(4)])
    assert_batch_close(got, want, "vmap(vjp(getitem))")
    x0 = x[0]
    assert_batch_close(md.jacrev(f)(x0), md.jacfwd(f)(x0), "jacrev vs jacfwd of getitem", JAC64)


def test_nested_vmap_equals_double_loop():
    x, y = _rand(2, 3, 4, seed=5), _rand(3, 4, 2, seed=6)

    def f(a, b):
        return md.sum(md.matmul(a, b) ** 2, axis=0) + md.max(a)

    got = md.vmap(md.vmap(f, in_axes=(0, 0)), in_axes=(0, None))(x, y)
    want = np.stack([np.stack([f(x[i, j], y[j]).numpy() for j in range(3)]) for i in range(2)])
    assert_batch_close(got, want, "vmap(vmap(f))")


def test_vmap_unbatched_output_is_broadcast():
    x = _rand(3, 2, seed=7)
    c = md.tensor([1.0, 2.0])
    got = md.vmap(lambda z: c * 2.0)(x)
    assert_batch_close(got, np.broadcast_to([2.0, 4.0], (3, 2)), "constant output")


def test_vmap_in_axes_none_everywhere_is_an_error():
    with pytest.raises(md.ShapeError, match="vmap"):
        md.vmap(md.add, in_axes=(None, None))(md.ones(2), md.ones(2))
