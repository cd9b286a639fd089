"""K-FAC (Martens & Grosse, 2015) for dense layers and its convolution form KFC (Grosse & Martens, 2016).

For every :class:`~minidiff.nn.Linear` and :class:`~minidiff.nn.Conv2d` layer of a model, the Fisher
block of the layer's weights (bias as a last column, ``W̄`` of shape out × (in + 1)) is approximated by
a Kronecker product ``A ⊗ G``:

* ``A = E[ā āᵀ]``: the layer inputs with a constant 1 appended (convolutions: unfolded input patches,
  averaged over the batch *and* the output locations);
* ``G = E[g gᵀ]``: ``g`` the cotangent of the layer's output (its pre-activations) times the batch size
  B, because the loss is a batch mean (convolutions: summed over locations, averaged over the batch; so
  the location count sits in ``G``, and ``A ⊗ G`` equals KFC's ``Ω ⊗ Γ``).

Inputs are read by the model's forward hooks, cotangents by its backward hooks, only on statistics steps.
By default ``g`` comes from a *second* backward pass of the loss on labels sampled from the model's own
softmax (the true Fisher); ``fisher="empirical"`` uses the data labels' cotangents instead.

The preconditioned gradient of a layer is ``Δ = (G + √λ/π I)⁻¹ ∇W̄ (A + π√λ I)⁻¹`` (factored Tikhonov
damping with ``π = √((tr A/dim A)/(tr G/dim G))``), or with ``damping_mode="eigen"`` the exact
``(A ⊗ G + λI)⁻¹ vec ∇W̄`` computed in the factors' eigenbases.  Each step rescales every ``Δ`` by the
KL-clipping factor ``ν = min(1, √(κ / Σ lr²⟨Δ, ∇W̄⟩))`` and takes an SGD step with momentum and weight
decay on the result; parameters outside those layers take the plain SGD-with-momentum step.

Cost: one gradient per step, one more backward pass every ``stat_period`` steps (true Fisher), the
inverses every ``inverse_period`` steps, and the preconditioning products.  Those cost
2·out·in·(out + in) flops per layer, more than the gradient itself at small batches; when the batch has
few rows R (examples × locations) it is cheaper to precondition the two sides of ``∇W̄ = Σ ct āᵀ``
separately, ``(G⁻¹ctᵀ)(ā A⁻¹)`` (2·R·(out² + in² + out·in) flops, exact), and K-FAC does so per layer
whenever that is cheaper (``factored_gradient=True``, Tikhonov damping), reading ā and the cotangents
through the hooks on every step.  On statistics steps it checks that the gradient really is
``Σ ct āᵀ``; a loss that reaches the weights otherwise (a penalty term, a layer called twice) raises,
and ``factored_gradient=False`` takes the dense product instead.

The closure computes the batch-mean loss *and* the logits with the model's stored parameters, and
does not call ``backward`` (K-FAC runs the backward passes itself)::

    def closure():
        logits = model(x)
        return F.cross_entropy(logits, y), logits

>>> import minidiff as md
>>> from minidiff.optim.kfac import KFAC
>>> F = md.nn.functional
>>> model = md.nn.models.logreg(8, 3, dtype="float64").requires_grad_()
>>> rng = md.random.Generator(0)
>>> x, y = rng.normal((16, 8)), rng.randint(0, 3, (16,))
>>> opt = KFAC(model, lr=0.1, stat_period=1, inverse_period=1)
>>> losses = [opt.step(lambda: (F.cross_entropy(model(x), y), model(x))).item() for _ in range(20)]
>>> losses[-1] < losses[0]
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..backend import scipy_linalg
from ..errors import check_number
from ..modes.reverse import no_grad
from ..nn.functional import unfold
from ..nn.modules import Conv2d, Linear, Module
from ..primitives.random import RngLike, as_generator
from ..tensor.core import Tensor
from ..tensor.kernel import array_kernel
from .base import RandomOptimizer, all_finite, machine_eps

__all__ = ["KFAC", "sample_labels"]

FISHERS = ("true", "empirical")
DAMPING_MODES = ("tikhonov", "eigen")


def sample_labels(logits: Tensor, rng: RngLike) -> tuple[Tensor, Tensor]:
    """Labels drawn from ``softmax(logits)`` row by row, and the cotangent of the batch-mean
    cross-entropy on them with respect to the logits: ``(softmax(logits) − onehot(ŷ)) / B``.

    Sampling is by the inverse CDF of one uniform per row (drawn from ``rng``: an int seed, a
    :class:`minidiff.primitives.random.Generator` or a ``numpy.random.Generator``), in float64.

    >>> import minidiff as md
    >>> labels, ct = sample_labels(md.tensor([[0.0, 50.0], [50.0, 0.0]]), md.random.Generator(0))
    >>> labels.tolist(), ct.shape
    ([1, 0], (2, 2))
    """
    z = logits.detach()
    if z.ndim != 2:
        raise ValueError(f"sample_labels: expected logits of shape (B, K), got {z.shape}")
    u = as_generator(rng, z.device, op="sample_labels").uniform((z.shape[0], 1), dtype="float64")
    return _sample_labels(z, u)


@array_kernel
def _sample_labels(ns, z, u):
    """The inverse-CDF draw of :func:`sample_labels` (``u`` one uniform per row) and the cotangent."""
    b, k = z.shape
    a = z.astype(ns.float64)
    a = a - a.max(axis=1, keepdims=True)
    p = ns.exp(a)
    p /= p.sum(axis=1, keepdims=True)
    labels = ns.minimum((ns.cumsum(p, axis=1) < u).sum(axis=1), k - 1).astype(ns.int64)
    p[ns.arange(b), labels] -= 1.0
    return labels, (p / b).astype(z.dtype)


class KFAC(RandomOptimizer):
    """K-FAC on the dense and convolution layers of ``model`` (see the module docstring).

    ``model`` is a :class:`minidiff.nn.Module` whose parameters are tape leaves: call
    ``model.requires_grad_()`` *before* building the optimizer.  Defaults follow the papers
    (``docs/papers.md`` §4): lr 0.01, momentum 0.9, EMA decay 0.95 of the factors (which start from
    I), damping λ = 10⁻³, KL clip κ = 10⁻³, statistics every 10 steps, inverses every 100; the
    factored form of the preconditioning where it is cheaper (see the module docstring).

    ``step(closure)`` needs ``closure() -> (loss, logits)`` (tape style, no ``backward`` inside);
    it returns the loss.  After a step, ``kl_scale`` holds ν and ``sampled_labels`` the labels drawn
    at the last statistics step (true Fisher).  ``seed``/``rng`` drive the label sampling (any form
    :func:`minidiff.primitives.random.as_generator` takes; ``rng`` wins).
    """

    needs_closure = True

    def __init__(
        self,
        model: Module,
        lr: float = 0.01,
        momentum: float = 0.9,
        *,
        weight_decay: float = 0.0,
        damping: float = 1e-3,
        stat_decay: float = 0.95,
        kl_clip: float | None = 1e-3,
        stat_period: int = 10,
        inverse_period: int = 100,
        fisher: str = "true",
        damping_mode: str = "tikhonov",
        factored_gradient: bool = True,
        seed: RngLike = 0,
        rng: RngLike = None,
    ):
        if not isinstance(model, Module):
            raise TypeError(f"KFAC: expected a minidiff.nn.Module, got {type(model).__name__}")
        settings = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "damping": damping,
            "stat_decay": stat_decay,
            "kl_clip": kl_clip,
            "stat_period": stat_period,
            "inverse_period": inverse_period,
            "fisher": fisher,
            "damping_mode": damping_mode,
            "factored_gradient": bool(factored_gradient),
        }
        params = [p for _, p in model.named_parameters()]
        super().__init__([{"params": params}], settings)
        self.model = model
        self.layers = []  # (name, module, weight leaf, bias leaf or None)
        for name, m in model.named_modules():
            if isinstance(m, (Linear, Conv2d)):
                self.layers.append((name, m, m.weight, m.parameters().get("bias")))
        self._init_rng(seed, rng)
        self.kl_scale = 1.0
        self.sampled_labels = None

    def validate(self, settings: dict) -> None:
        super().validate(settings)
        name = type(self).__name__
        check_number(name, "momentum", settings["momentum"], low=0, high=1, high_open=True)
        check_number(name, "stat_decay", settings["stat_decay"], low=0, high=1, high_open=True)
        check_number(name, "damping", settings["damping"], low=0, low_open=True)
        check_number(name, "kl_clip", settings["kl_clip"], low=0, low_open=True, none_ok=True)
        for key in ("stat_period", "inverse_period"):
            check_number(name, key, settings[key], low=1, integer=True)
        if settings["fisher"] not in FISHERS:
            raise ValueError(f"{name}: fisher must be one of {FISHERS}, got {settings['fisher']!r}")
        if settings["damping_mode"] not in DAMPING_MODES:
            raise ValueError(
                f"{name}: damping_mode must be one of {DAMPING_MODES}, got {settings['damping_mode']!r}"
            )

    def add_param_group(self, group: dict) -> None:
        raise TypeError("KFAC.add_param_group: K-FAC optimizes one model's parameters as a single group")

    # ------------------------------------------------------------------ statistics through hooks
    def _hooks(self, captured: dict, phase: list, stats_step: bool, factored: bool):
        """Forward hooks read each layer's input rows ā (and A on statistics steps); backward hooks read
        the output cotangents: the data ones for the factored gradient, the Fisher ones for G."""

        def forward_hook(module, x, out):
            if phase[0] != "forward":
                return
            x = x.detach()
            keep = factored and _factored_is_cheaper(module, x)
            if not (keep or stats_step):
                return
            rows = _input_rows(module, x)
            entry = captured.setdefault(module, {})
            if keep:
                entry["a"] = rows
            if stats_step:
                entry["A"] = _input_factor(rows, bias=module.use_bias)

        def backward_hook(module, ct):
            entry = captured.setdefault(module, {})
            want_ct = phase[0] in ("data", "data+fisher") and "a" in entry
            want_g = phase[0] in ("fisher", "data+fisher")
            if not (want_ct or want_g):
                return
            ct = ct.detach()
            rows = _output_rows(ct)
            if want_ct:
                entry["ct"] = rows
            if want_g:
                entry["G"] = _output_factor(rows, batch=ct.shape[0])

        handles = []
        for _, m, _, _ in self.layers:
            handles.append(m.register_forward_hook(forward_hook))
            handles.append(m.register_backward_hook(backward_hook))
        return handles

    def _check_layers(self) -> None:
        for name, m, w, b in self.layers:
            if m.weight is not w or m.parameters().get("bias") is not b:
                raise RuntimeError(
                    f"KFAC.step: the parameters of layer {name!r} were replaced after the optimizer was "
                    "built (e.g. model.requires_grad_() called again); build the optimizer afterwards"
                )

    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        """One K-FAC step; ``closure() -> (loss, logits)`` is required.  Returns the loss."""
        if closure is None:
            raise TypeError(
                "KFAC.step: K-FAC needs the logits for its statistics; pass step(closure) with "
                "closure() -> (loss, logits)"
            )
        self._check_layers()
        group = self.param_groups[0]
        params = group["params"]
        s = self.steps
        stats_step = s % group["stat_period"] == 0
        inverse_step = s % group["inverse_period"] == 0
        true_fisher = group["fisher"] == "true"
        factored = group["factored_gradient"] and group["damping_mode"] == "tikhonov"
        rng_state = self.rng.get_state()
        captured: dict = {}
        phase = ["forward"]  # the pass the hooks see
        handles = self._hooks(captured, phase, stats_step, factored) if stats_step or factored else []
        try:
            loss, grads, labels = self._backward_passes(closure, phase, stats_step, true_fisher)
            if stats_step:
                _check_captured(captured, self.layers)
            with no_grad():
                new_state, new_values = self._update(group, grads, captured, stats_step, inverse_step)
        except BaseException:
            self.rng.set_state(rng_state)
            raise
        finally:
            for h in handles:
                h.remove()
        self.commit((p, value, new_state[id(p)]) for p, value in zip(params, new_values))
        if labels is not None:
            self.sampled_labels = labels
        return loss.detach()

    def _backward_passes(self, closure, phase: list, stats_step: bool, true_fisher: bool):
        """``(loss, data gradients, sampled labels or None)``: the closure, the backward pass of the loss
        and, for the true Fisher, one more of the logits on labels sampled from the model."""
        params = self.param_groups[0]["params"]
        fisher_pass = stats_step and true_fisher
        self.zero_grad()
        loss, logits = _loss_and_logits(closure())
        phase[0] = "data+fisher" if stats_step and not true_fisher else "data"
        loss.backward(retain_graph=fisher_pass)
        grads = [p.grad for p in params]
        self.check_grads_finite([grads])
        if not fisher_pass:
            return loss, grads, None
        labels, ct = sample_labels(logits, self.rng)
        phase[0] = "fisher"
        logits.backward(ct)
        for p, g in zip(params, grads):  # keep the data gradients in .grad
            p.grad = g
        return loss, grads, labels

    def _update(self, group, grads, captured, stats_step, inverse_step):
        """``(new state per parameter id, new values)``: factors, inverses, preconditioned directions
        of the layers, the KL clip ν, then the SGD-with-momentum step on every parameter."""
        params = group["params"]
        grad_of = {id(p): g for p, g in zip(params, grads)}
        new_state = {id(p): {} for p in params}
        directions = {}  # id(param) -> preconditioned gradient
        vg = 0.0
        for _, m, w, b in self.layers:
            gw, gb = grad_of[id(w)], (grad_of[id(b)] if b is not None else None)
            if gw is None:
                continue
            st, new = self.state[id(w)], new_state[id(w)]
            if stats_step:
                cap = captured[m]
                new["A"], new["G"] = _factors_ema(
                    st.get("A"), st.get("G"), cap["A"], cap["G"], group["stat_decay"]
                )
            if inverse_step:
                factors = new if stats_step else st
                new.update(
                    _inverses(factors["A"], factors["G"], group["damping"], group["damping_mode"], w.dtype)
                )
            inv = new if inverse_step else st
            dw, db, layer_vg = self._layer_direction(m, gw, gb, inv, captured.get(m, {}), stats_step, group)
            vg += layer_vg
            directions[id(w)] = dw
            if b is not None:
                directions[id(b)] = db
        kl = group["kl_clip"]
        nu = min(1.0, math.sqrt(kl / vg)) if kl is not None and vg > 0 else 1.0
        self.kl_scale = nu
        return new_state, self._momentum_steps(group, grad_of, directions, nu, new_state)

    def _momentum_steps(self, group, grad_of, directions, nu, new_state) -> list:
        """The new value of every parameter (None without a gradient): SGD with momentum along ν·Δ
        (layers) or the gradient (other parameters); the new buffers go into ``new_state``."""
        values: list[Tensor | None] = []
        for p in group["params"]:
            g = grad_of[id(p)]
            if g is None:
                values.append(None)
                continue
            d, scale = (directions[id(p)], nu) if id(p) in directions else (g, 1.0)
            buf = self.state[id(p)].get("momentum_buffer")
            value, new_state[id(p)]["momentum_buffer"] = _momentum_step(
                p.detach(),
                d,
                buf,
                scale=scale,
                lr=group["lr"],
                momentum=group["momentum"],
                wd=group["weight_decay"],
            )
            values.append(value)
        return values

    @staticmethod
    def _layer_direction(module, gw, gb, inv, cap, stats_step, group):
        """``(Δ of the weight, Δ of the bias or None, lr²⟨Δ, ∇W̄⟩)`` of one layer."""
        factored = "a" in cap and "ct" in cap  # ∇W̄ = Σ ct āᵀ: precondition the two sides separately
        return _precondition(
            gw,
            gb,
            inv,
            cap.get("a") if factored else None,
            cap.get("ct") if factored else None,
            check=factored and stats_step,
            lam=group["damping"],
            mode=group["damping_mode"],
            lr=group["lr"],
            module=module,
        )

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict:
        return {**super().extra_state(), "kl_scale": self.kl_scale}

    def load_extra_state(self, extra: dict) -> None:
        super().load_extra_state(extra)
        self.kl_scale = extra.get("kl_scale", 1.0)


# ----------------------------------------------------------------------------- helpers
def _loss_and_logits(out):
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)):
        raise TypeError(
            "KFAC.step: the closure must return (loss, logits) computed with the model, got "
            f"{type(out).__name__}"
        )
    loss, logits = out
    if loss.shape != ():
        raise ValueError(f"KFAC.step: the loss must be a scalar batch mean, got shape {loss.shape}")
    if logits.ndim != 2:
        raise ValueError(f"KFAC.step: the logits must have shape (B, K), got {logits.shape}")
    return loss, logits


def _input_rows(module, x: Tensor) -> Tensor:
    """The layer's inputs as rows (examples × locations, features): unfolded patches for a convolution."""
    if isinstance(module, Conv2d):
        return _patch_rows(unfold(x, module.kernel_size, module.stride, module.padding))
    return x.reshape(-1, x.shape[-1])


