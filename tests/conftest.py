"""Shared fixtures of the test suite, and the Hypothesis seed of the run.

Hypothesis draws fresh examples on every run, from one seed per run: ``MINIDIFF_HYPOTHESIS_SEED`` if
set, else ``--hypothesis-seed`` if given, else a random one.  The seed is printed in the pytest header
with the command that reproduces the run, and every Hypothesis test uses it; no example database is
written (profile ``minidiff``: ``database=None``, ``deadline=None``).
"""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest
from hypothesis import settings

import minidiff as md
from minidiff import backend

SEED_ENV = "MINIDIFF_HYPOTHESIS_SEED"

settings.register_profile("minidiff", database=None, deadline=None)
settings.load_profile("minidiff")


def hypothesis_seed(config) -> int:
    """The seed of this run: the environment variable, else ``--hypothesis-seed``, else random."""
    if os.environ.get(SEED_ENV, "").strip():
        return int(os.environ[SEED_ENV])
    given = config.getoption("hypothesis_seed", default=None)
    if given is not None:
        return int(given)
    return secrets.randbelow(2**32)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Fix the seed before Hypothesis' own plugin reads ``--hypothesis-seed`` (and set it there too, in
    case that plugin configured first)."""
    seed = hypothesis_seed(config)
    config.minidiff_hypothesis_seed = seed
    config.option.hypothesis_seed = seed
    from hypothesis import core

    core.global_force_seed = seed


def _seed_line(config) -> str:
    seed = config.minidiff_hypothesis_seed
    return (
        f"hypothesis seed: {seed}  (reproduce: {SEED_ENV}={seed} python -m pytest ... "
        f"or python -m pytest --hypothesis-seed={seed} ...)"
    )


def pytest_report_header(config):
    return [_seed_line(config)]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The seed again at the end (the header is hidden by ``-q``, the project's default)."""
    terminalreporter.write_line(_seed_line(config))


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
