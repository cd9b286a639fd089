"""Primitives and their dispatch.

A :class:`Primitive` is one operation declared once with

* ``impl(xp, *arrays, **params)`` — the computation on backend arrays,
* its JVP rule(s) and VJP rule(s) side by side, written with minidiff's own operations so they are
  differentiable in turn (this is what makes every nesting of transforms work),
* a batching rule used by ``vmap`` (vector-mode forward passes and ``jacrev``).

Three kinds keep the rule tables short:

``elementwise``
    one derivative rule per input, ``rule(g, ans, *args) -> g * d``.  Because the Jacobian of an
    elementwise op is diagonal, the same line serves as JVP (``g`` a tangent) and VJP (``g`` a
    cotangent).
``linear``
    the JVP is the op itself applied to the tangent; the VJP rule is the transpose.
``general``
    separate JVP and VJP rules per input.

:func:`bind` is the single dispatch point: it finds the highest-level tracer among the arguments
and hands the primitive to that tracer's trace; with no tracer it evaluates ``impl`` directly.
"""

from __future__ import annotations

import dis
import inspect
from functools import partial

from ..errors import DeviceError, MinidiffError, ShapeError, TracerError, describe
from ..tensor import Tensor, Tracer, wrap

__all__ = ["Primitive", "bind", "REGISTRY", "elementwise", "linear", "general", "nondifferentiable"]

#: Every primitive by name; tests walk it to make sure no rule is missing.
REGISTRY: dict[str, Primitive] = {}


class Primitive:
    """One differentiable (or explicitly non-differentiable) operation and its rules."""

    __slots__ = ("name", "impl", "kind", "jvp", "vjp", "batch", "saves", "saves_for", "variadic", "__dict__")

    def __init__(
        self, name, impl, kind, jvp=None, vjp=None, batch=None, variadic=False, register=True, n_inputs=None
    ):
        if register and name in REGISTRY:
            raise ValueError(f"primitive {name!r} is already registered")
        self.name = name
        self.impl = impl
        self.kind = kind  # "elementwise" | "linear" | "general" | "nondiff"
        self.jvp = jvp  # tuple of per-input rules (or one rule taking argnum= if variadic)
        self.vjp = vjp
        self.batch = batch  # batch(vals, batched, **params) -> value batched along axis 0
        self.variadic = variadic
        # what the tape saves when input i is being differentiated: the values its VJP rule reads
        if kind == "nondiff" or vjp is None:
            self.saves_for = ()
        elif variadic:
            self.saves_for = _names_used(vjp)
        else:
            n = len(vjp) if n_inputs is None else n_inputs
            self.saves_for = tuple(_names_used(rule, n) for rule in vjp)
        self.saves = (
            frozenset().union(*self.saves_for) if isinstance(self.saves_for, tuple) else self.saves_for
        )
        if register:
            REGISTRY[name] = self

    moves_device = False  # only to_device: its output lives on the device named in its params

    def __repr__(self) -> str:
        return f"<primitive {self.name} ({self.kind})>"

    def __call__(self, *args, **params):
        return bind(self, *args, **params)

    def jvp_rule(self, i):
        return partial(self.jvp, argnum=i) if self.variadic else self.jvp[i]

    def vjp_rule(self, i):
        return partial(self.vjp, argnum=i) if self.variadic else self.vjp[i]


_META = {"shape", "ndim", "dtype", "size", "device"}


