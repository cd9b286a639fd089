"""Option types of ``bench rfrb`` and ``bench depth`` checked by the parser, before any work: each parses
one option or raises a one-line usage error.

>>> existing_dir(".")
'.'
>>> existing_dir("/no/such/folder")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: not a folder: '/no/such/folder'
"""

from __future__ import annotations

import argparse
import os


def existing_dir(text: str) -> str:
    """A folder that exists (``--data-dir``)."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"not a folder: {text!r}")
    return text


def writable_file(text: str) -> str:
    """A file path whose folder exists and can be written (``--csv``): refused before the run, not
    after it."""
    folder = os.path.dirname(os.path.abspath(text)) or "."
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: folder {folder!r} is not writable")
    return text
