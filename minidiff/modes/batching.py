"""Batching (``vmap``): run a function written for one example on a whole batch at once.

A :class:`Batched` tracer holds a value whose axis 0 is the batch axis; its ``shape`` is the shape
of one example.  Each primitive declares how to act on such values (``prim.batch``): elementwise ops
align ranks, axis-taking ops shift their axes by one, matmul and einsum add a batch dimension.

This is what vector-mode forward differentiation stands on: a JVP whose tangent is batched pushes K
directions through one pass (``jvp(..., vectorized=True)``, ``jacfwd``), and ``jacrev`` batches the
cotangents of one reverse pass.
"""

from __future__ import annotations

from typing import Any

from ..primitives.batching_rules import batch_by_loop
from ..tensor.core import Tensor, Tracer
from . import levels


class Batched(Tracer):
    """A batch of values, batch axis first in ``primal``."""

    __slots__ = ()
    is_batch = True

    def __init__(self, trace: BatchTrace, primal: Tensor) -> None:
        self._init(trace, primal, primal.shape[1:])

    def _repr_fields(self) -> list[tuple[str, object]]:
        # one row of ``values`` per example (display only, see Tracer.__repr__)
        return [("batch_size", self._trace.size), ("value", self)]


class BatchTrace(levels.Trace):
    kind = "vmap"

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def process(self, prim: Any, args: Any, params: Any) -> Any:
        vals = list(args)
        batched = [False] * len(args)
        for i, a in enumerate(args):
            if isinstance(a, Batched) and a._trace is self:
                vals[i] = a.primal
                batched[i] = True
        rule = prim.batch or batch_by_loop(prim)
        out = rule(vals, batched, self.size, **params)
        return Batched(self, out)

    def detached(self, x: Batched) -> Batched:
        return Batched(self, x.primal.detach())
