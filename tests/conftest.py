"""Shared fixtures of the test suite."""

from __future__ import annotations

import numpy as np
import pytest

import minidiff as md
from minidiff import backend


@pytest.fixture
def rng():
    """A seeded NumPy generator, fresh for every test (tests stay independent of their order)."""
    return np.random.default_rng(20240611)


@pytest.fixture(scope="session")
def fake_device():
    """A second numpy-backed device named ``"fake"``, registered once per session, to mix devices."""
    try:
        return backend.register_device("fake")
    except ValueError:  # already registered (e.g. by another fixture or a doctest)
        return backend.get_device("fake")


def _device_param(name: str):
    if name == "cuda":
        ok, why = md.cuda_available(), md.cuda_unavailable_reason()
        return pytest.param(name, marks=pytest.mark.skipif(not ok, reason=f"no CUDA device: {why}"))
    return pytest.param(name)


#: ``@pytest.mark.parametrize("device", DEVICES)``: every device, CUDA skipped with the stated reason.
DEVICES = [_device_param("cpu"), _device_param("cuda")]


@pytest.fixture(params=DEVICES)
def device(request):
    """Each device name in turn; ``"cuda"`` is skipped (with CuPy's reason) where no GPU is usable."""
    return request.param
