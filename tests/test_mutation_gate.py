"""The mutation gate: every deliberate bug of the list below must be caught by drawn-input properties.

Each mutation changes one rule in memory (``md.testing.mutated``: always undone) and runs
``md.testing.check_mutation``, which draws inputs with Hypothesis and stops at the first failure:

* derivative mutations run the battery's derivative checks (adjoint identity, finite differences
  at first and second order, the three HVP modes) on the inputs that the op specs of
  ``tests/opspecs.py`` draw — the same strategies ``tests/test_primitives.py`` uses;
  this includes the specs that draw kinks where the convention equals the central difference
  (``abs_at_zero``, ``power_exponent_at_zero_base``);
* the other kink-convention mutations run forward- and reverse-mode Jacobians against the
  documented convention on tie-heavy drawn inputs (values from a small set holding the kinks), as
  the central difference there differs from the convention (relu'(0), clip at a bound, ties);
* mutations of ``affine_scan`` (DEER's scan, made with ``md.primitive``: ``jvp_fn``, and ``vjp_fn``
  giving one cotangent per input) run the derivative checks on the ``affine_scan`` spec.

The input that caught a mutation is run again with the real rule, and must pass.  The score table of
``docs/testing.md`` is generated from this list and checked by a test here; regenerate it with
``MINIDIFF_WRITE_DOCS=1 python -m pytest tests/test_mutation_gate.py``.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from opspecs import SPECS

import minidiff as md
from minidiff.deer.scan import _affine_scan_p, _transposed_scan
from minidiff.primitives import REGISTRY, pooling
from minidiff.primitives.matrix import _solve_rhs
from minidiff.primitives.shape import expand_axes
from minidiff.testing import Mutation, Tolerances, check_example, check_jacobian, check_mutation
from minidiff.testing.mutation import detached, negated, replaced, scaled, score_table

P = REGISTRY
SPEC = {s.name: s for s in SPECS}
DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
#: Hypothesis examples per mutation (the run stops at the first failure)
EXAMPLES = 30
SEED = 20240611
#: the transpose spec draws a non-involutive permutation (3 or more axes, cyclic) in few examples:
#: measured over 20 seeds, 30 examples missed the forward-permutation mutation in 7, 100 in 1, and
#: 200 in none (at most 97 were needed)
TRANSPOSE_EXAMPLES = 200


# ----------------------------------------------------------------------------- wrong rules
def _inside_open(x, lo, hi):
    m = 1.0
    if lo is not None:
        m = m * md.greater(x, lo)
    if hi is not None:
        m = m * md.less(x, hi)
    return m


def _max_ties_full(g, ans, x, axis, keepdims):
    """max's VJP with every tied element taking the whole derivative (1 each instead of 1/k)."""
    full = ans if keepdims else expand_axes(ans, axis)
    gk = g if keepdims else expand_axes(g, axis)
    return gk * md.astype(md.equal(x, full), x.dtype)


def _max_pool_ties_full(g, ans, x, kernel, stride):
    """max_pool2d's VJP with every tied element taking its window's whole derivative (1 instead of 1/k)."""
    hit = md.astype(md.equal(pooling.windows(x, kernel, stride), ans), x.dtype)
    return pooling.fold(hit * g, kernel, stride, x.shape[-2:])


def _fold_set(xp, c, kernel, stride, size):
    """pool2d_fold writing each window once (``=``) where overlapping windows must add (``+=``)."""
    out = xp.zeros(c.shape[1:-2] + tuple(size), dtype=c.dtype)
    for k, s in enumerate(pooling._subgrids(kernel, stride, tuple(size))):
        out[s] = c[k]
    return out


def _scatter_set(xp, g, index, shape):
    """getitem's transpose writing repeated indices once (``=``) instead of accumulating (``+=``)."""
    out = xp.zeros(shape, dtype=g.dtype)
    out[index] = g
    return out


def _cumsum_wrong_axis(g, ans, x, axis):
    other = (axis + 1) % g.ndim
    return md.flip(md.cumsum(md.flip(g, other), other), other)


