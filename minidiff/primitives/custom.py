"""User-defined primitives: ``md.primitive`` with ``defjvp`` and ``defvjp`` (and, optionally, ``defbatch``).

The forward function is written with minidiff operations; the transforms never look inside it, they
use the rules given here instead (this is how DEER avoids differentiating through its iterations).

Example:
    >>> import minidiff as md
    >>> @md.primitive
    ... def cube(x):
    ...     return x * x * x
    >>> @cube.defjvp
    ... def cube_jvp(primals, tangents):
    ...     (x,), (t,) = primals, tangents
    ...     return 3 * x * x * t
    >>> @cube.defvjp
    ... def cube_vjp(cotangent, output, x):
    ...     return (3 * x * x * cotangent,)
    >>> md.grad(lambda x: cube(x).sum())(md.tensor([1.0, 2.0])).tolist()
    [3.0, 12.0]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import update_wrapper
from numbers import Number
from typing import Any

from ..errors import TapeError, TracerError, describe
from ..tensor.core import Tensor, check_like
from .creation import zeros_like
from .registry import ALL_INPUTS, Primitive, bind, declared_reads


class UserPrimitive(Primitive):
    """A primitive whose forward computation and rules are Python functions on tensors."""

    kind = "custom"

    def __init__(self, fn, name=None):
        name = name or getattr(fn, "__qualname__", fn.__name__)
        # not added to the registry (user primitives live and die with the code that made them), but
        # listed, weakly, by registry.all_primitives()
        super().__init__(name, reads=frozenset({"ans", ALL_INPUTS}), register=False)
        self.fn = fn
        self.n_inputs = _n_positional(fn, required=True)  # parameters with defaults are params
        self.jvp_fn = None
        self.jvp_takes_output = False
        self.vjp_fn = None
        update_wrapper(self, fn)

    def __call__(self, *args, **params):
        return bind(self, *args, **params)

    def apply(self, args, params):
        return self.fn(*args, **params)

    def jvp(self, primals, tangents, out, params):
        if self.jvp_fn is None:
            raise TracerError(f"primitive {self.name!r} has no JVP rule; define one with @{self.name}.defjvp")
        ts = tuple(
            t if t is not None else (zeros_like(p) if isinstance(p, Tensor) else None)
            for t, p in zip(tangents, primals)
        )
        if self.jvp_takes_output:
            t_out = self.jvp_fn(tuple(primals), ts, output=out, **params)
        else:
            t_out = self.jvp_fn(tuple(primals), ts, **params)
        _check_result(self, "JVP rule's tangent of the output", t_out, out)
        return t_out

    def vjp(self, g, out, primals, params, wanted):
        if self.vjp_fn is None:
            raise TapeError(f"primitive {self.name!r} has no VJP rule; define one with @{self.name}.defvjp")
        return self.vjp_fn(g, out, *primals, **params)

    def defjvp(self, rule):
        """Set the JVP rule ``rule(primals, tangents, **params) -> tangent of the output``.

        A rule that declares a keyword parameter ``output`` is also given the primitive's output at
        ``primals`` (computed by the forward pass, and traced by any outer transform), so a rule for
        an expensive solve need not solve again."""
        n = _n_positional(rule)
        if not _n_positional(rule, required=True) <= 2 <= n:
            hint = " (it looks like a VJP rule: cotangent, output, *inputs)" if n >= 3 else ""
            raise TypeError(
                f"primitive {self.name!r}: a JVP rule takes (primals, tangents), but "
                f"{getattr(rule, '__name__', rule)} takes {n} positional arguments{hint}"
            )
        self.jvp_fn = rule
        self.jvp_takes_output = "output" in inspect.signature(rule).parameters
        return rule

    def defvjp(self, rule=None, *, reads: str | None = None):
        """Set the VJP rule ``rule(cotangent, output, *inputs, **params) -> tuple of cotangents``.

        ``reads`` names, with the rule's own parameter names, the values the rule reads (say
        ``reads="output"``); the tape keeps only those.  Without it the tape keeps the output and
        every input.  Use as ``@p.defvjp`` or ``@p.defvjp(reads="output x")``."""
        if rule is None:
            return lambda r: self.defvjp(r, reads=reads)
        n = _n_positional(rule)
        want = 2 + self.n_inputs
        if not _n_positional(rule, required=True) <= want <= n and not _has_varargs(rule):
            hint = " (it looks like a JVP rule: primals, tangents)" if n == 2 else ""
            raise TypeError(
                f"primitive {self.name!r}: a VJP rule takes (cotangent, output, "
                f"{', '.join(inspect.signature(self.fn).parameters)[:60]}) = {want} positional "
                f"arguments, but {getattr(rule, '__name__', rule)} takes {n}{hint}"
            )
        if reads is not None:
            self.reads = declared_reads(self.name, rule, reads, self.n_inputs)
        self.vjp_fn = _checked_vjp(self, rule)
        return rule

    def defbatch(self, rule):
        """Set the batching rule ``rule(values, batched, size, **params) -> output`` used by ``vmap``
        (and vector-mode JVPs): ``values`` are the inputs, those flagged in ``batched`` carrying the
        batch of ``size`` along axis 0; the output carries it along axis 0.  Without a rule ``vmap``
        calls the primitive once per example."""
        if _n_positional(rule) < 3 and not _has_varargs(rule):
            raise TypeError(
                f"primitive {self.name!r}: a batching rule takes (values, batched, size), but "
                f"{getattr(rule, '__name__', rule)} takes {_n_positional(rule)} positional arguments"
            )
        self.batch = rule
        return rule


def _checked_vjp(prim, rule):
    def vjp(g, ans, *args, **params):
        out = rule(g, ans, *args, **params)
        if not isinstance(out, (tuple, list)) or len(out) != len(args):
            raise TypeError(
                f"primitive {prim.name!r}: its VJP rule must return a tuple of {len(args)} "
                f"cotangents (None for inputs without one), got {type(out).__name__}"
            )
        for i, (c, x) in enumerate(zip(out, args)):
            if c is not None:
                _check_result(prim, f"VJP rule's cotangent of input {i}", c, x, _output_shape_ok(c, x, g))
        return out

    return vjp


def _output_shape_ok(c, x, g) -> bool:
    """A cotangent may also have the output's shape when the input broadcasts to it (a broadcasting
    primitive): the tape sums it back to the input's shape, the one place that happens."""
    if not hasattr(x, "shape") or isinstance(x, Number) or c.shape != g.shape:
        return False
    lead = len(g.shape) - len(x.shape)
    return lead >= 0 and all(a in (1, b) for a, b in zip(x.shape, g.shape[lead:]))


