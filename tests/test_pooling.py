"""max_pool2d and avg_pool2d on strided sub-grids (minidiff/primitives/pooling.py) against the formulas
they replaced, written here with minidiff ops: a max over axes (3, 5) of a reshaped view when the
windows tile the input, else a max (mean) over the stacked windows of ``F.unfold``.

Inputs are drawn with many ties (values from a set of five), odd sizes, kernel ≠ stride and overlapping
windows.  Values and reverse-mode derivatives agree exactly where the windows do not overlap; with
overlapping windows an element's cotangent is a sum over its windows, added in another order, so they
agree to 4 ulp (rtol 1e-15 in float64, 1e-6 in float32).  JVPs add a window's shares in another order
too (three or more tied maxima): same tolerance.  Second order: the HVP of ``sum(pool(x)²)``, whose
Hessian is ``2 Jᵀ J`` with the shares in J.  The spec battery (tests/opspecs.py: ``max_pool2d``,
``avg_pool2d``, ``pool2d_windows``, ``pool2d_fold``, ``max_pool2d_share``) checks the rules against finite differences on
tie-free inputs, under vmap and in float32.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minidiff as md
from minidiff.errors import ShapeError
from minidiff.primitives import pooling

F = md.nn.functional
TIES = [-1.0, 0.0, 0.5, 1.0, 2.0]  # few values: most windows hold tied maxima


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def old_max_pool2d(x, kernel_size=2, stride=None):
    """The formula before the sub-grid primitive (minidiff ops only)."""
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride if stride is not None else (kh, kw))
    n, c, h, w = x.shape
    if (sh, sw) == (kh, kw) and h % kh == 0 and w % kw == 0:
        return md.max(md.reshape(x, (n, c, h // kh, kh, w // kw, kw)), axis=(3, 5))
    return md.max(F.unfold(x, (kh, kw), stride=(sh, sw)), axis=2)


def old_avg_pool2d(x, kernel_size=2, stride=None):
    kh, kw = _pair(kernel_size)
    return md.mean(F.unfold(x, (kh, kw), stride=_pair(stride if stride is not None else (kh, kw))), axis=2)


@st.composite
def pool_inputs(draw, dtype="float64"):
    """``(x, kernel, stride)``: a tie-heavy NCHW input with odd and even sides, any kernel/stride."""
    kernel = draw(st.sampled_from([1, 2, 3, (2, 1), (1, 3), (3, 2)]))
    stride = draw(st.sampled_from([None, 1, 2, 3, (1, 2), (2, 1)]))
    kh, kw = _pair(kernel)
    shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 3)),
        draw(st.integers(kh, 7)),
        draw(st.integers(kw, 7)),
    )
    x = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from(TIES))).astype(dtype)
    return x, kernel, stride


def _overlaps(kernel, stride):
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride is not None else kernel)
    return sh < kh or sw < kw


def _same(got, want, exact, rtol):
    got, want = np.asarray(got), np.asarray(want)
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max(initial=1.0))


def _directions(x, seed):
    rng = np.random.default_rng(seed)
    return md.tensor(rng.standard_normal(x.shape).astype(x.dtype))


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-15), ("float32", 1e-6)])
@pytest.mark.parametrize("which", ["max", "avg"])
@settings(max_examples=60, deadline=None)
@given(drawn=pool_inputs(), seed=st.integers(0, 2**16))
def test_values_and_derivatives_match_the_old_formula_ties_included(which, dtype, rtol, drawn, seed):
    x, kernel, stride = drawn
    x = md.tensor(x.astype(dtype))
    new, old = (F.max_pool2d, old_max_pool2d) if which == "max" else (F.avg_pool2d, old_avg_pool2d)
    f_new, f_old = (lambda x: new(x, kernel, stride)), (lambda x: old(x, kernel, stride))
    y_new = f_new(x)
    assert y_new.shape == f_old(x).shape and y_new.dtype == x.dtype
    np.testing.assert_array_equal(y_new.numpy(), f_old(x).numpy())

    exact = which == "max" and not _overlaps(kernel, stride)
    ybar = _directions(y_new, seed)
    (g_new,) = md.vjp(f_new, x)[1](ybar)
    (g_old,) = md.vjp(f_old, x)[1](ybar)
    _same(g_new.numpy(), g_old.numpy(), exact, rtol)

    xdot = _directions(x, seed + 1)
    _, t_new = md.jvp(f_new, (x,), (xdot,))
    _, t_old = md.jvp(f_old, (x,), (xdot,))
    _same(t_new.numpy(), t_old.numpy(), False, rtol)


@settings(max_examples=30, deadline=None)
@given(drawn=pool_inputs(), seed=st.integers(0, 2**16))
def test_second_order_matches_the_old_formula_in_both_modes(drawn, seed):
    """HVPs of ``sum(max_pool(x)²)`` in the three compositions (the rules' own derivatives), ties
    included."""
    x, kernel, stride = drawn
    x, v = md.tensor(x), _directions(md.tensor(x), seed)

    def loss(pool):
        return lambda x: md.sum(pool(x, kernel, stride) ** 2)

    for mode in ("fwd-over-rev", "rev-over-fwd", "rev-over-rev"):
        (h_new,) = md.hvp(loss(F.max_pool2d), (x,), (v,), mode=mode)
        (h_old,) = md.hvp(loss(old_max_pool2d), (x,), (v,), mode=mode)
        _same(h_new.numpy(), h_old.numpy(), False, 1e-14)


@settings(max_examples=20, deadline=None)
@given(drawn=pool_inputs(), seed=st.integers(0, 2**16))
def test_vmap_of_values_and_vjps_with_ties_equals_one_example_at_a_time(drawn, seed):
    x, kernel, stride = drawn
    xs = md.tensor(np.stack([x, x[::-1] * 0.5]))
    f = lambda x: F.max_pool2d(x, kernel, stride)  # noqa: E731
    ybar = _directions(f(xs[0]), seed)
    got = md.vmap(lambda x: md.vjp(f, x)[1](ybar)[0])(xs)
    for k in range(2):
        (want,) = md.vjp(old_max_pool2d_fn(kernel, stride), xs[k])[1](ybar)
        _same(got[k].numpy(), want.numpy(), not _overlaps(kernel, stride), 1e-15)
        np.testing.assert_array_equal(md.vmap(f)(xs)[k].numpy(), f(xs[k]).numpy())


def old_max_pool2d_fn(kernel, stride):
    return lambda x: old_max_pool2d(x, kernel, stride)


def test_ties_share_the_derivative_evenly_within_each_window():
    x = md.tensor([[[[1.0, 1.0, 3.0, 0.0], [1.0, 1.0, 3.0, 3.0]]]])
    g = md.grad(lambda x: F.max_pool2d(x, 2).sum())(x)
    assert g[0, 0].tolist() == [[0.25, 0.25, 1 / 3, 0.0], [0.25, 0.25, 1 / 3, 1 / 3]]
    _, t = md.jvp(lambda x: F.max_pool2d(x, 2), (x,), (md.ones_like(x),))
    assert t[0, 0].tolist() == [[1.0, 1.0]]


def test_overlapping_windows_add_an_elements_shares():
    """Stride 1, kernel 2: the centre of a 3×3 input wins all four windows and gets every cotangent."""
    x = md.tensor(np.array([[0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 0.0]]).reshape(1, 1, 3, 3))
    g = md.grad(lambda x: (F.max_pool2d(x, 2, 1) * md.tensor([[1.0, 2.0], [3.0, 4.0]])).sum())(x)
    assert g[0, 0].tolist() == [[0.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 0.0]]


def test_odd_sides_drop_the_rows_and_columns_past_the_last_window():
    x = md.arange(35.0).reshape(1, 1, 5, 7)
    assert F.max_pool2d(x, 2).tolist() == [[[[8.0, 10.0, 12.0], [22.0, 24.0, 26.0]]]]
    g = md.grad(lambda x: F.avg_pool2d(x, 2).sum())(x)[0, 0].numpy()
    assert np.all(g[:4, :6] == 0.25) and np.all(g[4] == 0) and np.all(g[:, 6] == 0)


def test_nan_windows_give_nan_like_the_max_reduction():
    x = md.tensor(np.array([np.nan, 1.0, 2.0, 3.0]).reshape(1, 1, 2, 2))
    assert np.isnan(F.max_pool2d(x, 2).item())
    with np.errstate(invalid="ignore", divide="ignore"):
        g_new = md.grad(lambda x: F.max_pool2d(x, 2).sum())(x).numpy()
        g_old = md.grad(lambda x: old_max_pool2d(x, 2).sum())(x).numpy()
    np.testing.assert_array_equal(g_new, g_old)


@pytest.mark.parametrize("fn", [F.max_pool2d, F.avg_pool2d], ids=["max_pool2d", "avg_pool2d"])
def test_errors_name_the_op_and_the_shapes(fn):
    name = fn.__name__
    with pytest.raises(
        ShapeError, match=rf"{name}: expected NCHW input of 4 dimensions, got shape \(3, 4, 4\)"
    ):
        fn(md.ones((3, 4, 4)), 2)
    with pytest.raises(
        ShapeError, match=rf"{name}: kernel \(5, 2\) larger than the input \(4, 6\) .*\(1, 2, 4, 6\)"
    ):
        fn(md.ones((1, 2, 4, 6)), (5, 2))
    with pytest.raises(
        ShapeError, match=rf"{name}: kernel_size \(2, 2\) and stride \(0, 1\) must be positive"
    ):
        fn(md.ones((1, 2, 4, 6)), 2, (0, 1))
    with pytest.raises(ShapeError, match=rf"{name}: kernel_size \(0, 2\)"):
        fn(md.ones((1, 2, 4, 6)), (0, 2))


def test_the_primitives_check_their_own_shapes():
    with pytest.raises(
        ShapeError, match=r"max_pool2d: kernel \(3, 3\) larger than the input's last two axes \(2, 5\)"
    ):
        pooling.max_pool(md.ones((2, 5)), (3, 3), (1, 1))
    with pytest.raises(
        ShapeError, match=r"pool2d_windows: kernel \(1, 1\) and stride \(1, 0\) must be positive"
    ):
        pooling.windows(md.ones((2, 5)), (1, 1), (1, 0))
    with pytest.raises(
        ShapeError, match=r"pool2d_fold: expected windows of shape \(4, \.\.\., 2, 2\) .* got \(3, 2, 2\)"
    ):
        pooling.fold(md.ones((3, 2, 2)), (2, 2), (2, 2), (4, 4))
    with pytest.raises(ShapeError, match=r"pool2d_sum: pools the last two axes; got an input with only 1"):
        pooling.window_sum(md.ones(5), (1, 1), (1, 1))


def test_integer_input_pools_in_its_dtype():
    x = md.arange(16).reshape(1, 1, 4, 4)
    assert F.max_pool2d(x, 2).dtype == x.dtype
    assert F.max_pool2d(x, 2).tolist() == [[[[5, 7], [13, 15]]]]
    assert F.avg_pool2d(x, 2).tolist() == [[[[2.5, 4.5], [10.5, 12.5]]]]


def test_the_benchmark_runs_quick_and_writes_json(tmp_path, capsys, monkeypatch):
    """benchmarks/pooling.py --quick: every implementation agrees with ``new`` (no timing asserted);
    PyTorch hidden, so its absence is reported by name."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "pooling.py"
    spec = importlib.util.spec_from_file_location("pooling_bench", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--quick", "--repeats", "1", "--cnn", "--json", str(tmp_path / "pool.json")])
    out = json.loads((tmp_path / "pool.json").read_text())
    assert [r["pool"] for r in out["results"]] == ["max_pool2d", "avg_pool2d"] * len(bench.QUICK_SHAPES)
    for r in out["results"]:
        assert set(r["jobs"]) == set(bench.JOBS)
        assert {"old", "new", "numpy"} <= set(r["jobs"]["f"])
        assert all(d == 0.0 for diffs in r["max_abs_diff_from_new"].values() for d in diffs.values()), r
    assert set(out["cnn"]) == set(bench.JOBS) and set(out["cnn"]["f"]) == {"old", "new"}
    assert out["environment"]["cpu"] and "load_average" in out
    printed = capsys.readouterr().out
    assert "max_pool2d 2×2 on (1, 64, 28, 28)" in printed and "torch: not installed, skipped" in printed
    assert "torch" not in out["results"][0]["jobs"]["f"]
