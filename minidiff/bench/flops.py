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
