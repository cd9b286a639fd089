"""Test the tester: apply a deliberate bug to a rule, and see whether a property catches it.

A :class:`Mutation` names a primitive (built-in or made with ``md.primitive``), which of its rules
to change (``"jvp"``, ``"vjp"``, ``"both"``, or ``"impl"`` for the forward computation), which
input's rule (``index``; None for all), and how: ``change(rule) -> mutated rule``.  Ready-made
changes: :func:`scaled`, :func:`negated`, :func:`detached` and :func:`replaced`.

:func:`mutated` applies a mutation in memory for the duration of a ``with`` block and always undoes
it; :func:`check_mutation` runs a property (for example :func:`check_primitive`, or any function
that raises ``AssertionError``) under the mutation and reports whether it was caught, on which
input, after how many examples.

How rules are stored, and so what a mutation can target:

* elementwise primitives share one derivative rule per input between both modes (``prim.jvp_rules
  is prim.vjp_rules``): ``rule="both"`` changes that shared rule, ``"jvp"`` or ``"vjp"`` one mode only;
* linear primitives have a transpose only (``prim.vjp_rules``; the JVP is the op itself): ``"vjp"``, or
  ``"impl"`` to change the op in both of its roles;
* variadic primitives (concatenate, stack, einsum) have one rule taking ``argnum=``: ``index``
  picks the operand;
* user primitives have ``jvp_fn(primals, tangents)`` and ``vjp_fn(g, ans, *inputs)`` returning one
  cotangent per input: ``index`` picks the cotangent a ``"vjp"`` mutation changes.

>>> import minidiff as md
>>> from minidiff.testing import Mutation, check_mutation
>>> from minidiff.testing.mutation import scaled
>>> sin_p = md.primitives.REGISTRY["sin"]
>>> bug = Mutation("sin ×1.001", sin_p, "both", scaled(1.001))
>>> check = lambda: md.testing.check_grads(md.sin, (md.tensor([0.3, 1.2]),), order=1)
>>> check_mutation(bug, check).caught
True
>>> md.testing.check_grads(md.sin, (md.tensor([0.3, 1.2]),))  # undone: the real rule passes again
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..primitives.ops import stop_gradient
from ..primitives.registry import Primitive
from ..tensor.core import Tensor
from .battery import run_hypothesis

__all__ = [
    "Mutation",
    "MutationResult",
    "check_mutation",
    "detached",
    "mutated",
    "negated",
    "replaced",
    "scaled",
    "score_table",
]

RULES = ("jvp", "vjp", "both", "impl")


@dataclass(frozen=True)
class Mutation:
    """One deliberate bug: ``change`` applied to rule(s) ``rule`` of ``primitive`` (input ``index``)."""

    name: str
    primitive: Primitive
    rule: str
    change: Callable[[Callable], Callable]
    index: int | None = None
    description: str = ""

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"Mutation {self.name!r}: rule must be one of {RULES}, got {self.rule!r}")
        if not callable(self.change):
            raise TypeError(f"Mutation {self.name!r}: change must be a function rule -> rule")
        kind = getattr(self.primitive, "kind", None)
        if kind is None:
            raise TypeError(f"Mutation {self.name!r}: {self.primitive!r} is not a minidiff primitive")
        if kind == "nondiff" and self.rule != "impl":
            raise ValueError(f"Mutation {self.name!r}: {self.primitive.name} is not differentiable")
        if kind == "linear" and self.rule in ("jvp", "both"):
            raise ValueError(
                f"Mutation {self.name!r}: a linear primitive's JVP is the op itself "
                f"({self.primitive.name}); mutate its transpose (rule='vjp') or the op (rule='impl')"
            )
        if kind == "custom" and self.rule in ("jvp", "both") and self.index is not None:
            raise ValueError(f"Mutation {self.name!r}: a user primitive's JVP rule has no per-input index")


@dataclass
class MutationResult:
    """What became of a mutation: caught or survived, by what failure, on which input."""

    mutation: Mutation
    caught: bool
    examples: int  # examples the property ran with the mutation in place
    message: str = ""  # the failure that caught it
    failing_input: object = None  # the drawn example it was caught on (when drawn by check_mutation)
    seconds: float = 0.0

    def __str__(self) -> str:
        verdict = "caught" if self.caught else "SURVIVED"
        first = self.message.splitlines()[0] if self.message else ""
        return f"{self.mutation.name}: {verdict} after {self.examples} example(s) {first}".rstrip()


# ----------------------------------------------------------------------------- ready-made changes
def _map_out(out, fn):
    if isinstance(out, (tuple, list)):
        return type(out)(None if o is None else fn(o) for o in out)
    return None if out is None else fn(out)


def scaled(factor: float) -> Callable[[Callable], Callable]:
    """The rule's result multiplied by ``factor`` (1.001: a rule off by 1e-3)."""

    def change(rule):
        def rule_scaled(*args, **kwargs):
            return _map_out(rule(*args, **kwargs), lambda t: t * factor)

        return rule_scaled

    return change


