"""Neural-network building blocks on minidiff's primitives."""

from . import functional

__all__ = ["functional"]
