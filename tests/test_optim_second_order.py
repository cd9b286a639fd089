"""Second-order optimizers: K-FAC, Shampoo, AdaHessian, Sophia.

Each is checked against a NumPy reference written here from ``docs/papers.md`` §4–7: K-FAC's step
against the damped Kronecker-factored Fisher built as a dense matrix (``np.kron``) and solved directly;
Shampoo against explicit matrix roots (``scipy.linalg.fractional_matrix_power`` or ``eigh``) and a
per-block ``tensordot`` loop; AdaHessian and Sophia-H on quadratics with a known diagonal Hessian, where
a Rademacher Hutchinson probe is exact (z ⊙ Hz = diag H when z² = 1); Sophia-G against ĝ computed by
hand from the labels the optimizer drew.  Gradients in the references are derived by hand.
Tolerances: float64, rtol 1e-9 unless stated (the formulas are arranged differently, so not bitwise);
checkpoint round trips must be bitwise identical.
"""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import fractional_matrix_power

import minidiff as md
from minidiff import nn
from minidiff.optim.adahessian import AdaHessian
from minidiff.optim.kfac import KFAC, _spd_inverse, sample_labels
from minidiff.optim.shampoo import Shampoo
from minidiff.optim.sophia import Sophia

F = nn.functional
RTOL = 1e-9


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def snapshot(params):
    return [p.numpy().copy() for p in params]


# ============================================================================= K-FAC
def kfac_dense_reference(W, b, x, y, steps, labels, *, lr, momentum, decay, lam, kl, wd, t_stat, t_inv, mode):
    """K-FAC on one dense softmax layer, with the Fisher block as the dense matrix (A ⊗ G) (spec §4).

    ``labels[s]`` are the labels used for G at statistics step s (the data labels for the empirical
    Fisher).  vec is column-major, so vec(G⁻¹ X A⁻¹) = (A ⊗ G)⁻¹ vec(X) for symmetric A, G.
    """
    n, din = x.shape
    k = W.shape[0]
    theta = np.concatenate([W, b[:, None]], axis=1)
    A, G, buf, minv = np.eye(din + 1), np.eye(k), None, None
    abar = np.concatenate([x, np.ones((n, 1))], axis=1)
    for s in range(steps):
        p = softmax(x @ theta[:, :din].T + theta[:, din])
        ct = (p - np.eye(k)[y]) / n
        grad = ct.T @ abar  # [∇W | ∇b]
        if s % t_stat == 0:
            g = p - np.eye(k)[labels[s]]  # = B · cotangent of the mean loss on those labels
            A = decay * A + (1 - decay) * abar.T @ abar / n
            G = decay * G + (1 - decay) * g.T @ g / n
        if s % t_inv == 0:
            if mode == "tikhonov":
                pi = np.sqrt((np.trace(A) / (din + 1)) / (np.trace(G) / k))
                M = np.kron(A + pi * np.sqrt(lam) * np.eye(din + 1), G + np.sqrt(lam) / pi * np.eye(k))
            else:
                M = np.kron(A, G) + lam * np.eye((din + 1) * k)
            minv = np.linalg.inv(M)
        delta = (minv @ grad.flatten(order="F")).reshape(k, din + 1, order="F")
        vg = lr**2 * np.sum(delta * grad)
        nu = min(1.0, np.sqrt(kl / vg)) if kl is not None else 1.0
        d = nu * delta + wd * theta
        buf = d if buf is None else momentum * buf + d
        theta = theta - lr * buf
    return theta[:, :din], theta[:, din]


def _dense_problem(seed=0, n=12, din=4, k=3):
    r = np.random.default_rng(seed)
    return r.normal(size=(n, din)), r.integers(0, k, n)


def _run_kfac_dense(steps, seed=0, size=(12, 4, 3), **kw):
    x, y = _dense_problem(seed, *size)
    model = nn.models.logreg(x.shape[1], size[2], dtype="float64", seed=seed).requires_grad_()
    W0, b0 = model[0].weight.numpy().copy(), model[0].bias.numpy().copy()
    opt = KFAC(model, **kw)
    xt, yt = md.tensor(x), md.tensor(y)
    labels = []
    for _ in range(steps):
        opt.step(lambda: (F.cross_entropy(model(xt), yt), model(xt)))
        labels.append(y if kw.get("fisher") == "empirical" else opt.sampled_labels.numpy().copy())
    return model, opt, (W0, b0, x, y, labels)


