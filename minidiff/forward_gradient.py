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

from . import pytree
from .random import RngLike, as_generator
from .tensor import Tensor
from .transforms import jvp

DISTRIBUTIONS = ("normal", "rademacher")


def sample_directions(params, rng: RngLike = None, distribution: str = "normal", n_directions: int = 1):
    """Random directions shaped like ``params`` (with a leading axis of K when ``n_directions > 1``).

    ``rng``: an int seed, a :class:`minidiff.random.Generator`, a ``numpy.random.Generator`` or None
    (the default generator), converted by :func:`minidiff.random.as_generator` on the parameters' device.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"forward_grad: unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}"
        )
    leaves = pytree.flatten(params)[0]
    rng = as_generator(rng, leaves[0].device if leaves else None, op="forward_grad")
    lead = () if n_directions == 1 else (n_directions,)
    draw = rng.normal if distribution == "normal" else rng.rademacher

    def one(p: Tensor):
        return draw(lead + tuple(p.shape), dtype=p.dtype)

    return pytree.tree_map(one, params)


def forward_grad(
    f,
    params,
    rng: RngLike = None,
    n_directions: int = 1,
    distribution: str = "normal",
    clip: float | None = None,
    directions=None,
):
    """``(f(params), (1/K) Σ_k (∇f·v_k) v_k)`` from forward mode only.

    ``params`` is a pytree of float tensors; ``rng`` an int seed, a :class:`minidiff.random.Generator`
    (on the parameters' device), a ``numpy.random.Generator`` (wrapped: its state advances) or None
    for the default generator (see :func:`minidiff.random.as_generator`).  ``distribution``:
    ``"normal"`` or ``"rademacher"``.  ``clip`` caps ``|∇f·v|`` (the public reproduction caps it at 1
    to keep FGD from blowing up).  ``directions`` may be given instead of sampled (shaped like
    ``params``, with a leading K axis if K > 1).
    """
    if n_directions < 1:
        raise ValueError(f"forward_grad: n_directions must be at least 1, got {n_directions}")
    v = directions if directions is not None else sample_directions(params, rng, distribution, n_directions)
    if n_directions == 1:
        loss, d = jvp(f, (params,), (v,))
    else:
        loss, d = jvp(f, (params,), (v,), vectorized=True)
    if clip is not None:
        from .primitives.elementwise import clip as clip_

        d = clip_(d, -clip, clip)
    if n_directions == 1:
        return loss, pytree.tree_map(lambda vk: d * vk, v)
    from .primitives.linalg import einsum

    scale = 1.0 / n_directions
    return loss, pytree.tree_map(lambda vk: einsum("k,k...->...", d, vk) * scale, v)


class FGD:
    """Forward gradient descent: ``θ ← θ − η_i (∇f·v) v`` with ``η_i = η₀·exp(−k·i)``.

    Each :meth:`step` runs one forward-mode pass (no tape).  Defaults are the paper's (η₀ = 2·10⁻⁴,
    k = 10⁻⁴).  ``clip`` caps ``|∇f·v|``; ``n_directions`` averages K directions per step.  ``rng``
    (or, when it is None, ``seed``) is anything :func:`minidiff.random.as_generator` takes.

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
        if lr < 0 or decay < 0:
            raise ValueError(f"FGD: lr and decay must be non-negative, got lr={lr}, decay={decay}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"FGD: unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}")
        self.lr0, self.decay = lr, decay
        self.distribution, self.n_directions, self.clip = distribution, n_directions, clip
        self.rng = as_generator(seed if rng is None else rng, op="FGD")
        self.iteration = 0

    def learning_rate(self, i: int | None = None) -> float:
        """η_i = η₀·exp(−k·i) (the current step's by default)."""
        import math

        return self.lr0 * math.exp(-self.decay * (self.iteration if i is None else i))

    def step(self, f, params):
        """One FGD step on ``f(params)``: returns ``(loss, new_params)``."""
        loss, g = forward_grad(f, params, self.rng, self.n_directions, self.distribution, self.clip)
        lr = self.learning_rate()
        self.iteration += 1
        return loss, pytree.tree_map(lambda p, gp: p - lr * gp, params, g)
