"""User primitives (``md.primitive`` + ``defjvp`` + ``defvjp``): the transforms use the given rules,
never the forward function's own operations."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import minidiff as md

TOL = dict(rtol=1e-12, atol=1e-12)  # float64, closed forms


def close(actual, expected, **kw):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), **(kw or TOL))


def t64(a, **kw):
    return md.tensor(np.asarray(a, dtype=np.float64), **kw)


def make_cube(calls: Counter, jvp=True, vjp=True, name=None):
    """x³ whose forward pass detaches its input: differentiating *through* it would give zero, so a
    correct derivative proves the rules were used.  ``calls`` counts each function's calls."""

    @md.primitive(name=name)
    def cube(x):
        calls["forward"] += 1
        x = x.detach()
        return x * x * x

    if jvp:

        @cube.defjvp
        def cube_jvp(primals, tangents):
            calls["jvp"] += 1
            (x,), (t,) = primals, tangents
            return 3 * x * x * t

    if vjp:

        @cube.defvjp
        def cube_vjp(cotangent, output, x):
            calls["vjp"] += 1
            return (3 * x * x * cotangent,)

    return cube


X = np.array([0.5, -1.5, 2.0])


def test_forward_evaluation_calls_only_the_forward_function():
    calls = Counter()
    cube = make_cube(calls)
    close(cube(t64(X)), X**3)
    assert calls == Counter(forward=1)


def test_grad_uses_the_vjp_rule():
    calls = Counter()
    cube = make_cube(calls)
    close(md.grad(lambda x: md.sum(cube(x)))(t64(X)), 3 * X**2)
    assert calls == Counter(forward=1, vjp=1)


def test_jvp_uses_the_jvp_rule():
    calls = Counter()
    cube = make_cube(calls)
    t = np.array([1.0, 2.0, -1.0])
    y, dy = md.jvp(cube, (t64(X),), (t64(t),))
    close(y, X**3)
    close(dy, 3 * X**2 * t)
    assert calls == Counter(forward=1, jvp=1)


def test_tape_style_uses_the_vjp_rule():
    calls = Counter()
    cube = make_cube(calls)
    x = t64(X, requires_grad=True)
    md.sum(cube(x) * 2.0).backward()
    close(x.grad, 6 * X**2)
    assert calls["vjp"] == 1 and calls["jvp"] == 0


def test_second_derivatives_differentiate_the_rules():
    calls = Counter()
    cube = make_cube(calls)
    f = lambda x: md.sum(cube(x))
    close(md.grad(lambda x: md.sum(md.grad(f)(x)))(t64(X)), 6 * X)  # rev-over-rev
    close(md.hessian(f)(t64(X)), np.diag(6 * X))  # fwd-over-rev


@pytest.mark.parametrize("mode", ["fwd-over-rev", "rev-over-fwd", "rev-over-rev"])
def test_hvp_in_every_mode(mode):
    calls = Counter()
    cube = make_cube(calls)
    w, v = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
    f = lambda x: md.sum(cube(x) * t64(w))
    (hv,) = md.hvp(f, (t64(X),), (t64(v),), mode=mode)
    close(hv, 6 * X * w * v)  # H = diag(6 x w)
    # fwd-over-rev pushes the tangent through the forward pass (JVP rule) and the VJP rule;
    # rev-over-fwd differentiates the JVP rule only; rev-over-rev the VJP rule only.
    used = {"fwd-over-rev": {"jvp", "vjp"}, "rev-over-fwd": {"jvp"}, "rev-over-rev": {"vjp"}}[mode]
    assert {k for k in ("jvp", "vjp") if calls[k]} == used
    assert calls["forward"] == 1  # one forward evaluation; the transforms never re-trace it


def test_vmap_falls_back_to_a_loop():
    calls = Counter()
    cube = make_cube(calls)
    xs = np.arange(12.0).reshape(4, 3) / 5
    close(md.vmap(cube)(t64(xs)), xs**3)
    assert calls["forward"] == 4  # one call per example: the loop fallback


def test_vmap_of_grad_and_jacobians_through_a_primitive():
    calls = Counter()
    cube = make_cube(calls)
    xs = np.arange(6.0).reshape(2, 3) / 4 - 0.5
    per_example = md.vmap(md.grad(lambda x: md.sum(cube(x))))(t64(xs))
    close(per_example, 3 * xs**2)
    close(md.jacfwd(cube)(t64(X)), np.diag(3 * X**2))
    close(md.jacrev(cube)(t64(X)), np.diag(3 * X**2))


