"""Levels: one per transform call, so nested transforms never confuse their values.

Every ``jvp``/``vjp``/``grad``/``vmap`` call opens a fresh :class:`Trace` one level above the
innermost open one, and closes it when it returns.  A tracer remembers its trace; the dispatcher
always lets the highest-level trace among an operation's arguments act first, and that trace works
on values one level down.  This is the idea of JAX's autodidax, kept small: level 1 is the
*ambient tape* used by ``requires_grad=True`` tensors, and transforms stack above it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

_STACK: list = []  # open traces, innermost last


class Trace:
    """Base class of the three traces (forward, reverse, batch)."""

    kind = "trace"

    def __init__(self) -> None:
        self.level = len(_STACK) + 1
        self.active = True

    def __str__(self) -> str:
        return f"{self.kind} (level {self.level})"

    def process(self, prim: Any, args: Any, params: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


_T = TypeVar("_T", bound=Trace)


def push(trace: _T) -> _T:
    _STACK.append(trace)
    return trace


def pop(trace: Trace) -> None:
    if not _STACK or _STACK[-1] is not trace:
        raise RuntimeError(f"transform levels closed out of order: {trace} is not the innermost")
    _STACK.pop()
    trace.active = False


@contextmanager
def new_level(trace_class: type[Trace], *args: Any, **kwargs: Any) -> Iterator[Any]:
    """Open a trace of ``trace_class`` one level above the innermost, close it on exit."""
    trace = push(trace_class(*args, **kwargs))
    try:
        yield trace
    finally:
        pop(trace)


def depth() -> int:
    """How many traces are open (the ambient tape counts as one)."""
    return len(_STACK)
