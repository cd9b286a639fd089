"""Seedable random tensors: ``normal``, ``uniform``, ``rademacher``, ``randint``.

Each function draws from a :class:`Generator` (the module's default one unless ``rng`` is given);
``seed(n)`` resets the default.  Generators use the backend's own bit generator, so samples are
made where they are used (on the GPU for ``device="cuda"``).

Every ``rng=`` argument in minidiff (and the ``seed=`` of the classes and functions that have no
``rng=``) goes through one conversion, :func:`as_generator`, and so accepts the same four forms:

* an ``int`` seed — a new generator seeded with it (the same seed gives the same draws);
* a :class:`Generator` — used as is (its draws advance it);
* a ``numpy.random.Generator`` — wrapped, not copied: minidiff's draws advance *your* generator.  On a
  device whose array module is not NumPy (CUDA) a NumPy generator cannot make device arrays, so one
  63-bit seed is drawn from it and seeds a CuPy generator: the NumPy generator advances by that one draw
  and the same NumPy state gives the same samples, but later draws no longer advance it;
* ``None`` — the module's default generator of the device (see :func:`seed`).

>>> import minidiff as md
>>> rng = md.random.Generator(0)
>>> v = rng.rademacher((3,), dtype="float32")
>>> sorted(set(v.tolist())) in ([-1.0], [1.0], [-1.0, 1.0])
True
"""

from __future__ import annotations

from typing import Any

from .. import backend
from ..errors import DeviceError
from ..tensor.core import DeviceLike, DTypeLike, ShapeLike, Tensor, wrap
from .creation import _dtype

__all__ = [
    "Generator",
    "RngLike",
    "as_generator",
    "seed",
    "normal",
    "uniform",
    "rademacher",
    "randint",
    "default_generator",
]

_np = backend.numpy_module


