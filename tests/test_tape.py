"""Tape style (``requires_grad=True``, ``backward()``, ``.grad``), the walker, long chains and memory."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

import minidiff as md
from minidiff import levels
from minidiff.modes.reverse import Node, ReverseTrace, nodes_created, walk

RTOL = 1e-12  # float64 gradients against closed forms


def close(actual, expected, rtol=RTOL, atol=1e-12):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def t64(a, **kw):
    return md.tensor(np.asarray(a, dtype=np.float64), **kw)


@md.primitive
def explode(x):
    """Identity forward; its VJP rule raises, so a test sees whether the walker visits it."""
    return x * 1.0


@explode.defjvp
def _explode_jvp(primals, tangents):
    return tangents[0]


@explode.defvjp
def _explode_vjp(cotangent, output, x):
    raise RuntimeError("the VJP of explode was called")


# ----------------------------------------------------------------------------- basics
def test_backward_fills_leaf_grads(rng):
    x = rng.normal(size=3)
    X = t64(x, requires_grad=True)
    assert X.requires_grad and X.is_leaf and X.grad is None
    y = md.sum(md.sin(X) * X)
    assert y.requires_grad
    y.backward()
    close(X.grad, np.cos(x) * x + np.sin(x))
    assert not X.grad.requires_grad  # gradients are plain values


def test_gradients_accumulate_over_two_backward_calls(rng):
    x = rng.normal(size=3)
    X = t64(x, requires_grad=True)
    md.sum(X**2).backward()
    md.sum(3 * X).backward()  # a second, freshly recorded graph
    close(X.grad, 2 * x + 3)


def test_retain_graph_allows_a_second_walk(rng):
    x = rng.normal(size=3)
    X = t64(x, requires_grad=True)
    y = md.sum(X**3)
    y.backward(retain_graph=True)
    close(X.grad, 3 * x**2)
    y.backward()
    close(X.grad, 6 * x**2)


def test_second_backward_through_a_freed_tape_raises_and_leaves_grad_untouched(rng):
    x = rng.normal(size=3)
    X = t64(x, requires_grad=True)
    y = md.sum(md.exp(X))
    y.backward()
    before = X.grad.numpy().copy()
    with pytest.raises(md.TapeError, match="retain_graph"):
        y.backward()
    close(X.grad, before, rtol=0, atol=0)


def test_a_graph_sharing_a_freed_part_raises_and_writes_nothing(rng):
    x = rng.normal(size=3)
    X = t64(x, requires_grad=True)
    W = t64(np.ones(3), requires_grad=True)
    z = X * X  # shared by both losses
    first, second = md.sum(z), md.sum(z * W)
    first.backward()
    with pytest.raises(md.TapeError):
        second.backward()  # reaches W (fine) and z (freed): nothing may be written, not even W.grad
    close(X.grad, 2 * x)
    assert W.grad is None


def test_backward_with_an_explicit_cotangent(rng):
    x, c = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    X = t64(x, requires_grad=True)
    (X * X).backward(t64(c))
    close(X.grad, 2 * x * c)


def test_non_leaf_grads_are_none(rng):
    X = t64(rng.normal(size=3), requires_grad=True)
    z = X * 2
    y = md.sum(md.tanh(z))
    y.backward()
    assert X.is_leaf and not z.is_leaf and not y.is_leaf
    assert z.grad is None and y.grad is None
    assert X.grad is not None


def test_a_tensor_used_several_times_accumulates(rng):
    x = rng.normal(size=4)
    X = t64(x, requires_grad=True)
    y = md.sum(X * X + 3 * X + md.sin(X) * X)
    y.backward()
    close(X.grad, 2 * x + 3 + np.cos(x) * x + np.sin(x))


def test_a_diamond_graph(rng):
    x = rng.normal(size=3)
    X = t64(x, requires_grad=True)
    a = 2 * X
    y = md.sum(a * md.exp(a))  # a reaches y along two paths
    y.backward()
    close(X.grad, 2 * np.exp(2 * x) * (1 + 2 * x))


def test_broadcast_gradients_are_summed_back(rng):
    x, w = rng.normal(size=3), rng.normal(size=(2, 3))
    X, Wt = t64(x, requires_grad=True), t64(w, requires_grad=True)
    md.sum(Wt * X).backward()
    assert X.grad.shape == (3,) and Wt.grad.shape == (2, 3)
    close(X.grad, w.sum(0))
    close(Wt.grad, np.broadcast_to(x, (2, 3)))


def test_float32_leaves_get_float32_grads():
    X = md.tensor([1.0, 2.0], dtype="float32", requires_grad=True)
    md.sum(X * X).backward()
    assert X.grad.dtype == np.float32
    np.testing.assert_allclose(X.grad.numpy(), [2.0, 4.0], rtol=1e-6)


def test_requires_grad_returns_a_new_leaf_and_leaves_the_tensor_alone():
    x = md.tensor([1.0, 2.0])
    leaf = x.requires_grad_()
    assert leaf.requires_grad and not x.requires_grad
    md.sum(leaf * leaf).backward()
    assert x.grad is None
    close(leaf.grad, [2.0, 4.0])


# ----------------------------------------------------------------------------- no_grad and detach
def test_no_grad_records_nothing(rng):
    X = t64(rng.normal(size=3), requires_grad=True)
    recorded = nodes_created()
    with md.no_grad():
        assert not md.is_grad_enabled()
        y = md.sum(X * 2)
    assert md.is_grad_enabled()
    assert nodes_created() == recorded
    assert not y.requires_grad
    with pytest.raises(md.TapeError):
        y.backward()
    assert X.grad is None


def test_no_grad_restores_recording_after_an_exception():
    with pytest.raises(RuntimeError):
        with md.no_grad():
            raise RuntimeError("boom")
    assert md.is_grad_enabled()
    with md.no_grad():
        with md.no_grad():
            pass
        assert not md.is_grad_enabled()  # the inner block restores the outer state, not "enabled"
    assert md.is_grad_enabled()


def test_detach_cuts_the_tape(rng):
    x = rng.normal(size=3)
    X = t64(x, requires_grad=True)
    d = X.detach()
    assert not d.requires_grad and type(d) is md.Tensor
    close(d, x, rtol=0, atol=0)
    md.sum(X * X.detach()).backward()  # only one factor carries a derivative
    close(X.grad, x)


# ----------------------------------------------------------------------------- what the walker visits
def test_a_dead_branch_is_never_walked(rng):
    X = t64(rng.normal(size=3), requires_grad=True)
    unused = explode(X)  # recorded, but y does not depend on it
    y = md.sum(X * X)
    y.backward()
    close(X.grad, 2 * X.detach().numpy())
    with pytest.raises(RuntimeError, match="explode"):  # the rule really raises when reached
        md.sum(unused).backward()


def test_a_branch_without_requested_inputs_is_never_walked(rng):
    """grad with argnums=0: the branch through the second argument is not visited."""
    x, w = t64(rng.normal(size=3)), t64(rng.normal(size=3))
    f = lambda x, w: md.sum(x * x) + md.sum(explode(w) * 2)
    close(md.grad(f, argnums=0)(x, w), 2 * x.numpy())
    with pytest.raises(RuntimeError, match="explode"):
        md.grad(f, argnums=1)(x, w)


def test_walk_only_follows_paths_to_the_targets(rng):
    a, b = t64(rng.normal(size=3)), t64(rng.normal(size=3))
    with levels.new_level(ReverseTrace) as trace:
        A, B = trace.leaf(a), trace.leaf(b)
        y = md.sum(A * 3 + explode(B))
        cts = walk([y._node], [md.tensor(1.0)], targets={A._node}, retain=True)
        assert set(cts) == {A._node}
        close(cts[A._node], [3.0, 3.0, 3.0])
        with pytest.raises(RuntimeError, match="explode"):
            walk([y._node], [md.tensor(1.0)], targets={B._node}, retain=True)


# ----------------------------------------------------------------------------- the tape frees its values
def test_backward_frees_saved_values_unless_retained(rng):
    X = t64(rng.normal(size=3), requires_grad=True)
    Y = t64(rng.normal(size=3), requires_grad=True)
    m = X * Y
    node = m._node
    assert node.saved_bytes() == 2 * 3 * 8  # multiply saves both inputs
    assert (X * X)._node.saved_bytes() == 3 * 8  # one buffer kept through two inputs counts once
    md.sum(m).backward(retain_graph=True)
    assert node.saved_bytes() == 48
    md.sum(m * 1.0).backward()
    assert node.saved_bytes() == 0


def test_functional_transforms_leave_the_ambient_tape_alone(rng):
    x = t64(rng.normal(size=3))
    recorded = nodes_created()
    md.grad(lambda x: md.sum(md.sin(x) * x))(x)
    assert nodes_created() == recorded + 4  # its own tape: the leaf, sin, multiply, sum; nothing more
    md.jvp(md.exp, (x,), (x,))
    assert nodes_created() == recorded + 4


def test_functional_grad_of_tape_style_tensors(rng):
    """The result of ``md.grad`` stays on the ambient tape: d/dw Σ (∇_x Σ x·w) · w = 2w."""
    w, x = rng.normal(size=3), rng.normal(size=3)
    W = t64(w, requires_grad=True)
    g = md.grad(lambda x: md.sum(x * W))(t64(x))
    assert g.requires_grad
    md.sum(g * W).backward()
    close(W.grad, 2 * w)


# ----------------------------------------------------------------------------- long chains
def test_ten_thousand_op_chain_in_tape_style():
    x0 = np.array([0.5, 1.0, 2.0])
    X = t64(x0, requires_grad=True)
    recorded = nodes_created()
    y = X
    for _ in range(3334):  # three ops per step
        y = y + 1e-3 * md.sin(y)
    assert nodes_created() - recorded >= 10_000
    md.sum(y).backward()
    ref_y, d = x0.copy(), np.ones(3)
    for _ in range(3334):
        d = d * (1 + 1e-3 * np.cos(ref_y))
        ref_y = ref_y + 1e-3 * np.sin(ref_y)
    close(y.detach(), ref_y, rtol=1e-12)
    close(X.grad, d, rtol=1e-10)


# ----------------------------------------------------------------------------- memory stays flat
def _live_nodes() -> int:
    gc.collect()
    return sum(isinstance(o, Node) for o in gc.get_objects())


def _mlp_problem(rng):
    X = t64(rng.normal(size=(16, 8)))
    labels = md.tensor(rng.integers(0, 4, size=16))
    params = [t64(rng.normal(size=(8, 16)) * 0.3), md.zeros(16), t64(rng.normal(size=(16, 4)) * 0.3)]

    def loss(w1, b1, w2):
        hidden = md.relu(X @ w1 + b1)
        return md.nn.functional.cross_entropy(hidden @ w2, labels)

    return params, loss


def _tape_step(params, loss):
    value = loss(*params)
    value.backward()
    with md.no_grad():
        return [(p - 0.1 * p.grad).requires_grad_() for p in params], value.item()


def _functional_step(params, loss, grad_fn):
    grads = grad_fn(*params)
    return [p - 0.1 * g for p, g in zip(params, grads)], None


STEPS, WARMUP, WINDOW = 1000, 100, 100
# A leaked tape costs several kilobytes per step (the activations alone are 16×16 float64 = 2 KiB),
# i.e. megabytes over 1,000 steps.  Measured after a full gc.collect() (which also empties CPython's
# free lists), the drift between warm-up and the end is a few hundred bytes; the tolerance is 64 KiB.
MEMORY_TOLERANCE = 64 * 1024


@pytest.mark.parametrize("style", ["tape", "functional"])
def test_a_thousand_training_steps_leave_memory_flat(rng, style):
    params, loss = _mlp_problem(rng)
    if style == "tape":
        params = [p.requires_grad_() for p in params]
        step = lambda ps: _tape_step(ps, loss)
    else:
        grad_fn = md.grad(loss, argnums=(0, 1, 2))
        step = lambda ps: _functional_step(ps, loss, grad_fn)
    first_loss = loss(*params).item()
    nodes_before = _live_nodes()  # other tests may hold tapes of their own
    tracemalloc.start()
    try:
        for _ in range(WARMUP):
            params, _ = step(params)
        nodes_after_warmup = _live_nodes()  # (collects garbage first)
        current_after_warmup = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(WINDOW):
            params, _ = step(params)
        early_peak = tracemalloc.get_traced_memory()[1]
        for _ in range(STEPS - WARMUP - 2 * WINDOW):
            params, _ = step(params)
        gc.collect()  # (a full collection also empties CPython's free lists, which tracemalloc counts)
        tracemalloc.reset_peak()
        for _ in range(WINDOW):
            params, _ = step(params)
        late_peak = tracemalloc.get_traced_memory()[1]
        gc.collect()
        end_current = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    nodes_at_end = _live_nodes()
    assert loss(*params).item() < first_loss  # the steps really trained the model
    assert end_current - current_after_warmup < MEMORY_TOLERANCE, (current_after_warmup, end_current)
    assert late_peak - early_peak < MEMORY_TOLERANCE, (early_peak, late_peak)
    assert nodes_at_end <= nodes_after_warmup, (nodes_after_warmup, nodes_at_end)
    assert nodes_at_end - nodes_before <= 10  # at most the current parameters' leaves and last loss


def _nodes_without_collecting() -> int:
    return sum(isinstance(o, Node) for o in gc.get_objects())  # unreachable-but-uncollected count too


@pytest.mark.parametrize(
    "run",
    [
        pytest.param(lambda loss, ps: md.grad(loss, argnums=(0, 1, 2))(*ps), id="grad"),
        pytest.param(lambda loss, ps: md.vjp(loss, *ps)[1](md.tensor(1.0)), id="vjp"),
        pytest.param(lambda loss, ps: md.jacrev(loss, argnums=(0, 1, 2))(*ps), id="jacrev"),
        pytest.param(lambda loss, ps: md.hvp(loss, ps, ps, mode="fwd-over-rev"), id="hvp-fwd-over-rev"),
        pytest.param(lambda loss, ps: md.hvp(loss, ps, ps, mode="rev-over-fwd"), id="hvp-rev-over-fwd"),
        pytest.param(lambda loss, ps: md.hvp(loss, ps, ps, mode="rev-over-rev"), id="hvp-rev-over-rev"),
        pytest.param(None, id="tape-style"),
    ],
)
def test_tapes_are_freed_by_reference_counting_alone(rng, run):
    """No reference cycles keep a tape alive until the next garbage collection."""
    params, loss = _mlp_problem(rng)
    gc.collect()
    before = _nodes_without_collecting()
    gc.disable()
    try:
        for _ in range(5):
            if run is None:
                ps = [p.requires_grad_() for p in params]
                loss(*ps).backward()
                result = [p.grad for p in ps]
                del ps
            else:
                result = run(loss, params)
            assert result is not None
        del result
        left = _nodes_without_collecting() - before
    finally:
        gc.enable()
    assert left == 0, f"{left} tape nodes still alive (reachable only through reference cycles)"
