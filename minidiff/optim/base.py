"""What every optimizer shares: parameter groups, ``zero_grad``, ``step(closure)``, ``state_dict``.

Parameters are tape leaves (``requires_grad=True``); ``backward()`` fills their ``.grad`` and
``step()`` replaces their values in place with :func:`minidiff.assign_` under ``md.no_grad()`` (the one
in-place update minidiff has, version-counted: a tape that saved the old value refuses ``backward()``),
so a model holding the leaves sees the update.  A subclass states its ``defaults`` and either
``update(p, g, state, group) -> new value`` (one parameter at a time) or overrides ``step_group``.

>>> import minidiff as md
>>> from minidiff.optim.base import Optimizer
>>> class PlainGD(Optimizer):
...     defaults = {"lr": 0.1}
...     def update(self, p, g, state, group):
...         return p - group["lr"] * g
>>> w = md.tensor([1.0, -2.0], requires_grad=True)
>>> opt = PlainGD([w])
>>> for _ in range(3):
...     opt.zero_grad()
...     (w * w).sum().backward()
...     _ = opt.step()
>>> w.numpy().round(4).tolist()  # w ← 0.8·w three times
[0.512, -1.024]
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

from ..backend import Device
from ..errors import check_number, describe
from ..modes.reverse import Taped, assign_, no_grad
from ..primitives.creation import asarray
from ..primitives.random import RngLike, as_generator
from ..tensor import pytree
from ..tensor.core import DTypeLike, Tensor
from ..tensor.kernel import array_kernel
from ..tensor.pytree import PyTree
from ..transforms.core import value_and_grad


class Optimizer:
    """Base class: holds ``param_groups`` (lists of leaves with their settings) and per-parameter ``state``."""

    defaults: dict = {}
    needs_closure = False  # True for methods that re-evaluate the loss (L-BFGS, Newton-CG)
    check_finite = True  # refuse non-finite gradients before changing anything

    def __init__(self, params: PyTree, defaults: dict | None = None):
        name = type(self).__name__
        self._defaults = dict(self.defaults if defaults is None else defaults)
        groups = _as_groups(params, name)
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}
        prepared = []
        seen: dict[int, int] = {}
        for gi, group in enumerate(groups):  # check every group before keeping any
            prepared.append(self._prepare_group(group, gi, seen))
        if not seen:
            raise ValueError(f"{name}: got an empty parameter list")
        self.check_groups(prepared)
        for group in prepared:
            self.param_groups.append(group)
            self.state.update({id(p): {} for p in group["params"]})
        self.steps = 0

    def _prepare_group(self, group: dict, gi: int, seen: dict) -> dict:
        """Check one group (settings, leaves, no parameter twice) and fill in the defaults."""
        name = type(self).__name__
        unknown = set(group) - set(self._defaults) - {"params"}
        if unknown:
            raise TypeError(
                f"{name}: unknown setting(s) {sorted(unknown)} in parameter group {gi}; "
                f"the settings are {sorted(self._defaults)}"
            )
        settings = {**self._defaults, **{k: v for k, v in group.items() if k != "params"}}
        self.validate(settings)
        for p in group["params"]:
            _check_leaf(name, p, len(seen))
            if id(p) in seen:
                raise ValueError(
                    f"{name}: a parameter of shape {p.shape} is given twice (as parameter {seen[id(p)]} "
                    f"and again in group {gi}); give each parameter once"
                )
            seen[id(p)] = len(seen)
        return {"params": list(group["params"]), **settings}

    def add_param_group(self, group: dict) -> None:
        """Add a group (``{"params": [...], setting: value, ...}``) with its own settings.

        >>> import minidiff as md
        >>> from minidiff.optim import SGD
        >>> a, b = md.zeros(2, requires_grad=True), md.zeros(3, requires_grad=True)
        >>> opt = SGD([a], lr=0.1)
        >>> opt.add_param_group({"params": [b], "lr": 0.01})
        >>> [g["lr"] for g in opt.param_groups]
        [0.1, 0.01]
        """
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{type(self).__name__}.add_param_group: expected a dict with a 'params' entry")
        leaves = _as_groups([group], type(self).__name__)[0]
        seen = {id(p): i for i, p in enumerate(self.parameters())}
        prepared = self._prepare_group(leaves, len(self.param_groups), seen)
        self.check_groups([*self.param_groups, prepared])
        self.param_groups.append(prepared)
        self.state.update({id(p): {} for p in prepared["params"]})

    # ------------------------------------------------------------------ settings
    def validate(self, settings: dict) -> None:
        """Raise ``ValueError`` for settings out of range (subclasses extend it)."""
        name = type(self).__name__
        for key in ("lr", "weight_decay", "momentum", "eps", "damping"):
            if settings.get(key) is not None:  # a setting this method does not have
                check_number(name, key, settings[key], low=0)
        betas = settings.get("betas")
        if betas is not None:
            check_pair(name, "betas", betas)
            for i, b in enumerate(betas):
                check_number(name, f"betas[{i}]", b, low=0, high=1, high_open=True)

    def check_groups(self, groups: list[dict]) -> None:
        """Raise ``ValueError`` if the groups together are not a valid setup (each group's settings are
        already validated).  Called before the constructor, :meth:`add_param_group` or
        :meth:`load_state_dict` keeps anything; methods whose groups share one joint problem extend it."""

    # ------------------------------------------------------------------ the loop
    def parameters(self) -> list[Taped]:
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self) -> None:
        """Forget the gradients ``backward()`` accumulated."""
        for p in self.parameters():
            p.zero_grad_()

    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        """One update from the parameters' ``.grad``; ``closure()`` (zero_grad, loss, backward, return
        loss) is called first when given, and is required by methods that re-evaluate."""
        name = type(self).__name__
        if self.needs_closure and closure is None:
            raise TypeError(f"{name}.step: this method re-evaluates the loss; pass step(closure)")
        loss, grads = self.evaluate(closure)
        if self.check_finite:
            self.check_grads_finite(grads)
        updates = [self.step_group(g, gs) for g, gs in zip(self.param_groups, grads)]
        self.commit(
            (p, value, None)
            for group, new in zip(self.param_groups, updates)
            for p, value in zip(group["params"], new)
        )
        return loss

    def commit(self, updates: PyTree) -> None:
        """Apply ``(parameter, new value or None, new state or None)`` triples and count the step.

        Methods compute every update first and commit last, so an exception leaves parameters and
        state as they were.  Parameters change through :func:`minidiff.assign_` under ``no_grad``."""
        with no_grad():
            for p, value, new_state in updates:
                if new_state:
                    self.state[id(p)].update(new_state)
                if value is not None:
                    assign_(p, value)
        self.steps += 1

    def evaluate(self, closure: Callable[..., Any] | None = None) -> tuple[Any, list[list[Any]]]:
        """``(loss, grads per group)``.  Two closure styles are accepted:

        - ``closure()`` (PyTorch style): it zeroes the gradients, computes the loss, calls
          ``backward()`` and returns the loss; the gradients are then read from ``.grad``.
        - ``closure(params)`` (functional): it maps the list of parameter values (plain tensors, in
          :meth:`parameters` order) to the loss; the optimizer differentiates it itself.
        Without a closure the loss is None and the gradients are the ones already in ``.grad``.
        """
        if closure is not None and takes_params(closure):
            loss, flat = value_and_grad(closure)([p.detach() for p in self.parameters()])
            it = iter(flat)
            return loss, [[next(it) for _ in g["params"]] for g in self.param_groups]
        loss = closure() if closure is not None else None
        return loss, [[p.grad for p in g["params"]] for g in self.param_groups]

    def loss_function(self, closure: Callable[..., Any] | None) -> Callable[..., Any]:
        """The functional closure ``f(params) -> loss`` that curvature methods (HVPs) need."""
        if closure is None or not takes_params(closure):
            raise TypeError(
                f"{type(self).__name__}.step: this method needs Hessian-vector products, so it needs a "
                "functional closure f(params) -> loss taking the list of parameter values"
            )
        return closure

    def step_group(self, group: dict, grads: list) -> list:
        """New values for one group's parameters (None where a parameter has no gradient)."""
        with no_grad():
            return [
                None if g is None else self.update(p.detach(), g, self.state[id(p)], group)
                for p, g in zip(group["params"], grads)
            ]

    def update(self, p: Tensor, g: Tensor, state: dict, group: dict) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} defines neither update nor step_group")

    def check_grads_finite(self, grads: PyTree) -> None:
        for gi, gs in enumerate(grads):
            for pi, g in enumerate(gs):
                if g is not None and not all_finite(g):
                    raise FloatingPointError(
                        f"{type(self).__name__}.step: the gradient of parameter {pi} of group {gi} "
                        f"({describe(g)}) is not finite; no parameter was changed"
                    )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """A picklable copy: settings per group and state per parameter index (arrays on the host).

        >>> import minidiff as md
        >>> from minidiff.optim import Adam
        >>> w = md.tensor([1.0, 2.0], requires_grad=True)
        >>> opt = Adam([w], lr=0.1)
        >>> (w * w).sum().backward(); _ = opt.step()
        >>> saved = opt.state_dict()
        >>> fresh = Adam([w], lr=0.5); fresh.load_state_dict(saved)
        >>> fresh.param_groups[0]["lr"], fresh.state_dict() == saved
        (0.1, True)
        """
        index = {id(p): i for i, p in enumerate(self.parameters())}
        groups = []
        for g in self.param_groups:
            settings = {k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
            groups.append({**settings, "params": [index[id(p)] for p in g["params"]]})
        state = {index[pid]: _to_host(s) for pid, s in self.state.items() if s}
        return {
            "optimizer": type(self).__name__,
            "param_groups": groups,
            "shapes": [tuple(p.shape) for p in self.parameters()],
            "state": state,
            "steps": self.steps,
            "extra": _to_host(self.extra_state()),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` saved (onto each parameter's device).

        The layout (optimizer kind, group sizes, parameter shapes) and the saved settings are checked
        first; nothing is changed unless every check passes.
        """
        name = type(self).__name__
        params = self.parameters()
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict:
            raise TypeError(f"{name}.load_state_dict: expected a dict made by state_dict()")
        kind = state_dict.get("optimizer", name)
        if kind != name:
            raise ValueError(f"{name}.load_state_dict: the state was saved by {kind}, not by {name}")
        groups = state_dict["param_groups"]
        mine = [len(g["params"]) for g in self.param_groups]
        theirs = [len(g["params"]) for g in groups]
        if mine != theirs:
            raise ValueError(
                f"{name}.load_state_dict: the saved parameter groups hold {theirs} parameters, "
                f"this optimizer's hold {mine}"
            )
        shapes = state_dict.get("shapes")
        if shapes is not None:
            for i, (p, shape) in enumerate(zip(params, shapes)):
                if tuple(p.shape) != tuple(shape):
                    raise ValueError(
                        f"{name}.load_state_dict: parameter {i} has shape {p.shape}, the saved one {tuple(shape)}"
                    )
        settings = [{k: copy.deepcopy(v) for k, v in saved.items() if k != "params"} for saved in groups]
        for s in settings:
            self.validate(s)
        self.check_groups([{**s, "params": g["params"]} for s, g in zip(settings, self.param_groups)])
        state: dict[int, dict] = {id(p): {} for p in params}
        for i, s in state_dict["state"].items():
            state[id(params[i])] = _from_host(s, params[i].device)
        extra = _from_host(state_dict.get("extra", {}), params[0].device)
        for g, s in zip(self.param_groups, settings):
            g.update(s)
        self.state = state
        self.steps = state_dict["steps"]
        self.load_extra_state(extra)

    def extra_state(self) -> dict:
        """State not tied to one parameter (random generators, curvature factors); subclasses extend."""
        return {}

    def load_extra_state(self, extra: dict) -> None:
        pass

    def __repr__(self) -> str:
        settings = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return f"{type(self).__name__}({len(self.parameters())} parameters, {settings})"


class RandomOptimizer(Optimizer):
    """An optimizer that draws random numbers (probes, sampled labels): its generator ``rng`` is part of
    its state, saved by ``state_dict`` and restored by ``load_state_dict``."""

    def _init_rng(self, seed: RngLike, rng: RngLike) -> None:
        """``self.rng`` from ``rng`` if given, else from ``seed`` (any form ``as_generator`` takes)."""
        self.rng = as_generator(
            seed if rng is None else rng, self.parameters()[0].device, op=type(self).__name__
        )

    def extra_state(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_extra_state(self, extra: dict) -> None:
        if "rng" in extra:
            self.rng.set_state(extra["rng"])


def takes_params(closure: Callable[..., Any]) -> bool:
    """Whether ``closure`` takes one argument (functional style) rather than none (PyTorch style).

    >>> takes_params(lambda params: 0.0), takes_params(lambda: 0.0)
    (True, False)
    """
    import inspect

    try:
        sig = inspect.signature(closure)
    except (TypeError, ValueError):
        return False
    required = [
        q
        for q in sig.parameters.values()
        if q.default is q.empty and q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD, q.VAR_POSITIONAL)
    ]
    return len(required) >= 1


def settings_of(args: dict) -> dict:
    """An optimizer's settings from its constructor's ``locals()``: every argument but ``params``.

    >>> def make(params, lr=0.1, momentum=0.0):
    ...     return settings_of(locals())
    >>> make([], lr=0.5)
    {'lr': 0.5, 'momentum': 0.0}
    """
    return {k: v for k, v in args.items() if k not in ("self", "params", "__class__")}


def check_pair(op: str, name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a tuple or list of two items (``betas``, for example).

    >>> check_pair("Adam", "betas", (0.9,))
    Traceback (most recent call last):
    ...
    ValueError: Adam: betas must be a pair (two numbers), got (0.9,)
    """
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"{op}: {name} must be a pair (two numbers), got {value!r}")


def machine_eps(dtype: DTypeLike) -> float:
    """The spacing of floating-point numbers near 1 for ``dtype`` (``numpy.finfo(dtype).eps``).

    >>> import minidiff as md
    >>> machine_eps(md.float64) == 2.0**-52, machine_eps(md.float32) == 2.0**-23
    (True, True)
    """
    return {2: 2.0**-10, 4: 2.0**-23, 8: 2.0**-52}[dtype.itemsize]


@array_kernel
def all_finite(ns: Any, t: Any) -> bool:
    """Whether every entry of ``t`` is finite (a Python bool; one pass over the array).

    >>> import minidiff as md
    >>> all_finite(md.tensor([1.0, 2.0])), all_finite(md.tensor([1.0, float("nan")]))
    (True, False)
    """
    return bool(ns.isfinite(t).all())


def _as_groups(params: PyTree, name: str) -> list[dict]:
    if isinstance(params, Tensor):
        params = [params]
    if isinstance(params, dict) and "params" not in params:
        params = pytree.flatten(params)[0]
    params = list(params)
    if params and all(isinstance(g, dict) for g in params):
        groups = []
        for gi, g in enumerate(params):
            if "params" not in g:
                raise TypeError(f"{name}: parameter group {gi} has no 'params' entry")
            leaves = g["params"]
            leaves = [leaves] if isinstance(leaves, Tensor) else pytree.flatten(leaves)[0]
            groups.append({**g, "params": leaves})
        return groups
    return [{"params": params}]


def _check_leaf(name: str, p: Any, i: int) -> None:
    if not isinstance(p, Taped) or not p.is_leaf:
        what = f"shape {p.shape}" if isinstance(p, Tensor) else type(p).__name__
        raise TypeError(
            f"{name}: parameter {i} ({what}) is not a tape leaf; create it with requires_grad=True "
            "(or call model.requires_grad_())"
        )
    if p.dtype.kind != "f":
        raise TypeError(f"{name}: parameter {i} has dtype {p.dtype}; optimizers need floating parameters")


class _HostArray:
    """A saved array: a host NumPy copy, put back on the parameter's device when loaded."""

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        self.array = array

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _HostArray) or self.array.shape != other.array.shape:
            return False
        return bool((self.array == other.array).all())


def _to_host(tree: Any) -> Any:
    if isinstance(tree, Tensor):
        return _HostArray(tree.detach().numpy().copy())
    if isinstance(tree, dict):
        return {k: _to_host(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_host(v) for v in tree)
    return copy.deepcopy(tree)


def _from_host(tree: Any, device: Device) -> Any:
    if isinstance(tree, _HostArray):
        return asarray(tree.array.copy(), device=device)
    if isinstance(tree, dict):
        return {k: _from_host(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_from_host(v, device) for v in tree)
    return copy.deepcopy(tree)


def finite_or_raise(name: str, value: float) -> float:
    """``value`` if it is finite, else ``FloatingPointError`` naming ``name``.

    >>> finite_or_raise("LBFGS.step", 1.5)
    1.5
    """
    if not math.isfinite(value):
        raise FloatingPointError(f"{name}: got a non-finite value {value}")
    return value
