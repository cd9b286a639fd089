"""The Tensor object as a NumPy user meets it: ndarray methods and operators, conversions that would
lose a derivative, in-place updates and the functional ``x.at[index]`` update.

Values are compared with NumPy (float64, rtol 1e-12 unless stated); derivatives with central finite
differences through ``md.testing.check_grads`` (float64, its default rtol 1e-5 / atol 1e-6, first and
second order, forward and reverse mode).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import minidiff as md
from minidiff.errors import ShapeError, TapeError, TracerError
from minidiff.testing import check_grads

RTOL = 1e-12


def _x(shape=(3, 4), seed=0, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def _close(actual, expected, rtol=RTOL):
    actual = actual.numpy() if isinstance(actual, md.Tensor) else np.asarray(actual)
    assert actual.shape == np.shape(expected), (actual.shape, np.shape(expected))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-14)


# ----------------------------------------------------------------------------- ndarray methods
# (name, call on a tensor or an array alike); every entry is differentiable in float64
DIFF_METHODS = {
    "ravel": lambda a: a.ravel(),
    "flatten": lambda a: a.flatten(),
    "reshape-args": lambda a: a.reshape(2, 6),
    "reshape-tuple": lambda a: a.reshape((4, -1)),
    "squeeze": lambda a: a.reshape(1, 3, 1, 4).squeeze(),
    "squeeze-axis": lambda a: a.reshape(3, 1, 4).squeeze(axis=1),
    "transpose": lambda a: a.transpose(),
    "transpose-axes": lambda a: a.reshape(3, 2, 2).transpose(2, 0, 1),
    "T": lambda a: a.T,
    "swapaxes": lambda a: a.swapaxes(0, 1),
    "sum": lambda a: a.sum(),
    "sum-axis-keepdims": lambda a: a.sum(axis=1, keepdims=True),
    "sum-dtype": lambda a: a.sum(axis=0, dtype="float64"),
    "mean": lambda a: a.mean(axis=(0, 1)),
    "mean-keepdims": lambda a: a.mean(axis=0, keepdims=True),
    "var": lambda a: a.var(axis=1),
    "var-ddof": lambda a: a.var(ddof=1, keepdims=True),
    "std": lambda a: a.std(axis=0),
    "std-ddof": lambda a: a.std(axis=1, ddof=1),
    "max": lambda a: a.max(),
    "max-axis": lambda a: a.max(axis=1, keepdims=True),
    "min": lambda a: a.min(axis=0),
    "prod": lambda a: a.prod(axis=1),
    "cumsum": lambda a: a.cumsum(),
    "cumsum-axis": lambda a: a.cumsum(axis=1),
    "clip": lambda a: a.clip(-1.0, 1.0),
    "clip-min-only": lambda a: a.clip(min=-0.5),
    "dot": lambda a: a.dot(a.T),
    "astype": lambda a: a.astype("float64"),
    "copy": lambda a: a.copy(),
    "repeat": lambda a: a.repeat(2, axis=1),
    "repeat-flat": lambda a: a.repeat(3),
    "repeat-counts": lambda a: a.repeat([1, 0, 2], axis=0),
    "conj": lambda a: a.conj(),
    "real": lambda a: a.real,
    "abs": lambda a: abs(a),
    "pos": lambda a: +a,
    "neg": lambda a: -a,
    "mod-number": lambda a: a % 0.75,
    "rmod-number": lambda a: 5.0 % (a + 3.0),
    "mod-tensor": lambda a: a % (a * 0 + 0.7),
    "matmul": lambda a: a @ a.T,
}
# values chosen away from the jumps of % (x / y never within 1e-3 of an integer here)
SEED_AWAY_FROM_JUMPS = 3


@pytest.mark.parametrize("name", sorted(DIFF_METHODS))
def test_method_values_match_numpy(name):
    fn = DIFF_METHODS[name]
    a = _x(seed=SEED_AWAY_FROM_JUMPS)
    _close(fn(md.tensor(a)), fn(a))


@pytest.mark.parametrize("name", sorted(DIFF_METHODS))
def test_method_derivatives_match_finite_differences(name):
    fn = DIFF_METHODS[name]
    a = _x(seed=SEED_AWAY_FROM_JUMPS)
    if name.startswith(("max", "min")):
        a = a + np.arange(a.size).reshape(a.shape) * 1e-2  # no ties
    check_grads(fn, (md.tensor(a),), order=2, modes=("fwd", "rev"))


def test_remainder_jumps_are_away_from_the_checked_points():
    a = _x(seed=SEED_AWAY_FROM_JUMPS)
    for y in (0.75, 0.7):
        q = a / y
        assert np.min(np.abs(q - np.round(q))) > 1e-3
    q = 5.0 / (a + 3.0)
    assert np.min(np.abs(q - np.round(q))) > 1e-3


NONDIFF_METHODS = {
    "argmax": lambda a: a.argmax(),
    "argmax-axis-keepdims": lambda a: a.argmax(axis=1, keepdims=True),
    "argmin": lambda a: a.argmin(axis=0),
    "argmin-keepdims": lambda a: a.argmin(keepdims=True),
    "any": lambda a: (a > 1).any(),
    "any-axis": lambda a: (a > 1).any(axis=0, keepdims=True),
    "all": lambda a: (a > -1.9).all(axis=1),
    "floordiv": lambda a: a // 0.5,
    "rfloordiv": lambda a: 3.0 // (a + 3.0),
    "divmod-0": lambda a: divmod(a, 0.6)[0],
    "divmod-1": lambda a: divmod(a, 0.6)[1],
    "rdivmod-1": lambda a: divmod(4.0, a + 3.0)[1],
    "astype-int": lambda a: a.astype("int64"),
    "imag": lambda a: a.imag,
}


@pytest.mark.parametrize("name", sorted(NONDIFF_METHODS))
def test_nondifferentiable_method_values_match_numpy(name):
    fn = NONDIFF_METHODS[name]
    a = _x(seed=SEED_AWAY_FROM_JUMPS)
    expected = fn(a)
    got = fn(md.tensor(a))
    assert got.dtype == np.asarray(expected).dtype
    _close(got, expected)


def test_floor_divide_output_carries_no_derivative_in_either_mode():
    x = md.tensor([1.3, -2.4])
    assert md.grad(lambda x: (x // 0.5 * x).sum())(x).tolist() == (x // 0.5).tolist()
    _, t = md.jvp(lambda x: x // 0.5, (x,), (md.ones(2),))
    assert t.tolist() == [0.0, 0.0]


def test_remainder_derivative_in_the_divisor_is_minus_the_quotient():
    x, y = md.tensor([7.3, -7.3]), md.tensor([2.0, 2.0])
    g = md.grad(lambda y: md.remainder(x, y).sum())(y)
    _close(g, -np.floor(np.array([7.3, -7.3]) / 2.0))
    assert md.mod is md.remainder


@pytest.mark.parametrize("x, y", [(7, 2), (-7, 2), (7, -2), (-7, -2), (5, 0), (0, 3)])
def test_integer_floor_divide_and_remainder_are_numpy_s(x, y):
    a, b = np.array([x, x + 1]), np.array([y, y])
    with np.errstate(divide="ignore", invalid="ignore"):
        q, r = np.floor_divide(a, b), np.remainder(a, b)
    tq, tr = divmod(md.tensor(a), md.tensor(b))
    assert tq.dtype == q.dtype and tr.dtype == r.dtype
    assert tq.tolist() == q.tolist() and tr.tolist() == r.tolist()
    if y:
        assert (md.tensor(a) // y).tolist() == (a // y).tolist()
        assert (md.tensor(a) % y).tolist() == (a % y).tolist()


def test_float_floor_divide_and_remainder_by_zero_are_numpy_s():
    """Only integers divide by zero to 0; floats give NumPy's inf/nan (a builtin ``all`` shadowed by
    ``md.all`` once sent floats down the integer path, silently returning 0)."""
    a = np.array([1.0, -1.0, 0.0])
    with np.errstate(divide="ignore", invalid="ignore"):
        q, r = np.floor_divide(a, 0.0), np.remainder(a, 0.0)
        tq, tr = md.tensor(a) // 0.0, md.tensor(a) % 0.0
    np.testing.assert_array_equal(tq.numpy(), q)  # [inf, -inf, nan]
    np.testing.assert_array_equal(tr.numpy(), r)  # [nan, nan, nan]


def test_logical_operators_on_booleans_and_a_clear_error_on_integers():
    a, b = np.array([True, False, True]), np.array([True, True, False])
    ta, tb = md.tensor(a), md.tensor(b)
    for got, want in [(ta & tb, a & b), (ta | tb, a | b), (ta ^ tb, a ^ b), (~ta, ~a), (True ^ ta, True ^ a)]:
        assert got.tolist() == want.tolist()
    for op in (lambda t: t & 1, lambda t: t | t, lambda t: t ^ 2, lambda t: ~t):
        with pytest.raises(TypeError, match="boolean tensors only"):
            op(md.tensor([1, 2]))


def test_item_tolist_len_and_metadata():
    t = md.tensor(_x())
    assert t.nbytes == 96 and t.itemsize == 8
    assert md.tensor([[1.5]]).item() == 1.5 and isinstance(md.tensor([2]).item(), int)
    assert t.tolist() == _x().tolist()
    assert f"{md.tensor(1.23456):.2f}" == "1.23"
    with pytest.raises(ValueError, match="item"):
        t.item()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda t: t.sum(out=np.zeros(())), "out= is not supported"),
        (lambda t: t.max(axis=0, out=np.zeros(4)), "out= is not supported"),
        (lambda t: t.cumsum(out=np.zeros(12)), "out= is not supported"),
        (lambda t: t.dot(t.T, out=np.zeros((3, 3))), "out= is not supported"),
        (lambda t: t.sum(initial=1.0), "initial= is not supported"),
        (lambda t: t.mean(where=np.ones((3, 4), bool)), "where= is not supported"),
        (lambda t: t.reshape(4, 3, order="F"), "only order='C'"),
        (lambda t: t.ravel(order="F"), "only order='C'"),
        (lambda t: t.reshape(), "new shape is required"),
        (lambda t: t.astype("float32", casting="same_kind"), "casting"),
        (lambda t: round(t), "round"),
    ],
)
def test_unsupported_keywords_raise_clearly(call, match):
    with pytest.raises((TypeError, NotImplementedError), match=match):
        call(md.tensor(_x()))


@pytest.mark.parametrize("method", ["sum", "mean", "var", "std", "prod", "cumsum"])
def test_unsupported_accumulator_dtypes_raise(method):
    t = md.tensor(_x())
    with pytest.raises(md.DTypeError, match=rf"{method}: dtype=complex128 is not supported"):
        getattr(t, method)(dtype=complex)
    with pytest.raises(md.DTypeError, match=rf"{method}: unknown dtype='foo'"):
        getattr(t, method)(dtype="foo")
    _close(getattr(t, method)(dtype="float32"), getattr(_x(), method)(dtype="float32"), rtol=1e-6)


def test_repeat_rejects_counts_that_do_not_fit():
    with pytest.raises(ShapeError, match="repeat"):
        md.tensor(_x()).repeat([1, 2], axis=0)


# ----------------------------------------------------------------------------- conversions
CONVERSIONS = {
    "item": lambda x: x.sum().item(),
    "float": lambda x: float(x.sum()),
    "int": lambda x: int(x.sum()),
    "math.sin": lambda x: math.sin(x.sum()),
    "math.exp": lambda x: math.exp(x[0]),
    "np.asarray": lambda x: np.asarray(x),
    "np.array": lambda x: np.array(x),
    "numpy": lambda x: x.numpy(),
    "tolist": lambda x: x.tolist(),
}


def _transforms():
    """Each runs ``g`` (which converts a traced value) inside one transform."""
    x = md.tensor([0.5, 1.5])
    v = md.tensor([1.0, -1.0])

    def scalar(g):
        return lambda x: md.sum(x * x) + g(x)

    return {
        "grad": lambda g: md.grad(scalar(g))(x),
        "jvp": lambda g: md.jvp(scalar(g), (x,), (v,)),
        "vjp": lambda g: md.vjp(scalar(g), x),
        "hvp": lambda g: md.hvp(scalar(g), (x,), (v,)),
        "hvp-rev-over-rev": lambda g: md.hvp(scalar(g), (x,), (v,), mode="rev-over-rev"),
        "hvp-rev-over-fwd": lambda g: md.hvp(scalar(g), (x,), (v,), mode="rev-over-fwd"),
        "jacfwd": lambda g: md.jacfwd(lambda x: x * g(x))(x),
        "jacrev": lambda g: md.jacrev(lambda x: x * g(x))(x),
        "hessian": lambda g: md.hessian(scalar(g))(x),
        "vmap": lambda g: md.vmap(lambda r: r * g(r))(md.tensor([[1.0, 2.0], [3.0, 4.0]])),
        "dual_level": lambda g: _in_dual_level(g, x, v),
    }


def _in_dual_level(g, x, v):
    with md.dual_level():
        return g(md.make_dual(x, v))


@pytest.mark.parametrize("transform", sorted(_transforms()))
@pytest.mark.parametrize("conversion", sorted(CONVERSIONS))
def test_converting_a_traced_value_raises_instead_of_dropping_its_derivative(transform, conversion):
    run = _transforms()[transform]
    match = "inside vmap has no single value" if transform == "vmap" else "lose that derivative"
    with pytest.raises(TracerError, match=match):
        run(CONVERSIONS[conversion])


def test_the_error_says_what_to_use_instead():
    with pytest.raises(TracerError, match=r"float\(\).*math functions.*md\.sin.*\.detach\(\)\.item\(\)"):
        md.grad(lambda x: math.sin(x))(md.tensor(1.0))
    with pytest.raises(TracerError, match=r"np\.asarray.*\.detach\(\)\.numpy\(\)"):
        md.grad(lambda x: md.sum(md.tensor(np.asarray(x))))(md.tensor([1.0]))


def test_detach_reads_a_constant_on_purpose():
    # d/dx [x * c] with c = x.detach().item() read as a constant: c, not 2x
    assert md.grad(lambda x: x * x.detach().item())(md.tensor(3.0)).item() == 3.0
    _, t = md.jvp(lambda x: x * float(x.detach()), (md.tensor(3.0),), (md.tensor(1.0),))
    assert t.item() == 3.0


def test_control_flow_repr_and_format_of_traced_values_work():
    def f(x):
        assert "Taped" in repr(x) or "Dual" in repr(x)
        text = f"{x:.2f}"
        return x * x if x > 0 and text == "2.00" else -x

    assert md.grad(f)(md.tensor(2.0)).item() == 4.0
    assert md.jvp(f, (md.tensor(2.0),), (md.tensor(1.0),))[1].item() == 4.0
    assert md.grad(lambda x: x * 3 if bool(x) else x)(md.tensor(1.0)).item() == 3.0
    assert md.grad(lambda x: x[int(md.tensor(1))] * 2)(md.tensor([1.0, 2.0])).tolist() == [0.0, 2.0]


def test_an_escaped_tracer_cannot_be_read():
    box = []
    md.grad(lambda x: box.append(x * 2) or md.sum(x))(md.tensor([1.0]))
    for read in (lambda t: t.item(), lambda t: np.asarray(t), lambda t: t.numpy(), lambda t: float(t)):
        with pytest.raises(TracerError, match="used after that transform returned"):
            read(box[0])
    assert "Taped" in repr(box[0])


def test_tape_style_reads_give_constants():
    """``requires_grad=True`` tensors read as constants (item as in PyTorch; numpy read-only)."""
    w = md.tensor([3.0], requires_grad=True)
    loss = md.sum(w * w.item())  # item() is a constant: d loss / dw = 3, not 2w = 6
    loss.backward()
    assert w.grad.tolist() == [3.0]
    assert float(w) == 3.0 and int(w) == 3 and w.tolist() == [3.0] and loss.item() == 9.0
    a = w.numpy()
    assert a.tolist() == [3.0] and not a.flags.writeable
    b = np.asarray(w)
    assert not b.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        a[0] = 100.0
    assert w.tolist() == [3.0]


def test_numpy_of_a_plain_tensor_is_read_only_and_np_array_copies():
    t = md.tensor([1.0, 2.0])
    a = t.numpy()
    with pytest.raises(ValueError, match="read-only"):
        a[0] = 100.0
    c = np.array(t)  # copy=True: a writeable copy
    c[0] = 100.0
    assert t.tolist() == [1.0, 2.0] and c.flags.writeable
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    d = t.detach().numpy()
    assert not d.flags.writeable


# ----------------------------------------------------------------------------- in-place operators
INPLACE = {
    "+=": lambda x: x.__iadd__(1.0),
    "-=": lambda x: x.__isub__(1.0),
    "*=": lambda x: x.__imul__(2.0),
    "/=": lambda x: x.__itruediv__(2.0),
    "//=": lambda x: x.__ifloordiv__(2.0),
    "%=": lambda x: x.__imod__(2.0),
    "**=": lambda x: x.__ipow__(2.0),
    "@=": lambda x: x.__imatmul__(md.eye(2)),
}


@pytest.mark.parametrize("symbol", sorted(INPLACE))
def test_inplace_on_a_requires_grad_leaf_raises(symbol):
    w = md.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TapeError, match=rf"x {re.escape(symbol)} v.*requires_grad.*x\.grad would stay None"):
        INPLACE[symbol](w)
    with md.no_grad(), pytest.raises(TapeError, match="assign_"):
        INPLACE[symbol](w)


def test_augmented_assignment_statement_on_a_leaf_raises():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TapeError, match=r"y = x \+ v"):
        w += 1
    assert w.is_leaf and w.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("symbol", sorted(INPLACE))
def test_inplace_on_values_is_a_new_value(symbol):
    a = np.array([1.5, 2.5])
    t = md.tensor(a)
    got = INPLACE[symbol](t)
    want = INPLACE[symbol](a.copy()) if symbol != "@=" else a @ np.eye(2)
    _close(got, want)
    assert got is not t and t.tolist() == [1.5, 2.5]  # the old value is untouched


def test_inplace_on_non_leaves_and_inside_transforms_keeps_the_derivative():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    y = w * 2
    y += w  # a non-leaf: y is rebound to y + w, the gradient still reaches w
    y *= w
    md.sum(y).backward()
    assert w.grad.tolist() == [6.0, 12.0]  # d/dw 3 w^2

    def f(x):
        x += 1.0  # inside a transform: rebinding is the functional update
        x **= 2
        return md.sum(x)

    assert md.grad(f)(md.tensor([1.0, 2.0])).tolist() == [4.0, 6.0]
    assert md.jvp(f, (md.tensor([1.0, 2.0]),), (md.tensor([1.0, 0.0]),))[1].item() == 4.0


def test_boolean_inplace_operators():
    m = md.tensor([True, False])
    m &= md.tensor([True, True])
    m |= md.tensor([False, True])
    m ^= md.tensor([True, False])
    assert m.tolist() == [False, True]


# ----------------------------------------------------------------------------- item assignment, .at
def test_item_assignment_raises_pointing_to_at():
    x = md.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match=r"x = x\.at\[index\]\.set\(value\)"):
        x[0] = 1.0
    w = md.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="item assignment"):
        w[0] = 1.0

    def f(x):
        x[0] = 0.0
        return md.sum(x)

    with pytest.raises(TypeError, match=r"\.at\["):
        md.grad(f)(md.tensor([1.0, 2.0]))


# (index, values shape) pairs, basic and advanced
AT_CASES = {
    "int": (1, ()),
    "slice": ((slice(None), slice(1, 3)), (3, 2)),
    "broadcast-row": ((slice(0, 2),), (4,)),
    "int-array": ((np.array([2, 0]),), (2, 4)),
    "int-arrays-pair": ((np.array([0, 2, 1]), np.array([3, 1, 0])), (3,)),
    "mask": (np.array([True, False, True]), (2, 4)),
    "ellipsis": ((Ellipsis, 0), (3,)),
}


def _np_update(a, index, v, op):
    out = a.copy()
    if op == "set":
        out[index] = v
    elif op == "add":
        np.add.at(out, index, v)
    elif op == "multiply":
        out[index] = out[index] * v
    elif op == "min":
        out[index] = np.minimum(out[index], v)
    else:
        out[index] = np.maximum(out[index], v)
    return out


@pytest.mark.parametrize("op", ["set", "add", "multiply", "min", "max"])
@pytest.mark.parametrize("case", sorted(AT_CASES))
def test_at_updates_match_numpy(case, op):
    index, vshape = AT_CASES[case]
    a, v = _x(seed=1), _x(vshape, seed=2)
    x = md.tensor(a)
    got = getattr(x.at[index], op)(md.tensor(v))
    _close(got, _np_update(a, index, v, op))
    assert x.tolist() == a.tolist()  # x unchanged
    _close(x.at[index].get(), a[index])


@pytest.mark.parametrize("op", ["set", "add", "multiply"])
@pytest.mark.parametrize("case", sorted(AT_CASES))
def test_at_updates_are_differentiable_in_x_and_values(case, op):
    index, vshape = AT_CASES[case]
    a, v = _x(seed=1), _x(vshape, seed=2)
    check_grads(lambda x, v: getattr(x.at[index], op)(v), (md.tensor(a), md.tensor(v)), order=2)


@pytest.mark.parametrize("op", ["min", "max"])
def test_at_min_max_are_differentiable(op):
    a, v = _x(seed=1), _x((2, 4), seed=2)  # no ties between a and v
    check_grads(lambda x, v: getattr(x.at[np.array([0, 2])], op)(v), (md.tensor(a), md.tensor(v)))


def test_at_add_accumulates_repeated_indices_and_its_gradient():
    x = md.zeros(3)
    v = md.tensor([1.0, 2.0, 5.0])
    idx = md.tensor([0, 0, 2])
    assert x.at[idx].add(v).tolist() == [3.0, 0.0, 5.0]
    g = md.grad(lambda v: md.sum(x.at[idx].add(v) * md.tensor([1.0, 10.0, 100.0])))(v)
    assert g.tolist() == [1.0, 1.0, 100.0]


def test_at_set_with_repeated_indices_raises():
    with pytest.raises(ValueError, match="more than once"):
        md.zeros(3).at[md.tensor([1, 1])].set(md.tensor([1.0, 2.0]))


def test_at_values_that_do_not_broadcast_raise():
    with pytest.raises(ValueError, match=r"do not broadcast to the indexed shape \(2,\)"):
        md.zeros(4).at[:2].set(md.ones(3))


def test_at_in_the_tape_style_and_under_vmap():
    w = md.tensor([1.0, 2.0, 3.0], requires_grad=True)
    u = md.tensor(5.0, requires_grad=True)
    y = w.at[1].set(u * u)  # [w0, u^2, w2]
    md.sum(y * md.tensor([1.0, 2.0, 3.0])).backward()
    assert w.grad.tolist() == [1.0, 0.0, 3.0] and u.grad.item() == 20.0
    assert w.is_leaf and w.tolist() == [1.0, 2.0, 3.0]
    rows = md.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = md.vmap(lambda r, s: r.at[0].add(s))(rows, md.tensor([10.0, 20.0]))
    assert out.tolist() == [[11.0, 2.0], [23.0, 4.0]]
    jac = md.jacrev(lambda x: x.at[1:].set(x[0] * 2.0))(md.tensor([1.0, 2.0, 3.0]))
    _close(jac, np.array([[1.0, 0, 0], [2.0, 0, 0], [2.0, 0, 0]]))


def test_at_casts_values_to_the_dtype_of_x():
    assert md.zeros(2, dtype="float32").at[0].set(md.tensor(1.5)).dtype == np.float32
    assert md.tensor([1, 2]).at[0].add(1).tolist() == [2, 2]


def test_astype_of_a_python_number_gives_a_tensor():
    """md.astype(3.0, "float32") used to fail with AttributeError ('float' has no dtype): numbers
    passed through unconverted (found by the type checker)."""
    t = md.astype(3.0, "float32")
    assert isinstance(t, md.Tensor) and t.dtype == np.float32 and t.item() == 3.0
    assert md.astype([1, 2], "float64").tolist() == [1.0, 2.0]
