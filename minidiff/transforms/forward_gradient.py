"""Forward gradients (Baydin et al., 2022): an unbiased gradient estimate from forward mode alone.

Draw ``v`` with independent zero-mean unit-variance entries; one forward-mode pass gives ``f(θ)`` and
``d = ∇f(θ)·v``; then ``g = d·v`` has expectation ``E[v vᵀ]∇f = ∇f``.  With K directions the estimate
is ``(1/K) Σ_k (∇f·v_k) v_k``, computed in one vector-mode pass.  No tape is ever recorded here.

>>> import minidiff as md
>>> f = lambda p: (p["w"] ** 2).sum()
>>> params = {"w": md.tensor([1.0, -2.0])}
>>> loss, g = md.forward_grad(f, params, md.random.Generator(0))
>>> loss.item()
5.0
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from ..errors import ShapeError, check_number
from ..primitives.ops import clip as clip_values
from ..primitives.ops import einsum
from ..primitives.random import RngLike, as_generator
from ..tensor import pytree
from ..tensor.core import Tensor, Tracer, check_differentiable, wrap
from ..tensor.pytree import PyTree
from .core import jvp

DISTRIBUTIONS = ("normal", "rademacher")

#: How each FGD setting is checked (:func:`check_fgd_settings`): the bounds given to
#: :func:`minidiff.errors.check_number`.
_SETTING_BOUNDS: dict[str, dict[str, Any]] = {
    "lr": dict(low=0.0),
    "decay": dict(low=0.0),
    "n_directions": dict(low=1, integer=True),
    "clip": dict(low=0.0, low_open=True, none_ok=True),
}


def check_fgd_settings(op: str, **settings: Any) -> None:
    """The one check of forward gradient descent's settings, for :class:`FGD` and ``md.optim.FGD``.

    Each keyword given is checked: ``lr`` (η₀) and ``decay`` (k) non-negative numbers,
    ``n_directions`` an integer >= 1, ``clip`` None or a positive number, ``distribution`` one of
    :data:`DISTRIBUTIONS`.  Raises ``ValueError`` naming ``op`` and the setting.

    >>> from minidiff.transforms.forward_gradient import check_fgd_settings
    >>> check_fgd_settings("FGD", lr=0.1, distribution="rademacher")
    >>> check_fgd_settings("FGD", decay=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: FGD: decay must be a number >= 0.0, got -1.0
    """
    for name, value in settings.items():
        if name == "distribution":
            if value not in DISTRIBUTIONS:
                raise ValueError(f"{op}: unknown distribution {value!r}; choose one of {DISTRIBUTIONS}")
        elif name in _SETTING_BOUNDS:
            check_number(op, name, value, **_SETTING_BOUNDS[name])
        else:
            raise TypeError(f"check_fgd_settings: unknown setting {name!r}")


def fgd_learning_rate(lr: float, decay: float, i: int) -> float:
    """FGD's schedule ``η_i = η₀·exp(−k·i)`` with ``η₀ = lr`` and ``k = decay`` (the paper's).

    >>> from minidiff.transforms.forward_gradient import fgd_learning_rate
    >>> fgd_learning_rate(0.5, 0.0, 10), round(fgd_learning_rate(1.0, 1.0, 1), 6)
    (0.5, 0.367879)
    """
    return lr * math.exp(-decay * i)


def sample_directions(
    params: PyTree,
    rng: RngLike = None,
    distribution: str = "normal",
    n_directions: int = 1,
    out: PyTree = None,
) -> PyTree:
    """Random directions shaped like ``params`` (with a leading axis of K when ``n_directions > 1``).

    ``rng``: an int seed, a :class:`minidiff.primitives.random.Generator`, a ``numpy.random.Generator`` or None
    (the default generator), converted by :func:`minidiff.primitives.random.as_generator` on the parameters' device.
    Normal directions come from ``Generator.normal(method="box-muller")`` (float32 on the CPU: Box–Muller on
    raw random bits, about 3× faster than NumPy's float32 sampler; other dtypes and devices: the array
    library's sampler), Rademacher directions from random bytes.  ``out``: a pytree shaped like the
    result whose tensors are filled and returned instead of new ones (see :class:`ForwardGradientWorkspace`).

    >>> import minidiff as md
    >>> params = {"w": md.zeros((2, 3), dtype="float32")}
    >>> buf = {"w": md.zeros((2, 3), dtype="float32")}
    >>> v = md.sample_directions(params, 0, "rademacher", out=buf)
    >>> v["w"] is buf["w"], v["w"].tolist() == md.sample_directions(params, 0, "rademacher")["w"].tolist()
    (True, True)
    """
    check_fgd_settings("forward_grad", distribution=distribution)
    leaves, treedef = pytree.flatten(params)
    rng = as_generator(rng, leaves[0].device if leaves else None, op="forward_grad")
    lead = () if n_directions == 1 else (n_directions,)
    targets = [None] * len(leaves) if out is None else pytree.flatten(out)[0]
    if len(targets) != len(leaves):
        raise ShapeError(f"sample_directions: out holds {len(targets)} tensors, params {len(leaves)}")

    def one(p: Tensor, target: Tensor | None) -> Tensor:
        shape = lead + tuple(p.shape)
        if distribution == "normal":
            return rng.normal(shape, dtype=p.dtype, method="box-muller", out=target)
        return rng.rademacher(shape, dtype=p.dtype, out=target)

    return pytree.unflatten(treedef, [one(p, t) for p, t in zip(leaves, targets)])


class ForwardGradientWorkspace:
    """The parameter-sized buffers :func:`forward_grad` reuses from one call to the next.

    Without one, each call allocates v and the estimate afresh (about two parameter-sized arrays; for
    large models each is thousands of new pages the operating system must fault in).  Given one
    (``forward_grad(..., workspace=ws)``), v is drawn into the same buffers every call and
    ``(∇f·v)·v`` formed in place (in v's own buffers when v was sampled, with one direction), so after
    the first call no parameter-sized array is allocated.  ``md.FGD`` and ``md.optim.FGD`` hold one.

    **The estimate returned lives in the workspace**: the next call with the same workspace overwrites
    it; copy it (``g.copy()``) to keep it.  Buffers are made again when the parameters' shapes, dtypes,
    device or the number of directions change.

    >>> import minidiff as md
    >>> ws = md.ForwardGradientWorkspace()
    >>> f = lambda p: (p["w"] ** 2).sum()
    >>> params = {"w": md.tensor([1.0, -2.0])}
    >>> _, g1 = md.forward_grad(f, params, 0, workspace=ws)
    >>> _, g2 = md.forward_grad(f, params, 0)                  # without: fresh arrays, the same numbers
    >>> md.allclose(g1["w"], g2["w"]), ws.nbytes
    (True, 16)
    """

    def __init__(self) -> None:
        self._layout: tuple | None = None
        self._buffers: dict[str, list[Tensor]] = {}

    @property
    def nbytes(self) -> int:
        """Bytes held in buffers."""
        return sum(t.size * t.dtype.itemsize for ts in self._buffers.values() for t in ts)

    def clear(self) -> None:
        """Drop every buffer (they are made again on the next call)."""
        self._layout, self._buffers = None, {}

    def buffers(self, kind: str, params: PyTree, n_directions: int = 1) -> PyTree:
        """Buffers shaped like ``params`` (``kind="directions"``: with a leading K axis when
        ``n_directions > 1``; ``kind="estimate"``: like ``params``), made on first use."""
        leaves, treedef = pytree.flatten(params)
        layout = (n_directions, tuple((tuple(p.shape), p.dtype, p.device.name) for p in leaves))
        if layout != self._layout:
            self.clear()
            self._layout = layout
        if kind not in self._buffers:
            lead = (n_directions,) if kind == "directions" and n_directions > 1 else ()
            self._buffers[kind] = [
                wrap(p.device.xp.empty(lead + tuple(p.shape), dtype=p.dtype), p.device) for p in leaves
            ]
        return pytree.unflatten(treedef, self._buffers[kind])


def forward_grad(
    f: Callable[..., Any],
    params: PyTree,
    rng: RngLike = None,
    n_directions: int = 1,
    distribution: str = "normal",
    clip: float | None = None,
    directions: PyTree = None,
    workspace: ForwardGradientWorkspace | None = None,
) -> tuple[Tensor, PyTree]:
    """``(f(params), (1/K) Σ_k (∇f·v_k) v_k)`` from forward mode only.

    ``params`` is a pytree of float tensors; ``rng`` an int seed, a :class:`minidiff.primitives.random.Generator`
    (on the parameters' device), a ``numpy.random.Generator`` (wrapped: its state advances) or None
    for the default generator (see :func:`minidiff.primitives.random.as_generator`).  ``distribution``:
    ``"normal"`` or ``"rademacher"``.  ``clip`` caps ``|∇f·v|`` (the public reproduction caps it at 1
    to keep FGD from blowing up).  ``directions`` may be given instead of sampled (shaped like
    ``params``, with a leading K axis if K > 1).  ``workspace``: a :class:`ForwardGradientWorkspace`
    whose buffers v is drawn into and the estimate formed in, in place, so that a loop of calls
    allocates no parameter-sized array after the first; the estimate returned then lives in the
    workspace and the next call overwrites it.  Without one, each call returns fresh arrays.
    """
    check_fgd_settings("forward_grad", n_directions=n_directions)
    name = getattr(f, "__qualname__", type(f).__name__)
    for i, leaf in enumerate(pytree.flatten(params)[0]):
        check_differentiable(f"forward_grad({name}): parameter leaf {i}", leaf)
    if directions is not None:
        v = directions
    else:
        out = None if workspace is None else workspace.buffers("directions", params, n_directions)
        v = sample_directions(params, rng, distribution, n_directions, out=out)
    loss, d, depends = _directional_derivative(f, params, v, n_directions > 1)
    if loss.shape != ():
        raise ShapeError(
            f"forward_grad({name}): the loss must be a scalar, got shape {loss.shape}; reduce it "
            "(md.sum, md.mean) first, as for md.grad"
        )
    if not depends:
        warnings.warn(
            f"forward_grad({name}): the loss does not depend on the parameters, so the estimate is "
            "identically zero",
            stacklevel=2,
        )
    if clip is not None:
        d = clip_values(d, -clip, clip)
    if workspace is not None and _plain(d, v):
        in_v = directions is None and n_directions == 1  # v is the workspace's and is not needed after
        out = v if in_v else workspace.buffers("estimate", params, n_directions)
        return loss, _estimate_into(d, v, out, n_directions)
    if n_directions == 1:
        return loss, pytree.tree_map(lambda vk: d * vk, v)
    scale = 1.0 / n_directions
    return loss, pytree.tree_map(lambda vk: einsum("k,k...->...", d, vk) * scale, v)


def _plain(d: Any, v: PyTree) -> bool:
    """Whether ``d`` and every direction are plain tensors (not tracers of an enclosing transform), so
    the estimate may be formed on their arrays without losing a derivative."""
    return type(d) is Tensor and all(type(t) is Tensor for t in pytree.flatten(v)[0])


def _estimate_into(d: Tensor, v: PyTree, out: PyTree, n_directions: int) -> PyTree:
    """``(1/K) Σ_k d_k v_k`` written into the arrays of ``out`` (which may be ``v`` itself when K = 1)."""
    xp = d.device.xp
    dk = xp.array(d._data, copy=True)  # d may share memory with v (f returning a parameter itself)
    targets = pytree.flatten(out)[0]
    for vk, target in zip(pytree.flatten(v)[0], targets):
        if n_directions == 1:
            xp.multiply(vk._data, dk, out=target._data)
        else:
            flat = target._data.reshape(-1)
            xp.matmul(dk, vk._data.reshape(n_directions, -1), out=flat)
            flat *= 1.0 / n_directions
    return out


def _directional_derivative(
    f: Callable[..., Any], params: PyTree, v: PyTree, vectorized: bool
) -> tuple[Any, Any, bool]:
    """``(f(params), ∇f·v, whether f's output depends on params at all)`` in one forward pass."""

    def traced(p: PyTree) -> tuple[Any, bool]:
        out = f(p)
        leaves = pytree.flatten(p)[0]
        level = leaves[0]._level if leaves else None
        return out, isinstance(out, Tracer) and out._level == level

    loss, d, depends = jvp(traced, (params,), (v,), has_aux=True, vectorized=vectorized)
    return loss, d, depends


def fgd_update(params: PyTree, grads: PyTree, lr: float) -> PyTree:
    """``θ − lr·g`` leaf by leaf: the FGD update of :class:`FGD` and ``md.optim.FGD``."""
    return pytree.tree_map(lambda p, g: p - lr * g, params, grads)


class FGD:
    """Forward gradient descent on a pytree, functionally: ``θ ← θ − η_i (∇f·v) v``, ``η_i = η₀·exp(−k·i)``.

    The functional face of ``md.optim.FGD`` (the optimizer, on tape leaves, with parameter groups and
    ``state_dict``): both check their settings with :func:`check_fgd_settings`, follow
    :func:`fgd_learning_rate` and update by :func:`fgd_update` with a :func:`forward_grad` estimate.
    Here :meth:`step` takes ``f`` and the parameters and returns new ones, changing nothing in place.

    Each :meth:`step` runs one forward-mode pass (no tape), drawing v and forming the estimate in the
    buffers of its :class:`ForwardGradientWorkspace` (``self.workspace``), reused from step to step.  Defaults are the paper's (η₀ = 2·10⁻⁴,
    k = 10⁻⁴).  ``clip`` caps ``|∇f·v|``; ``n_directions`` averages K directions per step.  ``rng``
    (or, when it is None, ``seed``) is anything :func:`minidiff.primitives.random.as_generator` takes.

    >>> import minidiff as md
    >>> opt = md.FGD(lr=0.1, seed=0)
    >>> params = {"w": md.tensor([3.0])}
    >>> for _ in range(200):
    ...     loss, params = opt.step(lambda p: (p["w"] ** 2).sum(), params)
    >>> abs(params["w"].item()) < 0.1
    True
    """

    def __init__(
        self,
        lr: float = 2e-4,
        decay: float = 1e-4,
        distribution: str = "normal",
        n_directions: int = 1,
        clip: float | None = None,
        seed: int | None = 0,
        rng: RngLike = None,
    ):
        settings = dict(lr=lr, decay=decay, distribution=distribution, n_directions=n_directions, clip=clip)
        check_fgd_settings("FGD", **settings)
        self.lr0, self.decay = lr, decay
        self.distribution, self.n_directions, self.clip = distribution, n_directions, clip
        self.rng = as_generator(seed if rng is None else rng, op="FGD")
        self.iteration = 0
        self.workspace = ForwardGradientWorkspace()

    def learning_rate(self, i: int | None = None) -> float:
        """η_i = η₀·exp(−k·i) (the current step's by default)."""
        return fgd_learning_rate(self.lr0, self.decay, self.iteration if i is None else i)

    def step(self, f: Callable[..., Any], params: PyTree) -> tuple[Tensor, PyTree]:
        """One FGD step on ``f(params)``: returns ``(loss, new_params)``."""
        loss, g = forward_grad(
            f, params, self.rng, self.n_directions, self.distribution, self.clip, workspace=self.workspace
        )
        lr = self.learning_rate()
        self.iteration += 1
        return loss, fgd_update(params, g, lr)
