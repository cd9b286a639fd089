"""Random generators (issue 8 §3): every ``rng=`` / ``seed=`` argument of the package accepts an int seed,
a ``md.random.Generator``, a ``numpy.random.Generator`` and None, through one helper
(:func:`minidiff.primitives.random.as_generator`).

The functions are found by walking every module of ``minidiff`` for public callables with a parameter
named in :data:`RNG_PARAMS`; each needs an entry in :data:`CALLS` (how to call it) or in :data:`EXEMPT`
(why not), so a new function cannot slip past.  For each one and each such parameter:

* the same int seed gives the same result, and another seed a different one (the argument is used);
* a ``md.random.Generator`` and a ``numpy.random.Generator`` seeded alike give the same result as the
  int (on the CPU all three are the same stream), and the NumPy generator's state advances;
* None works, and follows ``md.random.seed``;
* a string, a float, a bool or a list raises a ``TypeError`` naming the function and the type.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib
import inspect
import pkgutil
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import minidiff as md
from minidiff import backend, curvature, data, nn
from minidiff import random as mdrandom
from minidiff.bench import deer_ode_bench, training
from minidiff.deer import cells
from minidiff.errors import DeviceError
from minidiff.nn import functional as F
from minidiff.optim import adahessian, fgd, kfac, natural_gradient, sophia

rfrb = importlib.import_module("minidiff.bench.rfrb")  # (minidiff.bench.rfrb is also a function's name)

#: Parameter names that take a random generator or a seed.
RNG_PARAMS = ("rng", "seed", "generator", "random_state")


# ----------------------------------------------------------------------------- discovery
def _members(mod) -> list[tuple[str, object]]:
    """Public callables defined in ``mod`` (classes with their public methods; partials by their name)."""
    out = []
    for name, obj in sorted(vars(mod).items()):
        if name.startswith("_"):
            continue
        target = obj.func if isinstance(obj, functools.partial) else obj
        if not callable(obj) or getattr(target, "__module__", None) != mod.__name__:
            continue
        out.append((name, obj))
        if inspect.isclass(obj):
            out += [(f"{name}.{k}", v) for k, v in vars(obj).items() if not k.startswith("_") and callable(v)]
    return out


def discover() -> dict[str, tuple[str, ...]]:
    """``"module.name" -> (rng-like parameter names)`` for every public callable of the package."""
    found = {}
    for info in pkgutil.walk_packages(md.__path__, "minidiff."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        for name, obj in _members(mod):
            try:
                sig = inspect.signature(obj)
            except (TypeError, ValueError):
                continue
            names = tuple(p for p in sig.parameters if p in RNG_PARAMS)
            if names:
                found[f"{mod.__name__}.{name}"] = names
    return found


# ----------------------------------------------------------------------------- small problems
def _w():
    return {"w": md.tensor([1.0, -2.0, 0.5]), "b": md.tensor([[0.3, 0.1], [-0.4, 0.2]])}


def _quad(p):
    return (p["w"] ** 2).sum() + (p["b"] ** 3).sum()


_A = np.array([[2.0, 0.7, 0.1], [0.7, 1.0, -0.3], [0.1, -0.3, 3.0]])  # not diagonal: probes matter


def _coupled(ps):
    w = ps[0]
    return (w @ md.tensor(_A) @ w) * 0.5 + (w**4).sum()


def _leaf():
    return md.tensor([0.4, -1.1, 0.8], requires_grad=True)


_X = np.random.default_rng(100).normal(size=(16, 3))
_Y = np.random.default_rng(101).integers(0, 3, 16)
_LOGITS = md.tensor(np.random.default_rng(102).normal(size=(16, 3)))


def _model_fn(p):
    return md.tensor(_X) @ p


def _theta():
    return md.tensor(np.random.default_rng(103).normal(size=(3, 3)))


def _tape_step(make, closure_of, steps: int = 1):
    w = _leaf()
    opt = make([w])
    for _ in range(steps):
        opt.step(closure_of(w))
    return w.detach()


def _kfac(**kw):
    model = nn.models.logreg(3, 3, dtype="float64", seed=2).requires_grad_()
    opt = kfac.KFAC(model, lr=0.1, **kw)
    x, y = md.tensor(_X), md.tensor(_Y)
    opt.step(lambda: (F.cross_entropy(model(x), y), model(x)))
    return opt.sampled_labels, model[0].weight.detach()


def _natural_gradient(**kw):
    """One natural-gradient step with the Fisher of sampled labels (the draws the seed controls)."""
    w = md.tensor(np.linspace(-0.4, 0.4, 9).reshape(3, 3), requires_grad=True)
    x, y = md.tensor(_X), md.tensor(_Y)
    opt = natural_gradient.NaturalGradient([w], lr=0.1, fisher="sampled", **kw)
    opt.step((lambda ps: x @ ps[0], lambda z: F.cross_entropy(z, y)))
    return w.detach()


def _digits():
    return md.tensor(_X), md.tensor(_Y)


# ----------------------------------------------------------------------------- the table
@dataclass
class Call:
    """How to call one function: ``run(**{param: value})`` returns what to compare."""

    run: Callable
    op: str  # the name its errors carry
    varies: bool = True  # another seed gives another result (False: the draws do not change it)
    draws: bool = True  # it draws at all (False: the argument is checked, never drawn from)
    none_is_default: bool = True  # None means the module's default generator (else: fresh entropy)


CALLS: dict[str, Call] = {
    # random
    "minidiff.primitives.random.Generator": Call(
        lambda **kw: mdrandom.Generator(**kw).normal((4,)), "Generator", none_is_default=False
    ),
    "minidiff.primitives.random.normal": Call(lambda **kw: mdrandom.normal((4,), **kw), "normal"),
    "minidiff.primitives.random.uniform": Call(
        lambda **kw: mdrandom.uniform((4,), dtype="float32", **kw), "uniform"
    ),
    "minidiff.primitives.random.rademacher": Call(
        lambda **kw: mdrandom.rademacher((40,), **kw), "rademacher"
    ),
    "minidiff.primitives.random.randint": Call(
        lambda **kw: mdrandom.randint(1000, shape=(4,), **kw), "randint"
    ),
    "minidiff.primitives.random.as_generator": Call(
        lambda **kw: mdrandom.as_generator(**kw).normal((3,)), "as_generator"
    ),
    # forward gradients
    "minidiff.transforms.forward_gradient.sample_directions": Call(  # float32: the Box–Muller sampler
        lambda **kw: md.sample_directions({**_w(), "f": md.ones((5,), dtype="float32")}, **kw), "forward_grad"
    ),
    "minidiff.transforms.forward_gradient.forward_grad": Call(
        lambda **kw: md.forward_grad(_quad, _w(), **kw), "forward_grad"
    ),
    "minidiff.transforms.forward_gradient.FGD": Call(
        lambda **kw: md.FGD(lr=0.1, **kw).step(_quad, _w()), "FGD"
    ),
    # curvature
    "minidiff.curvature.hutchinson.sample_probes": Call(
        lambda **kw: curvature.sample_probes(_w(), 3, "normal", **kw), "sample_probes"
    ),
    "minidiff.curvature.hutchinson.hutchinson_diag": Call(
        lambda **kw: curvature.hutchinson_diag(lambda p: _coupled([p]), md.tensor([0.2, 0.5, -1.0]), **kw),
        "hutchinson_diag",
    ),
    "minidiff.curvature.hutchinson.hutchinson_trace": Call(
        lambda **kw: curvature.hutchinson_trace(
            lambda p: _coupled([p]), md.tensor([0.2, 0.5, -1.0]), distribution="normal", **kw
        ),
        "hutchinson_trace",
    ),
    "minidiff.curvature.products.sample_labels": Call(
        lambda **kw: curvature.sample_labels(_LOGITS, 2, **kw), "sample_labels"
    ),
    "minidiff.curvature.products.fisher": Call(
        lambda **kw: curvature.fisher(_model_fn, _theta(), "sampled", **kw).labels, "fisher_vp"
    ),
    "minidiff.curvature.products.fisher_vp": Call(
        lambda **kw: curvature.fisher_vp(_model_fn, _theta(), md.ones((3, 3)), "sampled", **kw), "fisher_vp"
    ),
    "minidiff.curvature.operators.fisher_operator": Call(
        lambda **kw: curvature.fisher_operator(_model_fn, _theta(), "sampled", **kw).labels, "fisher_vp"
    ),
    "minidiff.curvature.operators.top_eigenvalues": Call(
        lambda **kw: curvature.top_eigenvalues(lambda p: _coupled([p]), md.zeros(3), k=1, **kw),
        "top_eigenvalues",
        varies=False,  # the seed only picks Lanczos's start vector: the eigenvalue is the same
    ),
    # nn
    **{
        f"minidiff.nn.init.{name}": Call(lambda name=name, **kw: getattr(nn.init, name)((4, 3), **kw), name)
        for name in ("kaiming_normal", "kaiming_uniform", "lecun_normal", "xavier_normal", "xavier_uniform")
    },
    "minidiff.nn.init.normal": Call(lambda **kw: nn.init.normal((4, 3), **kw), "normal"),
    "minidiff.nn.init.uniform": Call(lambda **kw: nn.init.uniform((4, 3), **kw), "uniform"),
    "minidiff.nn.init.zeros": Call(
        lambda **kw: nn.init.zeros((4, 3), **kw), "zeros", varies=False, draws=False
    ),
    "minidiff.nn.modules.Linear": Call(lambda **kw: nn.Linear(3, 2, **kw), "Linear"),
    "minidiff.nn.modules.Conv2d": Call(lambda **kw: nn.Conv2d(1, 2, 2, **kw), "Conv2d"),
    "minidiff.nn.models.logreg": Call(lambda **kw: nn.models.logreg(4, 3, **kw), "logreg"),
    "minidiff.nn.models.mlp": Call(lambda **kw: nn.models.mlp(4, (5,), 3, **kw), "mlp"),
    "minidiff.nn.models.mlp_depth": Call(lambda **kw: nn.models.mlp_depth(2, 5, 4, 3, **kw), "mlp"),
    "minidiff.nn.models.cnn": Call(
        lambda **kw: nn.models.cnn(image_size=16, channels=2, hidden=4, **kw), "cnn"
    ),
    # optimizers
    "minidiff.optim.fgd.FGD": Call(
        lambda **kw: _tape_step(lambda ps: fgd.FGD(ps, lr=0.1, **kw), lambda w: _coupled), "FGD"
    ),
    "minidiff.optim.adahessian.AdaHessian": Call(
        lambda **kw: _tape_step(lambda ps: adahessian.AdaHessian(ps, lr=0.1, **kw), lambda w: _coupled),
        "AdaHessian",
    ),
    "minidiff.optim.sophia.Sophia": Call(
        lambda **kw: _tape_step(
            lambda ps: sophia.Sophia(ps, lr=0.1, rho=50.0, estimator="hutchinson", update_period=1, **kw),
            lambda w: _coupled,
            steps=2,  # the first probes are drawn at the second step
        ),
        "Sophia",
    ),
    "minidiff.optim.kfac.KFAC": Call(lambda **kw: _kfac(**kw), "KFAC"),
    "minidiff.optim.natural_gradient.NaturalGradient": Call(
        lambda **kw: _natural_gradient(**kw), "NaturalGradient"
    ),
    "minidiff.optim.kfac.sample_labels": Call(
        lambda **kw: kfac.sample_labels(_LOGITS, **kw), "sample_labels"
    ),
    # data
    "minidiff.data.loader.train_test_split": Call(
        lambda **kw: data.train_test_split(*_digits(), **kw), "train_test_split"
    ),
    "minidiff.data.loader.Batches": Call(lambda **kw: data.Batches(*_digits(), 4, **kw).order(), "batches"),
    "minidiff.data.loader.batches": Call(lambda **kw: data.batches(*_digits(), 4, **kw).order(), "batches"),
    # DEER
    **{
        f"minidiff.deer.cells.{name}": Call(lambda name=name, **kw: getattr(cells, name)(2, 3, **kw), name)
        for name in ("init_gru", "init_lstm", "init_elman")
    },
    # testing (returns None: the check is that it runs with each form and draws from a NumPy generator)
    "minidiff.testing.checks.check_grads": Call(
        lambda **kw: md.testing.check_grads(md.tanh, (md.tensor([0.1, -0.7]),), order=2, **kw),
        "check_grads",
        varies=False,
    ),
    # benchmark helpers that only build inputs (their seed goes to Generator / train_test_split)
    "minidiff.bench.rfrb.build_model": Call(
        lambda **kw: rfrb.build_model("mlp", hidden=(3,), **kw)[0], "Generator", none_is_default=False
    ),
    "minidiff.bench.rfrb.synthetic_batch": Call(
        lambda **kw: rfrb.synthetic_batch((3,), 4, **kw), "Generator", none_is_default=False
    ),
    "minidiff.bench.deer_ode_bench.init_mlp": Call(
        lambda **kw: deer_ode_bench.init_mlp(4, **kw), "Generator", none_is_default=False
    ),
    "minidiff.bench.training.digits_data": Call(
        lambda **kw: training.digits_data("mlp", **kw)[1][1], "train_test_split"
    ),
}

_HARNESS = (
    "benchmark harness run (seconds to minutes): its seed is a command-line int recorded in the JSON "
    "results and split into sub-seeds (seed + 1, seed + epoch); the inputs it builds are covered above"
)
#: Functions with an rng-like parameter that are not called here, and why.
EXEMPT: dict[str, str] = {
    "minidiff.backend.box_muller_normal": (
        "array-level: takes the numpy.random.Generator that a md.random.Generator wraps (the backend sits "
        "below as_generator); every rng form reaches it through Generator.normal(method='box-muller'), "
        "which sample_directions uses on float32 parameters (its entry above)"
    ),
    "minidiff.bench.curvature_bench.curvature_costs": _HARNESS,
    "minidiff.bench.deer_bench.run_deer_bench": _HARNESS,
    "minidiff.bench.deer_ode_bench.evaluation": _HARNESS,
    "minidiff.bench.deer_ode_bench.run_ode_bench": _HARNESS,
    "minidiff.bench.deer_ode_bench.training": _HARNESS,
    "minidiff.bench.optim_bench.gc_overhead": _HARNESS,
    "minidiff.bench.peers.Settings": _HARNESS,
    "minidiff.bench.peers.write_inputs": "writes .npy files for the peers' worker processes; its int seed "
    "is split into sub-seeds (seed for build_model, seed + 1 for synthetic_batch, seed + 2 for v), covered "
    "above",
    "minidiff.bench.optim_bench.run_optim_bench": _HARNESS,
    "minidiff.bench.profile.profile_loss": _HARNESS,
    "minidiff.bench.rfrb.depth_sweep": _HARNESS,
    "minidiff.bench.rfrb.measure_loss": _HARNESS,
    "minidiff.bench.rfrb.rfrb": _HARNESS,
    "minidiff.bench.training.train": _HARNESS,
    **{
        f"minidiff.testing.{name}": (
            "a Hypothesis seed: an int printed in the failure message so that the failing example can be "
            "run again (a generator's state could not be printed that way)"
        )
        for name in (
            "battery.check_example",
            "battery.check_primitive",
            "battery.run_hypothesis",
            "mutation.check_mutation",
        )
    },
}

DISCOVERED = discover()
CASES = [(key, param) for key, params in sorted(DISCOVERED.items()) if key not in EXEMPT for param in params]


# ----------------------------------------------------------------------------- comparing results
def _arrays(x) -> list:
    if isinstance(x, md.Tensor):
        return [x.numpy()]
    if isinstance(x, np.ndarray):
        return [x]
    if isinstance(x, nn.Module):
        return [p.numpy() for _, p in x.named_parameters()]
    if isinstance(x, dict):
        return [a for k in sorted(x) for a in _arrays(x[k])]
    if isinstance(x, (list, tuple)):
        return [a for v in x for a in _arrays(v)]
    if x is None:
        return []
    return [np.asarray(x)]


#: Same-stream results agree to rounding (the draws are bit-identical; the rest is the same arithmetic).
RTOL = {np.dtype("float16"): 1e-3, np.dtype("float32"): 1e-6, np.dtype("float64"): 1e-12}


def assert_same(a, b) -> None:
    a, b = _arrays(a), _arrays(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=RTOL[x.dtype], atol=0)
        else:
            np.testing.assert_array_equal(x, y)


def differs(a, b) -> bool:
    a, b = _arrays(a), _arrays(b)
    return any(x.shape != y.shape or not np.allclose(x, y, rtol=1e-6, atol=0) for x, y in zip(a, b))


def _state(g: np.random.Generator) -> dict:
    return copy.deepcopy(g.bit_generator.state)


@pytest.fixture
def restore_default_generators():
    """Tests that reseed ``md.random`` leave the module's default generators as they found them."""
    saved, seed = dict(mdrandom._DEFAULT), mdrandom._SEED[0]
    yield
    mdrandom._DEFAULT.clear()
    mdrandom._DEFAULT.update(saved)
    mdrandom._SEED[0] = seed


