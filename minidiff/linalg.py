"""``md.linalg``: solve, inv, det, cholesky — differentiable in both modes, to any order."""

from __future__ import annotations

from .primitives.linalg import cholesky, det, inv, solve

__all__ = ["solve", "inv", "det", "cholesky"]
