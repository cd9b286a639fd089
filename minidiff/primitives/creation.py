"""Making tensors: from data, filled, ranges.  NumPy's defaults (float64 for Python floats)."""

from __future__ import annotations

from numbers import Number
from typing import Any

from .. import backend
from ..errors import DTypeError
from ..tensor.core import ArrayLike, DeviceLike, DTypeLike, ShapeLike, Tensor, wrap
from .shape import stack

__all__ = [
    "tensor",
    "asarray",
    "zeros",
    "ones",
    "full",
    "zeros_like",
    "ones_like",
    "empty",
    "arange",
    "linspace",
    "eye",
]


def _dtype(dtype: DTypeLike) -> Any:
    if dtype is None:
        return None
    try:
        return backend.numpy_module.dtype(dtype)
    except TypeError as exc:
        raise DTypeError(f"unknown dtype {dtype!r}") from exc


def tensor(
    data: ArrayLike, dtype: DTypeLike = None, device: DeviceLike = None, requires_grad: bool = False
) -> Tensor:
    """A new tensor holding a copy of ``data`` (nested lists, scalars, NumPy or CuPy arrays, tensors).

    Example:
        >>> import minidiff as md
        >>> md.tensor([[1, 2], [3, 4]], dtype="float32").shape
        (2, 2)
        >>> md.tensor(3.0, requires_grad=True).requires_grad
        True
    """
    t = asarray(data, dtype=dtype, device=device, copy=True)
    return t.requires_grad_() if requires_grad else t


def asarray(
    data: ArrayLike, dtype: DTypeLike = None, device: DeviceLike = None, copy: bool = False
) -> Tensor:
    """``data`` as a tensor, sharing memory where possible; a tensor already matching is returned as is.

    >>> import minidiff as md
    >>> x = md.asarray([1.0, 2.0]); md.asarray(x) is x
    True
    """
    dtype = _dtype(dtype)
    if isinstance(data, Tensor):
        out = data
        if device is not None and backend.get_device(device) is not data.device:
            out = out.to(device)
        if dtype is not None and out.dtype != dtype:
            out = out.astype(dtype)
        if copy and out is data:
            out = wrap(data._data.copy(), data._device) if type(data) is Tensor else data
        return out
    dev = backend.get_device(device)
    xp = dev.xp
    if isinstance(data, (list, tuple)) and any(isinstance(d, Tensor) for d in _flat(data)):
        return stack([asarray(d, dtype, device) for d in data])
    if not isinstance(data, dev.array_type) and not isinstance(data, Number):
        src = (
            backend.device_of_array(data)
            if hasattr(data, "__array_interface__") or hasattr(data, "__cuda_array_interface__")
            else None
        )
        if src is not None and src is not dev:
            data = src.to_host(data)
    arr = xp.array(data, dtype=dtype, copy=True) if copy else xp.asarray(data, dtype=dtype)
    return wrap(arr, dev)


def _flat(seq: Any) -> Any:
    for item in seq:
        if isinstance(item, (list, tuple)):
            yield from _flat(item)
        else:
            yield item


def zeros(
    shape: ShapeLike, dtype: DTypeLike = "float64", device: DeviceLike = None, requires_grad: bool = False
) -> Tensor:
    """A tensor of zeros.  ``md.zeros((2, 3), dtype="float32")``."""
    dev = backend.get_device(device)
    t = wrap(dev.xp.zeros(shape, dtype=_dtype(dtype)), dev)
    return t.requires_grad_() if requires_grad else t


def ones(
    shape: ShapeLike, dtype: DTypeLike = "float64", device: DeviceLike = None, requires_grad: bool = False
) -> Tensor:
    """A tensor of ones."""
    dev = backend.get_device(device)
    t = wrap(dev.xp.ones(shape, dtype=_dtype(dtype)), dev)
    return t.requires_grad_() if requires_grad else t


def empty(shape: ShapeLike, dtype: DTypeLike = "float64", device: DeviceLike = None) -> Tensor:
    """An uninitialized tensor (its values are whatever the memory held)."""
    dev = backend.get_device(device)
    return wrap(dev.xp.empty(shape, dtype=_dtype(dtype)), dev)


def full(
    shape: ShapeLike, fill_value: ArrayLike, dtype: DTypeLike = None, device: DeviceLike = None
) -> Tensor:
    """A tensor filled with ``fill_value``."""
    dev = backend.get_device(device)
    return wrap(dev.xp.full(shape, fill_value, dtype=_dtype(dtype)), dev)


def zeros_like(x: ArrayLike, dtype: DTypeLike = None, device: DeviceLike = None) -> Tensor:
    """Zeros with the shape (and by default dtype and device) of ``x``; never carries a derivative."""
    x = asarray(x)
    return zeros(x.shape, dtype or x.dtype, device or x.device)


def ones_like(x: ArrayLike, dtype: DTypeLike = None, device: DeviceLike = None) -> Tensor:
    """Ones with the shape (and by default dtype and device) of ``x``."""
    x = asarray(x)
    return ones(x.shape, dtype or x.dtype, device or x.device)


def arange(
    start: ArrayLike,
    stop: ArrayLike | None = None,
    step: ArrayLike = 1,
    dtype: DTypeLike = None,
    device: DeviceLike = None,
) -> Tensor:
    """Evenly spaced values in ``[start, stop)``, as ``numpy.arange``."""
    dev = backend.get_device(device)
    if stop is None:
        start, stop = 0, start
    return wrap(dev.xp.arange(start, stop, step, dtype=_dtype(dtype)), dev)


def linspace(
    start: ArrayLike,
    stop: ArrayLike,
    num: int = 50,
    endpoint: bool = True,
    dtype: DTypeLike = None,
    device: DeviceLike = None,
) -> Tensor:
    """``num`` evenly spaced values from ``start`` to ``stop``, as ``numpy.linspace``."""
    dev = backend.get_device(device)
    return wrap(dev.xp.linspace(start, stop, num, endpoint=endpoint, dtype=_dtype(dtype)), dev)


def eye(
    n: int, m: int | None = None, k: int = 0, dtype: DTypeLike = "float64", device: DeviceLike = None
) -> Tensor:
    """The identity matrix (ones on diagonal ``k``)."""
    dev = backend.get_device(device)
    return wrap(dev.xp.eye(n, m, k, dtype=_dtype(dtype)), dev)
