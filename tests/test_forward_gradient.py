"""Forward gradients: exactness of one sample, unbiasedness, no tape, FGD, memory by depth."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minidiff as md
from minidiff import pytree
from minidiff.bench.memory import peak_memory
from minidiff.modes.reverse import nodes_created

F = md.nn.functional


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": md.tensor(rng.normal(size=(3, 4))), "b": md.tensor(rng.normal(size=3))}
    x = md.tensor(rng.normal(size=(8, 4)))
    y = md.tensor(rng.integers(0, 3, 8))

    def f(p):
        return F.cross_entropy(F.linear(md.tanh(x), p["w"], p["b"]), y)

    return f, params


def _flat(tree):
    return np.concatenate([t.numpy().ravel() for t in pytree.flatten(tree)[0]])


@pytest.mark.parametrize("distribution", ["normal", "rademacher"])
def test_one_sample_is_exactly_directional_derivative_times_direction(distribution):
    f, params = _problem()
    v = md.sample_directions(params, md.random.Generator(3), distribution)
    loss, g = md.forward_grad(f, params, None, directions=v)
    exact = md.grad(f)(params)
    d = float(_flat(exact) @ _flat(v))
    np.testing.assert_allclose(_flat(g), d * _flat(v), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(loss.item(), f(params).item(), rtol=1e-15)


@pytest.mark.parametrize("distribution", ["normal", "rademacher"])
def test_mean_of_samples_converges_to_the_gradient(distribution):
    """CLT bound: each coordinate's mean lies within 5 standard errors of ∇f.

    Var[(∇f·v) v_i] = ‖∇f‖² + ∇f_i² for Gaussian v and ‖∇f‖² − ∇f_i² for Rademacher v.
    """
    f, params = _problem()
    n = 20000
    _, g = md.forward_grad(f, params, md.random.Generator(7), n_directions=n, distribution=distribution)
    exact = _flat(md.grad(f)(params))
    mean = _flat(g)
    sq = exact @ exact
    var = sq + exact**2 if distribution == "normal" else sq - exact**2
    bound = 5 * np.sqrt(var / n)
    assert np.all(np.abs(mean - exact) <= bound + 1e-12), np.max(np.abs(mean - exact) / bound)
    # and the estimate is informative: it points along the gradient
    assert mean @ exact / (np.linalg.norm(mean) * np.linalg.norm(exact)) > 0.95


def test_vector_mode_equals_the_average_of_single_samples():
    f, params = _problem()
    k = 5
    v = md.sample_directions(params, md.random.Generator(1), "normal", n_directions=k)
    _, g = md.forward_grad(f, params, None, n_directions=k, directions=v)
    singles = [
        _flat(md.forward_grad(f, params, None, directions=pytree.tree_map(lambda t, i=i: t[i], v))[1])
        for i in range(k)
    ]
    np.testing.assert_allclose(_flat(g), np.mean(singles, axis=0), rtol=1e-12, atol=1e-14)


def test_no_tape_is_recorded_on_the_forward_gradient_path():
    f, params = _problem()
    before = nodes_created()
    md.forward_grad(f, params, md.random.Generator(0))
    md.forward_grad(f, params, md.random.Generator(0), n_directions=3, distribution="rademacher")
    opt = md.FGD(lr=0.1, seed=0)
    opt.step(f, params)
    assert nodes_created() == before
    md.grad(f)(params)  # the counter does move when a tape is recorded
    assert nodes_created() > before


def test_clip_caps_the_directional_derivative():
    f, params = _problem()
    v = pytree.tree_map(lambda t: 100.0 * t, md.sample_directions(params, md.random.Generator(2), "normal"))
    _, g = md.forward_grad(f, params, None, directions=v, clip=1.0)
    d = float(_flat(md.grad(f)(params)) @ _flat(v))
    assert abs(d) > 1
    np.testing.assert_allclose(_flat(g), math.copysign(1.0, d) * _flat(v), rtol=1e-12)


def test_fgd_step_follows_the_paper_schedule():
    f, params = _problem()
    opt = md.FGD(lr=0.5, decay=0.1, seed=4)
    twin = md.random.Generator(4)
    p = params
    for i in range(3):
        v = md.sample_directions(p, twin, "normal")
        d = float(_flat(md.grad(f)(p)) @ _flat(v))
        expected = _flat(p) - 0.5 * math.exp(-0.1 * i) * d * _flat(v)
        _, p = opt.step(f, p)
        np.testing.assert_allclose(_flat(p), expected, rtol=1e-10, atol=1e-12)
    assert opt.iteration == 3
    assert opt.learning_rate() == pytest.approx(0.5 * math.exp(-0.3))


def test_fgd_reduces_a_quadratic():
    opt = md.FGD(lr=0.05, decay=0.0, seed=0, distribution="rademacher")
    p = {"w": md.tensor([3.0, -2.0, 1.0])}
    for _ in range(300):
        _, p = opt.step(lambda q: (q["w"] ** 2).sum(), p)
    assert float((p["w"] ** 2).sum().item()) < 1e-3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_directions": 0}, "n_directions"),
        ({"distribution": "cauchy"}, "distribution"),
    ],
)
def test_bad_arguments(kwargs, message):
    f, params = _problem()
    with pytest.raises(ValueError, match=message):
        md.forward_grad(f, params, md.random.Generator(0), **kwargs)


def test_fgd_rejects_a_negative_rate():
    with pytest.raises(ValueError, match="lr"):
        md.FGD(lr=-1.0)


def test_the_functional_fgd_and_the_optimizer_take_the_same_steps():
    """md.FGD on a pytree and md.optim.FGD on tape leaves: one estimate, schedule and update."""
    f, params = _problem()
    functional = md.FGD(lr=0.3, decay=0.2, n_directions=3, clip=0.5, seed=5)
    values, treedef = pytree.flatten(params)
    leaves = [md.tensor(t.numpy(), requires_grad=True) for t in values]
    optimizer = md.optim.FGD(leaves, lr=0.3, decay=0.2, n_directions=3, clip=0.5, seed=5)
    p = params
    for _ in range(4):
        loss, p = functional.step(f, p)
        loss_opt = optimizer.step(lambda ps: f(pytree.unflatten(treedef, ps)))
        np.testing.assert_allclose(loss_opt.item(), loss.item(), rtol=1e-12)
        np.testing.assert_allclose(_flat(leaves), _flat(p), rtol=1e-12, atol=1e-14)
    assert functional.learning_rate() == pytest.approx(optimizer.learning_rate())
    assert functional.learning_rate() == pytest.approx(0.3 * math.exp(-0.2 * 4))


@pytest.mark.parametrize(
    "bad",
    [{"lr": -1.0}, {"decay": -0.1}, {"n_directions": 0}, {"clip": 0.0}, {"distribution": "cauchy"}],
    ids=lambda b: next(iter(b)),
)
def test_the_functional_fgd_and_the_optimizer_refuse_the_same_settings(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"FGD: .*{name}") as functional:
        md.FGD(**bad)
    with pytest.raises(ValueError, match=f"FGD: .*{name}") as optimizer:
        md.optim.FGD([md.zeros(2, requires_grad=True)], **bad)
    if name != "lr":  # (the optimizer's base class checks lr first, for every optimizer)
        assert str(functional.value) == str(optimizer.value)


def _mlp(depth, width=32, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (md.tensor(rng.normal(size=(width, width)) / np.sqrt(width)), md.tensor(np.zeros(width)))
        for _ in range(depth)
    ]


def test_forward_mode_memory_does_not_grow_with_depth_like_reverse_mode():
    """Reverse mode keeps every layer's activations until the backward pass; forward mode keeps none.

    Peak memory grows with depth for both only through the parameter-sized tangent; beyond that,
    reverse mode adds at least one batch×width activation per layer (stated bound below).
    """
    batch, width = 512, 32
    x = md.tensor(np.random.default_rng(1).normal(size=(batch, width)))

    def loss(params):
        h = x
        for w, b in params:
            h = md.tanh(F.linear(h, w, b))
        return (h * h).mean()

    peaks = {}
    for depth in (2, 10):
        params = _mlp(depth)
        tangent = pytree.tree_map(md.ones_like, params)
        before = nodes_created()
        peaks[("fwd", depth)] = peak_memory(lambda: md.jvp(loss, (params,), (tangent,)))
        assert nodes_created() == before  # the forward-mode tape stays empty
        peaks[("rev", depth)] = peak_memory(lambda: md.grad(loss)(params))
    activation = batch * width * 8
    param_growth = 8 * (width * width + width) * 8  # 8 more layers of parameters, in float64
    assert peaks[("fwd", 10)] - peaks[("fwd", 2)] <= 3 * param_growth + 4 * activation
    assert peaks[("rev", 10)] - peaks[("rev", 2)] >= 8 * activation
    assert peaks[("rev", 10)] > 2 * peaks[("fwd", 10)]


# ----------------------------------------------------------------------------- forward_grad's refusals
def test_forward_grad_refuses_a_non_scalar_loss_like_grad():
    x = md.tensor([1.0, 2.0])

    def doubled(p):
        return p[0] * 2

    with pytest.raises(
        md.ShapeError, match=r"forward_grad\(.*doubled\): the loss must be a scalar, got shape \(2,\)"
    ):
        md.forward_grad(doubled, [x], 0)


def test_forward_grad_names_the_function_and_the_integer_leaf():
    def loss(p):
        return md.sum(p[1] * 2.0)

    with pytest.raises(md.DTypeError, match=r"forward_grad\(.*loss\): parameter leaf 1: .*int64"):
        md.forward_grad(loss, [md.tensor([1.0]), md.tensor([1, 2])], 0)


def test_forward_grad_says_when_the_estimate_is_zero_because_nothing_depends_on_the_parameters():
    x = md.tensor([1.0, 2.0])
    with pytest.warns(
        UserWarning, match="does not depend on the parameters, so the estimate is identically zero"
    ):
        loss, (g,) = md.forward_grad(lambda p: md.sum(x), [x], 0)
    assert loss.item() == 3.0 and np.all(g.numpy() == 0.0)


def test_forward_grad_does_not_warn_when_the_loss_depends_on_the_parameters(recwarn):
    x = md.tensor([1.0, 2.0])
    for k in (1, 3):
        md.forward_grad(lambda p: md.sum(p[0] * p[0]), [x], 0, n_directions=k)
    assert not [w for w in recwarn.list if "identically zero" in str(w.message)]


# ----------------------------------------------------------------------------- buffers reused across steps
def _arrays(tree):
    return [t._data for t in pytree.flatten(tree)[0]]


@pytest.mark.parametrize("distribution", ["normal", "rademacher"])
@pytest.mark.parametrize("k, clip", [(1, None), (1, 0.1), (3, None)])
def test_a_workspace_gives_the_numbers_of_fresh_arrays(distribution, k, clip):
    f, params = _problem()
    ws = md.ForwardGradientWorkspace()
    for seed in (0, 1):  # the second call reuses the buffers of the first
        opts = dict(n_directions=k, distribution=distribution, clip=clip)
        loss, g = md.forward_grad(f, params, md.random.Generator(seed), workspace=ws, **opts)
        loss0, g0 = md.forward_grad(f, params, md.random.Generator(seed), **opts)
        assert loss.item() == loss0.item()
        np.testing.assert_allclose(_flat(g), _flat(g0), rtol=1e-12, atol=1e-15)


def test_float32_estimates_with_a_workspace_match_fresh_ones():
    f, params = _problem()
    params = pytree.tree_map(lambda t: t.astype("float32"), params)
    ws = md.ForwardGradientWorkspace()
    for k in (1, 4):
        _, g = md.forward_grad(f, params, 3, n_directions=k, workspace=ws)
        _, g0 = md.forward_grad(f, params, 3, n_directions=k)
        assert {t.dtype for t in pytree.flatten(g)[0]} == {np.dtype("float32")}
        np.testing.assert_allclose(_flat(g), _flat(g0), rtol=1e-6, atol=1e-7)


def test_the_buffers_are_reused_and_the_estimate_is_formed_in_v():
    f, params = _problem()
    ws = md.ForwardGradientWorkspace()
    _, g1 = md.forward_grad(f, params, 0, workspace=ws)
    first = [a.copy() for a in _arrays(g1)]
    held = ws.nbytes
    assert held == 8 * sum(t.size for t in pytree.flatten(params)[0])  # one buffer: v, then the estimate
    _, g2 = md.forward_grad(f, params, 1, workspace=ws)
    assert all(a is b for a, b in zip(_arrays(g1), _arrays(g2)))  # the same arrays ...
    assert not np.allclose(_flat(g1), np.concatenate([a.ravel() for a in first]))  # ... overwritten
    assert ws.nbytes == held
    ws.clear()
    assert ws.nbytes == 0


def test_given_directions_are_left_as_they_were():
    f, params = _problem()
    v = md.sample_directions(params, 2)
    before = _flat(v)
    ws = md.ForwardGradientWorkspace()
    _, g = md.forward_grad(f, params, None, directions=v, workspace=ws)
    np.testing.assert_array_equal(_flat(v), before)
    d = float(_flat(md.grad(f)(params)) @ before)
    np.testing.assert_allclose(_flat(g), d * before, rtol=1e-12, atol=1e-14)


def test_new_shapes_or_directions_get_new_buffers():
    f, params = _problem()
    ws = md.ForwardGradientWorkspace()
    md.forward_grad(f, params, 0, workspace=ws)
    md.forward_grad(f, params, 0, n_directions=3, workspace=ws)
    assert ws.nbytes == (3 + 1) * 8 * 15  # K = 3 directions of the 15 parameters, and the estimate
    bigger = {"w": md.zeros((5, 4)), "b": md.zeros(5)}
    _, g = md.forward_grad(lambda p: (p["w"] ** 2).sum() + p["b"].sum(), bigger, 0, workspace=ws)
    assert g["w"].shape == (5, 4) and ws.nbytes == 8 * 25


def test_a_loss_that_returns_its_parameter_is_not_confused_by_the_shared_buffer():
    """f(p) = p: ∇f·v is v's own element, so d shares memory with v, which the estimate overwrites."""
    ws = md.ForwardGradientWorkspace()
    for seed in (0, 1):
        _, g = md.forward_grad(lambda p: p[0], [md.tensor(2.0)], seed, workspace=ws)
        v = md.sample_directions([md.tensor(2.0)], seed)[0].item()
        assert g[0].item() == pytest.approx(v * v)