# ----------------------------------------------------------------------------- the walk
def test_the_walk_finds_the_known_functions():
    """The discovery itself can fail: it must see the functions this issue names."""
    for key in (
        "minidiff.transforms.forward_gradient.forward_grad",
        "minidiff.curvature.hutchinson.hutchinson_diag",
        "minidiff.nn.init.kaiming_uniform",
        "minidiff.optim.kfac.KFAC",
        "minidiff.data.loader.batches",
        "minidiff.deer.cells.init_gru",
    ):
        assert key in DISCOVERED
    assert len(CASES) > 40


def test_every_function_with_an_rng_parameter_has_an_entry():
    missing = sorted(set(DISCOVERED) - set(CALLS) - set(EXEMPT))
    assert not missing, f"add these to CALLS (how to call them) or EXEMPT (why not) in {__file__}: {missing}"
    stale = sorted(set(CALLS) - set(DISCOVERED))  # (EXEMPT may name functions still being written)
    assert not stale, f"entries for functions the walk no longer finds: {stale}"
    assert not set(CALLS) & set(EXEMPT)


@pytest.mark.parametrize("key, param", CASES)
def test_int_seeds_and_both_generator_types(key, param):
    call = CALLS[key]
    first = call.run(**{param: 3})
    assert_same(first, call.run(**{param: 3}))
    if call.varies:
        assert differs(first, call.run(**{param: 4})), f"{key}: {param}=3 and {param}=4 gave the same result"
    assert_same(first, call.run(**{param: md.random.Generator(3)}))
    assert_same(first, call.run(**{param: np.int64(3)}))
    user = np.random.default_rng(3)
    before = _state(user)
    assert_same(first, call.run(**{param: user}))
    if call.draws:
        assert _state(user) != before, f"{key}: drawing did not advance the numpy Generator (a copy was used)"
    else:
        assert _state(user) == before


