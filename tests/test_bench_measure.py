"""Measuring Rf/Rb of a user's own function: ``minidiff.bench.measure_loss``, the FLOP model counted from
the executed primitives, per-primitive profiles, CSV tables and the ``bench rfrb`` options.

Timings come from fake clocks or are not asserted; FLOP counts are exact, by hand.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import struct

import numpy as np
import pytest

import minidiff as md
from minidiff import nn
from minidiff.bench import (
    executed_flop_model,
    flop_model,
    format_profile,
    forward_flops,
    layer_flops,
    measure_loss,
    primitive_flops,
    profile_loss,
    to_csv,
    write_csv,
)
from minidiff.bench.commands import format_rfrb
from minidiff.bench.flops import recording_products
from minidiff.bench.profile import GROUPS, PHASES, primitive_group
from minidiff.bench.rfrb import RATIOS, TIMED, build_model, depth_sweep, rfrb, synthetic_batch
from minidiff.errors import DTypeError, ShapeError
from minidiff.nn import functional as F
from minidiff.primitives.registry import REGISTRY, intercept_evaluations


class FakeClock:
    """Advances by one second per reading: every timed call takes exactly one second."""

    def __init__(self):
        self.ticks = itertools.count()

    def __call__(self):
        return float(next(self.ticks))


X = md.random.Generator(3).normal((8, 5), dtype="float64")


def chain_loss(p):
    """A user's loss: a plain function of a dict of parameters (no nn Module)."""
    return md.mean(md.tanh(X @ p["A"]) @ p["B"])


def chain_params():
    g = md.random.Generator(4)
    return {"A": g.normal((5, 4), dtype="float64"), "B": g.normal((4, 3), dtype="float64")}


# ----------------------------------------------------------------------------- measure_loss end to end
def test_a_user_loss_is_measured_end_to_end():
    r = measure_loss(chain_loss, chain_params(), repeats=2, warmup=1, seed=5, clock=FakeClock())
    assert r["schema"] == "minidiff.rfrb/2"
    assert (r["name"], r["units"], r["seed"], r["warmup"], r["repeats"]) == ("chain_loss", "seconds", 5, 1, 2)
    assert (r["dtype"], r["device"], r["distribution"], r["parameters"]) == ("float64", "cpu", "normal", 32)
    for key in TIMED:
        assert set(r[key]) == {"median", "q1", "q3", "iqr", "samples"} and len(r[key]["samples"]) == 2
        assert r[key]["median"] == 1.0  # the fake clock: one second per call
    for key in RATIOS:  # every ratio, Rf/Rb included, carries a spread
        assert r[key] == {"value": 1.0, "low": 1.0, "high": 1.0}
    # Rf's floor: the JVP pass plus sampling v (two seconds of the fake clock) over runtime(f)
    assert r["Rf_floor"] == {"value": 2.0, "low": 2.0, "high": 2.0}
    assert "Rf_floor,2.0,2.0,2.0,ratio" in to_csv(r)
    assert "floor = 2.000  [2.000, 2.000]" in format_rfrb("chain", r)
    assert set(r["peak_memory_bytes"]) == {"f", "jvp", "forward_gradient", "backprop"}
    assert r["flop_model"]["forward_flops"] == 2 * 8 * 5 * 4 + 2 * 8 * 4 * 3
    assert "profile" not in r and "environment" in r
    json.loads(json.dumps(r, default=float))


def test_name_labels_the_result_and_options_switch_parts_off():
    r = measure_loss(
        chain_loss,
        chain_params(),
        name="mine",
        repeats=1,
        warmup=0,
        memory=False,
        flops=False,
        clock=FakeClock(),
    )
    assert r["name"] == "mine"
    assert "peak_memory_bytes" not in r and "flop_model" not in r


def test_rademacher_and_a_list_of_parameters():
    def loss(ps):
        return ((X @ ps[0]) ** 2).sum() + ps[1].sum()

    params = [md.ones((5, 2), dtype="float64"), md.ones((3,), dtype="float64")]
    r = measure_loss(loss, params, repeats=1, warmup=0, distribution="rademacher", clock=FakeClock())
    assert r["distribution"] == "rademacher" and r["parameters"] == 13


