"""First-order optimizers with PyTorch's update rules: SGD, Adam, AdamW, Adagrad, RMSprop.

Each takes ``centralize="grad" | "update" | None`` and ``conv_only`` for Gradient Centralization
(:mod:`minidiff.optim.centralization`).  Notation: ``g`` the gradient, ``t`` the step count from 1,
``λ`` the weight decay.  All state (momentum buffers, moments) lives on the parameter's device.

>>> import minidiff as md
>>> from minidiff.optim import SGD
>>> w = md.tensor([1.0, -1.0], requires_grad=True)
>>> opt = SGD([w], lr=0.1, momentum=0.9)
>>> for _ in range(2):
...     opt.zero_grad()
...     (w * w).sum().backward()
...     _ = opt.step()
>>> [round(v, 12) for v in w.tolist()]  # 1 → 0.8 → 0.8 − 0.1·(0.9·2 + 1.6) = 0.46
[0.46, -0.46]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import check_number
from ..primitives.creation import full, zeros_like
from ..primitives.ops import sqrt
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree
from .base import Optimizer, settings_of
from .centralization import centralize, check_mode

__all__ = ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop"]


class _FirstOrder(Optimizer):
    """Shared by the first-order methods: the centralization settings and where they apply."""

    def validate(self, settings: dict) -> None:
        super().validate(settings)
        check_mode(type(self).__name__, settings.get("centralize"), settings.get("conv_only", False))

    @staticmethod
    def gc(g: Tensor, group: dict, where: str) -> Tensor:
        """``g`` centralized when the group's ``centralize`` setting is ``where``."""
        if group["centralize"] == where:
            return centralize(g, group["conv_only"])
        return g


class SGD(_FirstOrder):
    """Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay.

    Per step (PyTorch's rule): ``g ← g + λθ``; with momentum μ, ``b ← g`` at the first step and
    ``b ← μ b + (1 − dampening) g`` after; ``d = g + μ b`` (Nesterov) or ``d = b``; ``θ ← θ − lr·d``.
    ``centralize="grad"`` centralizes ``g`` after the decay term, ``"update"`` the direction ``d``.
    Cost: one gradient per step; state: one buffer per parameter with momentum.

    >>> import minidiff as md
    >>> w = md.tensor([2.0], requires_grad=True)
    >>> opt = SGD([w], lr=0.25)
    >>> (w * w).sum().backward(); _ = opt.step()
    >>> w.item()
    1.0
    """

    def __init__(
        self,
        params: PyTree,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        centralize: str | None = None,
        conv_only: bool = False,
    ):
        super().__init__(params, settings_of(locals()))

    def validate(self, settings: dict) -> None:
        super().validate(settings)
        name = type(self).__name__
        damp = settings["dampening"]
        check_number(name, "dampening", damp, low=0, high=1)
        if settings["nesterov"] and (settings["momentum"] <= 0 or damp != 0):
            raise ValueError(
                f"{name}: Nesterov momentum needs momentum > 0 and dampening = 0, got "
                f"momentum={settings['momentum']}, dampening={damp}"
            )

    def update(self, p: Tensor, g: Tensor, state: dict, group: dict) -> Tensor:
        wd, mu = group["weight_decay"], group["momentum"]
        if wd:
            g = g + wd * p
        g = self.gc(g, group, "grad")
        if mu:
            buf = state.get("momentum_buffer")
            buf = g if buf is None else mu * buf + (1 - group["dampening"]) * g
            state["momentum_buffer"] = buf
            g = g + mu * buf if group["nesterov"] else buf
        g = self.gc(g, group, "update")
        return p - group["lr"] * g