@pytest.mark.parametrize("key, param", CASES)
def test_none_is_the_module_default(key, param, restore_default_generators):
    call = CALLS[key]
    md.random.seed(11)
    first = call.run(**{param: None})
    md.random.seed(11)
    again = call.run(**{param: None})
    if call.none_is_default:
        assert_same(first, again)


@pytest.mark.parametrize("key, param", CASES)
@pytest.mark.parametrize("bad", ["3", 1.5, True, [3]], ids=["str", "float", "bool", "list"])
def test_other_types_are_rejected_naming_the_function(key, param, bad):
    call = CALLS[key]
    with pytest.raises(TypeError, match=rf"^{call.op}: rng must be .* got {type(bad).__name__}$"):
        call.run(**{param: bad})


def test_negative_seeds_and_legacy_random_state_are_explained():
    with pytest.raises(ValueError, match="forward_grad: an rng seed must be a non-negative int, got -1"):
        md.forward_grad(_quad, _w(), -1)
    with pytest.raises(TypeError, match="got RandomState .*numpy.random.default_rng"):
        md.forward_grad(_quad, _w(), np.random.RandomState(0))


# ----------------------------------------------------------------------------- the snippets
def test_forward_grad_takes_a_numpy_generator_and_an_int():
    loss, g_np = md.forward_grad(_quad, _w(), np.random.default_rng(0))
    _, g_int = md.forward_grad(_quad, _w(), 0)
    _, g_md = md.forward_grad(_quad, _w(), md.random.Generator(0))
    assert_same(g_np, g_md)
    assert_same(g_int, g_md)
    assert loss.item() == pytest.approx(5.25 + 0.3**3 + 0.1**3 - 0.4**3 + 0.2**3)


