"""Command-line pieces shared by the bench subcommands: value types for the options (each parses one
option or raises a one-line usage error), the allocator option, and the JSON output.

>>> from minidiff.bench.arguments import int_at_least, int_list
>>> int_at_least(1)("3"), int_list("1,2,5")
(3, (1, 2, 5))
"""

from __future__ import annotations

import argparse
import json
import sys

from .. import backend


def int_at_least(low: int):
    """An ``argparse`` type for integers ``≥ low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "positive_int" if low == 1 else f"int_at_least_{low}"
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


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


def dtype(text: str) -> str:
    if text not in ("float32", "float64"):
        raise argparse.ArgumentTypeError(f"dtype must be float32 or float64, got {text!r}")
    return text


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


def write_json(result, path) -> None:
    """Write ``result`` to ``path`` as JSON and say so (nothing when ``path`` is empty)."""
    if path:
        with open(path, "w") as fh:
            json.dump(result, fh, indent=1, default=float)
        print(f"wrote {path}")