def _power_dy_nan(g, ans, x, y):
    """d(x**y)/dy as x**y·log x, unguarded: NaN (0·−∞) at x = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return g * ans * md.log(x)


def _scan_dA_current_state(g, ans, A, b, y0, diagonal=False, method="auto"):
    """affine_scan's ∂A with y_i instead of y_{i-1} (an off-by-one step)."""
    lam = _transposed_scan(A, g, diagonal, method)
    return lam * ans if diagonal else lam[..., :, None] * ans[..., None, :]


def _scan_dy0_untransposed(g, ans, A, b, y0, diagonal=False, method="auto"):
    """affine_scan's ∂y0 as A_0·λ_0 instead of A_0ᵀ·λ_0 (the same for a diagonal A)."""
    lam = _transposed_scan(A, g, diagonal, method)
    if diagonal:
        return A[..., 0, :] * lam[..., 0, :]
    return md.matmul(A[..., 0, :, :], lam[..., 0, :, None])[..., 0]


def _pad_widths_swapped(g, ans, x, pad_width):
    return g[tuple(slice(hi, hi + d) for (lo, hi), d in zip(pad_width, x.shape))]


# ----------------------------------------------------------------------------- the list
@dataclass(frozen=True)
class Gate:
    mutation: Mutation
    spec: str | None = None  # op spec whose drawn inputs run the derivative checks
    kink: str | None = None  # or: the kink convention whose drawn inputs catch it
    examples: int = EXAMPLES

    @property
    def inputs(self) -> str:
        return f"spec `{self.spec}`" if self.spec else f"kinks `{self.kink}`"


def M(name, prim, rule, change, index=None, description="", spec=None, kink=None, examples=EXAMPLES):
    prim = P[prim] if isinstance(prim, str) else prim
    return Gate(Mutation(name, prim, rule, change, index, description), spec, kink, examples)


