"""AdaHessian (Yao et al., 2021): Adam with the squared Hutchinson estimate of the Hessian diagonal.

Each step draws one Rademacher probe z per parameter and computes the gradient g and ``H z`` together
by one forward-over-reverse pass (``md.jvp`` of ``md.value_and_grad`` — what ``md.hvp`` does), on the
functional closure ``f(params) -> loss``.  Then (``docs/papers.md`` §6):

1. ``D = |z ⊙ Hz| = |Hz|`` (E[z ⊙ Hz] = diag H; exact when H is diagonal); 4-D convolution kernels
   replace D by its mean over the two spatial axes (``spatial_average``), and with ``average_rows``
   matrices by the mean of each row;
2. ``m ← β₁m + (1 − β₁)g``, ``v ← β₂v + (1 − β₂)D²``;
3. ``θ ← θ − lr·(m/(1 − β₁ᵗ) / ((√(v/(1 − β₂ᵗ)))^k + ε) + wd·θ)`` (decoupled weight decay).

Cost per step: one HVP with the gradient as its by-product (≈ 2–2.5 gradients in forward-over-reverse).

>>> import minidiff as md
>>> from minidiff.optim.adahessian import AdaHessian
>>> w = md.tensor([1.0, -2.0], requires_grad=True)
>>> opt = AdaHessian([w], lr=0.1)
>>> loss = opt.step(lambda ps: (md.tensor([1.0, 10.0]) * ps[0] ** 2).sum())
>>> [round(v, 4) for v in w.tolist()]  # first step: lr × the Newton step g/|diag H| (ε aside)
[0.9, -1.8]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import check_number, describe
from ..modes.reverse import no_grad
from ..primitives.random import Generator, RngLike
from ..tensor.core import Tensor
from ..tensor.kernel import array_kernel
from ..tensor.pytree import PyTree
from ..transforms.core import HVP_MODES, hvp, jvp, value_and_grad
from .base import RandomOptimizer, all_finite, settings_of

__all__ = ["AdaHessian"]


def _hutchinson_probes(params: list[Tensor], rng: Generator, distribution: str = "rademacher") -> list:
    """One probe per parameter, shaped and typed like it: Rademacher signs or standard normals."""
    draw = rng.rademacher if distribution == "rademacher" else rng.normal
    return [draw(p.shape, dtype=p.dtype) for p in params]


def _fused_hvp(f: Callable[..., Any], params: list, probes: list, mode: str = "fwd-over-rev") -> Any:
    """``(loss, gradient list, H·probes list)`` of ``f(params)``; forward-over-reverse gets all three
    from one pass (the JVP of ``value_and_grad``), the other modes take a gradient and an ``md.hvp``."""
    if mode == "fwd-over-rev":
        (loss, grads), (_, hz) = jvp(value_and_grad(f), (params,), (probes,))
        return loss, list(grads), list(hz)
    loss, grads = value_and_grad(f)(params)
    return loss, list(grads), list(hvp(f, (params,), (probes,), mode=mode)[0])


def _check_finite(op: str, what: str, tensors: Sequence[Tensor]) -> None:
    """Raise ``FloatingPointError`` naming the first non-finite tensor (nothing is changed)."""
    for i, t in enumerate(tensors):
        if not all_finite(t):
            raise FloatingPointError(
                f"{op}: the {what} of parameter {i} ({describe(t)}) is not finite; no parameter was changed"
            )


class AdaHessian(RandomOptimizer):
    """AdaHessian; ``step(closure)`` needs the functional closure ``closure(params) -> loss``.

    Defaults (``docs/papers.md`` §6): lr 0.15, betas (0.9, 0.999), eps 10⁻⁴, hessian_power k = 1,
    weight_decay 0 (decoupled), spatial averaging of 4-D kernels on, row averaging off.  ``seed``/``rng``
    (an int, a ``minidiff.primitives.random.Generator`` or a ``numpy.random.Generator``; ``rng`` wins) drive the
    probes; ``hvp_mode`` picks the HVP order (forward-over-reverse by default).
    """

    needs_closure = True

    def __init__(
        self,
        params: PyTree,
        lr: float = 0.15,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-4,
        hessian_power: float = 1.0,
        weight_decay: float = 0.0,
        *,
        spatial_average: bool = True,
        average_rows: bool = False,
        hvp_mode: str = "fwd-over-rev",
        seed: RngLike = 0,
        rng: RngLike = None,
    ):
        betas = tuple(betas)
        settings = settings_of(locals())
        for key in ("hvp_mode", "seed", "rng"):  # whole-run settings, not per group
            settings.pop(key)
        super().__init__(params, settings)
        if hvp_mode not in HVP_MODES:
            raise ValueError(f"AdaHessian: hvp_mode must be one of {HVP_MODES}, got {hvp_mode!r}")
        self.hvp_mode = hvp_mode
        self._init_rng(seed, rng)

    def validate(self, settings: dict) -> None:
        super().validate(settings)
        check_number("AdaHessian", "hessian_power", settings["hessian_power"], low=0, high=1, low_open=True)

    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        """One AdaHessian step on ``closure(params) -> loss``; returns the loss."""
        f = self.loss_function(closure)
        params = [p.detach() for p in self.parameters()]
        rng_state = self.rng.get_state()
        try:
            z = _hutchinson_probes(params, self.rng)
            loss, grads, hz = _fused_hvp(f, params, z, self.hvp_mode)
            _check_finite("AdaHessian.step", "gradient", grads)
            _check_finite("AdaHessian.step", "Hessian-vector product", hz)
        except BaseException:
            self.rng.set_state(rng_state)
            raise
        t = self.steps + 1
        it = iter(zip(grads, hz))
        new_values = []
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    g, h = next(it)
                    new_values.append((p, *self._update(p.detach(), g, h, self.state[id(p)], group, t)))
        self.commit((p, value, new_state) for p, value, new_state in new_values)
        return loss

    def _update(
        self, p: Tensor, g: Tensor, hz: Tensor, state: dict, group: dict, t: int
    ) -> tuple[Tensor, dict]:
        """``(new value, new state)`` of one parameter: the Adam step on ``|Hz|`` (module docstring)."""
        value, m, v = _adahessian_step(
            p, g, hz, state.get("exp_avg"), state.get("exp_hessian_diag_sq"), t=t, **group
        )
        return value, {"exp_avg": m, "exp_hessian_diag_sq": v}


@array_kernel
def _adahessian_step(
    ns: Any,
    p: Any,
    g: Any,
    hz: Any,
    m: Any,
    v: Any,
    *,
    t: int,
    lr: float,
    betas: Sequence[float],
    eps: float,
    hessian_power: float,
    weight_decay: float,
    **group: Any,
) -> tuple[Any, Any, Any]:
    """Steps 1–3 of the module docstring on arrays: ``(new p, m, v)`` in ``p``'s dtype."""
    beta1, beta2 = betas
    d = ns.abs(hz)
    if d.ndim == 4 and group["spatial_average"]:
        d = ns.broadcast_to(d.mean(axis=(2, 3), keepdims=True), d.shape)
    elif d.ndim == 2 and group["average_rows"]:
        d = ns.broadcast_to(d.mean(axis=1, keepdims=True), d.shape)
    m = (1 - beta1) * g if m is None else beta1 * m + (1 - beta1) * g
    v = (1 - beta2) * d * d if v is None else beta2 * v + (1 - beta2) * d * d
    denom = ns.sqrt(v / (1 - beta2**t)) ** hessian_power + eps
    step = m / (1 - beta1**t) / denom
    if weight_decay:
        step = step + weight_decay * p
    dt = p.dtype
    return (p - lr * step).astype(dt, copy=False), m.astype(dt, copy=False), v.astype(dt, copy=False)
