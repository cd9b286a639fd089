"""Helpers for testing derivatives: :func:`check_grads` and Hypothesis strategies (``strategies``).

>>> import minidiff as md
>>> md.testing.check_grads(lambda x: md.sin(x) * x, (md.tensor([0.5, 1.5]),), order=2)
"""

from .checks import check_grads, numerical_jvp

__all__ = ["check_grads", "numerical_jvp", "strategies"]


def __getattr__(name):
    if name == "strategies":  # needs Hypothesis, so imported on first use only
        # import_module, not ``from . import strategies``: the latter asks this module for the
        # attribute first, which calls this function again (infinite recursion)
        import importlib

        return importlib.import_module(f"{__name__}.strategies")
    raise AttributeError(name)
