"""Splitting a data set and iterating over it in seeded, shuffled minibatches.

>>> from minidiff import data
>>> x, y = data.load_digits(size=8, flatten=True)
>>> x_train, x_test, y_train, y_test = data.train_test_split(x, y, test_fraction=0.2, seed=0)
>>> x_train.shape, x_test.shape
((1438, 64), (359, 64))
>>> loader = data.batches(x_train, y_train, 64, seed=0)
>>> len(loader), [b.shape for b in next(iter(loader))]
(22, [(64, 64), (64,)])
"""

from __future__ import annotations

from collections.abc import Iterator

from ..backend import Device
from ..errors import check_number
from ..primitives.creation import asarray
from ..primitives.random import Generator, RngLike, as_generator
from ..tensor.core import Tensor

__all__ = ["train_test_split", "Batches", "batches"]


def _pair(x: Tensor, y: Tensor, op: str) -> tuple[Tensor, Tensor]:
    x, y = asarray(x), asarray(y)
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{op}: x and y need the same number of samples along axis 0, got shapes {x.shape} and {y.shape}"
        )
    if x.device is not y.device:
        raise ValueError(f"{op}: x is on {x.device} but y on {y.device}")
    return x, y


def _permutation(n: int, rng: Generator, device: Device) -> Tensor:
    return asarray(rng.permutation(n).numpy(), device=device)


def train_test_split(
    x: Tensor, y: Tensor, test_fraction: float = 0.2, seed: RngLike = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A seeded random split: ``(x_train, x_test, y_train, y_test)`` (scikit-learn's order).

    ``round(N·test_fraction)`` samples go to the test part, at least one and at most N − 1; there is no
    stratification.  The same seed gives the same split.  ``seed`` may also be a
    :class:`minidiff.primitives.random.Generator` or a ``numpy.random.Generator`` (see
    :func:`minidiff.primitives.random.as_generator`).
    """
    x, y = _pair(x, y, "train_test_split")
    check_number(
        "train_test_split", "test_fraction", test_fraction, low=0, high=1, low_open=True, high_open=True
    )
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"train_test_split: need at least 2 samples to split, got {n}")
    n_test = min(max(int(round(n * test_fraction)), 1), n - 1)
    perm = _permutation(n, as_generator(seed, op="train_test_split"), x.device)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], x[test], y[train], y[test]


class Batches:
    """Minibatches ``(x_batch, y_batch)`` of one epoch per iteration, shuffled by a seeded generator.

    Each ``iter()`` runs one epoch and draws that epoch's order from the generator, so successive epochs
    differ while the whole sequence is fixed by ``seed``: an int, a :class:`minidiff.primitives.random.Generator` or a
    ``numpy.random.Generator`` (see :func:`minidiff.primitives.random.as_generator`), or None for the default
    generator (fresh randomness unless :func:`minidiff.primitives.random.seed` was called).  Every sample
    appears once per epoch; with ``drop_last=True`` the last ``N mod batch_size`` of the epoch's order
    are skipped (``len()`` counts full batches only), with ``drop_last=False`` they form a smaller last
    batch.  ``shuffle=False`` keeps the data order.  :meth:`forever` chains epochs without end, for
    loops counted in steps.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        seed: RngLike = None,
        shuffle: bool = True,
        drop_last: bool = True,
    ):
        self.x, self.y = _pair(x, y, "batches")
        check_number("batches", "batch_size", batch_size, low=1, integer=True)
        self.batch_size = int(batch_size)
        self.n = self.x.shape[0]
        if drop_last and self.batch_size > self.n:
            raise ValueError(
                f"batches: batch_size {self.batch_size} is larger than the {self.n} samples, so with "
                "drop_last=True an epoch would have no batch"
            )
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.rng = as_generator(seed, op="batches")
        self.epoch = 0  # epochs started so far

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def order(self) -> Tensor | None:
        """The next epoch's sample order (an int64 tensor on the data's device); advances the epoch."""
        self.epoch += 1
        if self.shuffle:
            return _permutation(self.n, self.rng, self.x.device)
        return None

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.order()
        bs = self.batch_size
        for k in range(len(self)):
            if order is None:
                yield self.x[k * bs : (k + 1) * bs], self.y[k * bs : (k + 1) * bs]
            else:
                idx = order[k * bs : (k + 1) * bs]
                yield self.x[idx], self.y[idx]

    def next_epoch(self) -> list:
        """All batches of the next epoch, as a list."""
        return list(self)

    def forever(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches of epoch after epoch, without end."""
        while True:
            yield from self

    def __repr__(self) -> str:
        return (
            f"Batches(n={self.n}, batch_size={self.batch_size}, batches={len(self)}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last})"
        )


def batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    seed: RngLike = None,
    shuffle: bool = True,
    drop_last: bool = True,
) -> Batches:
    """Seeded shuffled minibatches over ``(x, y)``: iterate it for one epoch (see :class:`Batches`)."""
    return Batches(x, y, batch_size, seed=seed, shuffle=shuffle, drop_last=drop_last)
