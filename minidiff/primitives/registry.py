"""Primitives and their dispatch.

A :class:`Primitive` is one operation with two derivative rules, and every primitive — built-in or
declared by a user with ``md.primitive`` — offers them in the same shape, the only one the traces call:

``prim.jvp(primals, tangents, out, params) -> tangent of out``
    forward mode: ``tangents`` holds ``None`` for inputs that carry none; ``None`` back means the
    output carries no tangent (a non-differentiable op);
``prim.vjp(cotangent, out, primals, params, wanted) -> cotangents``
    reverse mode: one entry per input position, filled for the positions in ``wanted``;
``prim.saves(wanted) -> frozenset``
    what ``vjp`` reads for those inputs — ``"ans"`` (the output) and input positions — declared
    beside each rule with ``reads=`` (never inferred).  The tape keeps exactly that and a
    shape-and-dtype stub of the rest.

Four constructors keep the rule tables short; each writes rules as ``rule(g, ans, *inputs, **params)``
with minidiff's own operations, so rules are differentiable in turn (every nesting of transforms):

``elementwise``
    one derivative rule per input, ``rule(g, ans, *args) -> g · d``.  The Jacobian of an elementwise
    op is diagonal, so the same line is the JVP (``g`` a tangent) and the VJP (``g`` a cotangent).
``linear``
    the JVP is the op itself applied to the tangents; the VJP is the transpose, which reads no values.
``general``
    a JVP rule and a VJP rule per input (one rule taking ``argnum=`` for a variadic op).
``nondifferentiable``
    comparisons and friends: outputs carry no derivative.

:func:`bind` is the single dispatch point: it finds the highest-level tracer among the arguments
and hands the primitive to that tracer's trace; with no tracer it evaluates the primitive.  The traces
(and the elementwise functions) call its body, :func:`bind_args`, with the arguments already in a
sequence and the parameters in a dict, so nothing is packed again on the way down.
"""

from __future__ import annotations

import inspect
import itertools
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from ..errors import DeviceError, MinidiffError, ShapeError, describe
from ..tensor.core import Tensor, Tracer, escaped, wrap

__all__ = [
    "Primitive",
    "bind",
    "bind_args",
    "REGISTRY",
    "all_primitives",
    "elementwise",
    "linear",
    "general",
    "nondifferentiable",
    "declared_reads",
    "intercept_evaluations",
]

#: Every primitive by name; tests walk it to make sure no rule is missing.
REGISTRY: dict[str, Primitive] = {}

#: Primitives made outside the registry (``md.primitive``: the library's DEER, scan and nn hook, and
#: users' own), held weakly — they live and die with the code that made them — in creation order.
_UNREGISTERED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_made = itertools.count()

ALL_INPUTS = "*"  # in a declaration: the rule reads every input