def _check_result(prim, what: str, value, like, broadcast_ok: bool = False) -> None:
    """A rule's result must be a tensor shaped and typed like the value it belongs to (or, for a
    cotangent, like the output the input was broadcast to): a NumPy array, a tuple or another shape is
    refused here, naming the primitive, never an IndexError or a silent sum deep in the tape."""
    if not isinstance(value, Tensor):
        raise TypeError(
            f"primitive {prim.name!r}: its {what} is a {type(value).__name__}; return a minidiff "
            f"tensor like {describe(like)} (md.asarray converts an array, but then it has no derivative)"
        )
    if hasattr(like, "dtype") and not isinstance(like, Number):  # a tensor, or the tape's shape stub
        if broadcast_ok:
            like = _ShapeOf(value.shape, like)
        check_like(f"primitive {prim.name!r}", f"its {what}", value, like, of="the value it belongs to")


class _ShapeOf:
    """``like`` with another shape: what a broadcast cotangent is checked against (dtype, device)."""

    def __init__(self, shape, like):
        self.shape, self.dtype, self.device = shape, like.dtype, like.device


def _n_positional(fn, required: bool = False) -> int:
    """How many positional parameters ``fn`` has (only those without a default if ``required``)."""
    sig = inspect.signature(fn)
    return len(
        [
            p
            for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            and not (required and p.default is not p.empty)
        ]
    )


def _has_varargs(fn) -> bool:
    return any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values())


def primitive(
    fn: Callable[..., Any] | None = None, *, name: str | None = None
) -> UserPrimitive | Callable[[Callable[..., Any]], UserPrimitive]:
    """Declare ``fn`` (written with minidiff ops) a primitive; give its rules with ``defjvp``/``defvjp``.

    Keyword arguments of ``fn`` are parameters (not differentiated); positional ones are inputs.
    A transform that needs a rule not given raises, naming the primitive.
    """
    if fn is None:
        return lambda f: UserPrimitive(f, name)
    return UserPrimitive(fn, name)


__all__ = ["primitive", "UserPrimitive"]
