"""The transforms users call: jvp, vjp, grad, jacobians, hessian, hvp, vmap (:mod:`.core`), forward
gradients (:mod:`.forward_gradient`) and tape inspection (:mod:`.inspect_tape`).  They use the modes
below them and nothing above.
"""

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

__all__ = [
    "HVP_MODES",
    "grad",
    "hessian",
    "hessian_product",
    "hvp",
    "jacfwd",
    "jacrev",
    "jvp",
    "value_and_grad",
    "vjp",
    "vmap",
]
