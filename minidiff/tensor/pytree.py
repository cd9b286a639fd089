"""Pytrees: nested tuples, lists and dicts whose leaves are tensors (or numbers)."""

from __future__ import annotations


class TreeDef:
    """The structure of a pytree without its leaves."""

    __slots__ = ("kind", "meta", "children")

    def __init__(self, kind, meta, children):
        self.kind, self.meta, self.children = kind, meta, children

    def __eq__(self, other):
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


def flatten(tree) -> tuple[list, TreeDef]:
    """Leaves in a fixed order (dicts by sorted key) and the structure to rebuild the tree."""
    leaves: list = []

    def go(t):
        if isinstance(t, tuple) and not hasattr(t, "_fields"):
            return TreeDef("tuple", None, tuple(go(c) for c in t))
        if isinstance(t, list):
            return TreeDef("list", None, tuple(go(c) for c in t))
        if isinstance(t, dict):
            keys = tuple(sorted(t))
            return TreeDef("dict", keys, tuple(go(t[k]) for k in keys))
        if t is None:
            return TreeDef("none", None, ())
        leaves.append(t)
        return LEAF

    treedef = go(tree)
    go = None  # the recursive closure refers to itself: break that cycle so the leaves are freed at once
    return leaves, treedef


def unflatten(treedef: TreeDef, leaves) -> object:
    """Rebuild a tree of ``treedef``'s structure from ``leaves``."""
    it = iter(leaves)

    def go(d):
        if d.kind == "leaf":
            return next(it)
        if d.kind == "none":
            return None
        children = [go(c) for c in d.children]
        if d.kind == "tuple":
            return tuple(children)
        if d.kind == "list":
            return children
        return dict(zip(d.meta, children))

    tree = go(treedef)
    go = None  # break the closure's self-reference (it would keep the leaves alive until a gc run)
    return tree


def tree_map(fn, tree, *rest):
    """Apply ``fn`` leaf by leaf to one or more trees of the same structure."""
    leaves, treedef = flatten(tree)
    others = [flatten(r)[0] for r in rest]
    return unflatten(treedef, [fn(*xs) for xs in zip(leaves, *others)])
