"""The primitive registry: every primitive has its rules, every primitive has an op spec, and the
property harness catches a wrong rule ("test the tester").

* Walk every primitive object of the library — registered ones and custom ones made with
  ``md.primitive`` (DEER, the scan, the nn hooks) — found by importing every module in a fresh
  interpreter and asking the garbage collector (``opspecs.walk_library``: no filter on module names,
  nothing a ``functools.partial`` or a closure could hide): a primitive that is not ``nondiff`` must
  have the JVP and VJP rules its kind calls for (one per input, or one ``argnum=`` rule if variadic),
  every registered primitive a batching rule.
* ``prim.reads`` (what the tape keeps for the VJP rules, as declared) must stay within what the rules sensibly
  need: nothing for a linear op, the output and/or the inputs the derivative reads otherwise.
* A spy trace runs every op spec of ``tests/opspecs.py`` and records the primitives it binds: every
  spec binds what it claims, and every library primitive is bound by some spec, or is listed in
  ``EXEMPT`` with its reason.
* Meta-tests: a rule perturbed by a factor 1.001 makes ``check_grads`` fail at first order; a rule
  perturbed so that only the *second* derivative is wrong passes ``order=1`` and fails ``order=2``.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opspecs import (
    BUILTIN_KINDS,
    DIFF_SPECS,
    SPECS,
    builtin_primitives,
    hyp_settings,
    library_primitives,
    spy,
    tensors,
    walk_library,
)

import minidiff as md
from minidiff.primitives import REGISTRY

PRIMS = builtin_primitives()
DIFF_PRIMS = sorted(n for n, p in PRIMS.items() if p.kind != "nondiff")
LIBRARY = library_primitives()  # registered and custom
CUSTOM = sorted(n for n, p in LIBRARY.items() if n not in PRIMS)

#: Library primitives that no op spec needs to bind, each with the reason (checked below).
EXEMPT: dict[str, str] = {}

#: elementwise inputs that carry no derivative (their rule is None): the condition of ``where``
NONDIFF_INPUTS = {"where": {0}}


# ----------------------------------------------------------------------------- spying on the specs
@pytest.fixture(scope="module")
def bound():
    """``{spec name: {primitive: {number of inputs}}}`` over a few drawn examples of every spec."""
    seen: dict[str, dict[str, set]] = {}

    def runner(spec, rec):
        @hyp_settings(8)
        @given(data=st.data())
        def run(data):
            case = data.draw(spec.case)
            args = tensors(case.draw_values(data.draw))
            for name, arities in spy(case.f, args).items():
                rec.setdefault(name, set()).update(arities)

        return run

    for spec in SPECS:
        runner(spec, seen.setdefault(spec.name, {}))()
    return seen


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_each_spec_binds_the_primitives_it_claims(spec, bound):
    missing = set(spec.prims) - set(bound[spec.name])
    assert not missing, f"spec {spec.name!r} claims {sorted(missing)} but never binds them"


def test_every_library_primitive_is_bound_by_a_spec(bound):
    """Registered and custom primitives alike: each is bound by an op spec (a differentiable one if it
    is differentiable), or exempt with a stated reason."""
    everything = set().union(*(set(b) for b in bound.values()))
    diff = set().union(*(set(bound[s.name]) for s in DIFF_SPECS))
    unbound = sorted(set(LIBRARY) - everything - set(EXEMPT))
    assert not unbound, f"library primitives no op spec binds (add a spec to tests/opspecs.py): {unbound}"
    lacking = sorted(n for n, p in LIBRARY.items() if p.kind != "nondiff" and n not in diff | set(EXEMPT))
    assert not lacking, f"differentiable primitives no differentiable spec binds: {lacking}"
    for name, reason in EXEMPT.items():
        assert name in LIBRARY, f"EXEMPT names {name!r}, which the library no longer makes"
        assert name not in everything, f"{name!r} is exempt but a spec binds it: drop the exemption"
        assert len(reason.split()) >= 4, f"EXEMPT[{name!r}] needs a reason, got {reason!r}"


def test_the_walk_finds_custom_primitives_and_those_hidden_in_partials_or_closures():
    """Nothing the library makes escapes the walk: the custom DEER/scan/hook primitives are found, and
    so would be a primitive held only by a ``functools.partial`` or a closure, whatever its module."""
    assert walk_library()["failed"] == {}, f"modules that fail to import: {walk_library()['failed']}"
    assert {"deer_rnn", "deer_odeint", "affine_scan", "nn.backward_hook"} <= set(CUSTOM), CUSTOM
    assert set(PRIMS) <= set(LIBRARY) and {"add", "matmul", "getitem"} <= set(PRIMS)
    hidden = (
        "import functools\n"
        "from minidiff.primitives.custom import primitive\n"
        "from minidiff.primitives.registry import Primitive\n"
        "held = functools.partial(primitive(lambda x: x, name='in_a_partial'))\n"
        "def _maker():\n"
        "    p = Primitive('in_a_closure', functools.partial(lambda xp, x: x), 'linear', register=False)\n"
        "    return lambda x: p(x)\n"
        "closure = _maker()\n"
    )
    found = walk_library(hidden)["found"]
    assert {"in_a_partial", "in_a_closure"} <= set(found), sorted(found)


def test_all_primitives_lists_every_primitive_the_walk_finds_user_ones_included():
    """``md.testing.all_primitives()`` — the walk users get — lists exactly what the garbage collector
    finds, custom (``md.primitive``) ones included, and ``user=False`` only the registered ones."""
    walk = walk_library()
    assert walk["listed"] == walk["found"], sorted(set(walk["listed"]) ^ set(walk["found"]))
    hidden = walk_library(
        "import functools\nfrom minidiff.primitives.custom import primitive\n"
        "held = functools.partial(primitive(lambda x: x, name='in_a_partial'))\n"
    )
    assert hidden["listed"]["in_a_partial"] == "custom"
    builtin = {p.name for p in md.testing.all_primitives(user=False)}
    assert builtin == set(REGISTRY) and not builtin & set(CUSTOM)
    assert set(CUSTOM) <= {p.name for p in md.testing.all_primitives()}


@pytest.mark.parametrize("name", CUSTOM)
def test_every_custom_primitive_has_both_rules(name):
    """A library primitive made with ``md.primitive`` must define its JVP and its VJP rule."""
    prim = LIBRARY[name]
    assert prim is not None and prim.kind == "custom", f"{name}: not found in this process"
    assert callable(prim.jvp_fn), f"{name}: no JVP rule (defjvp)"
    assert callable(prim.vjp_fn), f"{name}: no VJP rule (defvjp)"
    assert callable(prim.fn), f"{name}: no forward function"


def _arity(name, bound):
    arities = set().union(*(b.get(name, set()) for b in bound.values()))
    assert len(arities) == 1 or PRIMS[name].variadic, f"{name} bound with {sorted(arities)} inputs"
    return min(arities)


# ----------------------------------------------------------------------------- rules
def _positional(rule):
    sig = inspect.signature(rule)
    names = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    return len(names), varargs


def _check_rule_table(prim, what, rules, n_inputs):
    if prim.variadic:
        assert callable(rules), f"{prim.name}: a variadic primitive needs one {what} rule taking argnum="
        assert "argnum" in inspect.signature(rules).parameters, f"{prim.name}: {what} rule lacks argnum="
        return
    assert isinstance(rules, tuple), f"{prim.name}: {what} rules must be a tuple, one per input"
    assert len(rules) == n_inputs, f"{prim.name}: {len(rules)} {what} rules for {n_inputs} inputs"
    for i, rule in enumerate(rules):
        if i in NONDIFF_INPUTS.get(prim.name, ()):
            assert rule is None, f"{prim.name}: input {i} is not differentiable, its rule should be None"
            continue
        assert callable(rule), f"{prim.name}: no {what} rule for input {i}"
        n, varargs = _positional(rule)
        assert varargs or n >= 2 + n_inputs, f"{prim.name}: {what} rule {i} cannot take (g, ans, *inputs)"


@pytest.mark.parametrize("name", sorted(PRIMS))
def test_every_primitive_has_the_rules_of_its_kind(name, bound):
    prim = REGISTRY[name]
    assert prim.kind in BUILTIN_KINDS, f"{name}: unknown kind {prim.kind!r}"
    assert callable(prim.batch), f"{name}: no batching rule (vmap, jacfwd and jacrev need one)"
    assert callable(prim.impl), f"{name}: no implementation"
    if prim.kind == "nondiff":
        assert not prim.differentiable and not hasattr(prim, "vjp_rules"), f"{name}: rules would be ignored"
        return
    n = _arity(name, bound)
    if prim.kind == "elementwise":  # one derivative rule per input, shared by both modes
        assert prim.jvp_rules is prim.vjp_rules, f"{name}: elementwise rules are shared by JVP and VJP"
        _check_rule_table(prim, "derivative", prim.vjp_rules, n)
    elif prim.kind == "linear":  # the JVP is the op itself; the VJP is the transpose
        _check_rule_table(prim, "transpose", prim.vjp_rules, n)
    else:
        _check_rule_table(prim, "JVP", prim.jvp_rules, n)
        _check_rule_table(prim, "VJP", prim.vjp_rules, n)


def test_nondiff_primitives_carry_no_derivative():
    x = md.tensor([0.5, -1.0, 2.0])
    for f in (md.sign, md.floor, lambda z: z > 0, lambda z: md.argmax(z)):
        out, back = md.vjp(lambda z, f=f: md.sum(md.astype(f(z), "float64") * z), x)
        (g,) = back(md.tensor(1.0))
        want = md.astype(f(x), "float64").numpy() * np.ones(3)
        assert np.allclose(g.numpy(), want), f  # only the explicit factor z is differentiated


# ----------------------------------------------------------------------------- what the tape saves
A = "ans"
#: For each differentiable primitive, the most its VJP rules may keep on the tape: input positions
#: whose values they read, and/or the output.  Linear ops need no values at all (shapes are kept).
SENSIBLE_SAVES = {
    "add": set(),
    "subtract": set(),
    "negative": set(),
    "astype": set(),
    "multiply": {0, 1},
    "divide": {0, 1, A},
    "power": {0, 1, A},
    "maximum": {0, 1, A},
    "minimum": {0, 1, A},
    "exp": {0, A},
    "log": {0},
    "log1p": {0},
    "expm1": {0, A},
    "sqrt": {0, A},
    "square": {0},
    "abs": {0},
    "sin": {0},
    "cos": {0},
    "tanh": {0, A},
    "tan": {A},
    "arcsin": {0},
    "arccos": {0},
    "arctan": {0},
    "arctan2": {0, 1},
    "sinh": {0},
    "cosh": {0},
    "erf": {0},
    "sigmoid": {0, A},
    "relu": {0, A},
    "softplus": {0},
    "clip": {0},
    "where": {0},  # only the condition: the branches' values are not needed
    "matmul": {0, 1},
    "conv2d": {0, 1},  # each bilinear convolution map reads the other factor
    "conv2d_transpose": {0, 1},
    "conv2d_weight_grad": {0, 1},
    "einsum": {"*"},
    "solve": {0, A},
    "inv": {A},
    "det": {0, A},
    "cholesky": {A},
    # decompositions (md.linalg): the factorization, or the input when the rule refactorizes
    "eigh": {A},  # eigenvalues and eigenvectors
    "eigvalsh": {0},  # only the eigenvalues are output: the rule needs the eigenvectors again
    "svd": {A},
    "svdvals": {0},
    "qr": {A},
    "slogdet": {0},  # the rules invert the input; the output (log|det|) is not read
    "solve_triangular": {0, A},  # the triangular factor and the solution
    "solve_banded": {0, A},  # the band and the solution
    "max": {0, A},
    "logsumexp": {0, A},
    "min": {0, A},
    "prod": {0},
    "max_pool2d": {0, A},  # the shares of tied maxima are recomputed from the input and the output
    # linear: shapes only
    **{
        n: set()
        for n in (
            "reshape",
            "broadcast_to",
            "transpose",
            "sum",
            "cumsum",
            "getitem",
            "scatter",
            "pad",
            "concatenate",
            "stack",
            "to_device",
            "pool2d_sum",
            "pool2d_windows",
            "pool2d_fold",
        )
    },
}


@pytest.mark.parametrize("name", DIFF_PRIMS)
def test_saves_stay_within_what_the_rules_need(name, bound):
    """Among the primitive's real inputs (and its output), the tape keeps only what the table allows."""
    assert name in SENSIBLE_SAVES, f"add {name!r} to SENSIBLE_SAVES: what may its VJP rules keep?"
    prim = REGISTRY[name]
    n = _arity(name, bound)
    real = {s for s in _all_reads(prim) if s in (A, "*") or s < n}
    extra = real - SENSIBLE_SAVES[name]
    assert not extra, f"{name} keeps {sorted(map(str, extra))} on the tape; its rules need at most " + str(
        sorted(map(str, SENSIBLE_SAVES[name]))
    )