GATES = [
    # --- elementwise: one rule per input, shared by both modes, or one mode alone
    M("sin sign flip", "sin", "both", negated(), description="cos x → −cos x", spec="sin"),
    M("exp ×1.001", "exp", "both", scaled(1.001), description="derivative off by 1e-3", spec="exp"),
    M("tanh JVP ×1.001", "tanh", "jvp", scaled(1.001), description="forward mode only", spec="tanh"),
    M("log VJP ×1.001", "log", "vjp", scaled(1.001), description="reverse mode only", spec="log"),
    M("multiply ∂y ×1.001", "multiply", "both", scaled(1.001), 1, "second operand", spec="multiply"),
    M("divide ∂y sign flip", "divide", "both", negated(), 1, "−x/y² → x/y²", spec="divide"),
    M(
        "softplus σ(−x)",
        "softplus",
        "both",
        replaced(lambda g, ans, x: g * md.sigmoid(-x)),
        description="σ(x) → σ(−x)",
        spec="softplus",
    ),
    M(
        "sigmoid detached",
        "sigmoid",
        "both",
        detached(),
        description="rule on detached values: first order right, second wrong",
        spec="sigmoid",
    ),
    M("sqrt ×1.001", "sqrt", "both", scaled(1.001), description="derivative off by 1e-3", spec="sqrt"),
    M(
        "where branches swapped",
        "where",
        "both",
        replaced(lambda g, ans, c, x, y: md.where(c, 0.0, g)),
        1,
        "x's cotangent sent where y was chosen",
        spec="where",
    ),
    M("erf ×1.001", "erf", "both", scaled(1.001), description="derivative off by 1e-3", spec="erf"),
    M("arccos VJP sign flip", "arccos", "vjp", negated(), description="reverse mode only", spec="arccos"),
    M("cosh JVP ×1.001", "cosh", "jvp", scaled(1.001), description="forward mode only", spec="cosh"),
    M(
        "tan detached",
        "tan",
        "both",
        detached(),
        description="1 + tan² on a detached output: first order right, second wrong",
        spec="tan",
    ),
    M("arctan2 ∂x sign flip", "arctan2", "both", negated(), 1, "−y/(x²+y²) → y/(x²+y²)", spec="arctan2"),
    # --- kink conventions (documented in minidiff/primitives/elementwise.py)
    M(
        "relu'(0) = 1",
        "relu",
        "both",
        replaced(lambda g, ans, x: g * md.greater_equal(x, 0)),
        description="x > 0 → x ≥ 0",
        kink="relu",
    ),
    M(
        "abs'(0) = 1",
        "abs",
        "both",
        replaced(lambda g, ans, x: g * md.where(x >= 0, 1.0, -1.0)),
        description="sign(0) = 0 → 1",
        spec="abs_at_zero",
    ),
    M(
        "abs'(0) = −1",
        "abs",
        "both",
        replaced(lambda g, ans, x: g * md.where(x > 0, 1.0, -1.0)),
        description="sign(0) = 0 → −1",
        spec="abs_at_zero",
    ),
    M(
        "maximum ties 1/0",
        "maximum",
        "both",
        replaced(lambda g, ans, x, y: g * md.greater_equal(x, y), lambda g, ans, x, y: g * md.greater(y, x)),
        description="a tie goes wholly to x instead of ½/½",
        kink="maximum",
    ),
    M(
        "minimum ties 1/0",
        "minimum",
        "both",
        replaced(lambda g, ans, x, y: g * md.less_equal(x, y), lambda g, ans, x, y: g * md.less(y, x)),
        description="a tie goes wholly to x instead of ½/½",
        kink="minimum",
    ),
    M(
        "clip open interval",
        "clip",
        "both",
        replaced(lambda g, ans, x, lo, hi: g * _inside_open(x, lo, hi)),
        description="derivative 0 at the bounds instead of 1",
        kink="clip",
    ),
    M(
        "max ties all 1",
        "max",
        "vjp",
        replaced(_max_ties_full),
        description="each tied element takes the whole derivative",
        kink="max",
    ),
    M(
        "max_pool2d ties all 1",
        "max_pool2d",
        "vjp",
        replaced(_max_pool_ties_full),
        description="each tied element takes its window's whole derivative",
        kink="max_pool2d",
    ),
    M(
        "power ∂y NaN at x = 0",
        "power",
        "both",
        replaced(_power_dy_nan),
        1,
        "x^y·log x with log 0 = −∞: NaN instead of 0",
        spec="power_exponent_at_zero_base",
    ),
    M(
        "power ∂y ≠ 0 at x = 0",
        "power",
        "both",
        replaced(lambda g, ans, x, y: g * ans * md.log(md.where(x > 0, x, math.e))),
        1,
        "log 0 taken as 1: 0^0 gets ∂y = 1",
        kink="power",
    ),
    # --- linear ops: the transpose rule
    M(
        "transpose VJP forward permutation",
        "transpose",
        "vjp",
        replaced(lambda g, ans, x, axes: md.transpose(g, axes)),
        description="the permutation instead of its inverse",
        spec="transpose",
        examples=TRANSPOSE_EXAMPLES,
    ),
    M(
        "cumsum VJP missing transpose",
        "cumsum",
        "vjp",
        replaced(lambda g, ans, x, axis: md.cumsum(g, axis)),
        description="cumsum instead of the reversed cumsum",
        spec="cumsum",
    ),
    M(
        "cumsum VJP wrong axis",
        "cumsum",
        "vjp",
        replaced(_cumsum_wrong_axis),
        description="reversed cumsum along the next axis",
        spec="cumsum",
    ),
    M("sum VJP ×1.001", "sum", "vjp", scaled(1.001), description="transpose off by 1e-3", spec="sum"),
    M(
        "scatter sets instead of adding",
        "scatter",
        "impl",
        replaced(_scatter_set),
        description="repeated indices of getitem's transpose written once",
        spec="getitem_advanced",
    ),
    M(
        "pool2d_fold sets instead of adding",
        "pool2d_fold",
        "impl",
        replaced(_fold_set),
        description="overlapping windows' cotangents written once",
        spec="pool2d_fold",
    ),
    M(
        "pad VJP widths swapped",
        "pad",
        "vjp",
        replaced(_pad_widths_swapped),
        description="crop from the high side's width",
        spec="pad",
    ),
    M(
        "concatenate VJP ×1.001",
        "concatenate",
        "vjp",
        scaled(1.001),
        0,
        "first operand's part",
        spec="concatenate",
    ),
    # --- general ops: separate JVP and VJP rules
    M(
        "matmul ∂y JVP ×1.001",
        "matmul",
        "jvp",
        scaled(1.001),
        1,
        "forward mode, second operand",
        spec="matmul",
    ),
    M("matmul ∂x VJP sign flip", "matmul", "vjp", negated(), 0, "reverse mode, first operand", spec="matmul"),
    M("einsum VJP sign flip", "einsum", "vjp", negated(), 0, "first operand", spec="einsum"),
    M(
        "solve ∂b VJP missing transpose",
        "solve",
        "vjp",
        replaced(lambda g, ans, a, b: _solve_rhs(a, b.ndim == 1, g)),
        1,
        "solve with A instead of Aᵀ",
        spec="solve",
    ),
    M(
        "inv VJP missing transposes",
        "inv",
        "vjp",
        replaced(lambda g, ans, x: -md.matmul(ans, md.matmul(g, ans))),
        description="−A⁻¹ G A⁻¹ for −A⁻ᵀ G A⁻ᵀ",
        spec="inv",
    ),
    M(
        "det VJP missing transpose",
        "det",
        "vjp",
        replaced(lambda g, ans, x: md.expand_dims(g * ans, (-2, -1)) * md.linalg.inv(x)),
        description="det·A⁻¹ for det·A⁻ᵀ",
        spec="det",
    ),
    M("cholesky JVP ×1.001", "cholesky", "jvp", scaled(1.001), description="forward mode", spec="cholesky"),
    M(
        "logsumexp JVP detached",
        "logsumexp",
        "jvp",
        detached(),
        description="first order right, second wrong",
        spec="logsumexp",
    ),
    M("max VJP ×1.001", "max", "vjp", scaled(1.001), description="reverse mode", spec="max"),
    M(
        "max_pool2d JVP ×1.001",
        "max_pool2d",
        "jvp",
        scaled(1.001),
        description="forward mode",
        spec="max_pool2d",
    ),
    M(
        "prod detached",
        "prod",
        "both",
        detached(),
        description="first order right, second wrong",
        spec="prod",
    ),
    # --- a library primitive made with md.primitive: jvp_fn, and vjp_fn giving one cotangent per input
    M(
        "affine_scan JVP ×1.001",
        _affine_scan_p,
        "jvp",
        scaled(1.001),
        description="forward mode",
        spec="affine_scan",
    ),
    M(
        "affine_scan ∂A off by one step",
        _affine_scan_p,
        "vjp",
        replaced(_scan_dA_current_state),
        0,
        "λ_i·y_i instead of λ_i·y_{i−1}",
        spec="affine_scan",
    ),
    M(
        "affine_scan ∂y0 missing transpose",
        _affine_scan_p,
        "vjp",
        replaced(_scan_dy0_untransposed),
        2,
        "A_0·λ_0 instead of A_0ᵀ·λ_0",
        spec="affine_scan",
    ),
]


