"""Hutchinson's estimators of the diagonal and the trace of a symmetric matrix known by its products.

For a probe ``z`` with independent zero-mean unit-variance entries, ``E[z ⊙ Az] = diag(A)`` and
``E[zᵀAz] = tr(A)``.  Per probe, the variance of coordinate ``i`` of the diagonal estimate is
``Σ_{j≠i} A_ij²`` for Rademacher probes and ``2A_ii² + Σ_{j≠i} A_ij²`` for Gaussian ones; of the trace,
``2 Σ_{i≠j} A_ij²`` and ``2‖A‖_F²``.  Rademacher probes are never worse.

``A`` is the Hessian of ``f`` at ``params`` (by HVPs) or any ``matvec`` (e.g. a Gauss-Newton product).
The K probes of a call run as vector-mode passes (``md.vmap``), ``chunk_size`` probes at a time.

>>> import minidiff as md
>>> from minidiff.curvature import hutchinson_diag
>>> f = lambda p: (p["w"] ** 4).sum() / 12            # H = diag(w²), diagonal: exact with one probe
>>> hutchinson_diag(f, {"w": md.tensor([1.0, 2.0])}, rng=0)["w"].tolist()
[1.0, 4.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ShapeError, check_number
from ..primitives import ops
from ..primitives.random import RngLike, as_generator
from ..tensor import pytree
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree
from ..transforms.core import check_hvp_mode, vmap
from .products import check_params, check_vector, hvp

__all__ = ["PROBE_DISTRIBUTIONS", "RunningEstimate", "hutchinson_diag", "hutchinson_trace", "sample_probes"]

#: Probe distributions: random signs, or standard Gaussians.
PROBE_DISTRIBUTIONS = ("rademacher", "normal")


class RunningEstimate:
    """Running mean of i.i.d. samples (a pytree of tensors) with its standard error.

    Samples arrive in batches along a leading axis; the mean and the sum of squared deviations are merged
    batch by batch (Chan et al.'s parallel form of Welford's update), so the estimate can be refined by
    further calls without keeping the samples.

    Attributes: ``n_probes`` (samples seen), ``value`` (their mean), ``variance`` (the per-sample
    variance, unbiased; NaN below two samples) and ``stderr`` (``sqrt(variance / n_probes)``, the
    standard error of ``value``).

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import RunningEstimate
        >>> est = RunningEstimate()
        >>> est.update(md.tensor([1.0, 3.0])).update(md.tensor([5.0]))
        RunningEstimate(n_probes=3)
        >>> est.value.item(), est.variance.item(), est.n_probes
        (3.0, 4.0, 3)
    """

    def __init__(self, kind: str | None = None):
        self.kind = kind
        self.n_probes = 0
        self.value: PyTree = None  # a pytree of tensors once a sample is in
        self._m2: PyTree = None

    def __repr__(self) -> str:
        return f"RunningEstimate(n_probes={self.n_probes})"

    def update(self, samples: PyTree) -> RunningEstimate:
        """Merge a batch of samples (every leaf with the same leading number of samples)."""
        leaves, treedef = pytree.flatten(samples)
        sizes = {x.shape[0] if isinstance(x, Tensor) and x.ndim else None for x in leaves}
        if len(sizes) != 1 or None in sizes or 0 in sizes:
            raise ShapeError(
                "RunningEstimate.update: every leaf needs the same leading number (>= 1) of samples, got "
                f"shapes {[getattr(x, 'shape', None) for x in leaves]}"
            )
        (k,) = sizes
        assert k is not None  # checked above
        mean_b = [ops.mean(x, axis=0) for x in leaves]
        m2_b = [ops.sum((x - m) ** 2, axis=0) for x, m in zip(leaves, mean_b)]
        if self.n_probes == 0:
            self._def, mean, m2 = treedef, mean_b, m2_b
        else:
            if treedef != self._def:
                raise ShapeError(
                    f"RunningEstimate.update: samples {treedef} but the estimate holds {self._def}"
                )
            old_mean, old_m2 = pytree.flatten(self.value)[0], pytree.flatten(self._m2)[0]
            for x, m in zip(leaves, old_mean):
                if tuple(x.shape[1:]) != tuple(m.shape):
                    raise ShapeError(
                        f"RunningEstimate.update: samples of shape {x.shape[1:]} for an estimate of shape {m.shape}"
                    )
            n, total = self.n_probes, self.n_probes + k
            mean, m2 = [], []
            for a, b, qa, qb in zip(old_mean, mean_b, old_m2, m2_b):
                delta = b - a
                mean.append(a + delta * (k / total))
                m2.append(qa + qb + delta * delta * (n * k / total))
        self.n_probes += k
        self.value = pytree.unflatten(treedef, mean)
        self._m2 = pytree.unflatten(treedef, m2)
        return self

    @property
    def variance(self) -> PyTree:
        """Unbiased per-sample variance (NaN with fewer than two samples)."""
        if self.n_probes == 0:
            return None
        d = self.n_probes - 1
        return pytree.tree_map(lambda q: q * (1.0 / d) if d else q * float("nan"), self._m2)

    @property
    def stderr(self) -> PyTree:
        """Standard error of :attr:`value`: ``sqrt(variance / n_probes)``."""
        if self.n_probes == 0:
            return None
        return pytree.tree_map(lambda s: ops.sqrt(s * (1.0 / self.n_probes)), self.variance)


def sample_probes(
    params: PyTree, n_probes: int, distribution: str = "rademacher", rng: RngLike = None
) -> PyTree:
    """``n_probes`` random probes shaped like ``params`` (each leaf with a leading axis of ``n_probes``),
    in each leaf's dtype, on the parameters' device.

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import sample_probes
        >>> z = sample_probes({"w": md.zeros((2, 3))}, 4, "rademacher", rng=0)
        >>> z["w"].shape, sorted(set(z["w"].numpy().ravel().tolist()))
        ((4, 2, 3), [-1.0, 1.0])
    """
    leaves = check_params("sample_probes", params)
    _check_probe_args("sample_probes", n_probes, distribution)
    gen = as_generator(rng, leaves[0].device, op="sample_probes")
    draw = gen.rademacher if distribution == "rademacher" else gen.normal
    return pytree.tree_map(lambda p: draw((n_probes,) + tuple(p.shape), dtype=p.dtype), params)


def _check_probe_args(op: str, n_probes: int, distribution: str) -> None:
    check_number(op, "n_probes", n_probes, low=1, integer=True)
    if distribution not in PROBE_DISTRIBUTIONS:
        raise ValueError(f"{op}: unknown distribution {distribution!r}; choose one of {PROBE_DISTRIBUTIONS}")


def _estimate(
    op: str,
    reduce: Callable[[Any, Any], Any],
    f: Callable[..., Any] | None,
    params: PyTree,
    matvec: Callable[..., Any] | None,
    probes: dict,
    running: Any,
) -> Any:
    """What both estimators do: draw the probes ``z`` chunk by chunk, form ``A z`` and merge
    ``reduce(z, A z)`` (one sample per probe) into a :class:`RunningEstimate`.

    ``probes``: the settings ``n_probes``, ``distribution``, ``rng``, ``mode`` and ``chunk_size``."""
    leaves = _check_estimate_args(op, f, params, matvec, probes)
    estimate = _running_estimate(op, running)
    n_probes, chunk_size = probes["n_probes"], probes["chunk_size"]
    gen = as_generator(probes["rng"], leaves[0].device, op=op)
    chunk = n_probes if chunk_size is None else min(chunk_size, n_probes)
    for done in range(0, n_probes, chunk):
        k = min(chunk, n_probes - done)
        z = sample_probes(params, k, probes["distribution"], gen)
        estimate.update(reduce(z, _products(op, f, params, matvec, z, k, probes["mode"])))
    return estimate if running is not False else estimate.value


def _check_estimate_args(
    op: str, f: Callable[..., Any] | None, params: PyTree, matvec: Callable[..., Any] | None, probes: dict
) -> list[Tensor]:
    """The parameters' leaves, once every argument of an estimator is checked."""
    if (f is None) == (matvec is None):
        raise TypeError(
            f"{op}: give either f (a scalar function of params, for HVPs) or matvec, not both or neither"
        )
    if params is None:
        raise TypeError(f"{op}: params is required (the point, or the shapes of the vectors matvec takes)")
    leaves = check_params(op, params)
    _check_probe_args(op, probes["n_probes"], probes["distribution"])
    check_hvp_mode(op, probes["mode"])
    check_number(op, "chunk_size", probes["chunk_size"], low=1, integer=True, none_ok=True)
    return leaves


