"""``minidiff bench peers`` without any peer installed: a fake peer (``tests/peer_fake_worker.py``, the
dense models in plain NumPy with derivatives written by hand) is added to the peer table, and runs in its
own process as a real peer does.  Tested: the agreement check (a peer computing another loss or JVP is
refused, named, with the model and both values), the skip path, the JSON keys, the interleaving order,
the options, the worker protocol.  Timings are recorded, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minidiff.bench import peers
from minidiff.bench.peers import Peer, PeerFailure, Settings, round_orders, run_peers
from minidiff.bench.workers import QUANTITIES, count_params, read_job, serve
from minidiff.cli import build_parser, main

TESTS = os.path.dirname(os.path.abspath(__file__))
FAKE = Peer("fake", "Fake NumPy", "peer_fake_worker", ("numpy",))
FAKE2 = Peer("fake2", "Fake NumPy 2", "peer_fake_worker", ("numpy",))
GHOST = Peer("ghost", "Ghost", "no_such_worker", ("no_such_module_for_minidiff_tests",))
QUICK = {"models": ("logreg",), "batches": (3,), "rounds": 2, "repeats": 1, "warmup": 0}


@pytest.fixture
def fake_peers(monkeypatch):
    """The fake peers and a missing one in the table; the fake worker importable by the workers."""
    for peer in (FAKE, FAKE2, GHOST):
        monkeypatch.setitem(peers.PEERS, peer.name, peer)
    monkeypatch.setenv("PYTHONPATH", TESTS)
    for knob in ("FAKE_PEER_LOSS_SHIFT", "FAKE_PEER_JVP_SHIFT"):
        monkeypatch.delenv(knob, raising=False)
    return monkeypatch


def quiet(text: str) -> None:
    pass


# ----------------------------------------------------------------------------- end to end, in processes
def test_a_fake_peer_is_checked_then_timed_in_its_own_process(fake_peers):
    r = run_peers(Settings(peers=("fake",), **QUICK), log=quiet)
    assert r["schema"] == "minidiff.peers/1" and r["refused"] == [] and r["skipped"] == {}
    (run,) = r["runs"]
    assert run["model"] == "logreg" and run["batch"] == 3 and run["parameters"] == 7850
    check = run["check"]
    assert set(check) == {"minidiff", "fake"} and not check["fake"]["refused"]
    # float32 in both; the fake sums in another order: the two agree far inside the tolerance 1e-4
    assert check["fake"]["loss_difference"] <= 1e-5 * check["fake"]["loss_allowed"] / 1e-4
    assert check["fake"]["jvp_difference"] <= check["fake"]["jvp_allowed"]
    assert r["systems"]["fake"]["info"]["system"] == "fake"  # the worker's own report
    for system in ("minidiff", "fake"):
        for q in QUANTITIES:
            assert len(run["timings"][system][q]["samples"]) == 2  # 2 rounds × 1 repeat
    assert set(run["minidiff_over_peer"]["fake"]) == set(peers.COMPARED)


def test_a_peer_with_another_loss_is_refused_naming_it_the_model_and_both_values(
    fake_peers, capsys, tmp_path
):
    fake_peers.setenv("FAKE_PEER_LOSS_SHIFT", "0.5")
    out = tmp_path / "r.json"
    argv = ["bench", "peers", "--peers", "fake", "--models", "logreg", "--batch", "2"]
    code = main([*argv, "--rounds", "1", "--repeats", "1", "--warmup", "0", "--json", str(out)])
    assert code == 1  # a check failed
    err = capsys.readouterr().err
    r = json.loads(out.read_text())
    (item,) = r["refused"]
    check = r["runs"][0]["check"]
    ours, theirs = check["minidiff"]["loss"], check["fake"]["loss"]
    assert abs(theirs - ours - 0.5) < 1e-5
    message = item["message"]
    assert message.startswith("fake is refused for logreg (batch 2): its loss is ")
    assert repr(theirs) in message and repr(ours) in message and message in err
    assert check["fake"]["refused"] and "fake" not in r["runs"][0]["timings"]  # never timed
    assert r["systems"]["fake"]["status"] == "refused"


def test_a_peer_with_another_jvp_is_refused(fake_peers):
    fake_peers.setenv("FAKE_PEER_JVP_SHIFT", "0.01")
    r = run_peers(Settings(peers=("fake", "fake2"), **QUICK), log=quiet)
    messages = [item["message"] for item in r["refused"]]
    assert [m.split(" is refused")[0] for m in messages] == ["fake", "fake2"]
    assert all("its JVP ∇f·v is" in m and "minidiff's is" in m for m in messages)
    assert r["runs"][0]["order"] == [["minidiff"], ["minidiff"]]


def test_a_peer_that_is_not_installed_is_skipped_by_name(fake_peers, capsys, tmp_path):
    out = tmp_path / "r.json"
    argv = ["bench", "peers", "--peers", "ghost,fake", "--models", "logreg", "--batch", "2", "--rounds", "1"]
    assert main([*argv, "--repeats", "1", "--warmup", "0", "--json", str(out)]) == 0
    printed = capsys.readouterr()
    reason = "not installed (no module named no_such_module_for_minidiff_tests)"
    assert f"skipped ghost (Ghost): {reason}" in printed.out
    assert f"skipping ghost (Ghost): {reason}" in printed.err
    r = json.loads(out.read_text())
    assert r["skipped"] == {"ghost": reason}
    assert r["systems"]["ghost"] == {"label": "Ghost", "status": "skipped", "reason": reason}
    assert set(r["runs"][0]["timings"]) == {"minidiff", "fake"}


def test_json_keys(fake_peers, tmp_path):
    r = run_peers(Settings(peers=("fake",), xla_flags="--xla_foo=1", threads=1, **QUICK), log=quiet)
    assert sorted(r) == [
        "environment",
        "refused",
        "runs",
        "schema",
        "settings",
        "skipped",
        "systems",
        "units",
    ]
    assert r["settings"]["rtol"] == 1e-4 and r["settings"]["xla_flags"] == "--xla_foo=1"
    assert r["settings"]["threads"] == 1 and r["settings"]["batches"] == (3,)
    assert r["environment"]["XLA_FLAGS"] == "--xla_foo=1" and "cpu" in r["environment"]
    (run,) = r["runs"]
    assert sorted(run) == sorted(
        [
            "batch",
            "check",
            "minidiff_over_peer",
            "model",
            "order",
            "own_ratios",
            "parameters",
            "plan",
            "timings",
        ]
    )
    assert sorted(run["check"]["minidiff"]) == sorted(
        ["loss", "jvp", "refused", "grad_norm", "v_rms"]
        + ["loss_difference", "loss_allowed", "jvp_difference", "jvp_allowed"]
    )
    assert sorted(run["timings"]["fake"]["f"]) == ["iqr", "median", "q1", "q3", "samples"]
    assert sorted(run["own_ratios"]["fake"]) == ["Rb", "Rf"]
    for q in peers.COMPARED:
        assert sorted(run["minidiff_over_peer"]["fake"][q]) == ["high", "low", "value"]
    json.dumps(r)  # JSON-ready as it is
    text = peers.format_peers(r)
    assert "minidiff ÷ Fake NumPy: f " in text and "XLA_FLAGS: '--xla_foo=1'" in text


# ----------------------------------------------------------------------------- order, without processes
class Recorder:
    """A runner that answers at once and records every job, in order."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.envs: dict[str, dict] = {}
        self.fail = fail

    def __call__(self, peer, job, env, timeout):
        self.calls.append((peer.name, job["task"], job["model"]))
        self.envs[peer.name] = env
        if peer.name == self.fail:
            raise PeerFailure(
                f"{peer.name} worker ({job['task']}, {job['model']} batch {job['batch']}): boom"
            )
        if job["task"] == "check":
            return {"loss": 2.0, "jvp": 0.5, "grad_norm": 1.0, "v_rms": 1.0, "info": {"system": peer.name}}
        return {"samples": {q: [0.001] * job["repeats"] for q in QUANTITIES}}


