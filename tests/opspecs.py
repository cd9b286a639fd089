"""The table of op specs that drives the property tests of every primitive.

A spec names an operation (a primitive's public function, or a composite such as ``softmax`` or
``conv2d``), the primitives it exercises, and a Hypothesis strategy of :class:`Case`: the function to
differentiate (parameters such as axes, indices, conditions are drawn and closed over), the shapes
of its differentiable inputs and, per input, a *domain* that draws values where the op is smooth
(positive for ``log``, away from ties for ``maximum``, SPD for ``cholesky``...).

``tests/test_registry.py`` checks, with a spy trace, that every spec really binds the primitives it
claims, and that every registered primitive is claimed by some spec, so a new primitive cannot be
added without a spec.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minidiff as md
from minidiff import backend, levels
from minidiff.primitives import REGISTRY, bind, pooling
from minidiff.primitives.shape import _normalize_index, scatter_p
from minidiff.tensor import Tracer
from minidiff.testing import strategies as mst

F = md.nn.functional


def hyp_settings(max_examples: int) -> settings:
    """Hypothesis settings of the property tests: seeded randomness (the seed is chosen, printed and
    passed on by ``tests/conftest.py``, so a run is reproducible from it), no example database."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=False,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ----------------------------------------------------------------------------- shapes
# The specs draw meaningful shapes (sides >= 2, all different; see minidiff.testing.strategies): an
# empty or one-element input passes a wrong rule.  Inside ``with degenerate_inputs():`` the same specs
# draw size-0 and size-1 inputs instead, for the tests dedicated to those.


class _Regime:
    degenerate = False


@contextlib.contextmanager
def degenerate_inputs():
    """Within this block the specs' shape strategies draw size-0 and size-1 inputs (0-d included)."""
    _Regime.degenerate = True
    try:
        yield
    finally:
        _Regime.degenerate = False


@st.composite
def shapes(draw, min_dims=1, max_dims=3, max_side=5):
    """Non-degenerate shapes (sides in [2, max_side], all different), or size-0/size-1 ones."""
    if _Regime.degenerate:
        return draw(mst.degenerate_shapes(min_dims=min_dims, max_dims=max_dims))
    return draw(mst.shapes(min_dims=min_dims, max_dims=max_dims, max_side=max_side))


@st.composite
def broadcastable(draw, n=2, max_dims=3, max_side=5, min_side=0):
    """``n`` mutually broadcastable shapes: each the full shape or a broadcast of it (degenerate:
    sides in {min_side, 1})."""
    if _Regime.degenerate:
        return draw(mst.broadcastable_shapes(n, min_dims=0, max_dims=max_dims, min_side=min_side, max_side=1))
    return draw(mst.broadcastable_shapes(n, max_dims=max_dims, max_side=max_side))


@st.composite
def sides(draw, k, lo=2, hi=5):
    """``k`` different sizes in [lo, hi] (matrix dimensions n, k, m...), or in {0, 1} when degenerate."""
    if _Regime.degenerate:
        return tuple(draw(st.lists(st.sampled_from([0, 1]), min_size=k, max_size=k)))
    return tuple(draw(st.lists(st.integers(lo, hi), min_size=k, max_size=k, unique=True)))


# ----------------------------------------------------------------------------- value domains
# A domain draws a float64 array of a given shape: domain(draw, shape) -> np.ndarray.


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def elements(strategy):
    def domain(draw, shape):
        return draw(hnp.arrays(np.float64, shape, elements=strategy))

    return domain


ANY = elements(_floats(-2.0, 2.0))
POS = elements(_floats(0.5, 2.0))  # log, sqrt, power's base
ABOVE_M1 = elements(_floats(-0.5, 2.0))  # log1p
AWAY0 = elements(st.one_of(_floats(-2.0, -0.1), _floats(0.1, 2.0)))  # abs, relu kinks; divisors
# Interleaved grids never tie with one another: maximum(GRID_A, GRID_B) has no kink within FD reach.
GRID_A = elements(st.integers(-8, 8).map(lambda k: 0.25 * k))
GRID_B = elements(st.integers(-8, 7).map(lambda k: 0.25 * k + 0.125))
GRID_C = elements(st.integers(-8, 7).map(lambda k: 0.25 * k + 0.0625))
TIES = elements(st.sampled_from([-1.0, 0.0, 0.5, 1.0]))  # many ties (kinks; non-differentiable ops)
# Kink points where a convention is defined and agrees with central differences, drawn on purpose:
# exact zeros among values away from 0 (a tiny nonzero x would put the kink within the FD step)
WITH_ZEROS = elements(st.one_of(st.just(0.0), _floats(-1.5, -0.1), _floats(0.1, 1.5)))
BASE_ZEROS = elements(st.one_of(st.just(0.0), _floats(0.5, 2.0)))  # power's base: 0 or positive
FEW = elements(st.sampled_from([-1.0, -0.5, 0.5, 1.0]))  # two operands on it tie often


def distinct(draw, shape):
    """Values 0.02 apart at least: no ties for max/min reductions and max-pooling."""
    ints = draw(hnp.arrays(np.int64, shape, elements=st.integers(-100, 100), unique=True))
    return ints.astype(np.float64) * 0.02


def well_conditioned(draw, shape):
    """Square matrices made diagonally dominant: ``R + (n + 1) I`` with ``R`` in [-1, 1]."""
    n = shape[-1]
    r = draw(hnp.arrays(np.float64, shape, elements=_floats(-1.0, 1.0)))
    return r + (n + 1) * np.eye(n)


def spd(draw, shape):
    """Symmetric positive definite: ``B Bᵀ + n I``."""
    n = shape[-1]
    b = draw(hnp.arrays(np.float64, shape, elements=_floats(-1.0, 1.0)))
    return b @ np.swapaxes(b, -1, -2) + n * np.eye(n)


# ----------------------------------------------------------------------------- specs
@dataclass
class Case:
    """One drawn instance of an op: ``f(*tensors)`` and, per input, its shape and value domain."""

    f: Callable
    shapes: tuple
    domains: tuple
    label: str = ""

    def draw_values(self, draw, contiguous: bool = True):
        """Float64 input arrays; some drawn as non-contiguous views unless ``contiguous``."""
        out = []
        for shape, dom in zip(self.shapes, self.domains):
            a = np.asarray(dom(draw, tuple(shape)), dtype=np.float64)
            if not contiguous:
                a = draw(mst.noncontiguous(a))
            out.append(a)
        return tuple(out)


@dataclass
class Spec:
    name: str
    prims: tuple  # the primitives this spec binds (verified in test_registry)
    case: st.SearchStrategy  # of Case
    diff: bool = True  # False: non-differentiable ops (only vmapped and spied)
    order: int = 2  # derivative order held against finite differences
    fd: dict = field(default_factory=dict)  # overrides of check_grads' eps/rtol/atol
    f32: dict = field(default_factory=dict)  # overrides of the float32 tolerances
    agree: dict = field(default_factory=dict)  # overrides of the float64 AD-vs-AD tolerances


def case(f, shapes, domains, label=""):
    return Case(f, tuple(tuple(s) for s in shapes), tuple(domains), label)


