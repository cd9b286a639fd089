"""Measurement harness: timing with spreads, Rf/Rb, the FLOP model, peak memory, environment.

>>> from minidiff.bench import flop_model
>>> flop_model([100, 300])["Rf"]
2.75
"""

from .allocator import allocator_state, keep_freed_memory
from .environment import environment
from .flops import flop_model, forward_flops, layer_flops
from .memory import peak_memory
from .rfrb import build_model, depth_sweep, rfrb
from .timing import Measurement, measure, ratio, summarize

__all__ = [
    "Measurement",
    "allocator_state",
    "build_model",
    "depth_sweep",
    "environment",
    "flop_model",
    "forward_flops",
    "keep_freed_memory",
    "layer_flops",
    "measure",
    "peak_memory",
    "ratio",
    "rfrb",
    "summarize",
]