@array_kernel
def _patch_rows(ns, cols):
    n, c, k, ho, wo = cols.shape
    return ns.moveaxis(cols.reshape(n, c * k, ho * wo), 1, 2).reshape(n * ho * wo, -1)


@array_kernel
def _output_rows(ns, c):
    """The output cotangents as rows (examples × locations, output features)."""
    return ns.moveaxis(c, 1, -1).reshape(-1, c.shape[1]) if c.ndim > 2 else c.reshape(-1, c.shape[-1])


def _factored_is_cheaper(module, x: Tensor) -> bool:
    """Whether ``G⁻¹(ctᵀ)·(ā A⁻¹)`` (R rows) costs fewer flops than ``G⁻¹ ∇W̄ A⁻¹``."""
    if isinstance(module, Conv2d):
        o, c, kh, kw = module.weight.shape
        d = c * kh * kw + module.use_bias
        _, _, ho, wo = module.output_shape(x.shape)
        r = x.shape[0] * ho * wo
    else:
        o, d = module.out_features, module.in_features + module.use_bias
        r = x.size // max(x.shape[-1], 1)
    return r * (o * o + d * d + o * d) < o * d * (o + d)


@array_kernel
def _input_factor(ns, a, *, bias: bool):
    """``A = mean over rows of ā āᵀ`` (ā with a trailing 1 when there is a bias)."""
    rows, d = a.shape
    if not bias:
        return _gram(a) / rows
    A = ns.empty((d + 1, d + 1), dtype=a.dtype)
    A[:d, :d] = _gram(a)
    s = a.sum(axis=0)
    A[:d, d] = s
    A[d, :d] = s
    A[d, d] = rows
    return A / rows


