"""The FLOP model of Rf and Rb: count the matmul and convolution FLOPs each mode must do.

Let F_l be the forward FLOPs (2·multiply-adds) of layer l's matmul or convolution and F = Σ F_l.

* Forward gradient (one JVP): every layer computes its primal product (F_l) and the tangent products
  ``ḣ·W`` and ``h·Ẇ`` (2·F_l) — except the first layer, whose input is data with no tangent, so only
  ``x·Ẇ`` (F_1).  Rf = (F + 2F − F_1) / F = 3 − F_1/F.
* Backprop: the forward pass (F), then per layer the weight gradient ``gᵀ·h`` (F_l) and the input
  cotangent ``g·W`` (F_l) — except the first layer, which needs no input cotangent.
  Rb = 3 − F_1/F as well.

So by FLOPs both modes cost the same; measured differences come from memory traffic (the tape,
temporaries, page faults), elementwise work, the sampling of v, and per-op overhead.  The paper's
Rf ≈ 2.4 and Rb ≈ 4.2 on a GPU are of this kind.
"""

from __future__ import annotations

import math

from ..nn.modules import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential


def flop_model(layer_flops) -> dict:
    """FLOP-model Rf and Rb from the forward FLOPs of each weight layer, in order."""
    flops = [int(f) for f in layer_flops if f]
    if not flops:
        raise ValueError("flop_model: the model has no matmul or convolution layers")
    total = sum(flops)
    tangent = 2 * total - flops[0]
    backward = 2 * total - flops[0]
    return {
        "forward_flops": total,
        "jvp_flops": total + tangent,
        "backprop_flops": total + backward,
        "Rf": (total + tangent) / total,
        "Rb": (total + backward) / total,
    }


def layer_flops(module, input_shape, prefix: str = "") -> list[tuple[str, object, int]]:
    """``(dotted name, layer, forward FLOPs)`` of every elementary layer of ``module``, in call order.

    A :class:`~minidiff.nn.Sequential` is walked layer by layer, each layer seeing the output shape of
    the one before; shapes include the batch axis.

    >>> from minidiff import nn
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> [(name, f) for name, _, f in layer_flops(model, (5, 4))]
    [('0', 120), ('1', 0), ('2', 60)]
    """
    if isinstance(module, Sequential):
        out, shape = [], tuple(input_shape)
        for i, layer in enumerate(module):
            out.extend(layer_flops(layer, shape, f"{prefix}.{i}" if prefix else str(i)))
            shape = layer.output_shape(shape)
        return out
    return [(prefix, module, _own_flops(module, tuple(input_shape)))]


def forward_flops(module, input_shape) -> int:
    """Forward FLOPs of ``module`` on ``input_shape``: 2 × the multiply-adds of its matrix products and
    convolutions (elementwise and pooling layers count 0, bias additions are not counted)."""
    return sum(f for _, _, f in layer_flops(module, input_shape))


def _own_flops(layer, shape: tuple) -> int:
    out = layer.output_shape(shape)  # also checks that the layer accepts the shape
    if isinstance(layer, Linear):
        return 2 * math.prod(shape[:-1]) * layer.in_features * layer.out_features
    if isinstance(layer, Conv2d):
        n, o, ho, wo = out
        kh, kw = layer.kernel_size
        return 2 * n * o * ho * wo * layer.in_channels * kh * kw
    if isinstance(layer, (ReLU, Flatten, MaxPool2d)):
        return 0
    raise NotImplementedError(f"layer_flops: no FLOP model for {type(layer).__name__}")
