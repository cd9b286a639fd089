"""The property battery, on your own primitive or function: :func:`check_primitive`.

``check_primitive(f, domains)`` draws inputs with Hypothesis from the domains you state (shapes and
value ranges, one domain per positional input of ``f``) and, on every drawn example, runs the checks
of :data:`CHECKS`:

``finite_differences``
    first and second order against central differences in float64 (:func:`check_grads`, which also
    holds the adjoint identity at finite-difference tolerance, one order up);
``adjoint``
    ⟨u, J·v⟩ = ⟨Jᵀ·u, v⟩ between ``jvp`` and ``vjp`` to float64 rounding, and again along
    ``w = Jᵀ·u`` where ⟨u, J·w⟩ = ⟨w, w⟩ is a sum of squares;
``hvp``
    the Hessian-vector products of ``s(x) = ⟨u, f(x)⟩`` in the three modes (fwd-over-rev,
    rev-over-fwd, rev-over-rev) agree, and ⟨w, H·v⟩ = ⟨v, H·w⟩;
``float32``
    values, JVPs, VJPs and HVPs of float32 inputs stay float32 and match the float64 computation
    on the same (rounded) inputs;
``noncontiguous``
    strided, transposed and reversed views of the inputs give the values, JVPs and VJPs of
    contiguous copies;
``broadcasting``
    (with ``broadcasts=True``) ``f`` on inputs of broadcastable shapes equals ``f`` on the inputs
    expanded to the common shape, and so do its JVP and its VJP summed over the broadcast axes.

A failing check raises ``AssertionError`` naming the check, the inputs and the seed that reproduces
the run, so the call works as the body of a pytest test.  Tolerances are stated per dtype in
:class:`Tolerances`.  Hypothesis is a test dependency: it is imported when ``check_primitive`` runs.

>>> import minidiff as md
>>> @md.primitive
... def softplus(x):
...     return md.log1p(md.exp(x))
>>> @softplus.defjvp
... def softplus_jvp(primals, tangents):
...     return tangents[0] * md.sigmoid(primals[0])
>>> @softplus.defvjp
... def softplus_vjp(cotangent, output, x):
...     return (cotangent * md.sigmoid(x),)
>>> md.testing.check_primitive(softplus, [md.testing.Domain(low=-3.0, high=3.0)], max_examples=5, seed=0)
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .. import transforms
from ..backend import numpy_module as np
from ..errors import check_number, describe
from ..primitives.creation import asarray
from ..primitives.registry import Primitive
from ..tensor.core import Tensor
from .checks import _close, _inner, _np64, check_grads
from .report import _label

__all__ = [
    "CHECKS",
    "Domain",
    "Tolerances",
    "check_example",
    "check_jacobian",
    "check_primitive",
    "noncontiguous_views",
]


# ----------------------------------------------------------------------------- domains and tolerances
@dataclass(frozen=True)
class Domain:
    """Where the values of one input are drawn.

    ``shape``: a fixed shape, a Hypothesis strategy of shapes, or None: the inputs whose shape is
    None share one drawn shape of 1 to 3 axes with different sides in [2, 5] (with
    ``broadcasts=True``, each gets that shape or a broadcast of it: some sides 1, leading axes
    dropped).  Values are floats in ``[low, high]`` for which ``where``
    (a predicate on one float, e.g. ``lambda v: abs(v) > 0.1``) holds.
    """

    shape: object = None
    low: float = -2.0
    high: float = 2.0
    where: Callable[[float], bool] | None = None

    def validate(self, op: str, i: int) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"{op}: domain {i} needs finite low < high, got [{self.low}, {self.high}]")
        if self.where is not None and not callable(self.where):
            raise TypeError(f"{op}: domain {i}: where must be a predicate on one float, got {self.where!r}")
        if isinstance(self.shape, (tuple, list)) and not all(
            isinstance(s, (int, np.integer)) and s >= 0 for s in self.shape
        ):
            raise ValueError(f"{op}: domain {i}: shape {self.shape!r} is not a tuple of sizes")


@dataclass(frozen=True)
class Tolerances:
    """Tolerances of the battery, per dtype.  An ``atol`` is relative to the largest magnitude of the
    reference (at least 1)."""

    #: float64 against central finite differences with step ``fd_eps`` (error O(eps²) + rounding/eps)
    fd_eps: float = 1e-6
    fd_rtol: float = 1e-5
    fd_atol: float = 1e-6
    #: two AD computations of one quantity in float64 (adjoint identity, HVP modes, views, broadcasting)
    rtol64: float = 1e-9
    atol64: float = 1e-10
    #: float32 results against the float64 computation on the same float32-rounded inputs
    rtol32: float = 2e-4
    atol32: float = 2e-5
    #: float32 Hessian-vector products (one more chain of rounding)
    hvp_rtol32: float = 1e-3
    hvp_atol32: float = 1e-4


# ----------------------------------------------------------------------------- one example
@dataclass
class _Example:
    f: Callable
    args: tuple
    seed: int
    order: int
    tol: Tolerances
    broadcasts: bool

    def rng(self, salt: int = 0):
        return np.random.default_rng([self.seed, salt])


def _normal(rng, shape, dtype="float64"):
    return asarray(rng.standard_normal(shape).astype(dtype))


def _output(f, args, op="check_primitive") -> Tensor:
    out = f(*args)
    if not isinstance(out, Tensor):
        raise TypeError(f"{op}: f must return one tensor, got {type(out).__name__}")
    return out


def _finite_differences(ex: _Example) -> None:
    t = ex.tol
    check_grads(ex.f, ex.args, order=ex.order, seed=ex.seed, eps=t.fd_eps, rtol=t.fd_rtol, atol=t.fd_atol)


def _adjoint(ex: _Example) -> None:
    rng = ex.rng(1)
    v = tuple(_normal(rng, a.shape) for a in ex.args)
    out, jv = transforms.jvp(ex.f, ex.args, v)
    _, back = transforms.vjp(ex.f, *ex.args)
    u = _normal(rng, out.shape)
    jtu = back(u)
    for i, (c, a) in enumerate(zip(jtu, ex.args)):
        if c.shape != a.shape or c.dtype != a.dtype:
            raise AssertionError(f"VJP of input {i}: {describe(c)} for an input {describe(a)}")
    if jv.shape != out.shape:
        raise AssertionError(f"JVP: shape {jv.shape} for an output of shape {out.shape}")
    _adjoint_pair(u, jv, jtu, v, ex.tol, "<u, J v> = <J^T u, v>")
    ww = _inner(jtu, jtu)
    if ww > 1e-200:  # along w = J^T u, <u, J w> = <w, w>: a VJP off by a factor cannot hide
        _, jw = transforms.jvp(ex.f, ex.args, tuple(jtu))
        _adjoint_pair(u, jw, jtu, jtu, ex.tol, "<u, J w> = <w, w> for w = J^T u")


def _adjoint_pair(u, jv, jtu, v, tol: Tolerances, what: str) -> None:
    lhs = _inner(u, jv)
    rhs = _inner(jtu, v)
    norm = lambda x: float(np.linalg.norm(_np64(x)))  # noqa: E731
    scale = norm(u) * norm(jv) + sum(norm(a) * norm(b) for a, b in zip(jtu, v))
    if not abs(lhs - rhs) <= tol.rtol64 * scale + tol.atol64:
        raise AssertionError(f"adjoint identity {what}: {lhs!r} != {rhs!r} (scale {scale:.3g})")


def _hvps(f, args, u, v):
    def s(*xs):
        return (u * f(*xs)).sum()

    return {mode: transforms.hvp(s, args, v, mode=mode) for mode in transforms.HVP_MODES}, s


def _hvp(ex: _Example) -> None:
    if ex.order < 2:
        return
    rng = ex.rng(2)
    u = _normal(rng, _output(ex.f, ex.args).shape)
    v = tuple(_normal(rng, a.shape) for a in ex.args)
    w = tuple(_normal(rng, a.shape) for a in ex.args)
    hv, s = _hvps(ex.f, ex.args, u, v)
    ref = hv["fwd-over-rev"]
    t = ex.tol
    for mode, got in hv.items():
        for i, (g, r) in enumerate(zip(got, ref)):
            _close(f"H·v of input {i}: {mode} vs fwd-over-rev", g, r, t.rtol64, t.atol64)
    hw = transforms.hvp(s, ex.args, w, mode="rev-over-rev")
    lhs = _inner(w, ref)
    rhs = _inner(v, hw)
    scale = max(1.0, sum(float(np.sum(np.abs(_np64(x)))) for x in (*ref, *hw)))
    if not abs(lhs - rhs) <= t.rtol64 * scale:
        raise AssertionError(f"Hessian symmetry <w, H v> = <v, H w>: {lhs!r} != {rhs!r}")


def _float32(ex: _Example) -> None:
    rng = ex.rng(3)
    x32 = tuple(a.astype("float32") for a in ex.args)
    x64 = tuple(a.astype("float64") for a in x32)  # the same rounded inputs
    t32 = tuple(_normal(rng, a.shape, "float32") for a in x32)
    t64 = tuple(t.astype("float64") for t in t32)
    tol = ex.tol
    out32, jv32 = transforms.jvp(ex.f, x32, t32)
    out64, jv64 = transforms.jvp(ex.f, x64, t64)
    if out32.dtype != np.float32 or jv32.dtype != np.float32:
        raise AssertionError(f"float32 inputs gave a {out32.dtype} value and a {jv32.dtype} JVP")
    _close("float32 value", out32, out64, tol.rtol32, tol.atol32)
    _close("float32 JVP", jv32, jv64, tol.rtol32, tol.atol32)
    u32 = _normal(rng, out32.shape, "float32")
    _, back32 = transforms.vjp(ex.f, *x32)
    _, back64 = transforms.vjp(ex.f, *x64)
    for i, (g32, g64) in enumerate(zip(back32(u32), back64(u32.astype("float64")))):
        if g32.dtype != np.float32:
            raise AssertionError(f"float32 VJP of input {i} is {g32.dtype}")
        _close(f"float32 VJP of input {i}", g32, g64, tol.rtol32, tol.atol32)
    if ex.order < 2:
        return
    hv32, _ = _hvps(ex.f, x32, u32, t32)
    hv64, _ = _hvps(ex.f, x64, u32.astype("float64"), t64)
    rtol, atol = max(tol.rtol32, tol.hvp_rtol32), max(tol.atol32, tol.hvp_atol32)
    for i, (h32, h64) in enumerate(zip(hv32["fwd-over-rev"], hv64["fwd-over-rev"])):
        if h32.dtype != np.float32:
            raise AssertionError(f"float32 H·v of input {i} is {h32.dtype}")
        _close(f"float32 H·v of input {i}", h32, h64, rtol, atol)


def noncontiguous_views(a) -> dict:
    """Non-contiguous views holding the values of the NumPy array ``a``, by kind: ``"strided"`` (every
    other element of a larger array), ``"reversed"`` (negative strides) and, from 2 axes,
    ``"transposed"``; none for a 0-d array.  The ``noncontiguous`` check and the
    :func:`~minidiff.testing.strategies.noncontiguous` strategy draw from them."""
    if a.ndim == 0:
        return {}
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    big[..., ::2] = a
    out = {"strided": big[..., ::2], "reversed": np.ascontiguousarray(a[..., ::-1])[..., ::-1]}
    if a.ndim >= 2:
        out["transposed"] = np.ascontiguousarray(a.swapaxes(-1, -2)).swapaxes(-1, -2)
    return out


def _noncontiguous(ex: _Example) -> None:
    rng = ex.rng(4)
    arrays = [a.numpy() for a in ex.args]
    v = tuple(_normal(rng, a.shape) for a in ex.args)
    out, jv = transforms.jvp(ex.f, ex.args, v)
    u = _normal(rng, out.shape)
    _, back = transforms.vjp(ex.f, *ex.args)
    ref = back(u)
    t = ex.tol
    for kind in ("strided", "transposed", "reversed"):
        views = [noncontiguous_views(a).get(kind, a) for a in arrays]
        if all(vw is a for vw, a in zip(views, arrays)):
            continue
        xs = tuple(asarray(vw) for vw in views)
        got, gjv = transforms.jvp(ex.f, xs, v)
        _close(f"value on {kind} views", got, out, t.rtol64, t.atol64)
        _close(f"JVP on {kind} views", gjv, jv, t.rtol64, t.atol64)
        _, vback = transforms.vjp(ex.f, *xs)
        for i, (g, r) in enumerate(zip(vback(u), ref)):
            _close(f"VJP of input {i} on {kind} views", g, r, t.rtol64, t.atol64)


def _sum_to(a, shape):
    """Sum ``a`` over the axes that broadcasting ``shape`` up to ``a.shape`` added or stretched."""
    lead = a.ndim - len(shape)
    a = a.sum(axis=tuple(range(lead))) if lead else a
    stretched = tuple(k for k, s in enumerate(shape) if s == 1 and a.shape[k] != 1)
    return a.sum(axis=stretched, keepdims=True) if stretched else a


def _broadcasting(ex: _Example) -> None:
    if not ex.broadcasts:
        return
    shapes = [a.shape for a in ex.args]
    target = np.broadcast_shapes(*shapes)
    if all(s == target for s in shapes):
        return
    rng = ex.rng(5)
    wide = tuple(asarray(np.broadcast_to(a.numpy(), target).copy()) for a in ex.args)
    v = tuple(_normal(rng, s) for s in shapes)
    v_wide = tuple(asarray(np.broadcast_to(x.numpy(), target).copy()) for x in v)
    out, jv = transforms.jvp(ex.f, ex.args, v)
    out_w, jv_w = transforms.jvp(ex.f, wide, v_wide)
    t = ex.tol
    _close(f"value on shapes {shapes} vs expanded to {target}", out, out_w, t.rtol64, t.atol64)
    _close(f"JVP on shapes {shapes} vs expanded to {target}", jv, jv_w, t.rtol64, t.atol64)
    u = _normal(rng, out.shape)
    _, back = transforms.vjp(ex.f, *ex.args)
    _, back_w = transforms.vjp(ex.f, *wide)
    for i, (g, gw, s) in enumerate(zip(back(u), back_w(u), shapes)):
        want = _sum_to(gw.numpy(), s)
        _close(f"VJP of input {i} ({s}) vs expanded to {target} and summed back", g, want, t.rtol64, t.atol64)


#: The checks of the battery, in the order they run on each example.
CHECKS: dict[str, Callable[[_Example], None]] = {
    "finite_differences": _finite_differences,
    "adjoint": _adjoint,
    "hvp": _hvp,
    "float32": _float32,
    "noncontiguous": _noncontiguous,
    "broadcasting": _broadcasting,
}


def _describe(args) -> str:
    lines = []
    for i, a in enumerate(args):
        arr = a.numpy() if isinstance(a, Tensor) else np.asarray(a)
        text = np.array2string(arr, precision=17, separator=", ", threshold=64)
        lines.append(f"  input {i}: shape {arr.shape} {arr.dtype}: {text}")
    return "\n".join(lines)


def _checks(op: str, checks) -> tuple[str, ...]:
    names = tuple(CHECKS) if checks is None else tuple(checks)
    unknown = [c for c in names if c not in CHECKS]
    if unknown or not names:
        raise ValueError(f"{op}: unknown checks {unknown or names}; choose from {tuple(CHECKS)}")
    return names


def check_example(
    f: Callable,
    args: Sequence,
    *,
    checks: Sequence[str] | None = None,
    order: int = 2,
    seed: int = 0,
    tolerances: Tolerances | None = None,
    broadcasts: bool = False,
) -> None:
    """Run the battery's ``checks`` (all of :data:`CHECKS` by default) on one input ``args``.

    Raises ``AssertionError`` naming the check that failed and the inputs.  The directions (tangents,
    cotangents) are random with ``seed``.

    >>> import minidiff as md
    >>> md.testing.check_example(md.tanh, (md.tensor([0.5, -1.0]),))
    >>> md.testing.check_example(lambda x: x * 2.0, [md.tensor([1.0])], checks=["bogus"])
    Traceback (most recent call last):
    ...
    ValueError: check_example: unknown checks ['bogus']; choose from ('finite_differences', ...)
    """
    names = _checks("check_example", checks)
    check_number("check_example", "order", order, low=1, high=2, integer=True)
    args = tuple(asarray(a).astype("float64") for a in args)
    _output(f, args, "check_example")
    ex = _Example(f, args, int(seed), order, tolerances or Tolerances(), broadcasts)
    for name in names:
        try:
            CHECKS[name](ex)
        except AssertionError as exc:
            raise AssertionError(f"check {name!r} failed: {exc}\n{_describe(args)}") from None


def check_jacobian(
    f: Callable,
    args: Sequence,
    expected: Tensor,
    argnums: int = 0,
    rtol: float = 1e-12,
    atol: float = 1e-12,
) -> None:
    """Forward-mode and reverse-mode Jacobians of ``f`` at ``args`` both equal ``expected``.

    Meant for the conventions at non-differentiable points (kinks, ties), where finite differences
    cannot serve as the reference.

    >>> import minidiff as md
    >>> md.testing.check_jacobian(md.relu, (md.tensor([-1.0, 0.0, 2.0]),), [[0, 0, 0], [0, 0, 0], [0, 0, 1]])
    """
    args = tuple(asarray(a) for a in args)
    want = np.asarray(expected, dtype=np.float64)
    for mode, jac in (("forward", transforms.jacfwd), ("reverse", transforms.jacrev)):
        try:
            got = jac(f, argnums)(*args)
            _close(f"{mode}-mode Jacobian vs the expected one", got, want, rtol, atol)
        except AssertionError as exc:
            raise AssertionError(
                f"check_jacobian: {exc}\n got {_np64(got).tolist()}\n want {want.tolist()}\n{_describe(args)}"
            ) from None


# ----------------------------------------------------------------------------- drawing inputs
def _domains(op: str, f, domains) -> list[Domain]:
    if not isinstance(domains, (list, tuple)) or not domains:
        raise TypeError(f"{op}: domains must be a non-empty list, one Domain per input of f, got {domains!r}")
    out = []
    for i, d in enumerate(domains):
        if d is None:
            d = Domain()
        elif isinstance(d, tuple):
            d = Domain(shape=d)
        elif not isinstance(d, Domain):
            raise TypeError(f"{op}: domain {i} must be a Domain, a shape tuple or None, got {d!r}")
        d.validate(op, i)
        out.append(d)
    n = _n_inputs(f)
    if n is not None and n != len(out):
        raise ValueError(f"{op}: f takes {n} input(s) but {len(out)} domain(s) were given")
    return out


def _n_inputs(f) -> int | None:
    n = getattr(f, "n_inputs", None)
    if isinstance(n, int):
        return n
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return sum(
        1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    )


def _inputs_strategy(domains: list[Domain], broadcasts: bool):
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    free = [i for i, d in enumerate(domains) if d.shape is None]
    fixed = [tuple(d.shape) for d in domains if isinstance(d.shape, (tuple, list))]

    from .strategies import broadcasts_of, shapes

    @st.composite
    def shared(draw):
        if broadcasts and fixed:  # broadcast against the fixed shapes
            return draw(broadcasts_of(np.broadcast_shapes(*fixed), len(free)))
        full = draw(shapes())  # non-degenerate: sides in [2, 5], all different
        return draw(broadcasts_of(full, len(free))) if broadcasts else (full,) * len(free)

    @st.composite
    def draw_inputs(draw):
        free_shapes = dict(zip(free, draw(shared()))) if free else {}
        arrays = []
        for i, d in enumerate(domains):
            if d.shape is None:
                shape = free_shapes[i]
            elif isinstance(d.shape, st.SearchStrategy):
                shape = draw(d.shape)
            else:
                shape = tuple(d.shape)
            elements = st.floats(d.low, d.high, allow_nan=False, allow_infinity=False)
            if d.where is not None:
                elements = elements.filter(d.where)
            arrays.append(draw(hnp.arrays(np.float64, shape, elements=elements)))
        return tuple(arrays), draw(st.integers(0, 2**31 - 1))

    return draw_inputs()


def run_hypothesis(body: Callable, strategy, *, max_examples: int, seed: int, shrink: bool = True) -> None:
    """Call ``body(example)`` on up to ``max_examples`` examples drawn from ``strategy``, reproducibly
    from ``seed``, stopping at the first failure (shrunk to a simpler one if ``shrink``)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])

    @hypothesis_seed(seed)
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=phases,
        report_multiple_bugs=False,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(example):
        body(example)

    run()