def negated() -> Callable[[Callable], Callable]:
    """The rule's result with its sign flipped."""
    return scaled(-1.0)


def detached() -> Callable[[Callable], Callable]:
    """The rule sees its inputs and output with their derivatives dropped (``stop_gradient``), as a
    rule written on raw arrays would: first derivatives stay right, second derivatives go wrong."""

    def change(rule):
        def rule_detached(g, ans, *args, **kwargs):
            cut = [stop_gradient(a) if isinstance(a, Tensor) else a for a in (ans, *args)]
            return rule(g, *cut, **kwargs)

        return rule_detached

    return change


def replaced(*new_rules: Callable) -> Callable[[Callable], Callable]:
    """The rule replaced outright by ``new_rule`` (same signature as the rule it replaces); given
    several rules, the k-th replaces the rule of input k (with ``index=None``)."""
    if not new_rules or not all(callable(r) for r in new_rules):
        raise TypeError("replaced: give one replacement rule, or one per input")

    def change(rule, i=0):
        return new_rules[i] if len(new_rules) > 1 else new_rules[0]

    change.by_input = len(new_rules) > 1  # type: ignore[attr-defined]  # read back with getattr below
    return change


# ----------------------------------------------------------------------------- applying
def _per_index(rule, change, index, variadic):
    """``change`` applied to the part of ``rule`` for input ``index`` (every input if None)."""
    if variadic:
        new = change(rule)
        if index is None:
            return new
        return lambda *a, argnum, **k: (new if argnum == index else rule)(*a, argnum=argnum, **k)
    rules = list(rule)
    for i, r in enumerate(rules):
        if index is None or i == index:
            if r is None:
                if index is not None:
                    raise ValueError(f"input {index} has no rule to mutate")
                continue
            rules[i] = change(r, i) if getattr(change, "by_input", False) else change(r)
    return tuple(rules)


def _custom_vjp(vjp_fn, change, index):
    if index is None:
        return change(vjp_fn)
    part = change(lambda *a, **k: vjp_fn(*a, **k)[index])

    def vjp_mutated(*a, **k):
        out = list(vjp_fn(*a, **k))
        out[index] = part(*a, **k)
        return tuple(out)

    return vjp_mutated


_SAVED = ("impl", "fn", "jvp_rules", "vjp_rules", "jvp_fn", "vjp_fn", "reads")


@contextmanager
def mutated(mutation: Mutation) -> Iterator[None]:
    """Apply ``mutation`` for the duration of the block; the primitive is restored on exit, always.

    While mutated, the tape keeps every input and the output of the primitive (a mutated rule may
    read values the real one did not).
    """
    prim: Any = mutation.primitive  # a built-in or an md.primitive: their rule attributes differ
    m = mutation
    before = {a: getattr(prim, a) for a in _SAVED if hasattr(prim, a)}
    try:
        if m.rule == "impl":
            attr = "fn" if prim.kind == "custom" else "impl"
            setattr(prim, attr, m.change(getattr(prim, attr)))
        elif prim.kind == "custom":
            if m.rule in ("jvp", "both"):
                _need(prim.jvp_fn, m, "JVP")
                prim.jvp_fn = m.change(prim.jvp_fn)
            if m.rule in ("vjp", "both"):
                _need(prim.vjp_fn, m, "VJP")
                prim.vjp_fn = _custom_vjp(prim.vjp_fn, m.change, m.index)
        else:
            _mutate_registered(prim, m)
        prim.reads = frozenset({"ans", "*"})
        yield
    finally:
        for attr, value in before.items():
            setattr(prim, attr, value)


def _need(rule, m: Mutation, what: str) -> None:
    if rule is None:
        raise ValueError(f"Mutation {m.name!r}: {m.primitive.name} has no {what} rule to mutate")