#: a primitive reached as another's transpose: its mutation is caught through that one's spec
TRANSPOSE_OF = {"scatter": "getitem"}


# ----------------------------------------------------------------------------- derivative properties
@st.composite
def spec_inputs(draw, spec):
    """What test_primitives draws for ``spec``: a case, its input values (some as non-contiguous
    views) and a seed for the directions."""
    case = draw(spec.case)
    arrays = case.draw_values(draw, contiguous=False)
    return case, arrays, draw(st.integers(0, 2**16))


def spec_tolerances(spec) -> Tolerances:
    fd = {f"fd_{k}": v for k, v in spec.fd.items()}
    agree = {f"{k}64": v for k, v in spec.agree.items()}
    return Tolerances(**fd, **agree)


def derivative_property(spec):
    tol = spec_tolerances(spec)

    def prop(example):
        case, arrays, seed = example
        check_example(
            case.f,
            arrays,
            checks=("adjoint", "finite_differences", "hvp"),
            order=spec.order,
            seed=seed,
            tolerances=tol,
        )

    return prop


# ----------------------------------------------------------------------------- kink conventions
#: values holding every kink of the table below: 0 (relu, abs, power's base), ±½ (clip's bounds),
#: and few enough distinct values that ties are frequent (maximum, minimum, max)
KINK_VALUES = [-1.0, -0.5, 0.0, 0.5, 1.0]