def test_the_rules_are_used_even_when_they_disagree_with_the_forward_function():
    """A straight-through estimator: forward rounds, both rules pass derivatives through scaled by 2."""

    @md.primitive
    def st_round(x):
        return md.floor(x + 0.5)

    st_round.defjvp(lambda primals, tangents: 2 * tangents[0])
    st_round.defvjp(lambda cotangent, output, x: (2 * cotangent,))
    x = t64([0.2, 1.7])
    close(st_round(x), [0.0, 2.0])
    close(md.grad(lambda x: md.sum(st_round(x) * x))(x), 2 * x.numpy() + np.array([0.0, 2.0]))
    close(md.jvp(st_round, (x,), (md.ones(2),))[1], [2.0, 2.0])


def test_several_inputs_parameters_and_none_cotangents():
    calls = Counter()

    @md.primitive
    def scaled_mul(x, y, scale=1.0):
        calls["forward"] += 1
        return x.detach() * y.detach() * scale

    @scaled_mul.defjvp
    def _jvp(primals, tangents, scale=1.0):
        (x, y), (tx, ty) = primals, tangents
        return (tx * y + x * ty) * scale

    @scaled_mul.defvjp
    def _vjp(cotangent, output, x, y, scale=1.0):
        calls["vjp"] += 1
        return (cotangent * y * scale, None)  # y is treated as a constant in reverse mode

    x, y = t64([1.0, 2.0]), t64([3.0, -1.0])
    f = lambda x, y: md.sum(scaled_mul(x, y, scale=0.5))
    gx, gy = md.grad(f, argnums=(0, 1))(x, y)
    close(gx, 0.5 * y.numpy())
    close(gy, [0.0, 0.0], atol=0)
    _, t = md.jvp(lambda x, y: scaled_mul(x, y, scale=2.0), (x, y), (md.ones(2), md.ones(2)))
    close(t, 2.0 * (y.numpy() + x.numpy()))


def test_missing_vjp_rule_names_the_primitive():
    calls = Counter()
    cube = make_cube(calls, vjp=False, name="cube_without_vjp")
    with pytest.raises(md.TapeError, match=r"cube_without_vjp.*defvjp"):
        md.grad(lambda x: md.sum(cube(x)))(t64(X))
    x = t64(X, requires_grad=True)
    with pytest.raises(md.TapeError, match="cube_without_vjp"):
        md.sum(cube(x)).backward()
    assert x.grad is None
    close(md.jvp(cube, (t64(X),), (md.ones(3),))[1], 3 * X**2)  # the rule it has still works


def test_missing_jvp_rule_names_the_primitive():
    calls = Counter()
    cube = make_cube(calls, jvp=False, name="cube_without_jvp")
    with pytest.raises(md.TracerError, match=r"cube_without_jvp.*defjvp"):
        md.jvp(cube, (t64(X),), (md.ones(3),))
    with pytest.raises(md.TracerError, match="cube_without_jvp"):
        md.hvp(lambda x: md.sum(cube(x)), (t64(X),), (md.ones(3),), mode="rev-over-fwd")
    close(md.grad(lambda x: md.sum(cube(x)))(t64(X)), 3 * X**2)


def test_a_vjp_rule_returning_the_wrong_number_of_cotangents():
    @md.primitive(name="bad_arity")
    def f(x, y):
        return x * y

    f.defvjp(lambda cotangent, output, x, y: (cotangent * y,))
    with pytest.raises(TypeError, match=r"bad_arity.*2 cotangents"):
        md.grad(lambda x: md.sum(f(x, x)))(t64(X))


def test_decorating_the_same_function_twice_gives_two_independent_primitives():
    def g(x):
        return x * 2

    a, b = md.primitive(g), md.primitive(g)
    assert a is not b
    # user primitives stay out of the registry, so they are freed with the code that made them
    assert a.name not in md.primitives.REGISTRY
    a.defvjp(lambda cotangent, output, x: (cotangent * 2,))
    b.defvjp(lambda cotangent, output, x: (cotangent * 3,))
    close(md.grad(lambda x: md.sum(a(x)))(t64(X)), 2 * np.ones(3))
    close(md.grad(lambda x: md.sum(b(x)))(t64(X)), 3 * np.ones(3))


def test_one_way_to_declare_a_primitive():
    """md.primitive only: JAX's custom_jvp/custom_vjp mean something else, so minidiff has no aliases."""
    assert not hasattr(md, "custom_jvp") and not hasattr(md, "custom_vjp")