class Adam(_FirstOrder):
    """Adam (Kingma & Ba) with bias corrections and L2 weight decay added to the gradient.

    Per step: ``g ← g + λθ``; ``m ← β₁m + (1−β₁)g``; ``v ← β₂v + (1−β₂)g²``;
    ``θ ← θ − (lr/(1−β₁ᵗ))·m/(√v/√(1−β₂ᵗ) + ε)`` (PyTorch's arrangement of ``m̂/(√v̂+ε)``).
    ``centralize="grad"`` centralizes ``g`` before the moments; ``"update"`` the direction.
    Cost: one gradient per step; state: two tensors per parameter.

    >>> import minidiff as md
    >>> w = md.tensor([3.0, -3.0], requires_grad=True)
    >>> opt = Adam([w], lr=0.1)
    >>> (w * w).sum().backward(); _ = opt.step()
    >>> [round(x, 6) for x in w.tolist()]  # the first Adam step moves each coordinate by ≈ lr
    [2.9, -2.9]
    """

    decoupled = False

    def __init__(
        self,
        params: PyTree,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        centralize: str | None = None,
        conv_only: bool = False,
    ):
        betas = tuple(betas)
        super().__init__(params, settings_of(locals()))

    def update(self, p: Tensor, g: Tensor, state: dict, group: dict) -> Tensor:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        b1, b2 = group["betas"]
        if not state:
            state.update(step=0, exp_avg=zeros_like(p), exp_avg_sq=zeros_like(p))
        state["step"] += 1
        t = state["step"]
        if wd and not self.decoupled:
            g = g + wd * p
        g = self.gc(g, group, "grad")
        m = state["exp_avg"] = b1 * state["exp_avg"] + (1 - b1) * g
        v = state["exp_avg_sq"] = b2 * state["exp_avg_sq"] + (1 - b2) * (g * g)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        denom = sqrt(v) / math.sqrt(bc2) + eps
        if group["centralize"] == "update":
            d = m / denom / bc1
            if wd and self.decoupled:
                d = d + wd * p
            return p - lr * centralize(d, group["conv_only"])
        if wd and self.decoupled:
            p = p * (1 - lr * wd)
        return p - (lr / bc1) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``θ ← θ(1 − lr·λ)`` then the Adam step.

    Default ``weight_decay=0.01``.  With ``centralize="update"`` the centralized direction is
    ``m̂/(√v̂+ε) + λθ`` (the decay term included, as the GC paper does for AdamW).

    >>> import minidiff as md
    >>> w = md.tensor([1.0], requires_grad=True)
    >>> opt = AdamW([w], lr=0.1, weight_decay=0.5)
    >>> (0 * w).sum().backward(); _ = opt.step()  # zero gradient: only the decay acts
    >>> w.item()
    0.95
    """

    decoupled = True

    def __init__(
        self,
        params: PyTree,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        centralize: str | None = None,
        conv_only: bool = False,
    ):
        super().__init__(params, lr, betas, eps, weight_decay, centralize, conv_only)


class Adagrad(_FirstOrder):
    """Adagrad (Duchi et al.): ``s ← s + g²``, ``θ ← θ − lr_t·g/(√s + ε)`` with ``lr_t = lr/(1+(t−1)·lr_decay)``.

    ``initial_accumulator_value`` starts ``s``; L2 decay is added to ``g`` first.  Cost: one gradient;
    state: one tensor per parameter.

    >>> import minidiff as md
    >>> w = md.tensor([5.0], requires_grad=True)
    >>> opt = Adagrad([w], lr=1.0)
    >>> (w * w).sum().backward(); _ = opt.step()
    >>> round(w.item(), 9)  # g/√(g²) = 1
    4.0
    """

    def __init__(
        self,
        params: PyTree,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        centralize: str | None = None,
        conv_only: bool = False,
    ):
        super().__init__(params, settings_of(locals()))

    def validate(self, settings: dict) -> None:
        super().validate(settings)
        for key in ("lr_decay", "initial_accumulator_value"):
            check_number(type(self).__name__, key, settings[key], low=0)

    def update(self, p: Tensor, g: Tensor, state: dict, group: dict) -> Tensor:
        if not state:
            state.update(step=0, sum=full(p.shape, group["initial_accumulator_value"], p.dtype, p.device))
        state["step"] += 1
        lr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p
        g = self.gc(g, group, "grad")
        s = state["sum"] = state["sum"] + g * g
        d = self.gc(g / (sqrt(s) + group["eps"]), group, "update")
        return p - lr * d


class RMSprop(_FirstOrder):
    """RMSprop (Hinton): ``v ← αv + (1−α)g²``, ``θ ← θ − lr·g/(√v + ε)``.

    ``centered=True`` divides by ``√(v − ḡ²) + ε`` with ``ḡ ← αḡ + (1−α)g``; ``momentum`` μ > 0 keeps
    ``b ← μb + g/(…)`` and steps along ``b``.  L2 decay is added to ``g`` first.  Cost: one gradient.

    >>> import minidiff as md
    >>> w = md.tensor([1.0], requires_grad=True)
    >>> opt = RMSprop([w], lr=0.01, alpha=0.0, eps=0.0)
    >>> (w * w).sum().backward(); _ = opt.step()
    >>> round(w.item(), 12)  # α = 0: g/|g| = 1
    0.99
    """

    def __init__(
        self,
        params: PyTree,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        centralize: str | None = None,
        conv_only: bool = False,
    ):
        super().__init__(params, settings_of(locals()))

    def validate(self, settings: dict) -> None:
        super().validate(settings)
        check_number(type(self).__name__, "alpha", settings["alpha"], low=0, high=1)

    def update(self, p: Tensor, g: Tensor, state: dict, group: dict) -> Tensor:
        alpha, mu = group["alpha"], group["momentum"]
        if not state:
            state.update(step=0, square_avg=zeros_like(p))
            if mu:
                state["momentum_buffer"] = zeros_like(p)
            if group["centered"]:
                state["grad_avg"] = zeros_like(p)
        state["step"] += 1
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p
        g = self.gc(g, group, "grad")
        v = state["square_avg"] = alpha * state["square_avg"] + (1 - alpha) * (g * g)
        if group["centered"]:
            ga = state["grad_avg"] = alpha * state["grad_avg"] + (1 - alpha) * g
            v = v - ga * ga
        d = g / (sqrt(v) + group["eps"])
        if mu:
            d = state["momentum_buffer"] = mu * state["momentum_buffer"] + d
        return p - group["lr"] * self.gc(d, group, "update")
