"""NumPy's protocols on tensors (NEP 13 ``__array_ufunc__``, NEP 18 ``__array_function__``).

Every entry of the dispatch tables (``minidiff.primitives.numpy_api.UFUNCS`` / ``FUNCTIONS``) has a case below; a
differentiable case is checked in every mode — reverse (``grad``), forward (``jvp``), tape style, the
three HVP modes, grad-of-grad and ``vmap`` — against central finite differences of the same NumPy code
run on plain ndarrays (float64; tolerances stated in ``check_all_modes``).  Then the error paths: each
thing minidiff cannot honour raises when a derivative is at stake, and falls back to NumPy when none is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import minidiff as md
from minidiff.errors import UnsupportedError
from minidiff.primitives import numpy_api

ROOT = Path(__file__).resolve().parent.parent
H = 1e-5  # central-difference step in float64: truncation ~H², rounding ~1e-16/H
RTOL, ATOL = 1e-6, 1e-7  # first order
RTOL2, ATOL2 = 1e-5, 1e-6  # second order (a finite difference of computed gradients)


def close(got, want, rtol=RTOL, atol=ATOL):
    got = got.numpy() if isinstance(got, md.Tensor) else np.asarray(got)
    np.testing.assert_allclose(got, np.asarray(want, dtype=float), rtol=rtol, atol=atol)


def check_all_modes(f, x: np.ndarray, vmap: bool = True) -> None:
    """``f`` is written with ``np.`` calls; its derivatives through minidiff match NumPy's own values.

    The scalar ``s(x) = sum(f(x) * w)`` is differentiated by grad, vjp, jvp, the tape, the three hvp modes,
    grad-of-grad and vmap-of-grad; the references are central differences of ``s`` (and of its
    gradient) with ``f`` run by NumPy on arrays.
    """
    rng = np.random.default_rng(0)
    want = np.asarray(f(x))
    got = f(md.tensor(x))
    assert isinstance(got, md.Tensor), f"{f} returned {type(got).__name__}, not a Tensor"
    close(got, want)
    w = rng.normal(size=want.shape)
    v = rng.normal(size=x.shape)
    s = lambda t: np.sum(f(t) * w)  # noqa: E731 - np.sum and * dispatch too
    xt, vt = md.tensor(x), md.tensor(v)
    fd = (s(x + H * v) - s(x - H * v)) / (2 * H)

    g = md.grad(s)(xt)
    close(np.vdot(g.numpy(), v), fd, rtol=1e-6, atol=1e-6)
    _, pullback = md.vjp(f, xt)
    close(pullback(md.tensor(w))[0], g)
    out, jv = md.jvp(s, (xt,), (vt,))
    close(out, s(x))
    close(jv, fd, rtol=1e-6, atol=1e-6)
    leaf = md.tensor(x, requires_grad=True)
    s(leaf).backward()
    close(leaf.grad, g)

    hv_fd = (md.grad(s)(md.tensor(x + H * v)).numpy() - md.grad(s)(md.tensor(x - H * v)).numpy()) / (2 * H)
    for mode in ("fwd-over-rev", "rev-over-fwd", "rev-over-rev"):
        close(md.hvp(s, (xt,), (vt,), mode=mode)[0], hv_fd, rtol=RTOL2, atol=ATOL2)
    close(md.grad(lambda t: np.sum(md.grad(s)(t) * vt))(xt), hv_fd, rtol=RTOL2, atol=ATOL2)

    if not vmap:
        return
    batch = np.stack([x, x + 1e-3 * rng.normal(size=x.shape)])
    per_example = md.vmap(md.grad(s))(md.tensor(batch))
    for i in range(2):
        close(per_example[i], md.grad(s)(md.tensor(batch[i])))


# Inputs are drawn from one fixed seed per case, so a test sees the same values whichever tests run.
def uniform(lo, hi, shape=(2, 3)):
    return lambda: np.random.default_rng(1).uniform(lo, hi, size=shape)


def normal(shape=(2, 3)):
    return lambda: np.random.default_rng(2).normal(size=shape)


def away_from_zero(shape=(2, 3)):
    def draw():
        rng = np.random.default_rng(3)
        return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.3, 2.0, size=shape)

    return draw


def spd(t):
    """A symmetric positive definite matrix made of ``t`` (array or tensor)."""
    return np.matmul(t, np.swapaxes(t, -1, -2)) + 3.0 * np.eye(t.shape[-1])


# ----------------------------------------------------------------------------- differentiable ufuncs
# name -> (function written with np., input generator)
UFUNC_CASES = {
    "add": (lambda x: np.add(x[0], x[1]), normal()),
    "subtract": (lambda x: np.subtract(x[0], x[1]), normal()),
    "multiply": (lambda x: np.multiply(x[0], x[1]), normal()),
    "divide": (lambda x: np.divide(x[0], x[1]), uniform(0.5, 2.0)),
    "power": (lambda x: np.power(x[0], x[1]), uniform(0.5, 2.0)),
    "float_power": (lambda x: np.float_power(x[0], x[1]), uniform(0.5, 2.0)),
    "negative": (np.negative, normal()),
    "positive": (lambda x: np.positive(x) * x, normal()),
    "absolute": (np.abs, away_from_zero()),
    "fabs": (np.fabs, away_from_zero()),
    "exp": (np.exp, normal()),
    "exp2": (np.exp2, normal()),
    "log": (np.log, uniform(0.5, 2.0)),
    "log2": (np.log2, uniform(0.5, 2.0)),
    "log10": (np.log10, uniform(0.5, 2.0)),
    "log1p": (np.log1p, uniform(0.0, 2.0)),
    "expm1": (np.expm1, normal()),
    "sqrt": (np.sqrt, uniform(0.5, 2.0)),
    "square": (np.square, normal()),
    "reciprocal": (np.reciprocal, uniform(0.5, 2.0)),
    "sin": (np.sin, normal()),
    "cos": (np.cos, normal()),
    "tan": (np.tan, uniform(-1.0, 1.0)),
    "arcsin": (np.arcsin, uniform(-0.9, 0.9)),
    "arccos": (np.arccos, uniform(-0.9, 0.9)),
    "arctan": (np.arctan, normal()),
    "arctan2": (lambda x: np.arctan2(x, x[::-1] + 3.0), normal()),
    "sinh": (np.sinh, normal()),
    "cosh": (np.cosh, normal()),
    "tanh": (np.tanh, normal()),
    "logaddexp": (lambda x: np.logaddexp(x[0], x[1]), normal()),
    "logaddexp2": (lambda x: np.logaddexp2(x[0], x[1]), normal()),
    "deg2rad": (lambda x: np.deg2rad(x) * x, normal()),
    "radians": (lambda x: np.radians(x) * x, normal()),
    "rad2deg": (lambda x: np.rad2deg(x) * x, normal()),
    "degrees": (lambda x: np.degrees(x) * x, normal()),
    "hypot": (lambda x: np.hypot(x[0], x[1]), away_from_zero()),
    "maximum": (lambda x: np.maximum(x[0], x[1]), normal()),
    "minimum": (lambda x: np.minimum(x[0], x[1]), normal()),
    "fmax": (lambda x: np.fmax(x[0], x[1]), normal()),
    "fmin": (lambda x: np.fmin(x[0], x[1]), normal()),
    "matmul": (lambda x: np.matmul(x[0], x[1]), normal((2, 3, 3))),
    "conjugate": (lambda x: np.conjugate(x) * x, normal()),
    "remainder": (lambda x: np.remainder(3.1, x) + np.mod(x, 1.7), uniform(1.2, 1.5)),
    "floor_divide": (lambda x: np.floor_divide(x, 0.7) * x, uniform(0.75, 1.35)),
    "divmod": (lambda x: np.divmod(x, 1.7)[1] + np.divmod(3.1, x)[1], uniform(1.2, 1.5)),
}


@pytest.mark.parametrize("name", sorted(UFUNC_CASES))
def test_ufunc_differentiates_in_every_mode(name):
    f, draw = UFUNC_CASES[name]
    check_all_modes(f, draw())


# comparisons, rounding and tests: booleans or piecewise constants (no derivative), checked by value
PREDICATE_CASES = {
    "less": lambda x: np.less(x, 0.1),
    "less_equal": lambda x: np.less_equal(x, 0.1),
    "greater": lambda x: np.greater(x, 0.1),
    "greater_equal": lambda x: np.greater_equal(x, 0.1),
    "equal": lambda x: np.equal(x, x[0]),
    "not_equal": lambda x: np.not_equal(x, x[0]),
    "logical_and": lambda x: np.logical_and(x > 0, x < 1),
    "logical_or": lambda x: np.logical_or(x > 1, x < 0),
    "logical_xor": lambda x: np.logical_xor(x > 0, x < 1),
    "logical_not": lambda x: np.logical_not(x > 0),
    "sign": np.sign,
    "floor": np.floor,
    "ceil": np.ceil,
    "rint": lambda x: np.rint(3 * x),
    "trunc": lambda x: np.trunc(3 * x),
    "isfinite": lambda x: np.isfinite(x / np.array([0.0, 1.0, 1.0])),
    "isnan": lambda x: np.isnan(np.log(x)),
    "isinf": lambda x: np.isinf(x / np.array([0.0, 1.0, 1.0])),
}


@pytest.mark.parametrize("name", sorted(PREDICATE_CASES))
def test_predicate_ufunc_gives_values_and_runs_on_tracers(name):
    f = PREDICATE_CASES[name]
    x = np.random.default_rng(165).normal(size=(2, 3)) * 2
    with np.errstate(all="ignore"):
        want = f(x)
        got = f(md.tensor(x))
        assert isinstance(got, md.Tensor)
        close(got.astype("float64"), want.astype(float), rtol=0, atol=0)

        def uses_it(t):  # the constant result gates a differentiable value
            return np.sum(np.where(f(t), t, 2.0 * t))

        g = md.grad(uses_it)(md.tensor(x))
    close(g, np.where(want, 1.0, 2.0))


def test_ufunc_methods_reduce_accumulate_outer():
    x = np.random.default_rng(180).normal(size=(3, 4))
    cases = {
        "add.reduce": (lambda t: np.add.reduce(t, axis=1), lambda a: a.sum(axis=1)),
        "multiply.reduce": (lambda t: np.multiply.reduce(t), lambda a: a.prod(axis=0)),
        "maximum.reduce": (lambda t: np.maximum.reduce(t, axis=None), lambda a: a.max()),
        "minimum.reduce": (
            lambda t: np.minimum.reduce(t, 1, keepdims=True),
            lambda a: a.min(1, keepdims=True),
        ),
        "add.accumulate": (lambda t: np.add.accumulate(t, axis=1), lambda a: np.cumsum(a, axis=1)),
        "multiply.outer": (lambda t: np.multiply.outer(t[0], t[1]), lambda a: np.outer(a[0], a[1])),
        "subtract.outer": (lambda t: np.subtract.outer(t[0], t[1, :2]), lambda a: a[0][:, None] - a[1, :2]),
    }
    for f, reference in cases.values():
        close(f(md.tensor(x)), reference(x))
        check_all_modes(f, x)
    t = md.tensor([[True, False], [True, True]])
    assert np.logical_and.reduce(t, axis=1).tolist() == [False, True]
    assert np.logical_or.reduce(t, axis=1).tolist() == [True, True]


def test_ufunc_dtype_casts_the_tensor_inputs():
    x = np.random.default_rng(202).normal(size=3)
    y = np.multiply(md.tensor(x, dtype="float32"), 2.0, dtype=np.float64)
    assert y.dtype == np.float64
    g = md.grad(lambda t: np.sum(np.exp(t, dtype=np.float64)))(md.tensor(x))
    close(g, np.exp(x))


# ----------------------------------------------------------------------------- array functions
MASK = np.array([[True, False, True], [False, True, False]])
FUNCTION_CASES = {
    "sum": (lambda x: np.sum(x, axis=1, keepdims=True), normal()),
    "mean": (lambda x: np.mean(x, axis=0), normal()),
    "var": (lambda x: np.var(x, axis=1, ddof=1), normal()),
    "std": (lambda x: np.std(x, axis=(0, 1)), normal()),
    "max": (lambda x: np.max(x, axis=1), normal()),
    "min": (lambda x: np.min(x, axis=0, keepdims=True), normal()),
    "amax": (np.amax, normal()),
    "amin": (lambda x: np.amin(x, 1), normal()),
    "prod": (lambda x: np.prod(x, axis=0), normal()),
    "cumsum": (lambda x: np.cumsum(x, axis=1), normal()),
    "average": (lambda x: np.average(x, axis=1, weights=np.array([1.0, 2.0, 3.0])) + np.average(x), normal()),
    "where": (lambda x: np.where(MASK, x, x * x), normal()),
    "clip": (lambda x: np.clip(x, -0.5, 0.5) + np.clip(x, a_min=0.2, a_max=None), uniform(-1.0, 1.0)),
    "dot": (lambda x: np.dot(x, x.T), normal()),
    "vdot": (lambda x: np.vdot(x, x), normal()),
    "inner": (lambda x: np.inner(x, x), normal()),
    "outer": (lambda x: np.outer(x[0], x[1]), normal()),
    "tensordot": (lambda x: np.tensordot(x, x, axes=([0, 2], [0, 2])), normal((2, 3, 4))),
    "einsum": (lambda x: np.einsum("ij,kj->ik", x, x, optimize=True), normal()),
    "reshape": (lambda x: np.reshape(x, (3, 2)) * np.reshape(x, -1)[:2], normal()),
    "ravel": (lambda x: np.ravel(x) * np.arange(6.0), normal()),
    "transpose": (lambda x: np.transpose(x, (2, 0, 1)) + np.transpose(x)[0, 0, 0], normal((2, 3, 4))),
    "swapaxes": (lambda x: np.swapaxes(x, 0, 2), normal((2, 3, 4))),
    "moveaxis": (lambda x: np.moveaxis(x, 0, -1), normal((2, 3, 4))),
    "expand_dims": (lambda x: np.expand_dims(x, axis=(0, 2)), normal()),
    "squeeze": (lambda x: np.squeeze(x[:, :1], axis=1), normal()),
    "broadcast_to": (lambda x: np.broadcast_to(x[:1], (4, 3)), normal()),
    "concatenate": (lambda x: np.concatenate([x, 2.0 * x, np.ones((2, 1))], axis=1), normal()),
    "stack": (lambda x: np.stack([x, x * x], axis=1), normal()),
    "hstack": (lambda x: np.hstack([x, x[:, :1]]), normal()),
    "vstack": (lambda x: np.vstack([x, x[0]]), normal()),
    "split": (lambda x: np.split(x, 3, axis=1)[1] * np.split(x, [1], axis=0)[0], normal()),
    "take": (lambda x: np.take(x, [2, 0, 2], axis=1), normal()),
    "repeat": (lambda x: np.repeat(x, 2, axis=0), normal()),
    "pad": (lambda x: np.pad(x, 1, constant_values=0.5), normal()),
    "flip": (lambda x: np.flip(x, axis=1), normal()),
    "trace": (lambda x: np.trace(x) + np.trace(np.ones((3, 3, 2)) * x[..., None]), normal((3, 3))),
    "tril": (lambda x: np.tril(x, k=-1), normal((3, 3))),
    "triu": (lambda x: np.triu(x), normal((3, 3))),
    "copy": (lambda x: np.copy(x) * x, normal()),
    "zeros_like": (lambda x: x + np.zeros_like(x), normal()),
    "ones_like": (lambda x: x * np.ones_like(x, dtype=np.float64), normal()),
    "empty_like": (lambda x: x + 0.0 * np.empty_like(x), normal()),
    "full_like": (lambda x: np.full_like(x, x[0, 1]) * x + np.full_like(x, 2.0), normal()),
    "atleast_1d": (lambda x: np.atleast_1d(x[0, 0]) * np.atleast_1d(x, x)[1], normal()),
    "atleast_2d": (lambda x: np.atleast_2d(x[0]) * np.atleast_2d(x), normal()),
    "atleast_3d": (lambda x: np.atleast_3d(x) * np.atleast_3d(x[0]), normal()),
    "broadcast_arrays": (lambda x: np.multiply(*np.broadcast_arrays(x[:1], x[:, :1])), normal()),
    "diagonal": (lambda x: np.diagonal(x)[:2] * np.diagonal(x[:2], axis1=1, axis2=0), normal((3, 3))),
    "diag": (lambda x: np.diag(x[0]) + np.diag(x), normal((3, 3))),
    "matrix_transpose": (
        lambda x: np.matrix_transpose(x) if hasattr(np, "matrix_transpose") else x.T,
        normal(),
    ),
    "linalg.matrix_transpose": (lambda x: np.linalg.matrix_transpose(x), normal((2, 2, 3))),
    "linalg.multi_dot": (lambda x: np.linalg.multi_dot([x, x.T, x]), normal()),
    "sort": (
        lambda x: np.sort(x) + np.sort(x, axis=0)[::-1] + np.reshape(np.sort(x, axis=None), (2, 3)),
        normal(),
    ),
    "median": (lambda x: np.median(x, axis=1) + np.median(x) + np.median(x[:, :2], axis=1), normal()),
    "take_along_axis": (lambda x: np.take_along_axis(x, np.array([[2, 0], [1, 1]]), axis=1), normal()),
    "linalg.solve": (lambda x: np.linalg.solve(x + 3.0 * np.eye(3), x[:, 0]), normal((3, 3))),
    "linalg.inv": (lambda x: np.linalg.inv(x + 3.0 * np.eye(3)), normal((3, 3))),
    "linalg.det": (lambda x: np.linalg.det(x + 3.0 * np.eye(3)), normal((3, 3))),
    "linalg.slogdet": (lambda x: np.linalg.slogdet(x + 3.0 * np.eye(3))[1], normal((3, 3))),
    "linalg.cholesky": (lambda x: np.linalg.cholesky(spd(x)), normal((3, 3))),
    "linalg.eigh": (lambda x: np.linalg.eigh(x + x.T)[0], normal((3, 3))),
    "linalg.eigvalsh": (lambda x: np.linalg.eigvalsh(x + x.T), normal((3, 3))),
    "linalg.svd": (
        lambda x: np.linalg.svd(x, full_matrices=False)[1] + np.linalg.svd(x, compute_uv=False),
        normal((3, 2)),
    ),
    "linalg.svdvals": (lambda x: np.linalg.svdvals(x), normal((2, 3))),
    "linalg.qr": (lambda x: np.linalg.qr(x)[1], normal((3, 2))),
    "linalg.norm": (lambda x: np.linalg.norm(x) + np.linalg.norm(x, axis=1), normal()),
    "linalg.vector_norm": (lambda x: np.linalg.vector_norm(x, ord=3), normal()),
    "linalg.matrix_norm": (lambda x: np.linalg.matrix_norm(x), normal()),
    "linalg.matrix_power": (lambda x: np.linalg.matrix_power(x, 3), normal((3, 3))),
    "linalg.trace": (lambda x: np.linalg.trace(x), normal((2, 3, 3))),
}


NO_VMAP = {"sort", "median"}  # sorting has no batching rule: inside vmap it raises (tested below)


def test_sorting_inside_vmap_raises_clearly():
    for f in (np.sort, np.median):
        with pytest.raises(UnsupportedError, match=r"sorting inside vmap is not supported.*Batched"):
            md.vmap(f)(md.ones((2, 3)))


def _needs(name):
    """Skip (with the reason) a case whose NumPy or minidiff function this installation lacks."""
    owner = np.linalg if name.startswith("linalg.") else np
    if not hasattr(owner, name.rsplit(".", 1)[-1]):
        pytest.skip(f"NumPy {np.__version__} has no np.{name}")
    rule = numpy_api.FUNCTIONS[name]
    if rule.call is None and numpy_api.resolve(rule.target) is None:
        pytest.skip(f"md.{rule.target} is not in minidiff yet")


@pytest.mark.parametrize("name", sorted(FUNCTION_CASES))
def test_array_function_differentiates_in_every_mode(name):
    _needs(name)
    f, draw = FUNCTION_CASES[name]
    check_all_modes(f, draw(), vmap=name not in NO_VMAP)


def test_value_functions_on_tracers():
    """Functions of shape, comparisons and argmax: no derivative to carry, and no error on a tracer."""
    x = np.random.default_rng(308).normal(size=(2, 3))

    def f(t):
        assert np.shape(t) == (2, 3) and np.ndim(t) == 2 and np.size(t) == 6 and np.size(t, 1) == 3
        assert np.allclose(t, x) and bool(np.all(np.isclose(t, x))) and np.array_equal(t, x)
        assert not np.array_equal(t, x[:1]) and not np.array_equal(t, x + 1.0)
        assert (
            np.result_type(t, np.float32) == np.float64 and np.result_type(t.astype("float32")) == np.float32
        )
        assert np.isrealobj(t) and not np.iscomplexobj(t)
        assert np.argmax(t, axis=1).tolist() == np.argmax(x, axis=1).tolist()
        assert np.argmin(t).tolist() == np.argmin(x).tolist()
        assert bool(np.any(t > 0)) == bool(np.any(x > 0)) and bool(np.all(t == t))
        return np.sum(t * t)

    close(md.grad(f)(md.tensor(x)), 2 * x)
    close(md.jvp(f, (md.tensor(x),), (md.tensor(x),))[1], 2 * np.sum(x * x))
    assert md.vmap(lambda t: np.size(t) + 0.0 * np.sum(t))(md.ones((4, 3))).tolist() == [3.0] * 4


VALUE_CASES = {  # functions whose result carries no derivative: NumPy on the values, on tracers too
    "argsort": lambda t: np.argsort(t),
    "nonzero": lambda t: np.nonzero(t > 1.0)[0],
    "argwhere": lambda t: np.argwhere(t > 1.0),
    "flatnonzero": lambda t: np.flatnonzero(t > 1.0),
    "count_nonzero": lambda t: np.count_nonzero(t > 1.0),
    "searchsorted": lambda t: np.searchsorted(np.array([0.5, 1.0, 2.0]), t),
    "digitize": lambda t: np.digitize(t, np.array([0.0, 1.0, 2.0])),
    "round": lambda t: np.round(t, 1),
    "around": lambda t: np.around(t * 3),
    "where": lambda t: np.where(t > 1.0)[0],
    "linalg.matrix_rank": lambda t: np.linalg.matrix_rank(np.outer(t, t)),
}


@pytest.mark.parametrize("name", sorted(VALUE_CASES))
def test_value_only_functions_compute_on_the_values_of_tracers(name):
    f = VALUE_CASES[name]
    x = np.array([1.3, 0.4, 2.2, 0.9])
    want = f(x)
    seen = []

    def loss(t):
        got = f(t)
        seen.append(got)
        return np.sum(t * t)  # the derivative flows around the value-only call, and is kept

    for run in (lambda: md.grad(loss)(md.tensor(x)), lambda: md.jvp(loss, (md.tensor(x),), (md.tensor(x),))):
        run()
    loss(md.tensor(x, requires_grad=True))
    for got in seen:
        close(
            np.asarray(got.numpy() if isinstance(got, md.Tensor) else got, dtype=float),
            np.asarray(want, dtype=float),
        )
    with pytest.raises(UnsupportedError, match=r"inside vmap has no single value"):
        md.vmap(lambda t: md.sum(t) + 0.0 * md.sum(md.asarray(f(t))))(md.tensor(np.stack([x, x])))


def test_every_table_entry_has_a_test_case():
    """The tables cannot grow without a case above (a row in the docs with nothing behind it)."""
    covered = set(UFUNC_CASES) | set(PREDICATE_CASES) | set(FUNCTION_CASES) | set(VALUE_CASES)
    covered |= {"shape", "ndim", "size", "allclose", "isclose", "argmax", "argmin", "any", "all"}
    covered |= {"array_equal", "result_type", "isrealobj", "iscomplexobj"}
    assert set(numpy_api.UFUNCS) <= covered, sorted(set(numpy_api.UFUNCS) - covered)
    assert set(numpy_api.FUNCTIONS) <= covered, sorted(set(numpy_api.FUNCTIONS) - covered)


def test_every_table_key_is_a_numpy_name_of_its_kind():
    for name in numpy_api.UFUNCS:
        assert isinstance(getattr(np, name), np.ufunc), name
    for name in numpy_api.FUNCTIONS:
        owner = np.linalg if name.startswith("linalg.") else np
        func = getattr(owner, name.rsplit(".", 1)[-1], None)
        if func is not None:  # np.matrix_transpose etc. are NumPy 2 only
            assert numpy_api.numpy_name(func) == name and not isinstance(func, np.ufunc), name


# ----------------------------------------------------------------------------- operators and tapes
def test_ndarray_and_tensor_operators_both_ways_give_differentiable_tensors():
    a = np.random.default_rng(349).normal(size=3)
    x = np.random.default_rng(350).normal(size=3)
    t = md.tensor(x)
    for result in (a + t, a - t, a * t, a / t, np.abs(a) ** t, a @ t, t + a, t - a, t * a, t / a, t @ a):
        assert isinstance(result, md.Tensor)
    f = lambda t: np.sum(a * t + t * a - a / (t * t + 1.0) + (a @ t) * (t @ a))  # noqa: E731
    check_all_modes(f, x)
    assert isinstance(np.float64(2.0) * md.tensor(x), md.Tensor)


def test_requires_grad_leaf_keeps_its_tape_through_numpy():
    x = md.tensor([0.5, 1.0], requires_grad=True)
    y = np.exp(x)
    assert y.requires_grad
    np.sum(y * np.sin(x)).backward()
    v = np.array([0.5, 1.0])
    close(x.grad, np.exp(v) * (np.sin(v) + np.cos(v)))


def test_the_issue_snippets_give_the_right_derivative():
    x = md.tensor([1.0, 2.0])
    close(md.grad(lambda x: md.sum(np.sin(x)))(x), np.cos([1.0, 2.0]))
    close(md.jvp(lambda x: np.dot(x, x), (x,), (x,))[1], 10.0)
    close(md.grad(lambda x: np.sum(x * x))(x), [2.0, 4.0])


def test_nested_transforms_keep_levels_apart():
    """d/dx [x · d/dy (x + y)] = 1 with every operation spelled in NumPy (a naive engine gives 2)."""
    inner = lambda x: md.grad(lambda y: np.add(x, y))(md.tensor(1.0))  # noqa: E731
    close(md.grad(lambda x: np.multiply(x, inner(x)))(md.tensor(1.0)), 1.0)
    close(md.jvp(lambda x: np.multiply(x, inner(x)), (md.tensor(1.0),), (md.tensor(1.0),))[1], 1.0)


# ----------------------------------------------------------------------------- what raises
def tracers_of_every_kind(f):
    """Run ``f`` on a value of each tracer kind: tape (grad), dual (jvp), requires_grad leaf, vmap, nested."""
    x = md.tensor([0.5, 1.5])
    yield "grad", lambda: md.grad(lambda t: md.sum(f(t)))(x)
    yield "jvp", lambda: md.jvp(f, (x,), (x,))
    yield "requires_grad", lambda: f(md.tensor([0.5, 1.5], requires_grad=True))
    yield "vmap", lambda: md.vmap(f)(md.ones((2, 2)))
    yield "nested", lambda: md.grad(lambda t: md.sum(md.grad(lambda u: md.sum(f(u)))(t)))(x)


@pytest.mark.parametrize(
    "f, match",
    [
        (lambda t: np.arcsinh(t), r"np\.arcsinh: minidiff has no equivalent.*carries derivatives"),
        (lambda t: np.percentile(t, 50.0) * t, r"np\.percentile: minidiff has no equivalent.*np\.median"),
        (lambda t: np.cumprod(t), r"np\.cumprod: minidiff has no equivalent.*md\.exp\(md\.cumsum"),
        (lambda t: np.cbrt(t), r"np\.cbrt: minidiff has no equivalent.*\.detach\(\)"),
        (
            lambda t: np.sum(t, where=np.array([True, False])),
            r"np\.sum: keyword where= .*Use md\.sum \(it accepts axis",
        ),
        (lambda t: np.max(t, initial=0.0), r"np\.max: keyword initial= is not supported"),
        (lambda t: np.exp(t, where=np.array([True, False])), r"np\.exp: keyword where= is not supported"),
        (lambda t: np.exp(t, out=np.empty(2)), r"np\.exp: keyword out= is not supported"),
        (lambda t: np.sum(t, out=np.empty(())), r"np\.sum: keyword out= is not supported"),
        (lambda t: np.less(t, 1.0, dtype=np.float64), r"np\.less: dtype=float64"),
        (lambda t: np.reshape(t, (2,), order="F"), r"np\.reshape: order='F'"),
        (lambda t: np.einsum(t, [0], [0]), r"np\.einsum: only the subscripts-string form"),
        (lambda t: np.where(t, t), r"np\.where needs both x and y, or neither"),
        (
            lambda t: np.add.reduceat(t, [0]),
            r"np\.add\.reduceat: minidiff has no reduceat of add.*ufunc\.reduce",
        ),
        (lambda t: np.subtract.reduce(t), r"np\.subtract\.reduce: minidiff has no reduce of subtract"),
        (lambda t: np.multiply.accumulate(t), r"np\.multiply\.accumulate"),
    ],
)
def test_unsupported_on_a_tracer_raises_naming_the_numpy_function(f, match):
    for _kind, run in tracers_of_every_kind(f):
        with pytest.raises(UnsupportedError, match=match):
            run()


def test_unsupported_on_plain_tensors_falls_back_to_numpy():
    x = np.array([0.5, 1.5, 1.0])
    t = md.tensor(x)
    got = np.arcsinh(t)
    assert isinstance(got, md.Tensor)
    close(got, np.arcsinh(x))
    assert np.percentile(t, 50.0) == 1.0 and isinstance(
        np.percentile(t, 50.0), np.floating
    )  # as NumPy returns
    assert isinstance(np.cumprod(t), md.Tensor) and np.cumprod(t).tolist() == [0.5, 0.75, 0.75]
    assert np.sum(t, where=x > 0.7).item() == 2.5
    assert np.add.reduceat(t, [0, 2]).tolist() == [2.0, 1.0]
    assert np.add.accumulate(t).tolist() == [0.5, 2.0, 3.0]
    q, r = np.linalg.eig(md.tensor([[2.0, 0.0], [0.0, 3.0]]))  # no md.linalg.eig: NumPy's result wrapped
    assert isinstance(q, md.Tensor) and sorted(q.tolist()) == [2.0, 3.0]


def test_out_into_an_ndarray_works_on_plain_tensors_and_raises_on_tracers():
    a = np.zeros(2)
    a += md.tensor([1.0, 2.0])  # NumPy writes into its own array; a stays an ndarray
    assert type(a) is np.ndarray and a.tolist() == [1.0, 2.0]
    buf = np.empty(2)
    assert np.multiply(md.tensor([1.0, 2.0]), 3.0, out=buf) is buf and buf.tolist() == [3.0, 6.0]

    def accumulate(t):
        b = np.zeros(2)
        b += t
        return md.sum(t)

    with pytest.raises(UnsupportedError, match=r"np\.add: keyword out= is not supported.*Taped"):
        md.grad(accumulate)(md.tensor([1.0, 2.0]))


def test_out_naming_a_tensor_always_raises():
    t = md.tensor([1.0, 2.0])
    with pytest.raises(UnsupportedError, match=r"np\.add: out= names a minidiff tensor"):
        np.add(t, 1.0, out=t)
    with pytest.raises(UnsupportedError, match=r"np\.add: out= names a minidiff tensor"):
        np.add(np.ones(2), 1.0, out=(t,))
    with pytest.raises(UnsupportedError, match=r"np\.add\.at: writes in place into a minidiff tensor"):
        np.add.at(t, [0], 1.0)
    with pytest.raises(UnsupportedError, match=r"np\.sum: out= names a minidiff tensor"):
        np.sum(t, out=md.tensor(0.0))


def test_other_array_types_are_deferred_to():
    """NEP 13/18: a foreign type with its own protocol gets the call (minidiff returns NotImplemented)."""

    class Foreign:
        def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
            return "foreign ufunc"

        def __array_function__(self, func, types, args, kwargs):
            return "foreign function"

    t = md.tensor([1.0])
    assert np.add(t, Foreign()) == "foreign ufunc"
    assert np.concatenate([t, Foreign()]) == "foreign function"


def test_unsupported_error_is_a_type_error_and_a_minidiff_error():
    assert issubclass(UnsupportedError, TypeError) and issubclass(UnsupportedError, md.MinidiffError)


# ----------------------------------------------------------------------------- the docs table
def test_docs_table_is_the_generated_one():
    text = (ROOT / "docs" / "numpy.md").read_text(encoding="utf-8")
    assert numpy_api.START in text and numpy_api.END in text, "docs/numpy.md lost its table markers"
    table = text.split(numpy_api.START, 1)[1].split(numpy_api.END, 1)[0].strip()
    assert table == numpy_api.support_table().strip(), (
        "docs/numpy.md is stale: regenerate it with `python -m minidiff.primitives.numpy_api --write docs/numpy.md`"
    )


def test_docs_table_lists_every_entry_and_says_what_is_missing(tmp_path):
    table = numpy_api.support_table()
    for name in list(numpy_api.UFUNCS) + list(numpy_api.FUNCTIONS):
        assert f"| `np.{name}` |" in table, name
    doc = tmp_path / "numpy.md"
    doc.write_text(f"intro\n{numpy_api.START}\nold\n{numpy_api.END}\nafter\n", encoding="utf-8")
    numpy_api.write_table(str(doc))
    assert doc.read_text(encoding="utf-8") == f"intro\n{numpy_api.START}\n{table}\n{numpy_api.END}\nafter\n"


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_trace_offset_and_axes_match_numpy(offset):
    """np.trace's offset and axis pair reach md.trace; the gradient is the offset diagonal's mask."""
    a = np.arange(24.0).reshape(2, 3, 4)
    got = np.trace(md.tensor(a), offset=offset, axis1=1, axis2=2)
    np.testing.assert_allclose(got.numpy(), np.trace(a, offset=offset, axis1=1, axis2=2), rtol=0, atol=0)
    g = md.grad(lambda t: np.sum(np.trace(t, offset=offset, axis1=1, axis2=2)))(md.tensor(a))
    np.testing.assert_array_equal(g.numpy(), np.broadcast_to(np.eye(3, 4, k=offset), a.shape))