@pytest.mark.parametrize("mode", ["tikhonov", "eigen"])
@pytest.mark.parametrize("fisher", ["empirical", "true"])
def test_kfac_dense_step_is_the_kronecker_factored_natural_gradient(mode, fisher):
    kw = dict(momentum=0.0, stat_decay=0.0, damping=1e-2, kl_clip=None, weight_decay=0.0)
    model, opt, (W0, b0, x, y, labels) = _run_kfac_dense(
        1, lr=0.5, stat_period=1, inverse_period=1, fisher=fisher, damping_mode=mode, **kw
    )
    W, b = kfac_dense_reference(
        W0, b0, x, y, 1, labels, lr=0.5, momentum=0.0, decay=0.0, lam=1e-2, kl=None, wd=0.0,
        t_stat=1, t_inv=1, mode=mode,
    )  # fmt: skip
    np.testing.assert_allclose(model[0].weight.numpy(), W, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(model[0].bias.numpy(), b, rtol=RTOL, atol=1e-12)
    assert opt.kl_scale == 1.0


@pytest.mark.parametrize(
    "t_stat, t_inv, mode, fisher",
    [(1, 1, "tikhonov", "empirical"), (2, 3, "tikhonov", "true"), (1, 2, "eigen", "true")],
)
def test_kfac_ema_periods_momentum_decay_and_kl_clipping_over_several_steps(t_stat, t_inv, mode, fisher):
    """Defaults for the EMA (0.95 from I), momentum 0.9, weight decay, and a κ small enough to clip."""
    kw = dict(lr=0.3, momentum=0.9, stat_decay=0.95, damping=3e-2, kl_clip=1e-3, weight_decay=1e-2)
    model, opt, (W0, b0, x, y, labels) = _run_kfac_dense(
        5, stat_period=t_stat, inverse_period=t_inv, fisher=fisher, damping_mode=mode, **kw
    )
    W, b = kfac_dense_reference(
        W0, b0, x, y, 5, labels, lr=0.3, momentum=0.9, decay=0.95, lam=3e-2, kl=1e-3, wd=1e-2,
        t_stat=t_stat, t_inv=t_inv, mode=mode,
    )  # fmt: skip
    np.testing.assert_allclose(model[0].weight.numpy(), W, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(model[0].bias.numpy(), b, rtol=1e-8, atol=1e-11)
    assert opt.kl_scale < 1.0  # the clip was active


@pytest.mark.parametrize("factored", [True, False])
def test_kfac_factored_gradient_path_on_a_wide_layer(factored):
    """Batch 4 through a 20 → 15 layer: ∇W̄ = Σ ct āᵀ has rank 4, and preconditioning its two sides
    separately (cheaper here) is exact; both paths match the dense reference."""
    size = (4, 20, 15)
    kw = dict(lr=0.3, momentum=0.9, stat_decay=0.95, damping=3e-2, kl_clip=1e-3, weight_decay=1e-2)
    model, opt, (W0, b0, x, y, labels) = _run_kfac_dense(
        4, size=size, stat_period=2, inverse_period=3, factored_gradient=factored, **kw
    )
    W, b = kfac_dense_reference(
        W0, b0, x, y, 4, labels, lr=0.3, momentum=0.9, decay=0.95, lam=3e-2, kl=1e-3, wd=1e-2,
        t_stat=2, t_inv=3, mode="tikhonov",
    )  # fmt: skip
    np.testing.assert_allclose(model[0].weight.numpy(), W, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(model[0].bias.numpy(), b, rtol=1e-8, atol=1e-11)


def test_kfac_factored_gradient_refuses_a_loss_with_a_weight_penalty():
    x, y = _dense_problem(0, 4, 20, 15)
    model = nn.models.logreg(20, 15, dtype="float64").requires_grad_()
    w = model[0].weight
    xt, yt = md.tensor(x), md.tensor(y)
    closure = lambda: (F.cross_entropy(model(xt), yt) + 0.1 * (w * w).sum(), model(xt))  # noqa: E731
    before = w.numpy().copy()
    with pytest.raises(RuntimeError, match="factored_gradient=False"):
        KFAC(model).step(closure)
    assert np.array_equal(w.numpy(), before)
    KFAC(model, factored_gradient=False).step(closure)
    assert not np.array_equal(w.numpy(), before)


def _patches_np(x, kh, kw, pad):
    """Unfolded patches (N, C·kh·kw, Ho·Wo) of NCHW ``x`` by explicit loops (stride 1)."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = h + 2 * pad - kh + 1, w + 2 * pad - kw + 1
    out = np.zeros((n, c * kh * kw, ho * wo))
    for ci, i, j in itertools.product(range(c), range(kh), range(kw)):
        for a, bb in itertools.product(range(ho), range(wo)):
            out[:, ci * kh * kw + i * kw + j, a * wo + bb] = xp[:, ci, a + i, bb + j]
    return out, ho, wo


def _kron_step(grad, A, G, lam):
    pi = np.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
    M = np.kron(A + pi * np.sqrt(lam) * np.eye(A.shape[0]), G + np.sqrt(lam) / pi * np.eye(G.shape[0]))
    return np.linalg.solve(M, grad.flatten(order="F")).reshape(grad.shape, order="F")


def test_kfac_convolution_layer_matches_the_kfc_reference():
    """Conv2d → Flatten → Linear, empirical Fisher: A averages over batch and locations, G sums over
    locations and averages over the batch (spec §4); the dense layer is checked at the same time."""
    r = np.random.default_rng(3)
    n, c, o, k = 4, 2, 3, 3
    x, y = r.normal(size=(n, c, 3, 3)), r.integers(0, k, n)
    model = nn.Sequential(
        nn.Conv2d(c, o, 2, padding=1, rng=md.random.Generator(1), dtype="float64"),
        nn.Flatten(),
        nn.Linear(o * 16, k, rng=md.random.Generator(2), dtype="float64"),
    ).requires_grad_()
    Wc, bc = model[0].weight.numpy().copy(), model[0].bias.numpy().copy()
    Wd, bd = model[2].weight.numpy().copy(), model[2].bias.numpy().copy()
    lam, lr = 1e-2, 0.2
    opt = KFAC(model, lr=lr, momentum=0.0, stat_decay=0.0, damping=lam, kl_clip=None, fisher="empirical")
    xt, yt = md.tensor(x), md.tensor(y)
    opt.step(lambda: (F.cross_entropy(model(xt), yt), model(xt)))

    P, ho, wo = _patches_np(x, 2, 2, 1)
    t = ho * wo
    conv = np.einsum("od,ndt->not", Wc.reshape(o, -1), P) + bc[None, :, None]
    h = conv.reshape(n, -1)
    p = softmax(h @ Wd.T + bd)
    ct = (p - np.eye(k)[y]) / n
    ct_conv = (ct @ Wd).reshape(n, o, t)
    # dense layer
    hbar = np.concatenate([h, np.ones((n, 1))], axis=1)
    grad_d = ct.T @ hbar
    step_d = _kron_step(grad_d, hbar.T @ hbar / n, (n * ct).T @ (n * ct) / n, lam)
    # convolution layer
    abar = np.concatenate([P, np.ones((n, 1, t))], axis=1)  # (n, C·kh·kw + 1, t)
    grad_c = np.einsum("not,ndt->od", ct_conv, abar)
    A = np.einsum("ndt,net->de", abar, abar) / (n * t)
    G = np.einsum("not,npt->op", n * ct_conv, n * ct_conv) / n
    step_c = _kron_step(grad_c, A, G, lam)

    np.testing.assert_allclose(model[2].weight.numpy(), Wd - lr * step_d[:, :-1], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(model[2].bias.numpy(), bd - lr * step_d[:, -1], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(
        model[0].weight.numpy(), Wc - lr * step_c[:, :-1].reshape(Wc.shape), rtol=RTOL, atol=1e-12
    )
    np.testing.assert_allclose(model[0].bias.numpy(), bc - lr * step_c[:, -1], rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("factored", [True, False])
def test_kfac_layer_without_bias_has_no_ones_column(factored):
    x, y = _dense_problem(2, 4, 12, 10)
    model = nn.Sequential(nn.Linear(12, 10, bias=False, rng=md.random.Generator(0), dtype="float64"))
    model.requires_grad_()
    W = model[0].weight.numpy().copy()
    kw = dict(lr=0.5, momentum=0.0, stat_decay=0.0, damping=1e-2, kl_clip=None, fisher="empirical")
    opt = KFAC(model, factored_gradient=factored, **kw)
    xt, yt = md.tensor(x), md.tensor(y)
    opt.step(lambda: (F.cross_entropy(model(xt), yt), model(xt)))
    ct = (softmax(x @ W.T) - np.eye(10)[y]) / 4
    step = _kron_step(ct.T @ x, x.T @ x / 4, (4 * ct).T @ (4 * ct) / 4, 1e-2)
    np.testing.assert_allclose(model[0].weight.numpy(), W - 0.5 * step, rtol=RTOL, atol=1e-12)


def test_sampled_labels_give_the_true_fisher_factor():
    """Over a large batch of three repeated inputs, G from sampled labels is within a CLT bound of
    E_ŷ[(p − e_ŷ)(p − e_ŷ)ᵀ] = diag(p) − ppᵀ averaged over the batch; the data labels' G is not."""
    r = np.random.default_rng(5)
    base = r.normal(size=(3, 4)) * 2
    n = 6000
    x = np.repeat(base, n // 3, axis=0)
    y = np.zeros(n, dtype=np.int64)
    model = nn.models.logreg(4, 3, dtype="float64", seed=1).requires_grad_()
    W, b = model[0].weight.numpy(), model[0].bias.numpy()
    p = softmax(x @ W.T + b)
    exact = np.mean([np.diag(q) - np.outer(q, q) for q in p[:: n // 3]], axis=0)
    bound = 5 / np.sqrt(n)  # every entry of (p − e)(p − e)ᵀ lies in [−1, 1]
    for fisher, close in (("true", True), ("empirical", False)):
        opt = KFAC(model, lr=0.0, stat_decay=0.0, fisher=fisher)
        xt, yt = md.tensor(x), md.tensor(y)
        opt.step(lambda: (F.cross_entropy(model(xt), yt), model(xt)))
        G = opt.state[id(model[0].weight)]["G"].numpy()
        assert (np.abs(G - exact).max() < bound) == close, np.abs(G - exact).max()


def test_sample_labels_cotangent_is_the_mean_loss_gradient_on_the_drawn_labels():
    r = np.random.default_rng(0)
    z = r.normal(size=(5, 4))
    labels, ct = sample_labels(md.tensor(z), md.random.Generator(2))
    lab = labels.numpy()
    assert lab.dtype.kind == "i" and lab.min() >= 0 and lab.max() < 4
    g = md.grad(lambda t: F.cross_entropy(t, md.tensor(lab)))(md.tensor(z))
    np.testing.assert_allclose(ct.numpy(), g.numpy(), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="sample_labels"):
        sample_labels(md.tensor(z[0]), md.random.Generator(0))


def _mlp(seed=0):
    """Wide enough for batches of 4 to take K-FAC's factored-gradient path in both layers."""
    return nn.models.mlp(30, (40,), 20, dtype="float64", seed=seed).requires_grad_()


def _batches(seed=0, steps=8, n=4, din=30, k=20):
    r = np.random.default_rng(seed)
    return [(md.tensor(r.normal(size=(n, din))), md.tensor(r.integers(0, k, n))) for _ in range(steps)]


def test_kfac_resumed_run_is_bitwise_identical():
    data = _batches()
    kw = dict(lr=0.1, stat_period=2, inverse_period=3, kl_clip=1e-2, weight_decay=1e-3)

    def run(model, opt, batches):
        for xb, yb in batches:
            opt.step(lambda: (F.cross_entropy(model(xb), yb), model(xb)))

    full = _mlp()
    run(full, KFAC(full, seed=7, **kw), data)

    first = _mlp()
    opt = KFAC(first, seed=7, **kw)
    run(first, opt, data[:5])
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    values = first.parameters()
    second = _mlp(seed=1)  # other initial values and another seed: everything comes from the checkpoint
    second.set_parameters(md.pytree.tree_map(lambda p: p.detach(), values)).requires_grad_()
    opt2 = KFAC(second, seed=123, **kw)
    opt2.load_state_dict(saved)
    run(second, opt2, data[5:])
    for (_, a), (_, b) in zip(full.named_parameters(), second.named_parameters()):
        assert np.array_equal(a.numpy(), b.numpy())


def test_kfac_bad_inputs():
    model = _mlp()
    for kw, what in [
        ({"lr": -1.0}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"stat_decay": 1.0}, "stat_decay"),
        ({"damping": 0.0}, "damping"),
        ({"kl_clip": 0.0}, "kl_clip"),
        ({"stat_period": 0}, "stat_period"),
        ({"inverse_period": 1.5}, "inverse_period"),
        ({"fisher": "exact"}, "fisher"),
        ({"damping_mode": "none"}, "damping_mode"),
    ]:
        with pytest.raises(ValueError, match=what):
            KFAC(model, **kw)
    with pytest.raises(TypeError, match="Module"):
        KFAC([model[0].weight])
    with pytest.raises(TypeError, match="tape leaf"):
        KFAC(nn.models.mlp(6, (5,), 3, dtype="float64"))
    with pytest.raises(TypeError, match="single group"):
        KFAC(model).add_param_group({"params": [md.zeros(2, requires_grad=True)]})

    opt = KFAC(model)
    xb, yb = _batches(steps=1)[0]
    before = snapshot(opt.parameters())
    with pytest.raises(TypeError, match="closure"):
        opt.step()
    with pytest.raises(TypeError, match=r"\(loss, logits\)"):
        opt.step(lambda: F.cross_entropy(model(xb), yb))
    with pytest.raises(ValueError, match="scalar"):
        opt.step(lambda: (model(xb).sum(axis=1), model(xb)))
    state = opt.rng.get_state()
    bad = md.tensor(np.where(np.arange(30) == 2, np.nan, 1.0)[None].repeat(4, 0))
    with pytest.raises(FloatingPointError, match="not finite"):
        opt.step(lambda: (F.cross_entropy(model(bad), yb), model(bad)))
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, opt.parameters()))
    assert opt.steps == 0 and opt.rng.get_state() == state and not any(opt.state.values())
    model.requires_grad_()  # fresh leaves: the optimizer's are stale now
    with pytest.raises(RuntimeError, match="replaced"):
        opt.step(lambda: (F.cross_entropy(model(xb), yb), model(xb)))


# ============================================================================= Shampoo
def _root(S, p, eps, relative):
    d, q = np.linalg.eigh(S)
    d = np.maximum(d, 0)
    ridge = eps * max(d.max(), 1e-30) if relative else eps
    return (q * (d + ridge) ** (-1.0 / p)) @ q.T


def _block_slices(shape, bs, max_dim):
    per_axis, pre = [], []
    for n in shape:
        if n <= 1 or n > max_dim:
            per_axis.append([slice(0, n)])
            pre.append(False)
        elif bs is not None and n > bs:
            per_axis.append([slice(i, min(i + bs, n)) for i in range(0, n, bs)])
            pre.append(True)
        else:
            per_axis.append([slice(0, n)])
            pre.append(True)
    return list(itertools.product(*per_axis)), [i for i, f in enumerate(pre) if f]


def shampoo_reference(w0, grad_fn, steps, *, lr, betas, eps, relative, diag_eps, wd, delay, period, bs,
                      max_dim, graft, nesterov):  # fmt: skip
    """Shampoo from the spec (§5) with a tensordot per axis and a Python loop over blocks."""
    b1, b2 = betas
    wo, wn = (1.0, 1.0) if b2 == 1 else (b2, 1 - b2)
    w = w0.copy()
    blocks, axes = _block_slices(w.shape, bs, max_dim)
    k = len(axes)
    stats, roots, acc, m = {}, {}, None, None
    for t in range(1, steps + 1):
        g = grad_fn(w)
        for bi, sl in enumerate(blocks):
            gb = g[sl]
            for i in axes:
                other = [a for a in range(g.ndim) if a != i]
                s = np.tensordot(gb, gb, axes=(other, other))
                stats[bi, i] = wn * s if (bi, i) not in stats else wo * stats[bi, i] + wn * s
        if graft == "adagrad":
            acc = g * g if acc is None else acc + g * g
            gs = g / (np.sqrt(acc) + diag_eps)
        else:
            gs = g
        if k and t > delay:
            if (t - delay - 1) % period == 0:
                roots = {key: _root(s, 2 * k, eps, relative) for key, s in stats.items()}
            direction = np.zeros_like(g)
            for bi, sl in enumerate(blocks):
                y = g[sl]
                for i in axes:
                    y = np.moveaxis(np.tensordot(roots[bi, i], y, axes=([1], [i])), 0, i)
                direction[sl] = y
            upd = (
                direction
                if graft is None
                else direction * np.linalg.norm(gs) / (np.linalg.norm(direction) + 1e-16)
            )
        else:
            upd = gs if graft is not None else g
        upd = upd + wd * w
        m = upd if m is None else b1 * m + upd
        w = w - lr * (b1 * m + upd if nesterov else m)
    return w


def _quartic(target):
    """f(w) = Σ (w − T)⁴ / 4 with ∇f = (w − T)³ (a gradient that changes from step to step)."""
    return (lambda p: ((p - md.tensor(target)) ** 4).sum() / 4), (lambda w: (w - target) ** 3)


def _bounded(target):
    """f(w) = Σ log(1 + (w − T)²) with ∇f = 2(w − T)/(1 + (w − T)²): nonlinear, bounded, no blow-up."""
    f = lambda p: md.log1p((p - md.tensor(target)) ** 2).sum()  # noqa: E731
    return f, (lambda w: 2 * (w - target) / (1 + (w - target) ** 2))


def _run_shampoo(w0, f, steps, **kw):
    w = md.tensor(w0.copy(), requires_grad=True)
    opt = Shampoo([w], **kw)
    for _ in range(steps):
        opt.zero_grad()
        f(w).backward()
        opt.step()
    return w, opt


def test_shampoo_on_a_matrix_matches_the_closed_form_with_explicit_roots():
    """Paper's Shampoo: L₀ = εI, R₀ = εI, L += GGᵀ, R += GᵀG, W −= η L^(−1/4) G R^(−1/4)."""
    r = np.random.default_rng(0)
    w0, target = r.normal(size=(5, 3)), r.normal(size=(5, 3))
    f, grad = _quartic(target)
    eps, lr = 1e-3, 0.1
    w, _ = _run_shampoo(
        w0, f, 3, lr=lr, betas=(0.0, 1.0), eps=eps, eps_relative=False, start_delay=0, inverse_period=1,
        graft=None,
    )  # fmt: skip
    W, L, R = w0.copy(), eps * np.eye(5), eps * np.eye(3)
    for _ in range(3):
        G = grad(W)
        L, R = L + G @ G.T, R + G.T @ G
        W = W - lr * np.real(fractional_matrix_power(L, -0.25)) @ G @ np.real(
            fractional_matrix_power(R, -0.25)
        )
    np.testing.assert_allclose(w.numpy(), W, rtol=1e-8, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple),
    bs=st.sampled_from([None, 2, 3]),
    graft=st.sampled_from(["sgd", "adagrad", None]),
    relative=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_shampoo_any_order_and_blocking_matches_the_per_block_reference(shape, bs, graft, relative, seed):
    r = np.random.default_rng(seed)
    w0, target = r.normal(size=shape), r.normal(size=shape)
    f, grad = _bounded(target)
    kw = dict(
        lr=0.05, betas=(0.9, 0.99), eps=1e-4, diag_eps=1e-10, wd=1e-2, delay=1, period=2, bs=bs, max_dim=4
    )
    w, _ = _run_shampoo(
        w0, f, 4, lr=kw["lr"], betas=kw["betas"], eps=kw["eps"], eps_relative=relative,
        weight_decay=kw["wd"], start_delay=1, inverse_period=2, block_size=bs, max_preconditioner_dim=4,
        graft=graft,
    )  # fmt: skip
    ref = shampoo_reference(w0, grad, 4, relative=relative, graft=graft, nesterov=True, **kw)
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-7, atol=1e-10)


def test_shampoo_grafting_sets_the_step_norm_and_the_delay_uses_the_graft():
    r = np.random.default_rng(1)
    w0, target = r.normal(size=(4, 3)), r.normal(size=(4, 3))
    f, grad = _quartic(target)
    g = grad(w0)
    # during the start-up delay: the SGD step itself
    w, _ = _run_shampoo(w0, f, 1, lr=0.1, betas=(0.0, 0.999), start_delay=1)
    np.testing.assert_allclose(w.numpy(), w0 - 0.1 * g, rtol=RTOL)
    # after it: Shampoo's direction with the graft's norm
    for graft, gs in (("sgd", g), ("adagrad", g / (np.abs(g) + 1e-10))):
        w, _ = _run_shampoo(w0, f, 1, lr=0.1, betas=(0.0, 0.999), start_delay=0, graft=graft)
        step = (w0 - w.numpy()) / 0.1
        np.testing.assert_allclose(np.linalg.norm(step), np.linalg.norm(gs), rtol=RTOL)
        pure, _ = _run_shampoo(w0, f, 1, lr=0.1, betas=(0.0, 0.999), start_delay=0, graft=None)
        direction = (w0 - pure.numpy()) / 0.1
        cos = np.sum(step * direction) / (np.linalg.norm(step) * np.linalg.norm(direction))
        assert cos == pytest.approx(1.0, abs=1e-12)
        assert not np.allclose(step / np.linalg.norm(step), g / np.linalg.norm(g))  # not plain SGD


def test_shampoo_large_axes_are_skipped_and_scalars_take_the_graft():
    r = np.random.default_rng(2)
    w0, target = r.normal(size=(6, 2)), r.normal(size=(6, 2))
    f, grad = _quartic(target)
    kw = dict(lr=0.1, betas=(0.0, 1.0), eps=1e-3, eps_relative=False, start_delay=0, graft=None)
    w, opt = _run_shampoo(w0, f, 1, max_preconditioner_dim=5, **kw)
    G = grad(w0)  # only the 2-axis is preconditioned, as a vector would be: exponent −1/2
    expected = w0 - 0.1 * G @ _root(G.T @ G + 0 * np.eye(2), 2, 1e-3, False)
    np.testing.assert_allclose(w.numpy(), expected, rtol=RTOL)
    assert len(opt.state[id(w)]["stats"]) == 1
    s0 = np.array(1.5)
    s, _ = _run_shampoo(s0, lambda p: (p - 1.0) ** 4 / 4, 1, **kw)
    np.testing.assert_allclose(s.numpy(), s0 - 0.1 * 0.5**3, rtol=RTOL)


def test_shampoo_resumed_run_is_bitwise_identical():
    r = np.random.default_rng(4)
    inits = [r.normal(size=(7, 5)), r.normal(size=(5,)), r.normal(size=(2, 3, 4))]
    targets = [r.normal(size=a.shape) for a in inits]
    kw = dict(lr=0.05, start_delay=1, inverse_period=3, block_size=3, graft="adagrad", weight_decay=1e-3)

    def run(params, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            sum((((p - md.tensor(t)) ** 4).sum() for p, t in zip(params, targets))).backward()
            opt.step()

    full = [md.tensor(a, requires_grad=True) for a in inits]
    run(full, Shampoo(full, **kw), 7)
    first = [md.tensor(a, requires_grad=True) for a in inits]
    opt = Shampoo(first, **kw)
    run(first, opt, 3)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    second = [md.tensor(p.numpy(), requires_grad=True) for p in first]
    opt2 = Shampoo(second, **{**kw, "lr": 1.0})
    opt2.load_state_dict(saved)
    run(second, opt2, 4)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(full, second))


def test_shampoo_bad_inputs():
    w = md.tensor(np.ones((3, 2)), requires_grad=True)
    for kw, what in [
        ({"lr": -0.1}, "lr"),
        ({"betas": (1.0, 0.9)}, "betas"),
        ({"betas": (0.9, 0.0)}, "betas"),
        ({"betas": (0.9, 1.5)}, "betas"),
        ({"eps": 0.0}, "eps"),
        ({"start_delay": -1}, "start_delay"),
        ({"inverse_period": 0}, "inverse_period"),
        ({"block_size": 0}, "block_size"),
        ({"graft": "adam"}, "graft"),
    ]:
        with pytest.raises(ValueError, match=what):
            Shampoo([w], **kw)
    with pytest.raises(ValueError, match="twice"):
        Shampoo([w, w])
    opt = Shampoo([w], start_delay=0)
    (w * md.tensor([[np.inf, 1.0]] * 3)).sum().backward()
    with pytest.raises(FloatingPointError, match="not finite"):
        opt.step()
    assert np.array_equal(w.numpy(), np.ones((3, 2))) and opt.steps == 0 and not opt.state[id(w)]


# ============================================================================= AdaHessian
def _diag_quadratic(shape, seed):
    """f(w) = Σ ½ a w² + c w: ∇f = a w + c, H = diag(a) (so z ⊙ Hz = a for Rademacher z)."""
    r = np.random.default_rng(seed)
    a, c = r.uniform(0.5, 3.0, size=shape) * r.choice([-1, 1], size=shape), r.normal(size=shape)
    f = lambda ps: (0.5 * md.tensor(a) * ps[0] ** 2 + md.tensor(c) * ps[0]).sum()  # noqa: E731
    return a, c, f


def adahessian_reference(w, a, c, steps, *, lr, betas, eps, k, wd, spatial=True):
    b1, b2 = betas
    D = np.abs(a)
    if D.ndim == 4 and spatial:
        D = np.broadcast_to(D.mean(axis=(2, 3), keepdims=True), D.shape)
    m = v = 0.0
    for t in range(1, steps + 1):
        g = a * w + c
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * D**2
        w = w - lr * ((m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) ** k + eps) + wd * w)
    return w


@pytest.mark.parametrize("k, wd", [(1.0, 0.0), (0.5, 1e-2)])
@pytest.mark.parametrize("shape", [(3,), (2, 3, 2, 2)])
@pytest.mark.parametrize("mode", ["fwd-over-rev", "rev-over-rev"])
def test_adahessian_first_steps_match_the_hand_derived_reference(k, wd, shape, mode):
    a, c, f = _diag_quadratic(shape, 0)
    w0 = np.random.default_rng(1).normal(size=shape)
    w = md.tensor(w0, requires_grad=True)
    opt = AdaHessian([w], lr=0.1, hessian_power=k, weight_decay=wd, hvp_mode=mode)
    for _ in range(3):
        opt.step(f)
    ref = adahessian_reference(w0, a, c, 3, lr=0.1, betas=(0.9, 0.999), eps=1e-4, k=k, wd=wd)
    np.testing.assert_allclose(w.numpy(), ref, rtol=RTOL)


@settings(max_examples=20, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple),
    spatial=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_adahessian_any_shape_matches_the_reference(shape, spatial, seed):
    a, c, f = _diag_quadratic(shape, seed)
    w0 = np.random.default_rng(seed + 1).normal(size=shape)
    w = md.tensor(w0, requires_grad=True)
    opt = AdaHessian([w], lr=0.05, betas=(0.8, 0.9), spatial_average=spatial, seed=seed)
    for _ in range(2):
        opt.step(f)
    ref = adahessian_reference(
        w0, a, c, 2, lr=0.05, betas=(0.8, 0.9), eps=1e-4, k=1.0, wd=0.0, spatial=spatial
    )
    np.testing.assert_allclose(w.numpy(), ref, rtol=RTOL, atol=1e-13)


def test_adahessian_row_averaging():
    a, c, f = _diag_quadratic((3, 4), 2)
    w0 = np.zeros((3, 4))
    w = md.tensor(w0, requires_grad=True)
    AdaHessian([w], lr=0.1, average_rows=True).step(f)
    D = np.abs(a).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(w.numpy(), -0.1 * c / (D + 1e-4), rtol=RTOL)


@pytest.mark.parametrize("make, with_logits", [
    (lambda ps: AdaHessian(ps, lr=0.05, weight_decay=1e-3, seed=3), False),
    (lambda ps: Sophia(ps, lr=0.05, estimator="hutchinson", update_period=2, seed=3), False),
    (lambda ps: Sophia(ps, lr=0.05, estimator="hutchinson", probe="normal", update_period=2, seed=3), False),
    (lambda ps: Sophia(ps, lr=0.05, estimator="gnb", update_period=2, seed=3), True),
], ids=["adahessian", "sophia-h", "sophia-h-normal", "sophia-g"])  # fmt: skip
def test_hessian_methods_resume_bitwise_identically(make, with_logits):
    r = np.random.default_rng(6)
    inits = [r.normal(size=(5, 6)), r.normal(size=5), r.normal(size=(3, 5))]
    batches = _batches(steps=7, n=10, din=6, k=3)
    step_of = [0]

    def logits(ps):
        return md.tanh(batches[step_of[0]][0] @ ps[0].T + ps[1]) @ ps[2].T

    def closure(ps):
        out = logits(ps)
        loss = F.cross_entropy(out, batches[step_of[0]][1])
        return (loss, out) if with_logits else loss

    def run(opt, steps):
        for s in steps:
            step_of[0] = s
            opt.step(closure)

    full = [md.tensor(a, requires_grad=True) for a in inits]
    run(make(full), range(7))
    first = [md.tensor(a, requires_grad=True) for a in inits]
    opt = make(first)
    run(opt, range(3))
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    second = [md.tensor(p.numpy(), requires_grad=True) for p in first]
    opt2 = make(second)
    opt2.rng = md.random.Generator(999)  # the generator state must come from the checkpoint
    opt2.load_state_dict(saved)
    run(opt2, range(3, 7))
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(full, second))


def test_adahessian_bad_inputs():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    for kw, what in [
        ({"lr": -1.0}, "lr"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"betas": (-0.1, 0.9)}, "betas"),
        ({"hessian_power": 0.0}, "hessian_power"),
        ({"hessian_power": 2.0}, "hessian_power"),
        ({"eps": -1.0}, "eps"),
        ({"hvp_mode": "fwd-over-fwd"}, "hvp_mode"),
    ]:
        with pytest.raises(ValueError, match=what):
            AdaHessian([w], **kw)
    opt = AdaHessian([w])
    with pytest.raises(TypeError, match="closure"):
        opt.step()
    with pytest.raises(TypeError, match="functional closure"):
        opt.step(lambda: (w * w).sum())
    state = opt.rng.get_state()
    for bad in (
        lambda ps: (ps[0] * md.tensor([np.inf, 1.0])).sum(),
        lambda ps: (ps[0] ** 2 * md.tensor([0.0, np.nan])).sum(),
    ):
        with pytest.raises(FloatingPointError, match="not finite"):
            opt.step(bad)
    assert w.numpy().tolist() == [1.0, 2.0] and opt.steps == 0 and opt.rng.get_state() == state