@array_kernel
def _output_factor(ns, rows, *, batch: int):
    """``G = (1/B)·Σ (B·ct)(B·ct)ᵀ`` from the cotangent rows."""
    return _gram(rows) * batch


def _gram(a):
    """``aᵀa``.  The copy makes NumPy take a general matrix product instead of its symmetric rank-k
    path, which was 1.5–2.5× slower for 64 × 1024 rows on the project's machine."""
    return a.T @ a.copy()


@array_kernel
def _factors_ema(ns, old_A, old_G, A, G, decay):
    """The factors' moving averages; the first one starts from the identity."""
    if old_A is None:
        old_A, old_G = ns.eye(A.shape[0], dtype=A.dtype), ns.eye(G.shape[0], dtype=G.dtype)
    return decay * old_A + (1 - decay) * A, decay * old_G + (1 - decay) * G


@array_kernel
def _precondition(ns, gw, gb, inv, a, ct, *, check, lam, mode, lr, module):
    """One layer's ``Δ`` (see the module docstring) split into weight and bias parts, and lr²⟨Δ, ∇W̄⟩."""
    if a is not None:  # the factored form (G⁻¹ctᵀ)(ā A⁻¹); ∇W̄ itself is only needed for the check
        if check:
            _check_factored(ns, ct, a, _weight_matrix(ns, gw, gb), gb is not None, module)
        ainv, d = inv["A_inv"], a.shape[1]
        q = a @ ainv[:d]
        if gb is not None:
            q += ainv[d]
        left = inv["G_inv"] @ ct.T
        # the weight and bias parts as separate products: Δ's weight part comes out contiguous
        dw, db = left @ q[:, :d], (None if gb is None else left @ q[:, d])
    else:
        dw, db = _dense_delta(ns, _weight_matrix(ns, gw, gb), inv, lam, mode, gb is not None)
    # ⟨Δ, ∇W̄⟩ as BLAS dot products of the weight and bias parts: no Δ⊙∇W̄ buffer
    inner = float(ns.vdot(dw.reshape(-1), gw.reshape(-1)))
    if gb is not None:
        inner += float(ns.vdot(db, gb))
    return dw.reshape(gw.shape), db, lr * lr * inner


