"""Helpers for testing derivatives.

* :func:`check_grads` — finite differences, the adjoint identity, and the same one order up, at one
  input;
* :func:`check_primitive` — the whole property battery over Hypothesis-drawn inputs (``battery``);
* :func:`check_mutation` — whether a property catches a deliberate bug in a rule (``mutation``);
* ``strategies`` — Hypothesis strategies for tensors and shapes;
* :func:`all_primitives` — every primitive, built-in and (``user=True``) made with ``md.primitive``:
  the walk a battery over "every primitive" starts from.

``check_primitive``, ``check_mutation`` and ``strategies`` need Hypothesis (the ``test`` extra); it is
imported when they run.

>>> import minidiff as md
>>> md.testing.check_grads(lambda x: md.sin(x) * x, (md.tensor([0.5, 1.5]),), order=2)
"""

from ..primitives.registry import all_primitives
from .battery import CHECKS, Domain, Tolerances, check_example, check_jacobian, check_primitive
from .checks import GRAD_DEFAULTS, GradCheckError, check_grads, numerical_jvp
from .mutation import Mutation, MutationResult, check_mutation, mutated

__all__ = [
    "CHECKS",
    "Domain",
    "GRAD_DEFAULTS",
    "GradCheckError",
    "Mutation",
    "MutationResult",
    "Tolerances",
    "all_primitives",
    "check_example",
    "check_grads",
    "check_jacobian",
    "check_mutation",
    "check_primitive",
    "mutated",
    "numerical_jvp",
    "strategies",
]


def __getattr__(name):
    if name == "strategies":  # needs Hypothesis, so imported on first use only
        # import_module, not ``from . import strategies``: the latter asks this module for the
        # attribute first, which calls this function again (infinite recursion)
        import importlib

        return importlib.import_module(f"{__name__}.strategies")
    raise AttributeError(name)
