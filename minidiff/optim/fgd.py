"""Forward gradient descent (Baydin et al., 2022; ``docs/papers.md`` §1) through the optimizer API.

Each step draws ``v`` with independent zero-mean unit-variance entries (one array per parameter), runs
the functional closure ``f(params)`` once in forward mode to get ``f`` and ``d = ∇f·v`` — no tape is
recorded — and updates ``θ ← θ − η_i·d·v`` with ``η_i = η₀·exp(−k·i)``, ``i`` the steps taken so far.
The paper's defaults: ``η₀ = 2·10⁻⁴``, ``k = 10⁻⁴``.  It shares its code with the functional ``md.FGD``
(:mod:`minidiff.transforms.forward_gradient`): the settings checks (:func:`~minidiff.transforms.forward_gradient.check_fgd_settings`),
the schedule (:func:`~minidiff.transforms.forward_gradient.fgd_learning_rate`), the estimate
(:func:`minidiff.forward_grad`) and the update (:func:`~minidiff.transforms.forward_gradient.fgd_update`).

Cost per step: one forward-mode evaluation (about Rf ≈ 1.4–2.5 function evaluations, no backward pass)
plus drawing ``v``; ``v`` is drawn into, and ``(∇f·v)·v`` formed in, the buffers of a
:class:`~minidiff.transforms.forward_gradient.ForwardGradientWorkspace` (``self.workspace``) reused from
step to step.  No state beyond the random generator, saved by :meth:`Optimizer.state_dict` (the
workspace holds buffers only).

>>> import minidiff as md
>>> from minidiff.optim import FGD
>>> w = md.tensor([3.0, -3.0], requires_grad=True)
>>> opt = FGD([w], lr=0.05, seed=0)
>>> for _ in range(300):
...     _ = opt.step(lambda p: (p[0] ** 2).sum())
>>> bool(abs(w).max() < 0.1)
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..primitives.random import RngLike
from ..tensor.pytree import PyTree
from ..transforms.forward_gradient import (
    ForwardGradientWorkspace,
    check_fgd_settings,
    fgd_learning_rate,
    fgd_update,
    forward_grad,
)
from .base import RandomOptimizer

__all__ = ["FGD"]


class FGD(RandomOptimizer):
    """Forward gradient descent; ``step(closure)`` needs the functional closure ``f(params) -> loss``.

    Group settings: ``lr`` (η₀) and ``decay`` (k).  Whole-run settings: ``distribution`` (``"normal"`` or
    ``"rademacher"``), ``n_directions`` (K directions averaged per step, one vector-mode pass), ``clip``
    (cap on ``|∇f·v|``, as the public reproduction uses to avoid blow-ups) and ``seed`` or ``rng`` (an int, a
    ``minidiff.primitives.random.Generator`` or a ``numpy.random.Generator``; ``rng`` wins).
    """

    needs_closure = True

    def __init__(
        self,
        params: PyTree,
        lr: float = 2e-4,
        decay: float = 1e-4,
        distribution: str = "normal",
        n_directions: int = 1,
        clip: float | None = None,
        seed: RngLike = 0,
        rng: RngLike = None,
    ):
        super().__init__(params, dict(lr=lr, decay=decay))
        check_fgd_settings("FGD", distribution=distribution, n_directions=n_directions, clip=clip)
        devices = {p.device for p in self.parameters()}
        if len(devices) > 1:
            raise ValueError(f"FGD: all parameters must be on one device, got {sorted(map(str, devices))}")
        self.distribution, self.n_directions, self.clip = distribution, n_directions, clip
        self._init_rng(seed, rng)
        self.workspace = ForwardGradientWorkspace()  # v and the estimate, reused from step to step

    def validate(self, settings: dict) -> None:
        super().validate(settings)
        check_fgd_settings("FGD", lr=settings["lr"], decay=settings["decay"])

    def learning_rate(self, group: dict | None = None, i: int | None = None) -> float:
        """``η_i = η₀·exp(−k·i)`` of ``group`` (the first by default) at step ``i`` (the next by default)."""
        group = self.param_groups[0] if group is None else group
        return fgd_learning_rate(group["lr"], group["decay"], self.steps if i is None else i)

    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        """One FGD step; returns the loss ``f(params)`` before the update."""
        if closure is None:
            raise TypeError(
                "FGD.step: forward gradient descent evaluates f itself; pass step(f) with f(params)"
            )
        f = self.loss_function(closure)
        params = [p.detach() for p in self.parameters()]
        rng_state = self.rng.get_state()
        loss, g = forward_grad(
            f, params, self.rng, self.n_directions, self.distribution, self.clip, workspace=self.workspace
        )
        grads, i = [], 0
        for group in self.param_groups:
            grads.append(g[i : i + len(group["params"])])
            i += len(group["params"])
        try:
            self.check_grads_finite(grads)
        except FloatingPointError:
            self.rng.set_state(rng_state)  # a refused step leaves the optimizer as it was
            raise
        new: list = []
        for group, gs in zip(self.param_groups, grads):
            values = fgd_update([p.detach() for p in group["params"]], gs, self.learning_rate(group))
            new.extend((p, value, None) for p, value in zip(group["params"], values))
        self.commit(new)
        return loss
