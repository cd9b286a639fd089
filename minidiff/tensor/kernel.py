"""Array kernels: the public way for library code above the engine to work on raw backend arrays.

Some work has no derivative and is cheaper on plain arrays than through the primitives: K-FAC's
factor statistics, an optimizer's moment updates, DEER's scan over many small matrices.  A function
decorated with :func:`array_kernel` receives the array namespace of the tensors' device (NumPy or
CuPy) and their arrays, and its array results come back as tensors on that device.  Nothing else
above the engine layers touches a tensor's array.

A kernel has no derivative, so it refuses a value that carries one (a tracer of ``jvp``/``vjp``):
pass ``.detach()`` on purpose.  Tape-style tensors (``requires_grad=True``) read as constants, as
``.numpy()`` does.

>>> import minidiff as md
>>> @md.array_kernel
... def scaled_norm(ns, x, *, scale):
...     return ns.sqrt((x * x).sum()) * scale
>>> round(float(scaled_norm(md.tensor([3.0, 4.0]), scale=2.0)), 6)
10.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

from .. import backend
from ..errors import DeviceError, describe
from .core import ARRAY, Tensor, wrap

__all__ = ["array_kernel", "array_namespace"]


def array_namespace(*tensors: Tensor) -> Any:
    """The array namespace (``numpy`` or ``cupy``) of the tensors' device (the default with none).

    >>> import minidiff as md
    >>> md.array_namespace(md.zeros(2)).__name__
    'numpy'
    """
    return _device("array_namespace", tensors).xp


def array_kernel(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``fn(ns, *arrays, **params)`` on backend arrays into a function on tensors (see module doc).

    Positional tensor arguments (also inside lists, tuples and dicts) arrive as arrays, all on one
    device; the result's arrays (also inside lists, tuples and dicts) leave as tensors on it; other
    values pass through both ways.
    """
    name = getattr(fn, "__qualname__", "kernel")

    @wraps(fn)
    def call(*args: Any, **params: Any) -> Any:
        tensors: list[Tensor] = []

        def array_of(t: Tensor) -> Any:  # and note the tensor, for its device
            tensors.append(t)
            return t._concrete(name, ARRAY)._data

        raw = _map(array_of, args)
        device = _device(name, tensors)
        out = fn(device.xp, *raw, **params)
        return _map_arrays(out, device)

    return call


def _map(f: Callable[[Any], Any], tree: Any) -> Any:
    if isinstance(tree, Tensor):
        return f(tree)
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map(f, x) for x in tree)
    if isinstance(tree, dict):
        return {k: _map(f, v) for k, v in tree.items()}
    return tree


def _map_arrays(tree: Any, device: backend.Device) -> Any:
    if isinstance(tree, device.array_type):
        return wrap(tree, device)
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_arrays(x, device) for x in tree)
    if isinstance(tree, dict):
        return {k: _map_arrays(v, device) for k, v in tree.items()}
    if type(tree).__module__ == device.xp.__name__ and hasattr(tree, "dtype"):  # a NumPy scalar
        return wrap(device.xp.asarray(tree), device)
    return tree


def _device(op: str, tensors: Sequence[Tensor]) -> backend.Device:
    devices = {id(t.device): t.device for t in tensors}
    if len(devices) > 1:
        raise DeviceError(
            f"{op}: tensors on different devices in one kernel: {', '.join(describe(t) for t in tensors)}; "
            "move them with .to(device)"
        )
    return next(iter(devices.values())) if devices else backend.get_device()
