"""md.checkpoint: the values and derivatives of f (every mode and nesting, float64, against md.grad
/ md.jvp of the plain f and against closed forms), less kept on the tape (a deterministic byte count,
never a timing), pytrees, and the error paths."""

from __future__ import annotations

import numpy as np
import pytest

import minidiff as md
from minidiff.errors import TracerError

RTOL, ATOL = 1e-12, 1e-12  # float64: the checkpointed and plain computations do the same operations


def close(a, b, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def close_trees(a, b):
    la, da = md.pytree.flatten(a)
    lb, db = md.pytree.flatten(b)
    assert da == db, (da, db)
    for x, y in zip(la, lb):
        close(x, y)


RNG = np.random.default_rng(7)
X = md.tensor(RNG.normal(size=(5, 4)))
WS = [md.tensor(RNG.normal(size=(4, 4)) * 0.6) for _ in range(4)]
BS = [md.tensor(RNG.normal(size=4) * 0.1) for _ in range(4)]


def segment(h, w, b):
    """Two layers: the intermediates (pre-activations, activations) a tape would keep."""
    h = md.tanh(h @ w + b)
    return md.sin(h @ w.T) * h


def loss(ws, bs, ck=True):
    seg = md.checkpoint(segment) if ck else segment
    h = X
    for w, b in zip(ws, bs):
        h = seg(h, w, b)
    return (h * h).sum()


def test_grad_equals_grad_of_the_plain_function():
    g = md.grad(loss, argnums=(0, 1))(WS, BS)
    want = md.grad(lambda ws, bs: loss(ws, bs, ck=False), argnums=(0, 1))(WS, BS)
    close_trees(g, want)


def test_closed_form_first_and_second_derivative():
    f = md.checkpoint(lambda x: md.sin(x) * x)
    x = md.tensor([0.3, -1.2, 2.0])
    xs = x.numpy()
    close(md.grad(lambda t: f(t).sum())(x), np.cos(xs) * xs + np.sin(xs))
    close(md.grad(lambda t: md.grad(lambda u: f(u).sum())(t).sum())(x), 2 * np.cos(xs) - xs * np.sin(xs))


def test_vjp_with_a_non_scalar_output_and_tape_style_backward():
    f = md.checkpoint(segment)
    u = md.tensor(RNG.normal(size=(5, 4)))
    _, back = md.vjp(f, X, WS[0], BS[0])
    _, want = md.vjp(segment, X, WS[0], BS[0])
    close_trees(back(u), want(u))
    w = md.tensor(WS[0].numpy(), requires_grad=True)
    y = (f(X, w, BS[0]) * u).sum()
    y.backward()
    close(w.grad, want(u)[1])


@pytest.mark.parametrize("mode", md.transforms.HVP_MODES)
def test_hvp_every_mode(mode):
    v_w = [md.tensor(RNG.normal(size=(4, 4))) for _ in WS]
    v_b = [md.tensor(RNG.normal(size=4)) for _ in BS]
    got = md.hvp(lambda ws, bs: loss(ws, bs), (WS, BS), (v_w, v_b), mode=mode)
    want = md.hvp(lambda ws, bs: loss(ws, bs, ck=False), (WS, BS), (v_w, v_b), mode=mode)
    close_trees(got, want)


def test_jvp_through_checkpoint_is_the_jvp_of_f_and_records_nothing():
    v = md.tensor(RNG.normal(size=(5, 4)))
    before = md.modes.reverse.nodes_created()
    got = md.jvp(lambda x: md.checkpoint(segment)(x, WS[0], BS[0]), (X,), (v,))
    assert md.modes.reverse.nodes_created() == before
    close_trees(got, md.jvp(lambda x: segment(x, WS[0], BS[0]), (X,), (v,)))


def test_vmap_and_jacobians():
    f = md.checkpoint(lambda x: md.tanh(x) * x.sum())
    xs = md.tensor(RNG.normal(size=(3, 4)))
    close(md.vmap(f)(xs), md.vmap(lambda x: md.tanh(x) * x.sum())(xs))
    close(md.jacrev(f)(xs[0]), md.jacfwd(lambda x: md.tanh(x) * x.sum())(xs[0]))


def test_pytrees_in_and_out_with_static_leaves_and_keywords():
    def f(p, scale=1.0, *, shift):
        return {"y": md.sin(p["a"]) * p["b"] * scale + shift, "pair": (md.cos(p["a"]).sum(), 2)}

    p = {"a": md.tensor([0.1, 0.7, -0.4]), "b": md.tensor(1.5)}

    def loss_of(fn):
        def run(p):
            out = fn(p, 3.0, shift=md.tensor(0.5))
            assert out["pair"][1] == 2 and isinstance(out["pair"][1], int)  # a number comes back as is
            return out["y"].sum() + out["pair"][0] * 2.0

        return run

    close_trees(md.grad(loss_of(md.checkpoint(f)))(p), md.grad(loss_of(f))(p))
    close_trees(md.checkpoint(f)(p, shift=1.0)["y"], f(p, shift=1.0)["y"])


def test_outputs_of_two_float_dtypes_keep_their_dtypes():
    f = md.checkpoint(lambda x: (md.sin(x), md.cos(x).astype("float32")))
    x = md.tensor([0.5, 1.5])
    out = md.vjp(f, x)[0]
    assert out[0].dtype == np.float64 and out[1].dtype == np.float32
    g = md.grad(lambda t: f(t)[0].sum() + f(t)[1].astype("float64").sum())(x)
    close(g, np.cos(x.numpy()) - np.sin(x.numpy()), rtol=1e-6)  # (through a float32 cos: 1e-6)


def test_the_tape_keeps_fewer_bytes():
    """Deterministic: the checkpointed tape saves each segment's inputs, not its intermediates."""
    x = md.tensor(RNG.normal(size=(64, 4)))
    ws = [md.tensor(w.numpy(), requires_grad=True) for w in WS]

    def deep(ck):
        seg = md.checkpoint(segment) if ck else segment
        h = x
        for w, b in zip(ws, BS):
            h = seg(h, w, b)
        return (h * h).sum()

    def saved(y):
        return sum(e["bytes"] for e in md.tape_stats(y).values())

    plain, ck = deep(False), deep(True)
    assert saved(ck) < saved(plain) / 2, (saved(ck), saved(plain))
    assert set(md.tape_stats(ck)) == {"checkpoint(segment)", "multiply", "sum"}
    assert md.tape_stats(ck)["checkpoint(segment)"]["nodes"] == len(ws)
    ck.backward()
    grads = [w.grad for w in ws]
    for w in ws:
        w.zero_grad_()
    plain.backward()
    for g, w in zip(grads, ws):
        close(g, w.grad)


def test_no_grad_runs_f_directly():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    with md.no_grad():
        y = md.checkpoint(lambda t: t * 2.0)(w)
    assert not y.requires_grad
    close(y, [2.0, 4.0])


def test_integer_inputs_pass_as_constants():
    f = md.checkpoint(lambda x, idx: md.take(x, idx) * x.sum())
    x = md.tensor([1.0, 2.0, 3.0])
    idx = md.tensor([2, 0])
    close(md.grad(lambda t: f(t, idx).sum())(x), md.grad(lambda t: (md.take(t, idx) * t.sum()).sum())(x))


# ----------------------------------------------------------------------------- error paths
def test_not_callable():
    with pytest.raises(TypeError, match=r"checkpoint: f must be callable, got int"):
        md.checkpoint(3)


def test_closing_over_a_traced_tensor_raises():
    w = md.tensor(2.0, requires_grad=True)
    with pytest.raises(TracerError, match=r"checkpoint\(<lambda>\): f's output depends on a traced tensor"):
        md.checkpoint(lambda x: x * w)(md.tensor(1.0, requires_grad=True))
    with pytest.raises(TracerError, match=r"pass that tensor to the checkpointed function as an argument"):
        md.grad(lambda v: md.grad(lambda x: md.checkpoint(lambda t: t * v)(x))(md.tensor(1.0)))(
            md.tensor(3.0)
        )


def test_integer_output_raises():
    with pytest.raises(TypeError, match=r"checkpoint\(<lambda>\): f returned a int64 tensor of shape \(2,\)"):
        md.grad(lambda x: md.checkpoint(lambda t: (t.sum(), md.argmax(md.stack([t, t]), axis=0)))(x)[0])(
            md.tensor([1.0, 2.0])
        )


def test_no_output_raises():
    with pytest.raises(ValueError, match=r"checkpoint\(<lambda>\): f returned no tensor"):
        md.grad(lambda x: md.checkpoint(lambda t: ())(x) or x.sum())(md.tensor([1.0]))
