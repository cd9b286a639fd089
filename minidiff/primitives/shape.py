"""Structural primitives: all linear.  The JVP of each is the op applied to the tangent; the VJP is
its transpose, given on the same line.  Axis parameters are normalized to non-negative integers
before binding, so a batching rule only shifts them by one.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from numbers import Integral
from typing import Any

from ..errors import DeviceError, ShapeError
from ..tensor.core import ArrayLike, Axis, DeviceLike, ShapeLike, Tensor, Tracer
from .batching_rules import align, materialize, shift_axes
from .registry import Linear, bind, linear


# ----------------------------------------------------------------------------- helpers
def normalize_axis(op: str, axis, ndim: int, allow_none: bool = True):
    """``axis`` (int, tuple or None) as a sorted tuple of non-negative axes of a rank-``ndim`` array."""
    if axis is None:
        if not allow_none:
            raise ShapeError(f"{op}: an axis is required")
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        if not isinstance(a, Integral):
            raise ShapeError(f"{op}: axis must be an integer, got {a!r}")
        a = int(a)
        if not -ndim <= a < ndim:
            raise ShapeError(f"{op}: axis {a} is out of range for an array of {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def normalize_one_axis(op: str, axis, ndim: int) -> int:
    return normalize_axis(op, axis, ndim, allow_none=False)[0]


def _batch_transpose(axes):
    return (0,) + tuple(a + 1 for a in axes)


def _inverse_perm(axes):
    inv = [0] * len(axes)
    for i, a in enumerate(axes):
        inv[a] = i
    return tuple(inv)


# ----------------------------------------------------------------------------- primitives
# fmt: off
# name            impl                                         transpose (VJP)
reshape_p: Linear = linear(
    "reshape", lambda xp, x, shape: xp.reshape(x, shape),
    lambda g, ans, x, shape: reshape(g, x.shape),
    lambda vals, b, n, shape: bind(reshape_p, vals[0], shape=(vals[0].shape[0],) + shape),
)
broadcast_to_p: Linear = linear(
    "broadcast_to", lambda xp, x, shape: xp.broadcast_to(x, shape),
    lambda g, ans, x, shape: sum_to(g, x.shape),
    lambda vals, b, n, shape: bind(broadcast_to_p, align(vals[0], vals[0].ndim - 1, len(shape)), shape=(vals[0].shape[0],) + shape),
)
transpose_p: Linear = linear(
    "transpose", lambda xp, x, axes: xp.transpose(x, axes),
    lambda g, ans, x, axes: bind(transpose_p, g, axes=_inverse_perm(axes)),
    lambda vals, b, n, axes: bind(transpose_p, vals[0], axes=_batch_transpose(axes)),
)
sum_p: Linear = linear(
    "sum", lambda xp, x, axis, keepdims: xp.sum(x, axis=axis, keepdims=keepdims),
    lambda g, ans, x, axis, keepdims: broadcast_to(g if keepdims else expand_axes(g, axis), x.shape),
    lambda vals, b, n, axis, keepdims: bind(sum_p, vals[0], axis=shift_axes(axis), keepdims=keepdims),
)
cumsum_p: Linear = linear(
    "cumsum", lambda xp, x, axis: xp.cumsum(x, axis=axis),
    lambda g, ans, x, axis: flip(cumsum(flip(g, axis), axis), axis),
    lambda vals, b, n, axis: bind(cumsum_p, vals[0], axis=axis + 1),
)
getitem_p: Linear = linear(
    "getitem", lambda xp, x, index: x[index],
    lambda g, ans, x, index: bind(scatter_p, g, index=index, shape=x.shape),
    lambda vals, b, n, index: _batch_index(getitem_p, vals[0], index, vals[0].ndim - 1, "x"),
)
scatter_p: Linear = linear(  # the transpose of getitem: zeros of `shape` with g added at `index`
    "scatter", lambda xp, g, index, shape: _scatter(xp, g, index, shape),
    lambda g, ans, x, index, shape: bind(getitem_p, g, index=index),
    lambda vals, b, n, index, shape: _batch_index(scatter_p, vals[0], index, len(shape), "g", shape),
)
pad_p: Linear = linear(
    "pad", lambda xp, x, pad_width: xp.pad(x, pad_width),
    lambda g, ans, x, pad_width: bind(getitem_p, g, index=tuple(slice(lo, lo + d) for (lo, _), d in zip(pad_width, x.shape))),
    lambda vals, b, n, pad_width: bind(pad_p, vals[0], pad_width=((0, 0),) + pad_width),
)
concatenate_p: Linear = linear(
    "concatenate", lambda xp, *xs, axis, sizes: xp.concatenate(xs, axis=axis),
    lambda g, ans, *xs, axis, sizes, argnum: bind(getitem_p, g, index=_part(sizes, axis, argnum)),
    lambda vals, b, n, axis, sizes: bind(concatenate_p, *[materialize(v, bi, n) for v, bi in zip(vals, b)], axis=axis + 1, sizes=sizes),
    variadic=True,
)
stack_p: Linear = linear(
    "stack", lambda xp, *xs, axis: xp.stack(xs, axis=axis),
    lambda g, ans, *xs, axis, argnum: bind(getitem_p, g, index=(slice(None),) * axis + (argnum,)),
    lambda vals, b, n, axis: bind(stack_p, *[materialize(v, bi, n) for v, bi in zip(vals, b)], axis=axis + 1),
    variadic=True,
)
to_device_p: Linear = linear(
    "to_device", lambda xp, x, device: device.from_host(_host(x)),
    lambda g, ans, x, device: bind(to_device_p, g, device=x.device),
    lambda vals, b, n, device: bind(to_device_p, vals[0], device=device),
)
# fmt: on
to_device_p.moves_device = True


def _host(x):
    from ..backend import device_of_array

    return device_of_array(x).to_host(x)


def _part(sizes, axis, i):
    """The index of input ``i`` of a concatenation, from the inputs' ``sizes`` along ``axis`` (a
    parameter, so the tape keeps no input of concatenate alive)."""
    start = builtins.sum(sizes[:i])
    return (slice(None),) * axis + (slice(start, start + sizes[i]),)


def _scatter(xp, g, index, shape):
    out = xp.zeros(shape, dtype=g.dtype)
    if _is_basic(index):
        out[index] = g
    else:
        from ..backend import scatter_add

        scatter_add(xp, out, index, g)
    return out


def _is_basic(index) -> bool:
    return all(isinstance(i, (slice, Integral)) or i is None for i in index)


def _batch_index(prim, v, index, nd, what, shape=None):
    """Batch getitem/scatter: index the example axes, keep the batch axis first."""
    idx = (slice(None),) + index
    arrays = [
        k for k, i in enumerate(index) if not (isinstance(i, slice) or i is None or isinstance(i, Integral))
    ]
    # next to an index array, an integer is an advanced index too (x[0, :, [1, 2]] is split)
    advanced = [k for k, i in enumerate(index) if k in arrays or (arrays and isinstance(i, Integral))]
    # NumPy moves advanced-index axes to the front when they are not adjacent; undo that for the batch
    split = bool(advanced) and advanced[-1] - advanced[0] + 1 != len(advanced)
    if prim is getitem_p:
        out = bind(getitem_p, v, index=idx)
        if split:
            from ..backend import numpy_module as np

            adv_nd = np.broadcast_shapes(*[np.shape(index[k]) for k in advanced]).__len__()
            out = moveaxis(out, adv_nd, 0)
        return out
    if split:
        from ..backend import numpy_module as np

        adv_nd = len(np.broadcast_shapes(*[np.shape(index[k]) for k in advanced]))
        v = moveaxis(v, 0, adv_nd)
    return bind(scatter_p, v, index=idx, shape=(v.shape[0] if not split else v.shape[adv_nd],) + tuple(shape))


# ----------------------------------------------------------------------------- public functions
def _t(x) -> Tensor:
    if isinstance(x, Tensor):
        return x
    from .creation import asarray

    return asarray(x)


def reshape(x: ArrayLike, shape: ShapeLike) -> Tensor:
    """Give ``x`` a new shape with the same number of elements (one entry may be -1)."""
    x = _t(x)
    shape = (shape,) if isinstance(shape, (int, Integral)) else tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape: can only infer one dimension, got {shape}")
    if -1 in shape:
        known = 1
        for s in shape:
            if s != -1:
                known *= s
        if known == 0 or x.size % known:
            raise ShapeError(f"reshape: cannot reshape array of shape {x.shape} into shape {shape}")
        shape = tuple(x.size // known if s == -1 else s for s in shape)
    size = 1
    for s in shape:
        size *= s
    if size != x.size or any(s < 0 for s in shape):
        raise ShapeError(f"reshape: cannot reshape array of shape {x.shape} into shape {shape}")
    if shape == x.shape:
        return x
    return bind(reshape_p, x, shape=shape)


def broadcast_to(x: ArrayLike, shape: Sequence[int]) -> Tensor:
    """View ``x`` broadcast to ``shape`` (NumPy rules)."""
    x = _t(x)
    shape = tuple(int(s) for s in shape)
    if shape == x.shape:
        return x
    nd = len(shape)
    if x.ndim > nd or any(a != b and a != 1 for a, b in zip(x.shape[::-1], shape[::-1])):
        raise ShapeError(f"broadcast_to: cannot broadcast shape {x.shape} to {shape}")
    return bind(broadcast_to_p, x, shape=shape)


def sum_to(x: Tensor, shape: Sequence[int]) -> Tensor:
    """Sum ``x`` over the axes that broadcasting added or stretched, so it gets ``shape``."""
    shape = tuple(shape)
    if x.shape == shape:
        return x
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and x.shape[lead + i] != 1
    )
    if axes:
        x = bind(sum_p, x, axis=axes, keepdims=False)
    return reshape(x, shape)


def expand_axes(g, axis) -> Tensor:
    """Re-insert the reduced ``axis`` (sorted, non-negative) as size-1 axes."""
    shape = list(g.shape)
    for a in axis:
        shape.insert(a, 1)
    return reshape(g, tuple(shape))


def transpose(x: ArrayLike, axes: Sequence[int] | None = None) -> Tensor:
    """Permute the axes (reverse them by default)."""
    x = _t(x)
    if axes is None:
        axes = tuple(range(x.ndim))[::-1]
    axes = tuple(int(a) for a in axes)
    if sorted(a % x.ndim if -x.ndim <= a < x.ndim else -1 for a in axes) != list(range(x.ndim)):
        raise ShapeError(f"transpose: axes {axes} are not a permutation of the {x.ndim} axes of {x.shape}")
    axes = tuple(a % x.ndim for a in axes)
    if axes == tuple(range(x.ndim)):
        return x
    return bind(transpose_p, x, axes=axes)


def swapaxes(x: ArrayLike, axis1: int, axis2: int) -> Tensor:
    """Exchange two axes."""
    x = _t(x)
    a = normalize_one_axis("swapaxes", axis1, x.ndim)
    b = normalize_one_axis("swapaxes", axis2, x.ndim)
    perm = list(range(x.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, perm)


def moveaxis(x: ArrayLike, source: int | Sequence[int], destination: int | Sequence[int]) -> Tensor:
    """Move axes to new positions, the others keeping their order."""
    x = _t(x)
    src = source if isinstance(source, (tuple, list)) else (source,)
    dst = destination if isinstance(destination, (tuple, list)) else (destination,)
    if len(src) != len(dst):
        raise ShapeError("moveaxis: source and destination must have the same number of axes")
    src = [normalize_one_axis("moveaxis", a, x.ndim) for a in src]
    dst = [normalize_one_axis("moveaxis", a, x.ndim) for a in dst]
    order = [a for a in range(x.ndim) if a not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(x, order)


def expand_dims(x: ArrayLike, axis: Axis) -> Tensor:
    """Insert size-1 axes at the positions ``axis`` of the result."""
    x = _t(x)
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    axes = normalize_axis("expand_dims", axes, x.ndim + len(axes))
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return reshape(x, tuple(shape))


def squeeze(x: ArrayLike, axis: Axis = None) -> Tensor:
    """Remove size-1 axes (all of them, or those in ``axis``, which must have size 1)."""
    x = _t(x)
    if axis is None:
        axes = tuple(i for i, s in enumerate(x.shape) if s == 1)
    else:
        axes = normalize_axis("squeeze", axis, x.ndim)
        bad = [a for a in axes if x.shape[a] != 1]
        if bad:
            raise ShapeError(f"squeeze: axis {bad[0]} of shape {x.shape} does not have size 1")
    return reshape(x, tuple(s for i, s in enumerate(x.shape) if i not in axes))


def ravel(x: ArrayLike) -> Tensor:
    """``x`` as one axis, in C order (``reshape(x, (-1,))``).

    >>> import minidiff as md
    >>> md.ravel(md.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist()
    [1.0, 2.0, 3.0, 4.0]
    """
    return reshape(x, (-1,))


def sum(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001 - NumPy's name
    """Sum over ``axis`` (all axes by default)."""
    x = _t(x)
    axes = normalize_axis("sum", axis, x.ndim)
    return bind(sum_p, x, axis=axes, keepdims=bool(keepdims))


def cumsum(x: ArrayLike, axis: Axis = None) -> Tensor:
    """Cumulative sum along ``axis`` (of the flattened array when ``axis`` is None)."""
    x = _t(x)
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    return bind(cumsum_p, x, axis=normalize_one_axis("cumsum", axis, x.ndim))


def flip(x: ArrayLike, axis: Axis = None) -> Tensor:
    """Reverse the order of elements along ``axis`` (all axes by default)."""
    x = _t(x)
    axes = normalize_axis("flip", axis, x.ndim)
    index = tuple(slice(None, None, -1) if a in axes else slice(None) for a in range(x.ndim))
    return bind(getitem_p, x, index=index)


def _normalize_index(x, index):
    """An index as a tuple with Ellipsis expanded, masks as integer arrays and integer arrays as
    backend arrays, checked against the shape of ``x``."""
    out = [_index_entry(x, i) for i in (index if isinstance(index, tuple) else (index,))]
    out = _expand_ellipsis(x, out)
    # boolean masks become integer arrays so the transpose (scatter) and batching are uniform
    final = []
    for i in out:
        if hasattr(i, "dtype") and i.dtype.kind == "b":
            final.extend(i.nonzero())
        else:
            final.append(i)
    _check_integer_bounds(x, final)
    return tuple(final)


def _index_entry(x, i):
    """One entry of an index: tensors and array-likes become backend arrays (after checks)."""
    if isinstance(i, Tensor):
        if isinstance(i, Tracer) and i.is_batch:
            raise NotImplementedError("getitem: indexing with a vmapped index array is not supported")
        if i.dtype.kind not in "iub":
            raise ShapeError(f"getitem: index arrays must be integer or boolean, got {i.dtype}")
        if i.device is not x.device:
            raise DeviceError(f"getitem: index on {i.device} for a tensor on {x.device}")
        return i._data
    if isinstance(i, list) or type(i).__module__ in ("numpy", "cupy"):
        arr = x.device.xp.asarray(i)
        if arr.size == 0 and arr.dtype.kind == "f":  # [] is an empty integer index, as in NumPy
            arr = arr.astype(x.device.xp.intp)
        return arr if arr.ndim else int(arr) if arr.dtype.kind in "iu" else arr
    return i


def _expand_ellipsis(x, out):
    """Replace the one Ellipsis (or the missing tail) by full slices over the axes not indexed."""
    n_ell = len([i for i in out if i is Ellipsis])
    if n_ell > 1:
        raise ShapeError("getitem: an index can only have a single ellipsis")
    used = 0
    for i in out:
        if i is None or i is Ellipsis:
            continue
        used += i.ndim if hasattr(i, "dtype") and i.dtype.kind == "b" else 1
    if used > x.ndim:
        raise ShapeError(f"getitem: too many indices ({used}) for a tensor of shape {x.shape}")
    if n_ell:
        k = out.index(Ellipsis)
        return out[:k] + [slice(None)] * (x.ndim - used) + out[k + 1 :]
    return out + [slice(None)] * (x.ndim - used)


def _check_integer_bounds(x, final):
    for k, i in enumerate(final):
        if isinstance(i, Integral):
            dim = x.shape[len([j for j in final[:k] if j is not None])]
            if not -dim <= i < dim:
                raise ShapeError(
                    f"getitem: index {i} is out of bounds for axis {k} with size {dim} (shape {x.shape})"
                )


def getitem(x: ArrayLike, index: Any) -> Tensor:
    """``x[index]``: basic and integer-array indexing, as NumPy."""
    x = _t(x)
    return bind(getitem_p, x, index=_normalize_index(x, index))


def concatenate(arrays: Sequence[ArrayLike], axis: Axis = 0) -> Tensor:
    """Join tensors along an existing axis."""
    xs = [_t(a) for a in arrays]
    if not xs:
        raise ShapeError("concatenate: need at least one array")
    if axis is None:
        xs, axis = [reshape(x, (-1,)) for x in xs], 0
    nd = xs[0].ndim
    ax = normalize_one_axis("concatenate", axis, nd)
    for x in xs:
        if x.ndim != nd or any(a != b for i, (a, b) in enumerate(zip(x.shape, xs[0].shape)) if i != ax):
            raise ShapeError(f"concatenate: shapes {[x.shape for x in xs]} differ outside axis {ax}")
    return bind(concatenate_p, *xs, axis=ax, sizes=tuple(x.shape[ax] for x in xs))


def stack(arrays: Sequence[ArrayLike], axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis."""
    xs = [_t(a) for a in arrays]
    if not xs:
        raise ShapeError("stack: need at least one array")
    if any(x.shape != xs[0].shape for x in xs):
        raise ShapeError(f"stack: all inputs must have the same shape, got {[x.shape for x in xs]}")
    return bind(stack_p, *xs, axis=normalize_one_axis("stack", axis, xs[0].ndim + 1))


def split(x: ArrayLike, indices_or_sections: int | Sequence[int], axis: Axis = 0) -> list[Tensor]:
    """Split into several tensors along ``axis`` (equal sections, or at the given indices)."""
    x = _t(x)
    ax = normalize_one_axis("split", axis, x.ndim)
    n = x.shape[ax]
    if isinstance(indices_or_sections, (int, Integral)):
        k = int(indices_or_sections)
        if k <= 0 or n % k:
            raise ShapeError(f"split: axis {ax} of size {n} cannot be split into {k} equal sections")
        bounds = [i * (n // k) for i in range(k + 1)]
    else:
        bounds = [0, *[int(i) for i in indices_or_sections], n]
    pre = (slice(None),) * ax
    return [
        bind(getitem_p, x, index=_normalize_index(x, pre + (slice(a, b),)))
        for a, b in zip(bounds[:-1], bounds[1:])
    ]


def take(x: ArrayLike, indices: ArrayLike, axis: Axis = None) -> Tensor:
    """Elements of ``x`` at integer ``indices`` along ``axis`` (of the flattened array if None)."""
    x = _t(x)
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    ax = normalize_one_axis("take", axis, x.ndim)
    return getitem(x, (slice(None),) * ax + (indices,))


def pad(x: ArrayLike, pad_width: Any, mode: str = "constant", constant_values: ArrayLike = 0) -> Tensor:
    """Pad with a constant (``mode="constant"`` only), ``pad_width`` as in ``numpy.pad``."""
    x = _t(x)
    if mode != "constant":
        raise NotImplementedError(f"pad: only mode='constant' is supported, not {mode!r}")
    from ..backend import numpy_module as np

    try:
        width = tuple(
            tuple(int(v) for v in row) for row in np.broadcast_to(np.asarray(pad_width), (x.ndim, 2))
        )
    except ValueError as exc:
        raise ShapeError(f"pad: pad_width {pad_width!r} does not fit a tensor of shape {x.shape}") from exc
    if any(v < 0 for row in width for v in row):
        raise ShapeError(f"pad: negative pad_width {pad_width!r}")
    if not width:  # a 0-d tensor has nothing to pad (NumPy returns it unchanged)
        return x
    out = bind(pad_p, x, pad_width=width)
    if constant_values != 0:
        from .creation import ones
        from .elementwise import where

        inside = bind(pad_p, ones(x.shape, dtype=bool, device=x.device), pad_width=width)
        out = where(inside, out, constant_values)
    return out


def to_device(x: ArrayLike, device: DeviceLike) -> Tensor:
    """Copy to another device (differentiable: the cotangent travels back)."""
    return bind(to_device_p, x, device=device)
