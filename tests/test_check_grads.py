"""md.testing.check_grads on a user's own primitive: float32 with the default arguments, static
arguments, refusals, and failure messages that name the primitive, the rule, the order, the argument,
the element and the two numbers compared.

Derivatives of the softplus and ``x·sin(y)`` user primitives below are known in closed form, so a
reported ``got``/``want`` pair is checked against the closed form (rtol 1e-4 for float32 values,
1e-6 for float64 finite differences) rather than against check_grads' own output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from opspecs import hyp_settings
from userprims import make_softplus

import minidiff as md
from minidiff.testing import GRAD_DEFAULTS, GradCheckError, Mutation, check_grads, check_mutation
from minidiff.testing import checks as checks_module
from minidiff.testing.mutation import scaled
from minidiff.testing.report import order_text

X = [0.3, -1.2, 2.0, 0.7]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def make_mul_sin(dy_factor=1.0):
    """``x · sin(y)``; the VJP's cotangent of ``y`` is multiplied by ``dy_factor``."""

    @md.primitive(name="mul_sin")
    def mul_sin(x, y):
        return x * md.sin(y)

    @mul_sin.defjvp
    def mul_sin_jvp(primals, tangents):
        (x, y), (tx, ty) = primals, tangents
        return tx * md.sin(y) + x * md.cos(y) * ty

    @mul_sin.defvjp
    def mul_sin_vjp(g, out, x, y):
        return g * md.sin(y), g * x * md.cos(y) * dy_factor

    return mul_sin


def t32(values):
    return md.tensor(np.asarray(values, dtype=np.float32))


def failure(f, args, **kw) -> GradCheckError:
    with pytest.raises(GradCheckError) as info:
        check_grads(f, args, **kw)
    return info.value


# ----------------------------------------------------------------------------- float32 passes
def test_float32_passes_with_default_arguments():
    check_grads(lambda x: md.sin(x) * x, (t32(X),))
    a = t32(np.arange(12).reshape(3, 4) / 7 - 0.5)
    b = t32(np.arange(8).reshape(4, 2) / 5 - 0.3)
    check_grads(md.matmul, (a, b))
    check_grads(make_softplus(), (t32(X),))
    check_grads(make_mul_sin(), (t32(X), t32([0.5, -0.1, 1.3, 2.2])))
    check_grads(lambda p: md.tanh(p["w"] @ p["v"]).sum(), ({"w": a, "v": b},), order=3)


FLOAT32_FUNCTIONS = {
    "sin(x)·x": (lambda x, y: md.sin(x) * x, 0),
    "tanh(x @ y)": (lambda x, y: md.tanh(x @ y), 1),
    "logsumexp": (lambda x, y: md.logsumexp(x, axis=-1) * md.tanh(y.sum()), 1),
    "softmax": (lambda x, y: md.softmax(x, axis=0) * md.exp(x), 0),
    "softplus primitive": (lambda x, y: make_softplus()(x) / (1.0 + y.sum() ** 2), 1),
}


@hyp_settings(15)
@given(
    name=st.sampled_from(sorted(FLOAT32_FUNCTIONS)),
    x=hnp.arrays(np.float32, (3, 4), elements=st.floats(-2, 2, width=32)),
    y=hnp.arrays(np.float32, (4, 2), elements=st.floats(-2, 2, width=32)),
    seed=st.integers(0, 2**16),
)
def test_float32_passes_with_defaults_on_drawn_inputs(name, x, y, seed):
    f, uses_y = FLOAT32_FUNCTIONS[name]
    if uses_y:
        check_grads(f, (t32(x), t32(y)), seed=seed)
    else:
        check_grads(lambda a: f(a, None), (t32(x),), seed=seed)


def test_float32_defaults_are_the_stated_ones_and_differences_run_in_float64():
    """The float32 row of the table, and the finite differences see the inputs cast up to float64."""
    assert GRAD_DEFAULTS[("float32", "float64")] == (1e-6, 1e-4, 1e-5)
    seen = set()

    def f(x):
        seen.add(str(x.dtype))
        return md.sin(x)

    check_grads(f, (t32(X),), order=1)
    assert seen == {"float32", "float64"}


