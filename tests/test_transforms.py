"""The functional transforms: pytrees, argnums, has_aux, every nesting order, closed forms.

Derivatives are checked in float64 against closed forms written out by hand (never against what the
code under test produced a moment ago), with the tolerance stated next to each check.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import minidiff as md
from minidiff.tensor import Tracer
from minidiff.transforms import hessian_product

RTOL = 1e-10  # float64 derivative checks against closed forms
ATOL = 1e-10


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def t64(a):
    return md.tensor(np.asarray(a, dtype=np.float64))


# ----------------------------------------------------------------------------- a grid of nestings
# Each transform is turned into an operator taking an elementwise function E: R^n -> R^n to another
# elementwise function whose value is a known derivative of E's scalar function h.  Composing two or
# three operators must give h's derivative of the summed order, whatever the nesting.
def h(t):
    return md.sin(t) + 0.3 * t**5 + md.exp(0.5 * t)


def h_derivative(k: int, t: np.ndarray) -> np.ndarray:
    """The k-th derivative of h, written out by hand."""
    poly = 0.3 * math.factorial(5) / math.factorial(5 - k) * t ** (5 - k) if k <= 5 else 0.0 * t
    return np.sin(t + k * np.pi / 2) + poly + 0.5**k * np.exp(0.5 * t)


def _summed(E):
    return lambda z: md.sum(E(z))


def _hvp_op(mode):
    return lambda E: lambda x: md.hvp(_summed(E), (x,), (md.ones_like(x),), mode=mode)[0]


def _vmap_op(E):
    def mapped(x):
        n = x.shape[0]
        rows = 2 if n % 2 == 0 else n  # map over rows of a (2, n/2) view (or over single elements)
        return md.reshape(md.vmap(E)(md.reshape(x, (rows, n // rows))), (n,))

    return mapped


OPS = {  # name: (order, operator)
    "jvp": (1, lambda E: lambda x: md.jvp(E, (x,), (md.ones_like(x),))[1]),
    "vjp": (1, lambda E: lambda x: md.vjp(E, x)[1](md.ones_like(x))[0]),
    "grad": (1, lambda E: md.grad(_summed(E))),
    "jacfwd": (1, lambda E: lambda x: md.sum(md.jacfwd(E)(x), axis=-1)),  # diagonal Jacobian
    "jacrev": (1, lambda E: lambda x: md.sum(md.jacrev(E)(x), axis=-1)),
    "hessian": (2, lambda E: lambda x: md.sum(md.hessian(_summed(E))(x), axis=-1)),
    "hvp-fwd-over-rev": (2, _hvp_op("fwd-over-rev")),
    "hvp-rev-over-fwd": (2, _hvp_op("rev-over-fwd")),
    "hvp-rev-over-rev": (2, _hvp_op("rev-over-rev")),
    "vmap": (0, _vmap_op),
}
X_GRID = np.array([0.3, -0.7, 1.1, 0.5])


def _compose(names):
    fn, order = h, 0
    for name in reversed(names):  # the last name is the innermost transform
        k, op = OPS[name]
        fn, order = op(fn), order + k
    return fn, order


@pytest.mark.parametrize("inner", list(OPS))
@pytest.mark.parametrize("outer", list(OPS))
def test_every_pair_of_transforms_nests(outer, inner):
    fn, order = _compose((outer, inner))
    out = fn(t64(X_GRID))
    assert type(out) is md.Tensor  # nothing traced leaks out of the transforms
    assert out.shape == X_GRID.shape
    close(out, h_derivative(order, X_GRID), rtol=1e-9, atol=1e-9)


TRIPLES = [
    ("grad", "grad", "grad"),
    ("jvp", "jvp", "jvp"),
    ("vjp", "vjp", "vjp"),
    ("jvp", "grad", "vjp"),
    ("grad", "jvp", "jacrev"),
    ("jacfwd", "jacrev", "jvp"),
    ("jacrev", "jacfwd", "grad"),
    ("vmap", "hessian", "jvp"),
    ("hvp-rev-over-fwd", "vmap", "grad"),
    ("jacrev", "vmap", "hvp-fwd-over-rev"),
    ("vjp", "jacfwd", "vmap"),
    ("hvp-rev-over-rev", "jvp", "jacrev"),
    ("vmap", "vmap", "grad"),
    ("hessian", "vmap", "jvp"),
]


@pytest.mark.parametrize("names", TRIPLES, ids=["/".join(t) for t in TRIPLES])
def test_triples_of_transforms_nest(names):
    fn, order = _compose(names)
    close(fn(t64(X_GRID)), h_derivative(order, X_GRID), rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- perturbation confusion
def _d_scalar(kind):
    """d/dx of a scalar function of a scalar, by each transform."""
    one = md.tensor(1.0)
    return {
        "jvp": lambda f: lambda x: md.jvp(f, (x,), (one,))[1],
        "vjp": lambda f: lambda x: md.vjp(f, x)[1](one)[0],
        "grad": lambda f: md.grad(f),
        "jacfwd": lambda f: md.jacfwd(f),
        "jacrev": lambda f: md.jacrev(f),
    }[kind]


SCALAR_DS = ["jvp", "vjp", "grad", "jacfwd", "jacrev"]


@pytest.mark.parametrize("inner", SCALAR_DS)
@pytest.mark.parametrize("outer", SCALAR_DS)
def test_perturbation_confusion(outer, inner):
    """d/dx [x · (d/dy (x + y))] = 1; mixing the two perturbations would give 2."""
    Do, Di = _d_scalar(outer), _d_scalar(inner)
    f = lambda x: x * Di(lambda y: x + y)(md.tensor(0.7))
    close(Do(f)(md.tensor(2.0)), 1.0, atol=0)
    # and one where the inner derivative depends on x: d/dx [x · d/dy (x·y)] = d/dx x² = 2x
    g = lambda x: x * Di(lambda y: x * y)(md.tensor(0.7))
    close(Do(g)(md.tensor(2.0)), 4.0, atol=0)


def test_perturbation_confusion_with_the_explicit_dual_api():
    with md.dual_level():
        x = md.make_dual(md.tensor(2.0), md.tensor(1.0))
        with md.dual_level():
            y = md.make_dual(md.tensor(0.7), md.tensor(1.0))
            _, inner = md.unpack_dual(x + y)
        _, d = md.unpack_dual(x * inner)
    close(d, 1.0, atol=0)


# ----------------------------------------------------------------------------- pytrees, argnums, has_aux
def _least_squares(params, x, y):
    r = params["w"] @ x + params["b"] - y
    return 0.5 * md.sum(r * r)


def test_grad_of_a_dict_of_parameters(rng):
    w, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    x, y = rng.normal(size=4), rng.normal(size=3)
    g = md.grad(_least_squares)({"w": t64(w), "b": t64(b)}, t64(x), t64(y))
    r = w @ x + b - y
    assert isinstance(g, dict) and sorted(g) == ["b", "w"]
    close(g["w"], np.outer(r, x))
    close(g["b"], r)


def test_grad_of_nested_lists_and_tuples(rng):
    a, b, c = rng.normal(size=2), rng.normal(size=(2, 2)), rng.normal(size=())
    f = lambda tree: md.sum(tree[0][0] ** 2) + md.sum(md.sin(tree[0][1])) + tree[1] ** 3
    g = md.grad(f)(([t64(a), t64(b)], t64(c)))
    assert isinstance(g, tuple) and isinstance(g[0], list) and len(g[0]) == 2
    close(g[0][0], 2 * a)
    close(g[0][1], np.cos(b))
    close(g[1], 3 * c**2)


def test_argnums_int_tuple_and_negative(rng):
    x, y, z = rng.normal(size=3), rng.normal(size=3), rng.normal(size=3)
    f = lambda x, y, z: md.sum(x * y * y + md.exp(z) * x)
    X, Y, Z = t64(x), t64(y), t64(z)
    close(md.grad(f)(X, Y, Z), y * y + np.exp(z))
    close(md.grad(f, argnums=1)(X, Y, Z), 2 * x * y)
    close(md.grad(f, argnums=-1)(X, Y, Z), np.exp(z) * x)
    gx, gz = md.grad(f, argnums=(0, 2))(X, Y, Z)
    close(gx, y * y + np.exp(z))
    close(gz, np.exp(z) * x)
    (gy,) = md.grad(f, argnums=(1,))(X, Y, Z)  # a tuple of one stays a tuple
    close(gy, 2 * x * y)
    with pytest.raises(ValueError, match="argnums"):
        md.grad(f, argnums=3)(X, Y, Z)


def test_value_and_grad_with_aux(rng):
    x = rng.normal(size=4)

    def f(x, scale):
        loss = md.sum(md.tanh(x)) * scale
        return loss, {"loss": loss, "squares": x * x}

    (value, aux), g = md.value_and_grad(f, has_aux=True)(t64(x), 2.0)
    close(value, 2 * np.tanh(x).sum())
    close(g, 2 * (1 - np.tanh(x) ** 2))
    close(aux["loss"], 2 * np.tanh(x).sum())
    close(aux["squares"], x * x)
    assert not isinstance(aux["squares"], Tracer)  # auxiliary outputs leave as plain values
    g2, aux2 = md.grad(f, has_aux=True)(t64(x), 2.0)
    close(g2, 2 * (1 - np.tanh(x) ** 2))
    assert not isinstance(aux2["loss"], Tracer)


def test_jvp_on_pytrees_with_aux(rng):
    a, b0, b1 = rng.normal(size=3), rng.normal(size=3), rng.normal(size=(2, 3))
    ta, tb0, tb1 = rng.normal(size=3), rng.normal(size=3), rng.normal(size=(2, 3))

    def f(p):
        out = {"u": p["a"] * p["b"][0], "v": md.sum(p["b"][1] ** 2, axis=0)}
        return out, md.sum(p["a"])

    primal = {"a": t64(a), "b": [t64(b0), t64(b1)]}
    tangent = {"a": t64(ta), "b": [t64(tb0), t64(tb1)]}
    out, tout, aux = md.jvp(f, (primal,), (tangent,), has_aux=True)
    close(out["u"], a * b0)
    close(tout["u"], ta * b0 + a * tb0)
    close(out["v"], (b1**2).sum(0))
    close(tout["v"], (2 * b1 * tb1).sum(0))
    close(aux, a.sum())
    assert not isinstance(aux, Tracer)


def test_jvp_of_a_constant_output_has_a_zero_tangent():
    out, t = md.jvp(lambda x: md.ones(3), (md.tensor([1.0, 2.0]),), (md.tensor([1.0, 1.0]),))
    close(out, np.ones(3))
    assert t.shape == (3,)
    close(t, np.zeros(3), atol=0)


def test_vjp_on_pytrees_with_aux(rng):
    x, y = rng.normal(size=3), rng.normal(size=(2, 3))

    def f(x, ys):
        return {"p": x * ys[0], "q": md.sum(ys[1] * x)}, x * 2

    out, back, aux = md.vjp(f, t64(x), [t64(y[0]), t64(y[1])], has_aux=True)
    close(out["p"], x * y[0])
    close(aux, 2 * x)
    cp, cq = rng.normal(size=3), 1.5
    gx, gys = back({"p": t64(cp), "q": md.tensor(cq)})
    close(gx, cp * y[0] + cq * y[1])
    assert isinstance(gys, list)
    close(gys[0], cp * x)
    close(gys[1], cq * x)


def test_vjp_of_an_unused_input_is_zero():
    _, back = md.vjp(lambda x, y: x * 3, md.tensor([1.0, 2.0]), md.tensor([5.0]))
    gx, gy = back(md.tensor([1.0, 1.0]))
    close(gx, [3.0, 3.0])
    assert gy.shape == (1,)
    close(gy, [0.0], atol=0)


def test_vjp_fn_can_be_called_twice(rng):
    x = rng.normal(size=3)
    _, back = md.vjp(lambda x: md.sin(x) * x, t64(x))
    first = back(md.ones(3))[0]
    second = back(md.tensor([2.0, 2.0, 2.0]))[0]
    close(first, np.cos(x) * x + np.sin(x))
    close(second, 2 * (np.cos(x) * x + np.sin(x)))


# ----------------------------------------------------------------------------- Jacobians
def _vector_field(x):
    return md.stack([x[0] * x[1] ** 2, md.sin(x[2]) * x[0], md.exp(x[1] - x[2])])


def test_jacobian_closed_form_and_jacfwd_equals_jacrev(rng):
    x = rng.normal(size=3)
    expected = np.array(
        [
            [x[1] ** 2, 2 * x[0] * x[1], 0.0],
            [np.sin(x[2]), 0.0, x[0] * np.cos(x[2])],
            [0.0, np.exp(x[1] - x[2]), -np.exp(x[1] - x[2])],
        ]
    )
    jf = md.jacfwd(_vector_field)(t64(x))
    jr = md.jacrev(_vector_field)(t64(x))
    close(jf, expected)
    close(jr, expected)


@pytest.mark.parametrize(
    "fn, in_shape",
    [
        (lambda a: md.tanh(a @ a.T), (2, 3)),  # matrix -> matrix
        (lambda a: md.sum(md.exp(a) * a, axis=0), (3, 2)),  # matrix -> vector
        (lambda v: md.outer(v, md.sin(v)), (3,)),  # vector -> matrix
        (lambda v: md.logsumexp(v) * v, (4,)),
    ],
)
def test_jacfwd_equals_jacrev(rng, fn, in_shape):
    x = t64(rng.normal(size=in_shape))
    out_shape = fn(x).shape
    jf, jr = md.jacfwd(fn)(x), md.jacrev(fn)(x)
    assert jf.shape == out_shape + in_shape
    assert jr.shape == out_shape + in_shape
    close(jf, jr, rtol=1e-12, atol=1e-12)
    # and against central differences, for one entry of the input
    eps = 1e-6
    e = np.zeros(in_shape)
    e.flat[1] = eps
    fd = (fn(t64(x.numpy() + e)).numpy() - fn(t64(x.numpy() - e)).numpy()) / (2 * eps)
    close(jf.numpy().reshape(out_shape + (-1,))[..., 1], fd, rtol=1e-6, atol=1e-8)


def test_jacobians_with_argnums_tuple(rng):
    a, x = rng.normal(size=(2, 3)), rng.normal(size=3)
    f = lambda a, x: a @ x
    for jac in (md.jacfwd, md.jacrev):
        ja, jx = jac(f, argnums=(0, 1))(t64(a), t64(x))
        assert ja.shape == (2, 2, 3) and jx.shape == (2, 3)
        close(jx, a)
        expected = np.zeros((2, 2, 3))
        for i in range(2):
            expected[i, i, :] = x
        close(ja, expected)


# ----------------------------------------------------------------------------- Hessians, closed forms
def test_hessian_of_a_quadratic_form(rng):
    n = 4
    A = rng.normal(size=(n, n))  # not symmetric on purpose
    x = rng.normal(size=n)
    f = lambda x: 0.5 * (x @ (t64(A) @ x))
    close(md.grad(f)(t64(x)), 0.5 * (A + A.T) @ x)
    close(md.hessian(f)(t64(x)), 0.5 * (A + A.T))


def test_hessian_of_a_matrix_quadratic_form(rng):
    """f(X) = ½ tr(Xᵀ A X): the Hessian has the shape in.shape + in.shape."""
    A = rng.normal(size=(3, 3))
    X = rng.normal(size=(3, 2))
    f = lambda X: 0.5 * md.sum(X * (t64(A) @ X))
    H = md.hessian(f)(t64(X))
    assert H.shape == (3, 2, 3, 2)
    S = 0.5 * (A + A.T)
    expected = np.einsum("ik,jl->ijkl", S, np.eye(2))  # d²f / dX[i,j] dX[k,l] = S[i,k] δ[j,l]
    close(H, expected)


def rosenbrock(x):
    return md.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosenbrock_hessian(x):
    n = len(x)
    H = np.zeros((n, n))
    for i in range(n - 1):
        H[i, i] += 1200 * x[i] ** 2 - 400 * x[i + 1] + 2
        H[i + 1, i + 1] += 200
        H[i, i + 1] = H[i + 1, i] = -400 * x[i]
    return H


@pytest.mark.parametrize("point", [[1.0, 1.0, 1.0, 1.0], [-1.2, 1.0, 0.3, -0.5, 2.0]])
def test_hessian_of_rosenbrock(point):
    x = np.array(point)
    close(md.hessian(rosenbrock)(t64(x)), rosenbrock_hessian(x), rtol=1e-12, atol=1e-9)
    v = np.linspace(-1, 1, len(x))
    for mode in ("fwd-over-rev", "rev-over-fwd", "rev-over-rev"):
        (hv,) = md.hvp(rosenbrock, (t64(x),), (t64(v),), mode=mode)
        close(hv, rosenbrock_hessian(x) @ v, rtol=1e-12, atol=1e-9)


def test_hessian_with_argnums(rng):
    x, y = rng.normal(size=2), rng.normal(size=2)
    f = lambda x, y: md.sum(x**2 * y**3)
    close(md.hessian(f, argnums=1)(t64(x), t64(y)), np.diag(6 * x**2 * y))


# ----------------------------------------------------------------------------- third derivatives
def poly(x):
    return 2 * x**5 - 3 * x**4 + x**3 - 7 * x + 1


def poly3(x):
    return 120 * x**2 - 72 * x + 6


def _jvp1(f):
    return lambda x: md.jvp(f, (x,), (md.ones_like(x),))[1]


def _vjp1(f):
    return lambda x: md.vjp(f, x)[1](md.ones_like(x))[0]


THIRD = {
    "grad(grad(grad))": lambda: md.grad(md.grad(md.grad(poly))),
    "jvp(jvp(jvp))": lambda: _jvp1(_jvp1(_jvp1(poly))),
    "vjp(vjp(vjp))": lambda: _vjp1(_vjp1(_vjp1(poly))),
    "jvp(grad(jvp))": lambda: _jvp1(md.grad(_jvp1(poly))),
    "grad(jvp(grad))": lambda: md.grad(_jvp1(md.grad(poly))),
    "grad(grad(jvp))": lambda: md.grad(md.grad(_jvp1(poly))),
    "jvp(vjp(grad))": lambda: _jvp1(_vjp1(md.grad(poly))),
    "jacfwd(jacrev(jacfwd))": lambda: md.jacfwd(md.jacrev(md.jacfwd(poly))),
    "grad(hessian)": lambda: md.grad(md.hessian(poly)),
    "hvp(grad)": lambda: lambda x: md.hvp(md.grad(poly), (x,), (md.ones_like(x),))[0],
}


@pytest.mark.parametrize("name", list(THIRD))
@pytest.mark.parametrize("x", [1.5, -0.4])
def test_third_derivative_of_a_polynomial(name, x):
    close(THIRD[name]()(md.tensor(x)), poly3(x), rtol=1e-12, atol=1e-10)


def test_third_derivative_tensor_of_a_cubic(rng):
    """f(x) = Σ T_ijk x_i x_j x_k has the constant third derivative Σ over the 6 index permutations."""
    n = 3
    T = rng.normal(size=(n, n, n))
    f = lambda x: md.einsum("ijk,i,j,k->", t64(T), x, x, x)
    expected = sum(
        np.transpose(T, p) for p in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    )
    x = t64(rng.normal(size=n))
    close(md.jacfwd(md.jacfwd(md.jacrev(f)))(x), expected)
    close(md.jacrev(md.jacrev(md.grad(f)))(x), expected)
    close(md.jacfwd(md.hessian(f))(x), expected)


# ----------------------------------------------------------------------------- Hessian-vector products
def _loss(w, b):
    z = md.tanh(w @ md.tensor([0.5, -1.0, 2.0]) + b)
    return md.sum(z * z) + md.sum(w**3) * 0.1


def _dense_hessian(rng):
    w, b = rng.normal(size=(2, 3)), rng.normal(size=2)
    flat = lambda v: _loss(md.reshape(v[:6], (2, 3)), v[6:])
    H = md.hessian(flat)(t64(np.concatenate([w.ravel(), b])))
    return w, b, H.numpy()


@pytest.mark.parametrize("mode", ["fwd-over-rev", "rev-over-fwd", "rev-over-rev"])
def test_hvp_modes_equal_dense_hessian_times_v_on_pytrees(rng, mode):
    w, b, H = _dense_hessian(rng)
    vw, vb = rng.normal(size=(2, 3)), rng.normal(size=2)
    hv = md.hvp(_loss, (t64(w), t64(b)), (t64(vw), t64(vb)), mode=mode)
    assert isinstance(hv, tuple) and hv[0].shape == (2, 3) and hv[1].shape == (2,)
    expected = H @ np.concatenate([vw.ravel(), vb])
    close(hv[0], expected[:6].reshape(2, 3), rtol=1e-11, atol=1e-11)
    close(hv[1], expected[6:], rtol=1e-11, atol=1e-11)


def test_hvp_modes_agree_with_each_other_and_are_symmetric(rng):
    w, b = t64(rng.normal(size=(2, 3))), t64(rng.normal(size=2))
    u = (t64(rng.normal(size=(2, 3))), t64(rng.normal(size=2)))
    v = (t64(rng.normal(size=(2, 3))), t64(rng.normal(size=2)))
    inner = lambda a, b: sum(float(np.sum(np.asarray(x) * np.asarray(y))) for x, y in zip(a, b))
    results = {}
    for mode in ("fwd-over-rev", "rev-over-fwd", "rev-over-rev"):
        hv = md.hvp(_loss, (w, b), v, mode=mode)
        hu = md.hvp(_loss, (w, b), u, mode=mode)
        lhs, rhs = inner(u, hv), inner(v, hu)
        assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs)), (mode, lhs, rhs)
        results[mode] = hv
    for mode in ("rev-over-fwd", "rev-over-rev"):
        for a, c in zip(results[mode], results["fwd-over-rev"]):
            close(a, c, rtol=1e-12, atol=1e-12)


def test_hvp_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="fwd-over-fwd"):
        md.hvp(lambda x: md.sum(x), (md.ones(2),), (md.ones(2),), mode="fwd-over-fwd")


@pytest.mark.parametrize("mode", ["fwd-over-rev", "rev-over-fwd", "rev-over-rev"])
def test_hessian_product_one_and_k_directions_equal_the_dense_hessian(rng, mode):
    """The product behind md.hvp, reused at one point: one direction, then all 8 columns at once."""
    w, b, H = _dense_hessian(rng)
    product = hessian_product(_loss, (t64(w), t64(b)), mode)
    vw, vb = rng.normal(size=(2, 3)), rng.normal(size=2)
    hv = product((t64(vw), t64(vb)))
    expected = H @ np.concatenate([vw.ravel(), vb])
    close(hv[0], expected[:6].reshape(2, 3), rtol=1e-11, atol=1e-11)
    close(hv[1], expected[6:], rtol=1e-11, atol=1e-11)
    eye = np.eye(8)
    cols = product((t64(eye[:, :6].reshape(8, 2, 3)), t64(eye[:, 6:])), vectorized=True)
    assert cols[0].shape == (8, 2, 3) and cols[1].shape == (8, 2)
    close(np.concatenate([cols[0].numpy().reshape(8, 6), cols[1].numpy()], axis=1), H, rtol=1e-11, atol=1e-11)


def test_hessian_product_rev_over_rev_records_the_gradient_tape_once(rng):
    from minidiff.modes.reverse import nodes_created

    x = t64(rng.normal(size=4))
    f = lambda t: (md.sin(t) * t).sum()  # noqa: E731
    recorded = {}
    for mode in ("fwd-over-rev", "rev-over-rev"):
        product = hessian_product(f, (x,), mode)
        before = nodes_created()
        for _ in range(3):
            product((md.ones_like(x),))
        recorded[mode] = nodes_created() - before
    assert recorded["rev-over-rev"] == 0  # the products only walk the tape kept at construction
    assert recorded["fwd-over-rev"] > 0  # (each JVP of the gradient records a tape: the count moves)


# ----------------------------------------------------------------------------- vector mode
def test_vectorized_jvp_equals_k_separate_jvps(rng):
    K = 5
    a, b = rng.normal(size=(2, 3)), rng.normal(size=3)
    ta, tb = rng.normal(size=(K, 2, 3)), rng.normal(size=(K, 3))
    f = lambda a, b: {"y": md.tanh(a @ b), "s": md.sum(md.exp(a) * b)}
    out, touts = md.jvp(f, (t64(a), t64(b)), (t64(ta), t64(tb)), vectorized=True)
    assert touts["y"].shape == (K, 2) and touts["s"].shape == (K,)
    close(out["y"], np.tanh(a @ b))
    for k in range(K):
        _, single = md.jvp(f, (t64(a), t64(b)), (t64(ta[k]), t64(tb[k])))
        close(touts["y"][k], single["y"], rtol=1e-12, atol=1e-12)
        close(touts["s"][k], single["s"], rtol=1e-12, atol=1e-12)
    # closed form of the first output's tangents: (1 - tanh²)(ta b + a tb)
    expected = (1 - np.tanh(a @ b) ** 2) * (np.einsum("kij,j->ki", ta, b) + np.einsum("ij,kj->ki", a, tb))
    close(touts["y"], expected)


def test_vectorized_jvp_with_aux(rng):
    x, T = rng.normal(size=3), rng.normal(size=(4, 3))
    f = lambda x: (md.sum(x**3), x * 2)
    out, touts, aux = md.jvp(f, (t64(x),), (t64(T),), has_aux=True, vectorized=True)
    close(out, (x**3).sum())
    close(touts, T @ (3 * x**2))
    close(aux, 2 * x)


def test_vectorized_jvp_needs_one_number_of_directions():
    with pytest.raises(md.ShapeError, match="directions"):
        md.jvp(
            lambda a, b: a * b, (md.ones(3), md.ones(3)), (md.ones((2, 3)), md.ones((4, 3))), vectorized=True
        )


# ----------------------------------------------------------------------------- vmap
def test_vmap_in_axes_and_out_axes(rng):
    xs, w = rng.normal(size=(3, 4)), rng.normal(size=4)
    f = lambda x, w: x * w
    close(md.vmap(f, in_axes=(1, None))(t64(xs.T), t64(w)), xs * w)
    close(md.vmap(f, in_axes=(0, None), out_axes=1)(t64(xs), t64(w)), (xs * w).T)


def test_per_example_gradients_by_vmap_of_grad(rng):
    X, y, w = rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=3)
    loss = lambda w, x, y: (md.sum(w * x) - y) ** 2
    g = md.vmap(md.grad(loss), in_axes=(None, 0, 0))(t64(w), t64(X), t64(y))
    expected = 2 * (X @ w - y)[:, None] * X
    close(g, expected)


# ----------------------------------------------------------------------------- long chains
def test_ten_thousand_op_chain_grad_and_jvp():
    """3,334 steps of y ← y + 1e-3·sin(y) (three ops each): no recursion limit is hit."""
    steps = 3334
    x0 = np.array([0.5, 1.0, 2.0])

    def chain(x):
        for _ in range(steps):
            x = x + 1e-3 * md.sin(x)
        return x

    y, d = x0.copy(), np.ones(3)  # the reference: the chain rule, step by step, in NumPy
    for _ in range(steps):
        d = d * (1 + 1e-3 * np.cos(y))
        y = y + 1e-3 * np.sin(y)
    close(md.grad(lambda x: md.sum(chain(x)))(t64(x0)), d, rtol=1e-10)
    close(md.jvp(chain, (t64(x0),), (md.ones(3),))[1], d, rtol=1e-10)