# ============================================================================= Sophia
def sophia_reference(w, grad_fn, hhat_fn, steps, *, lr, betas, rho, eps, weight_decay, k, clip=None):
    b1, b2 = betas
    m, h = np.zeros_like(w), np.zeros_like(w)
    fractions = []
    for s in range(steps):
        g = grad_fn(w)
        if clip is not None and np.linalg.norm(g) > clip:
            g = g * clip / np.linalg.norm(g)
        if s > 0 and s % k == 0:
            h = b2 * h + (1 - b2) * hhat_fn(w, s)
        w = w * (1 - lr * weight_decay)
        m = b1 * m + (1 - b1) * g
        ratio = np.abs(m) / (rho * np.maximum(h, 0) + eps)
        fractions.append(np.mean(ratio < 1))
        w = w - lr * np.sign(m) * np.minimum(ratio, 1)
    return w, fractions


@pytest.mark.parametrize("clip", [None, 0.5])
def test_sophia_h_first_steps_match_the_hand_derived_reference(clip):
    """Diagonal quadratic with some negative curvature: u ⊙ Hu = a exactly; h < 0 counts as 0."""
    a, c, f = _diag_quadratic((6,), 4)
    w0 = np.random.default_rng(5).normal(size=6)
    w = md.tensor(w0, requires_grad=True)
    kw = dict(lr=0.05, betas=(0.9, 0.95), rho=20.0, eps=1e-12, weight_decay=0.1)
    opt = Sophia([w], estimator="hutchinson", update_period=2, grad_clip=clip, **kw)
    got = []
    for _ in range(6):
        opt.step(f)
        got.append(opt.unclipped_fraction)
    ref, fractions = sophia_reference(
        w0, lambda v: a * v + c, lambda v, s: a, 6, k=2, clip=clip, lr=0.05, betas=(0.9, 0.95), rho=20.0,
        eps=1e-12, weight_decay=0.1,
    )  # fmt: skip
    np.testing.assert_allclose(w.numpy(), ref, rtol=RTOL)
    assert got == pytest.approx(fractions) and got[0] == 0.0 and max(got) > 0


