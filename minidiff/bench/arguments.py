"""Command-line pieces shared by the subcommands: value types for the options (each parses one option or
raises a one-line usage error, so a bad value is refused before any work), checks of the paths a run
will write, the allocator option, and the JSON output.

Every type has a ``__name__`` (argparse prints it in "invalid … value" messages, and the tests look up
bad values for each type by it).

>>> from minidiff.bench.arguments import choice_list, int_at_least, int_list, positive_float, xla_flags
>>> int_at_least(1)("3"), int_list("1,2,5"), positive_float("0.5")
(3, (1, 2, 5), 0.5)
>>> choice_list(("mlp", "cnn"))("cnn,mlp")
('cnn', 'mlp')
>>> xla_flags("--xla_cpu_use_thunk_runtime=false")
'--xla_cpu_use_thunk_runtime=false'
>>> positive_float("inf")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: must be a finite number > 0, got 'inf'
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Collection

from .. import backend


class UsageError(Exception):
    """A bad input found when a command starts, before its work: ``minidiff.cli.main`` reports it as a
    one-line usage error (exit status 2), as the parser does for a bad value."""


def int_at_least(low: int) -> Callable[[str], int]:
    """An ``argparse`` type for integers ``≥ low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = {1: "positive_int", 0: "nonnegative_int"}.get(low, f"int_at_least_{low}")
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)
#: Seeds are non-negative integers (what ``md.random.Generator`` accepts).
seed = int_at_least(0)


def _finite_float(name: str, low: float | None, low_open: bool) -> Callable[[str], float]:
    bound = "" if low is None else f" {'>' if low_open else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        if not math.isfinite(value) or too_low:
            raise argparse.ArgumentTypeError(f"must be a finite number{bound}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


#: Finite floats: any, ``> 0``, ``>= 0`` (``inf`` and ``nan`` are refused by all three).
finite_float = _finite_float("finite_float", None, False)
positive_float = _finite_float("positive_float", 0.0, True)
nonnegative_float = _finite_float("nonnegative_float", 0.0, False)


def int_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers, each at least 1 (``1,2,5``)."""
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 1,2,5, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def choice_list(choices: Collection[str]) -> Callable[[str], tuple[str, ...]]:
    """An ``argparse`` type for a comma-separated, non-empty subset of ``choices`` (in the given order,
    repeats dropped).  ``choices`` is read at parse time, so a dict that gains keys later is honoured."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            what = f"unknown {', '.join(map(repr, unknown))}" if unknown else f"no name in {text!r}"
            raise argparse.ArgumentTypeError(
                f"{what}; choose a comma-separated subset of {','.join(choices)}"
            )
        return names

    parse.__name__ = "choice_list"
    return parse


def dtype(text: str) -> str:
    if text not in ("float32", "float64"):
        raise argparse.ArgumentTypeError(f"dtype must be float32 or float64, got {text!r}")
    return text


def xla_flags(text: str) -> str:
    """Flags for XLA (the ``XLA_FLAGS`` of a JAX process): space-separated words, each ``--name`` or
    ``--name=value``.  On the command line the value starts with ``--``, so it is given with ``=``:
    ``--xla-flags=--xla_cpu_use_thunk_runtime=false``."""
    words = text.split()
    bad = [w for w in words if not w.startswith("--") or len(w) < 3 or w[2] in "-="]
    if not words or bad:
        what = f"{bad[0]!r} is not a flag" if bad else "no flag given"
        raise argparse.ArgumentTypeError(f"{what}; XLA flags look like --xla_cpu_use_thunk_runtime=false")
    return " ".join(words)


def device(name: str) -> str:
    """A usable device name (``cuda`` without a GPU is refused here, with the reason)."""
    from ..errors import MinidiffError

    try:
        backend.get_device(name)
    except (RuntimeError, ValueError, MinidiffError) as exc:
        raise argparse.ArgumentTypeError(str(exc).splitlines()[0]) from None
    return name


def add_allocator_option(parser: argparse.ArgumentParser, recorded: str = "the result") -> None:
    """The ``--keep-freed-memory`` flag (applied by :func:`apply_allocator_option`)."""
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help=f"set the C allocator to keep freed memory (glibc mallopt); recorded with {recorded}",
    )


def apply_allocator_option(args: argparse.Namespace) -> None:
    """Keep freed memory if ``--keep-freed-memory`` was given; a note on stderr where it cannot."""
    if getattr(args, "keep_freed_memory", False):
        from .allocator import keep_freed_memory

        if not keep_freed_memory():
            print(
                "note: could not change the allocator (no glibc mallopt); using the default", file=sys.stderr
            )


# ----------------------------------------------------------------------------- paths
def _nearest_existing(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _writable_folder(folder: str, for_what: str) -> None:
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"cannot write {for_what}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {for_what}: no write permission in {folder}")


def output_file(text: str) -> str:
    """A file a run will write: its folder must exist and be writable, and it must not be a folder.

    Checked when the options are parsed, so a run is never lost to an unwritable path at its end.
    """
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    path = os.path.abspath(text)
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"cannot write {text}: it is a folder")
    folder = os.path.dirname(path)
    if not os.path.exists(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text}: folder {folder} does not exist")
    _writable_folder(folder, text)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: the file is read-only")
    return text


def output_dir(text: str) -> str:
    """A folder a run will write into (created if missing): it, or its nearest existing parent, must be a
    writable folder.  Nothing is created when the options are parsed."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    _writable_folder(_nearest_existing(os.path.abspath(text)), text)
    return text


def _mnist_folder(kinds: tuple[str, ...]) -> Callable[[str], str]:
    """An ``argparse`` type for a folder holding the MNIST IDX images and labels of ``kinds`` (raw or
    ``.gz``); their contents are read and checked when the run starts (:func:`minidiff.data.load_mnist`)."""

    def parse(text: str) -> str:
        from ..data import mnist_files

        try:
            for kind in kinds:
                mnist_files(text, kind)
        except (FileNotFoundError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    parse.__name__ = "mnist_dir" if len(kinds) == 2 else "mnist_train_dir"
    return parse


#: ``train --data-dir``: the training and test sets; ``bench rfrb --data-dir``: the training set only.
mnist_dir = _mnist_folder(("train", "test"))
mnist_train_dir = _mnist_folder(("train",))


def write_json(result: dict, path: str) -> None:
    """Write ``result`` to ``path`` as JSON and say so (nothing when ``path`` is empty).

    If the file cannot be written after all (the folder vanished, the disk is full), the result goes to
    a file in the temporary folder instead, named on stderr: a finished run is never lost.
    """
    if not path:
        return
    try:
        with open(path, "w") as fh:
            json.dump(result, fh, indent=1, default=float)
    except OSError as exc:
        fd, rescue = tempfile.mkstemp(prefix="minidiff-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh, indent=1, default=float)
        print(
            f"error: could not write {path} ({exc.strerror or exc}); wrote {rescue} instead", file=sys.stderr
        )
        return
    print(f"wrote {path}")
