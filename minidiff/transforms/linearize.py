"""``md.linearize(f, *primals) -> (out, f_jvp)``: evaluate ``f`` once, then push new tangents
through the recorded linear map, without running ``f``'s primal computations again.

minidiff has no staging or partial evaluation, so the linear map is recorded by transposing twice
(the "double VJP"): ``md.vjp(f, *primals)`` records ``f``'s tape and gives ``vjp_fn(u) = Jᵀu``;
running ``vjp_fn`` once more, under a second ``md.vjp`` with respect to ``u``, records a tape of
``u ↦ Jᵀu``.  That tape holds only operations on ``u`` — everything that depends on the primals
alone (``cos(x)`` of a ``sin``, ``1 - tanh²`` of a ``tanh``, the weights of a ``matmul``) is
computed once, now, and kept as a constant.  Since ``u ↦ Jᵀu`` is linear, its transpose is ``J``:
``f_jvp(v)`` walks that tape backward with cotangent ``v`` and returns ``J·v``.

Cost per ``f_jvp`` call: one walk of the recorded linear tape (about one matrix product per
``matmul`` of ``f``, one multiply per elementwise op), against ``md.jvp``'s primal plus tangent
computations; measured in ``benchmarks/checkpoint_linearize.py`` (see ``docs/benchmarks.md``).
Memory: the constants of the linear map stay alive as long as ``f_jvp`` does (as JAX's do).

>>> import minidiff as md
>>> out, f_jvp = md.linearize(md.sin, md.tensor([0.0, 1.0]))
>>> [round(v, 6) for v in f_jvp(md.tensor([1.0, 2.0])).tolist()]
[1.0, 1.080605]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..primitives.creation import asarray, zeros
from ..tensor import pytree
from ..tensor.core import Tensor, check_like
from ..tensor.pytree import PyTree
from .core import vjp

__all__ = ["linearize"]


def linearize(f: Callable, *primals: PyTree, has_aux: bool = False) -> tuple[Any, ...]:
    """``(f(*primals), f_jvp)``, where ``f_jvp(*tangents)`` is ``J·tangents`` at ``primals`` (one
    tangent per primal, each with its primal's pytree structure, shapes and dtypes), computed from a
    recorded linear map: ``f`` itself runs once, here, and never again (see the module docstring).

    ``jvp(f, primals, tangents)[1]`` equals ``f_jvp(*tangents)``; use ``linearize`` when the same
    point gets many tangents.  With ``has_aux=True``, ``f`` returns ``(output, aux)`` and the result
    is ``(out, f_jvp, aux)``.  The outputs of ``f`` must be floating-point.

    Example:
        >>> import minidiff as md
        >>> f = lambda p: md.tanh(p["w"] * p["x"]).sum()
        >>> p = {"w": md.tensor([1.0, 2.0]), "x": md.tensor([0.5, -0.5])}
        >>> out, f_jvp = md.linearize(f, p)
        >>> v = {"w": md.tensor([1.0, 0.0]), "x": md.tensor([0.0, 1.0])}
        >>> round(f_jvp(v).item(), 6) == round(md.jvp(f, (p,), (v,))[1].item(), 6)
        True
    """
    if not callable(f):
        raise TypeError(f"linearize: f must be callable, got {type(f).__name__}")
    res = vjp(f, *primals, has_aux=has_aux)
    out, back = res[0], res[1]
    o_leaves, o_def = pytree.flatten(out)
    for i, o in enumerate(o_leaves):
        if o.dtype.kind != "f":
            raise TypeError(
                f"linearize: output leaf {i} of f is a {o.dtype} tensor of shape {o.shape}; linearize "
                "needs floating-point outputs (return integer results as has_aux=True auxiliaries)"
            )
    u = pytree.unflatten(o_def, [zeros(o.shape, o.dtype, o.device) for o in o_leaves])
    _, transpose = vjp(back, u)  # records u -> Jᵀu; the primals' own computations are constants now
    p_leaves, p_def = pytree.flatten(tuple(primals))
    p_leaves = [p if isinstance(p, Tensor) else asarray(p) for p in p_leaves]

    def f_jvp(*tangents: PyTree) -> Any:
        """``J·tangents`` at the linearization point (one tangent per primal of ``f``)."""
        if len(tangents) != len(primals):
            raise TypeError(
                f"linearize: f_jvp takes one tangent per primal ({len(primals)}), got {len(tangents)}"
            )
        t_leaves, t_def = pytree.flatten(tuple(tangents))
        if t_def != p_def:
            raise TypeError(
                f"linearize: f_jvp's tangents have structure {t_def} but the primals have {p_def}"
            )
        t_leaves = [
            t if isinstance(t, Tensor) else asarray(t, device=p.device) for t, p in zip(t_leaves, p_leaves)
        ]
        for i, (t, p) in enumerate(zip(t_leaves, p_leaves)):
            check_like("linearize: f_jvp", f"tangent leaf {i}", t, p)
        return transpose(pytree.unflatten(t_def, t_leaves))[0]

    return (out, f_jvp, res[2]) if has_aux else (out, f_jvp)
