"""MNIST from the standard IDX files in a folder the user gives (nothing is ever downloaded).

An IDX file is a big-endian header — two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions — then one 32-bit big-endian size per dimension, then the values.  Read as one 32-bit
number the first four bytes are the *magic number*: 2051 (0x00000803) for MNIST images (N × rows ×
cols) and 2049 (0x00000801) for labels (N).  Every check below names the file it rejects.

This is host-side data loading: files are parsed with NumPy (outside ``minidiff.backend``, on purpose)
and the results become tensors with ``md.asarray(..., device=device)``.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np  # host-side parsing of IDX files (data loading is allowed to use NumPy)

from ..errors import DTypeError
from ..primitives.creation import asarray
from ..tensor.core import DeviceLike, DTypeLike, Tensor

__all__ = ["read_idx", "load_mnist", "load_mnist_splits", "IMAGES_MAGIC", "LABELS_MAGIC", "mnist_files"]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_TYPES = {  # IDX type code → big-endian NumPy dtype
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_PREFIX = {"train": "train", "test": "t10k"}


def _read_bytes(path: str) -> bytes:
    if path.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise ValueError(f"{path}: not a readable gzip file ({exc}); is it truncated?") from exc
    with open(path, "rb") as fh:
        return fh.read()


def read_idx(path: str | os.PathLike[str], expect_magic: int | None = None) -> np.ndarray:
    """The array stored in the IDX file ``path`` (raw, or gzip if the name ends in ``.gz``).

    Checks the header (zero bytes, a known type code, the magic number if ``expect_magic`` is given) and
    that the payload holds exactly the number of values the header's dimensions promise.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file not found: {path}")
    blob = _read_bytes(path)
    if len(blob) < 4:
        raise ValueError(f"{path}: {len(blob)} bytes is too short for an IDX header (at least 4 bytes)")
    (magic,) = struct.unpack(">I", blob[:4])
    zero, code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if expect_magic is not None and magic != expect_magic:
        raise ValueError(
            f"{path}: magic number {magic} (0x{magic:08X}), expected {expect_magic} (0x{expect_magic:08X}); "
            "is this the right IDX file (images 2051, labels 2049)?"
        )
    if zero != 0 or code not in _TYPES or ndim == 0:
        raise ValueError(f"{path}: magic number {magic} (0x{magic:08X}) is not a valid IDX header")
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise ValueError(
            f"{path}: truncated header: {ndim} dimensions need {header} bytes, the file has {len(blob)}"
        )
    dims = struct.unpack(f">{ndim}I", blob[4:header])
    dtype = np.dtype(_TYPES[code])
    want = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(blob) - header
    if have != want:
        what = "truncated" if have < want else "has trailing bytes"
        raise ValueError(
            f"{path}: payload {what}: the header's dimensions {' × '.join(map(str, dims))} need {want} "
            f"bytes of data, the file has {have}"
        )
    return np.frombuffer(blob, dtype=dtype, offset=header).reshape(dims)


def mnist_files(folder: str | os.PathLike[str], kind: str = "train") -> tuple[str, str]:
    """Paths of the images and labels files of ``kind`` in ``folder`` (raw preferred over ``.gz``).

    Accepted names: ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (``t10k-…`` for the test
    set), also with a dot before ``idx`` as some mirrors spell them, each raw or with ``.gz``.
    """
    if kind not in _PREFIX:
        raise ValueError(f"load_mnist: kind must be 'train' or 'test', got {kind!r}")
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"load_mnist: folder not found: {folder}")
    prefix = _PREFIX[kind]
    found = []
    for what, idx in (("images", "idx3"), ("labels", "idx1")):
        names = [f"{prefix}-{what}{sep}{idx}-ubyte{gz}" for gz in ("", ".gz") for sep in ("-", ".")]
        paths = [os.path.join(folder, n) for n in names]
        hit = next((p for p in paths if os.path.isfile(p)), None)
        if hit is None:
            raise FileNotFoundError(
                f"load_mnist: no {kind} {what} file in {folder}: looked for {', '.join(names)}. "
                "minidiff never downloads data; put the MNIST IDX files there"
            )
        found.append(hit)
    return found[0], found[1]


def load_mnist(
    folder: str | os.PathLike[str],
    kind: str = "train",
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
    flatten: bool = False,
    image_size: tuple[int, int] | None = (28, 28),
    classes: int | None = 10,
) -> tuple[Tensor, Tensor]:
    """MNIST (or any data set in MNIST's IDX layout) from ``folder`` as ``(images, labels)``.

    ``images``: floats in [0, 1] (bytes / 255) of shape (N, 1, rows, cols), or (N, rows·cols) with
    ``flatten=True``; ``labels``: int64 (N,).  ``kind`` is ``"train"`` (``train-*`` files) or ``"test"``
    (``t10k-*``).  Validated: magic numbers (2051 images, 2049 labels), dimensions (images 3-D of
    ``image_size``, None to accept any), payload lengths against the headers, equal counts, and labels
    in ``0 … classes − 1`` (None to accept any byte).
    """
    images_path, labels_path = mnist_files(folder, kind)
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ValueError(f"{images_path}, {labels_path}: MNIST files hold unsigned bytes")
    n, rows, cols = images.shape  # magic 2051 guarantees three dimensions
    if rows < 1 or cols < 1:
        raise ValueError(f"{images_path}: images of {rows} × {cols} pixels")
    if image_size is not None and (rows, cols) != tuple(image_size):
        raise ValueError(
            f"{images_path}: images are {rows} × {cols}, expected {image_size[0]} × {image_size[1]} "
            "(pass image_size=None to accept any size)"
        )
    if labels.shape[0] != n:
        raise ValueError(
            f"{images_path} holds {n} images but {labels_path} holds {labels.shape[0]} labels; "
            "the two files must come from the same set"
        )
    _check_labels(labels_path, labels, classes)
    dt = float_dtype("load_mnist", dtype)
    x = images.astype(dt) / dt.type(255)
    x = x.reshape(n, rows * cols) if flatten else x.reshape(n, 1, rows, cols)
    return asarray(x, device=device), asarray(labels.astype(np.int64), device=device)


def _check_labels(path: str, labels: np.ndarray, classes: int | None) -> None:
    """Every label must name one of ``classes`` classes; the first one that does not is reported."""
    if classes is None:
        return
    bad = np.flatnonzero(labels >= classes)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{path}: label {int(labels[i])} at index {i} is out of range for {classes} classes "
            f"(0 … {classes - 1}); {bad.size} of {labels.size} labels are out of range"
        )


def load_mnist_splits(
    folder: str | os.PathLike[str],
    *,
    flatten: bool = False,
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
    classes: int = 10,
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The training and test sets of the MNIST IDX files in ``folder``: ``((x_train, y_train), (x_test,
    y_test))``, each pair as :func:`load_mnist` returns it (validated the same way, 28 × 28 images).

    This is what ``minidiff train --data-dir DIR`` trains and evaluates on.

    >>> load_mnist_splits("/no/such/folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: load_mnist: folder not found: /no/such/folder
    """
    kw = dict(dtype=dtype, device=device, flatten=flatten, classes=classes)
    return load_mnist(folder, "train", **kw), load_mnist(folder, "test", **kw)


def float_dtype(op: str, dtype: DTypeLike) -> np.dtype:
    """``dtype`` as a NumPy dtype, which must be floating point (images are scaled to [0, 1])."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise DTypeError(f"{op}: unknown dtype {dtype!r}") from exc
    if dt.kind != "f":
        raise TypeError(f"{op}: images are floating point; dtype {dt} is not")
    return dt
