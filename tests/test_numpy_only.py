"""Functions written only with ``np.`` calls, as a NumPy user writes them, differentiated by minidiff.

Each function below never names minidiff: it runs as plain NumPy on ndarrays (which gives the finite
differences) and, handed tensors, through NEP 13/18 on minidiff's functions (which gives the
derivatives).  Checked in float64 against central finite differences of the NumPy run:

* gradient — ``md.grad`` and tape style ``backward()`` against the full central-difference gradient
  (step 1e-6; rtol 1e-6, atol 1e-6 · max(1, |∇f|));
* ``md.jvp`` — against the directional difference ``(f(x + hv) − f(x − hv)) / 2h`` (same tolerances);
* ``md.hvp`` in all three modes — against ``(∇f(x + hv) − ∇f(x − hv)) / 2h`` of the checked gradient
  (step 1e-5; rtol 1e-5, atol 1e-5 · max(1, |Hv|)), and ``vᵀHv`` against the second difference
  ``(f(x + hv) − 2f(x) + f(x − hv)) / h²`` of the NumPy function alone (step 1e-4; rtol 1e-5).
"""

from __future__ import annotations

import numpy as np
import pytest

import minidiff as md

RNG = np.random.default_rng(8)

# ----------------------------------------------------------------------------- data, fixed per module
N, D, C, HIDDEN = 6, 3, 4, 5
X = RNG.normal(size=(N, D))
LABELS = RNG.integers(0, C, size=N)
ONE_HOT = np.eye(C)[LABELS]
SAMPLES = RNG.normal(loc=[0.5, -1.0, 2.0], scale=[1.0, 0.5, 2.0], size=(N, D))


# ----------------------------------------------------------------------------- the NumPy-only functions
def softmax_cross_entropy(logits):
    """Mean cross-entropy of a softmax, computed stably (max subtracted), NumPy only."""
    logits = np.reshape(logits, (N, C))
    z = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    return -np.mean(np.sum(ONE_HOT * log_probs, axis=1))


def mlp_unpack(params):
    sizes = [(D, HIDDEN), (HIDDEN,), (HIDDEN, C), (C,)]
    out, start = [], 0
    for shape in sizes:
        n = int(np.prod(shape))
        out.append(np.reshape(params[start : start + n], shape))
        start += n
    return out


MLP_SIZE = D * HIDDEN + HIDDEN + HIDDEN * C + C


def mlp_hidden(params):
    w1, b1, _, _ = mlp_unpack(params)
    return np.tanh(np.dot(X, w1) + b1)


def mlp_loss(params):
    """A two-layer MLP (tanh, then a leaky ReLU by np.maximum) with a squared-error loss, NumPy only."""
    _, _, w2, b2 = mlp_unpack(params)
    pre = np.dot(mlp_hidden(params), w2) + b2
    out = np.maximum(pre, 0.1 * pre)
    return np.mean(np.square(out - ONE_HOT))


def gaussian_log_likelihood(params):
    """Log-likelihood of SAMPLES under a diagonal Gaussian with mean and log standard deviation."""
    mu, log_sigma = params[:D], params[D:]
    z = (SAMPLES - mu) / np.exp(log_sigma)
    return -0.5 * np.sum(np.square(z)) - N * np.sum(log_sigma) - 0.5 * N * D * np.log(2 * np.pi)


def rosenbrock(x):
    """The Rosenbrock function in any dimension, NumPy only."""
    return np.sum(100.0 * np.square(x[1:] - np.square(x[:-1])) + np.square(1.0 - x[:-1]))


CASES = {  # function, and the point it is checked at (fixed, so every test sees the same point)
    "softmax_cross_entropy": (softmax_cross_entropy, RNG.normal(size=N * C)),
    "mlp": (mlp_loss, 0.5 * RNG.normal(size=MLP_SIZE)),
    "gaussian_log_likelihood": (gaussian_log_likelihood, RNG.normal(scale=0.5, size=2 * D)),
    "rosenbrock": (rosenbrock, RNG.uniform(-1.5, 1.5, size=5)),
}


