"""Pytrees: nested tuples, lists and dicts whose leaves are tensors (or numbers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

#: A nested tuple, list or dict whose leaves are tensors (or numbers): too free-form to spell exactly.
PyTree = Any


class TreeDef:
    """The structure of a pytree without its leaves."""

    __slots__ = ("kind", "meta", "children")

    def __init__(self, kind: str, meta: Any, children: tuple[TreeDef, ...]):
        self.kind, self.meta, self.children = kind, meta, children

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TreeDef)
            and self.kind == other.kind
            and self.meta == other.meta
            and self.children == other.children
        )

    def __repr__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        inner = ", ".join(repr(c) for c in self.children)
        if self.kind == "dict":
            inner = ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.meta, self.children))
            return "{" + inner + "}"
        return ("(" if self.kind == "tuple" else "[") + inner + (")" if self.kind == "tuple" else "]")


LEAF = TreeDef("leaf", None, ())


def flatten(tree: PyTree) -> tuple[list, TreeDef]:
    """Leaves in a fixed order (dicts by sorted key) and the structure to rebuild the tree."""
    leaves: list = []
    return leaves, _structure(tree, leaves)


def _structure(t: PyTree, leaves: list) -> TreeDef:
    """``t``'s structure, appending its leaves to ``leaves`` (a module function, not a recursive
    closure: a closure that refers to itself is a cycle that would keep the leaves alive until a gc run)."""
    if isinstance(t, tuple) and not hasattr(t, "_fields"):
        return TreeDef("tuple", None, tuple(_structure(c, leaves) for c in t))
    if isinstance(t, list):
        return TreeDef("list", None, tuple(_structure(c, leaves) for c in t))
    if isinstance(t, dict):
        keys = tuple(sorted(t))
        return TreeDef("dict", keys, tuple(_structure(t[k], leaves) for k in keys))
    if t is None:
        return TreeDef("none", None, ())
    leaves.append(t)
    return LEAF


def unflatten(treedef: TreeDef, leaves: Iterable[Any]) -> PyTree:
    """Rebuild a tree of ``treedef``'s structure from ``leaves``."""
    return _build(treedef, iter(leaves))


def _build(d: TreeDef, it: Iterator[Any]) -> PyTree:
    if d.kind == "leaf":
        return next(it)
    if d.kind == "none":
        return None
    children = [_build(c, it) for c in d.children]
    if d.kind == "tuple":
        return tuple(children)
    if d.kind == "list":
        return children
    return dict(zip(d.meta, children))


def tree_map(fn: Callable[..., Any], tree: PyTree, *rest: PyTree) -> PyTree:
    """Apply ``fn`` leaf by leaf to one or more trees of the same structure."""
    leaves, treedef = flatten(tree)
    others = [flatten(r)[0] for r in rest]
    return unflatten(treedef, [fn(*xs) for xs in zip(leaves, *others)])