# ----------------------------------------------------------------------------- Generator methods
SAMPLERS = [
    ("normal", ((3, 5),), {"dtype": "float32"}),
    ("normal", ((3, 5),), {"dtype": "float64", "mean": 1.0, "std": 2.0}),
    ("normal", ((7,),), {"dtype": "float16"}),
    ("uniform", ((3, 5),), {"dtype": "float32", "low": -1.0, "high": 2.0}),
    ("uniform", ((3, 5),), {"dtype": "float64"}),
    ("rademacher", ((17,),), {"dtype": "float32"}),
    ("rademacher", ((2, 9),), {"dtype": "float64"}),
    ("randint", (0, 50), {"shape": (6,), "dtype": "int32"}),
    ("randint", (7,), {"shape": (6,)}),
    ("permutation", (9,), {}),
]


@pytest.mark.parametrize("method, args, kwargs", SAMPLERS, ids=lambda v: str(v))
def test_generator_methods_are_the_same_whether_wrapped_or_own(method, args, kwargs):
    own = getattr(md.random.Generator(5), method)(*args, **kwargs)
    user = np.random.default_rng(5)
    wrapped = getattr(md.random.Generator(user), method)(*args, **kwargs)
    assert_same(own, wrapped)
    assert str(own.dtype) == kwargs.get("dtype", "int64" if method != "normal" else "float64")
    again = getattr(md.random.as_generator(user), method)(*args, **kwargs)  # the stream went on
    assert differs(own, again) or method == "rademacher" and own.size < 2


