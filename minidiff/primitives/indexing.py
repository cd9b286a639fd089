"""Functional index updates: ``x.at[index].set(v)`` and friends, in JAX's spelling.

A minidiff tensor is a value, so ``x[index] = v`` is not allowed; ``x.at[index].set(v)`` returns a new
tensor with those entries replaced and leaves ``x`` as it was.  The updates are composites of
differentiable primitives — ``scatter`` (the transpose of indexing) places ``v`` in a tensor of
``x``'s shape and ``where`` picks between the two under a constant mask — so they differentiate with
respect to ``x`` and ``v`` in every mode and nesting, with no rules of their own.

>>> import minidiff as md
>>> x = md.tensor([1.0, 2.0, 3.0])
>>> y = x.at[1].set(10.0)
>>> y.tolist(), x.tolist()
([1.0, 10.0, 3.0], [1.0, 2.0, 3.0])
>>> md.grad(lambda v: x.at[0].set(v).sum() * v)(md.tensor(2.0)).item()  # d/dv (v + 5) v = 2v + 5
9.0
"""

from __future__ import annotations

from ..backend import scatter_add
from ..tensor.core import Tensor
from . import ops
from .registry import bind
from .shape import _is_basic, _normalize_index, scatter_p


class IndexUpdater:
    """``x.at``: index it to choose the entries to update."""

    __slots__ = ("_x",)

    def __init__(self, x: Tensor):
        self._x = x

    def __getitem__(self, index) -> IndexUpdate:
        return IndexUpdate(self._x, index)

    def __repr__(self) -> str:
        return f"_IndexUpdater({self._x!r})"


class IndexUpdate:
    """``x.at[index]``: the update methods, each returning a new tensor of ``x``'s shape and dtype."""

    __slots__ = ("_x", "_index", "_raw")

    def __init__(self, x: Tensor, index):
        self._x = x
        self._index = index
        self._raw = _normalize_index(x, index)

    def get(self) -> Tensor:
        """``x[index]``."""
        return self._x[self._index]

    def set(self, values) -> Tensor:
        """``x`` with ``x[index]`` replaced by ``values`` (broadcast); each entry may be named once.

        >>> import minidiff as md
        >>> md.zeros((2, 3)).at[:, 1].set(md.tensor([4.0, 5.0])).tolist()
        [[0.0, 4.0, 0.0], [0.0, 5.0, 0.0]]
        """
        self._check_unique("set")
        return ops.where(self._mask(), self._scatter("set", values), self._x)

    def add(self, values) -> Tensor:
        """``x`` with ``values`` added at ``index``; an entry named several times gets every value
        (as ``numpy.add.at``).

        >>> import minidiff as md
        >>> md.zeros(3).at[md.tensor([0, 0, 2])].add(1.0).tolist()
        [2.0, 0.0, 1.0]
        """
        return self._x + self._scatter("add", values)

    def multiply(self, values) -> Tensor:
        """``x`` with the entries at ``index`` multiplied by ``values``; each entry may be named once."""
        self._check_unique("multiply")
        return ops.where(self._mask(), self._x * self._scatter("multiply", values), self._x)

    def min(self, values) -> Tensor:
        """``x`` with the entries at ``index`` replaced by ``minimum(x[index], values)``."""
        self._check_unique("min")
        return ops.where(self._mask(), ops.minimum(self._x, self._scatter("min", values)), self._x)

    def max(self, values) -> Tensor:
        """``x`` with the entries at ``index`` replaced by ``maximum(x[index], values)``."""
        self._check_unique("max")
        return ops.where(self._mask(), ops.maximum(self._x, self._scatter("max", values)), self._x)

    # ------------------------------------------------------------------ helpers
    def _probe(self):
        """A zero-strided backend array of ``x``'s (logical) shape, for shape and mask computations."""
        xp = self._x.device.xp
        return xp, xp.broadcast_to(xp.zeros((), dtype=bool), self._x.shape)

    def _scatter(self, op: str, values) -> Tensor:
        """``values`` broadcast to the shape of ``x[index]`` and placed in zeros of ``x``'s shape."""
        x = self._x
        _, probe = self._probe()
        part = probe[self._raw].shape
        v = values if isinstance(values, Tensor) else ops.asarray(values, device=x.device)
        try:
            v = ops.broadcast_to(v, part)
        except ValueError as exc:
            raise type(exc)(
                f"x.at[...].{op}: values of shape {v.shape} do not broadcast to the indexed shape "
                f"{part} (x has shape {x.shape})"
            ) from exc
        if v.dtype != x.dtype:
            v = v.astype(x.dtype)
        return bind(scatter_p, v, index=self._raw, shape=x.shape)

    def _mask(self) -> Tensor:
        """A constant boolean tensor: True at the entries ``index`` names."""
        xp, probe = self._probe()
        mask = xp.zeros(probe.shape, dtype=bool)
        mask[self._raw] = True
        return ops.asarray(mask, device=self._x.device)

    def _check_unique(self, op: str) -> None:
        if _is_basic(self._raw):
            return
        xp, probe = self._probe()
        counts = xp.zeros(probe.shape, dtype=xp.int64)

        scatter_add(xp, counts, self._raw, xp.ones(probe[self._raw].shape, dtype=xp.int64))
        if counts.size and int(counts.max()) > 1:
            raise ValueError(
                f"x.at[...].{op}: the index names some entries of x (shape {self._x.shape}) more than "
                f"once, so which value wins is ambiguous; make the indices unique, or use .add"
            )