def test_inside_another_transform_the_estimate_keeps_its_derivative():
    """With a tracer in the estimate (x is differentiated around forward_grad), nothing is formed in place."""
    v = {"w": md.tensor([0.5, -1.0])}

    def h(x, workspace):
        _, g = md.forward_grad(
            lambda p: (p["w"] * x).sum(),
            {"w": md.tensor([1.0, 2.0])},
            None,
            directions=v,
            workspace=workspace,
        )
        return g["w"].sum()

    x = md.tensor([3.0, 4.0])
    with_ws = md.grad(h)(x, md.ForwardGradientWorkspace())
    without = md.grad(h)(x, None)
    np.testing.assert_allclose(with_ws.numpy(), without.numpy(), rtol=1e-15)
    np.testing.assert_allclose(without.numpy(), np.array([0.5, -1.0]) * (0.5 - 1.0), rtol=1e-15)


def test_both_fgds_hold_one_workspace_across_steps():
    f, params = _problem()
    opt = md.FGD(lr=0.1, seed=0)
    _, p = opt.step(f, params)
    held = [id(a) for ts in opt.workspace._buffers.values() for a in _arrays(ts)]
    _, p = opt.step(f, p)
    assert [id(a) for ts in opt.workspace._buffers.values() for a in _arrays(ts)] == held
    w = md.tensor([1.0, -1.0], requires_grad=True)
    tape_opt = md.optim.FGD([w], lr=0.1, seed=0)
    tape_opt.step(lambda ps: (ps[0] ** 2).sum())
    buf = _arrays(tape_opt.workspace._buffers["directions"])[0]
    tape_opt.step(lambda ps: (ps[0] ** 2).sum())
    assert _arrays(tape_opt.workspace._buffers["directions"])[0] is buf
    assert not np.shares_memory(w.detach().numpy(), buf)  # the parameters never alias the workspace


def test_sample_directions_into_out_and_its_refusal():
    f, params = _problem()
    out = md.ForwardGradientWorkspace().buffers("directions", params)
    v = md.sample_directions(params, 5, "rademacher", out=out)
    assert all(a is b for a, b in zip(_arrays(v), _arrays(out)))
    np.testing.assert_array_equal(_flat(v), _flat(md.sample_directions(params, 5, "rademacher")))
    with pytest.raises(md.ShapeError, match="sample_directions: out holds 1 tensors, params 2"):
        md.sample_directions(params, 5, out=[md.zeros(3)])