def test_rounds_interleave_with_the_order_rotating(fake_peers):
    rec = Recorder()
    settings = Settings(models=("logreg", "mlp"), peers=("fake", "fake2"), rounds=4, repeats=2, warmup=0)
    r = run_peers(settings, runner=rec, log=quiet)
    expected = round_orders(["minidiff", "fake", "fake2"], 4)
    assert expected[1] == ["fake", "fake2", "minidiff"] and expected[3] == expected[0]
    for k, model in enumerate(("logreg", "mlp")):
        calls = [c for c in rec.calls if c[2] == model]
        assert calls[:3] == [(n, "check", model) for n in ("minidiff", "fake", "fake2")]  # checks first
        assert [n for n, task, _ in calls[3:]] == [n for order in expected for n in order]
        assert r["runs"][k]["order"] == expected
    assert len(r["runs"][0]["timings"]["fake"]["f"]["samples"]) == 8  # 4 rounds × 2 repeats
    tasks = [task for _, task, _ in rec.calls]
    assert tasks == ["check"] * 6 + ["time"] * 24  # every model is checked before anything is timed


def test_a_worker_that_fails_is_reported_and_dropped(fake_peers):
    r = run_peers(Settings(peers=("fake", "fake2"), **QUICK), runner=Recorder(fail="fake"), log=quiet)
    (item,) = r["refused"]
    assert item["system"] == "fake" and "fake worker (check, logreg batch 3): boom" in item["message"]
    assert set(r["runs"][0]["timings"]) == {"minidiff", "fake2"}