class Generator:
    """A seeded source of random tensors on one device.

    ``seed`` is an int, None (fresh entropy), or a ``numpy.random.Generator`` or :class:`Generator` whose
    stream is shared, not copied (on CUDA a NumPy generator seeds the CuPy one with one draw, see the
    module docstring).  ``op`` names the caller in errors.  The sampling methods are the same code
    whichever bit generator backs them.

    >>> import numpy as np, minidiff as md
    >>> user = np.random.default_rng(0)
    >>> md.random.Generator(user).normal((2,)).tolist() == np.random.default_rng(0).normal(size=2).tolist()
    True
    """

    def __init__(self, seed: RngLike = None, device: DeviceLike = None, *, op: str = "Generator"):
        self.device = backend.get_device(device)
        self._rng = _bit_source(seed, self.device, op)

    def get_state(self) -> dict:
        """The bit generator's state (to checkpoint a run that draws random numbers)."""
        import copy

        return copy.deepcopy(self._rng.bit_generator.state)

    def set_state(self, state: dict) -> None:
        """Resume from a state :meth:`get_state` returned."""
        import copy

        self._rng.bit_generator.state = copy.deepcopy(state)

    def normal(
        self,
        shape: ShapeLike,
        mean: float = 0.0,
        std: float = 1.0,
        dtype: DTypeLike = "float64",
        *,
        method: str = "library",
        out: Tensor | None = None,
    ) -> Tensor:
        """Gaussian samples; float32 is drawn directly in float32 (no float64 detour).

        ``method="library"`` is the array library's own sampler (NumPy's ziggurat); ``"box-muller"``
        is :func:`minidiff.backend.box_muller_normal` on the generator's raw bits, about 3× faster
        for float32 NumPy arrays, the forward gradient's sampler (elsewhere it falls back to the
        library's).  The two give different draws from the same seed.  ``out``: a contiguous tensor
        of ``shape`` and ``dtype`` on this device to fill and return instead of allocating one.

        >>> import minidiff as md
        >>> buf = md.zeros((3,), dtype="float32")
        >>> z = md.random.Generator(0).normal((3,), dtype="float32", method="box-muller", out=buf)
        >>> z is buf, z.tolist() == md.random.Generator(0).normal((3,), dtype="float32", method="box-muller").tolist()
        (True, True)
        """
        dt = _dtype(dtype)
        if dt.kind != "f":
            raise TypeError(f"normal: dtype must be floating, got {dt}")
        if method not in NORMAL_METHODS:
            raise ValueError(f"normal: unknown method {method!r}; choose one of {NORMAL_METHODS}")
        target = self._out("normal", out, shape, dt)
        if method == "box-muller" and self.device.xp is _np and dt in backend.BOX_MULLER_DTYPES:
            backend.box_muller_normal(self._rng, target)
        elif dt.itemsize >= 4:
            self._rng.standard_normal(dtype=dt, out=target)
        else:
            target[...] = self._rng.standard_normal(target.shape)
        if std != 1.0:
            target *= std
        if mean != 0.0:
            target += mean
        return out if out is not None else wrap(target, self.device)

    def _out(self, op: str, out: Tensor | None, shape: ShapeLike, dt: Any) -> Any:
        """The array to fill: ``out``'s, after checking it, or a new one of ``shape`` and ``dt``."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if out is None:
            return self.device.xp.empty(shape, dtype=dt)
        if not isinstance(out, Tensor):
            raise TypeError(f"{op}: out must be a minidiff Tensor, got {type(out).__name__}")
        if out.shape != shape or out.dtype != dt or out.device is not self.device:
            raise ValueError(
                f"{op}: out is a {out.dtype} tensor of shape {out.shape} on {out.device}; the draws are "
                f"{dt} of shape {shape} on {self.device}"
            )
        if not out._data.flags.c_contiguous:
            raise ValueError(
                f"{op}: out must be C-contiguous (a view with strides cannot be filled in place)"
            )
        return out._data

    def uniform(
        self, shape: ShapeLike, low: float = 0.0, high: float = 1.0, dtype: DTypeLike = "float64"
    ) -> Tensor:
        """Samples uniform on ``[low, high)``."""
        dt = _dtype(dtype)
        out = self._rng.random(shape, dtype=dt if dt.itemsize >= 4 else None).astype(dt, copy=False)
        if (low, high) != (0.0, 1.0):
            out *= high - low
            out += low
        return wrap(out, self.device)

    def rademacher(
        self, shape: ShapeLike, dtype: DTypeLike = "float64", *, out: Tensor | None = None
    ) -> Tensor:
        """±1 with equal probability, from random bits: one byte of bits makes eight signs, looked up in a
        256×8 table so the output is written once, directly in ``dtype`` (into ``out``, a contiguous
        tensor of ``shape`` and ``dtype``, when given)."""
        xp = self.device.xp
        dt = _dtype(dtype)
        target = self._out("rademacher", out, shape, dt)
        n = target.size
        table = _SIGN_TABLES.get((self.device.name, dt))
        if table is None:
            bits = xp.unpackbits(xp.arange(256, dtype=xp.uint8)[:, None], axis=1)
            table = _SIGN_TABLES[(self.device.name, dt)] = bits.astype(dt) * 2 - 1
        words = self._rng.integers(0, 256, size=(n + 7) // 8, dtype=xp.uint8)
        flat, full = target.reshape(-1), n // 8
        # xp.take is about 6x faster than fancy indexing table[words] here; NumPy's default mode="raise"
        # would buffer the whole output before copying it to out (the bytes index 256 rows: no clipping)
        mode = {"mode": "clip"} if xp is _np else {}
        xp.take(table, words[:full], axis=0, out=flat[: 8 * full].reshape(full, 8), **mode)
        if n % 8:
            flat[8 * full :] = table[int(words[full])][: n % 8]
        return out if out is not None else wrap(target, self.device)

    def randint(
        self, low: int, high: int | None = None, shape: ShapeLike = (), dtype: DTypeLike = "int64"
    ) -> Tensor:
        """Integers uniform on ``[low, high)`` (``[0, low)`` if ``high`` is None)."""
        if high is None:
            low, high = 0, low
        return wrap(self._rng.integers(low, high, size=shape, dtype=_dtype(dtype)), self.device)

    def permutation(self, n: int) -> Tensor:
        """A random permutation of ``range(n)``."""
        return wrap(self._rng.permutation(n), self.device)


#: The samplers :meth:`Generator.normal` offers.
NORMAL_METHODS = ("library", "box-muller")

#: What an ``rng=`` argument may be (see :func:`as_generator`), for type hints.
RngLike = int | Generator | _np.random.Generator | None


def _bit_source(seed: RngLike, device: backend.Device, op: str = "Generator") -> Any:
    """The backend generator a :class:`Generator` on ``device`` draws from.

    A NumPy generator (on a device whose array module is NumPy) or a :class:`Generator` of the same device
    is shared, not copied; on another device one 63-bit draw of it seeds a generator of ``device.xp``.
    """
    if isinstance(seed, Generator):
        if seed.device is device:
            return seed._rng
        seed = int(seed._rng.integers(0, 2**63 - 1))
    elif isinstance(seed, _np.random.Generator):
        if device.xp is _np:
            return seed  # wrapped, not copied: draws advance the caller's generator
        seed = int(seed.integers(0, 2**63 - 1))  # e.g. CUDA: one draw of the caller's generator seeds ours
    elif seed is not None and not _is_int(seed):
        raise _type_error(op, seed)
    if seed is not None and seed < 0:
        raise ValueError(f"{op}: an rng seed must be a non-negative int, got {seed}")
    return device.xp.random.default_rng(None if seed is None else int(seed))


def _is_int(x: object) -> bool:
    return isinstance(x, (int, _np.integer)) and not isinstance(x, (bool, _np.bool_))


def _type_error(op: str, rng: object) -> TypeError:
    hint = " (use numpy.random.default_rng, not the legacy RandomState)" if _is_legacy(rng) else ""
    return TypeError(
        f"{op}: rng must be a minidiff.primitives.random.Generator or an int seed (or a numpy.random.Generator, or "
        f"None for the default), got {type(rng).__name__}{hint}"
    )


_DEFAULT: dict = {}
_SIGN_TABLES: dict = {}


def default_generator(device: DeviceLike = None) -> Generator:
    """The module's default generator of ``device`` (seeded by the last :func:`seed`, if any)."""
    dev = backend.get_device(device)
    if dev.name not in _DEFAULT:
        _DEFAULT[dev.name] = Generator(_SEED[0], dev)
    return _DEFAULT[dev.name]