SHAPES = shapes()


def unary(name, f, domain=ANY, prims=None, shapes=SHAPES, **kw):
    return Spec(name, prims or (name,), shapes.map(lambda s: case(f, [s], [domain])), **kw)


def binary(name, f, d1=ANY, d2=ANY, prims=None, min_side=0, **kw):
    strat = broadcastable(2, min_side=min_side).map(lambda ss: case(f, ss, [d1, d2]))
    return Spec(name, prims or (name,), strat, **kw)


@st.composite
def axis_for(draw, ndim, kinds=("none", "int", "tuple"), allowed=None):
    """An ``axis`` argument for a rank-``ndim`` array: None, an int or a tuple (negative ones too).

    ``allowed``: the axes that may be reduced (None: all).  Returns (axis, normalized axes).
    """
    allowed = list(range(ndim)) if allowed is None else list(allowed)
    kinds = [k for k in kinds if k != "int" or allowed]
    if len(allowed) != ndim:
        kinds = [k for k in kinds if k != "none"]
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None, tuple(range(ndim))
    if kind == "int":
        a = draw(st.sampled_from(allowed))
        return (a - ndim if draw(st.booleans()) else a), (a,)
    chosen = draw(st.lists(st.sampled_from(allowed), unique=True, max_size=len(allowed))) if allowed else []
    return tuple(a - ndim if draw(st.booleans()) else a for a in chosen), tuple(sorted(chosen))


def _nonempty_axes(shape):
    return [a for a, s in enumerate(shape) if s > 0]


@st.composite
def reduction_case(draw, fn, domain=ANY, need_nonempty=False):
    """``fn(x, axis, keepdims)`` with axis drawn for the shape (reduced axes non-empty if asked)."""
    shape = draw(SHAPES)
    allowed = _nonempty_axes(shape) if need_nonempty else None
    axis, _ = draw(axis_for(len(shape), allowed=allowed))
    keepdims = draw(st.booleans())
    return case(lambda x: fn(x, axis, keepdims), [shape], [domain], f"axis={axis} keepdims={keepdims}")


# --- shape ops ---------------------------------------------------------------------------------
@functools.cache
def _factorizations(size, max_dims=3):
    """Every shape of 1 to ``max_dims`` sides with ``size`` elements (and ``()`` for size 1)."""
    if size == 0:
        return [(0,), (0, 3), (3, 0), (2, 0, 3)]

    def split(n, dims):
        if dims == 1:
            return [(n,)]
        return [(d, *rest) for d in range(1, n + 1) if n % d == 0 for rest in split(n // d, dims - 1)]

    out = [()] if size == 1 else []
    for nd in range(1, max_dims + 1):
        out.extend(split(size, nd))
    return out


@st.composite
def reshape_case(draw):
    shape = draw(SHAPES)
    size = math.prod(shape)
    target = list(draw(st.sampled_from(_factorizations(size))))
    if target and size and draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    target = tuple(target)
    use_method = draw(st.booleans())
    f = (lambda x: x.reshape(target)) if use_method else (lambda x: md.reshape(x, target))
    return case(f, [shape], [ANY], f"-> {target}")


@st.composite
def broadcast_to_case(draw):
    shape, other = draw(broadcastable(2))
    target = np.broadcast_shapes(shape, other)
    if math.prod(shape) <= 1 and not _Regime.degenerate:  # broadcasting one element is a corner case
        shape = other
    if tuple(shape) == tuple(target):  # same shape: no broadcast, the primitive is not bound
        target = (2, *target)  # a new leading axis instead (the input keeps its drawn shape)
    return case(lambda x: md.broadcast_to(x, target), [shape], [ANY], f"-> {target}")


@st.composite
def transpose_case(draw):
    how = draw(st.sampled_from(["perm", "perm", "perm", "moveaxis", "default", "T", "swapaxes"]))
    # permutations of 3 and 4 axes: cyclic ones (half of them) are not their own inverse
    shape = draw(shapes(min_dims=3 if how in ("perm", "moveaxis") else 1, max_dims=4))
    nd = len(shape)
    if how == "perm":
        perm = draw(mst.permutations(nd))
        return case(lambda x: md.transpose(x, perm), [shape], [ANY], f"perm={perm}")
    if how == "default":
        return case(lambda x: md.transpose(x), [shape], [ANY], "default")
    if how == "T":
        return case(lambda x: x.T, [shape], [ANY], ".T")
    if nd == 0:
        return case(lambda x: md.transpose(x), [shape], [ANY], "0-d")
    a = draw(st.integers(-nd, nd - 1))
    b = draw(st.integers(-nd, nd - 1))
    if how == "swapaxes":
        return case(lambda x: md.swapaxes(x, a, b), [shape], [ANY], f"swapaxes {a} {b}")
    return case(lambda x: md.moveaxis(x, a, b), [shape], [ANY], f"moveaxis {a} {b}")


@st.composite
def dims_case(draw):
    """expand_dims, squeeze, ravel: reshapes in disguise."""
    shape = draw(SHAPES)
    how = draw(st.sampled_from(["expand_dims", "squeeze", "ravel"]))
    if how == "squeeze":  # size-1 axes to squeeze, among the others
        for _ in range(draw(st.integers(1, 2))):
            at = draw(st.integers(0, len(shape)))
            shape = shape[:at] + (1,) + shape[at:]
    nd = len(shape)
    if how == "expand_dims":
        ax = draw(st.integers(-(nd + 1), nd))
        return case(lambda x: md.expand_dims(x, ax), [shape], [ANY], f"expand_dims {ax}")
    if how == "ravel":
        return case(lambda x: md.ravel(x), [shape], [ANY], "ravel")
    ones = [i for i, s in enumerate(shape) if s == 1]
    axes = (
        None if not ones or draw(st.booleans()) else tuple(draw(st.lists(st.sampled_from(ones), unique=True)))
    )
    return case(lambda x: md.squeeze(x, axes), [shape], [ANY], f"squeeze {axes}")


@st.composite
def sum_case(draw):
    shape = draw(SHAPES)
    axis, _ = draw(axis_for(len(shape)))
    keepdims = draw(st.booleans())
    if draw(st.booleans()):
        return case(lambda x: md.sum(x, axis=axis, keepdims=keepdims), [shape], [ANY], f"axis={axis}")
    return case(lambda x: x.sum(axis=axis, keepdims=keepdims), [shape], [ANY], f"method axis={axis}")


@st.composite
def cumsum_case(draw):
    shape = draw(SHAPES)
    nd = len(shape)
    axis = None if nd == 0 or draw(st.booleans()) else draw(st.integers(-nd, nd - 1))
    return case(lambda x: md.cumsum(x, axis=axis), [shape], [ANY], f"axis={axis}")


@st.composite
def flip_case(draw):
    shape = draw(SHAPES)
    axis, _ = draw(axis_for(len(shape)))
    return case(lambda x: md.flip(x, axis), [shape], [ANY], f"axis={axis}")


@st.composite
def basic_index_case(draw):
    shape = draw(SHAPES)
    index = draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    return case(lambda x: x[index], [shape], [ANY], f"[{index}]")


@st.composite
def advanced_index(draw, shape, allow_ints=True):
    """A tuple index mixing integer arrays (with repeats and negative entries), ints, slices and
    None, often with the advanced parts split apart (NumPy then moves them to the front)."""
    idx_shape = draw(mst.shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))  # index arrays

    def array(s):
        return draw(hnp.arrays(np.int64, idx_shape, elements=st.integers(-s, s - 1)))

    parts = []
    for s in shape:
        kinds = ["slice"] + (["array", "int"] if s > 0 else [])
        kind = draw(st.sampled_from(kinds if allow_ints else [k for k in kinds if k != "int"]))
        if kind == "array":
            parts.append(array(s))
        elif kind == "int":
            parts.append(draw(st.integers(-s, s - 1)))
        else:
            parts.append(slice(None) if draw(st.booleans()) else slice(draw(st.integers(0, s)), None))
    if not any(isinstance(p, np.ndarray) for p in parts):  # make sure it is advanced
        options = [k for k, s in enumerate(shape) if s > 0]
        if options:
            k = draw(st.sampled_from(options))
            parts[k] = array(shape[k])
    if parts and draw(st.booleans()):  # a newaxis somewhere
        parts.insert(draw(st.integers(0, len(parts))), None)
    if draw(st.booleans()):  # drop trailing full dimensions sometimes
        while len(parts) > 1 and isinstance(parts[-1], slice) and parts[-1] == slice(None):
            parts.pop()
    return tuple(parts)


def _idx_label(index):
    return (
        "["
        + ", ".join(f"arr{tuple(np.shape(i))}" if isinstance(i, np.ndarray) else repr(i) for i in index)
        + "]"
    )


@st.composite
def advanced_index_case(draw):
    shape = draw(SHAPES)
    index = draw(advanced_index(shape))
    how = draw(st.sampled_from(["numpy", "tensor", "list", "getitem"]))

    def conv(i):
        if not isinstance(i, np.ndarray):
            return i
        if how == "tensor":
            return md.tensor(i)
        if how == "list":
            return i.tolist()
        return i

    idx = tuple(conv(i) for i in index)
    if how == "getitem":
        return case(lambda x: md.getitem(x, idx), [shape], [ANY], _idx_label(index))
    return case(lambda x: x[idx], [shape], [ANY], _idx_label(index) + how)


@st.composite
def mask_index_case(draw):
    shape = draw(SHAPES)
    k = draw(st.integers(1, len(shape)))
    mask = draw(hnp.arrays(np.bool_, shape[:k]))
    m = md.tensor(mask) if draw(st.booleans()) else mask
    return case(lambda x: x[m], [shape], [ANY], f"mask{mask.shape}")


@st.composite
def take_case(draw):
    shape = draw(SHAPES)
    nd = len(shape)
    axis = None if draw(st.booleans()) else draw(st.integers(-nd, nd - 1))
    n = math.prod(shape) if axis is None else shape[axis]
    if n == 0:
        idx = []
    else:
        idx = draw(st.lists(st.integers(-n, n - 1), max_size=4))
    return case(lambda x: md.take(x, idx, axis=axis), [shape], [ANY], f"take {idx} axis={axis}")


@st.composite
def scatter_case(draw):
    """The scatter primitive itself (getitem's transpose): zeros of ``shape`` with g added at index."""
    shape = draw(SHAPES)
    if draw(st.booleans()) and not _Regime.degenerate:  # (index arrays can grow a degenerate input)
        index = draw(advanced_index(shape))
    else:
        index = draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    if math.prod(np.zeros(shape)[index].shape) <= 1 and not _Regime.degenerate:
        index = (slice(None, None, -1),)  # a scalar or empty g tells little: take a reversed slice
    norm = _normalize_index(md.zeros(shape), index)
    g_shape = np.zeros(shape)[norm].shape
    return case(lambda g: scatter_p(g, index=norm, shape=shape), [g_shape], [ANY], f"scatter into {shape}")


@st.composite
def pad_case(draw):
    shape = draw(SHAPES)
    nd = len(shape)
    widths = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(nd))
    form = draw(st.sampled_from(["full", "int", "pair"]))
    if nd == 0:  # NumPy takes only a number for a 0-d array
        pw = 0
    else:
        pw = widths if form == "full" else widths[0][0] if form == "int" else widths[0]
    value = draw(st.sampled_from([0, 0.0, 1.5]))
    return case(lambda x: md.pad(x, pw, constant_values=value), [shape], [ANY], f"pad {pw} value={value}")


