"""Every ```python block of ``docs/*.md`` and ``README.md`` runs, so the documentation cannot rot.

The blocks of one file run in order in one namespace (a later block may use what an earlier one
defined).  A block written as a doctest session (``>>>`` prompts) has its printed output checked,
with ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``; a block without prompts is executed and must not raise.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```(\S*)\s*$")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line number of the block's first line, source)`` for every ```python block of ``path``."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = FENCE.match(line.strip())
        if current is None:
            if fence and fence.group(1) in ("python", "py", "pycon"):
                current, start = [], number + 1
        elif fence and not fence.group(1):
            blocks.append((start, "\n".join(current) + "\n"))
            current = None
        else:
            current.append(line)
    if current is not None:
        raise AssertionError(f"{path.name}: the ```python block opened at line {start - 1} is never closed")
    return blocks


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_blocks(path: Path) -> list[str]:
    """Run the blocks of ``path`` in order in one namespace; return a report of every failure."""
    namespace = {"__name__": f"docs.{path.stem}"}
    try:
        return _run_in(path, namespace)
    finally:
        # Functions defined in the docs keep this dict as their globals, and md.primitive registers
        # them for good (md.primitives.REGISTRY): empty it, so the docs' tensors and tapes are freed.
        namespace.clear()


def _run_in(path: Path, namespace: dict) -> list[str]:
    failures = []
    for lineno, source in python_blocks(path):
        where = f"{_shown(path)}, block at line {lineno}"
        if any(line.lstrip().startswith(">>>") for line in source.splitlines()):
            test = doctest.DocTestParser().get_doctest(source, namespace, where, str(path), lineno - 1)
            test.globs = namespace  # DocTest copies its globals; share them across the blocks
            report: list[str] = []
            runner = doctest.DocTestRunner(optionflags=FLAGS)
            result = runner.run(test, out=report.append, clear_globs=False)
            if result.failed:
                failures.append("".join(report))
        else:
            try:
                exec(compile(source, f"{path}:{lineno}", "exec"), namespace)
            except Exception as exc:  # noqa: BLE001 - reported with its location below
                failures.append(f"{where}: {type(exc).__name__}: {exc}")
    return failures


@pytest.mark.parametrize("path", DOC_FILES, ids=_shown)
def test_python_blocks_run(path):
    assert path.exists(), f"{_shown(path)} is missing"
    assert python_blocks(path), f"{_shown(path)} has no ```python block to run"
    failures = run_blocks(path)
    assert not failures, "\n".join(failures)


def test_the_tutorial_is_collected():
    """The tutorial is among the files run, and its blocks are doctest sessions that check output."""
    tutorial = ROOT / "docs" / "ad-modes.md"
    assert tutorial in DOC_FILES
    checked = [src for _, src in python_blocks(tutorial) if ">>>" in src]
    assert len(checked) >= 10


def test_a_wrong_output_is_caught(tmp_path):
    """The harness can fail: a block whose printed value is wrong, and one that raises."""
    doc = tmp_path / "wrong.md"
    doc.write_text("```python\n>>> 1 + 1\n3\n```\n\n```python\nraise ValueError('boom')\n```\n")
    failures = run_blocks(doc)
    assert len(failures) == 2
    assert "Expected:\n    3\nGot:\n    2" in failures[0]
    assert "ValueError: boom" in failures[1]


def test_ci_runs_the_readme_test_command():
    """.ci/run runs the README's whole-suite command (nothing narrower) and fails on 'no tests'."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```(?:bash|sh|console)\n(.*?)```", quickstart, flags=re.S)
    lines = [line for block in commands for line in block.strip().splitlines()]
    assert lines == [
        'pip install ".[plot]" && minidiff reproduce forward-gradient',
        'pip install ".[test]" && python -m pytest',
    ]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install ".[test]"' in ci
    calls = re.findall(r"python -m pytest(.*)", ci)
    assert len(calls) == 1 and calls[0].split("||")[0].strip() == "", calls  # no narrowing arguments
    assert "set -euo pipefail" in ci and "-eq 5" in ci


@pytest.mark.parametrize("path", DOC_FILES, ids=_shown)
def test_relative_links_resolve(path):
    """Every relative Markdown link of the docs points at a file or folder of the repository."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))
    missing = [t for t in targets if "://" not in t and not (path.parent / t).exists()]
    assert not missing, f"{_shown(path)} links to missing files: {missing}"
