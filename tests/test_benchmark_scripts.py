"""Smoke runs of the benchmark scripts in benchmarks/ with ``--quick``: they run, print their Markdown
tables with the documented columns and one row per measured point, and write JSON with the environment.
No time is asserted (speed lives in the scripts' output, not in tests)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

import minidiff as md

ROOT = Path(__file__).parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tables(text: str) -> list[list[list[str]]]:
    """The Markdown tables of ``text``: lists of rows, each a list of cells."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def _check_table(table: list[list[str]], columns: list[str], rows: int) -> None:
    header, rule, *body = table
    assert header == columns
    assert len(rule) == len(columns) and all(set(c) <= set("-:") for c in rule)
    assert len(body) == rows
    assert all(len(row) == len(columns) for row in body)


def test_dense_cost_quick_prints_both_tables_and_writes_json(tmp_path, capsys):
    bench, path = _load("dense_cost"), tmp_path / "dense.json"
    result = bench.main(["--quick", "--repeats", "1", "--iterations", "2", "--json", str(path)])
    dense, lm = _tables(capsys.readouterr().out)
    methods = ["SGD", "LBFGS", *bench.DENSE]
    _check_table(
        dense,
        [
            "problem",
            "n",
            "method",
            "ms per step",
            "quartiles",
            "÷ SGD step",
            "loss + gradient evaluations per step",
            "Hessians per step",
        ],
        rows=len(bench.dense_problems(True)) * len(methods),
    )
    assert [row[2] for row in dense[2 : 2 + len(methods)]] == methods
    assert all(row[5] == "1" for row in dense[2:] if row[2] == "SGD")
    assert {row[7] for row in dense[2:] if row[2] == "Newton"} == {"1"}
    _check_table(
        lm,
        [
            "problem",
            "m",
            "p",
            "method",
            "ms per step",
            "quartiles",
            "÷ SGD step",
            "Gauss-Newton products per step",
            "CG iterations per step",
        ],
        rows=len(bench.lm_problems(True)) * (1 + len(bench.LM_SETTINGS)),
    )
    for row in lm[2:]:
        if row[3].startswith("LM"):
            assert float(row[7]) == pytest.approx(float(row[8]) + 1)  # one product more than CG, for ρ
    saved = json.loads(path.read_text())
    assert saved["environment"]["cpu"] and saved["environment"]["numpy"]
    assert saved["dense"].keys() == result["dense"].keys()
    for entry in saved["dense"].values():
        for r in entry["rows"].values():
            assert r["q1_ms"] <= r["median_ms"] <= r["q3_ms"] and math.isfinite(r["vs_sgd"])


def test_deer_general_quick_prints_both_tables_and_writes_json(tmp_path, capsys):
    bench = _load("deer_general")
    path = tmp_path / "deer.json"
    result = bench.main(["--quick", "--json", str(path)])
    ms, bvp = _tables(capsys.readouterr().out)
    _check_table(
        ms,
        [
            "batch",
            "P",
            "n",
            "T",
            "DEER forward",
            "loop forward",
            "× loop",
            "DEER forward + gradient",
            "loop forward + gradient",
            "× loop",
            "Newton iterations",
            "max difference to the loop",
        ],
        rows=len(result["multishift"]),
    )
    assert {row[1] for row in ms[2:]} == {"1", "2"}
    _check_table(
        bvp,
        [
            "problem",
            "n",
            "DEER solve",
            "Newton iterations",
            "error vs exact",
            "error vs solve_bvp (tol 1e-10)",
            "solve_bvp at matched accuracy",
            "its tol, nodes",
            "÷ DEER",
            "DEER solve + gradient",
            "÷ solve",
        ],
        rows=2,
    )
    saved = json.loads(path.read_text())
    assert saved["environment"]["cpu"] and saved["settings"]["quick"] is True
    for p in saved["multishift"]:  # the solution is DEER's, the loop agrees (float32 tolerances)
        assert p["converged"] and p["max_difference"] < 1e-4
    for p in saved["bvp"]:
        assert p["converged"] and p["error_vs_solve_bvp"] < 1e-3
    assert saved["bvp"][0]["error_vs_exact"] < 1e-4  # Bratu, n = 50: O(h²) ≈ 6e-6


def test_bratu_exact_solution_solves_the_equation():
    bench = _load("deer_general")
    theta = bench.bratu_theta(1.0)
    assert theta == pytest.approx(1.5171645990507543, rel=1e-12)
    h = 1e-4
    y = bench.bratu_exact
    for x in (0.1, 0.37, 0.5, 0.9):
        second = (y(x + h) - 2 * y(x) + y(x - h)) / h**2
        assert second + math.exp(y(x)) == pytest.approx(0.0, abs=1e-6)
    assert abs(bench.bratu_exact(0.0)) < 1e-14 and abs(bench.bratu_exact(1.0)) < 1e-14