@st.composite
def concatenate_case(draw):
    base = draw(SHAPES)
    nd = len(base)
    k = draw(st.integers(1, 3))
    if draw(st.booleans()):  # axis=None: flatten each
        parts = [draw(shapes(max_dims=2)) for _ in range(k)]
        return case(lambda *xs: md.concatenate(list(xs), axis=None), parts, [ANY] * k, "axis=None")
    axis = draw(st.integers(-nd, nd - 1))
    parts = []
    for (side,) in [draw(sides(1)) for _ in range(k)]:
        s = list(base)
        if not _Regime.degenerate:  # (a degenerate base keeps its 0 side: the parts stay degenerate)
            s[axis] = side
        parts.append(tuple(s))
    return case(lambda *xs: md.concatenate(xs, axis=axis), parts, [ANY] * k, f"axis={axis}")


@st.composite
def stack_case(draw):
    shape = draw(SHAPES)
    k = draw(st.integers(1, 3))
    nd = len(shape)
    axis = draw(st.integers(-(nd + 1), nd))
    return case(lambda *xs: md.stack(list(xs), axis=axis), [shape] * k, [ANY] * k, f"axis={axis}")


@st.composite
def split_case(draw):
    shape = draw(SHAPES)
    nd = len(shape)
    axis = draw(st.integers(-nd, nd - 1))
    n = shape[axis]
    divisors = [d for d in range(1, 5) if n % d == 0]
    if draw(st.booleans()) and divisors:
        sections = draw(st.sampled_from(divisors))
    else:
        sections = sorted(draw(st.lists(st.integers(0, n), max_size=3)))

    def f(x):
        parts = md.split(x, sections, axis=axis)
        return md.concatenate([p * float(i + 1) for i, p in enumerate(parts)], axis=axis)

    return case(f, [shape], [ANY], f"split {sections} axis={axis}")


def _fake_device():
    try:
        return backend.register_device("fake")
    except ValueError:
        return backend.get_device("fake")


def _to_device_case(shape):
    fake = _fake_device()
    cpu = backend.get_device("cpu")
    return case(lambda x: md.to_device(x.to(fake) * 2.0, cpu), [shape], [ANY], "cpu -> fake -> cpu")


# --- reductions ----------------------------------------------------------------------------------
@st.composite
def prod_case(draw):
    shape = draw(SHAPES)
    axis, _ = draw(axis_for(len(shape)))
    keepdims = draw(st.booleans())
    # TIES holds exact zeros: prod's rule is exact there.  Magnitudes stay near 1: a product of 30
    # values of 2 is 2.7e8, whose finite differences lose ~1e-5 absolute to rounding
    dom = draw(st.sampled_from([elements(_floats(-1.25, 1.25)), TIES]))
    return case(lambda x: md.prod(x, axis=axis, keepdims=keepdims), [shape], [dom], f"axis={axis}")