@pytest.mark.parametrize("style", ["functional", "tape"])
def test_sophia_g_uses_the_gauss_newton_bartlett_estimate(style):
    """ĥ = B·ĝ⊙ĝ with ĝ the mean-loss gradient on the labels drawn from the softmax."""
    x, y = _dense_problem(7, n=8, din=3, k=3)
    model = nn.models.logreg(3, 3, dtype="float64", seed=2).requires_grad_()
    W0, b0 = model[0].weight.numpy().copy(), model[0].bias.numpy().copy()
    params = [model[0].weight, model[0].bias]
    xt, yt = md.tensor(x), md.tensor(y)
    kw = dict(lr=0.05, betas=(0.9, 0.9), rho=3.0, eps=1e-12, weight_decay=0.0)
    opt = Sophia(params, estimator="gnb", update_period=1, grad_clip=None, **kw)
    labels, fractions = {}, []
    for s in range(4):
        before = np.concatenate([model[0].weight.numpy(), model[0].bias.numpy()[:, None]], axis=1)
        if style == "functional":
            opt.step(lambda ps: (F.cross_entropy(xt @ ps[0].T + ps[1], yt), xt @ ps[0].T + ps[1]))
        else:
            opt.step(lambda: (F.cross_entropy(model(xt), yt), model(xt)))
        if s > 0:
            labels[s] = opt.sampled_labels.numpy().copy()
        fractions.append(opt.unclipped_fraction)
    theta0 = np.concatenate([W0, b0[:, None]], axis=1)
    abar = np.concatenate([x, np.ones((8, 1))], axis=1)

    def grad_on(theta, lab):
        p = softmax(abar @ theta.T)
        return ((p - np.eye(3)[lab]) / 8).T @ abar

    ref, _ = sophia_reference(
        theta0, lambda t: grad_on(t, y), lambda t, s: 8 * grad_on(t, labels[s]) ** 2, 4, k=1, **kw
    )
    np.testing.assert_allclose(model[0].weight.numpy(), ref[:, :3], rtol=RTOL)
    np.testing.assert_allclose(model[0].bias.numpy(), ref[:, 3], rtol=RTOL)
    assert fractions[0] == 0 and 0 < max(fractions) < 1  # h matters: some coordinates are not clipped
    if style == "tape":  # .grad keeps the data gradient (of the last step), not the sampled one
        np.testing.assert_allclose(model[0].weight.grad.numpy(), grad_on(before, y)[:, :3], rtol=RTOL)


