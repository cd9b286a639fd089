"""The embedded data set: 1,797 UCI handwritten digits of 8×8 pixels, at their size or upsampled.

The file ``digits.csv.gz`` ships inside the package (CC BY 4.0; source, license and changes in
``LICENSE-digits.txt`` beside it).  ``load_digits(size=28)`` ("digits28") upsamples every image to
28×28 so that the forward-gradient paper's MNIST-shaped models run unchanged.

Upsampling is our own bilinear map with aligned corners: output pixel ``i`` of ``size`` samples the
8×8 image at ``i·7/(size−1)``, interpolating linearly along rows and then columns.  It is one small
interpolation matrix ``M`` (size × 8) applied as ``M·X·Mᵀ``, and equals
``scipy.ndimage.zoom(X, size/8, order=1)`` (scipy's default ``grid_mode=False`` aligns the corners too).
Pixel values are scaled from 0..16 to [0, 1]; bilinear interpolation keeps them there.

This is host-side data loading: the file is parsed with NumPy (outside ``minidiff.backend``, on purpose)
and the results become tensors with ``md.asarray(..., device=device)``.

>>> from minidiff.data import load_digits
>>> x, y = load_digits()
>>> x.shape, y.shape, str(x.dtype), str(y.dtype)
((1797, 1, 8, 8), (1797,), 'float32', 'int64')
>>> load_digits(size=28, flatten=True)[0].shape
(1797, 784)
"""

from __future__ import annotations

import functools
import gzip
import io
from importlib import resources

import numpy as np  # host-side parsing of the packaged file (data loading is allowed to use NumPy)

from ..errors import check_number
from ..primitives.creation import asarray
from ..tensor.core import DeviceLike, DTypeLike, Tensor
from .idx import float_dtype

__all__ = ["load_digits", "bilinear_matrix", "N_DIGITS"]

N_DIGITS = 1797
_FILE = "digits.csv.gz"


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 (1797, 8, 8) in 0..16, labels int64 (1797,)), parsed once per process."""
    blob = resources.files(__package__).joinpath(_FILE).read_bytes()
    with gzip.open(io.BytesIO(blob), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if table.shape != (N_DIGITS, 65):
        raise ValueError(f"{_FILE}: expected {N_DIGITS} rows of 65 values, got shape {table.shape}")
    values, labels = table[:, :64], table[:, 64]
    if values.min() < 0 or values.max() > 16 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{_FILE}: pixel values outside 0..16 or labels outside 0..9")
    pixels = values.astype(np.uint8).reshape(N_DIGITS, 8, 8)
    pixels.setflags(write=False)
    labels = np.ascontiguousarray(labels)
    labels.setflags(write=False)
    return pixels, labels


def bilinear_matrix(size: int, source: int = 8) -> np.ndarray:
    """The (size × source) matrix of corner-aligned linear interpolation from ``source`` to ``size`` points.

    >>> bilinear_matrix(3, 2).tolist()
    [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    """
    check_number("bilinear_matrix", "size", size, low=1, integer=True)
    check_number("bilinear_matrix", "source", source, low=1, integer=True)
    m = np.zeros((size, source))
    if source == 1 or size == 1:  # a constant; or one output point, which corner alignment puts first
        m[:, 0] = 1.0
        return m
    pos = np.arange(size) * ((source - 1) / (size - 1))
    lo = np.minimum(np.floor(pos).astype(np.int64), source - 2)
    frac = pos - lo
    rows = np.arange(size)
    m[rows, lo] = 1.0 - frac
    m[rows, lo + 1] += frac
    return m


@functools.lru_cache(maxsize=4)
def _images(size: int) -> np.ndarray:
    """float64 images (1797, size, size) in [0, 1], cached per size."""
    pixels, _ = _raw()
    x = pixels.astype(np.float64) / 16.0
    if size != 8:
        m = bilinear_matrix(size, 8)
        x = np.einsum("ia,nab,jb->nij", m, x, m, optimize=True)
        np.clip(x, 0.0, 1.0, out=x)  # rounding only: bilinear weights are convex
    x.setflags(write=False)
    return x


def load_digits(
    size: int = 8, dtype: DTypeLike = "float32", device: DeviceLike = None, flatten: bool = False
) -> tuple[Tensor, Tensor]:
    """The 1,797 UCI digits as ``(images, labels)``.

    ``images``: floats in [0, 1] of shape (1797, 1, size, size), or (1797, size²) with ``flatten=True``;
    ``labels``: int64 class indices 0..9, shape (1797,).  ``size=8`` is the original resolution;
    ``size=28`` ("digits28") upsamples bilinearly so MNIST-shaped models run unchanged (any size ≥ 2
    works).  The parsed file and each size's images are cached in the process.
    """
    check_number(
        "load_digits", "size", int(size) if isinstance(size, np.integer) else size, low=2, integer=True
    )
    dt = float_dtype("load_digits", dtype)
    x = _images(int(size))
    _, labels = _raw()
    n = x.shape[0]
    x = x.reshape(n, -1) if flatten else x.reshape(n, 1, size, size)
    return asarray(x.astype(dt), device=device), asarray(labels.copy(), device=device)
