"""Sophia (Liu et al., 2024): sign momentum clipped by a cheap diagonal Hessian estimate.

Every step (``docs/papers.md`` §7), with g the minibatch gradient (optionally clipped to global norm
``grad_clip``)::

    θ ← θ·(1 − lr·λ)                               decoupled weight decay
    m ← β₁ m + (1 − β₁) g
    θ ← θ − lr · sign(m) · min(|m| / (ρ·h + ε), 1)

and every ``update_period`` = k steps (steps k + 1, 2k + 1, …, so the first k steps have h = 0 and move
by ``lr·sign(m)``, as in the reference code) the estimate is refreshed, ``h ← β₂h + (1 − β₂)ĥ``, with

* ``estimator="gnb"`` (Gauss-Newton-Bartlett, Sophia-G): labels ŷ sampled from the model's softmax on the
  current batch, ĝ the gradient of the mean loss on ŷ (one more backward pass), ``ĥ = B·ĝ ⊙ ĝ``;
* ``estimator="hutchinson"`` (Sophia-H): ``ĥ = u ⊙ Hu`` with a Rademacher (or ``probe="normal"``) u, by
  one forward-over-reverse pass that also yields g.  ĥ may be negative there; negative entries of h
  are treated as 0 in the denominator (the paper's ``max(ρh, ε)``).

After each step ``unclipped_fraction`` holds the fraction of coordinates with ``|m| < ρh + ε`` (not
clipped); the authors tune ρ to keep it between 0.1 and 0.5.

Closures: Sophia-H needs ``closure(params) -> loss`` (functional).  Sophia-G needs the logits too:
``closure(params) -> (loss, logits)`` (functional) or ``closure() -> (loss, logits)`` computed with
the model's stored leaves and *without* calling ``backward`` (tape style).

>>> import minidiff as md
>>> from minidiff.optim.sophia import Sophia
>>> w = md.tensor([1.0, -2.0], requires_grad=True)
>>> opt = Sophia([w], lr=0.1, estimator="hutchinson", weight_decay=0.0)
>>> loss = opt.step(lambda ps: (ps[0] ** 2).sum())
>>> w.tolist(), opt.unclipped_fraction  # h = 0 before the first refresh: lr·sign(m)
([0.9, -1.9], 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import check_number
from ..modes.reverse import no_grad
from ..primitives.creation import ones, zeros
from ..primitives.random import RngLike
from ..tensor.core import Tensor
from ..tensor.kernel import array_kernel
from ..tensor.pytree import PyTree
from ..transforms.core import HVP_MODES, value_and_grad, vjp
from .adahessian import _check_finite, _fused_hvp, _hutchinson_probes
from .base import RandomOptimizer, takes_params
from .kfac import sample_labels

__all__ = ["Sophia"]

ESTIMATORS = ("gnb", "hutchinson")
PROBES = ("rademacher", "normal")


class Sophia(RandomOptimizer):
    """Sophia-G / Sophia-H (see the module docstring); ``step(closure)`` returns the loss.

    Defaults: lr 10⁻⁴, betas (0.965, 0.99), rho 0.04, eps 10⁻¹², weight_decay 0.1, estimator "gnb",
    update_period k = 10, probe "rademacher", grad_clip 1.0 (global gradient norm; None disables it).
    ``seed``/``rng`` drive the probes and sampled labels (any form :func:`minidiff.primitives.random.as_generator`
    takes; ``rng`` wins).
    """

    needs_closure = True

    def __init__(
        self,
        params: PyTree,
        lr: float = 1e-4,
        betas: Sequence[float] = (0.965, 0.99),
        rho: float = 0.04,
        eps: float = 1e-12,
        weight_decay: float = 0.1,
        *,
        estimator: str = "gnb",
        update_period: int = 10,
        probe: str = "rademacher",
        grad_clip: float | None = 1.0,
        hvp_mode: str = "fwd-over-rev",
        seed: RngLike = 0,
        rng: RngLike = None,
    ):
        super().__init__(
            params, {"lr": lr, "betas": tuple(betas), "rho": rho, "eps": eps, "weight_decay": weight_decay}
        )
        if estimator not in ESTIMATORS:
            raise ValueError(f"Sophia: estimator must be one of {ESTIMATORS}, got {estimator!r}")
        check_number("Sophia", "update_period", update_period, low=1, integer=True)
        if probe not in PROBES:
            raise ValueError(f"Sophia: probe must be one of {PROBES}, got {probe!r}")
        check_number("Sophia", "grad_clip", grad_clip, low=0, low_open=True, none_ok=True)
        if hvp_mode not in HVP_MODES:
            raise ValueError(f"Sophia: hvp_mode must be one of {HVP_MODES}, got {hvp_mode!r}")
        self.estimator, self.update_period, self.probe = estimator, update_period, probe
        self.grad_clip, self.hvp_mode = grad_clip, hvp_mode
        self._init_rng(seed, rng)
        self.unclipped_fraction: float | None = None
        self.sampled_labels: Tensor | None = None

    def validate(self, settings: dict) -> None:
        super().validate(settings)
        for key in ("rho", "eps"):
            check_number("Sophia", key, settings[key], low=0, low_open=True)

    # ------------------------------------------------------------------ gradients and estimates
    def _evaluate(self, closure: Callable[..., Any] | None, refresh: bool) -> tuple[Any, list, Any]:
        """``(loss, grads, ĥ or None)``, with grads and ĥ in :meth:`parameters` order."""
        if closure is None:
            raise TypeError(
                "Sophia.step: Sophia evaluates the loss itself; pass step(closure) — "
                "closure(params) -> loss for Sophia-H, closure(params) or closure() -> (loss, logits) "
                "for Sophia-G"
            )
        if self.estimator == "hutchinson":
            return self._hutchinson(self.loss_function(closure), refresh)
        gnb = self._gnb_functional if takes_params(closure) else self._gnb_tape
        loss, grads, logits, ghat = gnb(closure, refresh)
        if ghat is None:
            return loss, grads, None
        b = logits.shape[0]
        return loss, grads, [b * g * g for g in ghat]

    def _hutchinson(self, f: Callable[..., Any], refresh: bool) -> tuple[Any, list, Any]:
        """Sophia-H: the gradient, and on refresh steps ``ĥ = u ⊙ Hu`` from the same pass."""
        values = [p.detach() for p in self.parameters()]
        if not refresh:
            loss, grads = value_and_grad(f)(values)
            return loss, list(grads), None
        u = _hutchinson_probes(values, self.rng, self.probe)
        loss, grads, hu = _fused_hvp(f, values, u, self.hvp_mode)
        return loss, grads, [ui * hi for ui, hi in zip(u, hu)]

    def _gnb_functional(self, closure: Callable[..., Any], refresh: bool) -> tuple[Any, list, Any, Any]:
        """Sophia-G on ``closure(params) -> (loss, logits)``: ``(loss, grads, logits, ĝ or None)``."""
        out, back = vjp(closure, [p.detach() for p in self.parameters()])
        loss, logits = _check_pair(*_pair(out))
        one = ones((), loss.dtype, loss.device)
        grads = back((one, zeros(logits.shape, logits.dtype, logits.device)))[0]
        if not refresh:
            return loss, list(grads), logits, None
        self.sampled_labels, ct = sample_labels(logits, self.rng)
        return loss, list(grads), logits, back((zeros((), loss.dtype, loss.device), ct))[0]

    def _gnb_tape(self, closure: Callable[..., Any], refresh: bool) -> tuple[Any, list, Any, Any]:
        """Sophia-G on ``closure() -> (loss, logits)`` (tape style): ``(loss, grads, logits, ĝ or None)``."""
        params = self.parameters()
        self.zero_grad()
        loss, logits = _check_pair(*_pair(closure()))
        loss.backward(retain_graph=refresh)
        grads = [_grad_or_zeros(p) for p in params]
        if not refresh:
            return loss.detach(), grads, logits, None
        self.sampled_labels, ct = sample_labels(logits, self.rng)
        self.zero_grad()
        logits.backward(ct)
        ghat = [_grad_or_zeros(p) for p in params]
        for p, g in zip(params, grads):  # keep the data gradients in .grad
            p.grad = g
        return loss.detach(), grads, logits, ghat

    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        """One Sophia step (see the module docstring for the closure); returns the loss."""
        refresh = self.steps > 0 and self.steps % self.update_period == 0
        rng_state = self.rng.get_state()
        try:
            labels_before = self.sampled_labels
            loss, grads, hhat = self._evaluate(closure, refresh)
            _check_finite("Sophia.step", "gradient", grads)
            if hhat is not None:
                _check_finite("Sophia.step", "Hessian estimate", hhat)
        except BaseException:
            self.rng.set_state(rng_state)
            self.sampled_labels = labels_before
            raise
        scale = 1.0
        if self.grad_clip is not None:
            norm = math.sqrt(sum(_squared_norm(g) for g in grads))
            if norm > self.grad_clip:
                scale = self.grad_clip / norm
        results, unclipped, total = [], 0, 0
        params = self.parameters()
        hhat = [None] * len(params) if hhat is None else hhat
        with no_grad():
            for i, (group, p) in enumerate((grp, p) for grp in self.param_groups for p in grp["params"]):
                state = self.state[id(p)]
                value, m, h, n_ok = _sophia_step(
                    p.detach(),
                    grads[i],
                    hhat[i],
                    state.get("exp_avg"),
                    state.get("hessian"),
                    scale=scale,
                    **group,
                )
                results.append((p, value, {"exp_avg": m, "hessian": h}))
                unclipped += n_ok
                total += p.size
        self.commit(results)
        self.unclipped_fraction = unclipped / max(total, 1)
        return loss


@array_kernel
def _squared_norm(ns: Any, g: Any) -> float:
    return float((g * g).sum())


@array_kernel
def _sophia_step(
    ns: Any,
    p: Any,
    g: Any,
    hhat: Any,
    m: Any,
    h: Any,
    *,
    scale: float,
    lr: float,
    betas: Sequence[float],
    rho: float,
    eps: float,
    weight_decay: float,
    **group: Any,
) -> tuple[Any, Any, Any, int]:
    """The clipped step of the module docstring on arrays: ``(new p, m, h, unclipped count)``."""
    beta1, beta2 = betas
    dt = p.dtype
    g = g * scale
    m = (1 - beta1) * g if m is None else beta1 * m + (1 - beta1) * g
    h = ns.zeros_like(p) if h is None else h
    if hhat is not None:
        h = beta2 * h + (1 - beta2) * hhat
    ratio = ns.abs(m) / (rho * ns.maximum(h, 0) + eps)
    n_ok = int((ratio < 1).sum())
    new = p * (1 - lr * weight_decay) - lr * ns.sign(m) * ns.minimum(ratio, 1.0)
    return new.astype(dt, copy=False), m.astype(dt, copy=False), h.astype(dt), n_ok


def _pair(out: Any) -> Sequence[Any]:
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(
            f"Sophia.step: with estimator='gnb' the closure must return (loss, logits), got {type(out).__name__}"
        )
    return out


def _check_pair(loss: Any, logits: Any) -> tuple[Tensor, Tensor]:
    if getattr(loss, "shape", None) != ():
        raise ValueError(
            f"Sophia.step: the loss must be a scalar batch mean, got {getattr(loss, 'shape', loss)}"
        )
    if getattr(logits, "ndim", None) != 2:
        raise ValueError(
            f"Sophia.step: the logits must have shape (B, K), got {getattr(logits, 'shape', logits)}"
        )
    return loss, logits


def _grad_or_zeros(p: Tensor) -> Tensor:
    return p.grad if p.grad is not None else zeros(p.shape, p.dtype, p.device)