def test_float16_passes_with_default_arguments():
    check_grads(md.sin, (md.tensor(np.asarray(X, dtype=np.float16)),))


def float32_only(x):
    """A function that refuses float64 inputs."""
    if x.dtype != np.float32:
        raise TypeError("float32 only")
    return md.sin(x) * 2.0


def test_a_function_refusing_float64_falls_back_to_float32_differences():
    check_grads(float32_only, (t32(X),))  # defaults of the ("float32", "float32") row
    check_grads(lambda x: md.sin(x.astype("float32")), (t32(X),))  # float32 out of float64 in
    check_grads(lambda x: md.sin(x.astype("float32")), (md.tensor(X),), order=1)  # float64 in, float32 out
    with pytest.raises(GradCheckError):  # a step of 1e-6 in float32 is rounding noise: why cast up
        check_grads(float32_only, (t32(X),), order=1, eps=1e-6, rtol=1e-4, atol=1e-5)
    flipped = make_softplus(jvp_factor=-1.0)
    err = failure(lambda x: flipped(x.astype("float32")), (t32(X),), order=1)
    assert "in float32 (f refused float64)" in str(err) and "rtol=0.02, atol=0.002" in str(err), err


# ----------------------------------------------------------------------------- float32 failures
WRONG = [
    # (make_softplus arguments, modes, rule, order, words of the order)
    (dict(jvp_factor=1.001), ("fwd", "rev"), "JVP", 1, "first order (forward mode)"),
    (dict(vjp_factor=1.001), ("fwd", "rev"), "VJP", 1, "first order (reverse mode)"),
    (dict(vjp_factor=1.001), ("rev",), "VJP", 1, "first order (reverse mode)"),
    (
        dict(detach=("jvp",)),
        ("fwd", "rev"),
        "JVP",
        2,
        "order 2 (the derivative of the JVP, by forward over forward",
    ),
    (
        dict(detach=("vjp",)),
        ("fwd", "rev"),
        "VJP",
        2,
        "order 2 (the derivative of the VJP, by forward over reverse",
    ),
    (
        dict(detach=("vjp",)),
        ("rev",),
        "VJP",
        2,
        "order 2 (the derivative of the VJP, by reverse over reverse",
    ),
]


@pytest.mark.parametrize(
    "wrong, modes, rule, order, words", WRONG, ids=[f"{w[2]}{w[3]}-{w[1]}" for w in WRONG]
)
def test_a_wrong_float32_rule_fails_and_says_what_where_and_by_how_much(wrong, modes, rule, order, words):
    prim = make_softplus(**wrong)
    if order == 2:
        check_grads(prim, (t32(X),), order=1, modes=modes)  # first derivatives are right
    err = failure(prim, (t32(X),), modes=modes)
    assert isinstance(err, AssertionError)
    assert (err.primitive, err.rule, err.order, err.argnum, err.leaf) == (
        "softplus",
        rule,
        order,
        0,
        "args[0]",
    )
    (e,) = err.element
    msg = str(err)
    for words_in_msg in (
        "check_grads(md.primitive 'softplus')",
        f"the {rule} rule is wrong at {words}",
        "argument 0 (args[0])",
        f"input element ({e},)",
        f"got {err.got!r}, want {err.want!r}",
        "from float32 inputs cast up",
    ):
        assert words_in_msg in msg, (words_in_msg, msg)
    slope = sigmoid(np.float32(X[e]))
    if order == 2:  # the detached rule has no second derivative; the true one does
        assert err.got == 0.0 and abs(err.want) > 1e-3, msg
    elif rule == "JVP":  # the column of a basis tangent: σ(x_e)·1.001 against σ(x_e)
        assert math.isclose(err.want, slope, rel_tol=1e-6) and math.isclose(
            err.got, 1.001 * slope, rel_tol=1e-4
        )
        assert f"at output element ({e},)" in msg, msg
    else:  # (Jᵀu)_e = u_e·σ(x_e)·1.001 against ⟨u, FD along e⟩ = u_e·σ(x_e)
        assert math.isclose(err.got / err.want, 1.001, rel_tol=1e-4), msg


