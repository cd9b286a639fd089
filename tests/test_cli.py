"""The ``minidiff`` command, run in-process through ``minidiff.cli.main``."""

from __future__ import annotations

import re

import pytest

import minidiff as md
from minidiff.cli import COMMANDS, main


def test_demo_reports_agreement(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "all checks passed: forward and reverse mode agree" in out
    assert "FAILED" not in out
    for mode in ("fwd-over-rev", "rev-over-fwd", "rev-over-rev"):
        assert mode in out
    # the two numbers of <grad f, v> = J v are printed, and they agree to float64 rounding
    reverse = float(re.search(r"<grad f, v>.*?([-+]\d\.\d+)", out).group(1))
    forward = float(re.search(r"J v\s+forward mode.*?([-+]\d\.\d+)", out).group(1))
    assert reverse != 0.0
    assert abs(reverse - forward) <= 1e-9 * (1 + abs(reverse))


def test_demo_fails_when_a_rule_is_wrong(capsys, monkeypatch):
    """The demo's checks can fail: tanh's JVP off by a factor 1.001 must give exit status 1."""
    tanh = md.primitives.REGISTRY["tanh"]
    (rule,) = tanh.jvp_rules
    monkeypatch.setattr(tanh, "jvp_rules", (lambda g, ans, x: 1.001 * rule(g, ans, x),))
    assert main(["demo"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: forward vs reverse" in out


def test_demo_other_seed_and_batch(capsys):
    assert main(["demo", "--seed", "3", "--batch", "5"]) == 0
    assert "batch 5" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--bogus"],
        ["--bogus", "demo"],
        ["demo", "--batch", "0"],
        ["demo", "--seed", "x"],
        ["nope"],
        [],
    ],
)
def test_bad_usage_is_one_line_and_exit_code_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "error:" in lines[0] and "--help" in lines[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"minidiff {md.__version__}"


@pytest.mark.parametrize("argv", [["--help"], *[[name, "--help"] for name in COMMANDS]])
def test_help_everywhere(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: minidiff" in capsys.readouterr().out