def test_options_reach_the_workers(fake_peers):
    rec = Recorder()
    run_peers(
        Settings(peers=("fake",), threads=3, xla_flags="--xla_a --xla_b=2", **QUICK), runner=rec, log=quiet
    )
    env = rec.envs["fake"]
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["XLA_FLAGS"] == "--xla_a --xla_b=2"
    assert env["PYTHONPATH"].split(os.pathsep)[-1] == TESTS  # the package's folder comes first
    fake_peers.setenv("XLA_FLAGS", "--from_the_environment")
    assert peers.worker_env(peers.PEERS["jax"], 0, None)["XLA_FLAGS"] == "--from_the_environment"


def test_minidiffs_own_failure_ends_the_command(fake_peers, capsys, monkeypatch):
    monkeypatch.setattr(peers, "run_worker", Recorder(fail="minidiff"))
    assert main(["bench", "peers", "--peers", "fake", "--models", "logreg", "--rounds", "1"]) == 1
    assert "error: minidiff worker (check, logreg batch 64): boom" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the command line
def test_cli_options_parse(fake_peers):
    args = build_parser().parse_args(
        ["bench", "peers", "--models", "mlp,cnn", "--batch", "1,16,64", "--peers", "torch,fake"]
        + ["--rounds", "2", "--rtol", "1e-3", "--xla-flags=--xla_cpu_use_thunk_runtime=false"]
    )
    assert args.models == ("mlp", "cnn") and args.batch == (1, 16, 64) and args.peers == ("torch", "fake")
    assert args.rounds == 2 and args.rtol == 1e-3 and args.xla_flags == "--xla_cpu_use_thunk_runtime=false"
    defaults = build_parser().parse_args(["bench", "peers"])
    assert defaults.models == ("logreg", "mlp", "cnn") and defaults.batch == (64,)
    assert defaults.peers == ("torch", "jax", "autograd") and defaults.xla_flags is None


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--peers", "caffe"], "--peers"),
        (["--xla-flags=xla_cpu_foo"], "--xla-flags"),
        (["--batch", "0"], "--batch"),
        (["--rtol", "0"], "--rtol"),
    ],
)
def test_bad_options_are_one_line(capsys, argv, option):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "peers", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err