def test_float32_draws_are_drawn_in_float32():
    """NumPy's float32 stream, not float64 draws rounded: the same values as ``standard_normal(dtype=)``."""
    got = md.random.as_generator(np.random.default_rng(1)).normal((1000,), dtype="float32").numpy()
    want = np.random.default_rng(1).standard_normal(1000, dtype=np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=0)
    rounded = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    assert not np.allclose(got, rounded)


def test_a_wrapped_generator_is_not_copied():
    user = np.random.default_rng(0)
    gen = md.random.as_generator(user)
    assert gen._rng is user
    a = gen.normal((3,)).numpy()
    b = md.random.as_generator(user).normal((3,)).numpy()
    ref = np.random.default_rng(0).standard_normal(6)
    np.testing.assert_allclose(np.concatenate([a, b]), ref, rtol=1e-12, atol=0)


def test_a_generator_is_returned_as_is_and_seeds_another():
    gen = md.random.Generator(0)
    assert md.random.as_generator(gen) is gen
    shared = md.random.Generator(gen)  # same device: draws from gen's stream
    ref = np.random.default_rng(0).standard_normal(4)
    np.testing.assert_allclose(
        np.concatenate([gen.normal((2,)).numpy(), shared.normal((2,)).numpy()]), ref, rtol=1e-12, atol=0
    )


