"""DEER: parallel evaluation of nonlinear recurrences (and ODEs) by Newton's method and scans.

See ``docs/deer.md`` and section 2 of the method specifications.
"""

from __future__ import annotations

from . import cells
from .bvp import BOUNDARY_KINDS, deer_bvp
from .cells import elman_cell, gru_cell, init_elman, init_gru, init_lstm, lstm_cell
from .multishift import deer_rnn_multishift, sequential_rnn_multishift, stacked_cell
from .ode import EXPM_METHODS, deer_odeint, sequential_odeint
from .rnn import (
    DeerConvergenceError,
    DeerConvergenceWarning,
    DeerStats,
    deer_rnn,
    default_tolerances,
    sequential_rnn,
)
from .scan import SCAN_METHODS, affine_scan, associative_scan

__all__ = [
    "affine_scan",
    "associative_scan",
    "SCAN_METHODS",
    "deer_rnn",
    "sequential_rnn",
    "deer_rnn_multishift",
    "sequential_rnn_multishift",
    "stacked_cell",
    "deer_odeint",
    "sequential_odeint",
    "EXPM_METHODS",
    "deer_bvp",
    "BOUNDARY_KINDS",
    "DeerStats",
    "DeerConvergenceWarning",
    "DeerConvergenceError",
    "default_tolerances",
    "cells",
    "gru_cell",
    "init_gru",
    "lstm_cell",
    "init_lstm",
    "elman_cell",
    "init_elman",
]