def _all_reads(prim) -> frozenset:
    """Everything the VJP rules of ``prim`` declare they read, over all inputs."""
    reads = prim.reads
    return reads if isinstance(reads, frozenset) else frozenset().union(*reads)


def test_saves_of_the_tape_match_what_is_recorded():
    """The bytes the tape keeps per op follow ``saves``: exp keeps its output, sin its input,
    add and reshape nothing."""
    x = md.ones(100, requires_grad=True)
    stats = md.tape_stats(md.sum(md.reshape(md.exp(md.sin(x)) + x, (10, 10))))
    assert stats["exp"]["bytes"] == 800 and stats["sin"]["bytes"] == 800
    assert stats["add"]["bytes"] == 0 and stats["reshape"]["bytes"] == 0 and stats["sum"]["bytes"] == 0


def _reverse_grads(f, args):
    """The gradient of ``sum(f(*args) * w)`` for each input on its own, then for all inputs at once
    (what the tape saves depends on which inputs are being differentiated)."""
    out = f(*args)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    weights = [md.tensor(np.linspace(0.5, 1.5, o.size).reshape(o.shape)) for o in outs]

    def loss(*a):
        res = f(*a)
        res = res if isinstance(res, (tuple, list)) else (res,)
        return sum(md.sum(r * w) for r, w in zip(res, weights))

    nums = list(range(len(args)))
    return [md.grad(loss, argnums=(i,))(*args)[0].numpy() for i in nums] + [
        g.numpy() for g in md.grad(loss, argnums=tuple(nums))(*args)
    ]