# ----------------------------------------------------------------------------- devices
def test_a_generator_of_another_device_is_refused(fake_device):
    params = {"w": md.tensor([1.0, 2.0], device=fake_device)}
    with pytest.raises(
        DeviceError, match="forward_grad: the generator draws on cpu but the values are needed on fake"
    ):
        md.forward_grad(lambda p: (p["w"] ** 2).sum(), params, md.random.Generator(0))
    assert md.random.as_generator(md.random.Generator(0, fake_device), fake_device).device is fake_device


def test_a_numpy_generator_wraps_on_any_numpy_backed_device(fake_device):
    user = np.random.default_rng(0)
    gen = md.random.as_generator(user, fake_device, op="test")
    assert gen._rng is user and gen.device is fake_device
    params = {"w": md.tensor([1.0, 2.0], device=fake_device)}
    _, g = md.forward_grad(lambda p: (p["w"] ** 2).sum(), params, np.random.default_rng(0))
    _, want = md.forward_grad(lambda p: (p["w"] ** 2).sum(), {"w": md.tensor([1.0, 2.0])}, 0)
    assert g["w"].device is fake_device
    np.testing.assert_allclose(g["w"].numpy(), want["w"].numpy(), rtol=1e-12)


def _stub_gpu():
    """A device whose array module is not NumPy (as CuPy's is not), recording how its generators are seeded."""
    seeds = []

    def default_rng(seed=None):
        seeds.append(seed)
        return np.random.default_rng(seed)

    xp = types.SimpleNamespace(ndarray=np.ndarray, random=types.SimpleNamespace(default_rng=default_rng))
    return backend.Device("stub-gpu", xp, np.ndarray, lambda a: a, lambda a: a), seeds