def _dense_delta(ns, full, inv, lam, mode, bias):
    """``(Δ's weight part as out × in, Δ's bias part or None)`` from the dense ``∇W̄``."""
    if mode == "tikhonov":
        delta = inv["G_inv"] @ full @ inv["A_inv"]
    else:
        qa, qg = inv["QA"], inv["QG"]
        v = qg.T @ full @ qa
        v /= inv["dG"][:, None] * inv["dA"][None, :] + lam
        delta = qg @ v @ qa.T
    if not bias:
        return delta, None
    return ns.ascontiguousarray(delta[:, :-1]), delta[:, -1]


@array_kernel
def _momentum_step(ns, p, d, buf, *, scale, lr, momentum, wd):
    """``(new p, new momentum buffer)``: SGD with momentum and weight decay along ``scale·d``."""
    # Each line allocates one fresh array at most and works in place on it (no input is modified):
    # the same operations, in the same order, as d·scale + wd·p, momentum·buf + d, p − lr·d.
    d = d * scale if scale != 1.0 else d.copy() if wd or (buf is not None and momentum) else d
    if wd:
        d += wd * p
    if buf is not None and momentum:
        m = momentum * buf
        m += d
        d = m
    d = d.astype(p.dtype, copy=False)
    step = lr * d
    step = ns.subtract(p, step, out=step) if p.ndim else p - step  # 0-d: NumPy gives scalars
    return step.astype(p.dtype, copy=False), d


