"""Backend selection: the only module that imports NumPy or CuPy.

A :class:`Device` bundles a name with its array module ``xp`` (NumPy for ``"cpu"``, CuPy for
``"cuda"``).  Every other module asks a device for ``xp`` instead of importing an array library,
so one code path serves both (the Chainer idea).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy

__all__ = [
    "Device",
    "get_device",
    "register_device",
    "cuda_available",
    "cuda_unavailable_reason",
    "numpy_module",
    "scipy_linalg",
    "solve_banded",
    "erf",
    "box_muller_normal",
    "BOX_MULLER_DTYPES",
    "blas_threads",
    "small_products",
    "small_product_threads",
    "SMALL_PRODUCT_MAX",
    "SMALL_PRODUCT_THREADS_ENV",
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool_",
]

# dtypes are NumPy dtype objects on both backends (CuPy uses NumPy's dtypes).
float16 = numpy.dtype("float16")
float32 = numpy.dtype("float32")
float64 = numpy.dtype("float64")
int8 = numpy.dtype("int8")
int16 = numpy.dtype("int16")
int32 = numpy.dtype("int32")
int64 = numpy.dtype("int64")
uint8 = numpy.dtype("uint8")
bool_ = numpy.dtype("bool")

#: NumPy itself, for host-side helpers (dtype logic, conversion to host arrays).
numpy_module = numpy


class Device:
    """A place where arrays live: a name, its array module ``xp`` and how to move arrays there."""

    __slots__ = ("name", "xp", "array_type", "_to_host", "_from_host", "_synchronize")

    def __init__(
        self,
        name: str,
        xp: Any,
        array_type: type[Any],
        to_host: Callable[[Any], Any],
        from_host: Callable[[Any], Any],
        synchronize: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.xp = xp
        self.array_type = array_type
        self._to_host = to_host
        self._from_host = from_host
        self._synchronize = synchronize

    def __repr__(self) -> str:
        return f"device('{self.name}')"

    def __str__(self) -> str:
        return self.name

    def to_host(self, array: Any) -> Any:
        """Return ``array`` as a host NumPy array."""
        return self._to_host(array)

    def from_host(self, array: Any) -> Any:
        """Return a host NumPy array as an array of this device."""
        return self._from_host(array)

    def synchronize(self) -> None:
        """Wait until all queued work on this device is done (a no-op on the CPU)."""
        if self._synchronize is not None:
            self._synchronize()


def scatter_add(xp: Any, target: Any, index: Any, values: Any) -> None:
    """``target[index] += values`` with repeated indices accumulated, in place, on either backend."""
    if xp is numpy:
        numpy.add.at(target, index, values)
    else:  # CuPy spells unbuffered in-place addition this way
        import cupyx

        cupyx.scatter_add(target, index, values)


def scipy_linalg(xp: Any) -> Any:
    """SciPy's ``linalg`` for NumPy arrays, ``cupyx.scipy.linalg`` for CuPy arrays.

    Imported on first use (SciPy takes a noticeable time to import).  Used for the routines NumPy's
    ``linalg`` lacks, such as ``solve_triangular``.
    """
    if xp is numpy:
        import scipy.linalg

        return scipy.linalg
    import cupyx.scipy.linalg  # pragma: no cover - needs a GPU

    return cupyx.scipy.linalg  # pragma: no cover


def solve_banded(xp: Any, lower: int, upper: int, ab: Any, b: Any) -> Any:
    """``x`` with ``A x = b`` for banded ``A`` in LAPACK band storage ``ab[..., upper + i - j, j] ==
    A[..., i, j]``; ``ab`` of shape ``(..., lower + upper + 1, n)``, ``b`` of shape ``(..., n, k)``,
    leading axes broadcast.  ``scipy.linalg.solve_banded`` (LAPACK ``gbsv``/``gtsv``) on each matrix
    of a NumPy stack; for CuPy arrays the dense matrices and ``xp.linalg.solve``.  A singular matrix
    raises ``numpy.linalg.LinAlgError``.

    >>> import numpy as np
    >>> ab = np.array([[0.0, 1.0, 1.0], [4.0, 4.0, 4.0], [1.0, 1.0, 0.0]])  # tridiagonal (1, 4, 1)
    >>> solve_banded(np, 1, 1, ab, np.array([[5.0], [6.0], [5.0]]))[:, 0].tolist()
    [1.0, 1.0, 1.0]
    """
    lead = tuple(xp.broadcast_shapes(ab.shape[:-2], b.shape[:-2]))
    dtype = xp.result_type(ab.dtype, b.dtype, xp.float32)
    ab = xp.broadcast_to(ab, lead + ab.shape[-2:]).astype(dtype, copy=False)
    b = xp.broadcast_to(b, lead + b.shape[-2:]).astype(dtype, copy=False)
    if b.size == 0:
        return xp.zeros(b.shape, dtype=dtype)
    if ab.shape[-1] == 1:  # 1x1: the diagonal sits in row ``upper``
        d = ab[..., upper : upper + 1, :]
        if not bool((d != 0).all()):
            raise numpy.linalg.LinAlgError("singular matrix: the 1x1 matrix is zero")
        return b / d
    if xp is not numpy:  # pragma: no cover - needs a GPU
        return solve_banded_dense(xp, lower, upper, ab, b)
    import scipy.linalg

    out = numpy.empty(b.shape, dtype=dtype)
    for idx in numpy.ndindex(*lead):
        out[idx] = scipy.linalg.solve_banded((lower, upper), ab[idx], b[idx], check_finite=False)
    return out


def band_to_dense(xp: Any, lower: int, upper: int, ab: Any) -> Any:
    """The ``(..., n, n)`` matrices whose bands ``ab`` (``(..., lower + upper + 1, n)``) holds; the
    entries of ``ab`` outside the matrix (its corners) are not read."""
    n = ab.shape[-1]
    dense = xp.zeros(ab.shape[:-2] + (n, n), dtype=ab.dtype)
    j = xp.arange(n)
    for row in range(lower + upper + 1):
        i = j + row - upper
        ok = (i >= 0) & (i < n)
        dense[..., i[ok], j[ok]] = ab[..., row, j[ok]]
    return dense


def solve_banded_dense(xp: Any, lower: int, upper: int, ab: Any, b: Any) -> Any:
    """:func:`solve_banded` through the dense matrices (the CuPy path; usable with NumPy to test it).

    >>> import numpy as np
    >>> ab = np.array([[0.0, 1.0, 1.0], [4.0, 4.0, 4.0], [1.0, 1.0, 0.0]])
    >>> solve_banded_dense(np, 1, 1, ab, np.array([[5.0], [6.0], [5.0]]))[:, 0].tolist()
    [1.0, 1.0, 1.0]
    """
    dense = band_to_dense(xp, lower, upper, ab)
    try:
        x = xp.linalg.solve(dense, b)
    except numpy.linalg.LinAlgError:  # NumPy (and CuPy when told to check) raise on an exact zero pivot
        raise numpy.linalg.LinAlgError("singular matrix") from None
    finite = bool(xp.isfinite(x).all())
    if not finite and bool(xp.isfinite(dense).all()) and bool(xp.isfinite(b).all()):
        raise numpy.linalg.LinAlgError("singular matrix")  # CuPy's default: no check, inf/nan out
    return x


def erf(xp: Any) -> Callable[[Any], Any]:
    """The error function for arrays of ``xp``: ``scipy.special.erf`` for NumPy arrays,
    ``cupyx.scipy.special.erf`` for CuPy arrays (NumPy itself has none).

    >>> import numpy as np
    >>> round(float(erf(np)(np.float64(1.0))), 6)
    0.842701
    """
    if xp is numpy:
        import scipy.special

        return scipy.special.erf
    import cupyx.scipy.special  # pragma: no cover - needs a GPU

    return cupyx.scipy.special.erf  # pragma: no cover


#: The dtypes :func:`box_muller_normal` fills (in float64 NumPy's own ziggurat is faster here).
BOX_MULLER_DTYPES = (float32,)
_BOX_MULLER_PAIRS = 1 << 15  # pairs per chunk: the chunk's temporaries stay in the L2 cache
_TWO_PI_2_32 = numpy.float32(2.0 * numpy.pi * 2.0**-32)


def box_muller_normal(rng: Any, out: Any) -> Any:
    """Fill the C-contiguous float32 NumPy array ``out`` with standard normal draws of ``rng`` (a
    ``numpy.random.Generator``), by Box–Muller on its raw 64-bit words; returns ``out``.

    Each word makes two independent normals: its low 32 bits give ``u = (k + 1/2)·2⁻³²`` in (0, 1) and
    ``ρ = √(−2 ln u)``, its high 32 bits an angle ``θ = 2π·k'·2⁻³²``; ``ρ cos θ`` and ``ρ sin θ`` are
    independent N(0, 1) (Box and Muller, 1958).  The radius is exact up to the 2⁻³² grid of ``u``, which
    caps ρ at 6.77 (the law puts 2⁻³³ ≈ 1.2·10⁻¹⁰ beyond it).  Same generator state, same draws; it
    advances the generator by ``ceil(n/2)`` words.  About 3× faster than NumPy's float32 ziggurat here
    (docs/benchmarks.md, "Forward gradient cost"); ``tests/test_random_sampler.py`` tests the law.

    >>> import numpy as np
    >>> z = box_muller_normal(np.random.default_rng(0), np.empty(100_000, np.float32))
    >>> abs(float(z.mean())) < 0.02, abs(float(z.std()) - 1) < 0.02
    (True, True)
    """
    if out.dtype not in BOX_MULLER_DTYPES or not out.flags.c_contiguous:
        raise TypeError(f"box_muller_normal: out must be a C-contiguous float32 array, got {out.dtype}")
    flat = out.reshape(-1)
    pairs = flat.size // 2
    for start in range(0, pairs, _BOX_MULLER_PAIRS):
        m = min(_BOX_MULLER_PAIRS, pairs - start)
        _box_muller_pairs(rng, flat[2 * start : 2 * start + m], flat[2 * start + m : 2 * (start + m)])
    if flat.size % 2:
        tail = numpy.empty(2, float32)
        _box_muller_pairs(rng, tail[:1], tail[1:])
        flat[-1] = tail[0]
    return out


def _box_muller_pairs(rng: Any, cos_out: Any, sin_out: Any) -> None:
    """``len(cos_out)`` pairs of normals from as many raw words: ``ρ cos θ`` into ``cos_out``, ``ρ sin θ``
    into ``sin_out`` (float32, same length)."""
    m = cos_out.size
    words = rng.bit_generator.random_raw(m).view(numpy.uint32)  # 2m independent 32-bit integers
    rho = words[:m].astype(float32)
    rho *= numpy.float32(2.0**-32)  # exact: a power of two
    rho += numpy.float32(2.0**-33)  # u = (k + 1/2)·2⁻³² in (0, 1]: no log(0)
    numpy.log(rho, out=rho)
    rho *= numpy.float32(-2.0)
    numpy.sqrt(rho, out=rho)
    theta = words[m:].astype(float32)
    theta *= _TWO_PI_2_32
    numpy.cos(theta, out=cos_out)
    cos_out *= rho
    numpy.sin(theta, out=sin_out)
    sin_out *= rho


# ----------------------------------------------------------------------------- BLAS threads
#: Matrices at most this many rows and columns count as "small" for :func:`small_products`.
SMALL_PRODUCT_MAX = 16
#: The environment variable that overrides :func:`small_product_threads`: a thread count (``1``, ``2``,
#: …) for small products, or ``0`` / ``off`` to leave the BLAS library's own threading alone.
SMALL_PRODUCT_THREADS_ENV = "MINIDIFF_SMALL_PRODUCT_THREADS"

_blas_libraries: list[Any] | None = None  # threadpoolctl's controllers of the loaded BLAS libraries


def _blas_controllers() -> list[Any]:
    """The BLAS libraries NumPy loaded, found once (threadpoolctl scans the process's shared objects,
    which takes milliseconds); an empty list without threadpoolctl."""
    global _blas_libraries
    if _blas_libraries is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            _blas_libraries = []
        else:
            _blas_libraries = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    return _blas_libraries


@contextlib.contextmanager
def blas_threads(limit: int | None) -> Iterator[None]:
    """Run the block with the BLAS libraries using at most ``limit`` threads; ``None`` changes nothing.

    The previous thread counts come back on leaving, also when the block raises.  When every library
    already uses at most ``limit`` threads (an enclosing ``blas_threads``, ``OPENBLAS_NUM_THREADS=1``)
    nothing is set, so nesting costs a query of the current count (about a microsecond).  The setting is
    process-wide: other Python threads doing BLAS work meanwhile run under the limit too.

    >>> with blas_threads(1):
    ...     with blas_threads(1):  # already in force: nothing to do
    ...         pass
    """
    if limit is None:
        yield
        return
    if limit < 1:
        raise ValueError(f"blas_threads: limit must be a positive thread count or None, got {limit}")
    changed = []
    try:
        for lib in _blas_controllers():
            before = lib.num_threads
            if before > limit:
                lib.set_num_threads(limit)
                changed.append((lib, before))
        yield
    finally:
        for lib, before in reversed(changed):
            lib.set_num_threads(before)


def small_product_threads(n: int) -> int | None:
    """How many BLAS threads batched products of ``n × n`` matrices get: the thread-policy rule.

    One thread when ``n ≤ SMALL_PRODUCT_MAX`` (16), else the library's own choice (``None``).  DEER's
    products at such n (Jacobian passes with inner dimension n, scans of n×n maps) gain 3–6% from a
    second thread on an idle 2-core machine (issue 12) and lose 1.7–7× when other processes keep a core
    busy, since the products then wait for a descheduled helper thread (docs/benchmarks.md, "DEER under
    load (BLAS threads)").  The environment variable ``MINIDIFF_SMALL_PRODUCT_THREADS``
    overrides the rule: a thread count for small products, or ``0`` / ``off`` for the library's choice.

    >>> small_product_threads(8), small_product_threads(64)
    (1, None)
    """
    text = os.environ.get(SMALL_PRODUCT_THREADS_ENV, "").strip().lower()
    if text:
        if text in ("0", "off", "none"):
            return None
        try:
            threads = int(text)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(
                f"{SMALL_PRODUCT_THREADS_ENV}={text!r}: expected a positive thread count, or 0 / off"
            )
        return threads if n <= SMALL_PRODUCT_MAX else None
    return 1 if n <= SMALL_PRODUCT_MAX else None


def small_products(n: int) -> contextlib.AbstractContextManager[None]:
    """:func:`blas_threads` with the limit :func:`small_product_threads` gives for ``n × n`` matrices:
    wrap code whose products are batches of such matrices (DEER's Jacobian passes and scans).

    >>> import numpy as np
    >>> with small_products(8):
    ...     float(np.matmul(np.ones((3, 8, 8)), np.ones((3, 8, 1))).sum())
    192.0
    """
    return blas_threads(small_product_threads(n))


_DEVICES: dict[str, Device] = {
    "cpu": Device("cpu", numpy, numpy.ndarray, lambda a: a, lambda a: a),
}


def _cuda_device() -> Device:
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "device 'cuda' needs CuPy: install minidiff with the 'gpu' extra (pip install 'minidiff[gpu]')"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(f"device 'cuda': CuPy found no usable CUDA device ({exc})") from exc
    if count == 0:  # pragma: no cover - depends on the machine
        raise RuntimeError("device 'cuda': CuPy found no CUDA device")
    return Device(  # pragma: no cover - needs a GPU
        "cuda",
        cupy,
        cupy.ndarray,
        cupy.asnumpy,
        cupy.asarray,
        lambda: cupy.cuda.get_current_stream().synchronize(),
    )


def cuda_available() -> bool:
    """Whether device ``"cuda"`` can be used here (see :func:`cuda_unavailable_reason` for why not)."""
    return not cuda_unavailable_reason()


def cuda_unavailable_reason() -> str:
    """Why device ``"cuda"`` cannot be used here, or ``""`` when it can."""
    try:
        get_device("cuda")
    except RuntimeError as exc:
        return str(exc)
    return ""


def get_device(device: Device | str | None = None) -> Device:
    """Look a device up by name (``None`` means ``"cpu"``); a :class:`Device` is returned as is."""
    if device is None:
        return _DEVICES["cpu"]
    if isinstance(device, Device):
        return device
    name = str(device)
    found = _DEVICES.get(name)
    if found is not None:
        return found
    if name == "cuda" or name.startswith("cuda:"):
        found = _DEVICES["cuda"] = _cuda_device()
        return found
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def register_device(name: str, xp: Any = numpy) -> Device:
    """Register an extra device backed by an array module (used by tests to mix devices)."""
    if name in _DEVICES:
        raise ValueError(f"device {name!r} is already registered")
    dev = Device(name, xp, numpy.ndarray if xp is numpy else xp.ndarray, lambda a: a, lambda a: a)
    _DEVICES[name] = dev
    return dev


def device_of_array(array: Any) -> Device:
    """The device an array of either backend lives on."""
    if isinstance(array, numpy.ndarray) or numpy.isscalar(array):
        return _DEVICES["cpu"]
    if type(array).__module__.startswith("cupy"):
        return get_device("cuda")
    raise TypeError(f"cannot tell which device holds an object of type {type(array).__name__}")
