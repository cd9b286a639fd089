"""Measurement harness: timing with spreads, Rf/Rb of any loss, the FLOP model, per-primitive
profiles, peak memory, environment, CSV tables.

>>> from minidiff.bench import flop_model
>>> flop_model([100, 300])["Rf"]
2.75
"""

from .allocator import allocator_state, keep_freed_memory
from .environment import environment
from .export import to_csv, write_csv
from .flops import executed_flop_model, flop_model, forward_flops, layer_flops, primitive_flops
from .memory import peak_memory
from .profile import format_profile, profile_loss
from .rfrb import build_model, depth_sweep, measure_loss, rfrb
from .timing import Measurement, measure, ratio, summarize

__all__ = [
    "Measurement",
    "allocator_state",
    "build_model",
    "depth_sweep",
    "environment",
    "executed_flop_model",
    "flop_model",
    "format_profile",
    "forward_flops",
    "keep_freed_memory",
    "layer_flops",
    "measure",
    "measure_loss",
    "peak_memory",
    "primitive_flops",
    "profile_loss",
    "ratio",
    "rfrb",
    "summarize",
    "to_csv",
    "write_csv",
]
