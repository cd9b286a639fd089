"""The exceptions minidiff raises; each subclasses the built-in one a NumPy user would expect."""

from __future__ import annotations


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


def describe(x) -> str:
    """A short description of an argument for error messages: shape, dtype and device of a tensor."""
    shape = getattr(x, "shape", None)
    if shape is None:
        return f"{type(x).__name__} {x!r}"
    dtype = getattr(x, "dtype", "?")
    device = getattr(x, "device", None)
    where = f" on {device}" if device is not None and str(device) != "cpu" else ""
    return f"{dtype}{list(shape)}{where}"
