"""The transforms users call: jvp, vjp, grad, jacobians, hessian, hvp, vmap (:mod:`.core`), gradient
checkpointing (:mod:`.checkpoint`), linearization (:mod:`.linearize`), forward gradients
(:mod:`.forward_gradient`) and tape inspection (:mod:`.inspect_tape`).  They use the modes
below them and nothing above.
"""

from .checkpoint import checkpoint
from .core import (
    HVP_MODES,
    grad,
    hessian,
    hessian_product,
    hvp,
    jacfwd,
    jacrev,
    jvp,
    value_and_grad,
    vjp,
    vmap,
)
from .linearize import linearize

__all__ = [
    "HVP_MODES",
    "checkpoint",
    "grad",
    "hessian",
    "hessian_product",
    "hvp",
    "jacfwd",
    "jacrev",
    "jvp",
    "linearize",
    "value_and_grad",
    "vjp",
    "vmap",
]
