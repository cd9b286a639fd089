"""Modules: layers whose parameters are a pytree, differentiable in both modes and in both styles.

A :class:`Module` holds its parameters as a nested dict, name → tensor (``parameters()``), and computes
with *explicit* parameters in :meth:`Module.apply` — the functional call the transforms
differentiate::

    loss = lambda p: F.cross_entropy(model.apply(p, x), y)
    g = md.grad(loss)(model.parameters())                  # reverse mode, same tree as the parameters
    l, dl = md.jvp(loss, (model.parameters(),), (v,))       # forward mode along the tree v

``model(x)`` is ``model.apply(model.parameters(), x)``.  After ``model.requires_grad_()`` the stored
parameters are tape leaves, so ``model(x)`` records on the tape and ``loss.backward()`` fills each
parameter's ``.grad`` (tape style; read them with ``model.grads()``, clear them with ``zero_grad()``).

Containers nest their children's trees under the child's name; a child without parameters (``ReLU``,
``Flatten``, ``MaxPool2d``) gets **no key**, so ``Sequential(Linear, ReLU, Linear)`` has the keys
``"0"`` and ``"2"`` (``set_parameters`` also accepts an empty dict for such a child).

Hooks, for methods that need per-layer statistics (K-FAC):

* ``register_forward_hook(fn)``: ``fn(module, input, output)`` after every call, functional or tape;
* ``register_backward_hook(fn)``: ``fn(module, grad_output)`` with the cotangent of the module's output
  during any reverse pass (``md.grad``, ``md.vjp``, ``backward()``).  It is implemented by an identity
  primitive inserted after the module's output only while a backward hook is registered, whose VJP rule
  calls the hooks and passes the cotangent on unchanged (its JVP passes the tangent through); modules
  without backward hooks pay nothing.  Forward mode has no cotangents, so backward hooks do not run there.

Inside a transform the tensors a hook receives are that transform's tracers: call ``.detach()`` on what
you keep past the transform.  Hook return values are ignored.  Each ``register_*`` returns a handle whose
``remove()`` unregisters the hook (also usable as a context manager).

Every layer also reports ``output_shape(input_shape)``; shapes include the batch axis.

>>> import minidiff as md
>>> from minidiff import nn
>>> model = nn.Sequential(nn.Linear(4, 3, rng=md.random.Generator(0)), nn.ReLU(), nn.Linear(3, 2))
>>> [name for name, _ in model.named_parameters()]
['0.weight', '0.bias', '2.weight', '2.bias']
>>> model.output_shape((5, 4))
(5, 2)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any

from ..backend import Device
from ..errors import DeviceError, DTypeError, ShapeError, check_number
from ..modes.reverse import HookHandle
from ..primitives import ops
from ..primitives import random as _random
from ..primitives.creation import asarray
from ..primitives.custom import primitive
from ..primitives.random import RngLike
from ..tensor.core import DeviceLike, DTypeLike, Tensor
from ..tensor.pytree import PyTree
from . import functional as F
from . import init

__all__ = [
    "Module",
    "HookHandle",
    "Linear",
    "Conv2d",
    "MaxPool2d",
    "ReLU",
    "Flatten",
    "Sequential",
    "backward_hook_point",
]

_EMPTY: MappingProxyType[str, Any] = MappingProxyType({})


# ----------------------------------------------------------------------------- backward hooks
@primitive(name="nn.backward_hook")
def backward_hook_point(x: Tensor, *, module: Module) -> Tensor:
    """Identity on ``x``; in a reverse pass it shows the cotangent of ``x`` to ``module``'s hooks."""
    return x


@backward_hook_point.defjvp
def _backward_hook_point_jvp(primals: Any, tangents: Any, *, module: Module) -> Tensor:
    return tangents[0]


@backward_hook_point.defvjp(reads="")  # the hook sees the cotangent only: the tape keeps nothing
def _backward_hook_point_vjp(cotangent: Tensor, output: Any, x: Any, *, module: Module) -> tuple[Tensor]:
    module._run_backward_hooks(cotangent)
    return (cotangent,)


