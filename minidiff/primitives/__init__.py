"""Every primitive: forward computation, JVP rule and VJP rule side by side (see ``registry``)."""

from . import (  # noqa: F401 - registers the primitives
    convolution,
    decompositions,
    elementwise,
    matrix,
    pooling,
    reductions,
    shape,
)
from .registry import REGISTRY, Primitive, all_primitives, bind

__all__ = ["REGISTRY", "Primitive", "all_primitives", "bind"]
