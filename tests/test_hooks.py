"""Tensor.retain_grad() and Tensor.register_hook(fn): gradients of intermediate values, in the tape style
and inside the functional transforms.  float64 throughout; tolerances rtol=1e-12 (the same arithmetic,
differently ordered)."""

from __future__ import annotations

import numpy as np
import pytest

import minidiff as md

RTOL = 1e-12


def close(a, b, rtol=RTOL):
    np.testing.assert_allclose(np.asarray(a.detach() if isinstance(a, md.Tensor) else a), b, rtol=rtol)


def _problem(rng):
    w = rng.normal(size=(3, 4))
    x = rng.normal(size=4)
    return w, x


def _loss_of_h(h):
    return md.sum(md.tanh(h) * md.tanh(h)) + md.sum(h)


# ----------------------------------------------------------------------------- retain_grad
def test_retain_grad_keeps_the_gradient_of_an_intermediate_value(rng):
    w, x = _problem(rng)
    W = md.tensor(w, requires_grad=True)
    h = W @ md.tensor(x)
    assert not h.retains_grad and h.grad is None
    h.retain_grad()
    assert h.retains_grad
    _loss_of_h(h).backward()
    expected = md.grad(_loss_of_h)(md.tensor(w @ x))
    close(h.grad, expected.numpy())
    close(W.grad, np.outer(expected.numpy(), x))


def test_without_retain_grad_an_intermediate_value_keeps_no_gradient(rng):
    W = md.tensor(rng.normal(size=(3, 4)), requires_grad=True)
    h = W @ md.ones(4)
    _loss_of_h(h).backward()
    assert h.grad is None and W.grad is not None


def test_retained_gradients_accumulate_like_a_leafs_and_zero_grad_clears_them():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    h.retain_grad()
    (3.0 * h).sum().backward(retain_graph=True)
    (3.0 * h).sum().backward()
    assert h.grad.tolist() == [6.0, 6.0]
    h.zero_grad_()
    assert h.grad is None


def test_retain_grad_on_a_leaf_is_a_no_op():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    x.retain_grad()
    assert not x.retains_grad
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_retain_grad_of_a_value_used_twice_is_the_sum_over_its_uses():
    x = md.tensor([1.0, -2.0], requires_grad=True)
    h = md.sin(x)
    h.retain_grad()
    (h * h + 5.0 * h).sum().backward()
    close(h.grad, 2 * np.sin([1.0, -2.0]) + 5.0)


@pytest.mark.parametrize(
    "value, match",
    [
        (lambda: md.tensor([1.0]), "does not require grad"),
        (lambda: md.tensor([1.0], requires_grad=True).detach(), "does not require grad"),
    ],
)
def test_retain_grad_refuses_a_tensor_off_the_tape(value, match):
    with pytest.raises(md.TapeError, match=f"retain_grad: this tensor \\(float64\\[1\\]\\) {match}"):
        value().retain_grad()


def test_retain_grad_inside_a_functional_transform_says_what_to_do_instead():
    def f(x):
        h = x * x
        h.retain_grad()
        return h.sum()

    with pytest.raises(md.TapeError, match=r"retain_grad: .*traced by reverse \(level 2\).*register_hook"):
        md.grad(f)(md.tensor([1.0]))


# ----------------------------------------------------------------------------- register_hook, tape style
def test_a_hook_sees_the_gradient_that_md_grad_computes(rng):
    w, x = _problem(rng)
    W = md.tensor(w, requires_grad=True)
    h = W @ md.tensor(x)
    seen = []
    h.register_hook(lambda g: seen.append(g))
    _loss_of_h(h).backward()
    (g,) = seen
    assert not g.requires_grad
    close(g, md.grad(_loss_of_h)(md.tensor(w @ x)).numpy())


def test_a_hook_on_a_non_leaf_replaces_what_flows_on(rng):
    w, x = _problem(rng)
    W = md.tensor(w, requires_grad=True)
    h = W @ md.tensor(x)
    h.register_hook(lambda g: g * 2.0)
    _loss_of_h(h).backward()
    dh = md.grad(_loss_of_h)(md.tensor(w @ x)).numpy()
    close(W.grad, np.outer(2.0 * dh, x))


def test_a_hook_on_a_leaf_changes_what_accumulates_in_grad():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda g: g + 1.0)
    (x * x).sum().backward()
    assert x.grad.tolist() == [3.0, 5.0]


def test_hooks_run_in_order_each_on_the_previous_result_and_the_retained_grad_is_the_last():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    h = 3.0 * x
    order = []
    h.register_hook(lambda g: order.append("add") or g + 1.0)
    h.register_hook(lambda g: order.append("double") or g * 2.0)
    h.retain_grad()
    h.sum().backward()
    assert order == ["add", "double"]
    assert h.grad.tolist() == [4.0, 4.0]
    assert x.grad.tolist() == [12.0, 12.0]


def test_remove_stops_a_hook_and_the_handle_is_a_context_manager():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    calls = []
    handle = x.register_hook(lambda g: calls.append(1))
    (x * x).sum().backward()
    handle.remove()
    handle.remove()  # twice is harmless
    (x * x).sum().backward()
    assert calls == [1]
    with x.register_hook(lambda g: g * 0.0):
        x.zero_grad_()
        (x * x).sum().backward()
        assert x.grad.tolist() == [0.0, 0.0]
    x.zero_grad_()
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_a_hook_on_a_leaf_fires_in_every_backward():
    x = md.tensor([1.0], requires_grad=True)
    calls = []
    x.register_hook(lambda g: calls.append(g.item()))
    (x * 2.0).sum().backward()
    (x * 5.0).sum().backward()
    assert calls == [2.0, 5.0]