# Under vmap the identity stays an identity (on the batched value) and stays hooked.
backward_hook_point.batch = lambda vals, batched, size, **params: backward_hook_point(vals[0], **params)


# ----------------------------------------------------------------------------- the base class
class Module:
    """Base class: parameters as a pytree, a functional ``apply``, the tape-style ``__call__``, hooks.

    Subclasses call ``super().__init__()`` first, then assign tensors (parameters) and modules
    (children) as attributes, and implement ``forward(params, x)`` using the given ``params`` (never
    the stored ones), plus ``output_shape`` where they can.
    """

    def __init__(self) -> None:
        d = self.__dict__
        d["_params"] = {}
        d["_modules"] = {}
        d["_forward_hooks"] = {}
        d["_backward_hooks"] = {}

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        if "_params" not in d:
            raise AttributeError(
                f"{type(self).__name__}: call Module.__init__() (super().__init__()) before assigning "
                f"attribute {name!r}"
            )
        if isinstance(value, Module):
            d["_params"].pop(name, None)
            d["_modules"][name] = value
            d.pop(name, None)
        elif isinstance(value, Tensor):
            d["_modules"].pop(name, None)
            d["_params"][name] = value
            d.pop(name, None)
        else:
            d["_params"].pop(name, None)
            d["_modules"].pop(name, None)
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:  # only reached when ordinary lookup fails
        d = self.__dict__
        if name in d.get("_params", ()):
            return d["_params"][name]
        if name in d.get("_modules", ()):
            return d["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        d = self.__dict__
        if name in d["_params"]:
            del d["_params"][name]
        elif name in d["_modules"]:
            del d["_modules"][name]
        else:
            object.__delattr__(self, name)

    # ------------------------------------------------------------------ the parameter tree
    def parameters(self) -> dict:
        """The parameters as a nested dict (name → tensor, child name → child's dict)."""
        tree = dict(self._params)
        for name, child in self._modules.items():
            sub = child.parameters()
            if sub:
                tree[name] = sub
        return tree

    def named_parameters(self, prefix: str = "") -> list[tuple[str, Tensor]]:
        """``(dotted name, tensor)`` for every parameter, in definition (call) order."""
        out = [(prefix + name, p) for name, p in self._params.items()]
        for name, child in self._modules.items():
            out.extend(child.named_parameters(f"{prefix}{name}."))
        return out

    def named_modules(self, prefix: str = "") -> list[tuple[str, Module]]:
        """``(dotted name, module)`` for this module (name ``prefix``, ``""`` at the top) and all below."""
        out = [(prefix, self)]
        for name, child in self._modules.items():
            out.extend(child.named_modules(f"{prefix}.{name}" if prefix else name))
        return out

    def modules(self) -> list[Module]:
        return [m for _, m in self.named_modules()]

    def children(self) -> list[Module]:
        return list(self._modules.values())

    def num_parameters(self) -> int:
        """How many scalars the parameters hold."""
        return sum(p.size for _, p in self.named_parameters())

    def set_parameters(self, tree: PyTree) -> Module:
        """Replace the stored parameters by those of ``tree`` (same structure, shapes, dtypes, device).

        Leaves may be tensors (tape leaves included) or arrays, which are converted without casting.
        Raises naming the offending parameter; nothing is changed unless every check passes.
        """
        expected = dict(self.named_parameters())
        given = dict(_named_leaves(tree, "", type(self).__name__))
        missing = [n for n in expected if n not in given]
        unexpected = [n for n in given if n not in expected]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unexpected:
                parts.append(f"unexpected {unexpected}")
            raise ShapeError(
                f"set_parameters: the tree does not match {type(self).__name__}'s parameters: "
                f"{'; '.join(parts)} (expected the names {list(expected)})"
            )
        self._assign({name: _replacement(name, given[name], old) for name, old in expected.items()})
        return self

    def _assign(self, named: dict, prefix: str = "") -> None:
        """Store ``named`` (dotted name → tensor, already validated) into this module and below."""
        for name in self._params:
            self._params[name] = named[prefix + name]
        for name, child in self._modules.items():
            child._assign(named, f"{prefix}{name}.")

    def _map_parameters(self, fn: Callable[[Tensor], Tensor]) -> Module:
        self._assign({name: fn(p) for name, p in self.named_parameters()})
        return self

    # ------------------------------------------------------------------ tape style
    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Make every stored parameter a fresh tape leaf (``requires_grad=True``), or plain values."""
        return self._map_parameters(lambda p: p.requires_grad_(requires_grad))

    def grads(self) -> dict:
        """The ``.grad`` of every parameter (tape style), as a tree like ``parameters()`` (None if unset)."""
        return _tree_map_dict(lambda p: p.grad, self.parameters())

    def zero_grad(self) -> None:
        """Forget the gradients accumulated by ``backward()``."""
        for _, p in self.named_parameters():
            clear = getattr(p, "zero_grad_", None)
            if clear is not None:
                clear()

    def to(self, device: DeviceLike = None, *, dtype: DTypeLike = None) -> Module:
        """Move (and optionally cast) every parameter; tape leaves stay tape leaves (grads are reset)."""

        def move(p: Tensor) -> Tensor:
            leaf = p.requires_grad and p.is_leaf
            q = p.detach()
            if device is not None:
                q = q.to(device)
            if dtype is not None:
                q = q.astype(dtype)
            return q.requires_grad_() if leaf else q

        return self._map_parameters(move)

    @property
    def device(self) -> Device | None:
        """The device of the parameters (None for a module without parameters)."""
        named = self.named_parameters()
        return named[0][1].device if named else None

    @property
    def dtype(self) -> Any:
        """The dtype of the first parameter (None for a module without parameters)."""
        named = self.named_parameters()
        return named[0][1].dtype if named else None

    # ------------------------------------------------------------------ calling
    def forward(self, params: PyTree, x: Tensor) -> Tensor:
        """The layer's computation on input ``x`` with the parameters ``params`` (a subclass defines it)."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward(params, x)")

    def apply(self, params: PyTree, x: Tensor) -> Tensor:
        """The functional call: this module on ``x`` with the explicit parameter tree ``params``."""
        out = self.forward(params, x)
        if self._backward_hooks:
            out = backward_hook_point(out, module=self)
        if self._forward_hooks:
            for fn in tuple(self._forward_hooks.values()):
                fn(self, x, out)
        return out

    def __call__(self, x: Tensor) -> Tensor:
        """``apply`` with the stored parameters (tape style when they are ``requires_grad`` leaves)."""
        return self.apply(self.parameters(), x)

    # ------------------------------------------------------------------ hooks
    def register_forward_hook(self, fn: Callable[..., Any]) -> HookHandle:
        """Call ``fn(module, input, output)`` after every call of this module."""
        return _register("register_forward_hook", self._forward_hooks, fn)

    def register_backward_hook(self, fn: Callable[..., Any]) -> HookHandle:
        """Call ``fn(module, grad_output)`` with the cotangent of this module's output in reverse passes."""
        return _register("register_backward_hook", self._backward_hooks, fn)

    def _run_backward_hooks(self, cotangent: Tensor) -> None:
        for fn in tuple(self._backward_hooks.values()):
            fn(self, cotangent)

    # ------------------------------------------------------------------ shapes
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the output for an input of ``input_shape`` (batch axis included)."""
        raise NotImplementedError(f"{type(self).__name__} does not define output_shape")

    # ------------------------------------------------------------------ display
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): {child!r}".replace("\n", "\n  ") for name, child in self._modules.items()]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


def _register(op: str, hooks: dict, fn: Callable[..., Any]) -> HookHandle:
    if not callable(fn):
        raise TypeError(f"{op}: expected a callable, got {type(fn).__name__}")
    return HookHandle(hooks, fn)


def _named_leaves(tree: PyTree, prefix: str, owner: str) -> list[tuple[str, Any]]:
    if isinstance(tree, (dict, MappingProxyType)):
        out = []
        for key, sub in tree.items():
            if not isinstance(key, str):
                raise ShapeError(f"set_parameters: keys of a parameter tree are strings, got {key!r}")
            out.extend(_named_leaves(sub, f"{prefix}{key}.", owner))
        return out
    if isinstance(tree, (list, tuple)) or tree is None:
        raise ShapeError(
            f"set_parameters: {owner}'s parameters are nested dicts of tensors, but "
            f"{prefix.rstrip('.') or 'the tree'} is a {type(tree).__name__}"
        )
    return [(prefix.rstrip("."), tree)]


def _replacement(name: str, new: Any, old: Tensor) -> Tensor:
    """``new`` as a tensor that may replace the parameter ``old``: same shape, dtype and device."""
    if not isinstance(new, Tensor):
        new = asarray(new, device=old.device)
    if new.shape != old.shape:
        raise ShapeError(f"set_parameters: {name!r} has shape {new.shape} but the model expects {old.shape}")
    if new.dtype != old.dtype:
        raise DTypeError(
            f"set_parameters: {name!r} has dtype {new.dtype} but the model expects {old.dtype}; "
            f"cast it with .astype('{old.dtype}')"
        )
    if new.device is not old.device:
        raise DeviceError(
            f"set_parameters: {name!r} is on {new.device} but the model is on {old.device}; "
            "move it with .to(device) (or move the model with model.to(device))"
        )
    return new


def _tree_map_dict(fn: Callable[[Any], Any], tree: dict) -> dict:
    return {k: _tree_map_dict(fn, v) if isinstance(v, dict) else fn(v) for k, v in tree.items()}


def _param(module: Module, params: PyTree, name: str) -> Tensor:
    try:
        return params[name]
    except (KeyError, TypeError, IndexError):
        raise ShapeError(
            f"{type(module).__name__}.apply: the parameter tree has no {name!r} "
            f"(got {sorted(params) if isinstance(params, dict) else type(params).__name__}); pass a tree "
            "like module.parameters()"
        ) from None


def _count(op: str, name: str, value: Any, low: int = 1) -> int:
    """``value`` as an ``int`` (NumPy integers accepted), checked to be at least ``low``."""
    if hasattr(value, "__index__") and not isinstance(value, bool):
        value = operator.index(value)
    check_number(op, name, value, low=low, integer=True)
    return value


def _pair(v: Any, op: str, name: str, low: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, as a pair, each checked to be at least ``low``."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
        return (_count(op, name, v[0], low), _count(op, name, v[1], low))
    return (_count(op, name, v, low),) * 2


# ----------------------------------------------------------------------------- layers
class Linear(Module):
    """``y = x Wᵀ + b`` with ``W`` of shape (out_features, in_features), as PyTorch.

    Initialization as PyTorch's default: weight and bias uniform on ±1/√in_features.  ``rng`` is a
    :class:`minidiff.primitives.random.Generator`, a ``numpy.random.Generator``, an int seed, or None for the
    default generator (as in :mod:`minidiff.nn.init`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rng: RngLike = None,
        dtype: DTypeLike = "float32",
        device: DeviceLike = None,
    ):
        super().__init__()
        self.in_features = _count("Linear", "in_features", in_features)
        self.out_features = _count("Linear", "out_features", out_features)
        gen = _random.as_generator(rng, device if rng is None else None, op="Linear")
        bound = 1.0 / math.sqrt(self.in_features)
        kw = {"rng": gen, "dtype": dtype, "device": device}
        self.weight = init.uniform((self.out_features, self.in_features), -bound, bound, **kw)
        self.use_bias = bool(bias)
        self.bias = init.uniform((self.out_features,), -bound, bound, **kw) if bias else None

    def forward(self, params: PyTree, x: Tensor) -> Tensor:
        w = _param(self, params, "weight")
        b = _param(self, params, "bias") if self.use_bias else None
        if not x.ndim or x.shape[-1] != self.in_features:
            raise ShapeError(
                f"Linear({self.in_features} → {self.out_features}): input of shape {x.shape} should end "
                f"in {self.in_features} features"
            )
        return F.linear(x, w, b)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        if not input_shape or input_shape[-1] != self.in_features:
            raise ShapeError(
                f"Linear({self.in_features} → {self.out_features}): input shape {input_shape} should end "
                f"in {self.in_features}"
            )
        return input_shape[:-1] + (self.out_features,)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.use_bias}"