def _running_estimate(op: str, running: Any) -> RunningEstimate:
    """The estimate to merge the new probes into: ``running`` itself, or a fresh one."""
    if isinstance(running, RunningEstimate):
        if running.kind not in (None, op):
            raise ValueError(f"{op}: cannot continue a running estimate of {running.kind}")
        return running
    if isinstance(running, bool):
        return RunningEstimate(op)
    raise TypeError(f"{op}: running must be a bool or a RunningEstimate, got {type(running).__name__}")


def _products(
    op: str,
    f: Callable[..., Any] | None,
    params: PyTree,
    matvec: Callable[..., Any] | None,
    z: PyTree,
    k: int,
    mode: str,
) -> PyTree:
    """``A z`` for ``k`` probes ``z`` (a leading axis of k): Hessian-vector products of ``f`` in
    ``mode``, or ``matvec`` batched by ``md.vmap`` (called on single vectors when k is 1)."""
    if f is not None:
        return hvp(f, params, z, mode, vectorized=True)
    assert matvec is not None  # _check_estimate_args: exactly one of f and matvec
    if k == 1:  # a matvec that cannot be batched still works one probe at a time
        az = pytree.tree_map(lambda t: ops.expand_dims(t, 0), matvec(pytree.tree_map(lambda t: t[0], z)))
    else:
        az = vmap(matvec)(z)
    try:
        check_vector(op, params, az, vectorized=True)
    except (ShapeError, TypeError) as exc:
        raise ShapeError(f"{op}: matvec must return a tree shaped like params: {exc}") from None
    return az