class Primitive:
    """One operation and its derivative rules, in the shape every trace calls (see the module doc)."""

    kind = "primitive"  # for humans and reports only: no trace branches on it
    differentiable = True
    variadic = False  # True: one rule per mode taking argnum= serves every input (concatenate, einsum)
    moves_device = False  # only to_device: its output lives on the device named in its params

    def __init__(
        self, name: str, batch: Callable[..., Any] | None = None, reads: Any = (), register: bool = True
    ):
        if register and name in REGISTRY:
            raise ValueError(f"primitive {name!r} is already registered")
        self.name = name
        self.batch = batch  # batch(vals, batched, size, **params) -> value batched along axis 0
        self.reads = reads  # per input position a frozenset, or one frozenset for every input
        if register:
            REGISTRY[name] = self
        else:
            _UNREGISTERED[next(_made)] = self

    def __repr__(self) -> str:
        return f"<primitive {self.name} ({self.kind})>"

    def __call__(self, *args: Any, **params: Any) -> Any:
        return bind(self, *args, **params)

    def apply(self, args: Any, params: Any) -> Tensor:  # pragma: no cover - abstract
        """The output on concrete values (no tracers among ``args``)."""
        raise NotImplementedError

    def jvp(self, primals: Any, tangents: Any, out: Any, params: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def vjp(
        self, cotangent: Any, out: Any, primals: Any, params: Any, wanted: Any
    ) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def reads(self) -> Any:
        """Per input position a frozenset, or one frozenset for every input (see :meth:`saves`)."""
        return self._reads

    @reads.setter
    def reads(self, value: Any) -> None:
        self._reads = value
        self._saves: dict[tuple[int, ...], frozenset] = {}  # saves() answers, worked out once each

    def saves(self, wanted: Any) -> frozenset:
        """What :meth:`vjp` reads to give the cotangents of the inputs in ``wanted``.

        The tape asks on every recorded operation, so a per-input declaration's union is worked out
        once per set of wanted inputs and kept (setting ``reads`` again forgets it).
        """
        reads = self._reads
        if isinstance(reads, frozenset):
            return reads
        key = tuple(wanted)
        keep = self._saves.get(key)
        if keep is None:
            keep = self._saves[key] = frozenset().union(*(reads[i] for i in key))
        return keep


def all_primitives(*, user: bool = True) -> list[Primitive]:
    """Every primitive: the registered (built-in) ones, then — with ``user`` — every live one made
    outside the registry with ``md.primitive`` (the library's own, as DEER's, and yours), oldest first.
    Names of user primitives need not be unique; the objects are.

    >>> import minidiff as md
    >>> @md.primitive
    ... def double(x):
    ...     return 2 * x
    >>> double in all_primitives(), double in all_primitives(user=False)
    (True, False)
    """
    return list(REGISTRY.values()) + (list(_UNREGISTERED.values()) if user else [])


def declared_reads(prim: str, rule, declared: str | None, n_inputs: int | None = None) -> frozenset:
    """Parse a ``reads=`` declaration written with the rule's own parameter names.

    ``rule(g, ans, x, y)`` declared ``"ans y"`` reads the output and input 1; a ``*xs`` parameter
    named in the declaration means every input.  A name the rule does not have fails at definition.
    """
    if rule is None or not declared:
        return frozenset()
    params = list(inspect.signature(rule).parameters.values())
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    star = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), None)
    inputs = positional[2:] if n_inputs is None else positional[2 : 2 + n_inputs]
    out: set[str | int] = set()
    for name in declared.split():
        if len(positional) > 1 and name == positional[1]:
            out.add("ans")
        elif name in inputs:
            out.add(inputs.index(name))
        elif name == star:
            out.add(ALL_INPUTS)
        else:
            raise TypeError(
                f"primitive {prim!r}: reads={declared!r} names {name!r}, which is not the output or an "
                f"input of its rule ({', '.join(positional + ([f'*{star}'] if star else []))})"
            )
    return frozenset(out)


def _reads_per_rule(name, rules, reads, n_inputs):
    """One frozenset per rule from ``reads``: one string for every rule, or a tuple of strings."""
    if isinstance(reads, str) or reads is None:
        reads = (reads,) * len(rules)
    if len(reads) != len(rules):
        raise TypeError(f"primitive {name!r}: {len(reads)} reads= declarations for {len(rules)} rules")
    per_rule = tuple(declared_reads(name, r, d, n_inputs) for r, d in zip(rules, reads))
    return per_rule[0] if len(set(per_rule)) == 1 else per_rule  # one set: the same for every input


# ----------------------------------------------------------------------------- dispatch
def bind(prim: Primitive, *args: Any, **params: Any) -> Any:
    """Apply ``prim`` to ``args``: evaluate it, or let the highest-level trace among them process it."""
    return bind_args(prim, args, params)


def bind_args(prim: Primitive, args: Any, params: Any) -> Any:
    """:func:`bind` with the arguments as one sequence and the parameters as one dict, as the traces
    hold them: a trace hands its unwrapped values one level down without packing them again.

    With no tracer among ``args`` (the common case outside transforms) the loop finds nothing and the
    primitive is evaluated at once; a closed trace's tracer is an error (it escaped its transform).
    Nothing below keeps ``args`` past the call (each trace copies what it stores), so a caller may
    reuse its list: the reverse trace turns it into the node's saved inputs.
    """
    top = None
    for a in args:
        if isinstance(a, Tracer):
            trace = a._trace
            if not trace.active:
                raise escaped(prim.name, trace)
            if top is None or trace.level > top.level:
                top = trace
    if top is None:
        return prim.apply(args, params)
    return top.process(prim, args, params)


def evaluate(prim: ArrayPrimitive, args, params) -> Tensor:
    """Run ``prim.impl`` on the concrete arrays of ``args`` (no tracers left)."""
    device = None
    raw = []
    for a in args:
        if isinstance(a, Tensor):
            if device is None:
                device = a._device
            elif a._device is not device:
                raise DeviceError(
                    f"{prim.name}: tensors on different devices ({device} and {a._device}) "
                    f"in one operation: {', '.join(describe(x) for x in args)}; move them with "
                    ".to(device)"
                )
            raw.append(a._data)
        else:
            raw.append(a)
    if device is None:
        from ..backend import get_device

        device = get_device()
    try:
        out = prim.impl(device.xp, *raw, **params)
    except MinidiffError:
        raise
    except (ValueError, IndexError, TypeError) as exc:
        raise ShapeError(
            f"{prim.name}: cannot apply to {', '.join(describe(x) for x in args)}"
            f"{_describe_params(params)}: {exc}"
        ) from exc
    if prim.moves_device:
        device = params["device"]
    if type(out) is not device.array_type:  # NumPy returns scalars from 0-d operations
        out = device.xp.asarray(out)
    return wrap(out, device)


