"""The BLAS thread policy for small batched products (``minidiff.backend.blas_threads``,
``small_products``) and the load of ``minidiff bench deer --busy-core``.

What is tested: the previous thread counts come back (also when the block raises), nesting changes
nothing, the rule and its environment override, DEER's results are the same with and without the
policy (float64, to 1e-12 relative), and the spin-loop process is started and always stopped.
Timings are never asserted here (they live in ``minidiff bench deer``).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest

import minidiff as md
from minidiff import backend
from minidiff.bench import deer_bench
from minidiff.deer import affine_scan, cells, deer_rnn

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_counts() -> list[int]:
    return [lib.num_threads for lib in backend._blas_controllers()]


@pytest.fixture
def two_threads():
    """BLAS at two threads for the test (whatever the machine's default), restored after it."""
    if not backend._blas_controllers():
        pytest.skip("no BLAS library found by threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        if set(blas_counts()) != {2}:
            pytest.skip(f"BLAS would not run two threads here: {blas_counts()}")
        yield
    # threadpoolctl restores the counts it found


def test_blas_threads_limits_and_restores(two_threads):
    assert set(blas_counts()) == {2}
    with backend.blas_threads(1):
        assert set(blas_counts()) == {1}
        with backend.blas_threads(1):  # already in force: nothing set, nothing restored
            assert set(blas_counts()) == {1}
        assert set(blas_counts()) == {1}
        with backend.blas_threads(4):  # a limit above the count in force raises nothing
            assert set(blas_counts()) == {1}
    assert set(blas_counts()) == {2}
    with backend.blas_threads(None):
        assert set(blas_counts()) == {2}


def test_blas_threads_restores_on_an_exception(two_threads):
    with pytest.raises(RuntimeError, match="inside"):
        with backend.blas_threads(1):
            assert set(blas_counts()) == {1}
            raise RuntimeError("inside")
    assert set(blas_counts()) == {2}


def test_blas_threads_refuses_a_bad_limit():
    with pytest.raises(ValueError, match="blas_threads: limit must be a positive thread count"):
        with backend.blas_threads(0):
            pass


def test_small_product_rule_and_its_override(monkeypatch):
    env = backend.SMALL_PRODUCT_THREADS_ENV
    monkeypatch.delenv(env, raising=False)
    k = backend.SMALL_PRODUCT_MAX
    assert backend.small_product_threads(1) == backend.small_product_threads(k) == 1
    assert backend.small_product_threads(k + 1) is None
    monkeypatch.setenv(env, "2")
    assert backend.small_product_threads(8) == 2 and backend.small_product_threads(k + 1) is None
    for off in ("0", "off", "OFF", "none"):
        monkeypatch.setenv(env, off)
        assert backend.small_product_threads(8) is None
    for bad in ("-1", "two", "1.5"):
        monkeypatch.setenv(env, bad)
        with pytest.raises(ValueError, match=f"{env}=.*expected a positive thread count"):
            backend.small_product_threads(8)


def test_small_products_applies_the_rule(two_threads, monkeypatch):
    monkeypatch.delenv(backend.SMALL_PRODUCT_THREADS_ENV, raising=False)
    with backend.small_products(8):
        assert set(blas_counts()) == {1}
    with backend.small_products(backend.SMALL_PRODUCT_MAX + 1):
        assert set(blas_counts()) == {2}
    assert set(blas_counts()) == {2}


@pytest.mark.parametrize("n", [3, 8])
def test_deer_results_unchanged_by_the_policy(two_threads, monkeypatch, n):
    """DEER's trajectory, its gradient and a scan are the same with one BLAS thread and with the
    library's own threading (float64; the products split over threads by rows, not by sums)."""
    f, init, _ = cells.CELLS["gru"]
    p = init(n, n, seed=1, dtype="float64")
    xs = md.random.Generator(2).normal((2, 300, n), dtype="float64")
    y0 = md.zeros((2, n), dtype="float64")
    A = md.random.Generator(3).normal((2, 300, n, n), dtype="float64") * (0.3 / n**0.5)

    def run():
        ys = deer_rnn(f, y0, xs, p)
        g = md.grad(lambda q: md.sum(deer_rnn(f, y0, xs, q)))(p)
        return [ys.numpy(), affine_scan(A, xs, y0).numpy()] + [g[k].numpy() for k in sorted(g)]

    monkeypatch.setenv(backend.SMALL_PRODUCT_THREADS_ENV, "off")
    free = run()
    monkeypatch.delenv(backend.SMALL_PRODUCT_THREADS_ENV)
    limited = run()
    for a, b in zip(free, limited):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_busy_core_starts_and_stops_its_process():
    with deer_bench.busy_core() as spinner:
        assert spinner.poll() is None and _alive(spinner.pid)
    assert spinner.returncode is not None  # reaped: no zombie, no leftover
    assert not _alive(spinner.pid)


def test_busy_core_stops_its_process_when_the_block_raises():
    with pytest.raises(KeyError):
        with deer_bench.busy_core() as spinner:
            raise KeyError("inside")
    assert spinner.returncode is not None and not _alive(spinner.pid)


def test_bench_busy_core_tiny_run(monkeypatch, tmp_path):
    """A tiny ``bench deer --busy-core``: both sets of points, both tables, every spinner stopped."""
    started = []
    real = deer_bench.busy_core

    def spy():
        cm = real()
        return _Recorder(cm, started)

    monkeypatch.setattr(deer_bench, "busy_core", spy)
    parser = argparse.ArgumentParser()
    deer_bench.add_arguments(parser)
    path = tmp_path / "deer.json"
    argv = ["--sizes", "2", "--lengths", "20", "--repeats", "1", "--seq-steps", "5", "--busy-core"]
    args = parser.parse_args(argv + ["--json", str(path)])
    assert args.busy_core is True and parser.parse_args([]).busy_core is False
    assert deer_bench.run(args) == 0
    import json

    r = json.loads(path.read_text())
    assert [p["n"] for p in r["points"]] == [p["n"] for p in r["busy_core"]["points"]] == [2]
    assert r["busy_core"]["points"][0]["converged"]
    assert "one core kept busy" in deer_bench.format_deer_bench(r)
    assert len(started) == 1 and all(s.returncode is not None for s in started)


class _Recorder:
    """Wraps :func:`busy_core`'s context manager and records each spinner it starts."""

    def __init__(self, cm, started):
        self.cm, self.started = cm, started

    def __enter__(self):
        spinner = self.cm.__enter__()
        self.started.append(spinner)
        return spinner

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc)


def test_without_busy_core_no_busy_section():
    r = deer_bench.run_deer_bench((2,), (20,), (1,), repeats=1, seq_steps=5)
    assert "busy_core" not in r
    assert "one core kept busy" not in deer_bench.format_deer_bench(r)


def test_blas_threads_benchmark_script_quick(tmp_path, capsys):
    """benchmarks/blas_threads.py --quick runs, prints its table and writes JSON (no time asserted)."""
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).parent.parent / "benchmarks" / "blas_threads.py"
    spec = importlib.util.spec_from_file_location("blas_threads_bench", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = tmp_path / "threads.json"
    result = bench.main(["--quick", "--json", str(path)])
    out = capsys.readouterr().out
    assert "| n | T | job | library threads ms [q1–q3] | policy ms [q1–q3] | speedup |" in out
    saved = json.loads(path.read_text())
    assert saved["overhead"]["in_force_us"] > 0 and "environment" in saved
    assert [r["job"] for r in result["rows"]] == ["scan", "deer"]
