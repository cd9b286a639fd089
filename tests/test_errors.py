"""One test per kind of bad input: the exception type, and a message naming the operation and the
shapes, dtypes or devices involved.  Nothing may be mutated when an exception is raised."""

from __future__ import annotations

import re

import numpy as np
import pytest

import minidiff as md
from minidiff import levels
from minidiff.modes.reverse import nodes_created


def raises(exc, *fragments):
    """``pytest.raises(exc)`` whose message must contain every fragment (matched literally)."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


@pytest.fixture(autouse=True)
def _levels_are_restored():
    """Whatever a test raises, no transform level may stay open afterwards."""
    depth = levels.depth()
    yield
    assert levels.depth() == depth


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "op, call",
    [
        ("add", lambda a, b: a + b),
        ("subtract", lambda a, b: a - b),
        ("multiply", lambda a, b: md.multiply(a, b)),
        ("divide", lambda a, b: a / b),
        ("maximum", lambda a, b: md.maximum(a, b)),
    ],
)
def test_incompatible_broadcast_shapes(op, call):
    a, b = md.ones((2, 3)), md.ones((4,))
    with raises(md.ShapeError, op, "[2, 3]", "[4]"):
        call(a, b)


def test_incompatible_broadcast_shapes_in_where():
    with raises(md.ShapeError, "where", "[2]", "[3]", "[4]"):
        md.where(md.ones(2) > 0, md.ones(3), md.ones(4))


@pytest.mark.parametrize(
    "call",
    [
        lambda a, b: a @ b,
        lambda a, b: md.matmul(a, b),
    ],
)
def test_matmul_inner_dimension_mismatch(call):
    with raises(md.ShapeError, "matmul", "(2, 3)", "(4, 5)", "3 != 4"):
        call(md.ones((2, 3)), md.ones((4, 5)))


def test_dot_of_vectors_of_different_lengths():
    with raises(md.ShapeError, "(3,)", "(4,)"):
        md.dot(md.ones(3), md.ones(4))


def test_einsum_size_mismatch():
    with raises(md.ShapeError, "einsum", "'j'"):
        md.einsum("ij,jk->ik", md.ones((2, 3)), md.ones((2, 3)))


@pytest.mark.parametrize(
    "op, axis, call",
    [
        ("sum", 2, lambda x: md.sum(x, axis=2)),
        ("sum", -3, lambda x: x.sum(axis=-3)),
        ("mean", 5, lambda x: md.mean(x, axis=5)),
        ("max", 2, lambda x: md.max(x, axis=2)),
        ("min", 2, lambda x: md.min(x, axis=(0, 2))),
        ("prod", 2, lambda x: md.prod(x, axis=2)),
        ("var", 2, lambda x: md.var(x, axis=2)),
        ("logsumexp", 2, lambda x: md.logsumexp(x, axis=2)),
        ("cumsum", 2, lambda x: md.cumsum(x, axis=2)),
        ("flip", 2, lambda x: md.flip(x, axis=2)),
        ("concatenate", 2, lambda x: md.concatenate([x, x], axis=2)),
        ("concatenate", -3, lambda x: md.concatenate([x, x], axis=-3)),
        ("stack", 4, lambda x: md.stack([x, x], axis=4)),  # NumPy's stack counts the new axis
        ("split", 3, lambda x: md.split(x, 2, axis=3)),
        ("swapaxes", 3, lambda x: md.swapaxes(x, 0, 3)),
        ("moveaxis", 3, lambda x: md.moveaxis(x, 3, 0)),
    ],
)
def test_axis_out_of_range(op, axis, call):
    x = md.ones((2, 3))
    with raises(md.ShapeError, f"{op}:", f"axis {axis} ", "out of range", "dimensions"):
        call(x)


def test_concatenate_shapes_that_differ_outside_the_axis():
    with raises(md.ShapeError, "concatenate", "(2, 3)", "(3, 3)"):
        md.concatenate([md.ones((2, 3)), md.ones((3, 3))], axis=1)


def test_reshape_to_a_different_size():
    with raises(md.ShapeError, "reshape", "(2, 3)", "(4,)"):
        md.reshape(md.ones((2, 3)), (4,))


def test_a_failing_op_records_nothing_on_the_tape():
    x = md.ones((2, 3), requires_grad=True)
    recorded = nodes_created()
    with pytest.raises(md.ShapeError):
        x + md.ones(4)
    with pytest.raises(md.ShapeError):
        x @ md.ones((4, 2))
    assert nodes_created() == recorded


# ----------------------------------------------------------------------------- differentiable inputs
INT_OR_BOOL = [
    pytest.param(lambda: md.tensor([1, 2]), "int64", id="int64"),
    pytest.param(lambda: md.tensor([1, 2], dtype="int32"), "int32", id="int32"),
    pytest.param(lambda: md.tensor([True, False]), "bool", id="bool"),
]


def _int_input_calls():
    f = lambda x: md.sum(x * x)
    return [
        ("jvp", lambda x: md.jvp(f, (x,), (x,))),
        ("vjp", lambda x: md.vjp(f, x)),
        ("grad", lambda x: md.grad(f)(x)),
        ("grad", lambda x: md.value_and_grad(f)(x)),
        ("grad", lambda x: md.grad(lambda a, b: md.sum(a * b), argnums=(0, 1))(md.ones(2), x)),
        ("jacfwd", lambda x: md.jacfwd(f)(x)),
        ("jacrev", lambda x: md.jacrev(f)(x)),
        ("hessian", lambda x: md.hessian(f)(x)),
        ("hvp", lambda x: md.hvp(f, (x,), (x,))),
        ("requires_grad", lambda x: x.requires_grad_()),
        ("requires_grad", lambda x: md.tensor(x.numpy(), requires_grad=True)),
    ]


@pytest.mark.parametrize("make, dtype", INT_OR_BOOL)
@pytest.mark.parametrize("op, call", _int_input_calls(), ids=[c[0] for c in _int_input_calls()])
def test_integer_or_boolean_differentiable_input(op, call, make, dtype):
    x = make()
    before = x.numpy().copy()
    with raises(md.DTypeError, f"{op}:", dtype, "(2,)"):
        call(x)
    np.testing.assert_array_equal(x.numpy(), before)


@pytest.mark.parametrize("make, dtype", INT_OR_BOOL)
def test_integer_or_boolean_input_to_make_dual(make, dtype):
    with md.dual_level():
        with raises(md.DTypeError, "make_dual", dtype):
            md.make_dual(make(), md.ones(2))


def test_integer_python_scalar_to_grad():
    with raises(md.DTypeError, "grad", "int"):
        md.grad(md.sin)(1)


# ----------------------------------------------------------------------------- tangents and cotangents
def test_jvp_tangent_of_the_wrong_shape():
    with raises(md.ShapeError, "jvp", "(4,)", "(3,)"):
        md.jvp(md.sin, (md.ones(3),), (md.ones(4),))


def test_jvp_tangent_of_the_wrong_dtype():
    with raises(md.DTypeError, "jvp", "float32", "float64"):
        md.jvp(md.sin, (md.ones(3),), (md.ones(3, dtype="float32"),))


def test_jvp_tangents_of_the_wrong_structure():
    with raises(md.ShapeError, "jvp", "2 primals", "1 tangents"):
        md.jvp(lambda x, y: x * y, (md.ones(2), md.ones(2)), (md.ones(2),))
    with raises(md.ShapeError, "jvp", "structure"):
        md.jvp(lambda p: p[0], ((md.ones(2), md.ones(2)),), ([md.ones(2), md.ones(2)],))


def test_vectorized_jvp_tangent_of_the_wrong_shape():
    with raises(md.ShapeError, "jvp", "(4,)", "(3,)"):
        md.jvp(md.sin, (md.ones(3),), (md.ones((2, 4)),), vectorized=True)


def test_make_dual_tangent_of_the_wrong_shape_or_dtype():
    with md.dual_level():
        with raises(md.ShapeError, "make_dual", "(2,)", "(3,)"):
            md.make_dual(md.ones(3), md.ones(2))
        with raises(md.DTypeError, "make_dual", "float32", "float64"):
            md.make_dual(md.ones(3), md.ones(3, dtype="float32"))


@pytest.mark.parametrize("mode", ["fwd-over-rev", "rev-over-fwd", "rev-over-rev"])
def test_hvp_tangent_of_the_wrong_shape_or_dtype(mode):
    f = lambda x: md.sum(x * x)
    with raises(md.ShapeError, "hvp", "(4,)", "(3,)"):
        md.hvp(f, (md.ones(3),), (md.ones(4),), mode=mode)
    with raises(md.DTypeError, "hvp", "float32", "float64"):
        md.hvp(f, (md.ones(3),), (md.ones(3, dtype="float32"),), mode=mode)


def test_vjp_cotangent_of_the_wrong_shape_or_dtype():
    _, back = md.vjp(md.sin, md.ones(3))
    with raises(md.ShapeError, "vjp_fn", "(4,)", "(3,)"):
        back(md.ones(4))
    with raises(md.DTypeError, "vjp_fn", "float32", "float64"):
        back(md.ones(3, dtype="float32"))
    np.testing.assert_allclose(back(md.ones(3))[0].numpy(), np.cos(np.ones(3)))  # still usable


# ----------------------------------------------------------------------------- devices
@pytest.mark.parametrize(
    "op, call",
    [
        ("add", lambda a, b: a + b),
        ("matmul", lambda a, b: md.reshape(a, (1, 3)) @ md.reshape(b, (3, 1))),
        ("concatenate", lambda a, b: md.concatenate([a, b])),
        ("where", lambda a, b: md.where(a > 0, a, b)),
    ],
)
def test_tensors_from_two_devices_in_one_op(fake_device, op, call):
    a, b = md.ones(3), md.ones(3).to("fake")
    assert b.device is fake_device
    with raises(md.DeviceError, op, "cpu", "fake"):
        call(a, b)


def test_mixing_devices_under_a_transform(fake_device):
    w = md.ones(3).to("fake")
    with raises(md.DeviceError, "multiply", "cpu", "fake"):
        md.grad(lambda x: md.sum(x * w))(md.ones(3))
    with raises(md.DeviceError, "multiply", "cpu", "fake"):
        md.jvp(lambda x: x * w, (md.ones(3),), (md.ones(3),))


def test_tangent_on_another_device(fake_device):
    with raises(md.DeviceError, "jvp", "cpu", "fake"):
        md.jvp(md.sin, (md.ones(3),), (md.ones(3).to("fake"),))


# ----------------------------------------------------------------------------- the tape
def test_backward_on_a_non_scalar_without_a_cotangent():
    x = md.ones(3, requires_grad=True)
    y = x * 2
    with raises(md.ShapeError, "backward", "(3,)", "cotangent"):
        y.backward()
    assert x.grad is None
    y.backward(md.ones(3))  # the tape was not consumed by the failed call
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0, 2.0])


def test_backward_with_a_cotangent_of_the_wrong_shape_or_dtype():
    x = md.ones(3, requires_grad=True)
    y = x * 2
    with raises(md.ShapeError, "backward", "(4,)", "(3,)"):
        y.backward(md.ones(4))
    with raises(md.DTypeError, "backward", "float32", "float64"):
        y.backward(md.ones(3, dtype="float32"))
    assert x.grad is None


def test_second_backward_through_a_freed_tape():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    y = md.sum(md.exp(x))
    y.backward()
    grad_before = x.grad.numpy().copy()
    with raises(md.TapeError, "backward", "freed", "retain_graph=True"):
        y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), grad_before)
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])


def test_backward_of_a_tensor_that_needs_no_grad():
    with raises(md.TapeError, "backward", "requires_grad=True"):
        md.sum(md.ones(3)).backward()


# ----------------------------------------------------------------------------- non-scalar functions
def test_grad_of_a_non_scalar_function():
    x = md.ones(3)
    with raises(md.ShapeError, "grad", "scalar", "(3,)"):
        md.grad(lambda x: x * 2)(x)
    with raises(md.ShapeError, "grad", "scalar", "(3,)"):
        md.value_and_grad(lambda x: x * 2)(x)
    np.testing.assert_array_equal(x.numpy(), np.ones(3))


def test_grad_with_argnums_out_of_range():
    with pytest.raises(ValueError, match="argnums"):
        md.grad(lambda x: md.sum(x), argnums=1)(md.ones(2))


def test_has_aux_needs_a_pair():
    with pytest.raises(TypeError, match="has_aux"):
        md.grad(lambda x: md.sum(x), has_aux=True)(md.ones(2))


# ----------------------------------------------------------------------------- escaped tracers
def _escape(transform):
    box = []

    def f(x):
        box.append(x * 2)
        return md.sum(x)

    transform(f)
    return box[0]


@pytest.mark.parametrize(
    "name, transform",
    [
        ("reverse", lambda f: md.grad(f)(md.ones(3))),
        ("reverse", lambda f: md.vjp(f, md.ones(3))),
        ("forward", lambda f: md.jvp(f, (md.ones(3),), (md.ones(3),))),
        ("vmap", lambda f: md.vmap(f)(md.ones((2, 3)))),
    ],
)
def test_a_tracer_escaping_its_transform(name, transform):
    leaked = _escape(transform)
    with raises(md.TracerError, "sin", name, "escaped"):
        md.sin(leaked)
    with raises(md.TracerError, "add", name):
        leaked + 1.0


_LEAKED = None


def test_a_tracer_stored_in_a_global():
    def f(x):
        global _LEAKED
        _LEAKED = md.exp(x)
        return md.sum(_LEAKED)

    g = md.grad(f)(md.tensor([0.0, 1.0]))
    np.testing.assert_allclose(g.numpy(), np.exp([0.0, 1.0]))  # fine inside the transform
    with raises(md.TracerError, "multiply", "reverse", "escaped"):
        _LEAKED * 2.0


def test_a_dual_escaping_its_dual_level():
    with md.dual_level():
        d = md.make_dual(md.ones(2), md.ones(2))
    with raises(md.TracerError, "multiply", "forward"):
        d * 2
    with raises(md.TracerError, "make_dual", "dual_level"):
        md.make_dual(md.ones(2), md.ones(2))


def test_an_escaped_tracer_inside_a_later_transform():
    leaked = _escape(lambda f: md.grad(f)(md.ones(3)))
    with raises(md.TracerError, "multiply", "escaped"):
        md.grad(lambda x: md.sum(x * leaked))(md.ones(3))


# ----------------------------------------------------------------------------- user rules
def test_a_jvp_rule_with_a_vjp_signature_fails_at_definition():
    @md.primitive
    def double(x):
        return x * 2

    with raises(TypeError, "double", "JVP", "(primals, tangents)", "VJP"):

        @double.defjvp
        def wrong(cotangent, output, x):
            return (cotangent * 2,)

    assert double.jvp_fn is None  # nothing was registered


def test_a_vjp_rule_with_a_jvp_signature_fails_at_definition():
    @md.primitive
    def double(x):
        return x * 2

    with raises(TypeError, "double", "VJP", "JVP"):

        @double.defvjp
        def wrong(primals, tangents):
            return tangents[0] * 2

    assert double.vjp_fn is None


# ----------------------------------------------------------------------------- nothing changes on error
def test_an_exception_inside_a_transform_closes_its_level_and_keeps_the_inputs():
    x = md.tensor([1.0, 2.0])
    depth = levels.depth()
    for call in (
        lambda f: md.grad(f)(x),
        lambda f: md.jvp(f, (x,), (x,)),
        lambda f: md.vmap(f)(x),
        lambda f: md.hessian(f)(x),
    ):

        def f(x):
            md.sin(x)
            raise KeyError("user error")

        with pytest.raises(KeyError):
            call(f)
        assert levels.depth() == depth
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])
    np.testing.assert_allclose(md.grad(lambda x: md.sum(x * x))(x).numpy(), [2.0, 4.0])  # still works


@pytest.mark.parametrize(
    "op, call",
    [
        ("jvp", lambda x: md.jvp(md.sin, x, x)),
        ("hvp", lambda x: md.hvp(lambda z: md.sum(z * z), x, x)),
    ],
)
def test_bare_tensors_for_primals_get_the_same_message_in_every_transform(op, call):
    """Passing x instead of (x,) is the usual slip: jvp and hvp name it the same way."""
    with pytest.raises(TypeError, match=rf"{op}: primals and tangents must be tuples.*got Tensor and Tensor"):
        call(md.tensor([1.0, 2.0]))
