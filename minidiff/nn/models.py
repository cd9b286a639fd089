"""The forward-gradient paper's models (Baydin et al., 2022; see ``docs/papers.md`` §1).

* :func:`logreg` — multinomial logistic regression, 784 → 10;
* :func:`mlp` — 784 → 1024 → 1024 → 10 with ReLU;
* :func:`mlp_depth` — the MLP with ``n`` hidden layers of one width, for the depth sweep;
* :func:`cnn` — four 3×3 convolutions of 64 channels without padding, ReLU, a 2×2 max-pool after the
  2nd and the 4th, then dense 1024 (ReLU) and dense 10.  On 28×28 input the maps are
  26 → 24 → 12 → 10 → 8 → 4, so the dense layer sees 64·4·4 = 1024 features.

The MLPs take flattened input (N, 784), the CNN NCHW input (N, 1, 28, 28); each model records the shape
of one example as ``model.example_shape``.  Outputs are logits (use ``F.cross_entropy``).

Randomness: pass ``rng`` or ``seed`` (default 0, so a model is reproducible by default), each an int, a
:class:`minidiff.primitives.random.Generator` or a ``numpy.random.Generator`` (see
:func:`minidiff.primitives.random.as_generator`); ``rng`` wins when both are given.  Values are drawn on the CPU
from that seed and moved to ``device``, so one seed gives the same initial parameters on every device.
Layers are initialized as PyTorch's defaults (uniform on ±1/√fan_in for weights and biases).

>>> import minidiff as md
>>> model = md.nn.models.cnn()
>>> model.output_shape((64, 1, 28, 28)), model.num_parameters()
((64, 10), 1171274)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..primitives.random import RngLike, as_generator
from ..tensor.core import DeviceLike, DTypeLike
from .modules import Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential, _count

__all__ = ["logreg", "mlp", "mlp_depth", "cnn", "build", "MODELS"]


def logreg(
    in_features: int = 784,
    classes: int = 10,
    *,
    seed: int = 0,
    rng: RngLike = None,
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
) -> Sequential:
    """Multinomial logistic regression: one dense layer ``in_features → classes`` (logits)."""
    gen = as_generator(seed if rng is None else rng, op="logreg")
    model = Sequential(Linear(in_features, classes, rng=gen, dtype=dtype, device=device))
    model.example_shape = (int(in_features),)
    return model


def mlp(
    in_features: int = 784,
    hidden: int | Sequence[int] = (1024, 1024),
    classes: int = 10,
    *,
    seed: int = 0,
    rng: RngLike = None,
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
) -> Sequential:
    """Dense layers ``in_features → hidden[0] → … → classes`` with ReLU between them."""
    gen = as_generator(seed if rng is None else rng, op="mlp")
    if isinstance(hidden, int):
        hidden = (hidden,)
    sizes = [int(in_features), *(int(h) for h in hidden), int(classes)]
    layers: list[Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b, rng=gen, dtype=dtype, device=device))
        if i < len(sizes) - 2:
            layers.append(ReLU())
    model = Sequential(*layers)
    model.example_shape = (int(in_features),)
    return model


def mlp_depth(
    n_hidden_layers: int,
    width: int = 1024,
    in_features: int = 784,
    classes: int = 10,
    *,
    seed: int = 0,
    rng: RngLike = None,
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
) -> Sequential:
    """The MLP with ``n_hidden_layers`` hidden layers of ``width`` units (the depth sweep: 1 to 100)."""
    layers = _count("mlp_depth", "n_hidden_layers", n_hidden_layers, low=0)
    return mlp(in_features, (int(width),) * layers, classes, seed=seed, rng=rng, dtype=dtype, device=device)


def cnn(
    in_channels: int = 1,
    classes: int = 10,
    *,
    image_size: int = 28,
    channels: int = 64,
    hidden: int = 1024,
    seed: int = 0,
    rng: RngLike = None,
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
) -> Sequential:
    """The paper's CNN: conv3×3(64)–ReLU–conv3×3(64)–ReLU–maxpool2 (twice), Flatten, dense 1024–ReLU, dense.

    ``image_size`` (default 28) sets the dense layer's input size; it must leave a map of at least 1×1.
    """
    gen = as_generator(seed if rng is None else rng, op="cnn")
    kw = {"rng": gen, "dtype": dtype, "device": device}
    features = [
        Conv2d(in_channels, channels, 3, **kw),
        ReLU(),
        Conv2d(channels, channels, 3, **kw),
        ReLU(),
        MaxPool2d(2),
        Conv2d(channels, channels, 3, **kw),
        ReLU(),
        Conv2d(channels, channels, 3, **kw),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
    ]
    example = (int(in_channels), int(image_size), int(image_size))
    n_features = Sequential(*features).output_shape((1, *example))[1]
    model = Sequential(
        *features,
        Linear(n_features, hidden, **kw),
        ReLU(),
        Linear(hidden, classes, **kw),
    )
    model.example_shape = example
    return model


MODELS: dict[str, Callable[..., Sequential]] = {"logreg": logreg, "mlp": mlp, "cnn": cnn}


def build(name: str, **kwargs: Any) -> Sequential:
    """One of :data:`MODELS` by name: ``build("mlp", seed=1, dtype="float64")``."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return builder(**kwargs)
