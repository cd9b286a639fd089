"""Hypothesis strategies for tensors (requires the ``test`` extra: ``pip install 'minidiff[test]'``).

The defaults draw *meaningful* inputs for derivative tests: an all-empty array, a single element or a
cube-shaped array passes many wrong rules (an empty array passes every derivative check; a transposed
Jacobian of an ``n×n×n`` array has the right shape).  So by default

* :func:`shapes` have 1 to 3 axes, every side ≥ 2 and all sides different (``(3, 5, 2)``, never
  ``(3, 3)``), so a mixed-up axis or permutation changes the shape;
* :func:`broadcastable_shapes` start from such a full shape and give each operand the full shape or a
  broadcast of it (sides set to 1, leading axes dropped), every axis of the full shape kept by at least
  one operand;
* :func:`permutations` favour non-involutions (cyclic shifts), whose inverse differs from themselves.

Degenerate inputs (size 0 and size 1, 0-d) are drawn by :func:`degenerate_shapes` for the tests
dedicated to them.  Passing ``min_side < 2`` to :func:`shapes` or :func:`broadcastable_shapes` gives
Hypothesis' own unconstrained shapes, as before.

>>> import minidiff as md
>>> from hypothesis import given
>>> @given(md.testing.strategies.tensors(shape=(2, 3)))
... def test_shape(x):
...     assert x.shape == (2, 3)
>>> test_shape()
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..backend import numpy_module as np
from ..primitives.creation import asarray
from .battery import noncontiguous_views

__all__ = [
    "shapes",
    "tensors",
    "broadcastable_shapes",
    "degenerate_shapes",
    "permutations",
    "broadcasts_of",
    "float_dtypes",
    "noncontiguous",
]

float_dtypes = st.sampled_from([np.dtype("float32"), np.dtype("float64")])


def _distinct_ok(distinct, min_dims, max_dims, min_side, max_side) -> bool:
    if distinct is None:
        distinct = min_side >= 2
    if distinct and max_side - min_side + 1 < max_dims:
        raise ValueError(
            f"shapes: {max_dims} distinct sides do not fit in [{min_side}, {max_side}]; "
            "raise max_side or pass distinct=False"
        )
    return bool(distinct)


def shapes(
    min_dims: int = 1, max_dims: int = 3, min_side: int = 2, max_side: int = 5, distinct: bool | None = None
) -> Any:
    """Array shapes; by default non-degenerate: sides in [2, 5], all different.

    ``distinct`` (default: when ``min_side >= 2``) makes the sides pairwise different.  With
    ``min_side < 2`` and ``distinct`` not set this is ``hypothesis.extra.numpy.array_shapes``
    (size-0 and size-1 axes included).
    """
    if not _distinct_ok(distinct, min_dims, max_dims, min_side, max_side):
        return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)
    sides = st.integers(min_side, max_side)
    return st.lists(sides, min_size=min_dims, max_size=max_dims, unique=True).map(tuple)


@st.composite
def broadcasts_of(draw, full, num_shapes):
    """``num_shapes`` shapes broadcasting to ``full``: each axis kept (full side) by ≥ 1 operand,
    set to 1 in others; leading axes set to 1 may be dropped."""
    nd = len(full)
    keep = [[draw(st.booleans()) for _ in range(nd)] for _ in range(num_shapes)]
    for axis in range(nd):
        if not any(k[axis] for k in keep):
            keep[draw(st.integers(0, num_shapes - 1))][axis] = True
    out = []
    for k in keep:
        shape = [s if kept else 1 for s, kept in zip(full, k)]
        lead = 0
        while lead < nd and not k[lead]:
            lead += 1
        drop = draw(st.integers(0, lead))
        out.append(tuple(shape[drop:]))
    return tuple(out)


def broadcastable_shapes(
    num_shapes: int = 2,
    min_dims: int = 1,
    max_dims: int = 3,
    min_side: int = 2,
    max_side: int = 5,
    distinct: bool | None = None,
) -> Any:
    """Tuples of ``num_shapes`` shapes that broadcast together (NumPy rules).

    By default the broadcast shape is a non-degenerate :func:`shapes` draw, and every operand is that
    shape or a broadcast of it.  With ``min_side < 2`` (and ``distinct`` not set) this is Hypothesis'
    ``mutually_broadcastable_shapes``, size-0 and size-1 axes included.
    """
    if not _distinct_ok(distinct, min_dims, max_dims, min_side, max_side):
        return hnp.mutually_broadcastable_shapes(
            num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
        ).map(lambda bs: bs.input_shapes)
    full = shapes(min_dims, max_dims, min_side, max_side, distinct=True)
    return full.flatmap(lambda s: broadcasts_of(s, num_shapes))


@st.composite
def degenerate_shapes(draw, min_dims: int = 0, max_dims: int = 3, other_side: int = 3):
    """Shapes of size 0 or 1: 0-d, all-ones, or with a zero side among sides of ``other_side``
    (``(0, 3)``, ``(3, 0, 1)``): what the tests dedicated to degenerate inputs draw."""
    shape = list(draw(st.lists(st.sampled_from([0, 1, other_side]), min_size=min_dims, max_size=max_dims)))
    if shape and int(np.prod(shape)) > 1:
        shape[draw(st.integers(0, len(shape) - 1))] = 0
    return tuple(shape)


@st.composite
def permutations(draw, ndim: int):
    """Axis permutations of ``range(ndim)``, often a cyclic shift (not its own inverse from 3 axes)."""
    if ndim >= 3 and draw(st.booleans()):
        k = draw(st.integers(1, ndim - 1))
        return tuple((i + k) % ndim for i in range(ndim))
    return tuple(draw(st.permutations(range(ndim))))


@st.composite
def noncontiguous(draw, array):
    """The same values as ``array`` held in a non-contiguous view (strided, transposed or reversed,
    i.e. with negative strides), or ``array`` itself."""
    how = draw(st.sampled_from(["strided", "transposed", "reversed", "plain"]))
    return noncontiguous_views(array).get(how, array)


@st.composite
def tensors(
    draw, shape=None, dtype="float64", low: float = -2.0, high: float = 2.0, contiguous=None, device=None
):
    """Tensors with finite values in ``[low, high]``; ``shape``/``dtype`` may be strategies or values
    (default: non-degenerate :func:`shapes`).

    Unless ``contiguous=True``, some draws are non-contiguous views.
    """
    if shape is None:
        shape = shapes()
    if isinstance(shape, st.SearchStrategy):
        shape = draw(shape)
    if isinstance(dtype, st.SearchStrategy):
        dtype = draw(dtype)
    dtype = np.dtype(dtype)
    elements = st.floats(low, high, allow_nan=False, allow_infinity=False, width=dtype.itemsize * 8)
    array = draw(hnp.arrays(dtype, shape, elements=elements))
    if contiguous is not True:
        array = draw(noncontiguous(array))
    return asarray(array, device=device)
