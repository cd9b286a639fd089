"""Curvature: Hessian, Gauss-Newton and Fisher products, Hutchinson estimators, SciPy operators.

Everything is built on minidiff's own transforms (``md.jvp``, ``md.vjp``, ``md.hvp``, ``md.vmap``): no
matrix is ever formed unless you ask SciPy to.  See ``docs/curvature.md``.

* :mod:`~minidiff.curvature.products` — :func:`hvp`, :func:`ggn_vp`, :func:`fisher_vp`;
* :mod:`~minidiff.curvature.hutchinson` — :func:`hutchinson_diag`, :func:`hutchinson_trace`;
* :mod:`~minidiff.curvature.operators` — :func:`hessian_operator`, :func:`ggn_operator`,
  :func:`fisher_operator`, :func:`as_operator` (``scipy.sparse.linalg.LinearOperator``) and
  :func:`top_eigenvalues`.

>>> import minidiff as md
>>> from minidiff import curvature
>>> f = lambda p: (p * p * p).sum()
>>> curvature.hvp(f, md.tensor([1.0, 2.0]), md.tensor([1.0, 0.0])).tolist()
[6.0, 0.0]
"""

from .hutchinson import PROBE_DISTRIBUTIONS, RunningEstimate, hutchinson_diag, hutchinson_trace, sample_probes
from .operators import (
    CurvatureOperator,
    as_operator,
    fisher_operator,
    ggn_operator,
    hessian_operator,
    top_eigenvalues,
)
from .products import FISHER_KINDS, HVP_MODES, fisher, fisher_vp, gauss_newton, ggn_vp, hvp, sample_labels

__all__ = [
    "CurvatureOperator",
    "FISHER_KINDS",
    "HVP_MODES",
    "PROBE_DISTRIBUTIONS",
    "RunningEstimate",
    "as_operator",
    "fisher",
    "fisher_operator",
    "fisher_vp",
    "gauss_newton",
    "ggn_operator",
    "ggn_vp",
    "hessian_operator",
    "hutchinson_diag",
    "hutchinson_trace",
    "hvp",
    "sample_labels",
    "sample_probes",
    "top_eigenvalues",
]