def _check_factored(ns, ct, a, full, bias, module) -> None:
    """On statistics steps: the gradient must be Σ ct āᵀ for the factored form to be exact."""
    m = ct.T @ a
    if bias:
        m = ns.concatenate([m, ct.sum(axis=0)[:, None]], axis=1)
    tol = 10 * math.sqrt(machine_eps(full.dtype))
    err, size = float(ns.linalg.norm(m - full)), float(ns.linalg.norm(full))
    if err > tol * size + 1e-30:
        raise RuntimeError(
            f"KFAC.step: the gradient of {module!r} is not Σ cotangent·inputᵀ (relative difference "
            f"{err / max(size, 1e-30):.2e}): the loss depends on its weights other than through its "
            "output (a penalty term, or a layer used twice); build KFAC with factored_gradient=False"
        )


def _check_captured(captured, layers) -> None:
    for name, m, _, _ in layers:
        got = captured.get(m, {})
        if "A" not in got or "G" not in got:
            raise RuntimeError(
                f"KFAC.step: layer {name!r} was not used by the closure's forward and backward passes; "
                "the closure must compute the logits with the model"
            )
        if not (all_finite(got["A"]) and all_finite(got["G"])):
            raise FloatingPointError(
                f"KFAC.step: the curvature statistics of layer {name!r} are not finite; no parameter was "
                "changed"
            )