def test_sophia_bad_inputs():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    for kw, what in [
        ({"lr": -1.0}, "lr"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"rho": 0.0}, "rho"),
        ({"eps": 0.0}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"estimator": "fisher"}, "estimator"),
        ({"update_period": 0}, "update_period"),
        ({"probe": "uniform"}, "probe"),
        ({"grad_clip": 0.0}, "grad_clip"),
    ]:
        with pytest.raises(ValueError, match=what):
            Sophia([w], **kw)
    opt = Sophia([w], estimator="hutchinson")
    with pytest.raises(TypeError, match="closure"):
        opt.step()
    with pytest.raises(TypeError, match="functional closure"):
        opt.step(lambda: (w * w).sum())
    with pytest.raises(FloatingPointError, match="not finite"):
        opt.step(lambda ps: (ps[0] * md.tensor([np.nan, 1.0])).sum())
    g = Sophia([w], estimator="gnb")
    with pytest.raises(TypeError, match=r"\(loss, logits\)"):
        g.step(lambda ps: (ps[0] ** 2).sum())
    with pytest.raises(ValueError, match="logits"):
        g.step(lambda ps: ((ps[0] ** 2).sum(), ps[0]))
    assert w.numpy().tolist() == [1.0, 2.0] and opt.steps == 0 and g.steps == 0