def _elementwise_products(z: PyTree, az: PyTree) -> PyTree:
    """``z_k ⊙ A z_k`` for each probe k, leaf by leaf."""
    return pytree.tree_map(lambda a, b: a * b, z, az)


def hutchinson_diag(
    f: Callable[..., Any] | None = None,
    params: PyTree = None,
    *,
    matvec: Callable[..., Any] | None = None,
    n_probes: int = 1,
    distribution: str = "rademacher",
    rng: RngLike = None,
    mode: str = "fwd-over-rev",
    chunk_size: int | None = None,
    running: bool | RunningEstimate = False,
) -> PyTree:
    """Hutchinson estimate ``(1/K) Σ_k z_k ⊙ A z_k`` of ``diag(A)``, shaped like ``params``.

    ``A`` is the Hessian of scalar ``f`` at ``params`` (products by :func:`hvp` in ``mode``) or, with
    ``matvec=`` instead of ``f``, the symmetric operator ``v ↦ matvec(v)`` on trees shaped like ``params``.
    ``n_probes`` (K) probes of ``distribution`` (``"rademacher"`` or ``"normal"``) are drawn with ``rng``
    (an int seed, a :class:`minidiff.primitives.random.Generator`, a ``numpy.random.Generator``; the default
    generator if None) and pushed
    through ``A`` ``chunk_size`` at a time in vector mode (all at once by default; 1 calls ``matvec`` on
    single vectors, for a matvec that ``md.vmap`` cannot batch).

    ``running=True`` returns a :class:`RunningEstimate` (``.value``, ``.stderr`` per coordinate,
    ``.n_probes``); passing a previous RunningEstimate adds the new probes to it.

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import hutchinson_diag
        >>> A = md.tensor([[2.0, 1.0], [1.0, 3.0]])
        >>> est = hutchinson_diag(matvec=lambda v: A @ v, params=md.zeros(2), n_probes=2000, rng=0, running=True)
        >>> [round(x) for x in est.value.tolist()], est.n_probes
        ([2, 3], 2000)
    """
    probes = dict(n_probes=n_probes, distribution=distribution, rng=rng, mode=mode, chunk_size=chunk_size)
    return _estimate("hutchinson_diag", _elementwise_products, f, params, matvec, probes, running)


def _quadratic_forms(z: PyTree, az: PyTree) -> Tensor:
    """``z_kᵀ A z_k`` for each probe k (summed over every leaf)."""
    total: Tensor | None = None
    for a, b in zip(pytree.flatten(z)[0], pytree.flatten(az)[0]):
        s = ops.sum(ops.reshape(a * b, (a.shape[0], -1)), axis=1)
        total = s if total is None else total + s.astype(total.dtype)
    assert total is not None  # z has at least one leaf (checked with the parameters)
    return total


def hutchinson_trace(
    f: Callable[..., Any] | None = None,
    params: PyTree = None,
    *,
    matvec: Callable[..., Any] | None = None,
    n_probes: int = 1,
    distribution: str = "rademacher",
    rng: RngLike = None,
    mode: str = "fwd-over-rev",
    chunk_size: int | None = None,
    running: bool | RunningEstimate = False,
) -> Any:
    """Hutchinson estimate ``(1/K) Σ_k z_kᵀ A z_k`` of ``tr(A)`` as a 0-d tensor.

    Arguments as :func:`hutchinson_diag`; with ``running=True`` the result is a :class:`RunningEstimate`
    whose ``.value`` and ``.stderr`` are 0-d tensors.

    Example:
        >>> import minidiff as md
        >>> from minidiff.curvature import hutchinson_trace
        >>> f = lambda p: 0.5 * (p * p).sum() + p[0] * p[1]      # H = [[1, 1], [1, 1]], trace 2
        >>> est = hutchinson_trace(f, md.tensor([0.3, -0.2]), n_probes=400, rng=1, running=True)
        >>> abs(est.value.item() - 2.0) < 5 * est.stderr.item()
        True
    """
    probes = dict(n_probes=n_probes, distribution=distribution, rng=rng, mode=mode, chunk_size=chunk_size)
    return _estimate("hutchinson_trace", _quadratic_forms, f, params, matvec, probes, running)
