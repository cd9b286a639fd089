"""NaturalGradient, HessianFree and LevenbergMarquardt: one step against the closed-form step computed
with dense float64 matrices (numpy.linalg.solve), damping adaptation, resume and errors.

Tolerances: 1e-8 absolute on the steps (CG runs to a 1e-14 relative residual on problems of at most 9
unknowns, so it is exact up to rounding).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidiff as md
from minidiff.optim import HessianFree, LevenbergMarquardt, NaturalGradient
from minidiff.optim.curvature_cg import lm_damping

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 2))
Y = np.array([0, 1, 2, 1, 0, 2])
W0 = RNG.normal(size=(2, 3)) * 0.5
B0 = RNG.normal(size=3) * 0.1


def logreg_params():
    return [md.tensor(W0.copy(), requires_grad=True), md.tensor(B0.copy(), requires_grad=True)]


def logits(ps):
    return md.tensor(X) @ ps[0] + ps[1]


def mean_ce(z):
    return -(md.log_softmax(z, axis=-1) * md.tensor(np.eye(3)[Y])).sum() / 6.0


def dense_logreg(lam):
    """Fisher (= GGN for softmax CE) and gradient of the mean CE at (W0, B0), params flattened [W, b]."""
    z = X @ W0 + B0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    F, g = np.zeros((9, 9)), np.zeros(9)
    for i in range(6):
        J = np.hstack([np.kron(X[i][None, :], np.eye(3)), np.eye(3)])
        F += J.T @ (np.diag(p[i]) - np.outer(p[i], p[i])) @ J / 6
        g += J.T @ (p[i] - np.eye(3)[Y[i]]) / 6
    return F, g, np.linalg.solve(F + lam * np.eye(9), -g)


def flat_step(ps):
    return np.concatenate([ps[0].numpy().ravel() - W0.ravel(), ps[1].numpy() - B0])


def test_natural_gradient_step_is_the_dense_fisher_solve():
    ps = logreg_params()
    opt = NaturalGradient(ps, damping=0.1, max_cg_iter=30, cg_tol=1e-14)
    opt.step((logits, mean_ce))
    np.testing.assert_allclose(flat_step(ps), dense_logreg(0.1)[2], rtol=0, atol=1e-8)


def test_hessian_free_step_is_the_dense_ggn_solve():
    ps = logreg_params()
    opt = HessianFree(ps, damping=0.1, max_cg_iter=30, cg_tol=1e-14, backtrack=False)
    opt.step((logits, mean_ce))
    assert opt.info["accepted"]
    np.testing.assert_allclose(flat_step(ps), dense_logreg(0.1)[2], rtol=0, atol=1e-8)


def test_natural_gradient_gaussian_is_jtj_over_n():
    A = RNG.normal(size=(5, 3))
    t = RNG.normal(size=5)
    w = md.zeros(3, requires_grad=True)
    opt = NaturalGradient([w], damping=0.01, likelihood="gaussian", variance=2.0, cg_tol=1e-14)
    loss = lambda z: ((z - md.tensor(t)) ** 2).sum() / (2 * 2.0 * 5)  # noqa: E731  mean NLL, σ² = 2
    opt.step((lambda ps: md.tensor(A) @ ps[0], loss))
    F = A.T @ A / (5 * 2.0)
    g = -A.T @ t / (5 * 2.0)
    np.testing.assert_allclose(w.numpy(), np.linalg.solve(F + 0.01 * np.eye(3), -g), rtol=0, atol=1e-8)


T = np.linspace(0.0, 1.0, 7)
OBS = 2.0 * np.exp(-1.5 * T) + 0.05 * np.sin(9 * T)


def residual(ps):
    return ps[0][0] * md.exp(ps[0][1] * md.tensor(T)) - md.tensor(OBS)


def test_levenberg_marquardt_step_is_the_dense_solve():
    th0 = np.array([1.0, -1.0])
    w = md.tensor(th0.copy(), requires_grad=True)
    opt = LevenbergMarquardt([w], damping=0.3, cg_tol=1e-14)
    opt.step(residual)
    J = md.jacfwd(lambda th: residual([th]))(md.tensor(th0)).numpy()
    r = residual([md.tensor(th0)]).numpy()
    delta = np.linalg.solve(J.T @ J + 0.3 * np.eye(2), -J.T @ r)
    assert opt.info["accepted"]
    np.testing.assert_allclose(w.numpy() - th0, delta, rtol=0, atol=1e-8)


def test_levenberg_marquardt_converges():
    w = md.tensor([1.0, -1.0], requires_grad=True)
    opt = LevenbergMarquardt([w], damping=1.0)
    for _ in range(30):
        opt.step(residual)
    g = md.grad(lambda th: 0.5 * (residual([th]) ** 2).sum())(w.detach())
    assert float(abs(g).max()) < 1e-8


@pytest.mark.parametrize(
    "rho, factor", [(-1.0, 1.5), (0.1, 1.5), (float("nan"), 1.5), (0.5, 1.0), (0.9, 2 / 3)]
)
def test_lm_damping_rule(rho, factor):
    assert lm_damping(2.0, rho) == pytest.approx(2.0 * factor, rel=1e-15)


def bad_problem(ps):  # r = θ² + 1 has no zero: from θ = 0.1 the Gauss-Newton step overshoots to ≈ −4.95
    return ps[0] ** 2 + 1.0


def test_lm_rejects_a_bad_step_and_grows_damping():
    w = md.tensor([0.1], requires_grad=True)
    opt = LevenbergMarquardt([w], damping=1e-6)
    opt.step(bad_problem)
    assert not opt.info["accepted"] and opt.info["rho"] < 0
    assert w.tolist() == [0.1]
    assert opt.param_groups[0]["damping"] == pytest.approx(1.5e-6, rel=1e-15)


def test_lm_shrinks_damping_after_a_good_step():
    A, b = md.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 1.0]]), md.tensor([1.0, 0.0, 3.0])
    w = md.zeros(2, requires_grad=True)
    opt = LevenbergMarquardt([w], damping=0.5)
    opt.step(lambda ps: A @ ps[0] - b)  # linear residual: the model is exact, ρ = 1
    assert opt.info["rho"] == pytest.approx(1.0, abs=1e-12)
    assert opt.param_groups[0]["damping"] == pytest.approx(0.5 * 2 / 3, rel=1e-15)


def test_hessian_free_rejects_a_bad_step_and_grows_damping():
    w = md.tensor([0.1], requires_grad=True)
    opt = HessianFree([w], damping=1e-6)
    opt.step((bad_problem, lambda z: 0.5 * (z * z).sum()))
    assert not opt.info["accepted"] and w.tolist() == [0.1]
    assert opt.param_groups[0]["damping"] == pytest.approx(1.5e-6, rel=1e-15)


def test_natural_gradient_adapts_damping_both_ways():
    w = md.tensor([0.1], requires_grad=True)  # Gaussian likelihood of the mean θ² + 1: the step overshoots
    opt = NaturalGradient([w], damping=1e-6, likelihood="gaussian", adapt_damping=True)
    opt.step((bad_problem, lambda z: 0.5 * (z * z).sum()))
    assert opt.info["rho"] < 0.25 and opt.param_groups[0]["damping"] == pytest.approx(1.5e-6, rel=1e-15)
    assert w.tolist() != [0.1]  # the natural gradient step is applied whatever ρ
    ps = logreg_params()
    opt = NaturalGradient(ps, lr=0.01, damping=0.1, adapt_damping=True)
    opt.step((logits, mean_ce))  # a short step: the quadratic model is accurate
    assert opt.info["rho"] > 0.75 and opt.param_groups[0]["damping"] == pytest.approx(0.1 * 2 / 3, rel=1e-15)


def test_hessian_free_backtracking_picks_the_best_kept_iterate():
    ps = logreg_params()
    opt = HessianFree(ps, lr=3.0, damping=1e-3, max_cg_iter=9, cg_tol=0.0, adapt_damping=False)
    opt.step((logits, mean_ce))
    # recompute f at every kept iterate from a fresh optimizer that keeps the same iterates
    losses = {}
    for k in (1, 2, 3, 4, 5, 7, 9):
        q = logreg_params()
        HessianFree(
            q, lr=3.0, damping=1e-3, max_cg_iter=k, cg_tol=0.0, backtrack=False, adapt_damping=False
        ).step((logits, mean_ce))
        losses[k] = float(mean_ce(logits(q)))
    assert opt.info["cg_iterate"] == min(losses, key=losses.get)
    assert float(mean_ce(logits(ps))) == losses[opt.info["cg_iterate"]]


def test_hessian_free_warm_start_uses_the_previous_direction():
    ps = logreg_params()
    opt = HessianFree(ps, damping=1.0, max_cg_iter=3, warm_start=0.5)
    opt.step((logits, mean_ce))
    saved = [opt.state[id(p)]["direction"].numpy() for p in ps]
    assert np.abs(np.concatenate([s.ravel() for s in saved])).max() > 0
    losses = [float(mean_ce(logits(ps)))]
    for _ in range(5):
        opt.step((logits, mean_ce))
        losses.append(float(mean_ce(logits(ps))))
    assert all(b <= a for a, b in zip(losses, losses[1:]))


@pytest.mark.parametrize("which", ["ng", "ng-sampled", "hf", "lm"])
def test_state_dict_resume_is_bitwise(which):
    def make(ps):
        if which == "ng":
            return NaturalGradient(ps, damping=0.1, adapt_damping=True, max_cg_iter=4)
        if which == "ng-sampled":
            return NaturalGradient(ps, damping=0.1, fisher="sampled", n_samples=2, seed=3, max_cg_iter=4)
        if which == "hf":
            return HessianFree(ps, damping=0.5, max_cg_iter=4)
        return LevenbergMarquardt(ps, damping=0.5, max_cg_iter=4)

    if which == "lm":
        ps, closure = [md.tensor([1.0, -1.0], requires_grad=True)], residual
    else:
        ps, closure = logreg_params(), (logits, mean_ce)
    opt = make(ps)
    for _ in range(2):
        opt.step(closure)
    saved, values = opt.state_dict(), [p.numpy().copy() for p in ps]
    for _ in range(2):
        opt.step(closure)
    qs = [md.tensor(v.copy(), requires_grad=True) for v in values]
    fresh = make(qs)
    fresh.load_state_dict(saved)
    for _ in range(2):
        fresh.step(closure)
    for p, q in zip(ps, qs):
        assert p.numpy().tobytes() == q.numpy().tobytes()
    assert fresh.param_groups[0]["damping"] == opt.param_groups[0]["damping"]


def test_param_groups_have_their_own_damping():
    w, b = logreg_params()
    opt = HessianFree([{"params": [w], "damping": 2.0}, {"params": [b]}], damping=0.5)
    opt.step((logits, mean_ce))
    assert [g["damping"] for g in opt.param_groups] == opt.info["damping"]
    assert opt.info["damping"][0] / opt.info["damping"][1] == pytest.approx(4.0, rel=1e-15)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("cls", [NaturalGradient, HessianFree])
def test_non_scalar_loss_is_refused(cls):
    ps = logreg_params()
    opt = cls(ps)
    with pytest.raises(
        md.errors.ShapeError, match=rf"{cls.__name__}\.step: the loss must be a scalar tensor"
    ):
        opt.step((logits, lambda z: z.sum(axis=0)))
    assert ps[0].numpy().tobytes() == W0.tobytes() and opt.steps == 0


@pytest.mark.parametrize("cls", [NaturalGradient, HessianFree])
def test_closure_must_be_a_model_loss_pair(cls):
    opt = cls(logreg_params())
    for bad in (None, lambda ps: mean_ce(logits(ps)), (logits,)):
        with pytest.raises(TypeError, match=r"step\(\(model_fn, loss_fn\)\)"):
            opt.step(bad)


def test_levenberg_marquardt_needs_a_functional_closure():
    opt = LevenbergMarquardt([md.zeros(2, requires_grad=True)])
    with pytest.raises(TypeError, match="functional closure"):
        opt.step(None)
    with pytest.raises(md.errors.DTypeError, match="floating residual tensor"):
        opt.step(lambda ps: [ps[0]])


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (NaturalGradient, {"damping": -1.0}, "damping must be a number >= 0"),
        (NaturalGradient, {"damping": float("nan")}, "damping"),
        (NaturalGradient, {"damping": 0.0, "adapt_damping": True}, "damping must be a number > 0"),
        (HessianFree, {"damping": 0.0}, "damping must be a number > 0"),
        (LevenbergMarquardt, {"damping": 0.0}, "damping must be a number > 0"),
        (LevenbergMarquardt, {"damping": float("inf")}, "damping"),
        (LevenbergMarquardt, {"lr": 0.0}, "lr must be a number > 0"),
        (HessianFree, {"warm_start": 1.5}, "warm_start"),
        (HessianFree, {"backtrack_ratio": 1.0}, "backtrack_ratio"),
        (HessianFree, {"max_cg_iter": 0}, "max_cg_iter"),
        (NaturalGradient, {"cg_tol": -1.0}, "cg_tol"),
        (NaturalGradient, {"likelihood": "poisson"}, "likelihood must be one of"),
        (NaturalGradient, {"fisher": "empirical"}, "fisher must be"),
        (NaturalGradient, {"likelihood": "gaussian", "fisher": "sampled"}, "categorical' only"),
        (NaturalGradient, {"variance": 0.0}, "variance"),
        (NaturalGradient, {"n_samples": 0}, "n_samples"),
    ],
)
def test_bad_settings_are_refused(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls([md.zeros(2, requires_grad=True)], **kwargs)


def test_bad_damping_in_a_loaded_state_is_refused():
    w = md.zeros(2, requires_grad=True)
    opt = LevenbergMarquardt([w])
    saved = opt.state_dict()
    saved["param_groups"][0]["damping"] = -1.0
    with pytest.raises(ValueError, match="damping"):
        opt.load_state_dict(saved)
    assert opt.param_groups[0]["damping"] == 1e-2


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_non_finite_gradient_changes_nothing():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    opt = NaturalGradient([w])
    with pytest.raises(FloatingPointError, match="not finite; no parameter was changed"):
        opt.step((lambda ps: md.reshape(ps[0], (1, 2)), lambda z: (md.sqrt(z - 5.0)).sum()))
    assert w.tolist() == [1.0, 2.0]


def test_the_optim_bench_runs_them():
    from minidiff.bench.optim_bench import run_optim_bench

    names = ("natural-gradient", "hessian-free")
    r = run_optim_bench(models=("mlp",), optimizers=names, steps=2, width=8, gc_repeats=0, train_limit=128)
    for name in names:
        run = r["runs"]["mlp"][name]
        assert run["steps"] == 2 and not run["diverged"], run
        assert all(np.isfinite(run["history"]["loss"]))


def test_every_bench_run_starts_from_the_same_parameters():
    from minidiff.bench.optim_bench import run_optim_bench

    kw = dict(models=("mlp",), steps=2, width=8, gc_repeats=0, train_limit=128)
    alone = run_optim_bench(optimizers=("hessian-free",), **kw)["runs"]["mlp"]["hessian-free"]
    after = run_optim_bench(optimizers=("sgd", "hessian-free"), **kw)["runs"]["mlp"]["hessian-free"]
    assert alone["history"]["loss"][0] == after["history"]["loss"][0]


def test_natural_gradient_sampled_fisher_is_the_dense_solve_on_the_drawn_labels():
    from minidiff.curvature import sample_labels
    from minidiff.primitives.random import Generator

    ps = logreg_params()
    opt = NaturalGradient(ps, damping=0.1, fisher="sampled", n_samples=3, seed=5, cg_tol=1e-14)
    opt.step((logits, mean_ce))
    labels = sample_labels(md.tensor(X @ W0 + B0), 3, rng=Generator(5)).numpy()  # the same draw
    z = X @ W0 + B0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    F = np.zeros((9, 9))
    for i in range(6):
        J = np.hstack([np.kron(X[i][None, :], np.eye(3)), np.eye(3)])
        for s in range(3):
            gi = J.T @ (p[i] - np.eye(3)[labels[s, i]])
            F += np.outer(gi, gi) / 18
    g = dense_logreg(0.1)[1]
    assert not np.allclose(F, dense_logreg(0.1)[0], atol=1e-3)  # a genuinely different matrix
    np.testing.assert_allclose(flat_step(ps), np.linalg.solve(F + 0.1 * np.eye(9), -g), rtol=0, atol=1e-8)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    m=st.integers(1, 6),
    n=st.integers(1, 4),
    lam=st.floats(1e-3, 10.0),
)
def test_one_step_is_the_damped_least_squares_solve(seed, m, n, lam):
    """LM and HF (with ½‖Aw − b‖², whose GGN is AᵀA) on random linear least squares: one step solves
    (AᵀA + λI) δ = −Aᵀ(Aw₀ − b) to 1e-8 relative to the step's size."""
    rng = np.random.default_rng(seed)
    A, b, w0 = rng.normal(size=(m, n)), rng.normal(size=m), rng.normal(size=n)
    delta = np.linalg.solve(A.T @ A + lam * np.eye(n), -A.T @ (A @ w0 - b))
    At, bt = md.tensor(A), md.tensor(b)
    w = md.tensor(w0.copy(), requires_grad=True)
    LevenbergMarquardt([w], damping=lam, cg_tol=1e-14).step(lambda ps: At @ ps[0] - bt)
    v = md.tensor(w0.copy(), requires_grad=True)
    hf = HessianFree([v], damping=lam, cg_tol=1e-14, backtrack=False)
    hf.step((lambda ps: At @ ps[0], lambda z: 0.5 * ((z - bt) ** 2).sum()))
    scale = max(1.0, float(np.abs(delta).max()))
    for got in (w, v):  # a linear residual: the model is exact, so the step always lowers the loss
        np.testing.assert_allclose(got.numpy() - w0, delta, rtol=0, atol=1e-8 * scale)
