"""md.assign_ (the one in-place update, version-counted) and errors.check_number (the one setting check)."""

import math
import re

import numpy as np
import pytest

import minidiff as md
from minidiff.errors import ShapeError, TapeError, TracerError, check_number


# ============================================================================= md.assign_
def test_the_value_is_replaced_and_identity_and_leaf_are_kept():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    same = w
    with md.no_grad():
        md.assign_(w, md.tensor([5.0, 6.0]))
    assert same is w
    assert w.tolist() == [5.0, 6.0]
    assert w.is_leaf and w.requires_grad
    (w * w).sum().backward()  # still a working leaf: the gradient lands on it
    np.testing.assert_allclose(w.grad.numpy(), [10.0, 12.0])


def test_a_plain_tensor_is_updated_without_no_grad_and_every_holder_sees_it():
    x = md.zeros(3)
    holders = [x]
    md.assign_(x, [1.0, 2.0, 3.0])  # anything md.asarray takes
    assert holders[0].tolist() == [1.0, 2.0, 3.0]


def test_the_new_value_is_cast_to_the_tensors_dtype():
    x = md.zeros(2, dtype="float32")
    md.assign_(x, md.tensor([1.5, 2.5], dtype="float64"))
    assert x.dtype == md.float32
    assert x.tolist() == [1.5, 2.5]


def test_a_shape_mismatch_raises_and_leaves_the_tensor_unchanged():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    with (
        md.no_grad(),
        pytest.raises(ShapeError, match=r"assign_: new value of shape \(3,\) for a tensor of shape \(2,\)"),
    ):
        md.assign_(w, md.ones(3))
    assert w.tolist() == [1.0, 2.0]


def test_a_requires_grad_leaf_outside_no_grad_raises_and_is_unchanged():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TapeError, match=r"assign_: x \(float64\[2\]\) is a tape leaf.*md.no_grad"):
        md.assign_(w, md.zeros(2))
    assert w.tolist() == [1.0, 2.0]


def test_a_vjp_tracer_cannot_be_assigned():
    def f(x):
        md.assign_(x, md.zeros(2))
        return x.sum()

    with pytest.raises(TracerError, match="assign_: x .* is traced by"):
        md.vjp(f, md.tensor([1.0, 2.0]))


def test_a_non_tensor_is_refused():
    with pytest.raises(TypeError, match="assign_: x must be a Tensor, got ndarray"):
        md.assign_(np.zeros(2), md.ones(2))
    with pytest.raises(TypeError, match="got list"):
        md.assign_([0.0, 0.0], md.ones(2))


def test_backward_through_a_saved_tensor_changed_since_raises_naming_the_op():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    loss = md.sin(w).sum()  # sin saves its input for the backward pass
    with md.no_grad():
        md.assign_(w, md.tensor([0.0, 0.0]))
    with pytest.raises(TapeError, match=r"backward: sin saved its input 0 \(float64\[2\]\).*version 1"):
        loss.backward()


def test_backward_after_changing_a_tensor_no_node_saved_works():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    loss = (w + 1).sum()  # add keeps nothing of w: its derivative does not depend on w's value
    with md.no_grad():
        md.assign_(w, md.tensor([7.0, 8.0]))
    loss.backward()
    np.testing.assert_allclose(w.grad.numpy(), [1.0, 1.0])


def test_a_loss_computed_after_the_update_differentiates_at_the_new_value():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    with md.no_grad():
        md.assign_(w, md.tensor([3.0, -1.0]))
    w.zero_grad_()
    (w * w).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [6.0, -2.0])


def test_an_optimizer_step_between_two_backward_passes_of_one_retained_graph_raises():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    opt = md.optim.SGD([w], lr=0.1)
    loss = (w * w).sum()
    loss.backward(retain_graph=True)
    opt.step()  # changes w through md.assign_
    assert w.tolist() == pytest.approx([0.8, 1.6])
    with pytest.raises(TapeError, match="multiply saved its input"):
        loss.backward()


def test_the_optimizers_no_longer_export_their_own_assign():
    assert not hasattr(md.optim, "assign_")


# ============================================================================= check_number
@pytest.mark.parametrize(
    "kwargs, good, bad, words",
    [
        (dict(low=0), [0, 0.0, 3.5], [-1e-9], ">= 0"),
        (dict(low=0, low_open=True), [1e-300, 2], [0, -1], "> 0"),
        (dict(high=1), [1, -5.0], [1.0001], "<= 1"),
        (dict(high=1, high_open=True), [0.999], [1, 2.0], "< 1"),
        (dict(low=0, high=1), [0, 1, 0.5], [-0.1, 1.1], "in [0, 1]"),
        (dict(low=0, high=1, low_open=True, high_open=True), [0.5], [0, 1], "in (0, 1)"),
        (dict(low=0, high=1, high_open=True), [0, 0.99], [1], "in [0, 1)"),
        (dict(low=1, integer=True), [1, 7], [0, 1.0, 2.5], "an integer >= 1"),
    ],
)
def test_check_number_bounds_and_flags(kwargs, good, bad, words):
    for v in good:
        check_number("Op", "x", v, **kwargs)
    for v in bad:
        with pytest.raises(ValueError, match=rf"Op: x must be .*{_re(words)}, got {_re(repr(v))}"):
            check_number("Op", "x", v, **kwargs)


@pytest.mark.parametrize("value", [True, False, math.nan, math.inf, -math.inf, "1", [1.0], None])
def test_check_number_refuses_bools_nan_inf_non_numbers_and_none(value):
    with pytest.raises(ValueError, match=rf"Op: x must be a number.*got {_re(repr(value))}"):
        check_number("Op", "x", value)


def test_check_number_none_ok_lets_none_through_and_says_so():
    check_number("Op", "x", None, low=0, none_ok=True)
    with pytest.raises(ValueError, match=r"Op: x must be a number >= 0 or None, got -1"):
        check_number("Op", "x", -1, low=0, none_ok=True)
    with pytest.raises(ValueError, match="must be an integer"):
        check_number("Op", "n", True, integer=True, none_ok=True)  # bool is not an integer here


def test_check_number_without_bounds_asks_for_a_finite_number():
    check_number("Op", "x", -1e300)
    with pytest.raises(ValueError, match=r"Op: x must be a number \(finite\), got nan"):
        check_number("Op", "x", math.nan)


def _re(text: str) -> str:
    return re.escape(text)