# ----------------------------------------------------------------------------- inputs and protocol
def test_plans_follow_the_models():
    from minidiff.bench.rfrb import build_model

    plans = {name: peers.model_plan(build_model(name)[0]) for name in ("logreg", "mlp", "cnn")}
    assert plans["logreg"] == ["linear"] and plans["mlp"] == ["linear", "relu", "linear", "relu", "linear"]
    assert plans["cnn"] == ["conv", "relu", "conv", "relu", "maxpool2"] * 2 + [
        "flatten",
        "linear",
        "relu",
        "linear",
    ]
    assert count_params(plans["cnn"]) == 12
    with pytest.raises(ValueError, match="unknown layers"):
        count_params(["linear", "softmax"])


def test_inputs_are_written_for_every_system(tmp_path):
    info = peers.write_inputs("mlp", 5, "float32", 3, str(tmp_path))
    assert info["parameters"] == 1863690
    names = sorted(os.listdir(tmp_path))
    assert names == sorted(
        [f"p{i}.npy" for i in range(6)] + [f"v{i}.npy" for i in range(6)] + ["x.npy", "y.npy"]
    )
    x, y, p0 = (np.load(tmp_path / f"{n}.npy") for n in ("x", "y", "p0"))
    assert x.shape == (5, 784) and x.dtype == np.float32 and y.dtype == np.int64 and p0.shape == (1024, 784)


def test_the_worker_protocol(capsys):
    assert read_job(['{"task": "time", "repeats": 1}'])["repeats"] == 1
    with pytest.raises(ValueError, match="task 'check' or 'time'"):
        read_job(['{"task": "fly"}'])

    def broken(job):
        raise KeyError("plan")

    assert serve(broken, ['{"task": "check"}']) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["error"].startswith("KeyError: 'plan' (at ")
    assert serve(lambda job: {"loss": 1.0}, ['{"task": "check"}']) == 0
    assert json.loads(capsys.readouterr().out) == {"loss": 1.0}


def test_a_worker_without_an_answer_is_a_failure(fake_peers):
    job = {"task": "check", "model": "logreg", "batch": 1}
    env = peers.worker_env(GHOST, 0, None)
    with pytest.raises(
        PeerFailure,
        match=r"ghost worker \(check, logreg batch 1\): exit status 1, no result \(.*no_such_worker",
    ):
        peers.run_worker(GHOST, job, env, timeout=60)


def test_worker_modules_import_without_their_libraries():
    """Importing a worker (as the package's walkers do) needs neither its library nor NumPy."""
    code = (
        "import sys; sys.modules.update(dict.fromkeys(['torch', 'jax', 'autograd'], None));"
        "import minidiff.bench.workers.torch_worker, minidiff.bench.workers.jax_worker,"
        " minidiff.bench.workers.autograd_worker"
    )
    root = os.path.dirname(TESTS)
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name, module", [("torch", "torch"), ("jax", "jax"), ("autograd", "autograd")])
def test_a_real_peer_agrees_where_it_is_installed(tmp_path, name, module):
    pytest.importorskip(module)
    info = peers.write_inputs("mlp", 2, "float32", 0, str(tmp_path))
    job = {"task": "check", "model": "mlp", "batch": 2, "dtype": "float32", "dir": str(tmp_path), **info}
    ours = peers.run_worker(peers.MINIDIFF, job, peers.worker_env(peers.MINIDIFF, 0, None), 300)
    peer = peers.PEERS[name]
    theirs = peers.run_worker(peer, job, peers.worker_env(peer, 1, None), 300)
    assert peers.disagreement(name, "mlp", ours, theirs, 1e-4) is None
    assert theirs["info"]["system"] == name
