"""Hypothesis strategies for tensors (requires the ``test`` extra: ``pip install 'minidiff[test]'``).

>>> import minidiff as md
>>> from hypothesis import given
>>> @given(md.testing.strategies.tensors(shape=(2, 3)))
... def test_shape(x):
...     assert x.shape == (2, 3)
>>> test_shape()
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..backend import numpy_module as np
from ..creation import asarray

__all__ = ["shapes", "tensors", "broadcastable_shapes", "float_dtypes", "noncontiguous"]

float_dtypes = st.sampled_from([np.dtype("float32"), np.dtype("float64")])


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 0, max_side: int = 4):
    """Array shapes, including size-0 and size-1 axes by default."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(
    num_shapes: int = 2, min_dims: int = 0, max_dims: int = 3, min_side: int = 0, max_side: int = 4
):
    """Tuples of ``num_shapes`` shapes that broadcast together (NumPy rules)."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    ).map(lambda bs: bs.input_shapes)


@st.composite
def noncontiguous(draw, array):
    """The same values as ``array`` held in a non-contiguous view (strided, transposed or reversed,
    i.e. with negative strides), or ``array`` itself."""
    how = draw(st.sampled_from(["strided", "transposed", "reversed", "plain"]))
    if how == "strided" and array.ndim:
        big = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), dtype=array.dtype)
        big[..., ::2] = array
        return big[..., ::2]
    if how == "transposed" and array.ndim >= 2:
        return np.ascontiguousarray(array.swapaxes(-1, -2)).swapaxes(-1, -2)
    if how == "reversed" and array.ndim:
        return np.ascontiguousarray(array[..., ::-1])[..., ::-1]
    return array


@st.composite
def tensors(
    draw, shape=None, dtype="float64", low: float = -2.0, high: float = 2.0, contiguous=None, device=None
):
    """Tensors with finite values in ``[low, high]``; ``shape``/``dtype`` may be strategies or values.

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
