"""The Box–Muller normal sampler on raw bits (``minidiff.backend.box_muller_normal``) and the ``out=`` and
``method=`` arguments of ``md.random.Generator``'s samplers.

The law is tested on one large sample from a fixed seed (so the test is deterministic); every
tolerance is stated: each statistic must lie within 5 standard errors of its value under N(0, 1), and
the Kolmogorov–Smirnov and chi-square tests must not reject at level 10⁻³.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import minidiff as md
from minidiff import backend

N = 1 << 21  # 2,097,152 draws: 64 chunks of the sampler, and one odd tail below


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return backend.box_muller_normal(np.random.default_rng(20261203), np.empty(N + 1, np.float32))


def test_the_sample_is_standard_normal_by_ks_and_chi_square(sample):
    z = sample.astype(np.float64)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    edges = stats.norm.ppf(np.linspace(0, 1, 101))  # 100 equiprobable bins
    counts = np.histogram(z, edges)[0]
    assert stats.chisquare(counts).pvalue > 1e-3


def test_the_moments_and_tails_are_within_five_standard_errors(sample):
    z, n = sample.astype(np.float64), sample.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24 / n)  # excess kurtosis 0
    for t in (2.0, 3.0, 4.0):
        p = 2 * stats.norm.sf(t)
        assert abs(np.mean(np.abs(z) > t) - p) < 5 * np.sqrt(p * (1 - p) / n) + 1 / n


def test_the_two_normals_of_one_word_and_neighbours_are_uncorrelated(sample):
    """ρ cos θ and ρ sin θ share ρ: uncorrelated, and (for a true Box–Muller pair) their squares too."""
    m = 1 << 15  # one chunk: its cosines, then its sines
    a, b = sample[:m].astype(np.float64), sample[m : 2 * m].astype(np.float64)
    bound = 5 / np.sqrt(m)
    assert abs(np.corrcoef(a, b)[0, 1]) < bound
    assert abs(np.corrcoef(a**2, b**2)[0, 1]) < bound
    assert abs(np.corrcoef(sample[:-1], sample[1:])[0, 1]) < 5 / np.sqrt(N)


def test_same_state_same_draws_and_every_size_is_filled():
    for n in (0, 1, 2, 3, (1 << 16) + 1, (1 << 16) + 2):
        out = np.full(n, np.nan, np.float32)
        backend.box_muller_normal(np.random.default_rng(5), out)
        assert np.isfinite(out).all()
        again = backend.box_muller_normal(np.random.default_rng(5), np.empty(n, np.float32))
        assert np.array_equal(out, again)
    # shapes: the array is filled as its flat view
    grid = backend.box_muller_normal(np.random.default_rng(5), np.empty((3, 4), np.float32))
    flat = backend.box_muller_normal(np.random.default_rng(5), np.empty(12, np.float32))
    assert np.array_equal(grid.ravel(), flat)


def test_the_backend_sampler_refuses_what_it_cannot_fill():
    with pytest.raises(
        TypeError, match="box_muller_normal: out must be a C-contiguous float32 array, got float64"
    ):
        backend.box_muller_normal(np.random.default_rng(0), np.empty(4))
    with pytest.raises(TypeError, match="C-contiguous"):
        backend.box_muller_normal(np.random.default_rng(0), np.empty((4, 4), np.float32).T)


# ----------------------------------------------------------------------------- Generator.normal/rademacher
def test_box_muller_through_the_generator_matches_the_backend_and_scales():
    z = md.random.Generator(3).normal((5, 7), 1.0, 2.0, dtype="float32", method="box-muller")
    raw = backend.box_muller_normal(np.random.default_rng(3), np.empty((5, 7), np.float32))
    np.testing.assert_array_equal(z.numpy(), raw * np.float32(2.0) + np.float32(1.0))


def test_box_muller_falls_back_to_the_library_where_it_is_not_faster():
    for dtype in ("float64", "float16"):
        a = md.random.Generator(1).normal((9,), dtype=dtype, method="box-muller")
        b = md.random.Generator(1).normal((9,), dtype=dtype)
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("method", ["library", "box-muller"])
def test_out_is_filled_and_returned_with_the_same_draws(dtype, method):
    buf = md.zeros((4, 3), dtype=dtype)
    z = md.random.Generator(2).normal((4, 3), 0.5, 3.0, dtype=dtype, method=method, out=buf)
    assert z is buf
    np.testing.assert_array_equal(
        z.numpy(), md.random.Generator(2).normal((4, 3), 0.5, 3.0, dtype=dtype, method=method).numpy()
    )


@pytest.mark.parametrize("shape", [(), (1,), (7,), (8,), (9,), (3, 5, 7)])
def test_rademacher_into_out_gives_the_draws_of_a_fresh_array(shape):
    buf = md.zeros(shape, dtype="float32")
    s = md.random.Generator(4).rademacher(shape, dtype="float32", out=buf)
    assert s is buf
    np.testing.assert_array_equal(
        s.numpy(), md.random.Generator(4).rademacher(shape, dtype="float32").numpy()
    )
    assert set(np.unique(s.numpy())) <= {-1.0, 1.0}


def test_an_unknown_method_is_refused():
    with pytest.raises(
        ValueError, match=r"normal: unknown method 'polar'; choose one of \('library', 'box-muller'\)"
    ):
        md.random.Generator(0).normal((2,), method="polar")


@pytest.mark.parametrize("sampler", ["normal", "rademacher"])
def test_a_wrong_out_is_refused_naming_the_sampler(sampler):
    draw = getattr(md.random.Generator(0), sampler)
    with pytest.raises(TypeError, match=f"{sampler}: out must be a minidiff Tensor, got ndarray"):
        draw((2,), dtype="float32", out=np.zeros(2, np.float32))
    with pytest.raises(
        ValueError,
        match=rf"{sampler}: out is a float64 tensor of shape \(2,\) on cpu; the draws are float32 of shape \(3,\)",
    ):
        draw((3,), dtype="float32", out=md.zeros((2,)))
    strided = md.zeros((4, 4), dtype="float32").T
    if strided._data.flags.c_contiguous:  # pragma: no cover - the transpose is a view here
        pytest.skip("transpose copied")
    with pytest.raises(ValueError, match=f"{sampler}: out must be C-contiguous"):
        draw((4, 4), dtype="float32", out=strided)
