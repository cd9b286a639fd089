"""The exceptions minidiff raises; each subclasses the built-in one a NumPy user would expect."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any


class MinidiffError(Exception):
    """Base class of minidiff's own errors."""


class ShapeError(MinidiffError, ValueError):
    """Shapes that do not fit an operation (broadcasting, matmul, axes, tangents)."""


class DTypeError(MinidiffError, TypeError):
    """A dtype an operation cannot take (integer input to a derivative, mismatched tangent)."""


class DeviceError(MinidiffError, ValueError):
    """Tensors of two devices in one operation."""


class TapeError(MinidiffError, RuntimeError):
    """Misuse of the reverse-mode tape (second backward through a freed tape, nothing to differentiate)."""


class LinAlgError(MinidiffError, ValueError):
    """A matrix an operation cannot take: singular where an inverse is needed, a derivative that is
    not defined (full SVD of a non-square matrix), a decomposition that did not converge."""


class TracerError(MinidiffError, RuntimeError):
    """A traced value used outside the transform that created it, or read where it has no value."""


class UnsupportedError(MinidiffError, TypeError):
    """A NumPy function, keyword or ufunc method minidiff has no differentiable equivalent for, applied
    to a value that carries derivatives (or asked to write into a tensor with ``out=``)."""


def describe(x: object) -> str:
    """A short description of an argument for error messages: shape, dtype and device of a tensor."""
    shape = getattr(x, "shape", None)
    if shape is None:
        return f"{type(x).__name__} {x!r}"
    dtype = getattr(x, "dtype", "?")
    device = getattr(x, "device", None)
    where = f" on {device}" if device is not None and str(device) != "cpu" else ""
    return f"{dtype}{list(shape)}{where}"


def check_number(
    op: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    none_ok: bool = False,
) -> None:
    """Raise ``ValueError`` naming ``op`` and ``name`` unless ``value`` is a finite number in the range.

    The one check behind every setting minidiff validates (learning rates, damping, counts...):
    ``low``/``high`` bound the range (``low_open``/``high_open`` exclude the bound), ``integer``
    asks for an ``int``, ``none_ok`` lets ``None`` through.

    >>> check_number("SGD", "lr", 0.1, low=0.0)
    >>> check_number("SGD", "lr", -1.0, low=0.0)
    Traceback (most recent call last):
    ...
    ValueError: SGD: lr must be a number >= 0.0, got -1.0
    """
    if value is None and none_ok:
        return
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, Integral) if integer else isinstance(value, Real)
    ok = ok and not isinstance(value, bool) and value == value and abs(value) != float("inf")
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bounds = _describe_range(low, high, low_open, high_open) or ("" if integer else " (finite)")
        also = " or None" if none_ok else ""
        raise ValueError(f"{op}: {name} must be {kind}{bounds}{also}, got {value!r}")


def _describe_range(low: Any, high: Any, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""
