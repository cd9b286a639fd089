"""Gradient checkpointing: ``md.checkpoint(f)`` recomputes ``f`` in the backward pass instead of
keeping its intermediates on the tape.

How: each call of the wrapped function in reverse mode binds one user primitive (``md.primitive``)
whose inputs are the floating-point tensors among ``f``'s arguments.  The tape node it leaves saves
those inputs and nothing else (its VJP rule declares ``reads`` of the inputs only, not of the
output); ``f``'s own operations run on plain values, one level down, so none of them is recorded.
The VJP rule runs ``f`` again under a fresh ``md.vjp`` and pulls the cotangent back through that
recomputation.  Memory: the checkpointed segment keeps its inputs instead of every intermediate.
Time: one more forward pass of ``f`` per backward pass.

* Forward mode and ``vmap`` alone store nothing, so there ``checkpoint(f)`` simply calls ``f``
  (also under ``md.no_grad()``): a JVP through it is the JVP of ``f``, at the same cost.
* Nested transforms: the rules are written with ``md.jvp``/``md.vjp``, so every order works (grad of
  grad, the three ``hvp`` modes).  Only the first reverse pass saves memory: an outer transform
  differentiates the recomputation, whose values its own tape then records.
* Pytrees of inputs and outputs are accepted.  Output tensors must be floating-point (other leaves,
  such as numbers, come back as they are); several are packed into one vector for the primitive and
  unpacked after it.
* ``f`` must not close over a tensor that is being differentiated (a ``requires_grad=True``
  parameter, an outer transform's value): its derivative would be lost, so this raises; pass such
  tensors as arguments instead (``checkpoint(lambda x, p: model.apply(p, x))(x, params)``).

>>> import minidiff as md
>>> def block(x, w):
...     return md.tanh(x @ w) @ w.T
>>> x, w = md.ones((2, 3)), md.eye(3) * 0.5
>>> g = md.grad(lambda w: md.checkpoint(block)(x, w).sum())(w)
>>> bool(md.allclose(g, md.grad(lambda w: block(x, w).sum())(w)))
True
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from ..backend import numpy_module as _np
from ..errors import TracerError
from ..primitives.custom import primitive
from ..primitives.shape import concatenate, ravel, reshape
from ..tensor import pytree
from ..tensor.core import Tensor, Tracer
from .core import jvp, vjp

__all__ = ["checkpoint"]


def checkpoint(f: Callable) -> Callable:
    """``f`` with gradient checkpointing: in reverse mode the tape keeps the floating-point inputs of
    each call instead of ``f``'s intermediates, and the backward pass recomputes ``f``.

    Values and derivatives (every mode, every order) are those of ``f``; see the module docstring
    for what is and is not saved.

    Example:
        >>> import minidiff as md
        >>> layer = md.checkpoint(lambda x: md.sin(md.sin(x)))
        >>> x = md.tensor([0.5, 1.0], requires_grad=True)
        >>> y = layer(x).sum()
        >>> sorted(md.tape_stats(y))           # no sin nodes: only the checkpoint and the sum
        ['checkpoint(<lambda>)', 'sum']
        >>> y.backward()
        >>> [round(v, 6) for v in x.grad.tolist()]
        [0.778644, 0.360039]
    """
    if not callable(f):
        raise TypeError(f"checkpoint: f must be callable, got {type(f).__name__}")

    @wraps(f)
    def checkpointed(*args, **kwargs):
        leaves, in_def = pytree.flatten((args, kwargs))
        if not any(_recorded(x) for x in leaves):
            return f(*args, **kwargs)  # no tape would record f's intermediates: nothing to save
        return _call(f, leaves, in_def)

    return checkpointed


def _recorded(x) -> bool:
    """Whether ``x`` is a value some tape is recording, at any level of nesting."""
    while isinstance(x, Tracer):
        trace = x._trace
        if trace.kind == "reverse" or (trace.kind == "tape" and trace.recording):
            return True
        x = x.primal
    return False


def _call(f, leaves, in_def):
    """Bind one checkpoint primitive on the floating tensors among ``leaves`` and unpack its output."""
    name = getattr(f, "__name__", type(f).__name__)
    slots = [i for i, x in enumerate(leaves) if isinstance(x, Tensor) and x.dtype.kind == "f"]
    inputs = [leaves[i] for i in slots]
    constants = [None if i in slots else x for i, x in enumerate(leaves)]  # (not the traced inputs)
    layout: dict = {}

    def run(*xs):
        full = list(constants)
        for i, x in zip(slots, xs):
            full[i] = x
        args, kwargs = pytree.unflatten(in_def, full)
        leaves_out, layout["tree"] = pytree.flatten(f(*args, **kwargs))
        # non-tensor leaves (numbers, strings) come back as they are; tensors are not kept here (a
        # recomputation's traced outputs would keep its whole tape alive through this closure)
        layout["static"] = [None if isinstance(o, Tensor) else o for o in leaves_out]
        layout["is_tensor"] = [isinstance(o, Tensor) for o in leaves_out]
        outs = [o for o in leaves_out if isinstance(o, Tensor)]
        layout["avals"] = [(o.shape, o.dtype) for o in outs]
        return _pack(name, outs)

    def forward(*xs):  # on plain values: a traced output can only come from a closed-over tensor
        packed = run(*xs)
        if isinstance(packed, Tracer):
            raise TracerError(
                f"checkpoint({name}): f's output depends on a traced tensor it closes over "
                f"(traced by {packed._trace}), whose derivative would be lost; pass that tensor to "
                "the checkpointed function as an argument instead"
            )
        return packed

    prim = primitive(forward, name=f"checkpoint({name})")

    @prim.defjvp
    def _jvp(primals, tangents):
        return jvp(run, tuple(primals), tuple(tangents))[1]

    @prim.defvjp(reads="xs")  # the inputs only: the output is not kept, f's intermediates never were
    def _vjp(g, out, *xs):
        return vjp(run, *xs)[1](g)

    packed = prim(*inputs)
    tensors = iter(_unpack(packed, layout["avals"]))
    outs = [next(tensors) if t else o for t, o in zip(layout["is_tensor"], layout["static"])]
    return pytree.unflatten(layout["tree"], outs)


def _pack(name: str, outs: list) -> Tensor:
    """The outputs as one tensor: itself if there is one, else their raveled values end to end."""
    for o in outs:
        if o.dtype.kind != "f":
            raise TypeError(
                f"checkpoint({name}): f returned a {o.dtype} tensor of shape {o.shape}; a checkpointed "
                "function returns floating-point tensors only (compute integer results outside it)"
            )
    if not outs:
        raise ValueError(f"checkpoint({name}): f returned no tensor")
    if len(outs) == 1:
        return outs[0]
    dtype = _np.result_type(*[o.dtype for o in outs])
    return concatenate([ravel(o.astype(dtype)) for o in outs])


def _unpack(packed: Tensor, avals: list) -> list:
    if len(avals) == 1:
        return [packed]
    out, start = [], 0
    for shape, dtype in avals:
        size = int(_np.prod(shape)) if shape else 1
        out.append(reshape(packed[start : start + size], shape).astype(dtype))
        start += size
    return out