def test_the_profile_is_included_on_request():
    r = measure_loss(chain_loss, chain_params(), repeats=1, warmup=0, memory=False, profile=True)
    assert set(r["profile"]["phases"]) == set(PHASES)


# ----------------------------------------------------------------------------- errors name the function
def test_a_non_scalar_loss_is_refused_naming_the_function():
    def per_example(p):
        return X @ p["A"]

    with pytest.raises(ShapeError, match=r"measure_loss\(.*per_example\).*scalar.*\(8, 4\)"):
        measure_loss(per_example, chain_params(), repeats=1)


def test_a_loss_returning_a_number_is_refused():
    with pytest.raises(ShapeError, match=r"scalar tensor, got a float"):
        measure_loss(lambda p: 1.0, chain_params(), repeats=1)


def test_a_non_tensor_parameter_is_refused_naming_the_leaf():
    params = {"A": md.ones((5, 4)), "B": np.ones((4, 3))}
    with pytest.raises(TypeError, match=r"measure_loss\(chain_loss\): parameter params\['B'\] is a ndarray"):
        measure_loss(chain_loss, params, repeats=1)


def test_an_integer_parameter_is_refused_naming_the_leaf():
    params = [md.ones((5, 4)), md.tensor([1, 2])]
    with pytest.raises(DTypeError, match=r"measure_loss\(.*\): parameter params\[1\] is a int64 tensor"):
        measure_loss(lambda ps: ps[0].sum(), params, repeats=1)