def _diag(d):
    d = np.asarray(d, dtype=float)
    return (np.eye(d.size) * d.reshape(-1)).reshape(d.shape + d.shape)


def _share(x, y):
    return np.where(x > y, 1.0, np.where(x == y, 0.5, 0.0))


def _max_jacobian(x):
    top = np.max(x, axis=-1, keepdims=True)
    share = (x == top) / np.sum(x == top, axis=-1, keepdims=True)
    jac = np.zeros((x.shape[0],) + x.shape)
    for i in range(x.shape[0]):
        jac[i, i] = share[i]
    return jac


def _pool_window(x):
    return (min(2, x.shape[0]), min(2, x.shape[1]))


def _max_pool_kink(x):
    """2×2 windows (narrower on a side of 1) at stride 1 over a 2-D input: overlapping and tie-heavy."""
    return md.nn.functional.max_pool2d(md.reshape(x, (1, 1) + x.shape), _pool_window(x), 1)


def _max_pool_jacobian(x):
    kh, kw = _pool_window(x)
    ho, wo = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    jac = np.zeros((1, 1, ho, wo) + x.shape)
    for i in range(ho):
        for j in range(wo):
            top = x[i : i + kh, j : j + kw] == x[i : i + kh, j : j + kw].max()
            jac[0, 0, i, j, i : i + kh, j : j + kw] = top / top.sum()
    return jac


def _power_dy(x, y):
    with np.errstate(divide="ignore", invalid="ignore"):
        return _diag(np.where(x > 0, x**y * np.log(np.where(x > 0, x, 1.0)), 0.0))


#: name: (f, [(argnums, expected Jacobian from the convention)], number of inputs, values per input)
KINKS = {
    "relu": (md.relu, [(0, lambda x: _diag(x > 0))], [KINK_VALUES]),
    "abs": (md.abs, [(0, lambda x: _diag(np.sign(x)))], [KINK_VALUES]),
    "clip": (
        lambda x: md.clip(x, -0.5, 0.5),
        [(0, lambda x: _diag((x >= -0.5) & (x <= 0.5)))],
        [KINK_VALUES],
    ),
    "maximum": (
        md.maximum,
        [(0, lambda x, y: _diag(_share(x, y))), (1, lambda x, y: _diag(_share(y, x)))],
        [KINK_VALUES] * 2,
    ),
    "minimum": (
        md.minimum,
        [(0, lambda x, y: _diag(_share(y, x))), (1, lambda x, y: _diag(_share(x, y)))],
        [KINK_VALUES] * 2,
    ),
    "max": (lambda x: md.max(x, axis=-1), [(0, _max_jacobian)], [KINK_VALUES]),
    "max_pool2d": (_max_pool_kink, [(0, _max_pool_jacobian)], [KINK_VALUES]),
    # x^y at x = 0: ∂y taken as 0 (bases include 0; exponents include 0, where 0^0 = 1)
    "power": (md.power, [(1, _power_dy)], [[0.0, 0.5, 1.0, 2.0], [0.0, 0.5, 1.0, 2.0, 3.0]]),
}


@st.composite
def kink_inputs(draw, name):
    _, _, values = KINKS[name]
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=4))
    return tuple(draw(hnp.arrays(np.float64, shape, elements=st.sampled_from(v))) for v in values)