class Conv2d(Module):
    """2-D convolution (cross-correlation), NCHW input and OIHW weights, by im2col and one matmul.

    Initialization as PyTorch's default: weight and bias uniform on ±1/√(in_channels·kh·kw); ``rng`` as
    for :class:`Linear`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        *,
        rng: RngLike = None,
        dtype: DTypeLike = "float32",
        device: DeviceLike = None,
    ):
        super().__init__()
        self.in_channels = _count("Conv2d", "in_channels", in_channels)
        self.out_channels = _count("Conv2d", "out_channels", out_channels)
        self.kernel_size = _pair(kernel_size, "Conv2d", "kernel_size")
        self.stride = _pair(stride, "Conv2d", "stride")
        self.padding = _pair(padding, "Conv2d", "padding", low=0)
        gen = _random.as_generator(rng, device if rng is None else None, op="Conv2d")
        kh, kw = self.kernel_size
        bound = 1.0 / math.sqrt(self.in_channels * kh * kw)
        kws = {"rng": gen, "dtype": dtype, "device": device}
        self.weight = init.uniform((self.out_channels, self.in_channels, kh, kw), -bound, bound, **kws)
        self.use_bias = bool(bias)
        self.bias = init.uniform((self.out_channels,), -bound, bound, **kws) if bias else None

    def forward(self, params: PyTree, x: Tensor) -> Tensor:
        w = _param(self, params, "weight")
        b = _param(self, params, "bias") if self.use_bias else None
        return F.conv2d(x, w, b, stride=self.stride, padding=self.padding)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        if len(input_shape) != 4 or input_shape[1] != self.in_channels:
            raise ShapeError(
                f"Conv2d({self.in_channels} → {self.out_channels}): expected an NCHW input shape with "
                f"{self.in_channels} channels, got {input_shape}"
            )
        n, _, h, w = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if ho < 1 or wo < 1:
            raise ShapeError(
                f"Conv2d: kernel {self.kernel_size} larger than the padded input {(h + 2 * ph, w + 2 * pw)}"
            )
        return (n, self.out_channels, ho, wo)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.use_bias}"
        )


class MaxPool2d(Module):
    """Max over ``kernel_size`` windows of NCHW input; ``stride`` defaults to ``kernel_size``."""

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "MaxPool2d", "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "MaxPool2d", "stride")

    def forward(self, params: PyTree, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            raise ShapeError(f"MaxPool2d: expected an NCHW input shape, got {input_shape}")
        n, c, h, w = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
        if ho < 1 or wo < 1:
            raise ShapeError(f"MaxPool2d: kernel {self.kernel_size} larger than the input {(h, w)}")
        return (n, c, ho, wo)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class ReLU(Module):
    """``max(x, 0)`` elementwise."""

    def forward(self, params: PyTree, x: Tensor) -> Tensor:
        return F.relu(x)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)


class Flatten(Module):
    """Merge the axes from ``start_dim`` on into one: (N, C, H, W) → (N, C·H·W)."""

    def __init__(self, start_dim: int = 1):
        super().__init__()
        self.start_dim = int(start_dim)

    def forward(self, params: PyTree, x: Tensor) -> Tensor:
        return ops.reshape(x, tuple(x.shape[: self.start_dim]) + (-1,))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        return input_shape[: self.start_dim] + (math.prod(input_shape[self.start_dim :]),)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}"


class Sequential(Module):
    """Layers applied in order.  Children are named ``"0"``, ``"1"``, …; the parameter tree has a key
    only for the children that have parameters (``Sequential(Linear, ReLU, Linear)`` → ``"0"``, ``"2"``)."""

    def __init__(self, *layers: Module):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i} is a {type(layer).__name__}, not a Module")
            setattr(self, str(i), layer)

    def forward(self, params: PyTree, x: Tensor) -> Tensor:
        for name, layer in self._modules.items():
            x = layer.apply(params.get(name, _EMPTY), x)
        return x

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, i: int | slice) -> Module:
        layers = list(self._modules.values())
        if isinstance(i, slice):
            return Sequential(*layers[i])
        return layers[i]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        for layer in self:
            shape = layer.output_shape(shape)
        return shape
