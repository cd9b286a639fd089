"""Every option of every subcommand, found by walking the parser: a bad value is refused before any work
(exit status 2, one line on stderr naming the option, no traceback), an unwritable output path too, and
``--help`` shows every default.  ``python -m minidiff`` runs the same command.

The walk is driven by the parser, so options added later are covered: an option whose type has no entry
in :data:`BAD` (keyed by the type's ``__name__``), or a value-taking option without a type or choices,
fails :func:`test_every_option_is_validated` until it gets one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import pytest

import minidiff as md
from minidiff.bench import arguments
from minidiff.cli import build_parser, main, show_default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Bad values for each option type, by the type's ``__name__``.  ``{file}`` is a regular file,
#: ``{missing}`` a path that does not exist, ``{dir}`` an empty folder (see :func:`places`).
BAD = {
    "positive_int": ["0", "-1", "1.5", "x", ""],
    "nonnegative_int": ["-1", "1.5", "x", ""],
    "positive_float": ["0", "-1", "inf", "nan", "x", ""],
    "nonnegative_float": ["-1", "inf", "-inf", "nan", "x"],
    "finite_float": ["inf", "-inf", "nan", "x"],
    "int_list": ["0", "-2", "1,0", "1,x", "", ","],
    "choice_list": ["foo", "", ","],
    "dtype": ["float16", "int64", ""],
    "device": ["tpu", ""],
    "output_file": ["{file}/x.json", "{missing}/x.json", "{dir}", ""],
    "output_dir": ["{file}/sub", "{file}", ""],
    "mnist_dir": ["{missing}", "{file}", "{dir}"],
    "mnist_train_dir": ["{missing}", "{file}", "{dir}"],
    "xla_flags": ["", "foo", "-x", "---x", "--xla_a bar"],  # ("--" alone: argparse drops it)
}
#: Bad values for options with ``choices`` and no type.
BAD_CHOICE = ["nope", ""]


def walk(parser, path=()):
    """``(argv prefix, parser)`` for the command and every subcommand, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def positionals(parser) -> list[str]:
    """A valid value for each positional argument of ``parser`` (its first choice)."""
    return [
        a.choices[0]
        for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]


def options(parser):
    """The options of ``parser`` that take a value (flags, --help and --version take none)."""
    return [a for a in parser._actions if a.option_strings and a.nargs != 0]


PARSERS = list(walk(build_parser()))
OPTIONS = [(path, p, a) for path, p in PARSERS for a in options(p)]


def name(path, action) -> str:
    return " ".join(("minidiff", *path, action.option_strings[-1]))


def bad_values(action) -> list[str]:
    if action.type is None:
        return BAD_CHOICE if action.choices is not None else []
    return BAD.get(action.type.__name__, [])  # unknown types: see test_every_option_is_validated


CASES = [
    pytest.param(path, p, a, bad, id=f"{name(path, a)}={bad}")
    for path, p, a in OPTIONS
    if a.type is not None or a.choices is not None
    for bad in bad_values(a)
]


@pytest.fixture
def places(tmp_path):
    (tmp_path / "file.txt").write_text("a regular file\n")
    (tmp_path / "empty").mkdir()
    return {
        "file": str(tmp_path / "file.txt"),
        "missing": str(tmp_path / "nowhere"),
        "dir": str(tmp_path / "empty"),
    }


def refused(capsys, argv, option) -> str:
    """Run ``main(argv)``; it must exit 2 with one line on stderr naming ``option``; return that line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2, argv
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0] and option in lines[0] and "--help" in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_work(monkeypatch):
    """Every runner that could start work fails the test if it is reached."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the work started before a bad value was refused")

    from minidiff import cli
    from minidiff.bench import commands, reproduce, training

    patched = [(training, "train"), (commands, "_run_rfrb"), (commands, "_run_depth")]
    patched += [(reproduce, "reproduce_forward_gradient"), (cli, "_demo_problem")]
    patched += [(commands._extra_bench(bench), "run") for bench in commands.EXTRA_BENCHES]
    for module, attr in patched:
        monkeypatch.setattr(module, attr, forbidden)


def test_the_walk_sees_every_subcommand():
    seen = {" ".join(path) for path, _ in PARSERS}
    assert {"demo", "train", "reproduce", "bench rfrb", "bench depth", "bench optim"} <= seen
    assert {"bench curvature", "bench deer", "bench deer-ode"} <= seen
    assert len(CASES) > 100


