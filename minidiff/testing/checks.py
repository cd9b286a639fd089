"""Derivative checks: finite differences, the adjoint identity, and the same one order up.

``check_grads`` holds forward mode and reverse mode against each other and against central finite
differences, one differentiated argument (pytree leaf) at a time, so a failure names the argument:

* forward: ``J·v`` from ``jvp`` equals ``(f(x + εv) − f(x − εv)) / 2ε`` element by element;
* reverse: ``⟨u, J·v⟩ = ⟨Jᵀ·u, v⟩`` with ``Jᵀ·u`` from ``vjp`` (the adjoint identity), and against the
  finite difference; the same again along ``w = Jᵀ·u`` itself, where ``⟨w, w⟩ = ⟨u, J·w⟩`` is a sum
  of squares (a random projection ``⟨u, J·v⟩`` can be small and hide an error in ``Jᵀ·u``);
* order 2 (and up): the same checks applied to ``x ↦ J(x)·v`` and ``x ↦ J(x)ᵀ·u``, which exercises
  forward-over-forward, reverse-over-forward, forward-over-reverse and reverse-over-reverse.

When a check fails, the culprit is found element by element (one finite difference per input element
of the failing argument, up to :data:`LOCALIZE_LIMIT` elements) and :class:`GradCheckError` names the
function and primitive, the rule, the order, the argument, the element and the two numbers compared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..backend import numpy_module as np
from ..primitives.creation import asarray
from ..primitives.random import RngLike, as_generator
from ..tensor import pytree
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree
from ..transforms.core import jvp, vjp
from .arguments import Arguments
from .report import GradCheckError, describe_function, order_text

__all__ = ["GRAD_DEFAULTS", "LOCALIZE_LIMIT", "GradCheckError", "check_grads", "numerical_jvp"]

#: Default ``(eps, rtol, atol)`` of :func:`check_grads` by (working dtype, dtype the finite differences
#: are computed in).  The working dtype is the lowest floating precision among the differentiated
#: inputs and the outputs; the finite differences are computed in float64 from inputs cast up when
#: ``f`` accepts them (it runs and returns float64), else in the working dtype itself.
GRAD_DEFAULTS: dict[tuple[str, str], tuple[float, float, float]] = {
    ("float64", "float64"): (1e-6, 1e-5, 1e-6),
    ("float32", "float64"): (1e-6, 1e-4, 1e-5),
    ("float16", "float64"): (1e-6, 1e-2, 1e-3),
    ("float32", "float32"): (1e-2, 2e-2, 2e-3),
    ("float16", "float16"): (1e-1, 1e-1, 5e-2),
}

#: Largest argument (in elements) whose failing element is searched for one finite difference per
#: element; a larger one is reported by the output element (JVP) or the projection (VJP) only.
LOCALIZE_LIMIT = 1024


# ----------------------------------------------------------------------------- small helpers
def _leaves(tree):
    return [asarray(x) for x in pytree.flatten(tree)[0]]


def _np64(x):
    """``x`` (a tensor or an array) as a host float64 NumPy array."""
    return np.asarray(x.numpy() if isinstance(x, Tensor) else x, dtype=np.float64)


def _inner(a, b) -> float:
    """``⟨a, b⟩`` in float64, of two tensors or summed over two lists of them."""
    if isinstance(a, (list, tuple)):
        return float(sum(_inner(x, y) for x, y in zip(a, b)))
    return float(np.vdot(_np64(a), _np64(b)))


def _max_abs(xs) -> float:
    """The largest magnitude among ``xs``, at least 1 (1 if one is not finite): the scale of an atol."""
    arrays = [_np64(x) for x in xs]
    if not all(np.all(np.isfinite(a)) for a in arrays):
        return 1.0
    return max([1.0] + [float(np.max(np.abs(a))) for a in arrays if a.size])


def _close(what, got, want, rtol, atol, scale=None, show: bool = False) -> None:
    """Raise ``AssertionError`` unless ``got`` and ``want`` (tensors or arrays) agree elementwise to
    ``rtol`` and ``atol·scale``; ``scale`` is by default the largest magnitude of ``want`` (at least
    1, and 1 if it is not finite).  ``show`` puts both values in the message.  (The battery's
    comparison of two computations.)"""
    g, w = _np64(got), _np64(want)
    if g.shape != w.shape:
        raise AssertionError(f"{what}: shape {g.shape} differs from the reference {w.shape}")
    if scale is None:
        scale = _max_abs([w])
    if not np.allclose(g, w, rtol=rtol, atol=atol * scale, equal_nan=True):
        err = float(np.nanmax(np.abs(g - w))) if g.size else 0.0
        values = f"\n got {g}\n want {w}" if show else ""
        raise AssertionError(
            f"{what}: max abs error {err:.3g} (rtol={rtol}, atol={atol}·{scale:.3g}){values}"
        )


def _excess(g, w, rtol, atol, scale):
    """``|g − w| − (rtol·|w| + atol·scale)`` elementwise (> 0: out of tolerance; equal values and
    NaN against NaN are never out, NaN against a number always is) and the tolerance."""
    tol = rtol * np.abs(w) + atol * scale
    with np.errstate(invalid="ignore"):
        out = np.abs(g - w) - tol
    out = np.where(np.isnan(out), np.inf, out)
    return np.where((g == w) | (np.isnan(g) & np.isnan(w)), -np.inf, out), tol


def _worst(gots, wants, rtol, atol, scale):
    """``(leaf, index, got, want, tol)`` of the element most out of tolerance, or None if none is."""
    best = None
    for j, (g, w) in enumerate(zip(gots, wants)):
        g, w = _np64(g), _np64(w)
        if not g.size:
            continue
        ex, tol = _excess(g, w, rtol, atol, scale)
        idx = np.unravel_index(int(np.argmax(ex)), ex.shape)
        if ex[idx] > 0 and (best is None or ex[idx] > best[0]):
            best = (ex[idx], (j, tuple(int(i) for i in idx), float(g[idx]), float(w[idx]), float(tol[idx])))
    return None if best is None else best[1]


def _inner_tol(u, ref, rtol, atol, scale) -> float:
    """The tolerance of ``⟨u, ·⟩`` implied by the elementwise one on ``ref``: Σ |u|·(rtol·|ref| + atol·scale)."""
    return float(
        sum(np.sum(np.abs(_np64(a)) * (rtol * np.abs(_np64(b)) + atol * scale)) for a, b in zip(u, ref))
    )


def _only(F, xs, k):
    """``F`` as a function of leaf ``k`` alone, the others held at ``xs``."""
    return lambda xk: F(*xs[:k], xk, *xs[k + 1 :])


def _like(ts, xs):
    """Each ``ts[i]`` cast to the dtype of ``xs[i]`` (directions follow the inputs' dtype)."""
    return tuple(t if t.dtype == x.dtype else t.astype(x.dtype) for t, x in zip(ts, xs))


def numerical_jvp(f: Callable[..., Any], args: PyTree, tangents: PyTree, eps: float = 1e-6) -> list[Tensor]:
    """Central finite difference ``(f(x + εv) − f(x − εv)) / 2ε``, leaf by leaf of the output."""
    plus = f(*pytree.tree_map(lambda x, t: x + eps * t, tuple(args), tuple(tangents)))
    minus = f(*pytree.tree_map(lambda x, t: x - eps * t, tuple(args), tuple(tangents)))
    return [(p - m) * (1.0 / (2 * eps)) for p, m in zip(_leaves(plus), _leaves(minus))]


# ----------------------------------------------------------------------------- settings
@dataclass
class _Context:
    """What every level of the check shares: the function, its arguments, modes and tolerances."""

    f: Callable
    arguments: Arguments
    modes: tuple
    eps: float
    rtol: float
    atol: float
    dtype: str  # working dtype
    fd64: bool  # finite differences on inputs cast up to float64
    described: dict | None = None

    def fd(self, F, xs, k, t):
        """The central difference of ``F`` along ``t`` in leaf ``k``, output leaf by leaf, in float64."""
        if self.fd64:
            xs = tuple(x.astype("float64") for x in xs)
            t = t.astype("float64")
        plus = _leaves(F(*xs[:k], xs[k] + self.eps * t, *xs[k + 1 :]))
        minus = _leaves(F(*xs[:k], xs[k] - self.eps * t, *xs[k + 1 :]))
        return [(_np64(p) - _np64(m)) / (2 * self.eps) for p, m in zip(plus, minus)]

    def fd_note(self) -> str:
        where = (
            "in float64" if self.fd64 or self.dtype == "float64" else f"in {self.dtype} (f refused float64)"
        )
        cast = f" from {self.dtype} inputs cast up" if self.fd64 and self.dtype != "float64" else ""
        return f"central finite differences, eps={self.eps:g}, {where}{cast}"

    def name(self) -> dict:
        """The fields naming ``f`` and the primitive at fault (``report.describe_function``), found once."""
        if self.described is None:
            self.described = describe_function(self.f, self.arguments.flat(self.f), self.arguments.leaves)
        return self.described


def _working_dtype(xs, outs) -> str:
    sizes = [np.dtype(x.dtype).itemsize for x in (*xs, *outs) if np.dtype(x.dtype).kind == "f"]
    return {2: "float16", 4: "float32"}.get(min(sizes, default=8), "float64")


def _accepts_float64(F, xs) -> bool:
    """Whether ``F`` runs on its inputs cast up to float64 and returns float64 (its floating outputs)."""
    try:
        outs = _leaves(F(*(x.astype("float64") for x in xs)))
    except Exception:  # noqa: BLE001 - any refusal means: difference in the working dtype
        return False
    return all(np.dtype(o.dtype) == np.float64 for o in outs if np.dtype(o.dtype).kind == "f")


def _context(f, arguments, modes, eps, rtol, atol) -> _Context:
    xs = arguments.leaves
    F = arguments.flat(f)
    dtype = _working_dtype(xs, _leaves(F(*xs)))
    fd64 = dtype == "float64" or _accepts_float64(F, xs)
    defaults = GRAD_DEFAULTS[(dtype, "float64" if fd64 else dtype)]
    given = [eps, rtol, atol]
    for name, value in zip(("eps", "rtol", "atol"), given):
        if value is not None and not (isinstance(value, (int, float)) and 0 < value < float("inf")):
            raise ValueError(f"check_grads: {name} must be a positive finite number or None, got {value!r}")
    eps, rtol, atol = (float(d if g is None else g) for g, d in zip(given, defaults))
    return _Context(f, arguments, modes, eps, rtol, atol, dtype, fd64)


def _check_modes(modes) -> tuple:
    modes = tuple(modes) if isinstance(modes, (tuple, list)) else (modes,)
    unknown = set(modes) - {"fwd", "rev"}
    if unknown or not modes:
        raise ValueError(f"check_grads: modes must be drawn from ('fwd', 'rev'), got {modes}")
    return modes


# ----------------------------------------------------------------------------- the check
def check_grads(
    f: Callable[..., Any],
    args: PyTree,
    order: int = 2,
    modes: Sequence[str] = ("fwd", "rev"),
    eps: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: RngLike = 0,
    *,
    static_argnums: int | Sequence[int] = (),
) -> None:
    """Raise :class:`GradCheckError` (an ``AssertionError``) unless the derivatives of ``f`` at ``args``
    up to ``order`` are right.

    ``args`` is a tuple, one entry per positional argument of ``f`` (a bare tensor is refused).  Its
    floating leaves (tensors, Python floats, float arrays) are differentiated, one at a time; every
    other leaf — ints, bools, strings, integer tensors — is static: passed to ``f`` unchanged, never
    perturbed; ``static_argnums`` (an int or tuple of ints) makes whole arguments static, Python floats
    and tensors included.  ``modes`` chooses forward (``"fwd"``), reverse (``"rev"``) or both.
    Directions are random with ``seed`` (an int, or a ``minidiff.primitives.random.Generator`` /
    ``numpy.random.Generator`` whose draws continue at each order).

    Defaults (``eps``, ``rtol``, ``atol`` left None) are chosen per dtype, as ``GRAD_DEFAULTS`` lists
    (an ``atol`` is relative to the largest magnitude of the reference, at least 1):

    ================================================  =====  =====  =====
    inputs (lowest precision among inputs, outputs)   eps    rtol   atol
    ================================================  =====  =====  =====
    float64                                           1e-6   1e-5   1e-6
    float32, differences in float64 (cast up)         1e-6   1e-4   1e-5
    float16, differences in float64 (cast up)         1e-6   1e-2   1e-3
    float32, ``f`` refuses float64                    1e-2   2e-2   2e-3
    float16, ``f`` refuses float64                    1e-1   1e-1   5e-2
    ================================================  =====  =====  =====

    For float32 and float16 inputs the finite differences are computed in float64 from the same
    (exactly representable) inputs cast up, whenever ``f`` accepts float64 inputs and returns float64;
    the derivatives under test are still computed in the inputs' dtype.  Only a function that refuses
    float64 falls back to differences in its own dtype, with a large step and loose tolerances.

    A failure names the function (and the primitive: ``f`` itself, or the one primitive it calls),
    the rule (JVP or VJP), the order (first, or e.g. "order 2: the derivative of the VJP, by forward
    over reverse mode"), the argument index and pytree path, the input element and the two numbers
    compared (``got`` from the rule, ``want`` from finite differences).

    Example:
        >>> import minidiff as md
        >>> md.testing.check_grads(md.tanh, (md.tensor([0.1, -0.7]),), order=3)
        >>> x32 = md.tensor([0.5, 1.5], dtype="float32")
        >>> md.testing.check_grads(lambda x, n: md.sin(x) ** n, (x32, 2))  # n is static (an int)
        >>> md.testing.check_grads(md.sin, x32)
        Traceback (most recent call last):
        ...
        TypeError: check_grads: args must be a tuple, one entry per argument of f (got Tensor; write check_grads(f, (x,)))
    """
    arguments = Arguments.make("check_grads", args, static_argnums)
    modes = _check_modes(modes)
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"check_grads: order must be an int >= 1, got {order!r}")
    ctx = _context(f, arguments, modes, eps, rtol, atol)
    rng = as_generator(seed, op="check_grads")
    _check_level(ctx, arguments.flat(f), arguments.leaves, order, rng, seed, ())


