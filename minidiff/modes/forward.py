"""Forward mode: dual numbers.

A :class:`Dual` pairs a primal value with a tangent of the same shape.  Each primitive applied to a
dual computes its primal output one level down and pushes the tangent through its JVP rule at once:
nothing is stored for later, so memory does not grow with the depth of the computation.

Vector mode (K directions in one pass) is a dual whose tangent is batched by ``vmap``: the JVP rules
then run on a tangent with a leading axis of K directions (see ``jvp(..., vectorized=True)``).

The explicit API, for teaching::

    >>> import minidiff as md
    >>> with md.dual_level():
    ...     x = md.make_dual(md.tensor(2.0), md.tensor(1.0))
    ...     y = x * x + 3 * x
    ...     primal, tangent = md.unpack_dual(y)
    >>> primal.item(), tangent.item()
    (10.0, 7.0)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import TracerError
from ..primitives.creation import asarray, zeros
from ..primitives.registry import bind_args
from ..primitives.shape import broadcast_to
from ..tensor.core import ArrayLike, Tensor, Tracer, check_differentiable, check_like
from . import levels


class Dual(Tracer):
    """A dual number ``primal + tangent·ε`` owned by one forward trace."""

    __slots__ = ("tangent",)

    def __init__(self, trace: ForwardTrace, primal: Tensor, tangent: Tensor) -> None:
        self._init(trace, primal)
        self.tangent = tangent

    def _repr_fields(self) -> list[tuple[str, object]]:
        return [("value", self), ("tangent", self.tangent)]  # display only (see Tracer.__repr__)


class ForwardTrace(levels.Trace):
    kind = "forward"

    def process(self, prim: Any, args: Any, params: Any) -> Any:
        primals = list(args)
        tangents: list[Tensor | None] = [None] * len(args)
        for i, a in enumerate(args):
            if isinstance(a, Dual) and a._trace is self:
                primals[i] = a.primal
                tangents[i] = a.tangent
        out = bind_args(prim, primals, params)
        t_out = prim.jvp(primals, tangents, out, params)
        if t_out is None:  # the output carries no derivative (a comparison, sign, ...)
            return out
        return Dual(self, out, fit(t_out, out))


def _zeros_like(x: Any) -> Any:

    return zeros(x.shape, dtype=x.dtype, device=x.device)


def fit(t: Tensor, like: Tensor) -> Tensor:
    """Broadcast and cast a tangent contribution to the shape and dtype of the value it belongs to."""
    if t.shape != like.shape:
        t = broadcast_to(t, like.shape)
    if t.dtype != like.dtype:
        t = t.astype(like.dtype)
    return t


def check_tangent(op: str, primal: Tensor, tangent: Tensor) -> None:
    """A tangent must have its primal's shape, dtype and device."""
    check_like(op, "tangent", tangent, primal)


# ----------------------------------------------------------------------------- explicit dual API
_DUAL_LEVELS: list[ForwardTrace] = []


@contextmanager
def dual_level() -> Iterator[None]:
    """Open a forward-mode level for :func:`make_dual` / :func:`unpack_dual` (teaching API)."""
    with levels.new_level(ForwardTrace) as trace:
        _DUAL_LEVELS.append(trace)
        try:
            yield trace
        finally:
            _DUAL_LEVELS.pop()


def make_dual(primal: ArrayLike, tangent: ArrayLike) -> Dual:
    """A dual number at the innermost :func:`dual_level`: ``primal`` carrying ``tangent``."""

    if not _DUAL_LEVELS or not _DUAL_LEVELS[-1].active:
        raise TracerError("make_dual: no open dual level; use `with md.dual_level():`")
    primal = asarray(primal)
    tangent = asarray(tangent, device=primal.device)
    check_differentiable("make_dual", primal)
    check_tangent("make_dual", primal, tangent)
    return Dual(_DUAL_LEVELS[-1], primal, tangent)


def unpack_dual(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(primal, tangent)`` of ``x`` at the innermost dual level (tangent zero if ``x`` has none)."""
    if not _DUAL_LEVELS:
        raise TracerError("unpack_dual: no open dual level; use `with md.dual_level():`")
    trace = _DUAL_LEVELS[-1]
    if isinstance(x, Dual) and x._trace is trace:
        return x.primal, x.tangent
    if isinstance(x, Tracer) and not x._trace.active:
        raise TracerError(f"unpack_dual: this value belongs to {x._trace}, which is already closed")
    return x, _zeros_like(x)
