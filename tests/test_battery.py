"""md.testing.check_primitive (the battery in users' hands) and md.testing.check_mutation.

The battery must pass on correct user primitives and fail — with the check, the input and the seed
in its message — on primitives with a deliberately wrong JVP, VJP, second order, broadcasting,
dtype handling or view handling.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st
from userprims import make_softplus

import minidiff as md
from minidiff.testing import Domain, Mutation, Tolerances, check_mutation, check_primitive
from minidiff.testing.mutation import detached, mutated, negated, replaced, scaled

EX = 8  # examples per battery run: enough to hit a wrong rule, few enough to stay fast


# ----------------------------------------------------------------------------- user primitives
def _sum_to(c, shape, reduce=md.sum):
    """The cotangent of a broadcast input: summed over the axes broadcasting added or stretched."""
    lead = c.ndim - len(shape)
    if lead:
        c = reduce(c, axis=tuple(range(lead)))
    stretched = tuple(k for k, s in enumerate(shape) if s == 1 and c.shape[k] != 1)
    return reduce(c, axis=stretched, keepdims=True) if stretched else c


def _mean_to(c, shape):
    """A wrong un-broadcasting: the mean over the broadcast axes instead of the sum."""
    return _sum_to(c, shape, reduce=md.mean)


def make_mul_sin(reduce=_sum_to):
    """``x · sin(y)``, broadcasting; its VJP un-broadcasts with ``reduce``."""

    @md.primitive
    def mul_sin(x, y):
        return x * md.sin(y)

    @mul_sin.defjvp
    def mul_sin_jvp(primals, tangents):
        (x, y), (tx, ty) = primals, tangents
        return tx * md.sin(y) + x * md.cos(y) * ty

    @mul_sin.defvjp
    def mul_sin_vjp(g, out, x, y):
        return reduce(g * md.sin(y), x.shape), reduce(g * x * md.cos(y), y.shape)

    return mul_sin


# ----------------------------------------------------------------------------- passing
def test_battery_passes_on_a_correct_unary_primitive():
    check_primitive(make_softplus(), [Domain(low=-3.0, high=3.0)], max_examples=EX, seed=0)


def test_battery_passes_on_a_correct_broadcasting_binary_primitive():
    check_primitive(make_mul_sin(), [None, None], broadcasts=True, max_examples=15, seed=0)


def test_battery_passes_on_plain_functions_fixed_shapes_and_shape_strategies():
    def f(a, b):
        return md.tanh(a @ b)

    check_primitive(f, [(2, 3), Domain(shape=(3, 4), low=-1.0, high=1.0)], max_examples=5, seed=3)
    shapes = st.sampled_from([(2,), (3, 2)])
    check_primitive(md.log, [Domain(shape=shapes, low=0.5, high=2.0)], max_examples=5, seed=4)
    check_primitive(
        md.abs, [Domain(where=lambda v: abs(v) > 0.1)], checks=["finite_differences"], max_examples=5, seed=5
    )


# ----------------------------------------------------------------------------- failing, and saying why
def _failure(f, domains, **kw) -> str:
    kw = {"max_examples": EX, "seed": 7, **kw}
    with pytest.raises(AssertionError) as info:
        check_primitive(f, domains, **kw)
    msg = str(info.value)
    assert "input 0: shape" in msg, msg  # the failing input
    assert "Hypothesis seed 7" in msg and "seed=7" in msg, msg  # how to reproduce it
    return msg


def test_a_wrong_jvp_is_caught():
    msg = _failure(make_softplus(jvp_factor=1.001), [None])
    assert "check 'finite_differences' failed" in msg and "forward mode" in msg, msg
    msg = _failure(make_softplus(jvp_factor=1.001), [None], checks=["adjoint"])
    assert "check 'adjoint' failed" in msg, msg


def test_a_wrong_vjp_is_caught():
    msg = _failure(make_softplus(vjp_factor=-1.0), [None])
    assert "check 'finite_differences' failed" in msg, msg
    assert "check 'adjoint' failed" in _failure(make_softplus(vjp_factor=1.001), [None], checks=["adjoint"])


def test_a_wrong_second_order_is_caught_and_first_order_alone_passes():
    wrong = make_softplus(detach=("jvp", "vjp"))  # right first derivatives, no second derivative
    check_primitive(wrong, [None], order=1, max_examples=EX, seed=7)
    msg = _failure(wrong, [None])
    assert "check 'finite_differences' failed" in msg, msg
    # the three HVP modes agree on a consistently missing term; they disagree when one rule lacks it
    check_primitive(wrong, [None], checks=["hvp"], max_examples=EX, seed=7)
    msg = _failure(make_softplus(detach=("vjp",)), [None], checks=["hvp"])
    assert "check 'hvp' failed" in msg and "vs fwd-over-rev" in msg, msg


def test_wrong_broadcasting_is_caught():
    wrong = make_mul_sin(reduce=_mean_to)
    check_primitive(wrong, [None, None], max_examples=EX, seed=7)  # equal shapes never show it
    msg = _failure(wrong, [None, None], broadcasts=True, checks=["broadcasting"], max_examples=20)
    assert "check 'broadcasting' failed" in msg and "summed back" in msg, msg
    assert "failed" in _failure(wrong, [None, None], broadcasts=True, max_examples=20)


def test_a_float64_detour_is_caught_by_the_float32_check():
    msg = _failure(lambda x: md.sin(md.astype(x, "float64")), [None], checks=["float32"])
    assert "check 'float32' failed" in msg and "float64" in msg, msg


def test_a_forward_that_reads_memory_order_is_caught_by_the_views_check():
    @md.primitive
    def memory_order(x):  # reads the elements in memory order: wrong on reversed views
        flat = np.ravel(x.numpy(), order="K").reshape(x.shape)
        return md.asarray(flat) * 1.0

    @memory_order.defjvp
    def memory_order_jvp(primals, tangents):
        return tangents[0]

    @memory_order.defvjp
    def memory_order_vjp(g, out, x):
        return (g,)

    dom = [Domain(shape=st.sampled_from([(3,), (2, 3)]))]
    msg = _failure(memory_order, dom, checks=["noncontiguous"])
    assert "check 'noncontiguous' failed" in msg and "views" in msg, msg


def test_the_same_seed_reproduces_the_same_failure():
    f = make_softplus(vjp_factor=1.01)
    messages = []
    for _ in range(2):
        with pytest.raises(AssertionError) as info:
            check_primitive(f, [None], max_examples=EX, seed=11)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_tolerances_are_honoured():
    f = make_softplus(jvp_factor=1.001)
    loose = Tolerances(fd_rtol=1e-2, fd_atol=1e-2, rtol64=1e-2)
    check_primitive(
        f, [None], checks=["finite_differences", "adjoint"], tolerances=loose, max_examples=EX, seed=7
    )


# ----------------------------------------------------------------------------- errors of the API
@pytest.mark.parametrize(
    "domains, kw, error, words",
    [
        ("x", {}, TypeError, "domains must be a non-empty list"),
        ([], {}, TypeError, "domains must be a non-empty list"),
        ([None, None], {}, ValueError, "f takes 1 input(s) but 2 domain(s)"),
        ([Domain(low=2.0, high=1.0)], {}, ValueError, "domain 0 needs finite low < high"),
        ([Domain(low=0.0, high=float("inf"))], {}, ValueError, "finite low < high"),
        ([Domain(shape=(2, -1))], {}, ValueError, "is not a tuple of sizes"),
        ([Domain(where=3)], {}, TypeError, "predicate"),
        ([1.5], {}, TypeError, "domain 0 must be a Domain"),
        ([None], {"checks": ["speed"]}, ValueError, "unknown checks ['speed']"),
        ([None], {"order": 3}, ValueError, "order must be an integer in [1, 2]"),
        ([None], {"max_examples": 0}, ValueError, "max_examples must be an integer >= 1"),
    ],
)
def test_bad_arguments_raise_naming_check_primitive(domains, kw, error, words):
    with pytest.raises(error, match="check_primitive") as info:
        check_primitive(md.sin, domains, **kw)
    assert words in str(info.value)


def test_a_function_returning_a_tuple_is_refused():
    with pytest.raises(TypeError, match="f must return one tensor"):
        check_primitive(lambda x: (x, x), [None], max_examples=2, seed=0)


# ----------------------------------------------------------------------------- mutations of user rules
def test_check_mutation_on_a_user_primitive_catches_and_restores():
    sp = make_softplus()
    rules = (sp.jvp_fn, sp.vjp_fn, sp.reads)

    def battery():
        check_primitive(sp, [None], max_examples=EX, seed=0)

    for rule, change in [("vjp", scaled(1.001)), ("jvp", negated()), ("both", detached())]:
        m = Mutation(f"softplus {rule}", sp, rule, change)
        with mutated(m):
            assert (sp.jvp_fn, sp.vjp_fn) != rules[:2]
        assert (sp.jvp_fn, sp.vjp_fn, sp.reads) == rules
        result = check_mutation(m, battery)
        assert result.caught, result
        assert "check_primitive(md.primitive 'softplus')" in result.message
    assert (sp.jvp_fn, sp.vjp_fn, sp.reads) == rules


def test_check_mutation_targets_one_cotangent_of_a_user_primitive():
    f = make_mul_sin()
    x, y = md.tensor([0.3, 1.2]), md.tensor([0.5, -0.4])
    m = Mutation("y's cotangent negated", f, "vjp", negated(), index=1)
    with mutated(m):
        gx, gy = md.grad(lambda a, b: f(a, b).sum(), argnums=(0, 1))(x, y)
    assert np.allclose(gx.numpy(), np.sin(y.numpy()))
    assert np.allclose(gy.numpy(), -x.numpy() * np.cos(y.numpy()))


def test_check_mutation_over_drawn_inputs_reports_the_failing_input():
    sin_p = md.primitives.REGISTRY["sin"]
    m = Mutation("sin ×1.001", sin_p, "both", scaled(1.001))
    inputs = st.lists(st.floats(-2, 2), min_size=1, max_size=3).map(md.tensor)
    result = check_mutation(
        m, lambda x: md.testing.check_grads(md.sin, (x,), order=1), inputs, max_examples=10
    )
    assert result.caught and result.examples >= 1
    assert isinstance(result.failing_input, md.Tensor)
    assert "caught" in str(result)


def test_a_mutation_that_changes_nothing_survives():
    m = Mutation("sin ×1", md.primitives.REGISTRY["sin"], "both", scaled(1.0))
    inputs = st.lists(st.floats(-2, 2), min_size=1, max_size=3).map(md.tensor)
    result = check_mutation(
        m, lambda x: md.testing.check_grads(md.sin, (x,), order=1), inputs, max_examples=5
    )
    assert not result.caught and result.examples == 5
    assert "SURVIVED" in str(result)


def test_a_property_that_fails_without_the_mutation_is_reported():
    m = Mutation("sin ×1.001", md.primitives.REGISTRY["sin"], "both", scaled(1.001))

    def broken():
        raise AssertionError("always")

    with pytest.raises(AssertionError, match="fails without the mutation"):
        check_mutation(m, broken)


def test_mutations_are_validated():
    reg = md.primitives.REGISTRY
    with pytest.raises(ValueError, match="linear primitive's JVP is the op itself"):
        Mutation("t", reg["transpose"], "jvp", scaled(2.0))
    with pytest.raises(ValueError, match="rule must be one of"):
        Mutation("t", reg["sin"], "backward", scaled(2.0))
    with pytest.raises(TypeError, match="is not a minidiff primitive"):
        Mutation("t", md.sin, "vjp", scaled(2.0))
    with pytest.raises(ValueError, match="not differentiable"):
        Mutation("t", reg["sign"], "vjp", scaled(2.0))
    with pytest.raises(ValueError, match="input 0 has no rule"):  # where's condition has none
        with mutated(Mutation("t", reg["where"], "both", scaled(2.0), index=0)):
            pass
    with pytest.raises(TypeError, match="replaced"):
        replaced()