def check_primitive(
    f: Callable,
    domains: Sequence,
    *,
    broadcasts: bool = False,
    checks: Sequence[str] | None = None,
    order: int = 2,
    max_examples: int = 20,
    seed: int | None = None,
    tolerances: Tolerances | None = None,
    shrink: bool = True,
) -> None:
    """Run the whole battery on ``f`` (a user primitive or any function of tensors) over drawn inputs.

    ``domains``: one :class:`Domain` (or a fixed shape tuple, or None) per positional input of ``f``,
    which must return one tensor.  ``broadcasts=True`` states that ``f`` broadcasts its inputs as
    NumPy does: shapes are then drawn broadcastable and the ``broadcasting`` check runs.  ``checks``
    picks from :data:`CHECKS` (all by default); ``order=1`` skips the second-order checks.  ``seed``
    makes the run reproducible (None draws a fresh one, printed in the failure message).

    Raises ``AssertionError`` with the failing check, its inputs and the seed.

    >>> import minidiff as md
    >>> md.testing.check_primitive(md.multiply, [None, None], broadcasts=True, max_examples=5, seed=1)
    >>> md.testing.check_primitive(md.sin, [md.testing.Domain(low=1.0, high=0.0)])
    Traceback (most recent call last):
    ...
    ValueError: check_primitive: domain 0 needs finite low < high, got [1.0, 0.0]
    """
    op = "check_primitive"
    settings = dict(checks=_checks(op, checks), order=order, tolerances=tolerances, broadcasts=broadcasts)
    doms = _domains(op, f, domains)
    check_number(op, "order", order, low=1, high=2, integer=True)
    check_number(op, "max_examples", max_examples, low=1, integer=True)
    seed = random.SystemRandom().randrange(2**32) if seed is None else int(seed)

    def body(example):
        arrays, direction_seed = example
        check_example(f, arrays, seed=direction_seed, **settings)

    strategy = _inputs_strategy(doms, broadcasts)
    try:
        run_hypothesis(body, strategy, max_examples=max_examples, seed=seed, shrink=shrink)
    except AssertionError as exc:
        name = getattr(f, "__name__", repr(f))
        if isinstance(f, Primitive):  # user primitives are named after their function's qualified name
            name = _label(f) if name == f.name else f"{name}, {_label(f)}"
        raise AssertionError(
            f"{op}({name}): {exc}\nHypothesis seed {seed}: check_primitive(..., seed={seed}) reproduces this run"
        ) from None