@st.composite
def var_case(draw):
    shape = draw(SHAPES)
    axis, axes = draw(axis_for(len(shape), allowed=_nonempty_axes(shape)))
    n = math.prod(shape[a] for a in axes)
    ddof = draw(st.integers(0, 1)) if n > 1 else 0
    keepdims = draw(st.booleans())
    return case(
        lambda x: md.var(x, axis=axis, keepdims=keepdims, ddof=ddof),
        [shape],
        [ANY],
        f"axis={axis} ddof={ddof}",
    )


@st.composite
def std_case(draw, domain=distinct):
    """``std`` over a drawn axis, keepdims and ddof (``ddof`` < the reduced count)."""
    shape = draw(SHAPES)
    axis, axes = draw(axis_for(len(shape), allowed=_nonempty_axes(shape)))
    n = math.prod(shape[a] for a in axes)
    ddof = draw(st.integers(0, 1)) if n > 1 else 0
    keepdims = draw(st.booleans())
    how = draw(st.sampled_from(["function", "method"]))
    if how == "method":
        f = lambda x: x.std(axis=axis, keepdims=keepdims, ddof=ddof)  # noqa: E731
    else:
        f = lambda x: md.std(x, axis=axis, keepdims=keepdims, ddof=ddof)  # noqa: E731
    return case(f, [shape], [domain], f"{how} axis={axis} ddof={ddof} keepdims={keepdims}")


def zeros(draw, shape):
    """All zeros: a constant input, where the variance is exactly 0 in every dtype."""
    return np.zeros(shape)


@st.composite
def softmax_case(draw, fn):
    shape = draw(SHAPES)
    allowed = _nonempty_axes(shape)
    if not allowed:
        shape = (1,) + shape[1:]
        allowed = [0]
    a = draw(st.sampled_from(allowed))
    axis = a - len(shape) if draw(st.booleans()) else a
    return case(lambda x: fn(x, axis=axis), [shape], [ANY], f"axis={axis}")


# --- linear algebra --------------------------------------------------------------------------------
@st.composite
def matmul_case(draw):
    n, k, m = draw(sides(3))
    kind = draw(st.sampled_from(["vv", "vm", "mv", "mm", "batched"]))
    if kind == "vv":
        xs, ys = (k,), (k,)
    elif kind == "vm":
        xs, ys = (k,), draw(st.sampled_from([(k, m), (2, k, m)]))
    elif kind == "mv":
        xs, ys = draw(st.sampled_from([(n, k), (2, n, k)])), (k,)
    elif kind == "mm":
        xs, ys = (n, k), (k, m)
    else:
        bx, by = draw(broadcastable(2, max_dims=1, max_side=3))
        if not bx and not by or _Regime.degenerate:  # (a 0 batch axis would not broadcast with 2)
            bx, by = (2,), draw(st.sampled_from([(), (1,)]))
        xs, ys = bx + (n, k), by + (k, m)
    op = draw(st.booleans())
    f = (lambda x, y: x @ y) if op else (lambda x, y: md.matmul(x, y))
    return case(f, [xs, ys], [ANY, ANY], f"{xs} @ {ys}")


@st.composite
def dot_case(draw):
    kind = draw(st.sampled_from(["vv", "mv", "mm", "nd"]))
    n, k, m = draw(sides(3))
    shps = {"vv": [(k,), (k,)], "mv": [(n, k), (k,)], "mm": [(n, k), (k, m)], "nd": [(2, n, k), (k, m)]}[kind]
    return case(lambda a, b: md.dot(a, b), shps, [ANY, ANY], kind)


EINSUM_SPECS = [
    "ij,jk->ik",
    "ij->ji",
    "ij->",
    "ij->i",
    "i,i->",
    "i,j->ij",
    "bij,bjk->bik",
    "ij,j->i",
    "ij,jk,kl->il",
    "...ij,...jk->...ik",
    "ij,k->i",
    "ij",
    "ji",
    "ij,jk",
    "i,i",
]


@st.composite
def einsum_case(draw):
    spec = draw(st.sampled_from(EINSUM_SPECS))
    sizes = dict(zip("ijklb", draw(sides(5, 2, 6))))
    ell = () if _Regime.degenerate else tuple(draw(st.lists(st.integers(2, 3), max_size=1)))
    ins = spec.split("->")[0].split(",")
    shapes = [(ell if "..." in t else ()) + tuple(sizes[c] for c in t.replace("...", "")) for t in ins]
    return case(lambda *ops: md.einsum(spec, *ops), shapes, [ANY] * len(shapes), spec)


@st.composite
def solve_case(draw):
    n, k = draw(sides(2, 2, 4))
    n = max(n, 1)  # a 0×0 system is degenerate enough; keep a matrix
    kinds = ["vec", "mat"] + ([] if _Regime.degenerate else ["batched_mat", "broadcast_mat", "batched_vec"])
    kind = draw(st.sampled_from(kinds))
    a_shape, b_shape = {
        "vec": ((n, n), (n,)),
        "mat": ((n, n), (n, k)),
        "batched_mat": ((2, n, n), (2, n, k)),
        "broadcast_mat": ((2, n, n), (n, k)),
        "batched_vec": ((2, n, n), (n,)),
    }[kind]
    return case(lambda a, b: md.linalg.solve(a, b), [a_shape, b_shape], [well_conditioned, ANY], kind)


@st.composite
def square_matrices(draw, min_n=2):
    """Square matrices, some batched (batch axis of 3 so it differs from n), n in [min_n, 4]; a 1×1
    matrix when degenerate."""
    if _Regime.degenerate:
        return (1, 1)
    n = draw(st.integers(min_n, 4))
    return draw(st.sampled_from([(), (3,)])) + (n, n)


