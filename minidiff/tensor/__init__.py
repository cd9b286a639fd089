"""The tensor layer: what a tensor is, and the two ways upper layers touch one without a primitive.

* :mod:`~minidiff.tensor.core`: :class:`Tensor` (an array on a device, its metadata, how its value
  is read out) and :class:`Tracer`, the base of every transform's traced values;
* :mod:`~minidiff.tensor.kernel`: array kernels, the public way to work on backend arrays;
* :mod:`~minidiff.tensor.pytree`: nested tuples, lists and dicts of tensors.

It imports only the backend and the errors.  Operators and ndarray methods are attached to
:class:`Tensor` from above, in one place (:mod:`minidiff.modes.tensor_methods`).
"""

from .core import ARRAY, SCALAR, VALUE, Tensor, Tracer, check_differentiable, check_like, column_major, wrap

__all__ = [
    "ARRAY",
    "SCALAR",
    "VALUE",
    "Tensor",
    "Tracer",
    "check_differentiable",
    "check_like",
    "column_major",
    "wrap",
]