# ============================================================================= devices
def _all_tensors(tree):
    if isinstance(tree, md.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _all_tensors(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _all_tensors(v)]
    return []


@pytest.mark.parametrize("kind", ["kfac", "shampoo", "adahessian", "sophia-g"])
def test_state_and_steps_stay_on_the_parameter_device(fake_device, kind):
    model = nn.Sequential(
        nn.Conv2d(1, 2, 2, dtype="float64", device="fake"),
        nn.Flatten(),
        nn.Linear(8, 3, dtype="float64", device="fake"),
    ).requires_grad_()
    r = np.random.default_rng(0)
    x = md.tensor(r.normal(size=(4, 1, 3, 3)), device="fake")
    y = md.tensor(r.integers(0, 3, 4), device="fake")
    params = [p for _, p in model.named_parameters()]

    def functional(ps):
        tree = {"0": {"weight": ps[0], "bias": ps[1]}, "2": {"weight": ps[2], "bias": ps[3]}}
        logits = model.apply(tree, x)
        return F.cross_entropy(logits, y), logits

    def tape_step(opt):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    opt, step = {
        "kfac": (
            lambda: KFAC(model, stat_period=1, inverse_period=2),
            lambda opt: opt.step(lambda: (F.cross_entropy(model(x), y), model(x))),
        ),
        "shampoo": (lambda: Shampoo(params, start_delay=0), tape_step),
        "adahessian": (lambda: AdaHessian(params), lambda opt: opt.step(lambda ps: functional(ps)[0])),
        "sophia-g": (lambda: Sophia(params, update_period=1), lambda opt: opt.step(functional)),
    }[kind]
    opt = opt()
    for _ in range(3):
        step(opt)
    state = _all_tensors(list(opt.state.values()))
    assert state and all(t.device is fake_device for t in state)
    assert all(p.device is fake_device for p in params)
    fresh = type(opt).__new__(type(opt))
    fresh.__dict__.update(opt.__dict__)
    fresh.load_state_dict(opt.state_dict())
    assert all(t.device is fake_device for t in _all_tensors(list(fresh.state.values())))


def test_kfac_spd_inverse_matches_inv_and_falls_back_when_not_positive_definite():
    """The Cholesky inverse of the damped factors equals the LU one to float64 rounding (relative
    1e-10 here) and is exactly symmetric; a matrix that is not positive definite takes ``inv``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 30))
    m = x.T @ x / 8 + 0.03 * np.eye(30)
    got = _spd_inverse(np, m)
    assert np.array_equal(got, got.T)
    np.testing.assert_allclose(got, np.linalg.inv(m), rtol=1e-10, atol=1e-10 * np.abs(got).max())
    indefinite = np.diag([1.0, -2.0, 3.0])
    np.testing.assert_array_equal(_spd_inverse(np, indefinite), np.linalg.inv(indefinite))