# ----------------------------------------------------------------------------- finite differences
def fd_gradient(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def close(got, want, rtol, atol_scale):
    got = got.numpy() if isinstance(got, md.Tensor) else np.asarray(got)
    want = np.asarray(want, dtype=float)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol_scale * max(1.0, float(np.max(np.abs(want)))))


@pytest.fixture(params=sorted(CASES))
def case(request):
    f, x = CASES[request.param]
    v = np.random.default_rng(1).normal(size=x.shape)
    return f, x, v


def test_the_functions_are_plain_numpy(case):
    """On ndarrays they return NumPy floats; on tensors, 0-d tensors with the same value."""
    f, x, _ = case
    plain = f(x)
    assert isinstance(plain, (float, np.floating)), type(plain)
    traced = f(md.tensor(x))
    assert isinstance(traced, md.Tensor) and traced.shape == ()
    close(traced, plain, rtol=1e-12, atol_scale=1e-12)


def test_grad_and_tape_match_finite_differences(case):
    f, x, _ = case
    want = fd_gradient(f, x)
    close(md.grad(f)(md.tensor(x)), want, rtol=1e-6, atol_scale=1e-6)
    leaf = md.tensor(x, requires_grad=True)
    f(leaf).backward()
    close(leaf.grad, want, rtol=1e-6, atol_scale=1e-6)
    value, g = md.value_and_grad(f)(md.tensor(x))
    close(value, f(x), rtol=1e-12, atol_scale=1e-12)
    close(g, want, rtol=1e-6, atol_scale=1e-6)


def test_jvp_matches_a_directional_difference(case):
    f, x, v = case
    h = 1e-6
    want = (f(x + h * v) - f(x - h * v)) / (2 * h)
    out, jv = md.jvp(f, (md.tensor(x),), (md.tensor(v),))
    close(out, f(x), rtol=1e-12, atol_scale=1e-12)
    close(jv, want, rtol=1e-6, atol_scale=1e-6)


@pytest.mark.parametrize("mode", ["fwd-over-rev", "rev-over-fwd", "rev-over-rev"])
def test_hvp_in_every_mode_matches_finite_differences(case, mode):
    f, x, v = case
    h = 1e-5
    grad = md.grad(f)
    want = (grad(md.tensor(x + h * v)).numpy() - grad(md.tensor(x - h * v)).numpy()) / (2 * h)
    hv = md.hvp(f, (md.tensor(x),), (md.tensor(v),), mode=mode)[0]
    close(hv, want, rtol=1e-5, atol_scale=1e-5)
    h2 = 1e-4  # vᵀHv from the NumPy function alone, no minidiff derivative involved
    second = (f(x + h2 * v) - 2 * f(x) + f(x - h2 * v)) / h2**2
    close(np.vdot(hv.numpy(), v), second, rtol=1e-5, atol_scale=1e-5)


def test_mlp_draws_stay_away_from_the_kink():
    """The finite differences of the leaky ReLU are only meaningful away from 0: state the margin."""
    x = CASES["mlp"][1]
    _, _, w2, b2 = mlp_unpack(x)
    pre = np.dot(mlp_hidden(x), w2) + b2
    assert np.min(np.abs(pre)) > 1e-3


def test_per_example_gradients_with_vmap():
    """vmap over data points of a NumPy-only log-density gives each point's gradient."""
    mu, log_sigma = np.array([0.1, -0.2, 0.3]), np.array([0.0, -0.5, 0.4])

    def log_density(point, params):
        z = (point - params[:D]) / np.exp(params[D:])
        return -0.5 * np.sum(z * z) - np.sum(params[D:])

    params = np.concatenate([mu, log_sigma])
    per_point = md.vmap(lambda p: md.grad(lambda q: log_density(p, q))(md.tensor(params)))(md.tensor(SAMPLES))
    for i in range(N):
        close(
            per_point[i],
            fd_gradient(lambda q: log_density(SAMPLES[i], q), params),
            rtol=1e-6,
            atol_scale=1e-6,
        )
