"""Curvature-vector products on pytrees of parameters, never forming a matrix.

* :func:`hvp` — the Hessian ``H = ∇²f(θ)`` times ``v``, in any of the three compositions of
  :func:`minidiff.hvp` (forward-over-reverse by default);
* :func:`ggn_vp` — the generalized Gauss-Newton matrix ``G = Jᵀ H_ℓ J`` of a loss ``ℓ(z(θ))`` times ``v``:
  one forward-mode pass for ``J v``, the output-space loss Hessian ``H_ℓ`` applied at ``z``, one reverse
  pass for ``Jᵀ(·)``;
* :func:`fisher_vp` — the Fisher matrix of softmax cross-entropy times ``v``: the analytic form
  ``Jᵀ [(1/N) ⊕_i (diag(p_i) − p_i p_iᵀ)] J`` (equal to the GGN of the mean cross-entropy) or a Monte-Carlo
  form with labels drawn from the model's own predictive distribution.

With ``vectorized=True`` the vector ``v`` carries a leading axis of K directions and the result does
too: the K products come out of one vector-mode pass (``md.vmap``), not a Python loop.

>>> import minidiff as md
>>> from minidiff import curvature
>>> f = lambda p: (p["w"] ** 3).sum()
>>> curvature.hvp(f, {"w": md.tensor([1.0, 2.0])}, {"w": md.tensor([1.0, 1.0])})["w"].tolist()
[6.0, 12.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import DeviceError, DTypeError, MinidiffError, ShapeError, check_number, describe
from ..primitives import ops
from ..primitives.creation import arange
from ..primitives.random import RngLike, as_generator
from ..tensor import pytree
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree
from ..transforms.core import HVP_MODES, check_hvp_mode, hessian_product, jvp, vjp, vmap
from ..transforms.core import hvp as _engine_hvp

__all__ = ["HVP_MODES", "FISHER_KINDS", "hvp", "ggn_vp", "fisher_vp", "sample_labels"]

#: The two forms of :func:`fisher_vp`.
FISHER_KINDS = ("analytic", "sampled")


# ----------------------------------------------------------------------------- checks
def leaf_paths(tree: PyTree) -> list[str]:
    """Where each leaf sits in ``tree`` (``"['w']"``, ``"[0]['b']"``…), in :func:`pytree.flatten` order.

    Example:
        >>> from minidiff.curvature.products import leaf_paths
        >>> leaf_paths({"w": 1.0, "layers": [2.0, (3.0,)]})
        ["['layers'][0]", "['layers'][1][0]", "['w']"]
    """
    paths: list[str] = []

    def go(t: PyTree, at: str) -> None:
        if isinstance(t, (tuple, list)) and not hasattr(t, "_fields"):
            for i, c in enumerate(t):
                go(c, f"{at}[{i}]")
        elif isinstance(t, dict):
            for k in sorted(t):
                go(t[k], f"{at}[{k!r}]")
        elif t is not None:
            paths.append(at or "(root)")

    go(tree, "")
    return paths


def check_params(op: str, params: PyTree) -> list[Tensor]:
    """The leaves of ``params``: floating tensors on one device (raises otherwise).

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature.products import check_params
        >>> check_params("demo", {"w": md.zeros(2), "n": md.tensor([1, 2])})
        Traceback (most recent call last):
        ...
        minidiff.errors.DTypeError: demo: params leaf ['n'] is int64[2]; only floating-point parameters have curvature
    """
    leaves, treedef = pytree.flatten(params)
    if not leaves:
        raise ShapeError(f"{op}: params {treedef} has no tensors to differentiate")
    names = leaf_paths(params)
    for i, p in zip(names, leaves):
        if not isinstance(p, Tensor):
            raise TypeError(f"{op}: params leaf {i} is a {type(p).__name__}, expected a Tensor")
        if p.dtype.kind != "f":
            raise DTypeError(
                f"{op}: params leaf {i} is {describe(p)}; only floating-point parameters have curvature"
            )
        if p.device is not leaves[0].device:
            raise DeviceError(
                f"{op}: params leaf {i} is on {p.device} but {names[0]} is on {leaves[0].device}"
            )
    return leaves


def check_vector(op: str, params: PyTree, v: PyTree, vectorized: bool = False) -> int | None:
    """Check that ``v`` is shaped like ``params`` (with a leading axis of K directions if ``vectorized``).

    Returns K (or None when not vectorized).  Raises a ShapeError, DTypeError or DeviceError naming the
    offending leaf, its shape, dtype and device and its parameter's.

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature.products import check_vector
        >>> check_vector("demo", {"w": md.zeros(2)}, {"w": md.zeros((3, 2))}, vectorized=True)
        3
        >>> check_vector("demo", {"w": md.zeros(2)}, {"w": md.zeros(3)})
        Traceback (most recent call last):
        ...
        minidiff.errors.ShapeError: demo: v leaf ['w'] is float64[3] but its parameter is float64[2]
    """
    p_leaves = check_params(op, params)
    _, p_def = pytree.flatten(params)
    v_leaves, v_def = pytree.flatten(v)
    if v_def != p_def:
        raise ShapeError(f"{op}: v has structure {v_def} but params have {p_def}")
    k = None
    for i, p, t in zip(leaf_paths(params), p_leaves, v_leaves):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: v leaf {i} is a {type(t).__name__}, expected a Tensor")
        _check_leaf_like(op, i, t, p, vectorized)
        if vectorized and k is not None and t.shape[0] != k:
            raise ShapeError(
                f"{op}(vectorized=True): v leaves carry different numbers of directions "
                f"{[x.shape[0] for x in v_leaves]}"
            )
        k = t.shape[0] if vectorized else None
    if vectorized and k == 0:
        raise ShapeError(f"{op}(vectorized=True): v carries no directions (K = 0)")
    return k


def _check_leaf_like(op: str, i: str, t: Tensor, p: Tensor, vectorized: bool) -> None:
    """Leaf ``i`` of ``v`` must have the shape (after a leading K axis if ``vectorized``), dtype and
    device of its parameter ``p``."""
    if not (t.ndim == p.ndim + 1 and t.shape[1:] == p.shape if vectorized else t.shape == p.shape):
        if vectorized:
            raise ShapeError(
                f"{op}(vectorized=True): v leaf {i} is {describe(t)}, expected (K,) + {p.shape} "
                "(a leading axis of K directions)"
            )
        error: type[MinidiffError] = ShapeError
        hint = ""
    elif t.dtype != p.dtype:
        error, hint = DTypeError, f"; cast it with .astype({p.dtype})"
    elif t.device is not p.device:
        error, hint = DeviceError, ""
    else:
        return
    raise error(f"{op}: v leaf {i} is {describe(t)} but its parameter is {describe(p)}{hint}")


# ----------------------------------------------------------------------------- Hessian
def hvp(
    f: Callable[..., Any], params: PyTree, v: PyTree, mode: str = "fwd-over-rev", *, vectorized: bool = False
) -> PyTree:
    """``∇²f(params) · v`` for scalar ``f(params)``, with the structure of ``params``.

    This is :func:`minidiff.hvp` on one pytree argument: ``hvp(f, params, v, mode)`` equals
    ``md.hvp(f, (params,), (v,), mode)[0]``.  Both apply the one implementation of the three
    compositions, :func:`minidiff.transforms.hessian_product`; this one first checks ``params`` and
    ``v`` leaf by leaf (naming the leaf at fault) and takes ``vectorized``.

    ``mode``: ``"fwd-over-rev"`` (default, the JVP of the gradient), ``"rev-over-fwd"`` (the gradient
    of the directional derivative) or ``"rev-over-rev"`` (the VJP of the gradient).  With
    ``vectorized=True`` every leaf of ``v`` has a leading axis of K directions and K products come
    back from one vector-mode pass.

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import hvp
        >>> f = lambda p: (p[0] ** 2 * p[1]).sum()
        >>> p = (md.tensor([1.0]), md.tensor([3.0]))
        >>> [t.tolist() for t in hvp(f, p, (md.tensor([1.0]), md.tensor([0.0])), mode="rev-over-rev")]
        [[6.0], [2.0]]
    """
    check_hvp_mode("hvp", mode)
    check_vector("hvp", params, v, vectorized)
    return hessian_product(f, (params,), mode)((v,), vectorized)[0]


# ----------------------------------------------------------------------------- output-space curvature
class OutputSpaceProduct:
    """``v ↦ Jᵀ M J v`` for a model ``z = model_fn(params)`` and an output-space operator ``M``.

    The model is run once under reverse mode at construction (its tape kept for ``Jᵀ``); each product
    then costs one forward-mode pass (``J v``), ``M`` in output space and one walk of the kept tape.
    ``output_product(z, u)`` applies ``M`` to a tangent ``u`` shaped like ``z``.

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature.products import OutputSpaceProduct
        >>> prod = OutputSpaceProduct("demo", lambda p: 3.0 * p, md.tensor([1.0]), lambda z, u: 2.0 * u)
        >>> prod(md.tensor([1.0])).tolist()                  # J^T M J = 3 · 2 · 3
        [18.0]
    """

    kind: str  # set by fisher(): "analytic" or "sampled"
    labels: Tensor  # set by fisher(kind="sampled"): the labels drawn once, shape (S, N)

    def __init__(
        self,
        op: str,
        model_fn: Callable[..., Any],
        params: PyTree,
        output_product: Callable[[Any, Any], Any] | None,  # None: the builder sets it once z is known
    ) -> None:
        check_params(op, params)
        self.op, self.model_fn, self.params = op, model_fn, params
        self.z, self._back = vjp(model_fn, params)
        for i, z in enumerate(pytree.flatten(self.z)[0]):
            if not isinstance(z, Tensor) or z.dtype.kind != "f":
                raise DTypeError(
                    f"{op}: model_fn output leaf {i} is {describe(z)}; "
                    "the model's outputs must be floating-point tensors"
                )
        self._output_product = output_product

    def __call__(self, v: PyTree, vectorized: bool = False) -> PyTree:
        check_vector(self.op, self.params, v, vectorized)
        product = self._output_product
        assert product is not None  # set by the builder before the product is handed out
        if not vectorized:
            _, jv = jvp(self.model_fn, (self.params,), (v,))
            return self._back(product(self.z, jv))[0]
        _, jv = jvp(self.model_fn, (self.params,), (v,), vectorized=True)
        return vmap(lambda u: self._back(product(self.z, u))[0])(jv)


def _loss_hessian_product(op: str, loss_fn: Callable[..., Any], z: Tensor) -> Callable[[Any, Any], Any]:
    """``u ↦ ∇²ℓ(z) u`` by forward-over-reverse in output space (checks ``ℓ(z)`` is a scalar once)."""
    value = loss_fn(z)
    if not isinstance(value, Tensor) or value.shape != ():
        shape = getattr(value, "shape", type(value).__name__)
        raise ShapeError(f"{op}: loss_fn(z) must return a scalar tensor, got {shape}")
    return lambda z, u: _engine_hvp(loss_fn, (z,), (u,))[0]


def gauss_newton(
    model_fn: Callable[..., Any], loss_fn: Callable[..., Any], params: PyTree
) -> OutputSpaceProduct:
    """The Gauss-Newton product at ``params`` as a reusable callable ``v ↦ G v`` (the model's tape is
    recorded once and reused by every product; see :func:`ggn_vp`).

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import gauss_newton
        >>> G = gauss_newton(lambda p: p * p, lambda z: 0.5 * (z * z).sum(), md.tensor([1.0, 2.0]))
        >>> G(md.tensor([1.0, 1.0])).tolist(), G(md.tensor([0.0, 1.0])).tolist()
        ([4.0, 16.0], [0.0, 16.0])
    """
    prod = OutputSpaceProduct("ggn_vp", model_fn, params, None)
    prod._output_product = _loss_hessian_product("ggn_vp", loss_fn, prod.z)
    return prod


def ggn_vp(
    model_fn: Callable[..., Any],
    loss_fn: Callable[..., Any],
    params: PyTree,
    v: PyTree,
    *,
    vectorized: bool = False,
) -> PyTree:
    """Generalized Gauss-Newton product ``Jᵀ (∇²ℓ(z)) J v`` with ``z = model_fn(params)``, ``ℓ = loss_fn``.

    ``J = ∂z/∂params`` is never formed: ``J v`` is one forward-mode pass of ``model_fn``, the output-space
    Hessian ``∇²ℓ(z)`` is applied to it by a forward-over-reverse HVP of ``loss_fn`` at ``z`` (cheap: the
    output space is small), and ``Jᵀ`` is one reverse pass.  ``z`` may be a tensor or a pytree.  ``G`` is
    positive semi-definite when ``ℓ`` is convex in ``z``; it drops the term ``Σ_k (∂ℓ/∂z_k) ∇²z_k`` of the
    full Hessian.  ``vectorized=True``: ``v`` carries a leading axis of K directions.

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import ggn_vp
        >>> model = lambda p: p["a"] * p["b"]            # z = a·b
        >>> loss = lambda z: 0.5 * (z * z).sum()         # ∇²ℓ = 1, so G = J^T J
        >>> p = {"a": md.tensor([2.0]), "b": md.tensor([3.0])}
        >>> g = ggn_vp(model, loss, p, {"a": md.tensor([1.0]), "b": md.tensor([0.0])})
        >>> g["a"].tolist(), g["b"].tolist()                 # J = [b, a] = [3, 2]; J^T J e_a = [9, 6]
        ([9.0], [6.0])
    """
    return gauss_newton(model_fn, loss_fn, params)(v, vectorized)


# ----------------------------------------------------------------------------- Fisher of softmax CE
def _check_logits(op: str, z: Any) -> Tensor:
    if not isinstance(z, Tensor) or z.ndim != 2:
        shape = getattr(z, "shape", type(z).__name__)
        raise ShapeError(
            f"{op}: model_fn must return logits of shape (N, C) for softmax cross-entropy, got {shape}"
        )
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise ShapeError(f"{op}: logits of shape {z.shape} have no examples or no classes")
    return z


def sample_labels(logits: Tensor, n_samples: int = 1, rng: RngLike = None) -> Tensor:
    """Integer labels ``(n_samples, N)`` drawn from ``softmax(logits)`` row by row (inverse CDF).

    ``rng``: an int seed, a :class:`minidiff.primitives.random.Generator`, a ``numpy.random.Generator`` or None (see
    :func:`minidiff.primitives.random.as_generator`).

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import sample_labels
        >>> logits = md.tensor([[0.0, 50.0, 0.0], [50.0, 0.0, 0.0]])   # nearly one-hot
        >>> sample_labels(logits, 2, rng=0).tolist()
        [[1, 0], [1, 0]]
    """
    z = _check_logits("sample_labels", logits)
    check_number("sample_labels", "n_samples", n_samples, low=1, integer=True)
    gen = as_generator(rng, z.device, op="sample_labels")
    p = ops.softmax(z.detach(), axis=-1)
    cdf = ops.cumsum(p, axis=-1)[:, :-1]  # (N, C-1): the label is how many of these u exceeds
    u = gen.uniform((n_samples, z.shape[0], 1), dtype=p.dtype)
    return ops.sum((u >= cdf).astype("int64"), axis=-1)


def _check_labels(op: str, labels: Any, z: Tensor) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{op}: labels must be an integer Tensor, got {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise DTypeError(f"{op}: labels must be integers, got dtype {labels.dtype}")
    n, c = z.shape
    if labels.ndim not in (1, 2) or labels.shape[-1] != n or labels.shape[0] == 0:
        raise ShapeError(
            f"{op}: labels of shape {labels.shape} for logits {z.shape}; expected ({n},) or (S, {n})"
        )
    if labels.ndim == 1:
        labels = ops.reshape(labels, (1, n))
    if labels.device is not z.device:
        raise DeviceError(f"{op}: labels on {labels.device} but the logits on {z.device}")
    if labels.size and (int(ops.min(labels).item()) < 0 or int(ops.max(labels).item()) >= c):
        raise ValueError(f"{op}: labels must lie in [0, {c}) for {c} classes")
    return labels


def fisher(
    model_fn: Callable[..., Any],
    params: PyTree,
    kind: str = "analytic",
    *,
    n_samples: int = 1,
    rng: RngLike = None,
    labels: Tensor | None = None,
) -> OutputSpaceProduct:
    """The Fisher product at ``params`` as a reusable callable ``v ↦ F v`` (see :func:`fisher_vp`).

    The sampled form draws its labels once, here: every product of the callable then applies the same
    matrix (which is what CG and Lanczos need).

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import fisher
        >>> Fv = fisher(lambda p: md.reshape(p, (1, 2)), md.tensor([0.0, 0.0]), "sampled", labels=md.tensor([0]))
        >>> Fv(md.tensor([1.0, 0.0])).tolist()             # g = p − e_0 = (−½, ½): g gᵀ e_0
        [0.25, -0.25]
    """
    op = "fisher_vp"
    if kind not in FISHER_KINDS:
        raise ValueError(f"{op}: unknown kind {kind!r}; choose one of {FISHER_KINDS}")
    check_number(op, "n_samples", n_samples, low=1, integer=True)
    if labels is not None and kind != "sampled":
        raise ValueError(f"{op}: labels are only used by kind='sampled' (the analytic form needs none)")
    prod = OutputSpaceProduct(op, model_fn, params, None)
    z = _check_logits(op, prod.z)
    n, c = z.shape
    p = ops.softmax(z, axis=-1)
    if kind == "analytic":
        # M_i = (diag(p_i) − p_i p_iᵀ) / N, the Hessian of the mean cross-entropy in the logits
        def output_product(z: Tensor, u: Tensor) -> Tensor:
            return (p * u - p * ops.sum(p * u, axis=-1, keepdims=True)) * (1.0 / n)

    else:
        if labels is None:
            labels = sample_labels(z, n_samples, as_generator(rng, z.device, op=op))
        else:
            labels = _check_labels(op, labels, z)
        s = labels.shape[0]
        onehot = (ops.expand_dims(labels, -1) == arange(c, device=z.device)).astype(z.dtype)
        g = ops.expand_dims(p, 0) - onehot  # (S, N, C): ∂ℓ_i/∂z_i at each drawn label
        scale = 1.0 / (n * s)

        # M_i = (1/(N S)) Σ_s g_is g_isᵀ, an unbiased estimate of the analytic M_i
        def output_product(z: Tensor, u: Tensor) -> Tensor:
            return ops.sum(g * ops.sum(g * u, axis=-1, keepdims=True), axis=0) * scale

        prod.labels = labels
    prod._output_product = output_product
    prod.kind = kind
    return prod


def fisher_vp(
    model_fn: Callable[..., Any],
    params: PyTree,
    v: PyTree,
    kind: str = "analytic",
    *,
    n_samples: int = 1,
    rng: RngLike = None,
    labels: Tensor | None = None,
    vectorized: bool = False,
) -> PyTree:
    """Fisher-vector product for the mean softmax cross-entropy of logits ``z = model_fn(params)`` (N, C).

    ``kind="analytic"``: the true Fisher ``F = Jᵀ M J`` with ``M = (1/N) ⊕_i (diag(p_i) − p_i p_iᵀ)``,
    ``p_i = softmax(z_i)`` — the expectation over labels drawn from the model.  For cross-entropy it equals
    the Gauss-Newton matrix (``M`` is the loss Hessian in the logits), whatever the data's labels.

    ``kind="sampled"``: labels ``ŷ_is ~ Categorical(p_i)`` for ``s = 1..n_samples`` (drawn with ``rng``: an
    int seed, a :class:`minidiff.primitives.random.Generator` or a ``numpy.random.Generator``) and ``M`` replaced
    by ``(1/(N S)) Σ_s g_is g_isᵀ`` with ``g_is = p_i − onehot(ŷ_is)`` the per-example logit gradient: an unbiased Monte-Carlo estimate of the
    analytic Fisher (the "sampled-label true Fisher" of K-FAC), of rank at most ``N·S``.  ``labels``
    ((N,) or (S, N) integers) fixes the draw instead; passing the data's own labels gives the *empirical*
    Fisher, which is not an unbiased estimate of ``F``.

    Cost: one forward-mode pass and one reverse pass, as :func:`ggn_vp`.

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import fisher_vp
        >>> model = lambda p: md.reshape(p["w"], (1, 2))            # logits = w, one example
        >>> p = {"w": md.tensor([0.0, 0.0])}                      # p = (1/2, 1/2)
        >>> fisher_vp(model, p, {"w": md.tensor([1.0, 0.0])})["w"].tolist()   # (diag(p) - p p^T) e_0
        [0.25, -0.25]
    """
    return fisher(model_fn, params, kind, n_samples=n_samples, rng=rng, labels=labels)(v, vectorized)
