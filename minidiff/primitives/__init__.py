"""Every primitive: forward computation, JVP rule and VJP rule side by side (see ``registry``)."""

from . import decompositions, elementwise, linalg, reductions, shape  # noqa: F401 - registers the primitives
from .registry import REGISTRY, Primitive, bind

__all__ = ["REGISTRY", "Primitive", "bind"]