@pytest.mark.parametrize("spec", DIFF_SPECS, ids=lambda s: s.name)
def test_declared_reads_suffice(spec, monkeypatch):
    """Each rule runs with only what its primitive declares in ``reads=`` (the rest are shape-only
    stubs that raise when read) and gives the same cotangents as with every value kept."""

    @hyp_settings(6)
    @given(data=st.data())
    def run(data):
        case = data.draw(spec.case)
        args = tensors(case.draw_values(data.draw))
        declared = _reverse_grads(case.f, args)  # a rule reading an undeclared value raises TapeError
        with monkeypatch.context() as m:
            for prim in REGISTRY.values():
                m.setattr(prim, "reads", frozenset({A, "*"}))
            kept = _reverse_grads(case.f, args)
        for a, b in zip(declared, kept):
            np.testing.assert_array_equal(a, b)

    run()


@pytest.mark.parametrize(
    "name, reads", [("multiply", (frozenset(), frozenset({0}))), ("exp", (frozenset(),))]
)
def test_meta_an_insufficient_declaration_is_caught(name, reads, monkeypatch):
    """Test the tester: drop one declared read and the property above fails on its drawn inputs."""
    spec = next(s for s in DIFF_SPECS if s.name == name)
    monkeypatch.setattr(REGISTRY[name], "reads", reads)
    what = "input 1" if name == "multiply" else "the output"
    with pytest.raises(md.TapeError, match=f"{name}: its VJP rule read the value of {what}"):
        test_declared_reads_suffice(spec, monkeypatch)


