"""Parameters as one flat vector: the one flattening helper of the optimizers that need it
(:class:`.LBFGS`, :class:`.BFGS`, :class:`.DFP`, :class:`.SR1`, :class:`.Newton`).

>>> import minidiff as md
>>> a = md.tensor([[1.0, 2.0]], requires_grad=True); b = md.tensor([3.0], requires_grad=True)
>>> x = flatten([a.detach(), b.detach()])
>>> x.tolist(), [t.shape for t in unflatten(x, [a, b])]
([1.0, 2.0, 3.0], [(1, 2), (1,)])
>>> assign_flat([a, b], 2 * x); a.tolist(), b.tolist()
([[2.0, 4.0]], [6.0])
"""

from __future__ import annotations

from collections.abc import Sequence

from ..modes.reverse import assign_, no_grad
from ..primitives.ops import concatenate
from ..tensor.core import Tensor

__all__ = ["assign_flat", "flatten", "unflatten"]


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """The tensors' entries, each raveled, one after the other."""
    return concatenate([t.reshape(-1) for t in tensors])


def unflatten(x: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """``x`` cut into pieces shaped as ``like`` (differentiable: slices and reshapes of ``x``)."""
    pieces, offset = [], 0
    for t in like:
        pieces.append(x[offset : offset + t.size].reshape(t.shape))
        offset += t.size
    return pieces


def assign_flat(params: Sequence[Tensor], x: Tensor) -> None:
    """Put the flat vector ``x`` into the parameters (:func:`minidiff.assign_`, under ``no_grad``)."""
    with no_grad():
        for p, value in zip(params, unflatten(x, params)):
            assign_(p, value)
