"""``python -m minidiff``: the ``minidiff`` command (see :mod:`minidiff.cli`)."""

import sys

from minidiff.cli import main

if __name__ == "__main__":
    sys.exit(main())