def _mutate_registered(prim, m: Mutation) -> None:
    try:
        variadic = getattr(prim, "variadic", False)
        if prim.kind == "elementwise" and m.rule == "both":  # one shared rule serves both modes
            prim.jvp_rules = prim.vjp_rules = _per_index(prim.vjp_rules, m.change, m.index, variadic)
            return
        for mode in ("jvp", "vjp") if m.rule == "both" else (m.rule,):
            attr = f"{mode}_rules"
            _need(getattr(prim, attr, None), m, mode.upper())
            setattr(prim, attr, _per_index(getattr(prim, attr), m.change, m.index, variadic))
    except ValueError as exc:
        raise ValueError(f"Mutation {m.name!r} of {prim.name}: {exc}") from None


# ----------------------------------------------------------------------------- running
def check_mutation(
    mutation: Mutation,
    prop: Callable,
    inputs: Any = None,
    *,
    max_examples: int = 30,
    seed: int = 0,
    baseline: bool = True,
) -> MutationResult:
    """Run ``prop`` with ``mutation`` applied; caught if it raises (an ``AssertionError``, or any
    error the mutated rule provokes).

    With ``inputs`` (a Hypothesis strategy), ``prop(example)`` runs on up to ``max_examples`` drawn
    examples, reproducibly from ``seed``, stopping at the first failure; the failing example is
    then run again without the mutation and must pass (else the property itself is broken, and
    ``AssertionError`` is raised).  Without ``inputs``, ``prop()`` is called once (it draws its own
    inputs, as :func:`check_primitive` does); with ``baseline`` it is first run without the mutation
    and must pass.
    """
    start = time.perf_counter()
    if inputs is None:
        return _check_self_drawing(mutation, prop, baseline, start)
    seen: list = []

    def body(example):
        seen.append(example)
        prop(example)

    try:
        with mutated(mutation):
            run_hypothesis(body, inputs, max_examples=max_examples, seed=seed, shrink=False)
    except Exception as exc:  # noqa: BLE001 - any failure under the mutation catches it
        if not seen:  # the strategy itself failed: nothing was checked
            raise
        failing = seen[-1]
        _must_pass(mutation, lambda: prop(failing), "on the input that caught it")
        return MutationResult(mutation, True, len(seen), _message(exc), failing, time.perf_counter() - start)
    return MutationResult(mutation, False, len(seen), seconds=time.perf_counter() - start)


def _check_self_drawing(mutation, prop, baseline, start) -> MutationResult:
    if baseline:
        _must_pass(mutation, prop, "before the mutation")
    try:
        with mutated(mutation):
            prop()
    except Exception as exc:  # noqa: BLE001
        return MutationResult(mutation, True, 1, _message(exc), None, time.perf_counter() - start)
    return MutationResult(mutation, False, 1, seconds=time.perf_counter() - start)


def _must_pass(mutation, run, when) -> None:
    try:
        run()
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(
            f"check_mutation({mutation.name}): the property fails without the mutation {when}, so it "
            f"cannot tell whether the mutation is caught:\n{_message(exc)}"
        ) from exc


def _message(exc: BaseException) -> str:
    text = str(exc)
    return text if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {text}"


def score_table(results: list[MutationResult], inputs: list[str] | None = None) -> str:
    """A Markdown table of ``results`` (mutation, rule, what it changes, [drawn inputs,] caught) and
    the score line below it; ``inputs`` describes, per result, where its inputs were drawn."""
    extra = inputs is not None
    head = "| mutation | rule | what it changes |" + (" drawn inputs |" if extra else "") + " caught |"
    lines = [head, "|---|---|---|" + ("---|" if extra else "") + "---|"]
    for k, r in enumerate(results):
        m = r.mutation
        where = f" {inputs[k]} |" if inputs is not None else ""
        lines.append(
            f"| {m.name} | `{_target(m)}` | {m.description} |{where} {'yes' if r.caught else '**no**'} |"
        )
    caught = sum(r.caught for r in results)
    share = 100.0 * caught / max(1, len(results))
    lines += ["", f"Mutation score: {caught}/{len(results)} caught ({share:.0f}%)."]
    return "\n".join(lines)


def _target(m: Mutation) -> str:
    where = "" if m.index is None else f"[{m.index}]"
    return f"{m.primitive.name}.{m.rule}{where}"