def _check_level(ctx: _Context, F, xs, order: int, rng, seed, path: tuple) -> None:
    """The first-order checks of ``F`` at ``xs``; then one order up, along the JVP and the VJP."""
    out = F(*xs)
    outs, out_def = pytree.flatten(out)
    outs = [asarray(o) for o in outs]
    v = tuple(rng.normal(x.shape, dtype=x.dtype) for x in xs)
    u = [rng.normal(o.shape, dtype=o.dtype) for o in outs]
    jvs = _check_forward(ctx, F, xs, v, path) if "fwd" in ctx.modes else None
    if "rev" in ctx.modes:
        _check_reverse(ctx, F, xs, u, out_def, v, jvs, path)
    if order > 1:
        seeds = (seed + 1, seed + 2) if isinstance(seed, int) else (rng, rng)
        if "fwd" in ctx.modes:
            jv_of = lambda *a: jvp(F, a, _like(v, a))[1]
            _check_level(ctx, jv_of, xs, order - 1, as_generator(seeds[0]), seeds[0], path + ("JVP",))
        if "rev" in ctx.modes:
            vjp_of = lambda *a: _pull(F, a, u, out_def)
            _check_level(ctx, vjp_of, xs, order - 1, as_generator(seeds[1]), seeds[1], path + ("VJP",))


