"""md.linearize: f_jvp(v) equals md.jvp's tangent (float64) and central finite differences, for
pytrees and many tangents; f is not run again (no primitive of f's is evaluated by f_jvp); nesting;
and the error paths of f_jvp's tangents."""

from __future__ import annotations

import numpy as np
import pytest

import minidiff as md
from minidiff.errors import DTypeError, ShapeError
from minidiff.primitives import REGISTRY

RTOL, ATOL = 1e-11, 1e-12  # float64, the same derivative by two routes


def close(a, b, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def close_trees(a, b, **kw):
    la, da = md.pytree.flatten(a)
    lb, db = md.pytree.flatten(b)
    assert da == db, (da, db)
    for x, y in zip(la, lb):
        close(x, y, **kw)


RNG = np.random.default_rng(11)


def mlp(params, x):
    """Every kind of rule: matmul, broadcasting add, tanh (reads its output), erf, a reduction, max."""
    h = md.tanh(x @ params["w1"] + params["b1"])
    h = md.erf(h @ params["w2"]) * md.softplus(h)
    return {"logits": h, "stats": (md.logsumexp(h, axis=1), md.max(h * h))}


PARAMS = {
    "w1": md.tensor(RNG.normal(size=(3, 5))),
    "b1": md.tensor(RNG.normal(size=5)),
    "w2": md.tensor(RNG.normal(size=(5, 5)) * 0.5),
}
X = md.tensor(RNG.normal(size=(4, 3)))


def directions(k):
    return [
        (
            {n: md.tensor(RNG.normal(size=p.shape)) for n, p in PARAMS.items()},
            md.tensor(RNG.normal(size=X.shape)),
        )
        for _ in range(k)
    ]


def test_f_jvp_equals_jvp_for_many_tangents_on_pytrees():
    out, f_jvp = md.linearize(mlp, PARAMS, X)
    close_trees(out, mlp(PARAMS, X))
    for vp, vx in directions(3):
        close_trees(f_jvp(vp, vx), md.jvp(mlp, (PARAMS, X), (vp, vx))[1])


def test_f_jvp_equals_central_differences():
    f = lambda x: md.sin(x) * md.arctan(x) + md.cosh(x).sum()  # noqa: E731
    x = RNG.normal(size=4)
    _, f_jvp = md.linearize(f, md.tensor(x))
    v = RNG.normal(size=4)
    eps = 1e-6
    fd = (f(md.tensor(x + eps * v)).numpy() - f(md.tensor(x - eps * v)).numpy()) / (2 * eps)
    close(f_jvp(md.tensor(v)), fd, rtol=1e-7, atol=1e-8)  # central differences: O(eps²) + rounding


def test_f_jvp_is_linear_and_zero_gives_zero():
    _, f_jvp = md.linearize(lambda x: md.tanh(x) ** 3, md.tensor([0.3, -0.8]))
    a, b = md.tensor([1.0, 2.0]), md.tensor([-0.5, 4.0])
    close(f_jvp(2.0 * a + b), 2.0 * f_jvp(a) + f_jvp(b))
    close(f_jvp(md.zeros(2)), [0.0, 0.0], atol=0)


class _Counter:
    """Counts evaluations of registered primitives on concrete values (their ``apply``)."""

    def __init__(self, names):
        self.names, self.count, self.saved = names, 0, {}

    def __enter__(self):
        for n in self.names:
            prim = REGISTRY[n]
            self.saved[n] = prim.apply

            def counted(args, params, _inner=prim.apply):
                self.count += 1
                return _inner(args, params)

            prim.apply = counted
        return self

    def __exit__(self, *exc):
        for n, apply in self.saved.items():
            REGISTRY[n].apply = apply


def test_f_jvp_does_not_rerun_the_primal_computations():
    """tanh, erf, softplus, logsumexp are evaluated by f (and jvp), never by f_jvp: their derivative
    factors were computed once, at linearization."""
    _, f_jvp = md.linearize(mlp, PARAMS, X)
    ((vp, vx),) = directions(1)
    names = ("tanh", "erf", "softplus", "logsumexp")
    with _Counter(names) as jvp_calls:
        md.jvp(mlp, (PARAMS, X), (vp, vx))
    with _Counter(names) as lin_calls:
        f_jvp(vp, vx)
    assert jvp_calls.count >= 4 and lin_calls.count == 0, (jvp_calls.count, lin_calls.count)


def test_has_aux_and_several_arguments():
    def f(x, y):
        return md.sin(x) * y, {"note": x.sum()}

    x, y = md.tensor([0.5, 1.0]), md.tensor(2.0)
    out, f_jvp, aux = md.linearize(f, x, y, has_aux=True)
    close(out, np.sin([0.5, 1.0]) * 2.0)
    close(aux["note"], 1.5)
    close(f_jvp(md.tensor([1.0, 0.0]), md.tensor(1.0)), [2 * np.cos(0.5) + np.sin(0.5), np.sin(1.0)])


def test_nested_grad_of_f_jvp_and_f_jvp_under_transforms():
    f = lambda t: md.sin(t) * t  # noqa: E731
    # d/dx [f'(x)·1] = f''(x) = 2cos x - x sin x
    g = md.grad(lambda x: md.linearize(f, x)[1](md.tensor(1.0)))(md.tensor(0.7))
    close(g, 2 * np.cos(0.7) - 0.7 * np.sin(0.7))
    _, f_jvp = md.linearize(f, md.tensor([0.2, 0.9]))
    vs = md.tensor([[1.0, 0.0], [0.0, 1.0]])
    close(md.vmap(f_jvp)(vs), np.diag(np.cos([0.2, 0.9]) * [0.2, 0.9] + np.sin([0.2, 0.9])))
    # f_jvp is linear: its own vjp is the transpose, J^T u
    _, back = md.vjp(f_jvp, md.tensor([1.0, 1.0]))
    close(back(md.tensor([1.0, 2.0]))[0], (np.cos([0.2, 0.9]) * [0.2, 0.9] + np.sin([0.2, 0.9])) * [1, 2])


def test_output_not_depending_on_the_input_gives_zeros():
    _, f_jvp = md.linearize(lambda x: md.ones(3) * 2.0, md.tensor([1.0, 2.0]))
    close(f_jvp(md.tensor([1.0, 1.0])), [0.0, 0.0, 0.0], atol=0)


# ----------------------------------------------------------------------------- error paths
def test_not_callable():
    with pytest.raises(TypeError, match=r"linearize: f must be callable, got str"):
        md.linearize("sin", md.tensor(1.0))


def test_wrong_number_of_tangents():
    _, f_jvp = md.linearize(lambda x, y: x * y, md.tensor(1.0), md.tensor(2.0))
    with pytest.raises(TypeError, match=r"f_jvp takes one tangent per primal \(2\), got 1"):
        f_jvp(md.tensor(1.0))


def test_wrong_tangent_structure():
    _, f_jvp = md.linearize(lambda p: p["a"] * p["b"], {"a": md.tensor(1.0), "b": md.tensor(2.0)})
    with pytest.raises(
        TypeError, match=r"f_jvp's tangents have structure \(\{'a': \*\}\) but the primals have"
    ):
        f_jvp({"a": md.tensor(1.0)})


def test_wrong_tangent_shape_and_dtype():
    _, f_jvp = md.linearize(md.sin, md.tensor([1.0, 2.0]))
    with pytest.raises(ShapeError, match=r"linearize: f_jvp: tangent leaf 0 of shape \(3,\) does not match"):
        f_jvp(md.ones(3))
    with pytest.raises(DTypeError, match=r"tangent leaf 0 of dtype float32 does not match .* float64"):
        f_jvp(md.ones(2, dtype="float32"))


def test_integer_output_is_refused():
    with pytest.raises(TypeError, match=r"linearize: output leaf 1 of f is a int64 tensor of shape \(\)"):
        md.linearize(lambda x: (md.sin(x), md.argmax(x)), md.tensor([1.0, 2.0]))