def test_forward_gradient_cost_prints_rf_beside_its_floor_and_the_pieces(capsys):
    bench = _load("forward_gradient_cost")
    bench.main(["--trees", str(ROOT), "--rounds", "1", "--repeats", "1"])
    (table,) = _tables(capsys.readouterr().out)
    columns = ["v", "tree", "f ms", "Rf", "floor (Rjvp + sampling)", "Rjvp", "sampling", "Rb", "Rf/Rb"]
    _check_table(table, columns, rows=2)
    bench.main(["--parts", "--repeats", "1"])
    (table,) = _tables(capsys.readouterr().out)
    _check_table(table, ["what", "ms", "quartiles", "÷ f", "page faults per call"], rows=10)


def test_conv_quick_prints_both_tables_and_writes_json(tmp_path, capsys):
    bench, path = _load("conv"), tmp_path / "conv.json"
    result = bench.main(["--quick", "--batches", "1", "--repeats", "1", "--json", str(path)])
    table, wino = _tables(capsys.readouterr().out)
    _check_table(
        table,
        [
            "what",
            "batch",
            "task",
            "old ms [q1–q3]",
            "new ms [q1–q3]",
            "PyTorch ms [q1–q3]",
            "new ÷ old",
            "new ÷ PyTorch",
        ],
        rows=(len(bench.LAYERS) + 1) * len(bench.TASKS),
    )
    assert [row[0] for row in table[2:]][-1] == "paper CNN"
    _check_table(
        wino,
        [
            "layer",
            "batch",
            "im2col f ms [q1–q3]",
            "Winograd f ms [q1–q3]",
            "im2col rel. error",
            "Winograd rel. error",
        ],
        rows=len(bench.LAYERS) - 1,
    )
    saved = json.loads(path.read_text())
    assert saved["environment"]["cpu"] and saved["settings"]["quick"] is True
    assert saved["rows"][-1]["loss_spread"] < 1e-4  # the old formula, the primitive (and PyTorch) agree
    for r in saved["winograd"]:  # float32 against float64: both formulas to a few float32 ulps
        assert max(r["relative_error"].values()) < 1e-5
    assert len(result["rows"]) == len(bench.LAYERS) + 1


def test_conv_winograd_equals_the_direct_convolution():
    bench = _load("conv")
    rng = np.random.default_rng(0)
    for side in (5, 6):  # odd and even images: the last tile is cut
        x, w = rng.standard_normal((2, 3, side, side)), rng.standard_normal((4, 3, 3, 3))
        np.testing.assert_allclose(
            bench.winograd_conv3x3(x, w), bench.direct_conv_float64(x, w), rtol=1e-12, atol=1e-12
        )
        got = md.nn.functional.conv2d(md.tensor(x), md.tensor(w), padding=1).numpy()
        np.testing.assert_allclose(got, bench.direct_conv_float64(x, w), rtol=1e-12, atol=1e-12)


def test_optim_floor_counts_match_the_flop_model_and_print_one_row_per_optimizer(capsys):
    """SGD's count is the backprop FLOP model's F·Rb = 3F − F₁; K-FAC and Shampoo add to it."""
    bench = _load("optim_floor")
    widths, batch = [784, 1024, 1024, 10], 64
    dense = [2 * batch * i * o for i, o in zip(widths[:-1], widths[1:])]
    assert bench.sgd_flops(widths, batch) == 3 * sum(dense) - dense[0]
    rows = bench.floors(widths, batch)
    assert [r[0] for r in rows] == ["sgd", "kfac", "shampoo"] and all(r[1] >= 1 for r in rows)
    bench.main(["--batch", "16", "--widths", "8,4,3"])
    (table,) = _tables(capsys.readouterr().out)
    _check_table(table, ["optimizer", "FLOP floor ÷ SGD step", "MFLOP per step by part"], 3)


def test_optim_step_time_prints_one_row_per_optimizer(capsys):
    bench = _load("optim_step_time")
    bench.main(["--optimizers", "sgd,kfac,shampoo", "--steps", "2", "--hidden", "8", "--batch", "4"])
    (table,) = _tables(capsys.readouterr().out)
    _check_table(table, ["optimizer", "mean step ms", "median ms", "longest ms", "mean ÷ first"], 3)
