"""The arguments of ``check_grads``: which leaves are differentiated, which are static, and their names.

``args`` is a tuple with one entry per positional argument of ``f``; each entry is a pytree.  A leaf
is *differentiated* when it is a floating tensor, a Python float or a floating NumPy array (the last
two are converted to tensors, as every transform does).  Every other leaf is *static*: ints, bools,
strings, integer or boolean tensors and any other object are passed to ``f`` unchanged and never
perturbed (``None`` is an empty node of the pytree, passed through too).  ``static_argnums`` makes
whole arguments static, whatever they hold: the way to pass a Python float (a step size, a
temperature) or a tensor that ``f`` should not be differentiated with respect to.

``check_grads`` works on the flat list of differentiated leaves: :meth:`Arguments.flat` turns ``f``
into a function of those leaves alone, and :meth:`Arguments.where` names a leaf by its argument index
and pytree path (``args[1]['w'][0]``) for the failure message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

from ..backend import numpy_module as np
from ..primitives.creation import asarray
from ..tensor import pytree
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree

__all__ = ["Arguments"]


def _differentiable(leaf: Any) -> bool:
    """A floating tensor, a Python float or a floating NumPy array/scalar: a leaf to differentiate."""
    if isinstance(leaf, Tensor):
        return np.dtype(leaf.dtype).kind == "f"
    if isinstance(leaf, bool):
        return False
    if isinstance(leaf, (float, np.floating)):
        return True
    return isinstance(leaf, np.ndarray) and leaf.dtype.kind == "f"


def _paths(tree: PyTree, prefix: str) -> list[str]:
    """The path of every leaf of ``tree``, in the order of ``pytree.flatten`` (dicts by sorted key,
    ``None`` no leaf, a namedtuple one leaf)."""
    if isinstance(tree, tuple) and not hasattr(tree, "_fields") or isinstance(tree, list):
        return [p for i, t in enumerate(tree) for p in _paths(t, f"{prefix}[{i}]")]
    if isinstance(tree, dict):
        return [p for k in sorted(tree) for p in _paths(tree[k], f"{prefix}[{k!r}]")]
    if tree is None:
        return []
    return [prefix]


def _static_argnums(op: str, static_argnums: int | Sequence[int], n: int) -> frozenset:
    nums = (static_argnums,) if isinstance(static_argnums, Integral) else static_argnums
    if not isinstance(nums, (tuple, list)) or not all(
        isinstance(i, Integral) and not isinstance(i, bool) for i in nums
    ):
        raise TypeError(f"{op}: static_argnums must be an int or a tuple of ints, got {static_argnums!r}")
    out = set()
    for i in nums:
        if not -n <= i < n:
            raise ValueError(f"{op}: static_argnums names argument {i}, but args has {n} argument(s)")
        out.add(i % n)
    return frozenset(out)


@dataclass
class Arguments:
    """The arguments split into differentiated leaves and static values (see the module doc)."""

    treedef: pytree.TreeDef  # structure of the whole args tuple
    values: list  # every leaf of args, static ones as given, differentiated ones as tensors
    diff: list[int]  # positions in ``values`` of the differentiated leaves
    names: list[tuple[int, str]]  # (argument index, pytree path) of each differentiated leaf

    @classmethod
    def make(cls, op: str, args: Sequence[Any], static_argnums: int | Sequence[int] = ()) -> Arguments:
        if not isinstance(args, (tuple, list)):
            raise TypeError(
                f"{op}: args must be a tuple, one entry per argument of f (got {type(args).__name__}; "
                f"write {op}(f, (x,)))"
            )
        args = tuple(args)
        static = _static_argnums(op, static_argnums, len(args))
        values: list = []
        diff: list[int] = []
        names: list[tuple[int, str]] = []
        for argnum, arg in enumerate(args):
            leaves = pytree.flatten(arg)[0]
            for leaf, path in zip(leaves, _paths(arg, f"args[{argnum}]")):
                if argnum not in static and _differentiable(leaf):
                    diff.append(len(values))
                    names.append((argnum, path))
                    leaf = asarray(leaf)
                values.append(leaf)
        if not diff:
            raise ValueError(
                f"{op}: args hold no floating tensor to differentiate (static: ints, strings, None, "
                f"integer tensors and the arguments in static_argnums={tuple(sorted(static))})"
            )
        return cls(pytree.flatten(args)[1], values, diff, names)

    @property
    def leaves(self) -> tuple:
        """The differentiated leaves, as tensors."""
        return tuple(self.values[i] for i in self.diff)

    def rebuild(self, leaves: Sequence[Any]) -> tuple:
        """``args`` with the differentiated leaves replaced by ``leaves``."""
        values = list(self.values)
        for i, leaf in zip(self.diff, leaves):
            values[i] = leaf
        return pytree.unflatten(self.treedef, values)

    def flat(self, f: Callable[..., Any]) -> Callable[..., Any]:
        """``f`` as a function of the differentiated leaves alone (static ones filled in)."""

        def f_of_leaves(*leaves: Tensor) -> Any:
            return f(*self.rebuild(leaves))

        return f_of_leaves

    def where(self, k: int) -> str:
        """``argument i (args[i]...)`` for differentiated leaf ``k``."""
        argnum, path = self.names[k]
        return f"argument {argnum} ({path})"
