"""Seedable random tensors: ``normal``, ``uniform``, ``rademacher``, ``randint``.

Each function draws from a :class:`Generator` (the module's default one unless ``rng`` is given);
``seed(n)`` resets the default.  Generators use the backend's own bit generator, so samples are
made where they are used (on the GPU for ``device="cuda"``).

>>> import minidiff as md
>>> rng = md.random.Generator(0)
>>> v = rng.rademacher((3,), dtype="float32")
>>> sorted(set(v.tolist())) in ([-1.0], [1.0], [-1.0, 1.0])
True
"""

from __future__ import annotations

from . import backend
from .creation import _dtype
from .tensor import Tensor, wrap

__all__ = ["Generator", "seed", "normal", "uniform", "rademacher", "randint", "default_generator"]


class Generator:
    """A seeded source of random tensors on one device."""

    def __init__(self, seed=None, device=None):
        self.device = backend.get_device(device)
        self._rng = self.device.xp.random.default_rng(seed)

    def get_state(self):
        """The bit generator's state (to checkpoint a run that draws random numbers)."""
        import copy

        return copy.deepcopy(self._rng.bit_generator.state)

    def set_state(self, state) -> None:
        """Resume from a state :meth:`get_state` returned."""
        import copy

        self._rng.bit_generator.state = copy.deepcopy(state)

    def normal(self, shape, mean=0.0, std=1.0, dtype="float64") -> Tensor:
        """Gaussian samples; float32 is drawn directly in float32 (no float64 detour)."""
        dt = _dtype(dtype)
        if dt.kind != "f":
            raise TypeError(f"normal: dtype must be floating, got {dt}")
        if dt.itemsize >= 4:
            out = self._rng.standard_normal(shape, dtype=dt)
        else:
            out = self._rng.standard_normal(shape).astype(dt)
        if std != 1.0:
            out *= std
        if mean != 0.0:
            out += mean
        return wrap(out, self.device)

    def uniform(self, shape, low=0.0, high=1.0, dtype="float64") -> Tensor:
        """Samples uniform on ``[low, high)``."""
        dt = _dtype(dtype)
        out = self._rng.random(shape, dtype=dt if dt.itemsize >= 4 else None).astype(dt, copy=False)
        if (low, high) != (0.0, 1.0):
            out *= high - low
            out += low
        return wrap(out, self.device)

    def rademacher(self, shape, dtype="float64") -> Tensor:
        """±1 with equal probability, from random bits: one byte of bits makes eight signs, looked up in a
        256×8 table so the output is written once, directly in ``dtype``."""
        xp = self.device.xp
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        n = 1
        for s in shape:
            n *= s
        dt = _dtype(dtype)
        table = _SIGN_TABLES.get((self.device.name, dt))
        if table is None:
            bits = xp.unpackbits(xp.arange(256, dtype=xp.uint8)[:, None], axis=1)
            table = _SIGN_TABLES[(self.device.name, dt)] = bits.astype(dt) * 2 - 1
        words = self._rng.integers(0, 256, size=(n + 7) // 8, dtype=xp.uint8)
        # xp.take is about 6x faster than fancy indexing table[words] here
        out = xp.take(table, words, axis=0).reshape(-1)[:n].reshape(shape)
        return wrap(out, self.device)

    def randint(self, low, high=None, shape=(), dtype="int64") -> Tensor:
        """Integers uniform on ``[low, high)`` (``[0, low)`` if ``high`` is None)."""
        if high is None:
            low, high = 0, low
        return wrap(self._rng.integers(low, high, size=shape, dtype=_dtype(dtype)), self.device)

    def permutation(self, n: int) -> Tensor:
        """A random permutation of ``range(n)``."""
        return wrap(self._rng.permutation(n), self.device)


_DEFAULT: dict = {}
_SIGN_TABLES: dict = {}


def default_generator(device=None) -> Generator:
    dev = backend.get_device(device)
    if dev.name not in _DEFAULT:
        _DEFAULT[dev.name] = Generator(None, dev)
    return _DEFAULT[dev.name]


def seed(n: int) -> None:
    """Reseed the default generators of every device."""
    _DEFAULT.clear()
    _DEFAULT["cpu"] = Generator(n, "cpu")
    _SEED[0] = n


_SEED = [None]


def _gen(rng, device):
    if rng is not None:
        return rng
    dev = backend.get_device(device)
    if dev.name not in _DEFAULT:
        _DEFAULT[dev.name] = Generator(_SEED[0], dev)
    return _DEFAULT[dev.name]


def normal(shape, mean=0.0, std=1.0, dtype="float64", device=None, rng: Generator | None = None) -> Tensor:
    """Gaussian samples of ``shape``."""
    return _gen(rng, device).normal(shape, mean, std, dtype)


def uniform(shape, low=0.0, high=1.0, dtype="float64", device=None, rng: Generator | None = None) -> Tensor:
    """Uniform samples on ``[low, high)``."""
    return _gen(rng, device).uniform(shape, low, high, dtype)


def rademacher(shape, dtype="float64", device=None, rng: Generator | None = None) -> Tensor:
    """Random signs ±1."""
    return _gen(rng, device).rademacher(shape, dtype)


def randint(low, high=None, shape=(), dtype="int64", device=None, rng: Generator | None = None) -> Tensor:
    """Random integers on ``[low, high)``."""
    return _gen(rng, device).randint(low, high, shape, dtype)
