"""What a benchmark ran on: CPU, BLAS, threads, library versions, allocator settings."""

from __future__ import annotations

import os
import platform
import sys

from .. import __version__, backend
from ..tensor.core import DeviceLike
from .allocator import allocator_state
from .memory import device_namespace


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> object:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        config = getattr(backend.numpy_module, "show_config", None)
        try:
            info = config(mode="dicts") if config else {}
            return info.get("Build Dependencies", {}).get("blas", "unknown")
        except Exception:
            return "unknown"
    return [
        {k: lib.get(k) for k in ("internal_api", "version", "num_threads", "architecture", "threading_layer")}
        for lib in threadpool_info()
    ]


def environment(device: DeviceLike = None) -> dict:
    """A dictionary describing the machine and software, recorded with every result."""
    dev = backend.get_device(device)
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "minidiff": __version__,
        "numpy": backend.numpy_module.__version__,
        "device": dev.name,
        "blas": _blas(),
        "env": {
            k: os.environ.get(k)
            for k in (
                "OPENBLAS_CORETYPE",
                "OPENBLAS_L2_SIZE",
                "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS",
                "MKL_NUM_THREADS",
                "MINIDIFF_SMALL_PRODUCT_THREADS",
                "MALLOC_MMAP_THRESHOLD_",
                "MALLOC_TRIM_THRESHOLD_",
            )
        },
        "allocator": allocator_state(),
    }
    try:
        import scipy

        env["scipy"] = scipy.__version__
    except ImportError:  # pragma: no cover
        pass
    if dev.name == "cuda":  # pragma: no cover - needs a GPU
        ns = device_namespace(dev)
        env["cupy"] = ns.__version__
        env["gpu"] = ns.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return env