#: Bytes the tape keeps per primitive for one loss of the paper's MLP and CNN (float32, batch 8), as
#: the rules declare them.  Before declarations (when the saves were read off the rules' bytecode) the
#: MLP kept 7,603,040 bytes: matmul also kept W.T for W's own gradient, which only needs its shape.
#: Before the conv2d primitive the CNN's convolutions were im2col + matmul, and the tape kept the
#: unfolded columns (matmul: 18,544,768 bytes); the primitive keeps its input and weights instead.
TAPE_BYTES = {
    "mlp": {"matmul": 4_325_888, "relu": 65_536, "logsumexp": 352},
    "cnn": {
        "conv2d": 2_056_704,
        "matmul": 4_268_032,
        "relu": 2_932_736,
        "max_pool2d": 1_638_400,
        "logsumexp": 352,
    },
}


@pytest.mark.parametrize("name", sorted(TAPE_BYTES))
def test_tape_bytes_of_the_models_stay_at_the_declared_figure(name):
    model = md.nn.models.build(name, seed=0).requires_grad_()
    x = md.random.normal((8, 1, 28, 28) if name == "cnn" else (8, 784), rng=0, dtype="float32")
    loss = md.nn.functional.cross_entropy(model(x), md.tensor(list(range(8))))
    kept = {k: v["bytes"] for k, v in md.tape_stats(loss).items() if v["bytes"]}
    assert kept == TAPE_BYTES[name]


def test_a_declaration_names_the_rules_own_parameters():
    with pytest.raises(TypeError, match="reads='ans z'.*'z'.*not the output or an input"):
        md.primitives.registry.declared_reads("demo", lambda g, ans, x: g * ans, "ans z")
    assert md.primitives.registry.declared_reads("demo", lambda g, ans, x, y: g, "y ans") == {1, A}
    assert md.primitives.registry.declared_reads("demo", lambda g, ans, *xs, argnum: g, "xs") == {"*"}


