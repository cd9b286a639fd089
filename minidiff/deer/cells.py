"""Recurrent cells ``cell(y, x, params) -> next y`` for :func:`~minidiff.deer.deer_rnn`.

Every cell broadcasts over leading axes (``y (..., n)``, ``x (..., m)``), so DEER can evaluate it
at all time steps at once.  Each comes with an initializer returning its ``params`` dict (uniform
on ±1/√hidden like PyTorch's recurrent layers; ``scale`` multiplies the recurrent weights; ``seed`` is
an int, a :class:`minidiff.primitives.random.Generator` or a ``numpy.random.Generator``, see
:func:`minidiff.primitives.random.as_generator`).

* :func:`gru_cell` (PyTorch's gate order r, z, n), state ``h`` of size ``hidden``;
* :func:`lstm_cell`, state ``concat(h, c)`` of size ``2·hidden`` (gates i, f, g, o);
* :func:`elman_cell`, ``h' = tanh(W_ih x + W_hh h + b)``.
"""

from __future__ import annotations

import math

from ..errors import check_number
from ..primitives import ops
from ..primitives.random import Generator, RngLike, as_generator
from ..primitives.shape import concatenate
from ..tensor.core import DeviceLike, DTypeLike, Tensor
from ..tensor.pytree import PyTree

__all__ = ["gru_cell", "init_gru", "lstm_cell", "init_lstm", "elman_cell", "init_elman", "CELLS"]


def _uniform(
    rng: Generator, shape: tuple[int, ...], bound: float, dtype: DTypeLike, device: DeviceLike
) -> Tensor:
    return rng.uniform(shape, -bound, bound, dtype)


def _init(
    op: str,
    gates: int,
    input_size: int,
    hidden_size: int,
    seed: RngLike,
    dtype: DTypeLike,
    device: DeviceLike,
    scale: float,
    names: tuple[str, ...] = ("W_ih", "W_hh", "b_ih", "b_hh"),
) -> dict[str, Tensor]:
    check_number(op, "input_size", input_size, low=1, integer=True)
    check_number(op, "hidden_size", hidden_size, low=1, integer=True)
    rng = as_generator(seed, device, op=op)
    k = 1.0 / math.sqrt(hidden_size)
    g = gates * hidden_size
    return {
        names[0]: _uniform(rng, (g, input_size), k, dtype, device),
        names[1]: _uniform(rng, (g, hidden_size), k, dtype, device) * scale,
        names[2]: _uniform(rng, (g,), k, dtype, device),
        names[3]: _uniform(rng, (g,), k, dtype, device),
    }


def _linear(x: Tensor, W: Tensor, b: Tensor) -> Tensor:
    return x @ W.T + b


def gru_cell(h: Tensor, x: Tensor, params: PyTree) -> Tensor:
    """One GRU step (PyTorch's convention): r, z gates, candidate n, ``h' = (1 − z) n + z h``.

    Example:
        >>> import minidiff as md
        >>> from minidiff.deer.cells import gru_cell, init_gru
        >>> p = init_gru(2, 3, seed=0)
        >>> gru_cell(md.zeros(3), md.ones(2), p).shape
        (3,)
    """
    n = h.shape[-1]
    gi = _linear(x, params["W_ih"], params["b_ih"])
    gh = _linear(h, params["W_hh"], params["b_hh"])
    r = ops.sigmoid(gi[..., :n] + gh[..., :n])
    z = ops.sigmoid(gi[..., n : 2 * n] + gh[..., n : 2 * n])
    cand = ops.tanh(gi[..., 2 * n :] + r * gh[..., 2 * n :])
    return cand + z * (h - cand)


def init_gru(
    input_size: int,
    hidden_size: int,
    *,
    seed: RngLike = 0,
    dtype: DTypeLike = "float64",
    device: DeviceLike = None,
    scale: float = 1.0,
) -> dict:
    """Parameters of :func:`gru_cell`: ``W_ih (3H, m)``, ``W_hh (3H, H)``, ``b_ih``, ``b_hh (3H,)``.

    Example:
        >>> from minidiff.deer.cells import init_gru
        >>> sorted((k, v.shape) for k, v in init_gru(2, 4).items())
        [('W_hh', (12, 4)), ('W_ih', (12, 2)), ('b_hh', (12,)), ('b_ih', (12,))]
    """
    return _init("init_gru", 3, input_size, hidden_size, seed, dtype, device, scale)


def lstm_cell(y: Tensor, x: Tensor, params: PyTree) -> Tensor:
    """One LSTM step on the state ``y = concat(h, c)`` (size 2H); returns ``concat(h', c')``.

    Example:
        >>> import minidiff as md
        >>> from minidiff.deer.cells import lstm_cell, init_lstm
        >>> lstm_cell(md.zeros(6), md.ones(2), init_lstm(2, 3)).shape
        (6,)
    """
    H = y.shape[-1] // 2
    h, c = y[..., :H], y[..., H:]
    g = _linear(x, params["W_ih"], params["b_ih"]) + _linear(h, params["W_hh"], params["b_hh"])
    i = ops.sigmoid(g[..., :H])
    f = ops.sigmoid(g[..., H : 2 * H])
    cand = ops.tanh(g[..., 2 * H : 3 * H])
    o = ops.sigmoid(g[..., 3 * H :])
    c_new = f * c + i * cand
    return concatenate([o * ops.tanh(c_new), c_new], axis=-1)


def init_lstm(
    input_size: int,
    hidden_size: int,
    *,
    seed: RngLike = 0,
    dtype: DTypeLike = "float64",
    device: DeviceLike = None,
    scale: float = 1.0,
) -> dict:
    """Parameters of :func:`lstm_cell` (gates i, f, g, o): ``W_ih (4H, m)``, ``W_hh (4H, H)``, biases.
    The state has size ``2·hidden_size``.

    Example:
        >>> from minidiff.deer.cells import init_lstm
        >>> init_lstm(2, 3)["W_hh"].shape
        (12, 3)
    """
    return _init("init_lstm", 4, input_size, hidden_size, seed, dtype, device, scale)


def elman_cell(h: Tensor, x: Tensor, params: PyTree) -> Tensor:
    """One Elman step ``h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)``.

    Example:
        >>> import minidiff as md
        >>> from minidiff.deer.cells import elman_cell, init_elman
        >>> elman_cell(md.zeros(4), md.ones(2), init_elman(2, 4)).shape
        (4,)
    """
    return ops.tanh(_linear(x, params["W_ih"], params["b_ih"]) + _linear(h, params["W_hh"], params["b_hh"]))


def init_elman(
    input_size: int,
    hidden_size: int,
    *,
    seed: RngLike = 0,
    dtype: DTypeLike = "float64",
    device: DeviceLike = None,
    scale: float = 1.0,
) -> dict:
    """Parameters of :func:`elman_cell`: ``W_ih (H, m)``, ``W_hh (H, H)``, ``b_ih``, ``b_hh (H,)``.

    Example:
        >>> from minidiff.deer.cells import init_elman
        >>> init_elman(3, 5)["W_ih"].shape
        (5, 3)
    """
    return _init("init_elman", 1, input_size, hidden_size, seed, dtype, device, scale)


#: name -> (cell, initializer, state size as a function of the hidden size)
CELLS = {
    "gru": (gru_cell, init_gru, lambda hidden: hidden),
    "lstm": (lstm_cell, init_lstm, lambda hidden: 2 * hidden),
    "elman": (elman_cell, init_elman, lambda hidden: hidden),
}