def _weight_matrix(ns, gw, gb):
    """``∇W̄``: the weight gradient as out × in (convolutions: out × C·kh·kw), bias as a last column."""
    gw = gw.reshape(gw.shape[0], -1)
    if gb is None:
        return gw
    return ns.concatenate([gw, gb[:, None]], axis=1)


@array_kernel
def _inverses(ns, A, G, lam, mode, dt) -> dict:
    """The damped inverses (Tikhonov) or the eigendecompositions (eigen), computed in float64 and
    returned in dtype ``dt`` (the weight's)."""
    A64, G64 = A.astype(ns.float64), G.astype(ns.float64)
    if mode == "tikhonov":
        ta, tg = float(ns.trace(A64)) / A.shape[0], float(ns.trace(G64)) / G.shape[0]
        pi = math.sqrt(ta / tg) if ta > 0 and tg > 0 else 1.0
        ia = _spd_inverse(ns, A64 + pi * math.sqrt(lam) * ns.eye(A.shape[0]))
        ig = _spd_inverse(ns, G64 + math.sqrt(lam) / pi * ns.eye(G.shape[0]))
        return {"A_inv": ia.astype(dt), "G_inv": ig.astype(dt)}
    da, qa = ns.linalg.eigh(A64)
    dg, qg = ns.linalg.eigh(G64)
    da, dg = ns.maximum(da, 0), ns.maximum(dg, 0)  # PSD factors: clip round-off negatives
    return {"QA": qa.astype(dt), "dA": da.astype(dt), "QG": qg.astype(dt), "dG": dg.astype(dt)}


def _spd_inverse(ns, m):
    """The inverse of the symmetric positive definite float64 ``m`` by its Cholesky factor (LAPACK
    ``potrf`` + ``potri``: n³ flops, against 2.67·n³ for the LU-based ``inv``), mirrored from its upper
    triangle; ``inv`` where LAPACK is not at hand or the factorization fails."""
    lapack = getattr(scipy_linalg(ns), "lapack", None)
    if lapack is None or not hasattr(lapack, "dpotri"):
        return ns.linalg.inv(m)  # pragma: no cover - CuPy
    c, info = lapack.dpotrf(m, lower=False, clean=False)
    if info == 0:
        r, info = lapack.dpotri(c, lower=False)
    if info != 0:
        return ns.linalg.inv(m)
    upper = ns.triu(r)
    return upper + ns.triu(upper, 1).T