def test_a_failing_hook_writes_no_gradient():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    h.retain_grad()

    def explode(g):
        raise RuntimeError("explode")

    h.register_hook(explode)
    with pytest.raises(RuntimeError, match="explode"):
        h.sum().backward()
    assert x.grad is None and h.grad is None


# ----------------------------------------------------------------------------- register_hook, errors
def test_register_hook_refuses_a_tensor_that_does_not_require_grad():
    with pytest.raises(
        md.TapeError, match=r"register_hook: this tensor \(float64\[2\]\) does not require grad"
    ):
        md.tensor([1.0, 2.0]).register_hook(lambda g: None)


def test_register_hook_refuses_a_dual_number():
    def f(x):
        x.register_hook(lambda g: None)
        return x

    with pytest.raises(md.TapeError, match=r"register_hook: .* is a dual number of forward \(level 2\)"):
        md.jvp(f, (md.tensor(1.0),), (md.tensor(1.0),))


def test_register_hook_refuses_something_not_callable():
    with pytest.raises(TypeError, match="register_hook: expected a function fn\\(grad\\), got int"):
        md.tensor([1.0], requires_grad=True).register_hook(3)


def test_register_hook_on_an_escaped_tracer_raises():
    leaked = []
    md.grad(lambda x: leaked.append(x) or (x * x).sum())(md.tensor([2.0]))
    with pytest.raises(md.TracerError, match="register_hook: .*used after that transform returned"):
        leaked[0].register_hook(lambda g: None)


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (lambda g: md.ones(3), md.ShapeError, "returned a gradient of shape (3,) and dtype float64"),
        (lambda g: g.astype("float32"), md.DTypeError, "returned a gradient of shape (2,) and dtype float32"),
        (lambda g: np.ones(2), TypeError, "returned a ndarray"),
        (lambda g: 1.0, TypeError, "returned a float"),
    ],
)
def test_a_hook_returning_the_wrong_thing_names_the_tensor_shape(bad, error, words):
    x = md.tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    h.register_hook(bad)
    with pytest.raises(error) as info:
        h.sum().backward()
    message = str(info.value)
    assert "register_hook: hook <lambda> on a tensor of shape (2,) and dtype float64" in message
    assert words in message
    assert x.grad is None


# ----------------------------------------------------------------------------- inside the transforms
def test_hooks_inside_md_grad_on_the_argument_and_on_an_intermediate_value():
    def f(x):
        x.register_hook(lambda g: g + 100.0)
        y = x * x
        y.register_hook(lambda g: g * 2.0)
        return (y * x).sum()

    x = md.tensor([1.0, 2.0])
    # d/dx Σ y·x with y = x²: through y (doubled) 2·x·2x, directly y; then +100 on x
    close(md.grad(f)(x), 5 * np.array([1.0, 4.0]) + 100.0)


def _hooked(x):
    y = x * x
    y.register_hook(lambda g: g * 2.0)  # the gradient of Σ y·x becomes 2·x·2x + x² = 5x²
    return (y * x).sum()


def test_hooks_compose_with_second_order():
    x, v = md.tensor([1.0, -2.0]), md.tensor([0.5, 3.0])
    g = md.grad(_hooked)
    close(g(x), 5 * x.numpy() ** 2)
    close(md.grad(lambda x: g(x).sum())(x), 10 * x.numpy())  # reverse over reverse
    close(md.jacfwd(g)(x), np.diag(10 * x.numpy()))  # forward over reverse
    for mode in ("fwd-over-rev", "rev-over-rev"):
        close(md.hvp(_hooked, (x,), (v,), mode=mode)[0], 10 * x.numpy() * v.numpy())


def test_a_function_with_hooks_refuses_forward_mode_instead_of_skipping_them():
    x, v = md.tensor([1.0, -2.0]), md.tensor([0.5, 3.0])
    with pytest.raises(md.TapeError, match="register_hook: .*dual number.*no backward pass"):
        md.hvp(_hooked, (x,), (v,), mode="rev-over-fwd")  # f runs under jvp there


def test_hooks_see_batched_cotangents_under_jacrev():
    def f(x):
        y = md.sin(x)
        y.register_hook(lambda g: g * 3.0)
        return y * 2.0

    x = md.tensor([0.3, 1.1])
    close(md.jacrev(f)(x), np.diag(6.0 * np.cos(x.numpy())))


def test_a_hook_on_the_ambient_tape_does_not_fire_in_md_grad():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    w.register_hook(lambda g: g * 0.0)
    close(md.grad(lambda w: (w * w).sum())(w), [2.0, 4.0])  # md.grad records a tape of its own


# ----------------------------------------------------------------------------- backward's arguments
def test_backward_takes_pytorchs_gradient_keyword_or_the_cotangent_not_both():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    (x * x).backward(gradient=md.tensor([1.0, 10.0]))
    assert x.grad.tolist() == [2.0, 40.0]
    with pytest.raises(TypeError, match="backward: give the cotangent once"):
        (x * x).backward(md.ones(2), gradient=md.ones(2))


def test_a_plain_tensor_does_not_retain_its_grad():
    assert md.tensor([1.0]).retains_grad is False