# --- nn.functional -------------------------------------------------------------------------------
@st.composite
def conv2d_case(draw):
    n = draw(st.integers(1, 2))
    c, o = draw(sides(2, 2, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.sampled_from([1, 2, (1, 2)]))
    padding = draw(st.sampled_from([0, 1, (0, 1)]))
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    h = draw(st.integers(max(1, kh - 2 * ph), 5))
    w = draw(st.integers(max(1, kw - 2 * pw), 5))
    shapes = [(n, c, h, w), (o, c, kh, kw)]
    if draw(st.booleans()):
        shapes.append((o,))
    return case(
        lambda *a: F.conv2d(*a[:2], *a[2:], stride=stride, padding=padding),
        shapes,
        [ANY] * len(shapes),
        f"stride={stride} padding={padding}",
    )


@st.composite
def conv2d_adjoint_case(draw, which):
    """The two maps conv2d's VJP is made of, as functions of their own two inputs: the input cotangent
    ``conv2d_transpose(g, w)`` and the weight cotangent ``conv2d_weight_grad(x, g)``."""
    n = draw(st.integers(1, 2))
    c, o = draw(sides(2, 2, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.sampled_from([(1, 1), (2, 2), (1, 2)]))
    padding = draw(st.sampled_from([(0, 0), (1, 1), (0, 1)]))
    h = draw(st.integers(max(1, kh - 2 * padding[0]), 5))
    w = draw(st.integers(max(1, kw - 2 * padding[1]), 5))
    ho, wo = ((s + 2 * p - k) // st_ + 1 for s, p, k, st_ in zip((h, w), padding, (kh, kw), stride))
    conv = md.primitives.convolution
    label = f"stride={stride} padding={padding}"
    if which == "transpose":
        return case(
            lambda g, wt: conv.conv2d_transpose(g, wt, image=(h, w), stride=stride, padding=padding),
            [(n, o, ho, wo), (o, c, kh, kw)],
            [ANY, ANY],
            label,
        )
    return case(
        lambda x, g: conv.conv2d_weight_grad(x, g, kernel=(kh, kw), stride=stride, padding=padding),
        [(n, c, h, w), (n, o, ho, wo)],
        [ANY, ANY],
        label,
    )


@st.composite
def pool_case(draw, fn, domain):
    """NCHW inputs with tiling, odd-sided, gapped (stride > kernel) and overlapping windows."""
    n, c = draw(st.integers(1, 2)), draw(st.integers(2, 3))
    k = draw(st.sampled_from([1, 2, 3, (2, 1), (1, 2)]))
    stride = draw(st.sampled_from([None, 1, 2, (1, 2), 3]))
    kh, kw = (k, k) if isinstance(k, int) else k
    h, w = draw(st.integers(kh, 5)), draw(st.integers(kw, 5))
    return case(lambda x: fn(x, k, stride), [(n, c, h, w)], [domain], f"k={k} stride={stride}")


@st.composite
def pool_geometry(draw):
    """``(kernel, stride, (H, W), leading axes)`` of a pooling primitive called directly."""
    kernel = draw(st.sampled_from([(1, 1), (2, 2), (2, 1), (3, 2)]))
    stride = draw(st.sampled_from([kernel, (1, 1), (2, 1), (3, 3)]))
    size = (draw(st.integers(kernel[0], 5)), draw(st.integers(kernel[1], 5)))
    return kernel, stride, size, draw(st.sampled_from([(), (2,), (1, 2)]))


@st.composite
def pool_windows_case(draw):
    """``pool2d_windows`` itself (max_pool2d's JVP reads the tangent's windows through it)."""
    kernel, stride, size, lead = draw(pool_geometry())
    return case(lambda x: pooling.windows(x, kernel, stride), [(*lead, *size)], [ANY], f"{kernel} {stride}")


@st.composite
def pool_fold_case(draw):
    """``pool2d_fold`` itself (the transpose of the windows of avg_pool2d and of max_pool2d's VJP)."""
    kernel, stride, size, lead = draw(pool_geometry())
    ho, wo = pooling.out_size("pool2d_fold", kernel, stride, size)
    shape = (kernel[0] * kernel[1], *lead, ho, wo)
    return case(lambda c: pooling.fold(c, kernel, stride, size), [shape], [ANY], f"{kernel} {stride} {size}")


@st.composite
def max_pool_share_case(draw):
    """The tie shares max_pool2d's rules read (not differentiable), on tie-heavy inputs."""
    kernel, stride, size, lead = draw(pool_geometry())

    def f(x):
        return pooling.max_pool2d_share_p(
            x, pooling.max_pool(x, kernel, stride), kernel=kernel, stride=stride
        )

    return case(f, [(*lead, *size)], [TIES], f"{kernel} {stride}")


@st.composite
def cross_entropy_case(draw):
    n, k = draw(sides(2, 2, 5))
    labels = md.tensor(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), dtype="int64")
    return case(lambda z: F.cross_entropy(z, labels), [(n, k)], [ANY], "")


@st.composite
def linear_case(draw):
    i, o = draw(sides(2, 2, 4))
    x_shape = draw(st.sampled_from([(i,), (5, i), (1, 5, i)]))
    shapes = [x_shape, (o, i)] + ([(o,)] if draw(st.booleans()) else [])
    return case(lambda *a: F.linear(*a), shapes, [ANY] * len(shapes), "")


# --- elementwise specials -----------------------------------------------------------------------
@st.composite
def where_case(draw):
    sx, sy = draw(broadcastable(2))
    full = np.broadcast_shapes(sx, sy)
    sc = draw(st.sampled_from([full, full[1:], tuple(1 if i % 2 else s for i, s in enumerate(full))]))
    cond = draw(hnp.arrays(np.bool_, sc))
    c = md.tensor(cond) if draw(st.booleans()) else cond
    return case(lambda x, y: md.where(c, x, y), [sx, sy], [ANY, ANY], f"cond{sc}")


@st.composite
def clip_case(draw):
    shape = draw(SHAPES)
    lo, hi = draw(st.sampled_from([(-0.5, 0.5), (None, 0.25), (-0.25, None), (0.0, 0.0)]))
    return case(lambda x: md.clip(x, lo, hi), [shape], [GRID_B], f"[{lo}, {hi}]")


@st.composite
def clip_tensor_case(draw):
    sx, slo, shi = draw(broadcastable(3, max_dims=2))
    return case(
        lambda x, lo, hi: md.clip(x, lo, hi), [sx, slo, shi], [GRID_B, GRID_A, GRID_C], "tensor bounds"
    )


def _reduce_pair(fn, x, y):
    """``fn`` (max or min) over the stacked pair x, y broadcast together: a reduction with ties."""
    shape = np.broadcast_shapes(x.shape, y.shape)
    return fn(md.stack([md.broadcast_to(x, shape), md.broadcast_to(y, shape)]), axis=0)


@st.composite
def power_at_zero_case(draw):
    """``x ** E`` for a constant integer exponent array E in {0, 1, 2, 3} (a tensor, so the general
    rule runs) on bases with exact zeros: the derivatives there are 0, 1, 0, 0 and 0, 0, 2, 0."""
    shape = draw(SHAPES)
    e = md.tensor(draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0, 2.0, 3.0]))))
    return case(lambda x: md.power(x, md.astype(e, x.dtype)), [shape], [WITH_ZEROS], "exponents 0 to 3")


@st.composite
def exponent_at_zero_case(draw):
    """``B ** y`` for a constant base B with exact zeros, y in [0.5, 2]: d/dy 0**y = 0 at every order."""
    shape = draw(SHAPES)
    b = md.tensor(BASE_ZEROS(draw, shape))
    return case(
        lambda y: md.power(md.astype(b, y.dtype), y), [shape], [elements(_floats(0.5, 2.0))], "base 0"
    )


@st.composite
def astype_case(draw):
    shape = draw(SHAPES)
    return case(lambda x: md.astype(md.astype(x, "float32") * 2.0, x.dtype), [shape], [ANY], "f32 round trip")


# --- the library's own custom primitives (md.primitive): DEER, the scan, the nn hooks -----------------
SMALL = elements(_floats(-0.4, 0.4))  # contracting transitions and recurrent weights


def _tight(x):
    """Solver tolerances: tight in float64 (finite differences need the exact fixed point), the
    solver's defaults otherwise."""
    return dict(atol=1e-13, rtol=0.0) if x.dtype == np.float64 else {}