def test_a_bad_declaration_fails_at_definition_and_registers_nothing():
    impl = lambda xp, x, y: xp.add(x, y)  # noqa: E731
    rule = lambda g, ans, x, y: g  # noqa: E731
    with pytest.raises(TypeError, match="'demo_bad': 1 reads= declarations for 2 rules"):
        md.primitives.registry.elementwise("demo_bad", impl, rule, rule, reads=("x",))
    with pytest.raises(TypeError, match="'demo_bad': reads='z' names 'z'"):
        md.primitives.registry.elementwise("demo_bad", impl, rule, rule, reads="z")
    assert "demo_bad" not in REGISTRY


def test_a_rule_reading_an_undeclared_value_fails_loudly():
    """A VJP rule that reads an input it did not declare raises, naming the primitive and the input,
    instead of the tape silently keeping (or losing) memory."""

    @md.primitive
    def twice(x):
        return 2 * x * x

    twice.defjvp(lambda primals, tangents: 4 * primals[0] * tangents[0])
    twice.defvjp(lambda cotangent, output, x: (4 * x * cotangent,), reads="output")
    x = md.tensor([1.0, 2.0])
    with pytest.raises(md.TapeError, match=r"twice: its VJP rule read the value of input 0 .*reads="):
        md.grad(lambda z: md.sum(twice(z)))(x)
    twice.defvjp(lambda cotangent, output, x: (4 * x * cotangent,), reads="x")
    np.testing.assert_allclose(md.grad(lambda z: md.sum(twice(z)))(x).numpy(), [4.0, 8.0], rtol=1e-15)