def kink_property(name):
    f, jacobians, _ = KINKS[name]

    def prop(arrays):
        args = tuple(md.asarray(a) for a in arrays)
        for argnums, expected in jacobians:
            check_jacobian(f, args, expected(*arrays), argnums=argnums)

    return prop


def run_gate(gate: Gate):
    if gate.spec:
        spec = SPEC[gate.spec]
        prop, inputs = derivative_property(spec), spec_inputs(spec)
    else:
        prop, inputs = kink_property(gate.kink), kink_inputs(gate.kink)
    return check_mutation(gate.mutation, prop, inputs, max_examples=gate.examples, seed=SEED)


# ----------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def results():
    """Every mutation of the list run once (module-scoped: the tests below share the results)."""
    start = time.perf_counter()
    out = {g.mutation.name: run_gate(g) for g in GATES}
    out["__seconds__"] = time.perf_counter() - start
    return out


def test_the_list_names_each_mutation_once_and_each_input_source_exists():
    names = [g.mutation.name for g in GATES]
    assert len(names) == len(set(names))
    for g in GATES:
        assert (g.spec is None) != (g.kink is None), g.mutation.name
        assert g.spec is None or g.spec in SPEC, f"{g.mutation.name}: no op spec {g.spec!r}"
        prim = g.mutation.primitive.name
        bound = {TRANSPOSE_OF.get(prim, prim), prim}
        assert g.spec is None or bound & set(SPEC[g.spec].prims), g.mutation.name
        assert g.kink is None or g.kink in KINKS, g.mutation.name


def test_kink_properties_pass_on_the_real_rules():
    """The kink properties hold on the real rules, so a caught mutation is the mutation's doing."""
    from minidiff.testing.battery import run_hypothesis

    for name in KINKS:
        run_hypothesis(kink_property(name), kink_inputs(name), max_examples=10, seed=SEED, shrink=False)


@pytest.mark.parametrize("gate", GATES, ids=[g.mutation.name for g in GATES])
def test_mutation_is_caught_by_drawn_inputs(gate, results):
    r = results[gate.mutation.name]
    assert r.caught, f"mutation {gate.mutation.name!r} survived {r.examples} drawn examples of {gate.inputs}"
    assert r.failing_input is not None


def test_the_named_survivors_are_in_the_list():
    """The two bugs that once survived every test file are caught now."""
    names = {g.mutation.name for g in GATES}
    assert {"transpose VJP forward permutation", "power ∂y NaN at x = 0"} <= names


def _rules():
    return {
        n: (p.impl, getattr(p, "jvp_rules", None), getattr(p, "vjp_rules", None), p.reads)
        for n, p in REGISTRY.items()
    }


BEFORE = _rules()


def test_rules_are_restored_after_the_gate(results):
    assert _rules() == BEFORE
    md.testing.check_grads(md.sin, (md.tensor([0.3, -1.1]),))


def gate_table(results) -> str:
    return score_table([results[g.mutation.name] for g in GATES], [g.inputs for g in GATES])


BEGIN, END = "<!-- mutation-table: begin -->", "<!-- mutation-table: end -->"


def test_score_table_in_docs_is_current(results):
    """docs/testing.md shows the table generated from this list; 100% caught."""
    table = gate_table(results)
    assert "(100%)" in table
    text = DOC.read_text(encoding="utf-8")
    block = re.compile(re.escape(BEGIN) + r"\n(?:.*?\n)?" + re.escape(END), re.S)
    assert block.search(text), f"{DOC.name} lacks the {BEGIN} ... {END} block"
    new = block.sub(lambda _: f"{BEGIN}\n{table}\n{END}", text)
    if os.environ.get("MINIDIFF_WRITE_DOCS") and new != text:
        DOC.write_text(new, encoding="utf-8")
        text = new
    assert new == text, "docs/testing.md: the mutation table is stale; rerun with MINIDIFF_WRITE_DOCS=1"