@st.composite
def affine_scan_case(draw):
    """``y_i = A_i y_{i-1} + b_i`` by each scan method, dense or diagonal, A sometimes shared."""
    T, n = draw(sides(2, 2, 5))
    diagonal = draw(st.booleans())
    method = draw(st.sampled_from(["sequential", "log", "blocked"]))
    batch = draw(st.sampled_from([(), (3,)]))
    a_batch = draw(st.sampled_from([(), batch]))
    a_shape = a_batch + (T, n) + (() if diagonal else (n,))

    def f(A, b, y0):
        return md.deer.affine_scan(A, b, y0, diagonal=diagonal, method=method)

    label = f"{'diagonal' if diagonal else 'dense'} {method}"
    return case(f, [a_shape, batch + (T, n), batch + (n,)], [SMALL, ANY, ANY], label)


@st.composite
def deer_rnn_case(draw):
    """An Elman recurrence solved by DEER, differentiated in the initial state, inputs and weights."""
    T, m, n = draw(sides(3, 2, 4))

    def f(y0, xs, w_ih, w_hh, b):
        params = {"W_ih": w_ih, "W_hh": w_hh, "b_ih": b, "b_hh": b * 0.5}
        return md.deer.deer_rnn(md.deer.cells.elman_cell, y0, xs, params, **_tight(y0))

    shapes_ = [(n,), (T, m), (n, m), (n, n), (n,)]
    return case(f, shapes_, [ANY, ANY, SMALL, SMALL, ANY], f"T={T} m={m} n={n}")


def _decay(y, t, p):
    """A smooth nonlinear ODE: y' = -k y + a sin(y) cos(t)."""
    return -p["k"] * y + p["a"] * md.sin(y) * md.cos(t)


@st.composite
def deer_odeint_case(draw):
    """A batch of a nonlinear ODE solved by DEER on a grid, differentiated in y0 and the parameters."""
    B, n = draw(sides(2, 2, 3))
    T = draw(st.integers(2, 4))
    ts = md.tensor(np.linspace(0.0, 1.0, T + 1))

    def f(y0, k, a):
        grid = md.astype(ts, y0.dtype)
        return md.deer.deer_odeint(_decay, y0, grid, {"k": k, "a": a}, **_tight(y0))

    return case(f, [(B, n), (n,), ()], [ANY, elements(_floats(0.5, 1.5)), SMALL], f"T={T}")


def _reaction(y, dy, r, p):
    """A well-posed nonlinear BVP: y'' = a·y + k·y³ − s(r) + 0.3·y' with a > 0, k ≥ 0 (so ∂f/∂y > 0:
    one solution, a nonsingular Newton matrix), s a pointwise source."""
    return p["a"] * y + p["k"] * y**3 - p["s"] + 0.3 * dy


@st.composite
def deer_bvp_case(draw):
    """A small two-point BVP solved by Newton with banded solves, differentiated in the parameters
    (two scalars and a source on the grid) and both boundary values, each end Dirichlet or Neumann."""
    n = draw(st.integers(3, 12))
    kinds = draw(st.tuples(*[st.sampled_from(md.deer.BOUNDARY_KINDS)] * 2))

    def f(a, k, s, left, right):
        return md.deer.deer_bvp(
            _reaction, {"a": a, "k": k, "s": s}, (0.0, 1.0, n), left=(kinds[0], left), right=(kinds[1], right)
        )

    domains = [elements(_floats(0.5, 1.5)), elements(_floats(0.0, 0.5)), ANY, ANY, ANY]
    return case(f, [(), (), (n,), (), ()], domains, f"n={n} {kinds[0]}-{kinds[1]}")


def _hooked_module():
    """A module with a backward hook registered: its output passes through ``nn.backward_hook``."""
    module = md.nn.ReLU()
    module.register_backward_hook(lambda mod, grad_output: None)
    return module


def _backward_hook_case(shape):
    hooked = _hooked_module()
    return case(lambda x: hooked(md.sin(x) + 2.0), [shape], [ANY], "hooked ReLU")


def _scalars(x):
    return (2.5 * x - 1.0) / (x * x + 1.0) + x**3 + 2.0**x - (1.0 - x) ** 2


@st.composite
def nondiff_binary_case(draw, fn):
    s1, s2 = draw(broadcastable(2))
    return case(fn, [s1, s2], [TIES, TIES], "")


@st.composite
def arg_reduction_case(draw, fn):
    shape = draw(SHAPES)
    nd = len(shape)
    axis = None if draw(st.booleans()) else draw(st.integers(-nd, nd - 1))
    return case(lambda x: fn(x, axis=axis), [shape], [distinct], f"axis={axis}")


@st.composite
def bool_reduction_case(draw, fn):
    shape = draw(SHAPES)
    axis, _ = draw(axis_for(len(shape)))
    return case(lambda x: fn(x > 0.25, axis=axis), [shape], [TIES], f"axis={axis}")


def _isfinite_log(x):
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf, log(-1) = nan on purpose
        return md.isfinite(md.log(x))


def _isnan_sqrt(x):
    with np.errstate(invalid="ignore"):  # sqrt(-1) = nan on purpose
        return md.isnan(md.sqrt(x))


_COMPARISONS = {
    "less": lambda x, y: x < y,
    "less_equal": lambda x, y: x <= y,
    "greater": lambda x, y: md.greater(x, y),
    "greater_equal": lambda x, y: x >= y,
    "equal": lambda x, y: x == y,
    "not_equal": lambda x, y: x != y,
    "logical_and": lambda x, y: (x > 0) & (y > 0),
    "logical_or": lambda x, y: md.logical_or(x > 0, y > 0),
}