def test_no_bytecode_reading_and_no_kind_branches_in_the_core():
    """What the tape saves is declared (no ``dis``), and the traces call the rule shape only."""
    import pathlib

    root = pathlib.Path(md.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "import dis" not in text and "from dis" not in text, f"{path} reads bytecode"
    for name in ("primitives/registry.py", "modes/forward.py", "modes/reverse.py", "modes/batching.py"):
        text = (root / name).read_text()
        assert "prim.kind" not in text and '== "custom"' not in text, f"{name} branches on a primitive's kind"


@pytest.mark.parametrize("name", ["reshape", "sum", "clip", "max", "pad"])
def test_saves_name_only_real_inputs(name, bound):
    prim = REGISTRY[name]
    n = _arity(name, bound)
    bogus = {s for s in _all_reads(prim) if s not in (A, "*") and s >= n}
    assert not bogus, f"{name}: saves names positions {sorted(bogus)} but takes {n} input(s)"


# ----------------------------------------------------------------------------- test the tester
def _scaled(rule, factor=1.001):
    def perturbed(*args, **kwargs):
        return rule(*args, **kwargs) * factor

    perturbed.__signature__ = inspect.signature(rule)
    return perturbed


def _perturb(monkeypatch, name, which, index=None, factor=1.001):
    """Scale rule ``index`` (every rule if None) of ``REGISTRY[name]`` by ``factor``; ``which``:
    "jvp", "vjp" or "both".

    For an elementwise primitive one rule serves both modes: ``which="both"`` perturbs that shared
    rule; "jvp"/"vjp" give the two modes different rules.  Monkeypatch restores the registry.
    """
    prim = REGISTRY[name]
    for mode in ("jvp", "vjp") if which == "both" else (which,):
        attr = f"{mode}_rules"
        rules = getattr(prim, attr)
        if prim.variadic:
            monkeypatch.setattr(prim, attr, _scaled(rules, factor))
        else:
            new = tuple(
                _scaled(r, factor) if r is not None and index in (None, i) else r for i, r in enumerate(rules)
            )
            monkeypatch.setattr(prim, attr, new)


X = np.array([[0.3, -1.2, 0.7], [1.1, 0.4, -0.5]])
Y = np.array([[0.9, 0.2, -0.6], [0.5, -1.3, 0.8]])
SPD = X @ X.T + 2 * np.eye(2)

#: (primitive, which rule, rule index, function, arguments, modes that must catch it)
FIRST_ORDER = [
    ("sin", "both", 0, md.sin, (X,), ("fwd", "rev")),
    ("sin", "jvp", 0, md.sin, (X,), ("fwd",)),
    ("sin", "vjp", 0, md.sin, (X,), ("rev",)),
    ("multiply", "both", 1, md.multiply, (X, Y), ("fwd", "rev")),
    ("maximum", "vjp", 0, md.maximum, (X, Y), ("rev",)),
    ("sum", "vjp", 0, lambda x: md.sum(x, axis=1), (X,), ("rev",)),
    ("getitem", "vjp", 0, lambda x: x[:, [2, 0, 2]], (X,), ("rev",)),
    ("matmul", "jvp", 1, md.matmul, (X, Y.T), ("fwd",)),
    ("matmul", "vjp", 0, md.matmul, (X, Y.T), ("rev",)),
    ("einsum", "vjp", 0, lambda a, b: md.einsum("ij,kj->ik", a, b), (X, Y), ("rev",)),
    ("cholesky", "jvp", 0, md.linalg.cholesky, (SPD,), ("fwd",)),
    ("max", "vjp", 0, lambda x: md.max(x, axis=0), (X,), ("rev",)),
]


@pytest.mark.parametrize(
    "name, which, index, f, args, modes", FIRST_ORDER, ids=[f"{c[0]}-{c[1]}{c[2]}" for c in FIRST_ORDER]
)
def test_meta_a_rule_off_by_1e3_is_caught_at_first_order(monkeypatch, name, which, index, f, args, modes):
    args = tensors(args)
    md.testing.check_grads(f, args, order=1)  # the real rules pass
    _perturb(monkeypatch, name, which, index)
    for mode_set in [("fwd", "rev"), *[(m,) for m in modes]]:
        with pytest.raises(AssertionError):
            md.testing.check_grads(f, args, order=1, modes=mode_set)
    monkeypatch.undo()
    md.testing.check_grads(f, args, order=1)  # and the registry is restored


#: (perturbed primitive, function whose *second* derivative goes through it, arguments)
SECOND_ORDER = [
    ("cos", md.sin, (X,)),  # sin' = cos: a wrong cos rule only breaks sin''
    ("sin", md.cos, (X,)),
    ("sigmoid", md.softplus, (X,)),  # softplus' = sigmoid
    ("inv", md.linalg.det, (SPD,)),  # det's rules are written with inv
    ("multiply", md.exp, (X,)),  # exp' = g · ans: the product's rule appears one order up
]


@pytest.mark.parametrize("name, f, args", SECOND_ORDER, ids=[c[0] for c in SECOND_ORDER])
def test_meta_a_rule_only_wrong_one_order_up_is_caught_at_second_order(monkeypatch, name, f, args):
    args = tensors(args)
    md.testing.check_grads(f, args, order=2)
    prim = REGISTRY[name]
    _perturb(monkeypatch, name, "both" if prim.kind == "elementwise" else "jvp")
    if prim.kind != "elementwise":
        _perturb(monkeypatch, name, "vjp")
    md.testing.check_grads(f, args, order=1)  # first derivatives are still right...
    with pytest.raises(AssertionError):
        md.testing.check_grads(f, args, order=2)  # ...the second ones are not
    for modes in [("fwd",), ("rev",)]:  # each mode on its own catches it too
        with pytest.raises(AssertionError):
            md.testing.check_grads(f, args, order=2, modes=modes)


def test_meta_hvp_modes_disagree_when_a_vjp_rule_is_off(monkeypatch):
    """With sin's VJP rule off by 1e-3 (its JVP rule right), the three HVP modes use the wrong rule in
    different places and stop agreeing, beyond the tolerance of the HVP property test."""
    x, v = md.tensor(X), md.tensor(Y)

    def s(z):
        return md.sum(md.sin(z) * z)

    def all_modes():
        return [md.hvp(s, (x,), (v,), mode=m)[0].numpy() for m in md.transforms.HVP_MODES]

    def spread(hs):
        return max(float(np.max(np.abs(a - b))) for a in hs for b in hs)

    assert spread(all_modes()) < 1e-12
    _perturb(monkeypatch, "sin", "vjp")
    assert spread(all_modes()) > 1e-4


def test_meta_perturbations_are_undone(monkeypatch):
    before = {n: _rules_of(p) for n, p in REGISTRY.items()}
    _perturb(monkeypatch, "sin", "both")
    assert REGISTRY["sin"].jvp_rules != before["sin"][0]
    monkeypatch.undo()
    assert {n: _rules_of(p) for n, p in REGISTRY.items()} == before


def _rules_of(prim):
    return getattr(prim, "jvp_rules", None), getattr(prim, "vjp_rules", None)
