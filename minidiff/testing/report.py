"""What a failed derivative check says: :class:`GradCheckError`, and naming the function and primitive."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..primitives.registry import Primitive
from ..tensor import pytree
from ..tensor.core import Tensor
from ..transforms.core import vjp
from ..transforms.inspect_tape import tape_nodes

__all__ = ["GradCheckError", "describe_function", "order_text"]

_MODE = {"fwd": "forward", "rev": "reverse", "JVP": "forward", "VJP": "reverse"}


class GradCheckError(AssertionError):
    """A derivative that ``check_grads`` found wrong; an ``AssertionError``, so a failing check fails a
    test.  Its attributes say what failed:

    ``function`` (the name of ``f``), ``primitive`` (the primitive at fault when it is known: ``f``
    itself, or the only primitive — or only ``md.primitive`` — that ``f`` calls; else None), ``rule``
    (``"JVP"`` or ``"VJP"``), ``order`` (1 for first derivatives) and ``order_text`` (e.g. ``"order 2:
    the derivative of the VJP, by forward over reverse mode"``), ``argnum`` and ``leaf`` (the argument
    index and the pytree path of the failing leaf, e.g. ``"args[1]['w']"``), ``element`` (the input
    element's index in that leaf, None when it was not searched for), ``got`` (from the rule) and
    ``want`` (from finite differences), ``tolerance``, ``compared`` (what the two numbers are) and
    ``settings`` (rtol, atol).
    """

    __module__ = "minidiff.testing"  # where users import it from (and what a traceback shows)

    # the fields (set from the keywords of __init__; see the class doc)
    function: str
    primitive: str | None
    primitive_text: str
    primitive_is_f: bool
    rule: str
    order: int
    order_text: str
    argnum: int
    leaf: str
    element: tuple[int, ...] | None
    got: float
    want: float
    tolerance: float
    compared: str
    settings: str

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)
        super().__init__(self._message())

    def _message(self) -> str:
        if self.primitive_text and self.primitive_is_f:
            who = self.primitive_text
        else:
            who = self.function + (f", {self.primitive_text}" if self.primitive_text else "")
        element = "" if self.element is None else f", input element {self.element}"
        return "\n".join(
            [
                f"check_grads({who}): the {self.rule} rule is wrong at {self.order_text}: "
                f"{self.leaf_text()}{element}: got {self.got!r}, want {self.want!r}",
                f"  compared: {self.compared}",
                f"  |got - want| = {abs(self.got - self.want):.3g} > tolerance {self.tolerance:.3g} ({self.settings})",
            ]
        )

    def leaf_text(self) -> str:
        return f"argument {self.argnum} ({self.leaf})"


def order_text(path: tuple, mode: str) -> tuple[str, int, str]:
    """``(rule, order, description)`` of a check in ``mode`` of the function reached along ``path``
    (``("VJP",)``: ``x ↦ J(x)ᵀ·u``).  At order 1 the rule is the mode's own; one order up it is the
    rule being differentiated, the innermost of ``path``."""
    if not path:
        return ("JVP" if mode == "fwd" else "VJP"), 1, f"first order ({_MODE[mode]} mode)"
    of = " of the ".join(reversed(path))
    modes = " over ".join([_MODE[mode]] + [_MODE[p] for p in reversed(path)])
    n = len(path) + 1
    return path[0], n, f"order {n} (the derivative of the {of}, by {modes} mode)"


def _bound_primitives(F: Callable[..., Any], xs: Sequence[Tensor]) -> list:
    """The primitives ``F(*xs)`` binds at its top level (recorded on a tape), in order, each once."""
    found: list = []

    def spy(*a: Any) -> Any:
        out = F(*a)
        for o in pytree.flatten(out)[0]:
            try:
                found.extend(n.prim for n in tape_nodes(o) if n.prim is not None)
            except TypeError:  # an output not on the tape (a constant)
                pass
        return out

    try:
        vjp(spy, *xs)
    except Exception:  # noqa: BLE001 - naming is best effort; the check itself reports errors
        return []
    unique = {id(p): p for p in found}
    return list(unique.values())


def _label(p: Primitive) -> str:
    return f"md.primitive {p.name!r}" if p.kind == "custom" else f"primitive {p.name!r}"


def describe_function(f: Callable[..., Any], F: Callable[..., Any], xs: Sequence[Tensor]) -> dict:
    """The fields of :class:`GradCheckError` that name ``f`` and the primitive at fault: ``f`` itself
    when it is a primitive, else the one primitive it calls, or the one ``md.primitive`` among those."""
    name = getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or repr(f)
    if "<locals>" in name:  # a closure's qualified name says where it was made, not what it is
        name = getattr(f, "__name__", name)
    out = dict(function=name, primitive=None, primitive_text="", primitive_is_f=isinstance(f, Primitive))
    if isinstance(f, Primitive):
        return {**out, "primitive": f.name, "primitive_text": _label(f)}
    prims = _bound_primitives(F, xs)
    users = [p for p in prims if p.kind == "custom"]
    names = ", ".join(p.name for p in prims[:8]) + (", ..." if len(prims) > 8 else "")
    if len(prims) == 1:
        return {**out, "primitive": prims[0].name, "primitive_text": _label(prims[0])}
    if len(users) == 1:
        text = f"{_label(users[0])}, the one md.primitive among those it calls: {names}"
        return {**out, "primitive": users[0].name, "primitive_text": text}
    return {**out, "primitive_text": f"calls {names}" if prims else ""}
