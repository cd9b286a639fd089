"""minidiff.optim: first-order methods, Gradient Centralization, schedules, FGD, Newton-CG, the API.

References are written here in NumPy from the update formulas (textbook forms, e.g. Adam's
``m̂/(√v̂+ε)``), with gradients derived by hand, so the optimizers are checked against independent code.
Tolerances: float64 trajectories agree to rtol 1e-10 (the formulas are rearranged, so not bitwise);
checkpoint round trips must be bitwise identical.  L-BFGS has its own file, ``test_optim_lbfgs.py``.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidiff as md
from minidiff.optim import (
    FGD,
    LBFGS,
    SGD,
    Adagrad,
    Adam,
    AdamW,
    CosineAnnealingLR,
    ExponentialLR,
    NewtonCG,
    RMSprop,
    StepLR,
    centralize,
)

RTOL = 1e-10


# ----------------------------------------------------------------------------- problems
def _net_data(seed=0):
    """A tiny two-layer tanh network 3 → 4 → 2 with a mean-squared loss, float64."""
    r = np.random.default_rng(seed)
    init = {
        "W1": r.normal(size=(4, 3)),
        "b1": r.normal(size=4) * 0.1,
        "W2": r.normal(size=(2, 4)),
        "b2": r.normal(size=2) * 0.1,
    }
    X, Y = r.normal(size=(5, 3)), r.normal(size=(5, 2))
    return init, X, Y


NAMES = ["W1", "b1", "W2", "b2"]


def net_grad_np(p, X, Y):
    """Hand-derived backprop of L = ½‖h W2ᵀ + b2 − Y‖²/N, h = tanh(X W1ᵀ + b1)."""
    n = X.shape[0]
    h = np.tanh(X @ p["W1"].T + p["b1"])
    r = (h @ p["W2"].T + p["b2"] - Y) / n
    dh = r @ p["W2"]
    dz = dh * (1 - h**2)
    return {"W1": dz.T @ X, "b1": dz.sum(0), "W2": r.T @ h, "b2": r.sum(0)}


def net_loss_md(p, X, Y):
    h = md.tanh(X @ p[0].T + p[1])
    o = h @ p[2].T + p[3]
    return ((o - Y) ** 2).sum() / (2 * X.shape[0])


def leaves(init):
    return [md.tensor(init[k].copy(), requires_grad=True) for k in NAMES]


def values(params):
    return {k: p.numpy().copy() for k, p in zip(NAMES, params)}


def run_tape(opt_cls, kwargs, steps=4, seed=0):
    """Trajectory of ``opt_cls`` on the net, tape style (zero_grad, backward, step)."""
    init, X, Y = _net_data(seed)
    params = leaves(init)
    Xt, Yt = md.tensor(X), md.tensor(Y)
    opt = opt_cls(params, **kwargs)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        net_loss_md(params, Xt, Yt).backward()
        opt.step()
        out.append(values(params))
    return out


def run_ref(update, steps=4, seed=0):
    """Trajectory of a NumPy reference ``update(name, p, g, state, t) -> new p``."""
    init, X, Y = _net_data(seed)
    p = {k: v.copy() for k, v in init.items()}
    states = {k: {} for k in NAMES}
    out = []
    for t in range(1, steps + 1):
        g = net_grad_np(p, X, Y)
        p = {k: update(k, p[k], g[k], states[k], t) for k in NAMES}
        out.append({k: v.copy() for k, v in p.items()})
    return out


def gc_np(g, conv_only=False):
    if g.ndim <= (3 if conv_only else 1):
        return g
    return g - g.mean(axis=tuple(range(1, g.ndim)), keepdims=True)


# ----------------------------------------------------------------------------- NumPy references
def ref_sgd(lr, momentum=0.0, dampening=0.0, wd=0.0, nesterov=False, gc=None):
    def update(name, p, g, s, t):
        g = g + wd * p
        if gc == "grad":
            g = gc_np(g)
        if momentum:
            s["b"] = g.copy() if "b" not in s else momentum * s["b"] + (1 - dampening) * g
            g = g + momentum * s["b"] if nesterov else s["b"]
        if gc == "update":
            g = gc_np(g)
        return p - lr * g

    return update


def ref_adam(lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False, gc=None):
    def update(name, p, g, s, t):
        if not decoupled:
            g = g + wd * p
        if gc == "grad":
            g = gc_np(g)
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        mhat, vhat = s["m"] / (1 - b1**t), s["v"] / (1 - b2**t)
        d = mhat / (np.sqrt(vhat) + eps)
        if decoupled:
            d = d + wd * p
        if gc == "update":
            d = gc_np(d)
        return p - lr * d

    return update


def ref_adagrad(lr, lr_decay=0.0, wd=0.0, init=0.0, eps=1e-10, gc=None):
    def update(name, p, g, s, t):
        g = g + wd * p
        if gc == "grad":
            g = gc_np(g)
        s["s"] = s.get("s", init) + g * g
        d = g / (np.sqrt(s["s"]) + eps)
        if gc == "update":
            d = gc_np(d)
        return p - lr / (1 + (t - 1) * lr_decay) * d

    return update


def ref_rmsprop(lr, alpha=0.99, eps=1e-8, wd=0.0, momentum=0.0, centered=False, gc=None):
    def update(name, p, g, s, t):
        g = g + wd * p
        if gc == "grad":
            g = gc_np(g)
        s["v"] = alpha * s.get("v", 0.0) + (1 - alpha) * g * g
        v = s["v"]
        if centered:
            s["ga"] = alpha * s.get("ga", 0.0) + (1 - alpha) * g
            v = v - s["ga"] ** 2
        d = g / (np.sqrt(v) + eps)
        if momentum:
            s["b"] = momentum * s.get("b", 0.0) + d
            d = s["b"]
        if gc == "update":
            d = gc_np(d)
        return p - lr * d

    return update


CASES = [
    ("sgd", SGD, dict(lr=0.1), ref_sgd(0.1)),
    ("sgd-momentum", SGD, dict(lr=0.1, momentum=0.9), ref_sgd(0.1, 0.9)),
    ("sgd-dampening-wd", SGD, dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.05),
     ref_sgd(0.1, 0.8, 0.3, 0.05)),
    ("sgd-nesterov-wd", SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
     ref_sgd(0.05, 0.9, 0.0, 1e-2, True)),
    ("sgd-gc-grad", SGD, dict(lr=0.1, momentum=0.9, weight_decay=5e-4, centralize="grad"),
     ref_sgd(0.1, 0.9, 0.0, 5e-4, gc="grad")),
    ("sgd-gc-update", SGD, dict(lr=0.1, momentum=0.9, centralize="update"), ref_sgd(0.1, 0.9, gc="update")),
    ("adam", Adam, dict(lr=0.01), ref_adam(0.01)),
    ("adam-betas-wd", Adam, dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
     ref_adam(0.02, 0.8, 0.95, 1e-6, 0.1)),
    ("adam-gc-grad", Adam, dict(lr=0.01, centralize="grad"), ref_adam(0.01, gc="grad")),
    ("adam-gc-update", Adam, dict(lr=0.01, weight_decay=0.1, centralize="update"),
     ref_adam(0.01, wd=0.1, gc="update")),
    ("adamw", AdamW, dict(lr=0.01, weight_decay=0.1), ref_adam(0.01, wd=0.1, decoupled=True)),
    ("adamw-gc-update", AdamW, dict(lr=0.01, weight_decay=0.1, centralize="update"),
     ref_adam(0.01, wd=0.1, decoupled=True, gc="update")),
    ("adagrad", Adagrad, dict(lr=0.1), ref_adagrad(0.1)),
    ("adagrad-all", Adagrad, dict(lr=0.1, lr_decay=0.5, weight_decay=0.1, initial_accumulator_value=0.2,
                                  centralize="grad"), ref_adagrad(0.1, 0.5, 0.1, 0.2, gc="grad")),
    ("adagrad-gc-update", Adagrad, dict(lr=0.1, centralize="update"), ref_adagrad(0.1, gc="update")),
    ("rmsprop", RMSprop, dict(lr=0.01), ref_rmsprop(0.01)),
    ("rmsprop-all", RMSprop, dict(lr=0.01, alpha=0.9, weight_decay=0.1, momentum=0.5, centered=True),
     ref_rmsprop(0.01, 0.9, 1e-8, 0.1, 0.5, True)),
    ("rmsprop-gc", RMSprop, dict(lr=0.01, momentum=0.5, centralize="update"),
     ref_rmsprop(0.01, momentum=0.5, gc="update")),
]  # fmt: skip


@pytest.mark.parametrize("name,cls,kwargs,ref", CASES, ids=[c[0] for c in CASES])
def test_first_steps_match_the_numpy_reference(name, cls, kwargs, ref):
    got, want = run_tape(cls, kwargs), run_ref(ref)
    moved = False
    for step_got, step_want in zip(got, want):
        for k in NAMES:
            np.testing.assert_allclose(
                step_got[k], step_want[k], rtol=RTOL, atol=1e-13, err_msg=f"{name} {k}"
            )
    init = _net_data()[0]
    moved = all(not np.allclose(got[-1][k], init[k]) for k in NAMES)
    assert moved


def test_first_adam_step_is_lr_times_sign():
    """Bias correction: the first Adam step is lr·g/(|g|+ε) ≈ lr·sign(g) whatever the scale of g."""
    w = md.tensor([1e-3, -50.0, 7.0], requires_grad=True)
    opt = Adam([w], lr=0.01)
    (w * w * md.tensor([1.0, 2.0, 3.0])).sum().backward()
    opt.step()
    np.testing.assert_allclose(w.numpy(), [1e-3 - 0.01, -50.0 + 0.01, 7.0 - 0.01], rtol=0, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple),
    cls_name=st.sampled_from(["SGD", "Adam", "AdamW", "Adagrad", "RMSprop"]),
    lr=st.floats(1e-3, 0.5),
    wd=st.sampled_from([0.0, 0.01]),
    gc=st.sampled_from([None, "grad", "update"]),
    seed=st.integers(0, 2**16),
)
def test_quadratic_of_any_shape_matches_the_reference(shape, cls_name, lr, wd, gc, seed):
    """f(W) = ½ Σ D⊙W² + Σ B⊙W, gradient D⊙W + B, for W of any shape and any settings."""
    r = np.random.default_rng(seed)
    D, B, W0 = r.uniform(0.5, 2, size=shape), r.normal(size=shape), r.normal(size=shape)
    refs = {
        "SGD": (dict(momentum=0.9), lambda: ref_sgd(lr, 0.9, wd=wd, gc=gc)),
        "Adam": ({}, lambda: ref_adam(lr, wd=wd, gc=gc)),
        "AdamW": ({}, lambda: ref_adam(lr, wd=wd, decoupled=True, gc=gc)),
        "Adagrad": ({}, lambda: ref_adagrad(lr, wd=wd, gc=gc)),
        "RMSprop": (dict(momentum=0.5), lambda: ref_rmsprop(lr, wd=wd, momentum=0.5, gc=gc)),
    }
    extra, make = refs[cls_name]
    cls = getattr(md.optim, cls_name)
    w = md.tensor(W0.copy(), requires_grad=True)
    opt = cls([w], lr=lr, weight_decay=wd, centralize=gc, **extra)
    ref, p, s = make(), W0.copy(), {}
    Dt, Bt = md.tensor(D), md.tensor(B)
    for t in range(1, 4):
        opt.zero_grad()
        (0.5 * (Dt * w * w).sum() + (Bt * w).sum()).backward()
        opt.step()
        p = ref("W", p, D * p + B, s, t)
        np.testing.assert_allclose(w.numpy(), p, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- parameter groups
def test_parameter_groups_keep_their_own_settings():
    init, X, Y = _net_data()
    params = leaves(init)
    opt = SGD(
        [{"params": params[:2]}, {"params": params[2:], "lr": 0.01, "momentum": 0.5, "weight_decay": 0.1}],
        lr=0.1,
        momentum=0.9,
    )
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    Xt, Yt = md.tensor(X), md.tensor(Y)
    first, second = ref_sgd(0.1, 0.9), ref_sgd(0.01, 0.5, wd=0.1)
    p = {k: v.copy() for k, v in init.items()}
    s = {k: {} for k in NAMES}
    for t in range(1, 4):
        opt.zero_grad()
        net_loss_md(params, Xt, Yt).backward()
        opt.step()
        g = net_grad_np(p, X, Y)
        p = {k: (first if k in ("W1", "b1") else second)(k, p[k], g[k], s[k], t) for k in NAMES}
        for k, q in zip(NAMES, params):
            np.testing.assert_allclose(q.numpy(), p[k], rtol=RTOL)


def test_add_param_group_and_parameters_without_gradient():
    a, b = md.tensor([1.0], requires_grad=True), md.tensor([2.0], requires_grad=True)
    opt = SGD([a], lr=0.5)
    opt.add_param_group({"params": b, "lr": 0.25})
    with pytest.raises(ValueError, match="given twice"):
        opt.add_param_group({"params": [a]})
    (a * a).sum().backward()  # b gets no gradient and must stay where it is
    opt.step()
    assert a.item() == 0.0 and b.item() == 2.0


def test_a_model_sees_the_update():
    model = md.nn.Sequential(md.nn.Linear(3, 2, rng=md.random.Generator(0), dtype="float64"))
    model.requires_grad_()
    opt = SGD(model.parameters(), lr=0.1)
    before = model[0].weight.numpy().copy()
    x = md.tensor(np.ones((4, 3)))
    (model(x) ** 2).sum().backward()
    g = model.grads()["0"]["weight"].numpy()
    opt.step()
    np.testing.assert_allclose(model[0].weight.numpy(), before - 0.1 * g, rtol=1e-14)


# ----------------------------------------------------------------------------- Gradient Centralization
@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=5).map(tuple), conv_only=st.booleans())
def test_centralized_gradient_has_zero_mean_over_non_output_axes(shape, conv_only):
    g = np.random.default_rng(sum(shape)).normal(size=shape) + 3.0
    c = centralize(md.tensor(g), conv_only=conv_only).numpy()
    if len(shape) <= (3 if conv_only else 1):
        np.testing.assert_array_equal(c, g)  # biases (and, for GCC, dense weights) untouched
    else:
        axes = tuple(range(1, len(shape)))
        np.testing.assert_allclose(c.mean(axis=axes), 0.0, atol=1e-13)
        np.testing.assert_allclose(c, g - g.mean(axis=axes, keepdims=True), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (SGD, dict(lr=0.2, centralize="grad")),
        (SGD, dict(lr=0.2, momentum=0.9, weight_decay=1e-2, centralize="grad")),
        (Adam, dict(lr=0.05, centralize="update")),
        (AdamW, dict(lr=0.05, weight_decay=0.1, centralize="update")),
    ],
)
def test_weight_means_stay_at_their_initial_values_and_biases_are_plain(cls, kwargs):
    steps = 8
    gc = run_tape(cls, kwargs, steps=steps)
    plain = run_tape(cls, {**kwargs, "centralize": None}, steps=1)
    init = _net_data()[0]
    for k in ("W1", "W2"):
        np.testing.assert_allclose(gc[-1][k].mean(axis=1), init[k].mean(axis=1), rtol=0, atol=1e-12)
        assert not np.allclose(gc[-1][k], init[k])  # yet the weights moved
    for k in ("b1", "b2"):  # the first step of a bias does not depend on the weights' centralization
        np.testing.assert_allclose(gc[0][k], plain[0][k], rtol=1e-14)
    # without GC the means do move (so the test above can fail)
    free = run_tape(cls, {**kwargs, "centralize": None}, steps=steps)
    assert not np.allclose(free[-1]["W1"].mean(axis=1), init["W1"].mean(axis=1), atol=1e-6)


def test_gcc_only_touches_convolution_weights():
    F = md.nn.functional
    r = np.random.default_rng(3)
    x, y = md.tensor(r.normal(size=(2, 1, 5, 5))), md.tensor(r.integers(0, 3, 2))
    w0 = {"k": r.normal(size=(2, 1, 3, 3)), "kb": r.normal(size=2), "d": r.normal(size=(3, 18))}

    def run(centralize, conv_only):
        ps = {k: md.tensor(v.copy(), requires_grad=True) for k, v in w0.items()}
        opt = SGD(list(ps.values()), lr=0.1, centralize=centralize, conv_only=conv_only)
        for _ in range(3):
            opt.zero_grad()
            h = md.relu(F.conv2d(x, ps["k"], ps["kb"])).reshape(2, -1)
            F.cross_entropy(h @ ps["d"].T, y).backward()
            opt.step()
        return {k: v.numpy() for k, v in ps.items()}

    gcc, plain, gc = run("grad", True), run(None, False), run("grad", False)
    np.testing.assert_allclose(gcc["k"].mean(axis=(1, 2, 3)), w0["k"].mean(axis=(1, 2, 3)), atol=1e-13)
    assert not np.allclose(gcc["d"].mean(axis=1), w0["d"].mean(axis=1))  # dense weight not centralized
    np.testing.assert_allclose(gc["d"].mean(axis=1), w0["d"].mean(axis=1), atol=1e-13)  # but GC does
    assert not np.allclose(gcc["k"], plain["k"])


# ----------------------------------------------------------------------------- schedules
def test_schedules_follow_their_formulas_per_group():
    def make():
        a, b = md.zeros(1, requires_grad=True), md.zeros(1, requires_grad=True)
        return SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=2.0)

    cases = [
        (lambda o: StepLR(o, step_size=3, gamma=0.5), lambda base, e: base * 0.5 ** (e // 3)),
        (lambda o: ExponentialLR(o, gamma=0.9), lambda base, e: base * 0.9**e),
        (
            lambda o: CosineAnnealingLR(o, T_max=5, eta_min=0.1),
            lambda base, e: 0.1 + (base - 0.1) * (1 + math.cos(math.pi * e / 5)) / 2,
        ),
    ]
    for build, formula in cases:
        opt = make()
        sched = build(opt)
        for epoch in range(8):
            want = [formula(2.0, epoch), formula(0.5, epoch)]
            np.testing.assert_allclose([g["lr"] for g in opt.param_groups], want, rtol=1e-14)
            assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
            sched.step()
    # cosine reaches eta_min at T_max
    opt = make()
    sched = CosineAnnealingLR(opt, T_max=4, eta_min=0.1)
    for _ in range(4):
        sched.step()
    np.testing.assert_allclose(sched.get_last_lr(), [0.1, 0.1], rtol=1e-14)


def test_schedule_round_trip_and_bad_settings():
    opt = SGD([md.zeros(1, requires_grad=True)], lr=1.0)
    sched = StepLR(opt, step_size=2, gamma=0.1)
    for _ in range(3):
        sched.step()
    saved_opt, saved = opt.state_dict(), pickle.loads(pickle.dumps(sched.state_dict()))
    opt2 = SGD([md.zeros(1, requires_grad=True)], lr=1.0)
    opt2.load_state_dict(saved_opt)
    sched2 = StepLR(opt2, step_size=2, gamma=0.1)
    sched2.load_state_dict(saved)
    for _ in range(4):
        sched.step()
        sched2.step()
        assert sched.get_last_lr() == sched2.get_last_lr()
    with pytest.raises(ValueError, match="step_size"):
        StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="gamma"):
        ExponentialLR(opt, gamma=-1.0)
    with pytest.raises(ValueError, match="T_max"):
        CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(TypeError, match="Optimizer"):
        StepLR(object(), step_size=1)


# ----------------------------------------------------------------------------- FGD and Newton-CG
def test_fgd_steps_match_the_forward_gradient_formula_with_decay():
    init, X, Y = _net_data()
    params = leaves(init)
    Xt, Yt = md.tensor(X), md.tensor(Y)
    opt = FGD(params, lr=0.1, decay=0.5, seed=7)
    rng = md.random.Generator(7)  # the same stream: one normal draw per parameter, in order
    p = {k: v.copy() for k, v in init.items()}
    for i in range(3):
        v = {k: rng.normal(init[k].shape).numpy() for k in NAMES}
        g = net_grad_np(p, X, Y)
        d = sum(float((g[k] * v[k]).sum()) for k in NAMES)
        lr = 0.1 * math.exp(-0.5 * i)
        p = {k: p[k] - lr * d * v[k] for k in NAMES}
        opt.step(lambda q: net_loss_md(q, Xt, Yt))
        for k, q in zip(NAMES, params):
            np.testing.assert_allclose(q.numpy(), p[k], rtol=1e-10, atol=1e-13)
    assert FGD(params).param_groups[0]["lr"] == 2e-4 and FGD(params).param_groups[0]["decay"] == 1e-4


def _spd(n, seed):
    r = np.random.default_rng(seed)
    q = r.normal(size=(n, n))
    return q @ q.T + n * np.eye(n), r.normal(size=n)


def test_newton_cg_solves_a_quadratic_in_one_step():
    A, b = _spd(7, 1)
    x = md.tensor(np.zeros(4), requires_grad=True)
    y = md.tensor(np.ones(3), requires_grad=True)
    At, bt = md.tensor(A), md.tensor(b)

    def f(p):
        z = md.concatenate([p[0], p[1]])
        return 0.5 * (z @ At @ z) - bt @ z

    opt = NewtonCG([x, y], cg_tol=0.0, max_cg_iter=7)
    opt.step(f)
    z = np.concatenate([x.numpy(), y.numpy()])
    np.testing.assert_allclose(z, np.linalg.solve(A, b), rtol=1e-10)
    assert np.linalg.norm(A @ z - b) < 1e-10
    assert opt.info["step_length"] == 1.0 and opt.info["cg_iterations"] <= 7


def test_newton_cg_damping_and_group_lr():
    A, b = _spd(5, 2)
    x = md.tensor(np.zeros(5), requires_grad=True)
    At, bt = md.tensor(A), md.tensor(b)
    opt = NewtonCG([x], lr=0.5, damping=3.0, cg_tol=0.0, max_cg_iter=20, line_search=False)
    opt.step(lambda p: 0.5 * (p[0] @ At @ p[0]) - bt @ p[0])
    np.testing.assert_allclose(x.numpy(), 0.5 * np.linalg.solve(A + 3.0 * np.eye(5), b), rtol=1e-10)


def test_newton_cg_on_an_indefinite_problem_still_descends():
    A = np.diag([2.0, -1.0, 1.0])
    At, bt = md.tensor(A), md.tensor([1.0, 0.5, -1.0])
    f = lambda p: 0.5 * (p[0] @ At @ p[0]) - bt @ p[0] + 0.25 * (p[0] ** 4).sum()
    x = md.tensor([0.1, 0.1, 0.1], requires_grad=True)
    opt = NewtonCG([x])
    losses = [float(opt.step(f)) for _ in range(5)]
    assert all(b < a for a, b in zip(losses, losses[1:]))


def test_newton_cg_converges_on_the_two_layer_net():
    init, X, Y = _net_data()
    params = leaves(init)
    Xt, Yt = md.tensor(X), md.tensor(Y)
    f = lambda p: net_loss_md(p, Xt, Yt)
    opt = NewtonCG(params, damping=1e-6)
    l0 = float(f(params))
    for _ in range(20):
        opt.step(f)
    g = net_grad_np(values(params), X, Y)
    assert float(f(params)) < l0 and max(np.abs(v).max() for v in g.values()) < 1e-6


# ----------------------------------------------------------------------------- checkpoints
def _run_all(make, closure_kind, params, Xt, Yt, opt, steps):
    for _ in range(steps):
        if closure_kind == "tape":
            opt.zero_grad()
            net_loss_md(params, Xt, Yt).backward()
            opt.step()
        elif closure_kind == "torch":

            def closure():
                opt.zero_grad()
                loss = net_loss_md(params, Xt, Yt)
                loss.backward()
                return loss

            opt.step(closure)
        else:
            opt.step(lambda p: net_loss_md(p, Xt, Yt))


ROUND_TRIP = [
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, centralize="grad"), "tape"),
    (SGD, dict(lr=0.1, momentum=0.5, dampening=0.5), "torch"),
    (Adam, dict(lr=0.01, centralize="update"), "tape"),
    (AdamW, dict(lr=0.01), "functional"),
    (Adagrad, dict(lr=0.1, lr_decay=0.1), "tape"),
    (RMSprop, dict(lr=0.01, momentum=0.9, centered=True), "tape"),
    (LBFGS, dict(max_iter=3), "torch"),
    (LBFGS, dict(max_iter=2, history_size=3), "functional"),
    (NewtonCG, dict(max_cg_iter=3, damping=1e-3), "functional"),
    (FGD, dict(lr=0.05, seed=3), "functional"),
]


@pytest.mark.parametrize("cls,kwargs,kind", ROUND_TRIP, ids=[f"{c[0].__name__}-{c[2]}" for c in ROUND_TRIP])
def test_interrupted_and_resumed_run_is_bitwise_identical(cls, kwargs, kind):
    init, X, Y = _net_data()
    Xt, Yt = md.tensor(X), md.tensor(Y)
    whole = leaves(init)
    opt = cls(whole, **kwargs)
    sched = StepLR(opt, step_size=2, gamma=0.5) if cls is SGD else None
    for _ in range(6):
        _run_all(None, kind, whole, Xt, Yt, opt, 1)
        if sched:
            sched.step()

    part = leaves(init)
    opt = cls(part, **kwargs)
    sched = StepLR(opt, step_size=2, gamma=0.5) if cls is SGD else None
    for _ in range(3):
        _run_all(None, kind, part, Xt, Yt, opt, 1)
        if sched:
            sched.step()
    saved = pickle.dumps((values(part), opt.state_dict(), sched.state_dict() if sched else None))
    del part, opt, sched
    vals, state, sched_state = pickle.loads(saved)
    resumed = leaves(vals)  # new parameters and a new optimizer built with other settings
    opt = cls(resumed, **{**kwargs, "lr": 0.123})
    opt.load_state_dict(state)
    sched = None
    if sched_state is not None:
        sched = StepLR(opt, step_size=2, gamma=0.5)
        sched.load_state_dict(sched_state)
        opt.load_state_dict(state)  # the scheduler's constructor set lr; the saved one wins
    for _ in range(3):
        _run_all(None, kind, resumed, Xt, Yt, opt, 1)
        if sched:
            sched.step()
    for k, a, b in zip(NAMES, whole, resumed):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    assert not np.array_equal(whole[0].numpy(), init["W1"])


def test_state_lives_on_the_parameter_device(fake_device):
    w = md.tensor([1.0, 2.0], device="fake", requires_grad=True)
    opt = Adam([w], lr=0.1)
    (w * w).sum().backward()
    opt.step()
    assert opt.state[id(w)]["exp_avg"].device is fake_device and w.device is fake_device
    saved = opt.state_dict()
    assert isinstance(saved["state"][0]["exp_avg"].array, np.ndarray)
    fresh = Adam([w], lr=0.1)
    fresh.load_state_dict(saved)
    assert fresh.state[id(w)]["exp_avg_sq"].device is fake_device


def test_load_state_dict_checks_the_layout_first():
    a = md.zeros(2, requires_grad=True)
    opt = Adam([a], lr=0.1)
    (a * a + a).sum().backward()
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="saved by Adam"):
        SGD([a], lr=0.1).load_state_dict(saved)
    other = Adam([md.zeros(3, requires_grad=True)], lr=0.5)
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(saved)
    assert other.param_groups[0]["lr"] == 0.5 and other.steps == 0
    with pytest.raises(ValueError, match="groups"):
        Adam([a, md.zeros(1, requires_grad=True)]).load_state_dict(saved)
    bad = pickle.loads(pickle.dumps(saved))
    bad["param_groups"][0]["lr"] = -1.0
    fresh = Adam([a], lr=0.5)
    with pytest.raises(ValueError, match="lr"):
        fresh.load_state_dict(bad)
    assert fresh.param_groups[0]["lr"] == 0.5 and not fresh.state[id(a)]


# ----------------------------------------------------------------------------- bad input
ALL = [SGD, Adam, AdamW, Adagrad, RMSprop, LBFGS, NewtonCG, FGD]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_negative_learning_rate_is_refused(cls):
    with pytest.raises(ValueError, match=r"lr must be a number >= 0, got -0.1"):
        cls([md.zeros(2, requires_grad=True)], lr=-0.1)
    with pytest.raises(ValueError, match="lr"):
        cls([{"params": [md.zeros(2, requires_grad=True)], "lr": float("nan")}])


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("betas", [(1.0, 0.999), (0.9, 1.0), (-0.1, 0.9), (0.9,), (0.9, 1.5)])
def test_betas_outside_the_unit_interval_are_refused(cls, betas):
    with pytest.raises(ValueError, match=r"betas(\[\d\])? must be (a pair|a number in \[0, 1\))"):
        cls([md.zeros(2, requires_grad=True)], betas=betas)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_a_parameter_given_twice_is_refused(cls):
    w = md.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"shape \(2,\) is given twice"):
        cls([w, md.zeros(1, requires_grad=True), w])
    if cls is not LBFGS:
        with pytest.raises(ValueError, match="given twice"):
            cls([{"params": [w]}, {"params": [w]}])


@pytest.mark.parametrize("cls", [LBFGS, NewtonCG, FGD], ids=lambda c: c.__name__)
def test_a_missing_closure_is_refused_with_parameters_untouched(cls):
    w = md.tensor([1.0, 2.0], requires_grad=True)
    opt = cls([w])
    (w * w).sum().backward()
    with pytest.raises(TypeError, match="closure|step\\(f\\)"):
        opt.step()
    assert w.tolist() == [1.0, 2.0] and opt.steps == 0


@pytest.mark.parametrize("cls", [NewtonCG, FGD], ids=lambda c: c.__name__)
def test_methods_needing_f_refuse_a_tape_style_closure(cls):
    w = md.tensor([1.0, 2.0], requires_grad=True)
    opt = cls([w])

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with pytest.raises(TypeError, match="functional closure"):
        opt.step(closure)
    assert w.tolist() == [1.0, 2.0]


NONFINITE = [
    (SGD, dict(lr=0.1, momentum=0.9)),
    (Adam, {}),
    (AdamW, {}),
    (Adagrad, {}),
    (RMSprop, dict(momentum=0.9)),
    (LBFGS, {}),
    (NewtonCG, {}),
    (FGD, dict(lr=0.1)),
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy warns about the inf·0 made on purpose
@pytest.mark.parametrize("cls,kwargs", NONFINITE, ids=[c[0].__name__ for c in NONFINITE])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradients_are_refused_with_everything_untouched(cls, kwargs, bad):
    w = md.tensor([1.0, 2.0], requires_grad=True)
    v = md.tensor([[0.5, 0.5], [1.0, -1.0]], requires_grad=True)
    opt = cls([w, v], **kwargs)
    scale = md.tensor([1.0, bad])
    # first a finite step, so there is state to keep untouched
    good = lambda p: (p[0] * p[0]).sum() + (p[1] * p[1]).sum()
    if cls in (SGD, Adam, AdamW, Adagrad, RMSprop):
        opt.zero_grad()
        good([w, v]).backward()
        opt.step()
    else:
        opt.step(good)
    before = pickle.dumps((w.tolist(), v.tolist(), opt.state_dict()))
    f = lambda p: (p[0] * p[0] * scale).sum() + (p[1] * p[1]).sum()
    with pytest.raises(FloatingPointError, match=r"not finite.*no parameter was changed"):
        if cls in (SGD, Adam, AdamW, Adagrad, RMSprop):
            opt.zero_grad()
            f([w, v]).backward()
            opt.step()
        else:
            opt.step(f)
    assert pickle.dumps((w.tolist(), v.tolist(), opt.state_dict())) == before


def test_other_bad_settings_and_parameters():
    w = md.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match="not a tape leaf"):
        SGD([md.zeros(2)], lr=0.1)
    with pytest.raises(TypeError, match="not a tape leaf"):
        SGD([w * 2], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['betas'\]"):
        SGD([{"params": [w], "betas": (0.9, 0.99)}])
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([w], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([w], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="dampening"):
        SGD([w], dampening=2.0)
    with pytest.raises(ValueError, match="centralize must be one of"):
        Adam([w], centralize="weights")
    with pytest.raises(ValueError, match="conv_only"):
        Adam([w], conv_only="yes")
    with pytest.raises(ValueError, match="momentum"):
        SGD([w], momentum=-0.5)
    with pytest.raises(ValueError, match="eps"):
        Adam([w], eps=-1e-8)
    with pytest.raises(ValueError, match="alpha"):
        RMSprop([w], alpha=1.5)
    with pytest.raises(ValueError, match="lr_decay"):
        Adagrad([w], lr_decay=-1.0)
    with pytest.raises(ValueError, match="decay"):
        FGD([w], decay=-1.0)
    with pytest.raises(ValueError, match="distribution"):
        FGD([w], distribution="uniform")
    with pytest.raises(ValueError, match="damping"):
        NewtonCG([w], damping=-1.0)
    with pytest.raises(ValueError, match="hvp_mode"):
        NewtonCG([w], hvp_mode="rev")
    with pytest.raises(ValueError, match="max_cg_iter"):
        NewtonCG([w], max_cg_iter=0)
    with pytest.raises(TypeError, match="floating"):
        SGD([md.tensor([1, 2]).requires_grad_() if False else _int_leaf()], lr=0.1)


def _int_leaf():
    from minidiff.modes.reverse import AMBIENT

    return AMBIENT.leaf(md.tensor([1, 2]))


# ----------------------------------------------------------------------------- the benchmark
def test_the_benchmark_runs_records_and_skips_what_is_missing(tmp_path, monkeypatch):
    import argparse
    import json

    from minidiff.bench import optim_bench

    missing = (optim_bench._external("no_such_module", "Nothing"), "tape", "absent")
    monkeypatch.setitem(optim_bench.OPTIMIZERS, "absent", missing)
    p = argparse.ArgumentParser()
    optim_bench.add_arguments(p)
    out = tmp_path / "r.json"
    args = p.parse_args(
        ["--models", "mlp", "--optimizers", "sgd,sgd-gc,lbfgs,fgd,absent", "--steps", "3", "--width", "8",
         "--gc-repeats", "0", "--train-limit", "128", "--json", str(out), "--target-loss", "100"]
    )  # fmt: skip
    assert optim_bench.run(args) == 0
    r = json.loads(out.read_text())
    runs = r["runs"]["mlp"]
    assert "not available" in runs["absent"]["skipped"]
    for name in ("sgd", "sgd-gc", "lbfgs", "fgd"):
        assert runs[name]["steps"] == 3 and len(runs[name]["history"]["loss"]) == 3
        assert runs[name]["steps_to_target"] == 1  # a target above every loss is met at once
        assert 0 <= runs[name]["test_accuracy"] <= 1
    assert runs["sgd"]["step_time_vs_sgd"] == 1.0
    assert r["environment"] and r["settings"]["optimizers"]["sgd"].startswith("SGD")
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim_bench.run_optim_bench(optimizers=("nope",))
