"""H, G and F at a point as :class:`scipy.sparse.linalg.LinearOperator` s, for SciPy's solvers.

The operator acts on the flattened parameter vector: float64 NumPy arrays on the host, the leaves of the
parameter tree concatenated in :func:`minidiff.tensor.pytree.flatten` order.  Each product converts its input to
the parameters' device and dtypes, applies the curvature product there and brings the result back, so
``scipy.sparse.linalg.cg``, ``minres``, ``eigsh`` and ``lobpcg`` work on them unchanged.  ``matmat``
runs its columns as one vector-mode pass.

>>> import minidiff as md
>>> from scipy.sparse.linalg import cg
>>> from minidiff.curvature import hessian_operator
>>> f = lambda p: (p["w"] ** 2).sum() + p["w"][0] * p["w"][1]        # H = [[2, 1], [1, 2]]
>>> H = hessian_operator(f, {"w": md.tensor([0.0, 0.0])}, damping=1.0)   # H + I
>>> x, info = cg(H, [3.0, 3.0], rtol=1e-12)
>>> info, [round(float(t), 6) for t in x]
(0, [0.75, 0.75])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scipy.sparse.linalg import LinearOperator, eigsh

from ..backend import numpy_module as _host
from ..errors import ShapeError, check_number
from ..primitives.creation import asarray
from ..primitives.random import RngLike, as_generator
from ..tensor import pytree
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree
from ..transforms.core import check_hvp_mode, hessian_product, vmap
from .products import check_params, check_vector, fisher, gauss_newton

__all__ = [
    "CurvatureOperator",
    "as_operator",
    "hessian_operator",
    "ggn_operator",
    "fisher_operator",
    "top_eigenvalues",
]

_F64 = _host.dtype("float64")


class CurvatureOperator(LinearOperator):
    """A symmetric ``n × n`` LinearOperator (float64, host) over the flattened parameters of ``params``.

    ``product(tree)`` returns the matrix times a tree shaped like ``params``; ``batched_product``
    (optional) does so for trees with a leading axis of K vectors (used by ``matmat``).  ``damping`` adds
    ``λ·x``.  :meth:`flatten` and :meth:`unflatten` convert between trees and host vectors;
    ``n_products`` counts the vectors multiplied so far (each costs one curvature product).
    """

    def __init__(
        self,
        product: Callable[..., Any],
        params: PyTree,
        *,
        batched_product: Callable[..., Any] | None = None,
        damping: float = 0.0,
        name: str = "operator",
    ):
        leaves = check_params(name, params)
        check_number(name, "damping", damping, low=0.0)
        damping = float(damping)
        _, self._def = pytree.flatten(params)
        self.params, self.name, self.damping = params, name, damping
        self._shapes = [tuple(p.shape) for p in leaves]
        self._dtypes = [p.dtype for p in leaves]
        self.device = leaves[0].device
        self._product, self._batched = product, batched_product
        self.n_products = 0
        n = sum(p.size for p in leaves)
        super().__init__(dtype=_F64, shape=(n, n))

    def __repr__(self) -> str:
        return f"<{self.shape[0]}x{self.shape[1]} {self.name} (damping {self.damping}) on {self.device}>"

    # -- conversions
    def flatten(self, tree: PyTree) -> Any:
        """A tree shaped like ``params`` (optionally with a leading K axis) as a host float64 array
        ``(n,)`` (or ``(n, K)``)."""
        leaves = pytree.flatten(tree)[0]
        parts = []
        for t, shape in zip(leaves, self._shapes):
            a = _host.asarray(t.numpy() if isinstance(t, Tensor) else t, dtype=_F64)
            lead = a.shape[: a.ndim - len(shape)]
            parts.append(a.reshape(lead + (-1,)))
        flat = _host.concatenate(parts, axis=-1)
        return flat.T if flat.ndim == 2 else flat

    def unflatten(self, x: Any, batched: bool = False) -> PyTree:
        """A host vector ``(n,)`` (or ``(n, K)`` with ``batched``) as a tree shaped like ``params`` on their
        device and in their dtypes (with a leading K axis when batched)."""
        x = _host.asarray(x)
        n = self.shape[0]
        if x.shape[0] != n or x.ndim != (2 if batched else 1):
            want = f"({n}, K)" if batched else f"({n},)"
            raise ShapeError(
                f"{self.name}: a vector of shape {x.shape} for an operator of size {n}; expected {want}"
            )
        lead = (x.shape[1],) if batched else ()
        leaves, offset = [], 0
        for shape, dtype in zip(self._shapes, self._dtypes):
            size = 1
            for s in shape:
                size *= s
            block = x[offset : offset + size]
            block = block.T.reshape(lead + shape) if batched else block.reshape(shape)
            leaves.append(asarray(_host.array(block, dtype=dtype), device=self.device))
            offset += size
        return pytree.unflatten(self._def, leaves)

    # -- LinearOperator protocol
    def _matvec(self, x: Any) -> Any:
        x = _host.asarray(x).reshape(-1)
        out = self.flatten(self._product(self.unflatten(x)))
        self.n_products += 1
        return out + self.damping * x if self.damping else out

    def _matmat(self, X: Any) -> Any:
        X = _host.asarray(X)
        if self._batched is None or X.shape[1] == 1:
            return _host.stack([self._matvec(X[:, j]) for j in range(X.shape[1])], axis=1)
        out = self.flatten(self._batched(self.unflatten(X, batched=True)))
        self.n_products += X.shape[1]
        return out + self.damping * X if self.damping else out

    def _rmatvec(self, x: Any) -> Any:
        return self._matvec(x)

    def _rmatmat(self, X: Any) -> Any:
        return self._matmat(X)

    def _adjoint(self) -> CurvatureOperator:
        return self

    def _transpose(self) -> CurvatureOperator:
        return self


def as_operator(
    matvec: Callable[..., Any], params: PyTree, *, vectorizable: bool = True, damping: float = 0.0
) -> CurvatureOperator:
    """Any symmetric product ``matvec(tree) -> tree`` on trees shaped like ``params`` as a LinearOperator.

    With ``vectorizable`` (default), ``matmat`` batches its columns through ``md.vmap(matvec)``; pass
    False for a matvec ``md.vmap`` cannot trace.

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import as_operator
        >>> op = as_operator(lambda v: 2.0 * v, md.zeros(3))
        >>> (op @ [1.0, 2.0, 3.0]).tolist()
        [2.0, 4.0, 6.0]
    """

    def product(v: PyTree) -> PyTree:
        out = matvec(v)
        check_vector("as_operator", params, out)
        return out

    return CurvatureOperator(
        product,
        params,
        batched_product=vmap(matvec) if vectorizable else None,
        damping=damping,
        name="as_operator",
    )


def hessian_operator(
    f: Callable[..., Any], params: PyTree, mode: str = "fwd-over-rev", *, damping: float = 0.0
) -> CurvatureOperator:
    """The Hessian of scalar ``f`` at ``params`` (plus ``damping·I``) as a LinearOperator.

    Each product is one :func:`hvp` in ``mode``.  For ``"rev-over-rev"`` the tape of the gradient is
    recorded once here and every product only walks it again (cheapest per product, most memory).

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import hessian_operator
        >>> H = hessian_operator(lambda p: (p ** 3).sum(), md.tensor([1.0, 2.0]))
        >>> (H @ [1.0, 1.0]).tolist(), H.shape
        ([6.0, 12.0], (2, 2))
    """
    check_hvp_mode("hessian_operator", mode)
    check_params("hessian_operator", params)
    hessian = hessian_product(f, (params,), mode)
    return _operator(
        lambda v, vectorized=False: hessian((v,), vectorized)[0], params, damping, "hessian_operator"
    )


def _operator(product: Callable[..., Any], params: PyTree, damping: float, name: str) -> CurvatureOperator:
    """The CurvatureOperator of ``product(v, vectorized=False)`` (a Hessian, Gauss-Newton or Fisher
    product at ``params``): ``matvec`` calls it on one vector, ``matmat`` on K at once."""
    return CurvatureOperator(
        lambda v: product(v), params, batched_product=lambda v: product(v, True), damping=damping, name=name
    )


def ggn_operator(
    model_fn: Callable[..., Any], loss_fn: Callable[..., Any], params: PyTree, *, damping: float = 0.0
) -> CurvatureOperator:
    """The Gauss-Newton matrix ``Jᵀ ∇²ℓ J`` at ``params`` (see :func:`ggn_vp`) as a LinearOperator.

    The model's tape is recorded once here; each product is one forward-mode pass and one tape walk.

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import ggn_operator
        >>> G = ggn_operator(lambda p: p * p, lambda z: 0.5 * (z * z).sum(), md.tensor([1.0, 2.0]))
        >>> (G @ [1.0, 1.0]).tolist()                      # J = diag(2p), G = diag(4p²)
        [4.0, 16.0]
    """
    return _operator(gauss_newton(model_fn, loss_fn, params), params, damping, "ggn_operator")


def fisher_operator(
    model_fn: Callable[..., Any],
    params: PyTree,
    kind: str = "analytic",
    *,
    n_samples: int = 1,
    rng: RngLike = None,
    labels: Tensor | None = None,
    damping: float = 0.0,
) -> CurvatureOperator:
    """The Fisher of softmax cross-entropy at ``params`` (see :func:`fisher_vp`) as a LinearOperator.

    The sampled form draws its labels once, at construction (kept as ``operator.labels``), so every
    product applies the same matrix.

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import fisher_operator
        >>> F = fisher_operator(lambda p: md.reshape(p, (1, 2)), md.tensor([0.0, 0.0]))
        >>> (F @ [1.0, 0.0]).tolist()
        [0.25, -0.25]
    """
    prod = fisher(model_fn, params, kind, n_samples=n_samples, rng=rng, labels=labels)
    op = _operator(prod, params, damping, "fisher_operator")
    op.labels = getattr(prod, "labels", None)
    return op


_WHICH = ("LA", "SA", "LM")


def top_eigenvalues(
    operator: Any,
    params: PyTree = None,
    k: int = 1,
    *,
    which: str = "LA",
    mode: str = "fwd-over-rev",
    tol: float = 0.0,
    maxiter: int | None = None,
    seed: RngLike = 0,
    return_eigenvectors: bool = False,
) -> Any:
    """The ``k`` extreme eigenvalues of a symmetric operator by Lanczos (``scipy.sparse.linalg.eigsh``).

    ``operator``: a LinearOperator (e.g. from :func:`ggn_operator`), or a scalar function ``f`` with
    ``params``, for its Hessian (products in ``mode``).  ``which``: ``"LA"`` largest (default), ``"SA"``
    smallest, ``"LM"`` largest in magnitude.  The start vector comes from ``seed`` (anything
    :func:`minidiff.primitives.random.as_generator` takes), so results repeat.
    Returns a host array of eigenvalues, largest first (smallest first for ``"SA"``), and with
    ``return_eigenvectors`` also the host ``(n, k)`` eigenvectors (``operator.unflatten(vecs[:, i])``
    makes a tree of one).  ``k`` must be below the operator's size (a Lanczos limit).

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import top_eigenvalues
        >>> f = lambda p: (md.tensor([1.0, 5.0, 3.0]) * p * p).sum()    # H = diag(2, 10, 6)
        >>> [round(float(e), 8) for e in top_eigenvalues(f, md.zeros(3), k=2)]
        [10.0, 6.0]
    """
    operator = _operator_of("top_eigenvalues", operator, params, mode)
    n = operator.shape[0]
    check_number("top_eigenvalues", "k", k, low=1, high=n, high_open=True, integer=True)  # n: the size
    if which not in _WHICH:
        raise ValueError(f"top_eigenvalues: unknown which {which!r}; choose one of {_WHICH}")
    v0 = as_generator(seed, op="top_eigenvalues").normal((n,)).numpy()
    vals, vecs = eigsh(operator, k=k, which=which, v0=v0, tol=tol, maxiter=maxiter)
    order = _eigen_order(vals, which)
    vals, vecs = vals[order], vecs[:, order]
    return (vals, vecs) if return_eigenvectors else vals


def _operator_of(op: str, operator: Any, params: PyTree, mode: str) -> LinearOperator:
    """``operator`` itself, or the Hessian operator of the function ``operator`` at ``params``."""
    if not isinstance(operator, LinearOperator):
        if not callable(operator) or params is None:
            raise TypeError(f"{op}: give a LinearOperator, or a scalar function f together with params")
        return hessian_operator(operator, params, mode)
    if params is not None:
        raise TypeError(f"{op}: params is only used with a function f, not with a LinearOperator")
    return operator


def _eigen_order(vals: Any, which: str) -> Any:
    """Indices putting eigenvalues in the order :func:`top_eigenvalues` returns: smallest first for
    ``"SA"``, largest magnitude first for ``"LM"``, largest first otherwise."""
    if which == "SA":
        return _host.argsort(vals)
    if which == "LM":
        return _host.argsort(-_host.abs(vals))
    return _host.argsort(-vals)
