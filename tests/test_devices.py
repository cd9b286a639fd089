"""The same small suite on every device: ``"cpu"`` (NumPy) and ``"cuda"`` (CuPy).

The CUDA cases are skipped, with the reason ``md.cuda_unavailable_reason()`` gives, where CuPy finds no GPU.
Mixing devices is tested against a second device: the numpy-backed ``"fake"`` one next to the CPU,
the CPU next to CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest

import minidiff as md

TOL = dict(rtol=1e-12, atol=1e-12)  # float64


@pytest.fixture
def other(device, fake_device):
    """A device different from ``device``, to mix with it."""
    return "fake" if device == "cpu" else "cpu"


def test_cuda_skip_reason_is_stated():
    ok, why = md.cuda_available(), md.cuda_unavailable_reason()
    assert isinstance(ok, bool)
    assert ok or ("CuPy" in why or "CUDA" in why or "cuda" in why), why


def test_creation_on_a_device(device):
    for t in (
        md.tensor([1.0, 2.0], device=device),
        md.asarray(np.ones(3), device=device),
        md.zeros((2, 2), device=device),
        md.ones(3, device=device),
        md.full((2,), 7.0, device=device),
        md.arange(4, device=device),
        md.eye(2, device=device),
    ):
        assert t.device is md.get_device(device)
        assert str(t.device) == device
    np.testing.assert_array_equal(md.eye(2, device=device).numpy(), np.eye(2))


def test_numpy_array_protocol_and_item(device):
    data = np.array([[1.5, -2.0], [0.25, 4.0]])
    t = md.tensor(data, device=device)
    host = t.numpy()
    assert type(host) is np.ndarray
    np.testing.assert_array_equal(host, data)
    np.testing.assert_array_equal(np.asarray(t), data)
    as32 = np.asarray(t, dtype=np.float32)
    assert as32.dtype == np.float32
    np.testing.assert_array_equal(as32, data.astype(np.float32))
    assert t.tolist() == data.tolist()
    one = md.sum(t)
    value = one.item()
    assert type(value) is float and value == pytest.approx(3.75)
    assert md.tensor([[2.5]], device=device).item() == 2.5
    with pytest.raises(ValueError, match=r"item.*\(2, 2\)"):
        t.item()


def test_to_moves_values_and_keeps_dtype(device, other):
    data = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    t = md.tensor(data, device=device)
    assert t.to(device) is t  # already there: no copy
    moved = t.to(other)
    assert str(moved.device) == other
    assert moved.dtype == np.float32
    np.testing.assert_array_equal(moved.numpy(), data)
    back = moved.to(device)
    assert str(back.device) == device
    np.testing.assert_array_equal(back.numpy(), data)
    np.testing.assert_array_equal(t.numpy(), data)  # the source is unchanged


def test_ops_stay_on_their_device(device):
    x = md.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)
    for y in (x + 1.0, x @ x, md.exp(x), md.sum(x, axis=0), x[0], md.concatenate([x, x]), x > 2.0):
        assert y.device is x.device
    np.testing.assert_allclose((x @ x).numpy(), np.array([[7.0, 10.0], [15.0, 22.0]]), **TOL)


def test_derivatives_on_a_device(device):
    data = np.array([0.3, -1.2, 2.0])
    x = md.tensor(data, device=device)
    f = lambda x: md.sum(md.sin(x) * x)
    g = md.grad(f)(x)
    assert g.device is x.device
    np.testing.assert_allclose(g.numpy(), np.cos(data) * data + np.sin(data), **TOL)
    _, t = md.jvp(f, (x,), (md.ones(3, device=device),))
    assert t.device is x.device
    np.testing.assert_allclose(t.item(), (np.cos(data) * data + np.sin(data)).sum(), **TOL)
    (hv,) = md.hvp(f, (x,), (md.ones(3, device=device),), mode="rev-over-rev")
    assert hv.device is x.device
    np.testing.assert_allclose(hv.numpy(), 2 * np.cos(data) - data * np.sin(data), **TOL)
    leaf = md.tensor(data, device=device, requires_grad=True)
    f(leaf).backward()
    assert leaf.grad.device is leaf.device
    np.testing.assert_allclose(leaf.grad.numpy(), np.cos(data) * data + np.sin(data), **TOL)


def test_to_is_differentiable(device, other):
    data = np.array([0.5, 1.5])
    x = md.tensor(data, device=device)
    f = lambda x: md.sum(md.exp(x.to(other)) * 2.0)
    g = md.grad(f)(x)
    assert g.device is x.device  # the cotangent travels back to the input's device
    np.testing.assert_allclose(g.numpy(), 2 * np.exp(data), **TOL)
    _, t = md.jvp(lambda x: x.to(other), (x,), (md.ones(2, device=device),))
    assert str(t.device) == other
    np.testing.assert_allclose(t.numpy(), np.ones(2), **TOL)


def test_mixing_devices_raises(device, other):
    a = md.ones(3, device=device)
    b = md.ones(3, device=other)
    with pytest.raises(md.DeviceError, match=rf"(?s)add.*{device}.*{other}|add.*{other}.*{device}"):
        a + b
    with pytest.raises(md.DeviceError, match="matmul"):
        md.reshape(a, (1, 3)) @ md.reshape(b, (3, 1))
    with pytest.raises(md.DeviceError, match="jvp"):
        md.jvp(md.sin, (a,), (b,))
    np.testing.assert_array_equal(a.numpy(), np.ones(3))  # nothing was changed


def test_unknown_device():
    with pytest.raises(ValueError, match="nowhere"):
        md.ones(2, device="nowhere")