def as_generator(rng: RngLike = None, device: DeviceLike = None, *, op: str = "as_generator") -> Generator:
    """The :class:`Generator` that an ``rng=`` argument stands for: the one conversion minidiff uses.

    ``rng`` is an int seed (a new generator), a :class:`Generator` (returned as is), a
    ``numpy.random.Generator`` (wrapped without copying, so draws advance it; on CUDA a CuPy generator
    seeded from one draw of it) or None (the default generator of ``device``).  ``device`` is where the
    draws are needed; None means the CPU for new generators and accepts a :class:`Generator` of any
    device.  ``op`` names the calling function in errors: a :class:`Generator` of another device raises
    :class:`~minidiff.errors.DeviceError`, any other type ``TypeError``.

    >>> import numpy as np, minidiff as md
    >>> user = np.random.default_rng(0)
    >>> gen = md.random.as_generator(user)
    >>> before = user.bit_generator.state["state"]["state"]
    >>> _ = gen.normal((3,))
    >>> user.bit_generator.state["state"]["state"] != before      # your generator advanced
    True
    >>> md.random.as_generator(0).normal((2,)).tolist() == md.random.as_generator(0).normal((2,)).tolist()
    True
    >>> md.random.as_generator("0", op="forward_grad")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: forward_grad: rng must be a minidiff.primitives.random.Generator or an int seed (...), got str
    """
    if rng is None:
        return default_generator(device)
    if isinstance(rng, Generator):
        return _check_device(rng, device, op)
    if _is_int(rng) or isinstance(rng, _np.random.Generator):
        return Generator(rng, device, op=op)
    raise _type_error(op, rng)


def _check_device(rng: Generator, device: DeviceLike, op: str) -> Generator:
    if device is None or rng.device is backend.get_device(device):
        return rng
    dev = backend.get_device(device)
    raise DeviceError(
        f"{op}: the generator draws on {rng.device} but the values are needed on {dev}; pass an int seed "
        f"or md.random.Generator(seed, device={dev.name!r})"
    )


def _is_legacy(rng: object) -> bool:
    return isinstance(rng, _np.random.RandomState)


def seed(n: int) -> None:
    """Reseed the default generators of every device."""
    _DEFAULT.clear()
    _DEFAULT["cpu"] = Generator(n, "cpu")
    _SEED[0] = n


_SEED: list[int | None] = [None]


def normal(
    shape: ShapeLike,
    mean: float = 0.0,
    std: float = 1.0,
    dtype: DTypeLike = "float64",
    device: DeviceLike = None,
    rng: RngLike = None,
) -> Tensor:
    """Gaussian samples of ``shape`` (``rng``: any form :func:`as_generator` takes)."""
    return as_generator(rng, device, op="normal").normal(shape, mean, std, dtype)


def uniform(
    shape: ShapeLike,
    low: float = 0.0,
    high: float = 1.0,
    dtype: DTypeLike = "float64",
    device: DeviceLike = None,
    rng: RngLike = None,
) -> Tensor:
    """Uniform samples on ``[low, high)`` (``rng``: any form :func:`as_generator` takes)."""
    return as_generator(rng, device, op="uniform").uniform(shape, low, high, dtype)


def rademacher(
    shape: ShapeLike, dtype: DTypeLike = "float64", device: DeviceLike = None, rng: RngLike = None
) -> Tensor:
    """Random signs ±1 (``rng``: any form :func:`as_generator` takes)."""
    return as_generator(rng, device, op="rademacher").rademacher(shape, dtype)


def randint(
    low: int,
    high: int | None = None,
    shape: ShapeLike = (),
    dtype: DTypeLike = "int64",
    device: DeviceLike = None,
    rng: RngLike = None,
) -> Tensor:
    """Random integers on ``[low, high)`` (``rng``: any form :func:`as_generator` takes).

    >>> import numpy as np, minidiff as md
    >>> md.random.randint(10, shape=(3,), rng=np.random.default_rng(0)).tolist()
    [8, 6, 5]
    """
    return as_generator(rng, device, op="randint").randint(low, high, shape, dtype)