def test_the_failing_argument_and_pytree_leaf_are_named():
    wrong = make_mul_sin(dy_factor=1.001)
    x, y = md.tensor([0.5, -1.5, 2.0]), md.tensor([0.3, 1.1, -0.4])
    check_grads(wrong, (x, y), modes="fwd")  # the JVP rule is right
    err = failure(wrong, (x, y))
    assert (err.primitive, err.rule, err.argnum, err.leaf) == ("mul_sin", "VJP", 1, "args[1]")
    (e,) = err.element
    assert math.isclose(err.got / err.want, 1.001, rel_tol=1e-6), err
    assert "argument 1 (args[1])" in str(err)
    err = failure(lambda p, scale: wrong(p["x"], p["y"]) * scale, ({"x": x, "y": y}, 2))
    assert (err.primitive, err.argnum, err.leaf) == ("mul_sin", 0, "args[0]['y']")
    assert "md.primitive 'mul_sin', the one md.primitive among those it calls: mul_sin, multiply" in str(err)


def test_the_output_leaf_of_a_failing_jvp_is_named():
    wrong = make_softplus(jvp_factor=1.001)
    err = failure(lambda x: (md.sin(x), {"s": wrong(x)}), (md.tensor(X),))
    assert err.rule == "JVP" and "of output leaf 1" in str(err), err


def test_the_primitive_is_named_for_builtins_and_left_open_when_several_user_primitives_are_called():
    sin_bug = Mutation("sin ×1.001", md.primitives.REGISTRY["sin"], "both", scaled(1.001))
    with md.testing.mutated(sin_bug):
        err = failure(md.sin, (md.tensor(X),), order=1)
        assert err.primitive == "sin" and "check_grads(sin, primitive 'sin')" in str(err), err
    a, b = make_softplus(jvp_factor=1.001, name="a"), make_softplus(name="b")
    err = failure(lambda x: a(x) + b(x), (md.tensor(X),), order=1)
    assert err.primitive is None and "calls a, b, add" in str(err), err


def test_an_order_three_failure_says_which_derivative():
    assert order_text(("JVP", "VJP"), "rev") == (
        "JVP",
        3,
        "order 3 (the derivative of the VJP of the JVP, by reverse over reverse over forward mode)",
    )


def test_a_nan_from_a_rule_fails():
    @md.primitive
    def nan_vjp(x):
        return x * 2.0

    nan_vjp.defjvp(lambda primals, tangents: tangents[0] * 2.0)
    nan_vjp.defvjp(lambda g, out, x: (g * float("nan"),))
    err = failure(nan_vjp, (md.tensor(X),), order=1)
    assert err.rule == "VJP" and math.isnan(err.got), err


def test_beyond_the_localize_limit_the_element_is_not_searched(monkeypatch):
    monkeypatch.setattr(checks_module, "LOCALIZE_LIMIT", 2)
    err = failure(make_softplus(jvp_factor=1.001), (md.tensor(X),), order=1)
    assert err.element is None and "along a random direction" in str(err), err
    err = failure(make_softplus(vjp_factor=1.001), (md.tensor(X),), order=1)
    assert err.element is None and "the projections" in str(err), err


def test_check_grads_catches_float32_mutations_of_a_user_rule():
    """Test the tester: a float32 rule off by 1e-3, in either mode, is caught with the defaults."""
    prim = make_softplus()
    check = lambda: check_grads(prim, (t32(X),), order=1)
    for rule in ("jvp", "vjp"):
        result = check_mutation(Mutation(f"softplus {rule} ×1.001", prim, rule, scaled(1.001)), check)
        assert result.caught and f"the {rule.upper()} rule is wrong" in result.message, result


# ----------------------------------------------------------------------------- static arguments
def test_non_floating_leaves_are_static_and_passed_unchanged():
    marker = object()
    idx = md.tensor(np.array([2, 0]))

    def f(x, n, mode, nothing, index, obj):
        assert n == 3 and mode == "cube" and nothing is None and index is idx and obj is marker
        return (x**n)[index]

    check_grads(f, (md.tensor(X), 3, "cube", None, idx, marker))