def test_every_option_is_validated():
    """Each value-taking option has a type with bad values in BAD, or choices."""
    unknown = [name(path, a) for path, _, a in OPTIONS if a.type is not None and a.type.__name__ not in BAD]
    assert not unknown, f"add bad values for these options' types to BAD: {unknown}"
    free = {name(path, a) for path, _, a in OPTIONS if a.type is None and a.choices is None}
    assert not free, f"options taking any text: {sorted(free)}"


@pytest.mark.parametrize("path, parser, action, bad", CASES)
def test_a_bad_value_is_one_line_before_any_work(capsys, places, no_work, path, parser, action, bad):
    value = bad.format(**places)
    argv = [*path, *positionals(parser), f"{action.option_strings[-1]}={value}"]
    refused(capsys, argv, action.option_strings[-1])


@pytest.mark.parametrize(
    "argv, option",
    [
        (["demo", "--seed", "-1"], "--seed"),
        (["train", "--seed", "-1"], "--seed"),
        (["bench", "optim", "--seed", "-1"], "--seed"),
        (["bench", "deer-ode", "--seed", "-1"], "--seed"),
        (["bench", "optim", "--optimizers", "foo"], "--optimizers"),
        (["bench", "optim", "--optimizers", "sgd,foo"], "--optimizers"),
        (["bench", "optim", "--models", "rnn"], "--models"),
        (["reproduce", "forward-gradient", "--models", "rnn"], "--models"),
        (["bench", "optim", "--width", "0"], "--width"),
        (["bench", "optim", "--seconds", "-1"], "--seconds"),
        (["bench", "deer", "--seq-steps", "0"], "--seq-steps"),
        (["train", "--lr", "inf"], "--lr"),
        (["train", "--decay", "inf"], "--decay"),
        (["bench", "deer", "--max-memory-gb", "-1"], "--max-memory-gb"),
        (["train", "--json", "/nonexistent/x.json"], "--json"),
    ],
)
def test_the_issues_examples(capsys, no_work, argv, option):
    refused(capsys, argv, option)


def test_options_that_contradict_each_other_are_refused_before_any_work(capsys, monkeypatch):
    from minidiff.bench import optim_bench

    monkeypatch.setattr(optim_bench, "run_optim_bench", lambda **kw: pytest.fail("the run started"))
    line = refused(capsys, ["bench", "optim", "--train-limit", "10", "--batch", "64"], "--batch")
    assert "64 is more than the --train-limit of 10" in line


def test_every_seed_is_a_nonnegative_int():
    seeds = [name(path, a) for path, _, a in OPTIONS if a.dest == "seed"]
    assert {"minidiff demo --seed", "minidiff train --seed", "minidiff bench optim --seed"} <= set(seeds)
    assert "minidiff bench deer-ode --seed" in seeds
    for path, _, a in OPTIONS:
        if a.dest == "seed":
            assert a.type.__name__ == "nonnegative_int", name(path, a)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_folder_is_refused(capsys, tmp_path, no_work):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = refused(capsys, ["train", "--json", str(locked / "x.json")], "--json")
        assert "no write permission" in line
        refused(capsys, ["reproduce", "forward-gradient", "--out", str(locked / "r")], "--out")
    finally:
        locked.chmod(0o700)


def test_a_folder_without_write_permission_is_refused(capsys, tmp_path, no_work, monkeypatch):
    """As the test above, for any user (root writes anywhere): permission as ``os.access`` reports it."""
    locked = str(tmp_path / "locked")
    os.mkdir(locked)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(locked) else real(p, mode))
    line = refused(capsys, ["train", "--json", os.path.join(locked, "x.json")], "--json")
    assert line.startswith(f"minidiff train: error: argument --json: cannot write {locked}/x.json: no write")
    refused(capsys, ["bench", "optim", "--figures", os.path.join(locked, "new", "figs")], "--figures")
    existing = tmp_path / "old.json"
    existing.write_text("{}")
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) != str(existing) and real(p, mode))
    assert "the file is read-only" in refused(capsys, ["train", "--json", str(existing)], "--json")


