"""The C allocator's settings, which are part of what an Rf/Rb figure measures.

glibc returns large freed blocks to the operating system (blocks over the mmap threshold are unmapped,
and the heap top is trimmed), so every new parameter-sized temporary pays its page faults again.
``keep_freed_memory()`` raises both thresholds with ``mallopt`` so freed memory is reused, which is
what long-running training processes usually see.  Each figure records which setting it ran with.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_STATE: dict[str, Any] = {"mode": "default", "mmap_threshold": None, "trim_threshold": None}


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") else None
    except OSError:  # pragma: no cover
        return None


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Keep freed memory in the process (glibc ``mallopt``); returns whether it could be set.

    The setting lasts for the rest of the process (glibc offers no way to read it back).
    """
    libc = _libc()
    if libc is None:
        return False
    ok = (
        libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(min(threshold, 1 << 25))) == 1
    )  # glibc caps it at 32 MiB
    ok = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(threshold)) == 1 and ok
    if ok:
        _STATE.update(mode="keep", mmap_threshold=min(threshold, 1 << 25), trim_threshold=threshold)
    return ok


def allocator_state() -> dict:
    """How the allocator was set in this process, for the record of a benchmark."""
    return dict(_STATE)
