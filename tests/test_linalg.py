"""``md.linalg`` against SciPy and NumPy: values, derivatives in every mode, vmap, degenerate inputs
and every error path.

The drawn-input property battery of every new primitive runs from ``tests/opspecs_linalg.py`` (through
``tests/test_primitives.py``); this file holds what a table of specs cannot say: references from SciPy
(``expm_frechet``, ``solve_triangular``, ``cho_solve``...), the conventions at repeated eigenvalues and
at zero, and the exact error messages.  Tolerances: float64 values rtol 1e-10 against SciPy/NumPy
(LAPACK on the same input), derivatives against closed forms rtol 1e-8, finite differences through
``md.testing.check_grads`` (step 1e-6, rtol 1e-5).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.linalg as sl
from hypothesis import strategies as st
from opspecs import SPECS  # (imports opspecs_linalg, whose specs it holds)

import minidiff as md
from minidiff.errors import DTypeError, LinAlgError, ShapeError
from minidiff.primitives import REGISTRY
from minidiff.primitives.decompositions import _band_outer, _sb, _st, _triangle
from minidiff.testing import Mutation, check_example, check_grads, check_mutation
from minidiff.testing.mutation import detached, negated, replaced, scaled

LA = md.linalg
RTOL = 1e-10


def t(a, dtype="float64"):
    return md.tensor(np.asarray(a, dtype=dtype))


def close(got, want, rtol=RTOL, atol=1e-12):
    g = got.numpy() if isinstance(got, md.Tensor) else np.asarray(got)
    np.testing.assert_allclose(g, want, rtol=rtol, atol=atol * max(1.0, np.abs(want).max(initial=0.0)))


@pytest.fixture
def sym(rng):
    a = rng.standard_normal((4, 4))
    return a + a.T


@pytest.fixture
def mat(rng):
    return rng.standard_normal((4, 4)) + 4 * np.eye(4)


def _fix_signs(v):
    """Columns with their largest-magnitude entry positive (to compare eigen/singular vectors)."""
    idx = np.argmax(np.abs(v), axis=-2)
    s = np.sign(np.take_along_axis(v, idx[..., None, :], axis=-2))
    return v * s


# ----------------------------------------------------------------------------- values against SciPy
def test_eigh_values_and_vectors_match_scipy(sym):
    w, v = LA.eigh(t(sym))
    w_ref, v_ref = sl.eigh(sym)
    close(w, w_ref)
    close(_fix_signs(v.numpy()), _fix_signs(v_ref))
    close(LA.eigvalsh(t(sym)), w_ref)
    upper = np.triu(sym) + np.tril(np.full((4, 4), 9.0), -1)  # garbage below: UPLO='U' ignores it
    close(LA.eigh(t(upper), UPLO="U")[0], w_ref)
    close(LA.eigvalsh(t(upper), UPLO="u"), w_ref)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (2, 4, 3)])
def test_svd_matches_numpy(rng, shape):
    a = rng.standard_normal(shape)
    u, s, vh = LA.svd(t(a), full_matrices=False)
    u_ref, s_ref, vh_ref = np.linalg.svd(a, full_matrices=False)
    close(s, s_ref)
    close(np.abs(u.numpy()), np.abs(u_ref))  # U and V share their column signs: compare magnitudes
    close(np.einsum("...ik,...k,...kj->...ij", u.numpy(), s.numpy(), vh.numpy()), a)
    close(LA.svdvals(t(a)), s_ref)
    close(LA.svd(t(a), compute_uv=False), s_ref)
    uf, sf, vhf = LA.svd(t(a))  # full_matrices=True: NumPy's default
    assert uf.shape == np.linalg.svd(a)[0].shape and vhf.shape == np.linalg.svd(a)[2].shape
    close(sf, s_ref)
    eye_m = np.broadcast_to(np.eye(shape[-2]), uf.shape)
    close(np.swapaxes(uf.numpy(), -1, -2) @ uf.numpy(), eye_m, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 3), (3, 3), (3, 5), (2, 4, 2)])
def test_qr_matches_numpy(rng, shape):
    a = rng.standard_normal(shape)
    q, r = LA.qr(t(a))
    q_ref, r_ref = np.linalg.qr(a)
    assert q.shape == q_ref.shape and r.shape == r_ref.shape
    close(q, q_ref, rtol=1e-9, atol=1e-12)
    close(r, r_ref, rtol=1e-9, atol=1e-12)
    close(LA.qr(t(a), mode="r"), r_ref, rtol=1e-9, atol=1e-12)
    if shape[-2] <= shape[-1]:
        close(LA.qr(t(a), mode="complete")[0], np.linalg.qr(a, mode="complete")[0], rtol=1e-9, atol=1e-12)


def test_slogdet_matches_numpy_with_both_signs_and_singular(mat):
    for a in (mat, -mat, mat[[1, 0, 2, 3]]):
        sign, logdet = LA.slogdet(t(a))
        s_ref, l_ref = np.linalg.slogdet(a)
        assert sign.item() == s_ref
        close(logdet, l_ref)
    sign, logdet = LA.slogdet(md.zeros((3, 3)))  # singular: no error in the forward pass
    assert sign.item() == 0.0 and logdet.item() == -math.inf


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("trans", [0, 1, 2, "N", "T", "C"])
@pytest.mark.parametrize("unit", [False, True])
def test_solve_triangular_matches_scipy(rng, lower, trans, unit):
    a = rng.standard_normal((4, 4)) + 4 * np.eye(4)  # both triangles full: only one is read
    b = rng.standard_normal((4, 2))
    want = sl.solve_triangular(a, b, trans=trans, lower=lower, unit_diagonal=unit)
    close(LA.solve_triangular(t(a), t(b), trans=trans, lower=lower, unit_diagonal=unit), want)
    want_v = sl.solve_triangular(a, b[:, 0], trans=trans, lower=lower, unit_diagonal=unit)
    close(LA.solve_triangular(t(a), t(b[:, 0]), trans=trans, lower=lower, unit_diagonal=unit), want_v)


def test_solve_triangular_broadcasts_stacks(rng):
    a = np.tril(rng.standard_normal((3, 4, 4))) + 4 * np.eye(4)
    b = rng.standard_normal((4, 2))
    got = LA.solve_triangular(t(a), t(b), lower=True)
    close(got, np.stack([sl.solve_triangular(ai, b, lower=True) for ai in a]))
    got = LA.solve_triangular(t(a), t(b[:, 0]), lower=True)  # a 1-D b: one vector per matrix
    close(got, np.stack([sl.solve_triangular(ai, b[:, 0], lower=True) for ai in a]))
    assert LA.solve_triangular(t(a, "float32"), t(b, "float32"), lower=True).dtype == np.float32


@pytest.mark.parametrize("lower", [True, False])
def test_cho_factor_and_cho_solve_match_scipy(rng, lower):
    m = rng.standard_normal((4, 4))
    a = m @ m.T + 4 * np.eye(4)
    b = rng.standard_normal((4, 3))
    c, low = LA.cho_factor(t(a), lower=lower)
    assert low is lower
    want = np.linalg.cholesky(a) if lower else np.linalg.cholesky(a).T
    close(c, want)
    close(LA.cho_solve((c, low), t(b)), sl.cho_solve(sl.cho_factor(a, lower=lower), b))


# ----------------------------------------------------------------------------- solve_banded
def _band(rng, lower, upper, n, lead=()):
    """Band storage of a diagonally dominant banded matrix (its unread corners hold junk too)."""
    ab = rng.uniform(-1.0, 1.0, lead + (lower + upper + 1, n))
    ab[..., upper, :] += lower + upper + 2.0
    return ab


def _dense(ab, lower, upper):
    """The matrix whose band ``ab`` holds, ``A[i, j] = ab[u + i - j, j]`` on the band, zero off it."""
    n = ab.shape[-1]
    a = np.zeros((n, n))
    for i in range(n):
        for j in range(max(0, i - lower), min(n, i + upper + 1)):
            a[i, j] = ab[upper + i - j, j]
    return a


@pytest.mark.parametrize(
    "lower, upper, n", [(1, 1, 6), (0, 0, 4), (2, 0, 5), (0, 3, 5), (2, 1, 7), (3, 3, 2)]
)
def test_solve_banded_matches_scipy_and_a_dense_solve(rng, lower, upper, n):
    ab = _band(rng, lower, upper, n)
    b = rng.standard_normal((n, 3))
    want = sl.solve_banded((lower, upper), ab, b)
    close(LA.solve_banded((lower, upper), t(ab), t(b)), want)
    close(LA.solve_banded((lower, upper), t(ab), t(b[:, 0])), want[:, 0])
    close(LA.solve_banded((lower, upper), t(ab), t(b)), np.linalg.solve(_dense(ab, lower, upper), b))
    # the dense fallback of the CUDA path, run with NumPy
    close(md.backend.solve_banded_dense(np, lower, upper, ab, b), want)


def test_solve_banded_broadcasts_stacks_and_keeps_float32(rng):
    ab = _band(rng, 1, 2, 5, lead=(3,))
    b = rng.standard_normal((5, 2))
    got = LA.solve_banded((1, 2), t(ab), t(b))
    close(got, np.stack([sl.solve_banded((1, 2), a, b) for a in ab]))
    got = LA.solve_banded((1, 2), t(ab[0]), t(np.stack([b, 2 * b])))  # a stack of b against one band
    close(got, np.stack([sl.solve_banded((1, 2), ab[0], c) for c in (b, 2 * b)]))
    got = LA.solve_banded((1, 2), t(ab), t(b[:, 0]))  # a 1-D b: one vector per matrix
    close(got, np.stack([sl.solve_banded((1, 2), a, b[:, 0]) for a in ab]))
    assert LA.solve_banded((1, 2), t(ab, "float32"), t(b, "float32")).dtype == np.float32
    assert md.grad(lambda a: LA.solve_banded((1, 2), a, t(b, "float32")).sum())(t(ab, "float32")).dtype == (
        np.float32
    )


def test_solve_banded_ignores_the_corners_and_gives_them_no_cotangent(rng):
    ab = _band(rng, 2, 1, 5)
    b = t(rng.standard_normal(5))
    junk = ab.copy()
    junk[0, 0] = junk[2, -1] = junk[3, -2:] = 99.0  # outside the 5x5 matrix: never read
    close(LA.solve_banded((2, 1), t(junk), b), LA.solve_banded((2, 1), t(ab), b).numpy())
    g = md.grad(lambda a: md.sum(LA.solve_banded((2, 1), a, b) ** 2))(t(ab)).numpy()
    assert g[0, 0] == g[2, -1] == g[3, -1] == g[3, -2] == 0.0 and np.all(g[1] != 0.0)


def test_solve_banded_derivatives_match_solve_on_the_dense_matrix(rng):
    """Band and dense solve agree in every derivative: grad in (ab, b), and second order in ab."""
    lower, upper, n = 1, 2, 5
    ab, b = _band(rng, lower, upper, n), rng.standard_normal((n, 2))
    scatter = np.zeros((lower + upper + 1, n, n, n))  # dense A = Σ ab[r, j] · E_{r, j}
    for i in range(n):
        for j in range(max(0, i - lower), min(n, i + upper + 1)):
            scatter[upper + i - j, j, i, j] = 1.0
    dense = t(scatter.reshape(-1, n * n))

    def ours(a, y):
        return md.sum(LA.solve_banded((lower, upper), a, y) ** 3)

    def via_solve(a, y):
        return md.sum(LA.solve(md.reshape(md.reshape(a, (1, -1)) @ dense, (n, n)), y) ** 3)

    for got, want in zip(
        md.grad(ours, argnums=(0, 1))(t(ab), t(b)), md.grad(via_solve, argnums=(0, 1))(t(ab), t(b))
    ):
        close(got, want.numpy(), rtol=1e-9)
    close(md.hessian(ours)(t(ab), t(b)), md.hessian(via_solve)(t(ab), t(b)).numpy(), rtol=1e-8)
    check_grads(ours, (t(ab), t(b)), order=2, modes=("fwd", "rev"))


def test_vmap_of_solve_banded_and_of_its_gradient_equals_a_loop(rng):
    ab, b = _band(rng, 2, 1, 4, lead=(3,)), rng.standard_normal((3, 4))
    got = md.vmap(lambda a, y: LA.solve_banded((2, 1), a, y))(t(ab), t(b))
    close(got, np.stack([sl.solve_banded((2, 1), a, y) for a, y in zip(ab, b)]))
    g = md.vmap(md.grad(lambda a, y: md.sum(LA.solve_banded((2, 1), a, y) ** 2)))(t(ab), t(b))
    for k in range(3):
        close(g[k], md.grad(lambda a: md.sum(LA.solve_banded((2, 1), a, t(b[k])) ** 2))(t(ab[k])).numpy())


@pytest.mark.parametrize("n, k", [(0, 1), (0, 0), (1, 1), (1, 0), (3, 0)])
def test_solve_banded_on_empty_and_one_element_systems(n, k):
    ab = np.full((3, n), 0.5)
    ab[1] = 2.0
    x = LA.solve_banded((1, 1), t(ab), t(np.ones((n, k))))
    assert x.shape == (n, k)
    close(x, np.full((n, k), 0.5))  # 1x1: b / the diagonal in row u = 1
    f = lambda a, y: LA.solve_banded((1, 1), a, y)  # noqa: E731
    _, jv = md.jvp(f, (t(ab), t(np.ones((n, k)))), (md.ones((3, n)), md.ones((n, k))))
    ga, gb = md.vjp(f, t(ab), t(np.ones((n, k))))[1](md.ones((n, k)))
    assert jv.shape == (n, k) and ga.shape == (3, n) and gb.shape == (n, k)
    if n and k:
        check_grads(f, (t(ab), t(np.ones((n, k)))), order=2, modes=("fwd", "rev"))


def test_solve_banded_refuses_bad_arguments_naming_what_is_wrong():
    ab = md.ones((3, 4))
    with pytest.raises(ValueError, match=r"linalg\.solve_banded: \(l, u\) must be a pair of non-negative"):
        LA.solve_banded((1, -1), ab, md.ones(4))
    with pytest.raises(ValueError, match=r"linalg\.solve_banded: \(l, u\) must be a pair"):
        LA.solve_banded(1, ab, md.ones(4))
    with pytest.raises(ValueError, match=r"linalg\.solve_banded: \(l, u\) must be a pair"):
        LA.solve_banded((1.0, 1), ab, md.ones(4))
    with pytest.raises(
        ShapeError,
        match=r"linalg\.solve_banded: ab must have shape \(\.\.\., l \+ u \+ 1, n\) = \(\.\.\., 4, n\)",
    ):
        LA.solve_banded((2, 1), ab, md.ones(4))
    with pytest.raises(ShapeError, match=r"linalg\.solve_banded: ab must have shape .* got shape \(4,\)"):
        LA.solve_banded((0, 0), md.ones(4), md.ones(4))
    with pytest.raises(
        ShapeError,
        match=r"linalg\.solve_banded: ab of shape \(3, 4\) \(n = 4\) does not fit b of shape \(3,\)",
    ):
        LA.solve_banded((1, 1), ab, md.ones(3))
    with pytest.raises(ShapeError, match=r"linalg\.solve_banded: ab .* does not fit b of shape \(\)"):
        LA.solve_banded((1, 1), ab, md.tensor(1.0))
    with pytest.raises(
        ShapeError, match=r"linalg\.solve_banded: the stacks of a \(2, 3, 4\) and b \(3, 4, 1\)"
    ):
        LA.solve_banded((1, 1), md.ones((2, 3, 4)), md.ones((3, 4, 1)))
    with pytest.raises(DTypeError, match=r"linalg\.solve_banded: expected floating-point values, got int64"):
        LA.solve_banded((1, 1), ab, md.tensor([1, 2, 3, 4]))
    with pytest.raises(DTypeError, match=r"linalg\.solve_banded: expected floating-point values, got int64"):
        LA.solve_banded((1, 1), md.tensor(np.ones((3, 4), dtype=np.int64)), md.ones(4))


@pytest.mark.parametrize(
    "lu, ab",
    [
        ((1, 1), [[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]),  # [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
        ((0, 0), [[0.0]]),  # 1x1 zero
        ((1, 0), [[1.0, 0.0, 2.0], [3.0, 1.0, 0.0]]),  # a zero on the diagonal of a triangular band
        ((2, 1), [[0.0, 0.0, 0.0], [1.0, 0.0, 1.0], [2.0, 0.0, 0.0], [3.0, 0.0, 0.0]]),  # a zero column
    ],
)
def test_a_singular_banded_matrix_raises_naming_the_op_and_shape(lu, ab):
    n = len(ab[0])
    with pytest.raises(
        LinAlgError, match=rf"linalg\.solve_banded: the banded matrix of shape \({n}, {n}\) .* is singular"
    ):
        LA.solve_banded(lu, t(ab), md.ones(n))
    if n > 1:  # the dense fallback of the CUDA path says so too
        with pytest.raises(np.linalg.LinAlgError, match="singular"):
            md.backend.solve_banded_dense(np, *lu, np.asarray(ab), np.ones((n, 1)))


VECTOR_ORDS = [None, 1, 2, math.inf, -math.inf, 0, 3, 0.5, -1]
MATRIX_ORDS = [None, "fro", "nuc", 1, -1, 2, -2, math.inf, -math.inf]


@pytest.mark.parametrize("ord_", VECTOR_ORDS)
def test_vector_norms_match_numpy(rng, ord_):
    x = rng.standard_normal((3, 4))
    for axis in (0, 1, -1):
        for keepdims in (False, True):
            close(LA.norm(t(x), ord_, axis, keepdims), np.linalg.norm(x, ord_, axis, keepdims))
    close(LA.norm(t(x[0]), ord_), np.linalg.norm(x[0], ord_))
    o = 2 if ord_ is None else ord_
    close(LA.vector_norm(t(x), ord=o), np.linalg.vector_norm(x, ord=o))


@pytest.mark.parametrize("ord_", MATRIX_ORDS)
def test_matrix_norms_match_numpy(rng, ord_):
    x = rng.standard_normal((2, 3, 4))
    for axis in ((1, 2), (2, 0), (-1, -3)):
        for keepdims in (False, True):
            close(LA.norm(t(x), ord_, axis, keepdims), np.linalg.norm(x, ord_, axis, keepdims))
    close(LA.norm(t(x[0]), ord_), np.linalg.norm(x[0], ord_))
    close(LA.matrix_norm(t(x), ord=ord_ or "fro"), np.linalg.matrix_norm(x, ord=ord_ or "fro"))


def test_norm_of_everything_and_keepdims():
    x = np.arange(24.0).reshape(2, 3, 4)
    close(LA.norm(t(x)), np.linalg.norm(x))
    assert LA.norm(t(x), keepdims=True).shape == (1, 1, 1)
    close(LA.vector_norm(t(x), keepdims=True), np.linalg.vector_norm(x, keepdims=True))


@pytest.mark.parametrize("n", [-3, -1, 0, 1, 2, 5, 8])
def test_matrix_power_matches_numpy(mat, n):
    a = mat / 4
    close(LA.matrix_power(t(a), n), np.linalg.matrix_power(a, n), rtol=1e-9)
    stack = np.stack([a, a.T])
    close(LA.matrix_power(t(stack), n), np.linalg.matrix_power(stack, n), rtol=1e-9)


@pytest.mark.parametrize("offset", [-2, -1, 0, 1, 3])
def test_trace_matches_numpy(rng, offset):
    x = rng.standard_normal((2, 3, 4))
    close(LA.trace(t(x), offset=offset), np.linalg.trace(x, offset=offset))
    assert LA.trace(t(x), dtype="float32").dtype == np.float32


@pytest.mark.parametrize("scale", [0.0, 1e-3, 0.4, 3.0, 40.0])
def test_expm_matches_scipy(rng, scale):
    x = rng.standard_normal((3, 4, 4)) * scale
    ours = LA.expm(t(x)).numpy()
    np.testing.assert_allclose(ours, sl.expm(x), rtol=1e-11, atol=1e-13 * np.abs(ours).max())


# ----------------------------------------------------------------------------- derivatives against closed forms
def _lower_sym_grad(g):
    """A symmetric-matrix gradient as the gradient of the lower triangle eigh reads."""
    return np.tril(g + g.T, -1) + np.diag(np.diag(g))


def test_eigvalsh_gradient_is_the_outer_product_of_the_eigenvector(sym):
    w, v = np.linalg.eigh(sym)
    for k in range(4):
        g = md.grad(lambda a, k=k: LA.eigvalsh(a)[k])(t(sym))
        close(g, _lower_sym_grad(np.outer(v[:, k], v[:, k])), rtol=1e-8)
        g = md.grad(lambda a, k=k: LA.eigh(a)[0][k])(t(sym))
        close(g, _lower_sym_grad(np.outer(v[:, k], v[:, k])), rtol=1e-8)


def test_svdvals_gradient_is_u_v_transpose(rng):
    a = rng.standard_normal((5, 3))
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    for k in range(3):
        close(md.grad(lambda x, k=k: LA.svdvals(x)[k])(t(a)), np.outer(u[:, k], vh[k]), rtol=1e-8)
    close(md.grad(lambda x: LA.norm(x, "nuc"))(t(a)), u @ vh, rtol=1e-8)
    close(md.grad(lambda x: LA.norm(x, 2))(t(a)), np.outer(u[:, 0], vh[0]), rtol=1e-8)


def test_slogdet_gradient_is_the_inverse_transpose(mat):
    for a in (mat, -mat):
        close(md.grad(lambda x: LA.slogdet(x)[1])(t(a)), np.linalg.inv(a).T, rtol=1e-8)
        _, tan = md.jvp(lambda x: LA.slogdet(x)[1], (t(a),), (t(np.eye(4)),))
        close(tan, np.trace(np.linalg.inv(a)), rtol=1e-8)


@pytest.mark.parametrize("scale", [0.3, 5.0])
def test_expm_derivatives_match_scipy_expm_frechet(rng, scale):
    a = rng.standard_normal((4, 4)) * scale
    e = rng.standard_normal((4, 4))
    _, tan = md.jvp(LA.expm, (t(a),), (t(e),))
    frechet = sl.expm_frechet(a, e, compute_expm=False)
    np.testing.assert_allclose(tan.numpy(), frechet, rtol=1e-9, atol=1e-12 * np.abs(frechet).max())
    u = rng.standard_normal((4, 4))
    (g,) = md.vjp(LA.expm, t(a))[1](t(u))
    want = sl.expm_frechet(a.T, u, compute_expm=False)  # the adjoint of L(A, ·) is L(Aᵀ, ·)
    np.testing.assert_allclose(g.numpy(), want, rtol=1e-9, atol=1e-12 * np.abs(want).max())


def test_solve_triangular_derivatives_match_solve_on_the_triangle(rng):
    a = rng.standard_normal((4, 4)) + 4 * np.eye(4)
    b = rng.standard_normal((4, 2))

    def ours(x, y):
        return md.sum(LA.solve_triangular(x, y, lower=True) ** 2)

    def via_solve(x, y):
        mask = t(np.tril(np.ones((4, 4))))
        return md.sum(LA.solve(x * mask, y) ** 2)

    for got, want in zip(
        md.grad(ours, argnums=(0, 1))(t(a), t(b)), md.grad(via_solve, argnums=(0, 1))(t(a), t(b))
    ):
        close(got, want.numpy(), rtol=1e-9)


# ----------------------------------------------------------------------------- every mode, finite differences
def _sign_free_eigh(a):
    w, v = LA.eigh(a)
    return md.sum(w * w) + md.sum((v * v) * md.arange(16.0).reshape(4, 4)) + md.sum(v * v[:1, :])


def _sign_free_svd(a):
    u, s, vh = LA.svd(a, full_matrices=False)
    return md.sum(s**3) + md.sum(u * u[:1, :] * 0.7) + md.sum(vh * vh * 1.3)


def _qr_loss(a):
    q, r = LA.qr(a)
    return md.sum(md.abs(r)) + md.sum(q * q[:1, :])


FUNCTIONS = {
    "eigh": (_sign_free_eigh, "sym"),
    "eigvalsh": (lambda a: md.sum(md.tanh(LA.eigvalsh(a))), "sym"),
    "svd": (_sign_free_svd, "rect"),
    "svdvals": (lambda a: md.sum(md.sin(LA.svdvals(a))), "rect"),
    "qr": (_qr_loss, "rect"),
    "slogdet": (lambda a: LA.slogdet(a)[1] * LA.slogdet(a)[0], "mat"),
    "solve_triangular": (lambda a: md.sum(LA.solve_triangular(a, a[:, :2], trans=1) ** 2), "mat"),
    "expm": (lambda a: md.sum(LA.expm(a) ** 2), "mat"),
    "norm_2": (lambda a: LA.norm(a, 2) + LA.norm(a[0]) + LA.norm(a, math.inf, axis=1).sum(), "rect"),
    "matrix_power": (lambda a: md.sum(LA.matrix_power(a, -2) + LA.matrix_power(a, 3)), "mat"),
}


@pytest.fixture
def inputs(rng, sym, mat):
    return {"sym": sym, "rect": rng.standard_normal((5, 3)) + np.eye(5, 3) * 2, "mat": mat / 4}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_derivatives_in_every_mode_against_finite_differences(name, inputs):
    f, kind = FUNCTIONS[name]
    x = t(inputs[kind])
    check_grads(f, (x,), order=2, modes=("fwd", "rev"))
    v = t(np.linspace(-1.0, 1.0, x.size).reshape(x.shape))
    hvs = [md.hvp(f, (x,), (v,), mode=m)[0].numpy() for m in md.transforms.HVP_MODES]
    for h in hvs[1:]:
        np.testing.assert_allclose(h, hvs[0], rtol=1e-8, atol=1e-10 * np.abs(hvs[0]).max())
    xg = md.tensor(inputs[kind], requires_grad=True)  # tape style agrees with md.grad
    f(xg).backward()
    close(xg.grad, md.grad(f)(x).numpy(), rtol=1e-12)


def test_vmap_over_a_batch_matches_one_example_at_a_time(rng):
    a = rng.standard_normal((3, 4, 4))
    s = a + np.swapaxes(a, -1, -2)
    b = rng.standard_normal((4, 2))
    fns = {
        "eigvalsh": (lambda m: LA.eigvalsh(m), s),
        "eigh": (lambda m: LA.eigh(m)[1] ** 2, s),
        "svd": (lambda m: LA.svd(m, full_matrices=False)[1], a),
        "qr": (lambda m: LA.qr(m)[1] ** 2, a),
        "slogdet": (lambda m: LA.slogdet(m)[1], a),
        "solve_triangular": (lambda m: LA.solve_triangular(m, t(b), lower=True), a + 4 * np.eye(4)),
        "expm": (LA.expm, a),
        "norm": (lambda m: LA.norm(m, "nuc"), a),
    }
    for name, (f, x) in fns.items():
        got = md.vmap(f)(t(x)).numpy()
        want = np.stack([f(t(xi)).numpy() for xi in x])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=name)
        # and the derivative of a vmapped function: jacobians of each example
        g = md.grad(lambda m, f=f: md.sum(md.vmap(f)(m)))(t(x)).numpy()
        want_g = np.stack([md.grad(lambda m, f=f: md.sum(f(m)))(t(xi)).numpy() for xi in x])
        np.testing.assert_allclose(g, want_g, rtol=1e-8, atol=1e-10, err_msg=name)
    # solve_triangular with the right-hand side mapped and the matrix shared
    tri = t(np.tril(a[0]) + 4 * np.eye(4))
    got = md.vmap(lambda y: LA.solve_triangular(tri, y, lower=True))(t(b.T)).numpy()
    close(got, sl.solve_triangular(tri.numpy(), b, lower=True).T)


def test_vectorized_jvp_gives_the_jacobian(sym):
    jf = md.jacfwd(lambda a: LA.eigh(a)[1] ** 2)(t(sym)).numpy()
    jr = md.jacrev(lambda a: LA.eigh(a)[1] ** 2)(t(sym)).numpy()
    np.testing.assert_allclose(jf, jr, rtol=1e-9, atol=1e-12)


def test_float32_stays_float32(sym, mat):
    a32 = t(sym, "float32")
    assert all(o.dtype == np.float32 for o in LA.eigh(a32))
    assert md.grad(lambda a: md.sum(LA.svd(a, full_matrices=False)[1]))(a32).dtype == np.float32
    assert md.grad(lambda a: LA.slogdet(a)[1])(t(mat, "float32")).dtype == np.float32
    assert LA.expm(a32).dtype == np.float32 and LA.norm(a32, "nuc").dtype == np.float32


# ----------------------------------------------------------------------------- degenerate inputs
SQUARE_FUNCTIONS = {
    "eigh": lambda a: LA.eigh(a)[1] ** 2,
    "eigvalsh": LA.eigvalsh,
    "svd": lambda a: LA.svd(a)[0] ** 2,
    "svdvals": LA.svdvals,
    "qr": lambda a: LA.qr(a)[1] ** 2,
    "slogdet": lambda a: LA.slogdet(a)[1],
    "solve_triangular": lambda a: LA.solve_triangular(a, a, lower=True),
    "cho_solve": lambda a: LA.cho_solve(LA.cho_factor(a), a),
    "expm": LA.expm,
    "matrix_power": lambda a: LA.matrix_power(a, -3),
    "trace": LA.trace,
    "norm_2": lambda a: LA.norm(a, 2, axis=(-2, -1)),
}
RECT_FUNCTIONS = {
    "svd": lambda a: LA.svd(a, full_matrices=False)[2] ** 2,
    "svdvals": LA.svdvals,
    "qr": lambda a: LA.qr(a)[0] ** 2,
    "norm_nuc": lambda a: LA.norm(a, "nuc", axis=(-2, -1)),
}


@pytest.mark.parametrize("shape", [(1, 1), (0, 0), (2, 1, 1), (2, 0, 0), (1, 3), (3, 1), (0, 2)])
def test_one_element_and_empty_matrices(shape):
    """1×1 and empty matrices: the right shapes, finite derivatives in both modes, and, with an
    element, derivatives that match finite differences."""
    fns = SQUARE_FUNCTIONS if shape[-1] == shape[-2] else RECT_FUNCTIONS
    x = t(np.full(shape, 2.0))
    for name, f in fns.items():
        if name == "norm_2" and x.size == 0:
            with pytest.raises(ShapeError, match="zero-size array"):  # as np.linalg.norm: max of nothing
                f(x)
            continue
        out = f(x)
        _, jv = md.jvp(f, (x,), (md.ones(shape),))
        (g,) = md.vjp(f, x)[1](md.ones(out.shape))
        assert jv.shape == out.shape and g.shape == shape, name
        assert np.all(np.isfinite(jv.numpy())) and np.all(np.isfinite(g.numpy())), name
        if x.size:
            check_grads(f, (x,), order=1)


def _rotated(d, seed=0):
    q = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(d), len(d))))[0]
    return (q * np.asarray(d, dtype=float)) @ q.T


def test_repeated_eigenvalues_warn_and_stay_finite_for_eigenvectors():
    a = t(_rotated([1.0, 1.0, 3.0]))
    with pytest.warns(RuntimeWarning, match=r"linalg\.eigh: two eigenvalues are .* apart \(tolerance"):
        g = md.grad(lambda x: md.sum(LA.eigh(x)[1] ** 4))(a)
    assert np.all(np.isfinite(g.numpy()))
    with pytest.warns(RuntimeWarning, match=r"linalg\.eigh"):
        _, tan = md.jvp(lambda x: LA.eigh(x)[1], (a,), (md.ones((3, 3)),))
    assert np.all(np.isfinite(tan.numpy()))


def test_functions_of_eigenvalues_only_are_exact_at_repeated_eigenvalues():
    """sum(w²) = ‖A‖²_F and sum(w) = tr A have derivatives everywhere: eigvalsh gives them, silently."""
    a = _rotated([2.0, 2.0, 2.0, -1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = md.grad(lambda x: md.sum(LA.eigvalsh(x) ** 2))(t(a))
        close(g, _lower_sym_grad(2 * a), rtol=1e-9, atol=1e-12)
        g = md.grad(lambda x: md.sum(LA.eigh(x)[0]))(t(a))  # eigh, eigenvector cotangent zero: no warning
        close(g, np.eye(4), atol=1e-12)
        _, tan = md.jvp(lambda x: md.sum(LA.eigvalsh(x)), (t(a),), (t(np.ones((4, 4))),))
        close(tan, 4.0)
        g = md.grad(lambda x: LA.norm(x, "nuc"))(t(np.eye(3)))  # singular values all 1
        close(g, np.eye(3), atol=1e-12)


def test_repeated_singular_values_warn_when_vectors_are_differentiated():
    with pytest.warns(RuntimeWarning, match=r"linalg\.svd: two squared singular values are"):
        g = md.grad(lambda x: md.sum(LA.svd(x, full_matrices=False)[0] ** 4))(t(np.eye(3)))
    assert np.all(np.isfinite(g.numpy()))
    rank1 = np.outer([1.0, 2.0, 0.5], [1.0, -1.0])  # 3×2 with a zero singular value
    with pytest.warns(RuntimeWarning, match=r"linalg\.svd: a singular value is"):
        g = md.grad(lambda x: md.sum(LA.svd(x, full_matrices=False)[0] ** 2 * 0.3 + 0.1))(t(rank1))
    assert np.all(np.isfinite(g.numpy()))


def test_norm_at_zero_has_derivative_zero_in_every_mode():
    z = md.zeros(3)
    for f in (LA.norm, lambda x: LA.norm(x, 3), lambda x: LA.norm(md.reshape(x, (3, 1)), "fro")):
        assert md.grad(f)(z).tolist() == [0.0, 0.0, 0.0]
        assert md.jvp(f, (z,), (md.ones(3),))[1].item() == 0.0
        for mode in md.transforms.HVP_MODES:
            assert md.hvp(f, (z,), (md.ones(3),), mode=mode)[0].tolist() == [0.0, 0.0, 0.0]


def test_singular_matrices_raise_clear_errors():
    s = md.tensor([[1.0, 2.0], [2.0, 4.0]])
    with pytest.raises(LinAlgError, match=r"linalg\.inv: cannot take the matrix of shape \(2, 2\)"):
        LA.inv(s)
    with pytest.raises(LinAlgError, match=r"linalg\.solve: cannot take the matrix of shape \(2, 2\)"):
        LA.solve(s, md.ones(2))
    with pytest.raises(
        LinAlgError, match=r"linalg\.solve_triangular: the triangular matrix of shape \(2, 2\)"
    ):
        LA.solve_triangular(md.tensor([[1.0, 0.0], [1.0, 0.0]]), md.ones(2), lower=True)
    with pytest.raises(
        LinAlgError,
        match=r"linalg\.slogdet: the derivative at a singular matrix \(float64\[2, 2\]\) needs its inverse",
    ):
        md.grad(lambda x: LA.slogdet(x)[1])(s)
    with pytest.raises(
        LinAlgError, match=r"linalg\.det: the derivative at a singular matrix \(float64\[2, 2\]\)"
    ):
        md.grad(LA.det)(s)
    with pytest.raises(LinAlgError, match=r"linalg\.cholesky: cannot take the matrix of shape \(2, 2\)"):
        LA.cholesky(md.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(
        LinAlgError, match=r"linalg\.qr: no derivative at a rank-deficient matrix of shape \(3, 2\)"
    ):
        md.grad(lambda x: md.sum(LA.qr(x)[0]))(md.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))


def test_full_svd_of_a_non_square_matrix_has_no_derivative(rng):
    a = t(rng.standard_normal((4, 2)))
    u, s, vh = LA.svd(a)  # values are fine
    assert u.shape == (4, 4) and vh.shape == (2, 2)
    u2 = md.vmap(lambda x: LA.svd(x)[0])(md.stack([a, a]))  # and vmap of values
    assert u2.shape == (2, 4, 4)
    with pytest.raises(LinAlgError, match=r"linalg\.svd: no derivative of full_matrices=True .*\(\(4, 2\)\)"):
        md.grad(lambda x: md.sum(LA.svd(x)[1]))(a)
    leaf = md.tensor(a.numpy(), requires_grad=True)
    with pytest.raises(LinAlgError, match="full_matrices=False"):
        LA.svd(leaf)
    with md.no_grad():  # nothing is recorded: the values are given
        assert LA.svd(leaf)[0].shape == (4, 4)
    md.grad(lambda x: md.sum(LA.svd(x, compute_uv=False)))(a)  # the values alone are differentiable


# ----------------------------------------------------------------------------- error paths
SQUARE_OPS = {
    "linalg.eigh": LA.eigh,
    "linalg.eigvalsh": LA.eigvalsh,
    "linalg.slogdet": LA.slogdet,
    "linalg.expm": LA.expm,
    "linalg.matrix_power": lambda a: LA.matrix_power(a, 2),
    "linalg.solve_triangular": lambda a: LA.solve_triangular(a, md.ones(3)),
    "linalg.cho_factor": LA.cho_factor,
}
MATRIX_OPS = {
    **SQUARE_OPS,
    "linalg.svd": LA.svd,
    "linalg.svdvals": LA.svdvals,
    "linalg.qr": LA.qr,
    "linalg.trace": LA.trace,
    "linalg.matrix_norm": LA.matrix_norm,
}


@pytest.mark.parametrize("op", sorted(SQUARE_OPS))
def test_non_square_input_is_refused(op):
    with pytest.raises(
        ShapeError, match=rf"{op}: expected a \(stack of\) square matrices, got shape \(3, 2\)"
    ):
        SQUARE_OPS[op](md.ones((3, 2)))


@pytest.mark.parametrize("op", sorted(MATRIX_OPS))
def test_wrong_ndim_and_integer_dtype_are_refused(op):
    with pytest.raises(
        ShapeError, match=rf"{op}: expected a \(stack of\) matrices with at least 2 dimensions"
    ):
        MATRIX_OPS[op](md.ones(3))
    with pytest.raises(DTypeError, match=rf"{op}: expected floating-point values, got int64"):
        MATRIX_OPS[op](md.tensor(np.eye(3, dtype=np.int64)))


def test_argument_errors_name_the_op_and_what_is_wrong():
    a = md.eye(3)
    with pytest.raises(
        ShapeError, match=r"linalg\.solve_triangular: a of shape \(3, 3\) does not fit b of shape \(2,\)"
    ):
        LA.solve_triangular(a, md.ones(2))
    with pytest.raises(
        ShapeError, match=r"linalg\.solve_triangular: the stacks of a \(2, 3, 3\) and b \(4, 3, 1\)"
    ):
        LA.solve_triangular(md.ones((2, 3, 3)), md.ones((4, 3, 1)))
    with pytest.raises(ValueError, match=r"linalg\.solve_triangular: trans must be"):
        LA.solve_triangular(a, md.ones(3), trans="X")
    with pytest.raises(
        DTypeError, match=r"linalg\.solve_triangular: expected floating-point values, got int64"
    ):
        LA.solve_triangular(a, md.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"linalg\.eigh: UPLO must be 'L' or 'U', got 'X'"):
        LA.eigh(a, UPLO="X")
    with pytest.raises(ValueError, match=r"linalg\.qr: mode must be 'reduced', 'r' or 'complete', got 'raw'"):
        LA.qr(a, mode="raw")
    with pytest.raises(LinAlgError, match=r"linalg\.qr: mode='complete' of a tall matrix \(\(4, 2\)\)"):
        LA.qr(md.ones((4, 2)), mode="complete")
    with pytest.raises(TypeError, match=r"linalg\.matrix_power: the exponent must be an integer, got 1\.5"):
        LA.matrix_power(a, 1.5)
    with pytest.raises(ValueError, match=r"linalg\.norm: invalid norm order 'fro' for vectors"):
        LA.norm(md.ones(3), "fro")
    with pytest.raises(ValueError, match=r"linalg\.norm: invalid norm order 3 for matrices"):
        LA.norm(a, 3)
    with pytest.raises(ShapeError, match=r"linalg\.norm: ord=2 needs a 1-D or 2-D input or an axis"):
        LA.norm(md.ones((2, 2, 2)), 2)
    with pytest.raises(ShapeError, match=r"linalg\.norm: axis must name 1 or 2 axes"):
        LA.norm(md.ones((2, 2, 2)), axis=(0, 1, 2))
    with pytest.raises(ShapeError, match=r"linalg\.norm: axis 3 is out of range for shape \(2, 2, 2\)"):
        LA.norm(md.ones((2, 2, 2)), axis=3)
    with pytest.raises(ShapeError, match=r"linalg\.norm: duplicate axes"):
        LA.norm(md.ones((2, 2)), axis=(0, -2))
    with pytest.raises(DTypeError, match=r"linalg\.norm: expected floating-point values, got int64"):
        LA.norm(md.tensor([3, 4]))


def test_linalg_names_are_public():
    for name in (
        "solve",
        "inv",
        "det",
        "cholesky",
        "eigh",
        "svd",
        "qr",
        "slogdet",
        "norm",
        "solve_triangular",
        "solve_banded",
    ):
        assert name in LA.__all__ and callable(getattr(LA, name))
    for name in ("eigvalsh", "svdvals", "cho_solve", "cho_factor", "matrix_power", "trace", "expm"):
        assert name in LA.__all__


# ----------------------------------------------------------------------------- the battery bites on these rules
def _st_vjp_trans_kept(g, ans, a, b, lower, trans, unit_diagonal):
    """solve_triangular's VJP for ``a`` solving with op(a) instead of its transpose."""
    bbar = _st(a, g, lower, trans, unit_diagonal)
    outer = md.matmul(ans, md.swapaxes(bbar, -1, -2)) if trans else md.matmul(bbar, md.swapaxes(ans, -1, -2))
    return -_triangle(outer, lower, unit_diagonal)


