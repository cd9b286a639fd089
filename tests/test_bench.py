"""The measurement harness, with fake clocks and call counts: no timing is asserted."""

from __future__ import annotations

import itertools
import json

import pytest

from minidiff import nn
from minidiff.bench import flop_model, forward_flops, layer_flops, measure, ratio, summarize
from minidiff.bench.rfrb import build_model, rfrb
from minidiff.bench.training import smooth, tf_over_tb


class FakeClock:
    """Advances by the given steps, one per reading (cycled)."""

    def __init__(self, steps):
        self.steps = itertools.cycle(steps)
        self.now = 0.0
        self.readings = 0

    def __call__(self):
        self.readings += 1
        self.now += next(self.steps)
        return self.now


def test_measure_counts_calls_and_summarizes_the_fake_timings():
    calls = []
    clock = FakeClock([0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 4.0, 0.0, 5.0])
    m = measure(lambda: calls.append(1), repeats=5, warmup=2, number=3, clock=clock)
    assert len(calls) == 2 + 5 * 3
    assert m.samples == pytest.approx([1 / 3, 2 / 3, 1.0, 4 / 3, 5 / 3])
    assert m.median == pytest.approx(1.0)
    assert m.q1 == pytest.approx(2 / 3) and m.q3 == pytest.approx(4 / 3)
    assert m.iqr == pytest.approx(2 / 3)


def test_measure_synchronizes_the_device():
    class Dev:
        syncs = 0

        def synchronize(self):
            Dev.syncs += 1

    measure(lambda: None, repeats=4, warmup=1, device=Dev(), clock=FakeClock([1.0]))
    assert Dev.syncs == 1 + 4


def test_measure_rejects_bad_counts():
    with pytest.raises(ValueError, match="repeats"):
        measure(lambda: None, repeats=0)


def test_summarize_and_ratio():
    a, b = summarize([2.0, 4.0, 6.0]), summarize([1.0, 2.0, 3.0])
    r = ratio(a, b)
    assert r["value"] == pytest.approx(2.0)
    assert r["low"] <= r["value"] <= r["high"]
    assert summarize([5.0]).iqr == 0.0


def test_flop_model_is_three_minus_the_first_layer_share():
    m = flop_model([100, 300])
    assert m["Rf"] == pytest.approx(3 - 100 / 400) == m["Rb"]
    assert m["jvp_flops"] == 400 + 2 * 400 - 100
    with pytest.raises(ValueError):
        flop_model([0, 0])


def test_flop_model_of_the_mlp_counts_its_matmuls():
    model, shape = build_model("mlp")
    flops = [f for _, _, f in layer_flops(model, (64,) + shape) if f]
    assert flops == [2 * 64 * 784 * 1024, 2 * 64 * 1024 * 1024, 2 * 64 * 1024 * 10]


def test_flops_by_hand():
    assert forward_flops(nn.Linear(784, 10), (64, 784)) == 2 * 64 * 784 * 10
    assert forward_flops(nn.Linear(7, 3), (2, 5, 7)) == 2 * 10 * 7 * 3
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    ho = (9 + 2 - 3) // 2 + 1
    assert forward_flops(conv, (2, 3, 9, 9)) == 2 * (2 * 5 * ho * ho) * (3 * 3 * 3)
    for layer in (nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()):
        assert forward_flops(layer, (2, 4, 8, 8)) == 0
    n = 64
    model = nn.models.cnn()
    convs = [
        2 * n * 64 * 26 * 26 * 1 * 9,
        2 * n * 64 * 24 * 24 * 64 * 9,
        2 * n * 64 * 10 * 10 * 64 * 9,
        2 * n * 64 * 8 * 8 * 64 * 9,
    ]
    dense = [2 * n * 1024 * 1024, 2 * n * 1024 * 10]
    assert forward_flops(model, (n, 1, 28, 28)) == sum(convs) + sum(dense)
    per_layer = [(name, f) for name, _, f in layer_flops(model, (n, 1, 28, 28)) if f]
    assert per_layer == list(zip(["0", "2", "5", "7", "11", "13"], convs + dense))
    assert forward_flops(nn.models.mlp(), (n, 784)) == 2 * n * (784 * 1024 + 1024 * 1024 + 1024 * 10)


def test_rfrb_with_a_fake_clock_reports_every_field():
    model, shape = build_model("logreg")
    # every timed call takes "1 second" per reading pair: all ratios are exactly 1
    r = rfrb(model, shape, batch=8, repeats=3, warmup=1, clock=FakeClock([1.0]))
    assert r["schema"] == "minidiff.rfrb/2"
    for key in ("Rf", "Rb", "Rf_without_sampling", "Rjvp", "Rf_over_Rb"):
        assert r[key]["value"] == pytest.approx(1.0)
    assert r["flop_model"]["Rf"] == pytest.approx(2.0)  # one layer: x·Ẇ only, and gᵀx only
    assert set(r["peak_memory_bytes"]) == {"f", "jvp", "forward_gradient", "backprop"}
    assert r["peak_memory_bytes"]["backprop"] > 0
    env = r["environment"]
    for key in ("cpu", "numpy", "blas", "env", "allocator", "python"):
        assert key in env
    assert "OPENBLAS_CORETYPE" in env["env"]
    json.dumps(r, default=float)  # the result is JSON-serializable


def test_tf_over_tb_definition():
    fgd = {"history": {"loss": [3.0, 2.0, 1.0, 1.0], "seconds": [1.0, 2.0, 3.0, 4.0]}}
    sgd = {"history": {"loss": [3.0, 1.5, 1.2, 1.2], "seconds": [2.0, 4.0, 6.0, 8.0]}}
    r = tf_over_tb(fgd, sgd, weight=1.0)  # weight 1: no smoothing
    assert r["L_star"] == 1.2  # the lowest loss both reach
    assert r["Tf"] == 3.0 and r["Tb"] == 6.0
    assert r["Tf_over_Tb"] == 0.5


def test_smooth_is_an_exponential_moving_average():
    assert smooth([1.0, 3.0], weight=0.5) == [1.0, 2.0]


def test_cli_bench_rfrb_bad_option_is_one_line(capsys):
    from minidiff.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "rfrb", "--model", "resnet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--model" in err[0]


def test_cli_train_runs_a_few_steps(capsys, tmp_path):
    from minidiff.cli import main

    out = tmp_path / "run.json"
    assert (
        main(
            [
                "train",
                "--model",
                "logreg",
                "--method",
                "sgd",
                "--steps",
                "3",
                "--lr",
                "0.1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert data["steps"] == 3 and len(data["history"]["loss"]) == 3
    assert "test accuracy" in capsys.readouterr().out
