"""Gradient Centralization (Yong et al., 2020; ``docs/papers.md`` §3).

For a weight stored with its output axis first (dense ``out × in``, convolution ``out × in × kh × kw``),
:func:`centralize` subtracts from each output unit's slice its mean over all the remaining axes.  That
projects the gradient onto the zero-mean hyperplane of every weight vector, so under plain SGD each
weight vector's mean stays where it started.  Tensors with ``ndim <= 1`` (biases, normalization scales)
are returned unchanged; with ``conv_only=True`` (the GCC variant) only convolution kernels
(``ndim > 3``) are centralized.

Where the optimizers apply it (``centralize=`` on each first-order optimizer):

* ``"grad"`` — after any L2 decay term is added to the gradient, before momentum or moments (the paper's
  placement for SGD, SGDM, Adam, Adagrad);
* ``"update"`` — on the final direction (e.g. ``m̂/(√v̂+ε)``, plus the decoupled decay term for AdamW), with
  the moments kept raw (the alternative the authors recommend for adaptive methods);
* ``None`` — off.

>>> import minidiff as md
>>> g = md.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
>>> centralize(g).tolist()
[[-1.0, 0.0, 1.0], [-2.0, -2.0, 4.0]]
>>> centralize(md.tensor([1.0, 2.0])).tolist()  # a bias: untouched
[1.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence

from ..primitives.ops import mean
from ..tensor.core import Tensor

#: the accepted values of ``centralize=``
MODES = (None, "grad", "update")


def centralized(shape: Sequence[int], conv_only: bool = False) -> bool:
    """Whether a tensor of ``shape`` is centralized (``ndim > 1``; ``ndim > 3`` with ``conv_only``).

    >>> centralized((10, 784)), centralized((10,)), centralized((10, 784), conv_only=True)
    (True, False, False)
    """
    return len(shape) > (3 if conv_only else 1)


def centralize(g: Tensor, conv_only: bool = False) -> Tensor:
    """``g`` minus its mean over every axis but the output axis 0 (unchanged when not :func:`centralized`).

    >>> import minidiff as md
    >>> w = md.ones((2, 3, 2, 2))
    >>> float(abs(centralize(w * md.arange(24.0).reshape(2, 3, 2, 2)).sum()))
    0.0
    """
    if not centralized(g.shape, conv_only):
        return g
    return g - mean(g, axis=tuple(range(1, g.ndim)), keepdims=True)


def check_mode(name: str, centralize: str | None, conv_only: bool) -> None:
    """Raise ``ValueError`` for a ``centralize``/``conv_only`` setting that does not exist.

    >>> check_mode("SGD", "weights", False)
    Traceback (most recent call last):
      ...
    ValueError: SGD: centralize must be one of (None, 'grad', 'update'), got 'weights'
    """
    if centralize not in MODES:
        raise ValueError(f"{name}: centralize must be one of {MODES}, got {centralize!r}")
    if not isinstance(conv_only, bool):
        raise ValueError(f"{name}: conv_only must be True or False, got {conv_only!r}")