def _st_vjp_other_triangle(g, ans, a, b, lower, trans, unit_diagonal):
    """solve_triangular's VJP for ``a`` put on the triangle that is not read."""
    bbar = _st(a, g, lower, 1 - trans, unit_diagonal)
    outer = md.matmul(ans, md.swapaxes(bbar, -1, -2)) if trans else md.matmul(bbar, md.swapaxes(ans, -1, -2))
    return -_triangle(outer, not lower, unit_diagonal)


def _sb_vjp_band_kept(g, ans, ab, b, lower, upper):
    """solve_banded's VJP for ``ab`` solving with the band of A instead of that of Aᵀ."""
    return -_band_outer(_sb(ab, g, lower, upper), ans, lower, upper)


def _logabsdet_vjp_untransposed(g, ans, x):
    return md.expand_dims(g, (-2, -1)) * LA.inv(x)


P = REGISTRY
LINALG_MUTATIONS = [
    # (mutation, spec whose drawn inputs must catch it)
    (Mutation("eigh VJP x1.001", P["eigh"], "vjp", scaled(1.001)), "linalg.eigh"),
    (Mutation("eigh JVP sign", P["eigh"], "jvp", negated()), "linalg.eigh"),
    (Mutation("eigh VJP on raw arrays", P["eigh"], "vjp", detached()), "linalg.eigh"),
    (Mutation("eigvalsh JVP x1.001", P["eigvalsh"], "jvp", scaled(1.001)), "linalg.eigvalsh"),
    (Mutation("svd VJP x1.001", P["svd"], "vjp", scaled(1.001)), "linalg.svd"),
    (Mutation("svd JVP on raw arrays", P["svd"], "jvp", detached()), "linalg.svd"),
    (Mutation("svdvals VJP x1.001", P["svdvals"], "vjp", scaled(1.001)), "linalg.svdvals"),
    (Mutation("qr JVP x1.001", P["qr"], "jvp", scaled(1.001)), "linalg.qr"),
    (Mutation("qr VJP on raw arrays", P["qr"], "vjp", detached()), "linalg.qr"),
    (
        Mutation("slogdet VJP missing transpose", P["slogdet"], "vjp", replaced(_logabsdet_vjp_untransposed)),
        "linalg.slogdet",
    ),
    (Mutation("solve_banded VJP x1.001", P["solve_banded"], "vjp", scaled(1.001), 0), "linalg.solve_banded"),
    (Mutation("solve_banded JVP sign", P["solve_banded"], "jvp", negated(), 1), "linalg.solve_banded"),
    (
        Mutation("solve_banded VJP band kept", P["solve_banded"], "vjp", replaced(_sb_vjp_band_kept), 0),
        "linalg.solve_banded",
    ),
    (
        Mutation("solve_triangular VJP x1.001", P["solve_triangular"], "vjp", scaled(1.001), 1),
        "linalg.solve_triangular",
    ),
    (
        Mutation(
            "solve_triangular VJP trans kept", P["solve_triangular"], "vjp", replaced(_st_vjp_trans_kept), 0
        ),
        "linalg.solve_triangular",
    ),
    (
        Mutation(
            "solve_triangular VJP other triangle",
            P["solve_triangular"],
            "vjp",
            replaced(_st_vjp_other_triangle),
            0,
        ),
        "linalg.solve_triangular",
    ),
]
SPEC_BY_NAME = {s.name: s for s in SPECS}


@st.composite
def _spec_inputs(draw, spec):
    case = draw(spec.case)
    return case, case.draw_values(draw, contiguous=False), draw(st.integers(0, 2**16))


def _derivative_property(example):
    case, arrays, seed = example
    check_example(case.f, arrays, checks=("adjoint", "finite_differences", "hvp"), order=2, seed=seed)


@pytest.mark.parametrize("mutation, spec", LINALG_MUTATIONS, ids=[m.name for m, _ in LINALG_MUTATIONS])
def test_a_wrong_linalg_rule_is_caught_by_drawn_inputs(mutation, spec):
    """Each deliberate bug in a new rule fails the battery's derivative checks on the spec's drawn
    inputs (and the input that caught it passes with the real rule: check_mutation verifies it)."""
    result = check_mutation(mutation, _derivative_property, _spec_inputs(SPEC_BY_NAME[spec]), max_examples=20)
    assert result.caught, f"{mutation.name} survived {result.examples} drawn examples of {spec}"