def test_on_a_non_numpy_device_a_numpy_generator_seeds_the_device_generator():
    """The documented CUDA conversion, on a stub device: one 63-bit draw of the user's generator seeds a
    generator of the device's own module; the user's generator advances by exactly that draw."""
    dev, seeds = _stub_gpu()
    user = np.random.default_rng(7)
    gen = md.random.as_generator(user, dev, op="forward_grad")
    assert gen.device is dev and gen._rng is not user
    twin = np.random.default_rng(7)
    assert seeds == [int(twin.integers(0, 2**63 - 1))]
    assert _state(user) == _state(twin)
    md.random.as_generator(np.random.default_rng(7), dev)  # the same state gives the same seed
    assert seeds[1] == seeds[0]


@pytest.mark.skipif(not md.cuda_available(), reason=f"no CUDA device: {md.cuda_unavailable_reason()}")
def test_cuda_accepts_each_form():
    params = {"w": md.tensor([1.0, -2.0], device="cuda")}
    f = lambda p: (p["w"] ** 2).sum()  # noqa: E731
    user = np.random.default_rng(0)
    before = _state(user)
    _, g_np = md.forward_grad(f, params, user)
    assert g_np["w"].device.name == "cuda" and _state(user) != before
    _, again = md.forward_grad(f, params, np.random.default_rng(0))
    assert_same(g_np, again)
    _, g_int = md.forward_grad(f, params, 0)
    _, g_md = md.forward_grad(f, params, md.random.Generator(0, "cuda"))
    assert_same(g_int, g_md)
    v = md.random.as_generator(np.random.default_rng(0), "cuda").normal((4,), dtype="float32")
    assert str(v.dtype) == "float32" and v.device.name == "cuda"


# ----------------------------------------------------------------------------- one conversion
#: Harness code that builds generators from command-line int seeds on purpose.
_HARNESS_PATHS = ("bench/", "cli.py")


def test_library_code_makes_generators_only_through_as_generator():
    """Outside ``minidiff/primitives/random.py`` no library module constructs a ``Generator`` itself: every one comes
    from :func:`minidiff.primitives.random.as_generator`, so every ``rng=`` accepts the same forms."""
    root = Path(md.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "primitives/random.py" or rel.startswith(_HARNESS_PATHS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", None))
                if name == "Generator":
                    offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, offenders