SPECS: list[Spec] = [
    # ---- elementwise, unary
    unary("negative", lambda x: -x),
    unary("exp", md.exp),
    unary("log", md.log, POS),
    unary("log1p", md.log1p, ABOVE_M1),
    unary("expm1", md.expm1),
    unary("sqrt", md.sqrt, POS),
    unary("square", md.square),
    unary("abs", md.abs, AWAY0),
    unary("sin", md.sin),
    unary("cos", md.cos),
    unary("tanh", md.tanh),
    unary("sigmoid", md.sigmoid, elements(_floats(-4.0, 4.0))),
    unary("relu", md.relu, AWAY0),
    unary("softplus", md.softplus),
    unary("tan", md.tan, elements(_floats(-1.2, 1.2))),  # away from the poles at ±π/2
    unary("arcsin", md.arcsin, elements(_floats(-0.9, 0.9))),  # inside (-1, 1), away from ±1
    unary("arccos", md.arccos, elements(_floats(-0.9, 0.9))),
    unary("arctan", md.arctan, elements(_floats(-3.0, 3.0))),
    unary("sinh", md.sinh),
    unary("cosh", md.cosh),
    unary("erf", md.erf),
    unary(
        "scalar_operands", _scalars, POS, prims=("multiply", "subtract", "divide", "add", "power", "square")
    ),
    unary("power_int_exponent", lambda x: md.power(x, 3.0) + x**-2.0 * 0.1, AWAY0, prims=("power",)),
    # ---- elementwise, binary, on broadcastable shapes
    binary("add", lambda x, y: x + y),
    binary("subtract", lambda x, y: md.subtract(x, y)),
    binary("multiply", lambda x, y: x * y),
    binary("divide", lambda x, y: x / y, ANY, AWAY0),
    binary("power", lambda x, y: x**y, POS, ANY),
    binary("maximum", md.maximum, GRID_A, GRID_B),
    # y away from 0: never the origin (0/0) nor the branch cut (y = 0, x < 0) where the angle jumps 2π
    binary("arctan2", md.arctan2, AWAY0, ANY),
    binary("minimum", md.minimum, GRID_A, GRID_B),
    # ---- drawn kinks where the convention equals the central difference: a changed convention fails
    Spec("power_at_zero_base", ("power",), power_at_zero_case()),  # d/dx x**0 = 0, x**1, x**2... at 0
    Spec("power_exponent_at_zero_base", ("power",), exponent_at_zero_case()),  # d/dy 0**y = 0
    binary(
        "power_squared_base",
        lambda x, y: md.square(x) ** y,
        WITH_ZEROS,
        elements(_floats(2.0, 3.0)),
        prims=("power",),
    ),
    # at a tie (f(x+εv) - f(x-εv))/2ε = (v1 + v2)/2, the even split; first order only (the tie breaks)
    binary("maximum_ties", md.maximum, FEW, FEW, prims=("maximum",), order=1),
    binary("minimum_ties", md.minimum, FEW, FEW, prims=("minimum",), order=1),
    binary("max_ties", functools.partial(_reduce_pair, md.max), FEW, FEW, prims=("max",), order=1),
    binary("min_ties", functools.partial(_reduce_pair, md.min), FEW, FEW, prims=("min",), order=1),
    unary("abs_at_zero", md.abs, WITH_ZEROS, prims=("abs",), order=1),  # (|εv| - |-εv|)/2ε = 0
    binary("mse_loss", F.mse_loss, prims=("subtract", "multiply", "sum"), min_side=1),  # mean of nothing: nan
    binary(
        "where_compare",
        lambda x, y: md.where(x > y, x * y, y - x),
        GRID_A,
        GRID_B,
        prims=("where", "greater"),
    ),
    Spec("where", ("where",), where_case()),
    Spec("clip", ("clip",), clip_case()),
    Spec("clip_tensor_bounds", ("maximum", "minimum"), clip_tensor_case()),
    # a float32 detour rounds values and tangents alike: finite differences need a large step, and
    # linearity holds to float32 precision only
    Spec(
        "astype",
        ("astype",),
        astype_case(),
        fd=dict(eps=1e-2, rtol=1e-4, atol=1e-4),
        agree=dict(rtol=1e-6, atol=1e-6),
    ),
    # ---- structural (linear)
    Spec("reshape", ("reshape",), reshape_case()),
    Spec("broadcast_to", ("broadcast_to",), broadcast_to_case()),
    Spec("transpose", ("transpose",), transpose_case()),
    Spec("expand_squeeze_ravel", ("reshape",), dims_case()),
    Spec("sum", ("sum",), sum_case()),
    Spec("cumsum", ("cumsum",), cumsum_case()),
    Spec("flip", ("getitem",), flip_case()),
    Spec("getitem_basic", ("getitem",), basic_index_case()),
    Spec("getitem_advanced", ("getitem",), advanced_index_case()),
    Spec("getitem_mask", ("getitem",), mask_index_case()),
    Spec("take", ("getitem",), take_case()),
    Spec("split", ("getitem", "concatenate"), split_case()),
    Spec("scatter", ("scatter",), scatter_case()),
    Spec("pad", ("pad",), pad_case()),
    Spec("concatenate", ("concatenate",), concatenate_case()),
    Spec("stack", ("stack",), stack_case()),
    Spec("to_device", ("to_device",), SHAPES.map(_to_device_case)),
    # ---- reductions
    Spec("max", ("max",), reduction_case(md.max, distinct, need_nonempty=True)),
    Spec(
        "min",
        ("min",),
        reduction_case(lambda x, a, k: x.min(axis=a, keepdims=k), distinct, need_nonempty=True),
    ),
    Spec("prod", ("prod",), prod_case()),
    Spec("mean", ("sum", "multiply"), reduction_case(md.mean, need_nonempty=True)),
    Spec("var", ("sum", "multiply", "subtract", "divide"), var_case()),
    Spec("std", ("sqrt", "where", "divide", "sum"), std_case()),
    # zero variance: the convention (derivative 0) equals the central difference, (ε|v'| - ε|v'|)/2ε
    Spec("std_at_zero_variance", ("sqrt", "where"), std_case(zeros), order=1),
    Spec("logsumexp", ("logsumexp",), reduction_case(md.logsumexp, need_nonempty=True)),
    Spec("softmax", ("logsumexp", "subtract", "exp"), softmax_case(md.softmax)),
    Spec("log_softmax", ("logsumexp", "subtract"), softmax_case(md.log_softmax)),
    # ---- linear algebra
    Spec("matmul", ("matmul",), matmul_case()),
    Spec("dot", ("matmul",), dot_case()),
    Spec(
        "outer",
        ("multiply",),
        st.tuples(SHAPES, shapes(max_dims=2)).map(lambda s: case(md.outer, s, [ANY] * 2)),
    ),
    Spec("einsum", ("einsum",), einsum_case()),
    Spec("solve", ("solve",), solve_case()),
    Spec("inv", ("inv",), square_matrices().map(lambda s: case(md.linalg.inv, [s], [well_conditioned]))),
    Spec("det", ("det",), square_matrices().map(lambda s: case(md.linalg.det, [s], [well_conditioned]))),
    Spec("cholesky", ("cholesky",), square_matrices().map(lambda s: case(md.linalg.cholesky, [s], [spd]))),
    Spec(
        "trace",
        ("multiply", "sum"),
        shapes(min_dims=2, max_dims=3, max_side=4).map(lambda s: case(md.trace, [s], [ANY])),
    ),
    # ---- nn.functional
    Spec("linear", ("matmul", "transpose"), linear_case()),
    Spec("conv2d", ("conv2d",), conv2d_case()),
    Spec("conv2d_transpose", ("conv2d_transpose",), conv2d_adjoint_case("transpose")),
    Spec("conv2d_weight_grad", ("conv2d_weight_grad",), conv2d_adjoint_case("weight")),
    Spec("max_pool2d", ("max_pool2d",), pool_case(F.max_pool2d, distinct)),
    Spec("avg_pool2d", ("pool2d_sum",), pool_case(F.avg_pool2d, ANY)),
    Spec("pool2d_windows", ("pool2d_windows",), pool_windows_case()),
    Spec("pool2d_fold", ("pool2d_fold",), pool_fold_case()),
    Spec("cross_entropy", ("getitem", "logsumexp", "sum"), cross_entropy_case()),
    Spec("nn.backward_hook", ("nn.backward_hook",), SHAPES.map(_backward_hook_case)),
    # ---- the library's custom primitives
    Spec("affine_scan", ("affine_scan",), affine_scan_case(), agree=dict(rtol=1e-8, atol=1e-9)),
    Spec("deer_rnn", ("deer_rnn",), deer_rnn_case(), agree=dict(rtol=1e-8, atol=1e-9)),
    # first order against finite differences (each evaluation is a Newton solve); second order by the
    # HVP test (three modes agree) and in tests/test_deer_ode.py against the sequential solver
    Spec("deer_odeint", ("deer_odeint",), deer_odeint_case(), order=1, agree=dict(rtol=1e-8, atol=1e-9)),
    # likewise (second order against finite differences of the first: tests/test_deer_bvp.py, and
    # three times the time here at order=2)
    Spec("deer_bvp", ("deer_bvp",), deer_bvp_case(), order=1, agree=dict(rtol=1e-8, atol=1e-9)),
    # ---- non-differentiable ops: vmapped and spied only
    *[Spec(name, (name,), nondiff_binary_case(fn), diff=False) for name, fn in _COMPARISONS.items()],
    unary("logical_not", lambda x: ~(x > 0), TIES, diff=False),
    unary("sign", md.sign, TIES, diff=False),
    unary("floor", lambda x: md.floor(x * 1.5), TIES, diff=False, prims=("floor",)),
    unary("isfinite", _isfinite_log, TIES, diff=False, prims=("isfinite",)),
    unary("isnan", _isnan_sqrt, TIES, diff=False, prims=("isnan",)),
    unary("cast", lambda x: md.astype(x * 3.0, "int32"), TIES, diff=False, prims=("cast",)),
    Spec("argmax", ("argmax",), arg_reduction_case(md.argmax), diff=False),
    Spec("argmin", ("argmin",), arg_reduction_case(md.argmin), diff=False),
    Spec("any", ("any",), bool_reduction_case(md.any), diff=False),
    Spec("all", ("all",), bool_reduction_case(md.all), diff=False),
    Spec("max_pool2d_share", ("max_pool2d_share",), max_pool_share_case(), diff=False),
]

