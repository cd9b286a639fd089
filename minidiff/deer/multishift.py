"""DEER for multi-shift recurrences ``y_i = f(y_{i-1}, …, y_{i-P}, x_i; θ)``, P ≥ 1.

The recurrence is rewritten as a one-shift recurrence on the stacked (companion) state
``z_i = (y_i, y_{i-1}, …, y_{i-P+1})`` of size ``P·n``::

    z_i = F(z_{i-1}, x_i) = (f(y_{i-1}, …, y_{i-P}, x_i), y_{i-1}, …, y_{i-P+1})

whose Jacobian is the block companion matrix ``[∂f/∂y_{i-1} … ∂f/∂y_{i-P}; I 0 …; …; 0 … I 0]``.
:func:`~minidiff.deer.deer_rnn` solves it: Newton's iteration, the affine scan over the stacked
state, the convergence tests (warning or error, never silent) and the derivative rules (the
transposed scan) are those of P = 1, applied to ``F``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import DTypeError, ShapeError, check_number
from ..primitives.shape import broadcast_to, concatenate, stack
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree
from .rnn import _validate, deer_rnn

__all__ = ["deer_rnn_multishift", "sequential_rnn_multishift", "stacked_cell"]


def _check_init_states(op: str, y_init: Any, xs: Any, shifts: Any) -> int:
    """Validate ``shifts`` and ``y_init`` against it; returns ``n``, the state size."""
    check_number(op, "shifts", shifts, low=1, integer=True)
    if not isinstance(y_init, Tensor):
        raise TypeError(f"{op}: y_init must be a minidiff Tensor, got {type(y_init).__name__}")
    if y_init.ndim < 2 or y_init.shape[-2] != shifts:
        raise ShapeError(
            f"{op}: y_init must have shape (*batch, shifts, n) = (*batch, {shifts}, n), holding "
            f"y_(-{shifts}) … y_(-1) in time order; got {y_init.shape}"
        )
    if isinstance(xs, Tensor) and y_init.dtype != xs.dtype:
        raise DTypeError(f"{op}: y_init has dtype {y_init.dtype} but xs has {xs.dtype}")
    return int(y_init.shape[-1])


def _stacked_y0(y_init: Tensor, shifts: int) -> Tensor:
    """``z_{-1} = (y_{-1}, y_{-2}, …, y_{-P})``, concatenated on the last axis: ``(*batch, P·n)``."""
    return concatenate([y_init[..., shifts - 1 - k, :] for k in range(shifts)], axis=-1)


def stacked_cell(f: Callable[..., Any], shifts: int, n: int) -> Callable[..., Any]:
    """The one-shift cell ``F(z, x, params)`` on the stacked state ``z = (y_i, …, y_{i-P+1})``
    (``P·n`` values on the last axis) of the P-shift cell ``f(ys, x, params)``.

    Example:
        >>> import minidiff as md
        >>> from minidiff.deer import stacked_cell
        >>> F = stacked_cell(lambda ys, x, p: ys[0] + ys[1] + x, 2, 1)  # Fibonacci plus an input
        >>> F(md.tensor([3.0, 2.0]), md.tensor([0.0]), None).tolist()
        [5.0, 3.0]
    """

    def cell(z: Tensor, x: Tensor, params: PyTree) -> Tensor:
        ys = tuple(z[..., k * n : (k + 1) * n] for k in range(shifts))
        new = f(ys, x, params)
        if not isinstance(new, Tensor) or new.shape != ys[0].shape:
            raise ShapeError(
                f"deer_rnn_multishift: the cell returned {getattr(new, 'shape', type(new).__name__)} "
                f"for states of shape {ys[0].shape}; f(ys, x, params) must return the next state, "
                "shaped like each ys[k] (and broadcast over leading axes)"
            )
        return concatenate([new, z[..., : (shifts - 1) * n]], axis=-1) if shifts > 1 else new

    return cell


def _stacked_init(init: Any, y_init: Tensor, xs: Tensor, shifts: int, n: int) -> Tensor:
    """A guess ``(*batch, T, n)`` for ``y_0 … y_{T-1}`` as a guess for the stacked states."""
    shape = xs.shape[:-1] + (n,)
    if not isinstance(init, Tensor) or tuple(init.shape) != tuple(shape):
        raise ShapeError(
            f"deer_rnn_multishift: init must have the trajectory's shape {shape}, "
            f"got {getattr(init, 'shape', init)}"
        )
    T = shape[-2]
    start = broadcast_to(y_init.detach(), shape[:-2] + (shifts, n)).astype(xs.dtype)
    full = concatenate([start, init.detach().astype(xs.dtype)], axis=-2)  # y_{-P} … y_{T-1}
    return concatenate([full[..., shifts - k : shifts - k + T, :] for k in range(shifts)], axis=-1)


def deer_rnn_multishift(
    f: Callable[..., Any],
    y_init: Tensor,
    xs: Tensor,
    params: PyTree,
    *,
    shifts: int,
    init: Tensor | None = None,
    return_stats: bool = False,
    **options: Any,
) -> Any:
    """Evaluate ``y_i = f((y_{i-1}, …, y_{i-P}), x_i; params)`` for all i at once by DEER.

    The P-shift recurrence is solved as the one-shift recurrence of :func:`stacked_cell` on the
    stacked state ``(y_i, …, y_{i-P+1})`` by :func:`~minidiff.deer.deer_rnn` (Newton over the
    trajectory, scans of ``P·n × P·n`` companion matrices; the derivatives by its transposed scan).

    Args:
        f: the cell ``f(ys, x, params) -> y_i`` with ``ys = (y_{i-1}, …, y_{i-P})`` a tuple of
            ``shifts`` tensors shaped like the state; it must broadcast over leading axes (it is
            called on all steps at once, each ``ys[k]`` of shape ``(*batch, T, n)``).
        y_init: ``(*batch, P, n)``: the P states before the first input, ``y_{-P} … y_{-1}`` in time
            order (batch axes may be missing, as for ``deer_rnn``'s ``y0``).
        xs: ``(*batch, T, m)`` inputs.
        params: a pytree of floating tensors (differentiable, like ``y_init`` and ``xs``).
        shifts: P ≥ 1, how many past states ``f`` reads.
        init: ``(*batch, T, n)`` initial guess for ``y_0 … y_{T-1}`` (a warm start), or ``None``.
        return_stats: also return :class:`~minidiff.deer.DeerStats`; its ``residual`` and ``step``
            are over the stacked state (the shifted copies converge with the new state).
        **options: ``max_iter``, ``atol``, ``rtol``, ``on_failure`` and ``method``, as for
            :func:`~minidiff.deer.deer_rnn` (a failure to converge warns or raises as there; the
            message names ``deer_rnn`` and the stacked state's shape ``(*batch, T, P·n)``).

    Returns:
        ``ys`` of shape ``(*batch, T, n)``, or ``(ys, stats)``; differentiable in ``y_init``,
        ``xs`` and ``params`` by every mode.

    Example:
        >>> import minidiff as md
        >>> from minidiff.deer import deer_rnn_multishift, sequential_rnn_multishift
        >>> f = lambda ys, x, p: md.tanh(p * ys[0] - 0.5 * ys[1] + x)
        >>> y_init, xs, p = md.zeros((2, 1)), md.linspace(-1.0, 1.0, 8).reshape(8, 1), md.tensor(0.9)
        >>> ys = deer_rnn_multishift(f, y_init, xs, p, shifts=2)
        >>> ref = sequential_rnn_multishift(f, y_init, xs, p, shifts=2)
        >>> ys.shape, bool(md.max(md.abs(ys - ref)).item() < 1e-8)
        ((8, 1), True)
    """
    op = "deer_rnn_multishift"
    n = _check_init_states(op, y_init, xs, shifts)
    _validate(op, y_init[..., 0, :], xs, params)
    if init is not None:
        init = _stacked_init(init, y_init, xs, shifts, n)
    z0 = _stacked_y0(y_init, shifts)
    out = deer_rnn(
        stacked_cell(f, shifts, n), z0, xs, params, init=init, return_stats=return_stats, **options
    )
    zs, stats = out if return_stats else (out, None)
    ys = zs[..., :n]
    return (ys, stats) if return_stats else ys


def sequential_rnn_multishift(
    f: Callable[..., Any], y_init: Tensor, xs: Tensor, params: PyTree, *, shifts: int
) -> Tensor:
    """The reference: ``y_i = f((y_{i-1}, …, y_{i-P}), x_i; params)`` by a Python loop of minidiff
    operations (differentiable like any minidiff code).  Same arguments and layout as
    :func:`deer_rnn_multishift`.

    Example:
        >>> import minidiff as md
        >>> from minidiff.deer import sequential_rnn_multishift
        >>> fib = lambda ys, x, p: ys[0] + ys[1] + x
        >>> sequential_rnn_multishift(fib, md.tensor([[0.0], [1.0]]), md.zeros((5, 1)), None, shifts=2).tolist()
        [[1.0], [2.0], [3.0], [5.0], [8.0]]
    """
    op = "sequential_rnn_multishift"
    _check_init_states(op, y_init, xs, shifts)
    _validate(op, y_init[..., 0, :], xs, params)
    batch = xs.shape[:-2]
    past: Sequence[Tensor] = [
        broadcast_to(y_init[..., shifts - 1 - k, :], batch + y_init.shape[-1:]) for k in range(shifts)
    ]
    out = []
    for i in range(xs.shape[-2]):
        y = f(tuple(past), xs[..., i, :], params)
        out.append(y)
        past = [y, *past[:-1]]
    return stack(out, axis=-2)