def _pull(F, xs, u, out_def):
    """``J(xs)ᵀ·u`` of ``F`` (``u`` cast to the output's dtypes)."""
    out, back = vjp(F, *xs)
    return back(pytree.unflatten(out_def, list(_like(u, _leaves(out)))))


def _check_forward(ctx: _Context, F, xs, v, path) -> list:
    """``J_k·v_k`` from ``jvp`` against finite differences, for each leaf ``k``; returns, per leaf,
    the JVP's output leaves and the finite differences."""
    result = []
    for k in range(len(xs)):
        _, jv = jvp(_only(F, xs, k), (xs[k],), (v[k],))
        jv, num = _leaves(jv), ctx.fd(F, xs, k, v[k])
        bad = _worst(jv, num, ctx.rtol, ctx.atol, _max_abs(num))
        if bad is not None:
            raise _jvp_failure(ctx, F, xs, k, path, bad)
        result.append((jv, num))
    return result


def _check_reverse(ctx: _Context, F, xs, u, out_def, v, jvs, path) -> None:
    """``Jᵀ·u`` from ``vjp``, leaf by leaf: against ``J·v`` (the adjoint identity), against finite
    differences, and along ``w = Jᵀ·u`` itself."""
    jtu = _pull(F, xs, u, out_def)
    for k in range(len(xs)):
        ct = asarray(jtu[k])
        jv_num = jvs[k] if jvs is not None else (None, ctx.fd(F, xs, k, v[k]))
        for what, got, want, ref, scale in _projections(ctx, F, xs, k, ct, u, v[k], jv_num):
            tol = _inner_tol(u, ref, ctx.rtol, ctx.atol, scale)
            if not abs(got - want) <= tol:  # (NaN fails)
                raise _vjp_failure(ctx, F, xs, k, path, ct, u, (what, got, want, tol))