def test_a_batching_rule_makes_vmap_call_the_primitive_once():
    """With defbatch, vmap calls the primitive once for the whole batch (without: once per example)."""
    calls = []

    @md.primitive
    def row_sums(x):
        calls.append(x.shape)
        return md.sum(x, axis=-1)

    x = md.tensor(np.arange(12.0).reshape(3, 4))
    looped = md.vmap(row_sums)(x)
    assert calls == [(4,)] * 3
    calls.clear()

    @row_sums.defbatch
    def row_sums_batched(values, batched, size):
        (v,), (is_batched,) = values, batched
        assert is_batched and size == 3
        return row_sums(v)  # sums over the last axis already work on a leading batch axis

    np.testing.assert_allclose(md.vmap(row_sums)(x).numpy(), looped.numpy())
    assert calls == [(3, 4)]
    with pytest.raises(TypeError, match="a batching rule takes \\(values, batched, size\\)"):
        row_sums.defbatch(lambda values, batched: values[0])


def test_a_jvp_rule_may_take_the_output():
    """A JVP rule declaring ``output`` gets the forward pass's value (no second solve), traced by
    outer transforms: exp's rule ``output * t`` gives the right first and second derivatives."""
    calls = []

    @md.primitive
    def my_exp(x):
        calls.append(1)
        return md.exp(x)

    @my_exp.defjvp
    def my_exp_jvp(primals, tangents, *, output):
        return output * tangents[0]

    @my_exp.defvjp
    def my_exp_vjp(cotangent, output, x):
        return (output * cotangent,)

    x, t = t64([0.5, -1.0]), t64([1.0, 2.0])
    _, dy = md.jvp(my_exp, (x,), (t,))
    assert len(calls) == 1  # the rule used the forward pass's output
    close(dy, np.exp([0.5, -1.0]) * [1.0, 2.0])
    f = lambda x: md.sum(my_exp(x) * x)  # noqa: E731  Hessian: diag((x + 2) e^x)
    for mode in ("fwd-over-rev", "rev-over-fwd", "rev-over-rev"):
        close(md.hvp(f, (x,), (t,), mode=mode)[0], (np.array([0.5, -1.0]) + 2) * np.exp([0.5, -1.0]) * [1, 2])


# ----------------------------------------------------------------------------- rule results are checked
def _double():
    @md.primitive(name="double")
    def double(x):
        return 2 * x

    double.defjvp(lambda primals, tangents: 2 * tangents[0])
    double.defvjp(lambda cotangent, output, x: (2 * cotangent,))
    return double


BAD_VJP_RESULTS = [
    (
        "a cotangent of another shape",
        lambda g, out, x: (md.ones(4),),
        md.ShapeError,
        r"shape \(4,\).*shape \(3,\)",
    ),
    ("a broadcast cotangent, never summed", lambda g, out, x: (md.ones((2, 3)),), md.ShapeError, r"\(2, 3\)"),
    (
        "a cotangent of another dtype",
        lambda g, out, x: (g.astype("float32"),),
        md.DTypeError,
        "float32.*float64",
    ),
    ("a NumPy array", lambda g, out, x: (np.ones(3),), TypeError, "is a ndarray; return a minidiff tensor"),
]


@pytest.mark.parametrize("what, rule, error, message", BAD_VJP_RESULTS, ids=[b[0] for b in BAD_VJP_RESULTS])
def test_a_vjp_rule_returning_a_wrong_cotangent_is_refused_at_the_call(what, rule, error, message):
    double = _double()
    double.defvjp(rule)
    with pytest.raises(error, match=f"primitive 'double'.*VJP rule's cotangent of input 0.*{message}"):
        md.grad(lambda x: md.sum(double(x)))(md.tensor([1.0, 2.0, 3.0]))


BAD_JVP_RESULTS = [
    ("a tuple", lambda primals, tangents: (2 * tangents[0],), TypeError, "is a tuple"),
    ("a NumPy array", lambda primals, tangents: np.ones(3), TypeError, "is a ndarray"),
    ("another shape", lambda primals, tangents: md.ones(()), md.ShapeError, r"shape \(\).*shape \(3,\)"),
]


@pytest.mark.parametrize("what, rule, error, message", BAD_JVP_RESULTS, ids=[b[0] for b in BAD_JVP_RESULTS])
def test_a_jvp_rule_returning_a_wrong_tangent_is_refused_at_the_call(what, rule, error, message):
    double = _double()
    double.defjvp(rule)
    x = md.tensor([1.0, 2.0, 3.0])
    with pytest.raises(error, match=f"primitive 'double'.*JVP rule's tangent of the output.*{message}"):
        md.jvp(double, (x,), (md.ones_like(x),))


def test_a_right_rule_passes_the_checks_in_every_mode():
    double, x = _double(), md.tensor([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(md.grad(lambda z: md.sum(double(z)))(x).numpy(), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(md.jvp(double, (x,), (md.ones_like(x),))[1].numpy(), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(md.jacrev(double)(x).numpy(), 2 * np.eye(3))
    np.testing.assert_array_equal(md.jacfwd(double)(x).numpy(), 2 * np.eye(3))
