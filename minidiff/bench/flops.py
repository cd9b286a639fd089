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

The counts come from the primitives a function actually executes (:func:`executed_flop_model`): one
evaluation of the loss, one JVP pass and one reverse-mode pass are run while every matrix product is
recorded (``matmul``, ``einsum`` and the three convolution primitives), so the model holds for
any ``loss(params)`` — an input without a tangent or a cotangent costs nothing there, exactly as the
rules run.  :func:`layer_flops` (from a module's layers) stays as a cross-check for ``md.nn`` models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..nn.modules import Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential
from ..primitives.registry import intercept_evaluations
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree
from ..transforms.core import jvp, value_and_grad

#: The primitives whose FLOPs are counted: the matrix products and convolutions.
COUNTED = ("matmul", "einsum", "conv2d", "conv2d_transpose", "conv2d_weight_grad")
#: The convolution primitives: each is one GEMM over the (N, O, Ho, Wo) output-sized operand.
_CONVOLUTIONS = {"conv2d": (-1, 1), "conv2d_transpose": (0, 1), "conv2d_weight_grad": (1, 0)}


def flop_model(layer_flops: Sequence[int]) -> dict:
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


def layer_flops(
    module: Module, input_shape: tuple[int, ...], prefix: str = ""
) -> list[tuple[str, Module, int]]:
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


def forward_flops(module: Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of ``module`` on ``input_shape``: 2 × the multiply-adds of its matrix products and
    convolutions (elementwise and pooling layers count 0, bias additions are not counted)."""
    return sum(f for _, _, f in layer_flops(module, input_shape))


def _own_flops(layer: Module, shape: tuple) -> int:
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


# ----------------------------------------------------------------------------- executed primitives
def primitive_flops(
    name: str, shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...], params: PyTree = None
) -> int:
    """FLOPs of one executed primitive from its operands' shapes: 2 × the multiply-adds of a matrix
    product or convolution, 0 for every other primitive.

    ``matmul`` of ``(…, n, k) @ (…, k, m)`` is ``2·k`` per output element; an ``einsum`` of ``p ≥ 2``
    operands is ``p`` per point of its full index space (``p − 1`` multiplies and an add: ``2·i·j·k``
    for ``ij,jk->ik``; more than two operands counted as one naive contraction).

    >>> primitive_flops("matmul", [(64, 784), (784, 10)], (64, 10))
    1003520
    >>> primitive_flops("einsum", [(2, 3), (3, 4)], (2, 4), {"spec": "ij,jk->ik"})
    48
    >>> primitive_flops("exp", [(5,)], (5,))
    0

    A convolution (and each of the two maps of its VJP) is ``2·C·kh·kw`` per element of its
    ``(N, O, Ho, Wo)`` operand:

    >>> primitive_flops("conv2d", [(8, 3, 28, 28), (16, 3, 5, 5)], (8, 16, 24, 24))
    11059200
    """
    if name == "matmul":
        return 2 * math.prod(out_shape) * shapes[0][-1]
    if name in _CONVOLUTIONS:
        g, w = _CONVOLUTIONS[name]  # where the (N, O, Ho, Wo) operand and the OIHW-shaped one are
        big = out_shape if g < 0 else shapes[g]
        kernel = shapes[w] if name != "conv2d_weight_grad" else out_shape
        return 2 * math.prod(big) * math.prod(kernel[1:])
    if name == "einsum" and len(shapes) >= 2:
        terms = params["spec"].split("->")[0].split(",")
        sizes: dict = {}
        for term, shape in zip(terms, shapes):
            for letter, d in zip(term, shape):
                sizes[letter] = max(sizes.get(letter, 1), d)
        return len(shapes) * math.prod(sizes.values())
    return 0


@contextmanager
def recording_products() -> Iterator[list]:
    """A list that fills with ``{"primitive", "shapes", "flops"}`` for every matrix product executed
    inside the block (see :func:`primitive_flops`).

    >>> import minidiff as md
    >>> with recording_products() as products:
    ...     y = md.ones((2, 3)) @ md.ones((3, 4))
    >>> products
    [{'primitive': 'matmul', 'shapes': [[2, 3], [3, 4]], 'flops': 48}]
    """
    products: list = []

    def note(prim: Any, args: Any, params: Any, run: Callable[[], Tensor]) -> Tensor:
        out = run()
        if prim.name in COUNTED:
            shapes = [tuple(a.shape) for a in args]
            flops = primitive_flops(prim.name, shapes, out.shape, params)
            products.append({"primitive": prim.name, "shapes": [list(s) for s in shapes], "flops": flops})
        return out

    with intercept_evaluations(note):
        yield products


def executed_flop_model(
    loss: Callable[..., Any], params: PyTree, directions: PyTree
) -> tuple[dict | None, str | None]:
    """``(model, None)``: the matrix-product FLOPs that ``loss(params)``, one JVP pass along
    ``directions`` and one reverse-mode pass (value and gradient) execute, with Rf and Rb by FLOPs;
    ``(None, reason)`` when the loss executes no matrix product.

    >>> import minidiff as md
    >>> x = md.ones((8, 5))
    >>> loss = lambda p: (x @ p["w"]).sum()
    >>> p = {"w": md.ones((5, 3))}
    >>> model, _ = executed_flop_model(loss, p, {"w": md.ones((5, 3))})
    >>> model["forward_flops"], model["jvp_flops"], model["backprop_flops"], model["Rf"]
    (240, 480, 480, 2.0)
    """
    with recording_products() as forward:
        loss(params)
    total = sum(p["flops"] for p in forward)
    if total == 0:
        return None, "the loss executes no matrix product (matmul, einsum, conv2d), so FLOPs give no model"
    with recording_products() as tangent:
        jvp(loss, (params,), (directions,))
    with recording_products() as backward:
        value_and_grad(loss)(params)
    jvp_flops = sum(p["flops"] for p in tangent)
    backprop_flops = sum(p["flops"] for p in backward)
    return {
        "forward_flops": total,
        "jvp_flops": jvp_flops,
        "backprop_flops": backprop_flops,
        "Rf": jvp_flops / total,
        "Rb": backprop_flops / total,
        "counted": "matrix products executed (matmul, einsum; conv2d runs as one matmul)",
        "products": forward,
    }, None
