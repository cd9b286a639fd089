"""md.array_kernel and md.array_namespace: the public way above the engine to work on raw arrays."""

import numpy as np
import pytest

import minidiff as md
from minidiff.errors import DeviceError, TracerError


@md.array_kernel
def scaled_sum(ns, x, *, scale):
    return ns.sum(x, axis=0) * scale


def test_tensors_arrive_as_arrays_of_the_namespace_and_arrays_leave_as_tensors():
    seen = {}

    @md.array_kernel
    def double(ns, x):
        seen["ns"], seen["x"] = ns, x
        return x * 2

    out = double(md.tensor([1.0, -2.0]))
    assert seen["ns"] is np
    assert isinstance(seen["x"], np.ndarray) and not isinstance(seen["x"], md.Tensor)
    assert isinstance(out, md.Tensor)
    assert out.device == md.get_device("cpu")
    np.testing.assert_allclose(out.numpy(), [2.0, -4.0])
    np.testing.assert_allclose(scaled_sum(md.tensor([[1.0, 2.0], [3.0, 4.0]]), scale=0.5).numpy(), [2.0, 3.0])


def test_nested_containers_are_mapped_both_ways():
    @md.array_kernel
    def swap(ns, pair, table):
        a, b = pair
        return {"first": b, "second": [a, (table["x"] + 1,)]}

    out = swap((md.tensor([1.0]), md.tensor([2.0])), {"x": md.tensor([3.0])})
    assert set(out) == {"first", "second"}
    assert isinstance(out["second"], list) and isinstance(out["second"][1], tuple)
    assert all(isinstance(t, md.Tensor) for t in (out["first"], out["second"][0], out["second"][1][0]))
    assert [out["first"].item(), out["second"][0].item(), out["second"][1][0].item()] == [2.0, 1.0, 4.0]


def test_values_that_are_not_tensors_or_arrays_pass_through():
    @md.array_kernel
    def describe(ns, x, n, label, missing, *, flag):
        return n + 1, label.upper(), missing, flag, float(x.sum()), x.shape

    n, label, missing, flag, total, shape = describe(md.ones((2, 3)), 4, "ab", None, flag=True)
    assert (n, label, missing, flag, shape) == (5, "AB", None, True, (2, 3))
    assert type(total) is float and total == 6.0


def test_a_numpy_scalar_result_comes_back_as_a_zero_dimensional_tensor():
    @md.array_kernel
    def largest(ns, x):
        return ns.max(x)  # a numpy.float64, not an array

    out = largest(md.tensor([1.0, 5.0, 2.0]))
    assert isinstance(out, md.Tensor) and out.shape == ()
    assert out.item() == 5.0


def test_a_value_carrying_a_jvp_derivative_is_refused_with_the_kernel_named():
    @md.array_kernel
    def square_kernel(ns, x):
        return x * x

    with pytest.raises(TracerError, match="square_kernel"):
        md.jvp(lambda x: square_kernel(x), (md.tensor([1.0, 2.0]),), (md.tensor([1.0, 0.0]),))
    # detaching on purpose reads the value as a constant
    out, tangent = md.jvp(lambda x: square_kernel(x.detach()) + x, (md.tensor([3.0]),), (md.tensor([1.0]),))
    assert out.item() == 12.0 and tangent.item() == 1.0


def test_a_tape_style_leaf_is_read_as_a_constant():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    out = scaled_sum(w, scale=3.0)
    assert out.item() == 9.0
    assert not out.requires_grad  # nothing recorded: a kernel has no derivative
    loss = (w * out).sum()
    loss.backward()
    np.testing.assert_allclose(w.grad.numpy(), [9.0, 9.0])


def test_tensors_of_two_devices_in_one_kernel_raise_a_device_error(fake_device):
    a = md.tensor([1.0, 2.0])
    b = md.tensor([3.0, 4.0]).to(fake_device)
    with pytest.raises(DeviceError, match=r"scaled_sum: tensors on different devices.*fake.*\.to\(device\)"):
        scaled_sum([a, b], scale=1.0)
    with pytest.raises(DeviceError, match="array_namespace"):
        md.array_namespace(a, b)


def test_the_result_lives_on_the_inputs_device(fake_device):
    out = scaled_sum(md.tensor([[1.0], [2.0]]).to(fake_device), scale=1.0)
    assert out.device is fake_device
    assert out.tolist() == [3.0]


def test_array_namespace():
    assert md.array_namespace(md.zeros(2)) is np
    assert md.array_namespace(md.zeros(2), md.ones(3)) is np
    assert md.array_namespace() is md.array_namespace(md.zeros(1))  # no tensors: the default device