def _projections(ctx, F, xs, k, ct, u, vk, jv_num) -> list:
    """``(what, ⟨Jᵀu, d⟩, ⟨u, reference of J·d⟩, that reference, its scale)`` for the directions
    ``d = v`` and ``d = w = Jᵀu`` of leaf ``k``; references from the JVP (when ``jv_num[0]`` holds it)
    and from finite differences."""
    jv, num = jv_num
    got, scale = _inner(ct, vk), _max_abs(num)
    out = (
        []
        if jv is None
        else [("the adjoint identity <u, J v> (J v from the JVP)", got, _inner(u, jv), jv, scale)]
    )
    out.append(("finite differences <u, (f(x+εv) - f(x-εv))/2ε>", got, _inner(u, num), num, scale))
    ww = _inner(ct, ct)
    if not ww > 1e-200:  # w = 0 (or NaN, already caught above) leaves nothing to check
        return out
    # along w = J^T u, <u, J w> = <w, w> is a sum of squares: an error in J^T u cannot hide behind a
    # small random projection; w is rescaled to the norm of v so the finite-difference step stays eps
    w = (ct * (_inner(vk, vk) / ww) ** 0.5).astype(xs[k].dtype)
    got_w, num_w = _inner(ct, w), ctx.fd(F, xs, k, w)
    out.append(("finite differences along w = J^T u", got_w, _inner(u, num_w), num_w, _max_abs(num_w)))
    if jv is not None:
        jw = _leaves(jvp(_only(F, xs, k), (xs[k],), (w,))[1])
        out.append(("the adjoint identity along w = J^T u", got_w, _inner(u, jw), jw, _max_abs(num_w)))
    return out


