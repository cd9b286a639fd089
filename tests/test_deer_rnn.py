"""DEER for recurrences against the sequential loop: outputs, derivatives, failure modes, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidiff as md
from minidiff.deer import (
    DeerConvergenceError,
    DeerConvergenceWarning,
    cells,
    deer_rnn,
    default_tolerances,
    sequential_rnn,
)

TIGHT = dict(atol=1e-12, rtol=0.0)  # solver tolerances for derivative checks in float64
# Output agreement with the sequential loop at the spec's default tolerances: Newton converges
# quadratically, so once |Δy| ≤ atol + rtol|y| the remaining error is far below the tolerance.
OUT_TOL = {"float64": dict(rtol=1e-7, atol=1e-8), "float32": dict(rtol=1e-4, atol=1e-5)}
GRAD_TOL = dict(rtol=1e-8, atol=1e-10)  # float64, solver at TIGHT


def setup(cell, batch=(2,), T=9, m=3, hidden=3, dtype="float64", seed=0, scale=1.0):
    fn, init, state = cells.CELLS[cell]
    params = init(m, hidden, seed=seed, dtype=dtype, scale=scale)
    rng = np.random.default_rng(seed)
    xs = md.tensor(rng.normal(size=batch + (T, m)).astype(dtype))
    y0 = md.tensor((0.3 * rng.normal(size=batch + (state(hidden),))).astype(dtype))
    return fn, y0, xs, params


def leaves(tree):
    return [np.asarray(x.numpy()) for x in md.pytree.flatten(tree)[0]]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", ["gru", "lstm", "elman"])
@pytest.mark.parametrize("T", [1, 7, 40])
def test_outputs_match_the_sequential_loop(cell, dtype, T):
    f, y0, xs, p = setup(cell, T=T, dtype=dtype)
    ys, stats = deer_rnn(f, y0, xs, p, return_stats=True)
    assert stats.converged and 1 <= stats.iterations <= 20
    assert stats.tolerances == default_tolerances(md.float64 if dtype == "float64" else md.float32)
    ref = sequential_rnn(f, y0, xs, p)
    assert ys.shape == ref.shape == xs.shape[:-1] + y0.shape[-1:] and ys.dtype == ref.dtype
    np.testing.assert_allclose(ys.numpy(), ref.numpy(), **OUT_TOL[dtype])


@settings(max_examples=12, deadline=None)
@given(
    cell=st.sampled_from(["gru", "lstm", "elman"]),
    batch=st.lists(st.integers(1, 3), max_size=2).map(tuple),
    T=st.integers(1, 50),
    hidden=st.integers(1, 4),
    method=st.sampled_from(["auto", "sequential", "log", "blocked"]),
    seed=st.integers(0, 1000),
)
def test_any_batch_length_size_and_scan(cell, batch, T, hidden, method, seed):
    f, y0, xs, p = setup(cell, batch=batch, T=T, hidden=hidden, seed=seed)
    ys = deer_rnn(f, y0, xs, p, method=method, **TIGHT)
    np.testing.assert_allclose(ys.numpy(), sequential_rnn(f, y0, xs, p).numpy(), rtol=1e-10, atol=1e-12)


def test_y0_without_batch_axes_is_broadcast_and_a_user_cell_works():
    f = lambda y, x, p: md.tanh(y @ p["W"] + x * p["u"]) + 0.1 * md.sin(y)
    rng = np.random.default_rng(1)
    p = {"W": md.tensor(rng.normal(size=(2, 2)) * 0.5), "u": md.tensor([1.0, -0.5])}
    xs, y0 = md.tensor(rng.normal(size=(3, 11, 2))), md.tensor([0.2, -0.1])
    ys = deer_rnn(f, y0, xs, p)
    assert ys.shape == (3, 11, 2)
    np.testing.assert_allclose(ys.numpy(), sequential_rnn(f, y0, xs, p).numpy(), **OUT_TOL["float64"])


def test_warm_start_at_the_solution_takes_no_newton_step():
    f, y0, xs, p = setup("gru", T=30)
    ys, s1 = deer_rnn(f, y0, xs, p, return_stats=True, **TIGHT)
    again, s2 = deer_rnn(f, y0, xs, p, init=ys, return_stats=True, **TIGHT)
    assert s1.iterations >= 2 and s2.iterations == 0 and s2.converged
    np.testing.assert_allclose(again.numpy(), ys.numpy(), rtol=0, atol=0)
    # a warm start near the solution (perturbed parameters, as between training steps) saves steps
    p2 = {k: v * 1.01 for k, v in p.items()}
    _, cold = deer_rnn(f, y0, xs, p2, return_stats=True, **TIGHT)
    _, warm = deer_rnn(f, y0, xs, p2, init=ys, return_stats=True, **TIGHT)
    assert warm.converged and warm.iterations < cold.iterations


@pytest.mark.parametrize("cell", ["gru", "lstm", "elman"])
def test_gradients_match_the_tape_through_the_loop(cell):
    f, y0, xs, p = setup(cell, T=12)
    w = md.tensor(np.random.default_rng(5).normal(size=(2, 12, y0.shape[-1])))
    deer_loss = lambda p, xs, y0: md.sum(md.tanh(deer_rnn(f, y0, xs, p, **TIGHT)) * w)
    seq_loss = lambda p, xs, y0: md.sum(md.tanh(sequential_rnn(f, y0, xs, p)) * w)
    got = md.grad(deer_loss, argnums=(0, 1, 2))(p, xs, y0)
    want = md.grad(seq_loss, argnums=(0, 1, 2))(p, xs, y0)
    for a, b in zip(leaves(got), leaves(want)):
        np.testing.assert_allclose(a, b, **GRAD_TOL)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_jvp_matches_forward_mode_through_the_loop(cell):
    f, y0, xs, p = setup(cell, T=10)
    rng = np.random.default_rng(3)
    tan = (
        {k: md.tensor(rng.normal(size=v.shape)) for k, v in p.items()},
        md.tensor(rng.normal(size=xs.shape)),
        md.tensor(rng.normal(size=y0.shape)),
    )
    _, got = md.jvp(lambda p, xs, y0: deer_rnn(f, y0, xs, p, **TIGHT), (p, xs, y0), tan)
    _, want = md.jvp(lambda p, xs, y0: sequential_rnn(f, y0, xs, p), (p, xs, y0), tan)
    np.testing.assert_allclose(got.numpy(), want.numpy(), **GRAD_TOL)


@pytest.mark.parametrize("cell", ["gru", "elman"])
def test_check_grads_adjoint_identity_and_second_order(cell):
    """Finite differences, <J^T u, v> = <u, J v>, and the same one order up (HVP modes)."""
    f, y0, xs, p = setup(cell, batch=(), T=6, hidden=2)
    md.testing.check_grads(
        lambda p, xs, y0: deer_rnn(f, y0, xs, p, **TIGHT), (p, xs, y0), order=2, rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("mode", ["fwd-over-rev", "rev-over-fwd", "rev-over-rev"])
def test_hvp_matches_the_sequential_loop_in_every_mode(mode):
    f, y0, xs, p = setup("gru", batch=(), T=8, hidden=2)
    v = {k: md.tensor(np.random.default_rng(7).normal(size=v.shape)) for k, v in p.items()}
    loss = lambda ys: md.sum(md.sin(ys))
    (got,) = md.hvp(lambda p: loss(deer_rnn(f, y0, xs, p, **TIGHT)), (p,), (v,), mode=mode)
    (want,) = md.hvp(lambda p: loss(sequential_rnn(f, y0, xs, p)), (p,), (v,), mode="fwd-over-rev")
    for a, b in zip(leaves(got), leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


def test_tape_style_backward_through_deer():
    f, y0, xs, p = setup("elman", T=5)
    W = p["W_hh"].requires_grad_()
    md.sum(deer_rnn(f, y0, xs, {**p, "W_hh": W}, **TIGHT)).backward()
    want = md.grad(lambda W: md.sum(sequential_rnn(f, y0, xs, {**p, "W_hh": W})))(p["W_hh"])
    np.testing.assert_allclose(W.grad.numpy(), want.numpy(), **GRAD_TOL)


def logistic(y, x, p):
    """The logistic map at r = 3.9 (chaotic): Newton cannot settle on a long horizon."""
    return p * y * (1.0 - y) + 0.0 * x


def test_a_chaotic_map_ends_unconverged_with_a_warning():
    xs, y0, r = md.zeros((200, 1)), md.tensor([0.2]), md.tensor(3.9)
    with pytest.warns(DeerConvergenceWarning, match=r"did not converge .* after 15 iterations"):
        ys, stats = deer_rnn(logistic, y0, xs, r, max_iter=15, return_stats=True)
    assert not stats.converged and stats.iterations == 15
    assert np.all(np.isfinite(ys.numpy())) and np.all(np.abs(ys.numpy()) <= 1e8)  # the guard held


def test_a_chaotic_map_raises_when_asked():
    xs, y0, r = md.zeros((200, 1)), md.tensor([0.2]), md.tensor(3.9)
    with pytest.raises(DeerConvergenceError, match="did not converge"):
        deer_rnn(logistic, y0, xs, r, max_iter=15, on_failure="raise")


def test_max_iter_ends_unconverged_and_reports_the_residual():
    f, y0, xs, p = setup("gru", T=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, stats = deer_rnn(f, y0, xs, p, max_iter=1, atol=1e-12, rtol=0.0, return_stats=True)
    assert not stats.converged and stats.residual > 1e-12
    assert any(issubclass(w.category, DeerConvergenceWarning) for w in caught)


def test_nan_inputs_raise():
    f, y0, xs, p = setup("gru", T=4)
    bad = xs.numpy().copy()
    bad[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match=r"deer_rnn: xs of shape \(2, 4, 3\) contains NaN"):
        deer_rnn(f, y0, md.tensor(bad), p)
    with pytest.raises(ValueError, match="y0 .* contains NaN"):
        deer_rnn(f, md.full(y0.shape, float("nan")), xs, p)
    with pytest.raises(ValueError, match="params leaf 0 .* contains NaN"):
        deer_rnn(f, y0, xs, {**p, "W_hh": p["W_hh"] * float("inf")})


def test_error_paths():
    f, y0, xs, p = setup("gru", T=4)
    with pytest.raises(md.ShapeError, match=r"xs must have shape \(\*batch, T, m\)"):
        deer_rnn(f, y0, xs[0, 0], p)
    with pytest.raises(md.ShapeError, match=r"y0 of shape \(5, 3\) does not match the batch axes \(2,\)"):
        deer_rnn(f, md.zeros((5, 3)), xs, p)
    with pytest.raises(md.ShapeError, match=r"y0 must have shape"):
        deer_rnn(f, md.tensor(0.0), xs, p)
    with pytest.raises(
        md.ShapeError, match=r"the cell returned \(2, 4, 9\) for a state of shape \(2, 4, 3\)"
    ):
        deer_rnn(lambda y, x, p: md.concatenate([y, y, y], axis=-1), y0, xs, p)
    with pytest.raises(md.ShapeError, match=r"init must have the trajectory's shape \(2, 4, 3\)"):
        deer_rnn(f, y0, xs, p, init=md.zeros((2, 3, 3)))
    with pytest.raises(md.ShapeError, match="no time steps"):
        deer_rnn(f, y0, xs[:, :0], p)
    with pytest.raises(md.DTypeError, match="y0 has dtype float32 but xs has float64"):
        deer_rnn(f, y0.astype("float32"), xs, p)
    with pytest.raises(md.DTypeError, match="expected floating-point tensors, got int64"):
        deer_rnn(f, y0, xs, {"k": md.tensor([1, 2])})
    with pytest.raises(ValueError, match="on_failure must be 'warn' or 'raise'"):
        deer_rnn(f, y0, xs, p, on_failure="ignore")
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        deer_rnn(f, y0, xs, p, max_iter=0)
    with pytest.raises(TypeError, match="xs must be a minidiff Tensor"):
        deer_rnn(f, y0, xs.numpy(), p)
    with pytest.raises(TypeError, match="params leaves must be minidiff Tensors"):
        sequential_rnn(f, y0, xs, {"W": 1.0})


def test_cell_initializer_errors():
    with pytest.raises(ValueError, match=r"init_gru: input_size must be an integer >= 1"):
        cells.init_gru(0, 3)


def test_jacobians_through_deer_match_the_loop():
    """jacfwd pushes a batch of tangents through DEER's JVP rule (the scan's batching rule)."""
    f, y0, xs, p = setup("gru", T=7, hidden=3)
    with_w = lambda W: {**p, "W_hh": W}
    J_deer = md.jacfwd(lambda W: deer_rnn(f, y0, xs, with_w(W), **TIGHT))(p["W_hh"])
    J_seq = md.jacrev(lambda W: sequential_rnn(f, y0, xs, with_w(W)))(p["W_hh"])
    assert J_deer.shape == (2, 7, 3, 9, 3)
    np.testing.assert_allclose(J_deer.numpy(), J_seq.numpy(), **GRAD_TOL)


def test_bench_smoke_run_and_table(tmp_path):
    """A tiny grid of ``minidiff bench deer``: the result's fields and the command's outputs."""
    import argparse
    import json

    from minidiff.bench import deer_bench

    r = deer_bench.run_deer_bench((1, 2), (30,), (1, 2), cell="elman", repeats=1, seq_steps=10)
    assert [(p["batch"], p["n"]) for p in r["points"]] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for p in r["points"]:
        assert p["converged"] and p["max_deviation"] < 1e-5  # float32 against the array loop
        assert p["seq_forward"]["extrapolated"] and p["seq_forward"]["measured_steps"] == 10
    assert "DEER vs sequential evaluation, elman cell" in deer_bench.format_deer_bench(r)
    parser = argparse.ArgumentParser()
    deer_bench.add_arguments(parser)
    path = tmp_path / "deer.json"
    args = parser.parse_args(["--sizes", "2", "--lengths", "20", "--repeats", "1", "--json", str(path)])
    assert deer_bench.run(args) == 0
    assert json.loads(path.read_text())["points"][0]["T"] == 20
    skipped = deer_bench.run_deer_bench((64,), (10**6,), (16,), max_memory_gb=0.01)
    assert skipped["points"] == [] and "memory" in skipped["skipped"][0]["reason"]
    # the hand-written backprop of the array floor agrees with minidiff's tape
    for cell in ("gru", "lstm", "elman"):
        f, y0, xs, p = setup(cell, T=6)
        want = md.grad(lambda p: md.sum(sequential_rnn(f, y0, xs, p)))(p)
        raw = {k: v.numpy() for k, v in p.items()}
        got = deer_bench._array_forward_grad(cell, np, raw, y0.numpy(), xs.numpy())
        for k in want:
            np.testing.assert_allclose(got[k], want[k].numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="unknown cell 'rnn'"):
        deer_bench.run_deer_bench(cell="rnn")
    with pytest.raises(SystemExit):
        parser.parse_args(["--sizes", "0"])


def test_derivatives_of_an_unconverged_solve_warn_once_and_repeat_no_newton_step():
    xs, y0, r = md.zeros((60, 1)), md.tensor([0.2]), md.tensor(3.9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        md.jvp(lambda r: deer_rnn(logistic, y0, xs, r, max_iter=4), (r,), (md.tensor(1.0),))
    ours = [w for w in caught if w.category is DeerConvergenceWarning]
    assert len(ours) == 1  # (NumPy may also warn: the tangents of a diverged trajectory overflow)
    assert ours[0].filename == __file__  # the warning points at the caller


def test_float32_gradients_at_default_tolerances():
    """Training precision: float32, the spec's default tolerances, gradients within 1e-4 relative."""
    f, y0, xs, p = setup("gru", T=50, dtype="float32")
    got = md.grad(lambda p: md.sum(deer_rnn(f, y0, xs, p)))(p)
    want = md.grad(lambda p: md.sum(sequential_rnn(f, y0, xs, p)))(p)
    for k in want:
        assert got[k].dtype == md.float32
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_jacobians_in_blocks_of_time_steps_give_the_same_answers(cell, monkeypatch):
    """The Newton loop and the rules compute the Jacobians a block of steps at a time (for cache);
    with blocks of 2 steps (T = 9: an uneven last block) outputs, gradients and JVPs are unchanged."""
    from minidiff.deer import rnn

    f, y0, xs, p = setup(cell, T=9)
    loss = lambda y0, xs, p: (deer_rnn(f, y0, xs, p, **TIGHT) ** 2).sum()  # noqa: E731
    whole = (deer_rnn(f, y0, xs, p, **TIGHT), md.grad(loss, argnums=(0, 1, 2))(y0, xs, p))
    tangents = (md.ones_like(y0), md.ones_like(xs), md.pytree.tree_map(md.ones_like, p))
    whole_jvp = md.jvp(lambda *a: deer_rnn(f, *a, **TIGHT), (y0, xs, p), tangents)[1]
    state = y0.shape[-1]
    monkeypatch.setattr(rnn, "JACOBIAN_BLOCK_BYTES", 2 * 2 * state * state * 8)  # 2 steps × batch 2
    blocked = (deer_rnn(f, y0, xs, p, **TIGHT), md.grad(loss, argnums=(0, 1, 2))(y0, xs, p))
    blocked_jvp = md.jvp(lambda *a: deer_rnn(f, *a, **TIGHT), (y0, xs, p), tangents)[1]
    np.testing.assert_allclose(blocked[0].numpy(), whole[0].numpy(), rtol=1e-12, atol=1e-14)
    for a, b in zip(leaves(blocked[1]), leaves(whole[1])):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(blocked_jvp.numpy(), whole_jvp.numpy(), rtol=1e-10, atol=1e-12)
    calls = []
    original = rnn._jacobian
    monkeypatch.setattr(rnn, "_jacobian", lambda *a: calls.append(a[1].shape) or original(*a))
    deer_rnn(f, y0, xs, p, **TIGHT)
    assert calls and all(shape[-2] <= 2 for shape in calls)  # the blocked route was taken


def test_the_gru_digits_example_runs_both_ways_alike(capsys):
    """Smoke run of examples/deer_gru_digits.py on 4×4 digits: DEER and the loop give one loss curve."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "deer_gru_digits.py"
    spec = importlib.util.spec_from_file_location("deer_gru_digits_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--size", "4", "--hidden", "3", "--batch", "4", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    gap = float(out.split("largest loss difference along the curves ")[1].split()[0])
    assert "T = 16" in out and gap < 1e-8