DIFF_SPECS = [s for s in SPECS if s.diff]

#: Specs whose strategies do not draw size-0/size-1 inputs under ``degenerate_inputs()``, and why.
NOT_DEGENERATE = {
    "conv2d": "the image must cover the kernel; a 1x1 image and kernel is drawn by the spec itself",
    "conv2d_transpose": "the image must cover the kernel; a 1x1 image and kernel is drawn by the spec itself",
    "conv2d_weight_grad": "the image must cover the kernel; a 1x1 image and kernel is drawn by the spec itself",
    "max_pool2d": "the image must cover the pooling window",
    "avg_pool2d": "the image must cover the pooling window",
    "pool2d_windows": "the image must cover the pooling window",
    "pool2d_fold": "the image must cover the pooling window",
    "cross_entropy": "needs a class axis and labels in range; (N, 1) logits have a zero gradient",
    "linear": "the layer's sizes are its own parameters, at least 2",
    "affine_scan": "steps and state sizes of at least 2 (size 0 and 1 in tests/test_deer_scan.py)",
    "deer_rnn": "a recurrence needs steps and a state (empty inputs: tests/test_deer_rnn.py)",
    "deer_odeint": "an ODE needs a grid and a state (shapes checked in tests/test_deer_ode.py)",
    "deer_bvp": "central differences need a grid of at least 3 points (refused below: tests/test_deer_bvp.py)",
}
#: The differentiable specs of this table whose strategies draw degenerate inputs when asked.
DEGENERATE_SPECS = [s for s in DIFF_SPECS if s.name not in NOT_DEGENERATE]


# ----------------------------------------------------------------------------- helpers for tests
def tensors(arrays, dtype="float64"):
    """Tensors of ``dtype`` holding ``arrays`` (views kept as they are when no cast is needed)."""
    return tuple(md.asarray(np.asarray(a).astype(dtype, copy=False)) for a in arrays)


class _Spied(Tracer):
    __slots__ = ()

    def __init__(self, trace, primal):
        self._init(trace, primal)


class SpyTrace(levels.Trace):
    """A trace that only records which primitives are bound (and with how many inputs)."""

    kind = "spy"

    def __init__(self):
        super().__init__()
        self.seen: dict[str, set] = {}

    def process(self, prim, args, params):
        vals = [a.primal if isinstance(a, _Spied) and a._trace is self else a for a in args]
        self.seen.setdefault(prim.name, set()).add(len(args))
        return _Spied(self, bind(prim, *vals, **params))

    def detached(self, x):
        return x.primal


def spy(f, args) -> dict:
    """``{primitive name: {number of inputs}}`` for every primitive ``f(*args)`` binds on its inputs."""
    with levels.new_level(SpyTrace) as trace:
        f(*[_Spied(trace, a) for a in args])
    return trace.seen


BUILTIN_KINDS = ("elementwise", "linear", "general", "nondiff")

_WALK = """
import gc, importlib, json, pkgutil, sys
import minidiff
from minidiff.primitives.registry import REGISTRY, Primitive, all_primitives
failed = {}
for mod in pkgutil.walk_packages(minidiff.__path__, "minidiff."):
    try:
        importlib.import_module(mod.name)
    except Exception as exc:  # reported: a module that cannot be imported hides its primitives
        failed[mod.name] = repr(exc)
exec(sys.argv[1])
registered = {id(p) for p in REGISTRY.values()}
found = {p.name: p.kind for p in gc.get_objects() if isinstance(p, Primitive)}
listed = {p.name: p.kind for p in all_primitives(user=True)}
print(json.dumps({"failed": failed, "found": found, "listed": listed}))
"""


@functools.cache
def walk_library(extra: str = "") -> dict:
    """Every :class:`Primitive` object alive after importing every module of the package, in a fresh
    interpreter (so no test-made primitive is counted): ``{"found": {name: kind}, "listed": {name:
    kind}, "failed": {module: error}}``.  Objects are found with the garbage collector, whatever holds
    them: the registry, a module attribute, a ``functools.partial``, a closure or a container;
    ``listed`` is what ``md.testing.all_primitives()`` (the registry walk users get) lists.  ``extra`` is code run after
    the imports (for the test of this walk)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(md.__file__).resolve().parent.parent)  # the minidiff under test, wherever it is
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", _WALK, extra], capture_output=True, text=True, check=True, timeout=300, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def library_primitives() -> dict:
    """``{name: primitive}`` of every primitive the library makes, registered or custom (``md.primitive``:
    DEER, the scan, the nn hooks...), found by :func:`walk_library`; the objects are this process's."""
    names = walk_library()["found"]
    listed = reversed(md.testing.all_primitives(user=True))  # reversed: the oldest of a name wins
    custom = {p.name: p for p in listed if p.kind == "custom" and p.name in names}
    return {name: REGISTRY.get(name) or custom.get(name) for name in names}


def builtin_primitives():
    """The registered primitives the library itself makes (from :func:`library_primitives`: no filter
    on module names, which a ``functools.partial`` impl would slip past)."""
    return {name: p for name, p in library_primitives().items() if name in REGISTRY and p.kind != "custom"}


from opspecs_linalg import LINALG_SPECS  # noqa: E402 - md.linalg's specs, kept in their own file

SPECS += LINALG_SPECS
DIFF_SPECS += [s for s in LINALG_SPECS if s.diff]