def _describe_params(params) -> str:
    shown = {k: v for k, v in params.items() if k != "index"}
    return f" with {shown}" if shown else ""


# ----------------------------------------------------------------------------- the four kinds
class ArrayPrimitive(Primitive):
    """A built-in primitive: ``impl(xp, *arrays, **params)`` computes it on backend arrays."""

    def __init__(self, name, impl, batch=None, reads=(), register=True):
        super().__init__(name, batch, reads, register)
        self.impl = impl
        self.apply = partial(evaluate, self)  # apply(args, params), without a Python frame of its own

    # Rule tables: ``jvp_rules[i]`` / ``vjp_rules[i]`` is input i's rule ``rule(g, ans, *inputs, **params)``
    # (None for an input without one); a variadic op has one rule taking ``argnum=`` instead.
    def jvp(self, primals, tangents, out, params):
        """Forward mode: the sum of every tangent-carrying input's contribution ``rule_i(t_i, out, ...)``."""
        rules = _ByArgnum(self.jvp_rules) if self.variadic else self.jvp_rules
        total = None
        for i, t in enumerate(tangents):
            if t is not None:
                c = rules[i](t, out, *primals, **params)
                total = c if total is None else total + c
        return total

    def vjp(self, g, out, primals, params, wanted):
        """Reverse mode: the cotangent ``rule_i(g, out, ...)`` of each wanted input, ``None`` elsewhere."""
        rules = _ByArgnum(self.vjp_rules) if self.variadic else self.vjp_rules
        cts = [None] * len(primals)
        for i in wanted:
            cts[i] = rules[i](g, out, *primals, **params)
        return cts


class Elementwise(ArrayPrimitive):
    """One rule per input, ``rule(g, ans, *inputs) -> g · d``, serving as JVP and as VJP."""

    kind = "elementwise"

    def __init__(self, name, impl, rules, batch, reads):
        super().__init__(name, impl, batch, _reads_per_rule(name, rules, reads, len(rules)))
        # one table serves both modes; None for an input without a derivative (where's condition)
        self.jvp_rules = self.vjp_rules = rules


class Linear(ArrayPrimitive):
    """The JVP applies the op to the tangents; the VJP is the transpose (which reads no values)."""

    kind = "linear"

    def __init__(self, name, impl, transpose, batch, variadic):
        super().__init__(name, impl, batch, frozenset())
        self.vjp_rules = transpose  # one rule per input, or one rule taking argnum= if variadic
        self.variadic = variadic

    def jvp(self, primals, tangents, out, params):
        ts = [t if t is not None else _zeros_like(p) for t, p in zip(tangents, primals)]
        return bind(self, *ts, **params)


class General(ArrayPrimitive):
    """Its own JVP rule and VJP rule per input (one rule each taking ``argnum=`` if variadic)."""

    kind = "general"

    def __init__(self, name, impl, jvp, vjp, batch, reads, n_inputs, variadic):
        if variadic:
            reads = declared_reads(name, vjp, reads)
        else:
            reads = _reads_per_rule(name, vjp, reads, n_inputs)
        super().__init__(name, impl, batch, reads)
        self.jvp_rules, self.vjp_rules, self.variadic = jvp, vjp, variadic


class Nondifferentiable(ArrayPrimitive):
    """Comparisons, sign, floor...: the output carries no derivative in either mode."""

    kind = "nondiff"
    differentiable = False

    def jvp(self, primals, tangents, out, params):
        return None

    def vjp(self, g, out, primals, params, wanted):  # pragma: no cover - the tape records none
        return [None] * len(primals)


class _ByArgnum:
    """The rules of a variadic op as a table: entry i is its one rule called with ``argnum=i``."""

    __slots__ = ("rule",)

    def __init__(self, rule):
        self.rule = rule

    def __getitem__(self, i):
        return partial(self.rule, argnum=i)


def _zeros_like(x):
    """A zero tangent for a tensor input; other inputs (numbers, indices) pass through."""
    if not isinstance(x, Tensor):
        return x
    from . import creation

    return creation.zeros(x.shape, dtype=x.dtype, device=x.device)


