"""float32 derivatives of the paper's CNN against float64, layer by layer.

The CNN of ``md.nn.models.cnn`` (four 3×3 convolutions of 64 channels with biases, ReLU, 2×2 max-pools,
dense 1024 and 10) on the embedded digits at 28×28.  The float64 reference runs on the *same*
float32-rounded parameters and images, so only the arithmetic differs.

Finding (numbers in docs/testing.md): the float32 gradient agrees with float64 to a few 1e-7 relative
in every layer, except that the first two convolutions can show 2–5e-4.  That gap is not a rule error:
the upsampled digits have regions of identical pixels, whose 3×3 patches give *exactly* equal
activations in float64, so a max-pool window holds a tie and shares its derivative evenly (½, ¼...);
in float32 the matrix product rounds some of those equal patches differently (by an ulp), the tie
breaks and one element takes all of the derivative — or the other way round.  Both are valid
derivatives of a non-smooth function.  With float32's tie decisions imposed on the float64 pass, the
gap vanishes (a few 1e-7), and on images with a little noise (no exact ties) float32 is within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

import minidiff as md
from minidiff.data import load_digits

F = md.nn.functional
#: digits 0-6 and 58: digit 58 alone shows a float32/float64 gap of 6e-3 in conv1 on the measuring
#: machine (42 of its first-pool windows tie differently); the others show none
IMAGES = [58, 0, 1, 2, 3, 4, 5, 6]
TOL = 1e-5  # relative (Frobenius) error of each parameter's gradient, float32 vs float64


@pytest.fixture(scope="module")
def setting():
    model = md.nn.models.cnn(dtype="float64", seed=0)
    x, y = load_digits(size=28)
    p32 = md.pytree.tree_map(lambda t: t.astype("float32"), model.parameters())
    p64 = md.pytree.tree_map(lambda t: t.astype("float64"), p32)  # the same rounded values
    return model, x.numpy()[IMAGES].astype(np.float32), y[md.tensor(IMAGES)], p32, p64


def _windows(h):
    n, c, hh, ww = h.shape
    return md.reshape(h, (n, c, hh // 2, 2, ww // 2, 2))


def _shares(h):
    """The derivative share of each element of each 2×2 window: 1/k for the k tied maxima, else 0."""
    a = _windows(h).detach().numpy()  # a constant: which elements tie
    top = a == a.max(axis=(3, 5), keepdims=True)
    return top / top.sum(axis=(3, 5), keepdims=True)


def _loss(model, params, x, y, shares=None, record=None):
    """Cross-entropy of the model, with the max-pools' tie shares recorded, or imposed (``shares``):
    ``sum(window · share)`` has the value of the max and the derivative with those shares."""
    h, k = x, 0
    for i, layer in enumerate(model):
        if isinstance(layer, md.nn.MaxPool2d):
            if record is not None:
                record.append(_shares(h))
            if shares is not None:
                h = md.sum(_windows(h) * md.tensor(shares[k], dtype=h.dtype), axis=(3, 5))
                k += 1
                continue
        h = layer.apply(params.get(str(i), {}), h)
    return F.cross_entropy(h, y)


def _relative_errors(g32, g64) -> dict:
    return {
        f"{layer}.{name}": float(
            np.linalg.norm(g32[layer][name].numpy() - g64[layer][name].numpy())
            / np.linalg.norm(g64[layer][name].numpy())
        )
        for layer in g64
        for name in g64[layer]
    }


def _gradients(setting, images, shares32=False):
    model, _, y, p32, p64 = setting
    x32 = md.tensor(images)
    x64 = x32.astype("float64")
    rec32, rec64 = [], []
    g32 = md.grad(lambda p: _loss(model, p, x32, y, record=rec32))(p32)
    g64 = md.grad(lambda p: _loss(model, p, x64, y, record=rec64))(p64)
    differ = [int(np.sum(np.any(a != b, axis=(3, 5)))) for a, b in zip(rec32, rec64)]
    imposed = md.grad(lambda p: _loss(model, p, x64, y, shares=rec32))(p64) if shares32 else None
    return g32, g64, imposed, differ


def test_float32_gradient_within_1e5_where_no_max_pool_tie_flips(setting):
    """Digits with a little noise: no exact ties, the same max-pool winners in both precisions, and
    every layer's float32 gradient within 1e-5 relative of float64."""
    images = setting[1] + np.random.default_rng(0).uniform(0, 1e-3, setting[1].shape).astype(np.float32)
    g32, g64, _, differ = _gradients(setting, images)
    assert differ == [0, 0], f"max-pool windows with different winners: {differ}"
    errors = _relative_errors(g32, g64)
    assert len(errors) == 12, sorted(errors)  # 6 layers with parameters, weight and bias
    bad = {k: f"{e:.2e}" for k, e in errors.items() if not e <= TOL}
    assert not bad, f"float32 gradient off by more than {TOL} relative: {bad}"


def test_float32_discrepancy_on_raw_digits_is_exactly_the_max_pool_ties(setting):
    """On the raw digits some tied max-pool windows break differently in float32; imposing float32's
    tie shares on the float64 pass brings every layer within 1e-5, so the rules are not at fault."""
    g32, g64, imposed, differ = _gradients(setting, setting[1], shares32=True)
    plain, explained = _relative_errors(g32, g64), _relative_errors(g32, imposed)
    bad = {k: f"{e:.2e}" for k, e in explained.items() if not e <= TOL}
    assert not bad, f"not explained by the ties ({differ} windows differ): {bad}"
    after_pool = [k for k in plain if k.split(".")[0] not in ("0", "2")]  # layers above the 1st pool
    assert all(plain[k] <= TOL for k in after_pool), {k: plain[k] for k in after_pool}
    if differ == [0, 0]:  # (a BLAS that rounds equal patches equally leaves no gap to explain)
        assert all(e <= TOL for e in plain.values()), plain


def report(n_images: int = 64) -> str:
    """The figures of docs/testing.md: per layer, the relative gradient error of float32 against
    float64, plain and with float32's max-pool tie choices imposed, on the first ``n_images`` digits,
    on the test batch, and on the test batch with noise.  ``python tests/test_float32_accuracy.py``."""
    model = md.nn.models.cnn(dtype="float64", seed=0)
    x, y = load_digits(size=28)
    p32 = md.pytree.tree_map(lambda t: t.astype("float32"), model.parameters())
    p64 = md.pytree.tree_map(lambda t: t.astype("float64"), p32)
    images = x.numpy().astype(np.float32)
    noise = np.random.default_rng(0).uniform(0, 1e-3, (len(IMAGES), *images.shape[1:])).astype(np.float32)
    rows = [
        (f"first {n_images} digits", list(range(n_images)), 0.0),
        ("test batch (digits 58, 0-6)", IMAGES, 0.0),
        ("test batch + noise in [0, 1e-3]", IMAGES, noise),
    ]
    lines = ["| images | windows that tie differently (pool 1, 2) | float32 vs float64 | ties imposed |"]
    lines.append("|---|---|---|---|")
    for label, idx, extra in rows:
        setting = (model, None, y[md.tensor(idx)], p32, p64)
        g32, g64, imposed, differ = _gradients(setting, images[idx] + extra, shares32=True)
        plain, explained = _relative_errors(g32, g64), _relative_errors(g32, imposed)
        worst = ", ".join(f"{k} {v:.1e}" for k, v in sorted(plain.items(), key=lambda kv: -kv[1])[:3])
        lines.append(
            f"| {label} | {differ} | max {max(plain.values()):.1e} ({worst}) | max {max(explained.values()):.1e} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