# ----------------------------------------------------------------------------- failures
def _basis(x, flat_index):
    e = np.zeros(x.size, dtype=np.dtype(x.dtype))
    e[flat_index] = 1.0
    return asarray(e.reshape(x.shape))


def _jvp_failure(ctx, F, xs, k, path, bad) -> GradCheckError:
    """The JVP of leaf ``k`` is out of tolerance along a random direction (``bad``): find the input
    element whose column of the Jacobian is worst, one finite difference per element."""
    j, out_idx, got, want, tol = bad
    element = None
    if xs[k].size <= LOCALIZE_LIMIT:
        worst = None
        for e in range(xs[k].size):
            t = _basis(xs[k], e)
            col = _leaves(jvp(_only(F, xs, k), (xs[k],), (t,))[1])
            num = ctx.fd(F, xs, k, t)
            hit = _worst(col, num, ctx.rtol, ctx.atol, _max_abs(num))
            if hit is not None and (worst is None or abs(hit[2] - hit[3]) - hit[4] > worst[1]):
                worst = (e, abs(hit[2] - hit[3]) - hit[4], hit)
        if worst is not None:
            element = np.unravel_index(worst[0], xs[k].shape)
            j, out_idx, got, want, tol = worst[2]
    along = "" if element is not None else " along a random direction"
    compared = (
        f"forward mode ({_what('JVP', path)}) against {ctx.fd_note()}{along}, at output element "
        f"{_index(out_idx)}" + (f" of output leaf {j}" if j else "")
    )
    return _failure(ctx, path, "fwd", k, element, got, want, tol, compared)


def _vjp_failure(ctx, F, xs, k, path, ct, u, scalar) -> GradCheckError:
    """A reverse-mode check of leaf ``k`` failed (``scalar``: what, got, want, tol): compare ``Jᵀ·u``
    element by element with finite differences ``⟨u, (f(x+εe) − f(x−εe))/2ε⟩``."""
    what, got, want, tol = scalar
    element = None
    if xs[k].size <= LOCALIZE_LIMIT:
        wants = np.array([_inner(u, ctx.fd(F, xs, k, _basis(xs[k], e))) for e in range(xs[k].size)])
        wants = wants.reshape(xs[k].shape)
        hit = _worst([ct], [wants], ctx.rtol, ctx.atol, _max_abs([wants]))
        if hit is not None:
            _, element, got, want, tol = hit
            what = "finite differences <u, (f(x+εe) - f(x-εe))/2ε> for each input element e"
    compared = f"reverse mode ({_what('VJP', path)}, J^T u) against {what}; {ctx.fd_note()}"
    if element is None:
        compared += " (the projections <J^T u, v> and the reference are the two numbers)"
    return _failure(ctx, path, "rev", k, element, got, want, tol, compared)


def _what(rule: str, path: tuple) -> str:
    """``"the VJP"`` at first order, ``"the JVP of the VJP"`` one order up along the VJP..."""
    return "the " + " of the ".join((rule, *reversed(path)))


def _index(idx) -> str:
    return str(tuple(int(i) for i in idx))


def _failure(ctx, path, mode, k, element, got, want, tol, compared) -> GradCheckError:
    rule, order, how = order_text(path, mode)
    return GradCheckError(
        **ctx.name(),
        rule=rule,
        order=order,
        order_text=how,
        argnum=ctx.arguments.names[k][0],
        leaf=ctx.arguments.names[k][1],
        element=None if element is None else tuple(int(i) for i in element),
        got=got,
        want=want,
        tolerance=tol,
        compared=compared,
        settings=f"rtol={ctx.rtol:g}, atol={ctx.atol:g}",
    )