def test_static_argnums_make_floats_and_tensors_static():
    w = md.tensor([1.0, 2.0, 3.0, 4.0])

    def f(x, temperature, weights):
        assert isinstance(temperature, float) and weights is w  # never a traced tensor
        return md.sin(x / math.exp(temperature)) * weights.numpy()

    check_grads(f, (md.tensor(X), 0.5, w), static_argnums=(1, 2))
    check_grads(f, (md.tensor(X), 0.5, w), static_argnums=(-2, -1))
    seen = []
    check_grads(lambda x, c: (seen.append(type(c)), x * c)[1], (md.tensor(X), 0.5), order=1)
    assert md.Tensor in seen  # not static: a Python float is differentiated


@pytest.mark.parametrize(
    "static_argnums, error, words",
    [
        (2, ValueError, "static_argnums names argument 2, but args has 2 argument(s)"),
        ((-3,), ValueError, "static_argnums names argument -3"),
        ("1", TypeError, "static_argnums must be an int or a tuple of ints, got '1'"),
        ((True,), TypeError, "static_argnums must be an int or a tuple of ints"),
        ((0, 1), ValueError, "args hold no floating tensor to differentiate"),
    ],
)
def test_bad_static_argnums_are_refused(static_argnums, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        check_grads(lambda x, c: x * c, (md.tensor(X), 0.5), static_argnums=static_argnums)


# ----------------------------------------------------------------------------- refusals
def test_a_bare_tensor_or_array_as_args_is_refused():
    want = (
        "check_grads: args must be a tuple, one entry per argument of f "
        "(got Tensor; write check_grads(f, (x,)))"
    )
    with pytest.raises(TypeError) as info:
        check_grads(md.sin, md.tensor(X))
    assert str(info.value) == want
    with pytest.raises(TypeError, match="got ndarray"):
        check_grads(md.sin, np.asarray(X))
    check_grads(md.sin, [md.tensor(X)], order=1)  # a list is a sequence of arguments too


@pytest.mark.parametrize(
    "kw, error, words",
    [
        (dict(modes=("fwd", "bwd")), ValueError, "modes must be drawn from"),
        (dict(modes=()), ValueError, "modes must be drawn from"),
        (dict(order=0), ValueError, "order must be an int >= 1, got 0"),
        (dict(order=True), ValueError, "order must be an int >= 1, got True"),
        (dict(order=1.5), ValueError, "order must be an int >= 1, got 1.5"),
        (dict(eps=-1e-6), ValueError, "eps must be a positive finite number or None, got -1e-06"),
        (dict(rtol=float("inf")), ValueError, "rtol must be a positive finite number"),
        (dict(atol="1e-6"), ValueError, "atol must be a positive finite number"),
        (dict(seed="0"), TypeError, "check_grads: rng must be"),
    ],
)
def test_bad_settings_are_refused(kw, error, words):
    with pytest.raises(error, match=words):
        check_grads(md.sin, (md.tensor(X),), **kw)


def test_an_integer_only_argument_list_is_refused():
    with pytest.raises(ValueError, match="args hold no floating tensor"):
        check_grads(lambda n: n * 2, (3,))


# ----------------------------------------------------------------------------- the registry walk
def test_user_primitives_are_listed_by_all_primitives_while_alive():
    import gc

    prim = make_softplus(name="listed_softplus")
    assert prim in md.testing.all_primitives() and prim in md.primitives.all_primitives(user=True)
    assert prim not in md.testing.all_primitives(user=False)
    assert all(p.kind != "custom" for p in md.testing.all_primitives(user=False))
    del prim
    gc.collect()
    assert "listed_softplus" not in {p.name for p in md.testing.all_primitives()}


def test_the_battery_runs_on_user_primitives_found_by_the_walk_as_on_builtins():
    right, wrong = make_softplus(name="walk_right"), make_softplus(vjp_factor=1.001, name="walk_wrong")
    found = {p.name: p for p in md.testing.all_primitives() if p.name in ("tanh", "walk_right", "walk_wrong")}
    assert found["walk_right"] is right and found["walk_wrong"] is wrong
    for name in ("tanh", "walk_right"):
        md.testing.check_primitive(found[name], [None], max_examples=4, seed=0)
    with pytest.raises(AssertionError, match=r"check_primitive\(softplus, md.primitive 'walk_wrong'\)"):
        md.testing.check_primitive(found["walk_wrong"], [None], max_examples=4, seed=0)
