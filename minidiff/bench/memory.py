"""Peak memory of one call: tracemalloc on NumPy (NumPy reports its buffers to it), the pool on CuPy."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

from ..backend import Device
from ..primitives.creation import zeros
from ..tensor.kernel import array_namespace


def device_namespace(device: Device) -> Any:
    """The array namespace of ``device`` (CuPy on ``"cuda"``), found through the public API."""
    return array_namespace(zeros((), device=device))


def peak_memory(fn: Callable[..., Any], device: Device | None = None) -> int:
    """Bytes allocated at the high-water mark of ``fn()`` above what was allocated before it."""
    if device is not None and getattr(device, "name", "cpu") == "cuda":  # pragma: no cover - needs a GPU
        pool = device_namespace(device).get_default_memory_pool()
        device.synchronize()
        pool.free_all_blocks()
        before = pool.used_bytes()
        fn()
        device.synchronize()
        return max(pool.total_bytes() - before, 0)
    gc.collect()
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not started:
            tracemalloc.stop()
    return max(peak - before, 0)