# ----------------------------------------------------------------------------- declaring primitives
def _check_rule_signature(name, what, rule, n_inputs, variadic):
    """Rules are ``rule(g, ans, *inputs, **params)``: fail at definition if one cannot be called so."""
    try:
        sig = inspect.signature(rule)
    except (TypeError, ValueError):
        return
    positional = [
        p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    has_varargs = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    needed = 2 + (0 if variadic else n_inputs)
    if len(positional) < needed and not has_varargs:  # extra names are parameters, passed by keyword
        names = ", ".join(p.name for p in positional)
        raise TypeError(
            f"primitive {name!r}: its {what} rule takes ({names}) but {what} rules are called as "
            f"rule(g, ans, {', '.join(f'x{i}' for i in range(n_inputs)) or '*inputs'}, **params)"
        )


def _tuple(rules):
    return rules if isinstance(rules, tuple) else (rules,)


def elementwise(name: str, impl: Callable, *derivs: Callable | None, reads=None, batch=None) -> Elementwise:
    """An elementwise op with one rule ``(g, ans, *args) -> g * d`` per input, shared by both modes;
    ``reads`` names what each rule reads (one string for all, or one per rule)."""
    for d in derivs:
        if d is not None:
            _check_rule_signature(name, "derivative", d, len(derivs), False)
    from .batching_rules import batch_elementwise

    prim = Elementwise(name, impl, derivs, batch, reads)
    prim.batch = prim.batch or batch_elementwise(prim)
    return prim


def linear(name: str, impl: Callable, transpose, batch, variadic: bool = False, n_inputs: int = 1) -> Linear:
    """A linear op: its JVP applies the op to the tangent, its VJP is ``transpose``."""
    for t in _tuple(transpose):
        _check_rule_signature(name, "transpose", t, n_inputs, variadic)
    return Linear(name, impl, transpose if variadic else _tuple(transpose), batch, variadic)


def general(
    name: str, impl: Callable, jvp, vjp, batch, reads=None, n_inputs: int = 1, variadic: bool = False
) -> General:
    """An op with its own JVP and VJP rule per input (one rule taking ``argnum=`` if variadic);
    ``reads`` names what each VJP rule reads (one string for all, or one per rule)."""
    for rule in _tuple(jvp):
        _check_rule_signature(name, "JVP", rule, n_inputs, variadic)
    for rule in _tuple(vjp):
        _check_rule_signature(name, "VJP", rule, n_inputs, variadic)
    if variadic:
        return General(name, impl, jvp, vjp, batch, reads, None, True)
    return General(name, impl, _tuple(jvp), _tuple(vjp), batch, reads, n_inputs, False)


def nondifferentiable(name: str, impl: Callable, batch=None) -> Nondifferentiable:
    """An op whose output carries no derivative (comparisons, sign, argmax...)."""
    from .batching_rules import batch_elementwise

    prim = Nondifferentiable(name, impl, batch)
    prim.batch = prim.batch or batch_elementwise(prim)
    return prim


# ----------------------------------------------------------------------------- observing evaluations
@contextmanager
def intercept_evaluations(wrapper: Callable[..., Tensor]) -> Iterator[None]:
    """While open, every concrete evaluation of a registered built-in primitive runs as
    ``wrapper(prim, args, params, run)``, where ``run()`` evaluates it and returns the output tensor;
    the wrapper must return that output.  For measurement (``minidiff.bench`` counts FLOPs and times
    primitives with it); nothing is changed once the block is left, and nothing costs anything outside
    it.  A ``md.primitive`` is not intercepted itself: the built-in operations it runs are.

    >>> import minidiff as md
    >>> seen = []
    >>> def note(prim, args, params, run):
    ...     seen.append(prim.name)
    ...     return run()
    >>> with intercept_evaluations(note):
    ...     y = md.exp(md.tensor([1.0, 2.0])).sum()
    >>> seen
    ['exp', 'sum']
    """
    saved = {p: p.apply for p in REGISTRY.values() if isinstance(p, ArrayPrimitive)}
    for prim, apply in saved.items():
        prim.apply = partial(_intercepted, wrapper, prim, apply)  # type: ignore[method-assign]  # swapped per instance on purpose
    try:
        yield
    finally:
        for prim, apply in saved.items():
            prim.apply = apply  # type: ignore[method-assign]  # restore the instance's own


def _intercepted(wrapper, prim, apply, args, params):
    args = tuple(args)  # a snapshot: a trace may reuse its list of values once the evaluation returned
    return wrapper(prim, args, params, lambda: apply(args, params))