def test_output_paths_that_can_be_written_are_accepted(tmp_path):
    args = build_parser().parse_args(["reproduce", "forward-gradient", "--out", str(tmp_path / "a" / "b")])
    assert args.out == str(tmp_path / "a" / "b") and not (tmp_path / "a").exists()  # nothing created yet
    existing = tmp_path / "old.json"
    existing.write_text("{}")
    assert build_parser().parse_args(["train", "--json", str(existing)]).json == str(existing)
    assert build_parser().parse_args(["reproduce", "forward-gradient"]).models == ("logreg", "mlp", "cnn")


def test_a_run_whose_output_vanished_is_rescued(tmp_path, capsys):
    """If the file cannot be written after the run after all, the result goes to a temporary file."""
    target = tmp_path / "gone" / "r.json"
    arguments.write_json({"loss": [1.0, 0.5]}, str(target))
    err = capsys.readouterr().err
    rescue = re.search(r"wrote (\S+\.json) instead", err).group(1)
    try:
        assert f"could not write {target}" in err and len(err.strip().splitlines()) == 1
        assert json.loads(open(rescue).read()) == {"loss": [1.0, 0.5]}
    finally:
        os.remove(rescue)


def test_choice_list_reads_its_choices_when_parsing():
    choices = {"a": 1}
    parse = arguments.choice_list(choices)
    choices["b"] = 2
    assert parse("b, a,b") == ("b", "a")
    with pytest.raises(
        argparse.ArgumentTypeError, match="unknown 'c'; choose a comma-separated subset of a,b"
    ):
        parse("a,c")


# ----------------------------------------------------------------------------- --help
@pytest.mark.parametrize("path, parser", PARSERS, ids=[" ".join(("minidiff", *p)) for p, _ in PARSERS])
def test_help_shows_every_default(path, parser, capsys):
    text = " ".join(parser.format_help().split())
    formatter = parser._get_formatter()
    for action in options(parser):
        if action.default in (None, argparse.SUPPRESS):
            continue
        shown = re.escape(show_default(action.default))
        own = " ".join(formatter._expand_help(action).split())
        assert re.search(rf"\(default:? {shown}\)", own), (name(path, action), own)
        assert re.search(rf"\(default:? {shown}\)", text)
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0 and "usage: minidiff" in capsys.readouterr().out


def test_help_default_is_not_repeated():
    for path, parser in PARSERS:
        formatter = parser._get_formatter()
        for action in options(parser):
            own = formatter._expand_help(action) if action.help else ""
            assert own.count("default") <= 1, (name(path, action), own)


# ----------------------------------------------------------------------------- python -m minidiff
def run_module(*argv):
    return subprocess.run(
        [sys.executable, "-m", "minidiff", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_python_dash_m_minidiff():
    r = run_module("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"minidiff {md.__version__}"
    r = run_module("demo", "--batch", "4")
    assert r.returncode == 0 and "all checks passed" in r.stdout
    r = run_module("train", "--seed", "-1")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "minidiff train: error: argument --seed: must be at least 0, got -1 " + (
        "(see 'minidiff train --help')"
    )


# ----------------------------------------------------------------------------- the documented commands
def documented_commands() -> list[str]:
    """Every ``minidiff …`` line of a bash block in the README and docs/*.md (comments removed), and
    every inline code span of their text that is a command with options."""
    import glob

    found = []
    for path in [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]:
        text = open(path, encoding="utf-8").read()
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                command = line.split("#")[0].split("&&")[-1].strip()
                if command.startswith("minidiff "):
                    found.append(command)
        inline = re.findall(r"`(minidiff [^`]*--[^`]*)`", text)  # with options, so not a mere name
        found += [c for c in inline if "--help" not in c]
    return sorted(set(found))


@pytest.mark.parametrize("command", documented_commands())
def test_documented_commands_parse(command, tmp_path, monkeypatch):
    """The command lines the docs show are accepted by the parser (``--data-dir``: a folder with the
    four MNIST files' names; the paths they would write are checked relative to the repository)."""
    import shlex

    for name_ in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / name_).touch()
    (tmp_path / "t10k-labels-idx1-ubyte").touch()
    monkeypatch.chdir(ROOT)
    argv = shlex.split(command)[1:]
    argv = [str(tmp_path) if prev == "--data-dir" else a for prev, a in zip(["", *argv], argv)]
    assert build_parser().parse_args(argv).run is not None
