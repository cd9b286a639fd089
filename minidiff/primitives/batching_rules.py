"""Generic batching rules shared by many primitives (``rule(vals, batched, size, **params)``).

In every rule a batched value carries the batch axis first; an unbatched one is shared by the batch.
"""

from __future__ import annotations

from .registry import bind


def logical_ndim(v, is_batched: bool) -> int:
    return (v.ndim - 1 if is_batched else v.ndim) if hasattr(v, "ndim") else 0


def align(v, nd: int, target_nd: int):
    """Insert size-1 axes after the batch axis so a batched value of rank ``nd`` has ``target_nd``."""
    from .shape import reshape

    if nd >= target_nd:
        return v
    return reshape(v, (v.shape[0],) + (1,) * (target_nd - nd) + v.shape[1:])


def materialize(v, is_batched: bool, size: int):
    """A value with a leading batch axis: broadcast an unbatched one along it."""
    from .shape import broadcast_to

    if is_batched:
        return v
    return broadcast_to(v, (size,) + tuple(v.shape))


def batch_elementwise(prim):
    """Elementwise ops broadcast: align every batched input to the output rank, then apply."""

    def rule(vals, batched, size, **params):
        nds = [logical_ndim(v, b) for v, b in zip(vals, batched)]
        out_nd = max(nds)
        vals = [align(v, nd, out_nd) if b else v for v, nd, b in zip(vals, nds, batched)]
        return bind(prim, *vals, **params)

    return rule


def shift_axes(axis):
    """Axes of one example, as axes of the batch (one further right)."""
    if axis is None:
        return None
    if isinstance(axis, tuple):
        return tuple(a + 1 for a in axis)
    return axis + 1


def batch_axis_op(prim):
    """Ops with normalized non-negative ``axis`` parameters and a single input: shift the axes."""

    def rule(vals, batched, size, **params):
        (x,) = vals
        params["axis"] = shift_axes(params["axis"])
        return bind(prim, x, **params)

    return rule


def batch_by_loop(prim):
    """Fallback for primitives without a batching rule: apply one example at a time, then stack."""

    def rule(vals, batched, size, **params):
        from .shape import stack

        outs = []
        for k in range(size):
            args = [v[k] if b else v for v, b in zip(vals, batched)]
            outs.append(bind(prim, *args, **params))
        return stack(outs, axis=0)

    return rule