def _names_used(rules, n_inputs=None) -> frozenset:
    """What the tape must save for the VJP rules: ``"ans"``, input positions, or ``"*"`` for all.

    Read off the rules' bytecode: an input the rules only ask for its ``.shape``/``.ndim``/``.dtype``
    is not saved (the tape keeps a stub with those), one whose value they read is.
    """
    if rules is None:
        return frozenset()
    used = set()
    for rule in rules if isinstance(rules, tuple) else (rules,):
        if rule is None:
            continue
        code = rule.__code__
        n_pos = code.co_argcount
        names = code.co_varnames[:n_pos]
        varargs = (
            code.co_varnames[n_pos + code.co_kwonlyargcount] if code.co_flags & inspect.CO_VARARGS else None
        )
        instrs = list(dis.get_instructions(rule))
        read = set()
        for k, ins in enumerate(instrs):
            if not ins.opname.startswith("LOAD_"):
                continue
            nxt = instrs[k + 1] if k + 1 < len(instrs) else None
            meta_only = (
                ins.opname == "LOAD_FAST"
                and nxt is not None
                and nxt.opname == "LOAD_ATTR"
                and nxt.argval in _META
            )
            if not meta_only:
                read.add(ins.argval if isinstance(ins.argval, str) else None)
                if isinstance(ins.argval, tuple):  # LOAD_FAST_LOAD_FAST on newer Pythons
                    read.update(ins.argval)
        for const in code.co_consts:  # nested functions read through closures
            if inspect.iscode(const):
                read |= set(const.co_freevars)
        if len(names) > 1 and names[1] in read:
            used.add("ans")
        inputs = names[2:] if n_inputs is None else names[2 : 2 + n_inputs]  # the rest are parameters
        for pos, name in enumerate(inputs):
            if name in read:
                used.add(pos)
        if varargs is not None and varargs in read:
            used.add("*")
    return frozenset(used)


# ----------------------------------------------------------------------------- dispatch
def bind(prim: Primitive, *args, **params):
    """Apply ``prim`` to ``args``: evaluate it, or let the highest-level trace among them process it."""
    top = None
    for a in args:
        if isinstance(a, Tracer):
            trace = a._trace
            if not trace.active:
                raise TracerError(
                    f"{prim.name}: a tensor traced by {trace} was used after that transform "
                    "returned (it escaped, e.g. through a global or a closure); pass it as an "
                    "argument or return it instead"
                )
            if top is None or trace.level > top.level:
                top = trace
    if top is None:
        if prim.kind == "custom":  # a user primitive's forward is written with minidiff ops
            return prim.fn(*args, **params)
        return evaluate(prim, args, params)
    return top.process(prim, args, params)


def evaluate(prim: Primitive, args, params) -> Tensor:
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


def elementwise(name, impl, *derivs, batch=None):
    """An elementwise op with one rule ``(g, ans, *args) -> g * d`` per input, shared by both modes."""
    for d in derivs:
        if d is not None:
            _check_rule_signature(name, "derivative", d, len(derivs), False)
    from .batching_rules import batch_elementwise

    prim = Primitive(name, impl, "elementwise", derivs, derivs, batch, n_inputs=len(derivs))
    prim.batch = prim.batch or batch_elementwise(prim)
    return prim


def linear(name, impl, transpose, batch, variadic=False, n_inputs=1):
    """A linear op: its JVP applies the op to the tangent, its VJP is ``transpose``."""
    for t in _tuple(transpose):
        _check_rule_signature(name, "transpose", t, n_inputs, variadic)
    return Primitive(
        name, impl, "linear", None, _tuple(transpose) if not variadic else transpose, batch, variadic
    )


def general(name, impl, jvp, vjp, batch, n_inputs=1, variadic=False):
    """An op with its own JVP and VJP rule per input (one rule taking ``argnum=`` if variadic)."""
    for rule in _tuple(jvp):
        _check_rule_signature(name, "JVP", rule, n_inputs, variadic)
    for rule in _tuple(vjp):
        _check_rule_signature(name, "VJP", rule, n_inputs, variadic)
    if variadic:
        return Primitive(name, impl, "general", jvp, vjp, batch, variadic=True)
    return Primitive(name, impl, "general", _tuple(jvp), _tuple(vjp), batch)


def nondifferentiable(name, impl, batch=None):
    """An op whose output carries no derivative (comparisons, sign, argmax...)."""
    from .batching_rules import batch_elementwise

    prim = Primitive(name, impl, "nondiff", batch=batch)
    prim.batch = prim.batch or batch_elementwise(prim)
    return prim