def test_empty_parameters_and_a_loss_that_ignores_them_are_refused():
    with pytest.raises(ValueError, match="holds no tensor"):
        measure_loss(lambda p: md.tensor(1.0), {}, repeats=1)

    def constant(p):
        return md.tensor(2.0)

    with pytest.raises(ValueError, match=r"measure_loss\(.*constant\): the loss does not depend"):
        measure_loss(constant, chain_params(), repeats=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"repeats": 0}, "repeats"),
        ({"warmup": -1}, "warmup"),
        ({"seed": -3}, "seed"),
        ({"distribution": "uniform"}, "distribution"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure_loss(chain_loss, chain_params(), **kwargs)


def test_a_loss_that_is_not_callable_is_refused():
    with pytest.raises(TypeError, match="must be a function"):
        measure_loss("loss", chain_params())


# ----------------------------------------------------------------------------- FLOPs, counted as executed
def test_flops_of_a_matmul_chain_by_hand():
    # x (8,5) data; A (5,4), B (4,3) parameters.  Forward: x·A (320) and h·B (192).
    # JVP: x·Ȧ (320: x has no tangent), ḣ·B and h·Ḃ (192 each).  Backprop: xᵀ·g (320; x needs no
    # cotangent), hᵀ·g and g·Bᵀ (192 each).
    v = {"A": md.ones((5, 4), dtype="float64"), "B": md.ones((4, 3), dtype="float64")}
    model, note = executed_flop_model(chain_loss, chain_params(), v)
    assert note is None
    assert model["forward_flops"] == 320 + 192
    assert model["jvp_flops"] == model["backprop_flops"] == 512 + 320 + 2 * 192
    assert model["Rf"] == model["Rb"] == pytest.approx(1216 / 512)
    assert [p["flops"] for p in model["products"]] == [320, 192]
    assert model["products"][0]["shapes"] == [[8, 5], [5, 4]]


def test_flops_when_both_operands_are_parameters():
    def loss(p):
        return (p["x"] @ p["w"]).sum()

    p = {"x": md.ones((6, 5)), "w": md.ones((5, 2))}
    model, _ = executed_flop_model(loss, p, p)
    f = 2 * 6 * 5 * 2
    assert (model["forward_flops"], model["jvp_flops"], model["backprop_flops"]) == (f, 3 * f, 3 * f)


def test_flops_of_a_convolution_by_hand():
    x = md.random.Generator(0).normal((2, 3, 9, 9))

    def loss(p):
        return F.conv2d(x, p["w"], stride=2, padding=1).sum()

    p = {"w": md.ones((5, 3, 3, 3))}
    ho = (9 + 2 - 3) // 2 + 1
    f = 2 * (2 * 5 * ho * ho) * (3 * 3 * 3)
    model, _ = executed_flop_model(loss, p, p)
    assert model["forward_flops"] == f == forward_flops(nn.Conv2d(3, 5, 3, stride=2, padding=1), (2, 3, 9, 9))
    assert model["jvp_flops"] == model["backprop_flops"] == 2 * f  # data input: x·Ẇ only, gᵀ·x only


def test_einsum_flops():
    assert primitive_flops("einsum", [(2, 3), (3, 4)], (2, 4), {"spec": "ij,jk->ik"}) == 2 * 2 * 3 * 4
    assert primitive_flops("einsum", [(2, 3), (3,), (2,)], (), {"spec": "ij,j,i->"}) == 3 * 2 * 3
    assert primitive_flops("einsum", [(3, 3)], (), {"spec": "ii->"}) == 0
    with recording_products() as products:
        md.einsum("ij,jk->ik", md.ones((2, 3)), md.ones((3, 4)))
    assert products == [{"primitive": "einsum", "shapes": [[2, 3], [3, 4]], "flops": 48}]


def test_matmul_flops_of_vectors_and_stacks():
    assert primitive_flops("matmul", [(7,), (7, 3)], (3,)) == 2 * 7 * 3
    assert primitive_flops("matmul", [(4, 2, 7), (7, 3)], (4, 2, 3)) == 2 * 4 * 2 * 3 * 7


@pytest.mark.parametrize(
    "name, kwargs, batch",
    [
        ("logreg", {}, 4),
        ("mlp", {"hidden": (32, 16)}, 4),
        ("cnn", {}, 2),
        ("mlp_depth", {"n_hidden_layers": 3, "width": 8}, 3),
    ],
)
def test_executed_flops_equal_the_layer_model_of_the_bundled_models(name, kwargs, batch):
    model, shape = build_model(name, **kwargs)
    x, y = synthetic_batch(shape, batch)
    params = model.parameters()

    def loss(p):
        return F.cross_entropy(model.apply(p, x), y)

    counted, _ = executed_flop_model(loss, params, params)
    by_layers = flop_model(f for _, _, f in layer_flops(model, (batch,) + shape))
    assert {k: counted[k] for k in by_layers} == by_layers


def test_no_matrix_product_means_no_flop_model():
    def loss(p):
        return (md.tanh(p["w"]) ** 2).sum()

    p = {"w": md.ones((4,))}
    assert executed_flop_model(loss, p, p) == (
        None,
        "the loss executes no matrix product (matmul, einsum, conv2d), so FLOPs give no model",
    )
    r = measure_loss(loss, p, repeats=1, warmup=0, clock=FakeClock())
    assert r["flop_model"] is None and "no matrix product" in r["flop_model_note"]
    from minidiff.bench.commands import format_rfrb

    assert "FLOP model: not available (the loss executes no matrix product" in format_rfrb("t", r)


# ----------------------------------------------------------------------------- the interception hook
def test_intercept_evaluations_sees_every_pass_and_restores_the_primitives():
    before = {name: p.apply for name, p in REGISTRY.items() if hasattr(p, "impl")}
    seen = []

    def note(prim, args, params, run):
        seen.append(prim.name)
        return run()

    w = md.ones((3, 2))
    with intercept_evaluations(note):
        md.jvp(lambda w: (md.ones((4, 3)) @ w).sum(), (w,), (w,))
    assert seen.count("matmul") == 2  # the primal product and the tangent product
    seen.clear()
    md.ones((4, 3)) @ w  # outside the block: nothing is seen
    assert seen == []
    with pytest.raises(RuntimeError), intercept_evaluations(note):
        raise RuntimeError("boom")
    assert {name: p.apply for name, p in REGISTRY.items() if hasattr(p, "impl")} == before


def test_intercept_evaluations_nests_and_a_user_primitive_shows_its_built_in_operations():
    outer, inner = [], []

    @md.primitive
    def double(x):
        return x * 2.0

    def note(into):
        def wrapper(prim, args, params, run):
            into.append(prim.name)
            return run()

        return wrapper

    with intercept_evaluations(note(outer)):
        with intercept_evaluations(note(inner)):
            double(md.ones((2,)))
        md.exp(md.ones((2,)))
    assert inner == ["multiply"] and outer == ["multiply", "exp"]


# ----------------------------------------------------------------------------- the profile
def test_profile_counts_calls_and_flops_per_pass():
    prof = profile_loss(chain_loss, chain_params(), repeats=2, warmup=1, clock=FakeClock())
    phases = prof["phases"]
    assert (prof["repeats"], prof["units"]) == (2, "seconds")
    matmul = {name: phases[name]["primitives"]["matmul"] for name in PHASES}
    assert {name: m["calls"] for name, m in matmul.items()} == {
        "f": 2,
        "jvp": 5,  # two primal products, x·Ȧ, ḣ·B, h·Ḃ
        "vjp_forward": 2,
        "vjp_backward": 3,
    }
    assert matmul["f"]["flops"] == 512 and matmul["vjp_backward"]["flops"] == 704
    for p in phases.values():
        assert set(p["groups"]) <= set(GROUPS)
        assert p["seconds"] >= sum(g["seconds"] for g in p["groups"].values())
        assert p["outside_primitives"] >= 0
    table = format_profile(prof, top=2)
    assert "matmul" in table and "outside primitives" in table and "slowest 2 primitives" in table


def test_primitive_groups():
    assert primitive_group(REGISTRY["einsum"]) == "matmul"
    assert primitive_group(REGISTRY["logsumexp"]) == "reduction"
    assert primitive_group(REGISTRY["max_pool2d"]) == primitive_group(REGISTRY["pool2d_sum"]) == "reduction"
    assert primitive_group(REGISTRY["greater"]) == "elementwise"
    assert primitive_group(REGISTRY["getitem"]) == "shape/indexing"
    assert primitive_group(REGISTRY["cholesky"]) == "linalg"
    assert primitive_group(REGISTRY["solve_banded"]) == "linalg"
    assert all(primitive_group(p) in GROUPS for p in REGISTRY.values())


# ----------------------------------------------------------------------------- CSV
def _rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_of_a_result_has_one_row_per_quantity(tmp_path):
    r = measure_loss(chain_loss, chain_params(), repeats=2, warmup=0, profile=True, clock=FakeClock())
    rows = _rows(to_csv(r))
    by = {row["quantity"]: row for row in rows}
    assert list(rows[0]) == ["name", "quantity", "value", "low", "high", "unit", "note"]
    assert {row["name"] for row in rows} == {"chain_loss"}
    assert by["runtime_f"]["unit"] == "seconds" and float(by["runtime_f"]["value"]) == 1.0
    assert float(by["Rf_over_Rb"]["low"]) == 1.0 and by["Rf_over_Rb"]["unit"] == "ratio"
    assert int(by["forward_flops"]["value"]) == 512
    assert int(by["peak_memory_backprop"]["value"]) == r["peak_memory_bytes"]["backprop"]
    assert "profile.vjp_backward.matmul" in by and "profile.f.total" in by
    path = tmp_path / "r.csv"
    write_csv([r, r], path)
    assert len(_rows(path.read_text())) == 2 * len(rows)


def test_csv_says_when_the_flop_model_is_not_available():
    p = {"w": md.ones((3,))}
    r = measure_loss(lambda p: md.exp(p["w"]).sum(), p, repeats=1, warmup=0, memory=False, clock=FakeClock())
    (row,) = [row for row in _rows(to_csv(r)) if row["quantity"] == "flop_model"]
    assert row["value"] == "not available" and "no matrix product" in row["note"]


def test_csv_of_a_depth_sweep_and_of_something_else():
    d = depth_sweep(layers=(1, 2), width=8, batch=4, repeats=1, warmup=0)
    assert d["schema"] == "minidiff.depth/2" and d["units"] == "seconds"
    rows = _rows(to_csv(d))
    assert [int(row["layers"]) for row in rows] == [1, 2]
    for key in ("Rf", "Rb", "Rf_over_Rb"):
        assert float(rows[0][f"{key}_low"]) <= float(rows[0][f"{key}_high"])
    with pytest.raises(ValueError, match="schema"):
        to_csv({"schema": "minidiff.curvature/1"})


# ----------------------------------------------------------------------------- rfrb stays a thin wrapper
def test_rfrb_of_a_module_is_measure_loss_with_cross_entropy():
    model, shape = build_model("logreg")
    r = rfrb(model, shape, batch=8, repeats=1, warmup=0, name="logreg", clock=FakeClock())
    assert (r["name"], r["batch"], r["data"], r["schema"]) == ("logreg", 8, "synthetic", "minidiff.rfrb/2")
    assert r["flop_model"]["forward_flops"] == 2 * 8 * 784 * 10


def test_rfrb_of_a_custom_module_without_layer_flops():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = md.ones((4, 10))

        def parameters(self):
            return {"w": self.w}

        def apply(self, p, x):
            return x @ p["w"]

    r = rfrb(Scale(), (4,), batch=3, repeats=1, warmup=0, memory=False, clock=FakeClock())
    assert r["flop_model"]["forward_flops"] == 2 * 3 * 4 * 10


def test_rfrb_of_a_module_without_parameters_is_refused():
    with pytest.raises(ValueError, match="rfrb: the model ReLU has no parameters"):
        rfrb(nn.ReLU(), (4,), batch=2, repeats=1)


# ----------------------------------------------------------------------------- the command line
def _main(argv):
    from minidiff.cli import main

    return main(argv)


def _refused(argv) -> int:
    """The exit status of a command refused with a usage error (``SystemExit``)."""
    with pytest.raises(SystemExit) as exc:
        _main(argv)
    return exc.value.code


def test_cli_rfrb_with_the_new_options(tmp_path, capsys):
    out, table = tmp_path / "r.json", tmp_path / "r.csv"
    argv = ["bench", "rfrb", "--model", "mlp", "--width", "8", "--batch", "4", "--repeats", "2"]
    argv += ["--warmup", "0", "--seed", "3", "--profile", "--json", str(out), "--csv", str(table)]
    assert _main(argv) == 0
    text = capsys.readouterr().out
    assert "Rf/Rb =" in text and "backprop: backward" in text and "slowest" in text
    r = json.loads(out.read_text())
    assert (r["seed"], r["warmup"], r["repeats"], r["name"], r["units"]) == (3, 0, 2, "mlp", "seconds")
    assert r["parameters"] == 784 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10
    assert set(r["Rf_over_Rb"]) == {"value", "low", "high"}
    assert "profile.jvp.total" in {row["quantity"] for row in _rows(table.read_text())}


def _write_idx(path, magic, array):
    with open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def test_cli_rfrb_reads_mnist_idx_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte", 2051, rng.integers(0, 256, (6, 28, 28), dtype=np.uint8))
    _write_idx(tmp_path / "train-labels-idx1-ubyte", 2049, rng.integers(0, 10, (6,), dtype=np.uint8))
    out = tmp_path / "r.json"
    argv = ["bench", "rfrb", "--model", "logreg", "--batch", "5", "--repeats", "1", "--warmup", "0"]
    assert _main(argv + ["--data-dir", str(tmp_path), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["batch"] == 5 and "MNIST IDX files" in r["data"]
    capsys.readouterr()
    assert _refused(argv[:4] + ["--batch", "7", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fewer than --batch 7" in err[0]


def test_cli_rfrb_reports_a_folder_without_mnist_in_one_line(tmp_path, capsys):
    assert _refused(["bench", "rfrb", "--model", "logreg", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no train images file" in err[0]


@pytest.mark.parametrize(
    "extra, word",
    [
        (["--seed", "-1"], "--seed"),
        (["--warmup", "-2"], "--warmup"),
        (["--width", "0"], "--width"),
        (["--data-dir", "/no/such/folder"], "--data-dir"),
        (["--csv", "/no/such/folder/x.csv"], "--csv"),
    ],
)
def test_cli_rfrb_refuses_bad_values_in_one_line(extra, word, capsys):
    with pytest.raises(SystemExit) as exc:
        _main(["bench", "rfrb", *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0]


def test_cli_rfrb_width_needs_a_model_with_hidden_layers(capsys):
    assert _refused(["bench", "rfrb", "--model", "logreg", "--width", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--width: applies to --model mlp or cnn" in err[0]


def test_cli_depth_writes_csv(tmp_path, capsys):
    table = tmp_path / "d.csv"
    argv = ["bench", "depth", "--layers", "1", "--width", "8", "--batch", "4", "--repeats", "1"]
    assert _main(argv + ["--csv", str(table)]) == 0
    (row,) = _rows(table.read_text())
    assert row["layers"] == "1" and float(row["Rf_over_Rb_low"]) <= float(row["Rf_over_Rb_high"])
