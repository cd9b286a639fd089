"""Parameter groups for the methods that solve one joint problem over every parameter: the dense
BFGS, DFP, SR1 and Newton (one n × n matrix over all groups) and NaturalGradient, HessianFree and
LevenbergMarquardt (one CG solve over all groups, λ per group).

Checked: several groups with equal settings follow the one-group trajectory bitwise; a group's ``lr``
scales its block of the direction (hand-computed on a quadratic, 1e-12); joint settings that differ
are refused naming them, at construction, in ``add_param_group`` and in ``load_state_dict``, with
nothing changed; ``add_param_group`` after steps restarts the curvature model (bitwise the step a new
optimizer takes); ``state_dict`` resumes bitwise through a pickle round-trip; ``lr = 0`` holds a group
fixed while the others solve their own problem; a scaled direction that does not descend falls back to
``−D g``; a non-finite gradient names its group.  float64 throughout.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import minidiff as md
from minidiff.optim import BFGS, DFP, SR1, HessianFree, LevenbergMarquardt, NaturalGradient, Newton

DENSE = [BFGS, DFP, SR1, Newton]
WITH_LR = [BFGS, DFP, Newton]  # SR1 has no lr: its trust region sets the step length

A = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
C = np.array([1.0, -2.0, 0.5])
X0 = np.array([0.3, 0.2, -0.4])


def f64(values):
    return md.tensor(np.asarray(values, dtype=np.float64), dtype="float64", requires_grad=True)


def split(x):
    """``x`` (3 numbers) as the parameters a (2 entries) and b (1 entry)."""
    return f64(x[:2]), f64(x[2:])


def joined(a, b):
    return np.concatenate([a.numpy(), b.numpy()])


def quad(p):
    x = md.concatenate([p[0], p[1]])
    return 0.5 * (x @ md.tensor(A) @ x) - md.tensor(C) @ x


def rosen3(p):  # Rosenbrock over (a₀, a₁, b₀): couples the groups
    x = md.concatenate([p[0], p[1]])
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def two_groups(a, b, lr_b=None):
    second = {"params": [b]} if lr_b is None else {"params": [b], "lr": lr_b}
    return [{"params": [a]}, second]


def dense_opts(cls):
    kw = {"max_iter": 4, "tolerance_grad": 0.0, "tolerance_change": 0.0}
    return kw if cls is SR1 else {**kw, "lr": 0.5}


# ------------------------------------------------------------------------------- dense: groups = one
@pytest.mark.parametrize("cls", DENSE, ids=lambda c: c.__name__)
def test_dense_two_groups_follow_the_one_group_trajectory_bitwise(cls):
    a1, b1 = split([-1.2, 1.0, 0.8])
    a2, b2 = split([-1.2, 1.0, 0.8])
    one = cls([a1, b1], **dense_opts(cls))
    two = cls(two_groups(a2, b2), **dense_opts(cls))
    for _ in range(3):
        assert float(one.step(rosen3)) == float(two.step(rosen3))
    assert joined(a1, b1).tobytes() == joined(a2, b2).tobytes()
    if cls is not Newton:  # Newton keeps no matrix
        assert one.history["matrix"].numpy().tobytes() == two.history["matrix"].numpy().tobytes()
    assert one.info == two.info


# ------------------------------------------------------------------------------- dense: per-group lr
@pytest.mark.parametrize("cls", [BFGS, DFP], ids=lambda c: c.__name__)
def test_inverse_update_lr_scales_each_block_of_the_direction(cls):
    D = np.array([2.0, 2.0, 0.25])
    a, b = split(X0)
    opt = cls([{"params": [a], "lr": 2.0}, {"params": [b], "lr": 0.25}], max_iter=1)
    g0 = A @ X0 - C
    opt.step(quad)  # first iteration: d = −D g, first trial α = min(1, 1/‖g‖₁), accepted here
    x1 = joined(a, b)
    np.testing.assert_allclose(x1 - X0, min(1.0, 1 / np.abs(g0).sum()) * (-D * g0), rtol=0, atol=1e-12)
    assert opt.info["func_evals"] == 2

    s, y = x1 - X0, A @ (x1 - X0)  # then H₁ from the pair and d = −D H₁ g₁ (a line search along it)
    rho = 1 / (s @ y)
    if cls is BFGS:
        V = np.eye(3) - rho * np.outer(s, y)
        H1 = V @ V.T + rho * np.outer(s, s)
    else:
        H1 = np.eye(3) - np.outer(y, y) / (y @ y) + rho * np.outer(s, s)
    g1 = A @ x1 - C
    opt.step(quad)
    step, d = joined(a, b) - x1, -D * (H1 @ g1)
    alpha = (step @ d) / (d @ d)
    assert alpha > 0
    np.testing.assert_allclose(step, alpha * d, rtol=0, atol=1e-12)


def test_newton_lr_scales_each_block_of_the_newton_step():
    D = np.array([1.0, 1.0, 0.25])
    a, b = split(X0)
    opt = Newton(two_groups(a, b, lr_b=0.25), max_iter=1)
    opt.step(quad)  # α = 1 meets the strong Wolfe conditions along D·(−A⁻¹g) on this quadratic
    expected = X0 - D * np.linalg.solve(A, A @ X0 - C)
    np.testing.assert_allclose(joined(a, b), expected, rtol=0, atol=1e-12)


HC = np.array([[1.0, 0.9], [0.9, 1.0]])  # the inverse Hessian of ½xᵀHC⁻¹x
G_BAD = np.array([1.0, -0.5])  # gᵀ D HC g = 0.55 − 0.2·10 < 0 for D = diag(1, 10): not a descent direction


@pytest.mark.parametrize("cls", [BFGS, Newton], ids=lambda c: c.__name__)
def test_a_scaled_direction_that_does_not_descend_falls_back_to_minus_d_g(cls):
    D, Ainv = np.array([1.0, 10.0]), HC
    x0 = Ainv @ G_BAD  # so that g = A x0 = G_BAD
    a, b = f64(x0[:1]), f64(x0[1:])
    opt = cls(two_groups(a, b, lr_b=10.0), max_iter=1)
    if cls is BFGS:
        opt.history["matrix"] = md.tensor(Ainv.copy())  # the exact inverse Hessian, positive definite
    At = md.tensor(np.linalg.inv(Ainv))
    opt.step(lambda p: 0.5 * (md.concatenate(p) @ At @ md.concatenate(p)))
    step, d = joined(a, b) - x0, -D * G_BAD
    alpha = (step @ d) / (d @ d)
    assert alpha > 0
    np.testing.assert_allclose(step, alpha * d, rtol=0, atol=1e-12)
    if cls is BFGS:  # H was positive definite: kept (and updated), not reset
        assert opt.history["matrix"] is not None


@pytest.mark.parametrize("cls", WITH_LR, ids=lambda c: c.__name__)
def test_lr_zero_freezes_a_group_and_the_rest_converges(cls):
    a, b = split(X0)
    opt = cls(two_groups(a, b, lr_b=0.0), max_iter=100, tolerance_grad=1e-10, tolerance_change=0.0)
    opt.step(quad)
    assert b.numpy().tobytes() == X0[2:].tobytes()
    # the minimizer over a with b fixed; the frozen group's gradient does not hold up the stop test
    expected = np.linalg.solve(A[:2, :2], C[:2] - A[:2, 2] * X0[2])
    np.testing.assert_allclose(a.numpy(), expected, rtol=0, atol=1e-9)
    assert opt.info["reason"] == "gradient below tolerance_grad"


@pytest.mark.parametrize("cls", WITH_LR, ids=lambda c: c.__name__)
def test_every_group_frozen_takes_no_iteration(cls):
    a, b = split(X0)
    opt = cls([{"params": [a], "lr": 0.0}, {"params": [b], "lr": 0.0}])
    opt.step(quad)
    assert joined(a, b).tobytes() == X0.tobytes()
    assert opt.info["reason"] == "every parameter group has lr = 0" and opt.info["iterations"] == 0


# ------------------------------------------------------------------------------- dense: joint settings
@pytest.mark.parametrize(
    "cls, key, value, default",
    [
        (BFGS, "tolerance_grad", 1e-5, 1e-7),
        (DFP, "c2", 0.5, 0.9),
        (SR1, "radius", 2.0, 1.0),
        (SR1, "r_skip", 1e-6, 1e-8),
        (Newton, "eigenvalue_floor", 1e-4, 1e-8),
        (BFGS, "max_params", 10, 5000),
    ],
)
def test_dense_joint_settings_that_differ_are_refused_naming_them(cls, key, value, default):
    a, b = split(X0)
    message = rf"{cls.__name__}: the setting '{key}' must be the same in every parameter group.*group 0 has {default!r}, group 1 has {value!r}"
    with pytest.raises(ValueError, match=message):
        cls([{"params": [a]}, {"params": [b], key: value}])
    opt = cls([a])
    opt.step(lambda p: quad([p[0], md.tensor(X0[2:])]))
    before, n, matrix = opt.state_dict(), opt.n, opt.history["matrix"]
    with pytest.raises(ValueError, match=message):
        opt.add_param_group({"params": [b], key: value})
    assert len(opt.param_groups) == 1 and opt.n == n == 2 and opt.history["matrix"] is matrix
    assert opt.state_dict() == before and id(b) not in opt.state


def test_sr1_has_no_per_group_setting():
    a, b = split(X0)
    with pytest.raises(TypeError, match=r"SR1: unknown setting\(s\) \['lr'\] in parameter group 1"):
        SR1([{"params": [a]}, {"params": [b], "lr": 0.5}])


@pytest.mark.parametrize("cls", DENSE, ids=lambda c: c.__name__)
def test_max_params_counts_every_group(cls):
    a, b = f64(np.zeros(3)), f64(np.zeros(3))
    with pytest.raises(ValueError, match="6 parameters is above the limit max_params=5"):
        cls(two_groups(a, b), max_params=5)
    opt = cls([a], max_params=5)
    with pytest.raises(ValueError, match="6 parameters is above the limit max_params=5"):
        opt.add_param_group({"params": [b]})
    assert len(opt.param_groups) == 1 and opt.n == 3


def test_dense_load_state_dict_refuses_differing_joint_settings_and_changes_nothing():
    a, b = split(X0)
    opt = BFGS(two_groups(a, b, lr_b=0.5), max_iter=2)
    opt.step(quad)
    saved = opt.state_dict()
    saved["param_groups"][1]["c1"] = 1e-3
    before = opt.state_dict()
    with pytest.raises(ValueError, match=r"'c1' must be the same.*group 0 has 0.0001, group 1 has 0.001"):
        opt.load_state_dict(saved)
    assert opt.state_dict() == before


# ------------------------------------------------------------------------------- dense: add_param_group
@pytest.mark.parametrize("cls", DENSE, ids=lambda c: c.__name__)
def test_add_param_group_restarts_the_curvature_model(cls):
    kw = dense_opts(cls)
    a, b = split([-1.2, 1.0, 0.8])
    b.requires_grad_(False)  # not optimized at first: the closure sees its value
    opt = cls([a], **kw)
    loss = lambda p: rosen3([p[0], b.detach()] if len(p) == 1 else p)  # noqa: E731
    for _ in range(2):
        opt.step(loss)
    if cls is not Newton:  # Newton keeps no matrix
        assert opt.history["matrix"].shape == (2, 2)
    b.requires_grad_(True)
    group_b = {"params": [b]} if cls is SR1 else {"params": [b], "lr": 0.25}
    opt.add_param_group(group_b)
    assert opt.history["matrix"] is None and opt.n == 3 and opt.steps == 2
    if cls is SR1:
        assert opt.history["radius"] == 1.0

    a2, b2 = f64(a.numpy()), f64(b.numpy())  # a new optimizer from the same point takes the same step
    fresh = cls([{"params": [a2]}, {**group_b, "params": [b2]}], **kw)
    opt.step(rosen3)
    fresh.step(rosen3)
    assert joined(a, b).tobytes() == joined(a2, b2).tobytes()
    if cls is not Newton:
        assert opt.history["matrix"].numpy().tobytes() == fresh.history["matrix"].numpy().tobytes()


# ------------------------------------------------------------------------------- dense: checkpoints
@pytest.mark.parametrize("cls", DENSE, ids=lambda c: c.__name__)
def test_dense_state_dict_with_two_groups_resumes_bitwise(cls):
    kw = {**dense_opts(cls), "max_iter": 3}

    def make(a, b):
        return cls(two_groups(a, b) if cls is SR1 else two_groups(a, b, lr_b=0.5), **kw)

    a, b = split([-1.2, 1.0, 0.8])
    opt = make(a, b)
    for _ in range(2):
        opt.step(rosen3)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    values = joined(a, b).copy()
    for _ in range(3):
        opt.step(rosen3)

    a2, b2 = split(values)
    fresh = make(a2, b2)
    fresh.load_state_dict(saved)
    for _ in range(3):
        fresh.step(rosen3)
    assert joined(a, b).tobytes() == joined(a2, b2).tobytes()
    assert fresh.state_dict() == opt.state_dict()


# ------------------------------------------------------------------------------- NG, HF, LM
RNG = np.random.default_rng(0)
XS = RNG.normal(size=(6, 2))
ONEHOT = np.eye(3)[[0, 1, 2, 1, 0, 2]]
W0, B0 = RNG.normal(size=(2, 3)) * 0.5, RNG.normal(size=3) * 0.1
T = np.linspace(0.0, 1.0, 7)
OBS = 2.0 * np.exp(-1.5 * T) + 0.05 * np.sin(9 * T)


def logits(ps):
    return md.tensor(XS) @ ps[0] + ps[1]


def mean_ce(z):
    return -(md.log_softmax(z, axis=-1) * md.tensor(ONEHOT)).sum() / 6.0


def residual(ps):  # a·exp(k·t) + c − obs with a, k in one tensor and c in another
    return ps[0][0] * md.exp(ps[0][1] * md.tensor(T)) + ps[1][0] - md.tensor(OBS)


def problem(which):
    """``(params, closure)`` for the method ``which``."""
    if which == "lm":
        return [f64([1.0, -1.0]), f64([0.1])], residual
    return [f64(W0), f64(B0)], (logits, mean_ce)


def make(which, groups, **kw):
    if which == "ng":
        return NaturalGradient(groups, damping=0.1, adapt_damping=True, max_cg_iter=4, **kw)
    if which == "ng-sampled":
        return NaturalGradient(
            groups, damping=0.1, fisher="sampled", n_samples=2, seed=3, max_cg_iter=4, **kw
        )
    if which == "hf":
        return HessianFree(groups, damping=0.5, max_cg_iter=4, **kw)
    return LevenbergMarquardt(groups, damping=0.5, max_cg_iter=4, **kw)


CG_METHODS = ["ng", "ng-sampled", "hf", "lm"]


@pytest.mark.parametrize("which", CG_METHODS)
def test_cg_methods_two_groups_follow_the_one_group_trajectory_bitwise(which):
    ps1, closure = problem(which)
    ps2, _ = problem(which)
    one = make(which, ps1)
    two = make(which, [{"params": [ps2[0]]}, {"params": [ps2[1]]}])
    for _ in range(4):
        assert float(one.step(closure)) == float(two.step(closure))
    for p, q in zip(ps1, ps2):
        assert p.numpy().tobytes() == q.numpy().tobytes()
    assert two.info["damping"] == [one.info["damping"][0]] * 2


def dense_ce():
    """Fisher (= GGN for softmax CE) and gradient of the mean CE at (W0, B0), parameters [W, b] flat."""
    z = XS @ W0 + B0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    F, g = np.zeros((9, 9)), np.zeros(9)
    for i in range(6):
        J = np.hstack([np.kron(XS[i][None, :], np.eye(3)), np.eye(3)])
        F += J.T @ (np.diag(p[i]) - np.outer(p[i], p[i])) @ J / 6
        g += J.T @ (p[i] - ONEHOT[i]) / 6
    return F, g


@pytest.mark.parametrize("cls", [NaturalGradient, HessianFree])
def test_ng_and_hf_step_is_lr_times_the_block_damped_solve(cls):
    W, b = f64(W0), f64(B0)
    groups = [{"params": [W], "lr": 0.5, "damping": 0.2}, {"params": [b], "lr": 2.0, "damping": 0.05}]
    extra = {"backtrack": False, "adapt_damping": False} if cls is HessianFree else {}
    opt = cls(groups, max_cg_iter=30, cg_tol=1e-14, **extra)
    opt.step((logits, mean_ce))
    F, g = dense_ce()
    lam, lr = np.repeat([0.2, 0.05], [6, 3]), np.repeat([0.5, 2.0], [6, 3])
    expected = lr * np.linalg.solve(F + np.diag(lam), -g)
    step = np.concatenate([W.numpy().ravel() - W0.ravel(), b.numpy() - B0])
    np.testing.assert_allclose(step, expected, rtol=0, atol=1e-10)


def test_lm_step_is_lr_times_the_block_damped_solve():
    th, c = f64([1.0, -1.0]), f64([0.1])
    groups = [{"params": [th], "damping": 0.3}, {"params": [c], "damping": 0.05, "lr": 0.5}]
    opt = LevenbergMarquardt(groups, cg_tol=1e-14)
    opt.step(residual)
    x0 = md.tensor([1.0, -1.0, 0.1])
    J = md.jacfwd(lambda x: residual([x[:2], x[2:]]))(x0).numpy()
    r = residual([x0[:2], x0[2:]]).numpy()
    delta = np.linalg.solve(J.T @ J + np.diag([0.3, 0.3, 0.05]), -J.T @ r)
    assert opt.info["accepted"]
    np.testing.assert_allclose(joined(th, c) - x0.numpy(), [1, 1, 0.5] * delta, rtol=0, atol=1e-10)
    assert opt.info["damping"][0] / opt.info["damping"][1] == pytest.approx(6.0, rel=1e-15)


@pytest.mark.parametrize("which", CG_METHODS)
def test_cg_methods_state_dict_with_two_groups_resumes_bitwise(which):
    def build(ps):
        return make(which, [{"params": [ps[0]], "lr": 0.8}, {"params": [ps[1]], "damping": 1.0}])

    ps, closure = problem(which)
    opt = build(ps)
    for _ in range(2):
        opt.step(closure)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    values = [p.numpy().copy() for p in ps]
    for _ in range(2):
        opt.step(closure)
    qs = [f64(v) for v in values]
    fresh = build(qs)
    fresh.load_state_dict(saved)
    for _ in range(2):
        fresh.step(closure)
    for p, q in zip(ps, qs):
        assert p.numpy().tobytes() == q.numpy().tobytes()
    assert fresh.state_dict() == opt.state_dict()
    assert [g["damping"] for g in fresh.param_groups] == [g["damping"] for g in opt.param_groups]


def test_hessian_free_add_param_group_starts_cg_from_zero():
    W, b = f64(W0), f64(B0)
    frozen = md.tensor(B0)
    opt = HessianFree([W], damping=0.5, max_cg_iter=4)
    for _ in range(2):
        opt.step((lambda ps: md.tensor(XS) @ ps[0] + (frozen if len(ps) == 1 else ps[1]), mean_ce))
    opt.add_param_group({"params": [b], "damping": 0.25})
    lam = [g["damping"] for g in opt.param_groups]
    W2, b2 = f64(W.numpy()), f64(b.numpy())  # b has no previous direction: no warm start this step
    cold = HessianFree(
        [{"params": [W2], "damping": lam[0]}, {"params": [b2], "damping": lam[1]}],
        max_cg_iter=4,
        warm_start=0.0,
    )
    opt.step((logits, mean_ce))
    cold.step((logits, mean_ce))
    assert W.numpy().tobytes() == W2.numpy().tobytes() and b.numpy().tobytes() == b2.numpy().tobytes()
    assert all("direction" in opt.state[id(p)] for p in (W, b))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")
@pytest.mark.parametrize("which", ["ng", "lm"])
def test_a_non_finite_gradient_names_its_group(which):
    ps, _ = problem(which)
    opt = make(which, [{"params": [ps[0]]}, {"params": [ps[1]]}])
    before = [p.numpy().copy() for p in ps]
    if which == "lm":
        closure = lambda qs: residual(qs) + md.sqrt(qs[1][0] - 0.1)  # noqa: E731
    else:  # sqrt at 0: finite value, infinite derivative in group 1's parameter only
        closure = (lambda qs: logits(qs) + md.sqrt(qs[1] - md.tensor(B0)).sum(), mean_ce)
    with pytest.raises(FloatingPointError, match="parameter 0 of group 1"):
        opt.step(closure)
    assert all(p.numpy().tobytes() == v.tobytes() for p, v in zip(ps, before)) and opt.steps == 0
