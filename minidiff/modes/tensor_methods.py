"""What you can do with a tensor: its operators and ndarray methods, attached to the class in one place.

:mod:`minidiff.tensor` defines what a tensor *is* (an array on a device, its metadata, how its value
is read out); it imports nothing above the backend.  The operators (``+``, ``@``, ``x[i]``...) and
the ndarray methods (``x.sum()``, ``x.reshape()``...) call minidiff's public functions and the tape,
which sit in higher layers, so they are written here and :func:`attach` adds them to
:class:`~minidiff.tensor.Tensor` when the package is imported — the one place this happens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from .. import backend
from ..errors import DTypeError, TapeError
from ..primitives import ops as _ops
from ..primitives.creation import zeros
from ..primitives.indexing import IndexUpdater
from ..primitives.numpy_api import array_function, array_ufunc
from ..tensor.core import ArrayLike, Axis, DTypeLike, Tensor, Tracer, wrap
from .reverse import HookHandle, backward, make_leaf, register_hook, retain_grad

__all__ = ["attach"]

#: The type of ``self`` below: the Tensor these methods are attached to.  Tensor subclasses this mixin
#: (for type checkers), so it cannot be named as ``self``'s type here; Any keeps the signatures exact.
_Self = Any

_NO_VALUE = object()  # NumPy's "argument not given" for ``initial=``


def _unsupported(method: str, out=None, initial=_NO_VALUE, where=True) -> None:
    if out is not None:
        raise TypeError(
            f"{method}: out= is not supported: minidiff never writes into an existing array (tensors "
            "are values); use the returned tensor"
        )
    if initial is not _NO_VALUE:
        raise NotImplementedError(
            f"{method}: initial= is not supported; combine the result with the initial value yourself"
        )
    if where is not True:
        raise NotImplementedError(
            f"{method}: where= is not supported; mask the input first, e.g. md.where(mask, x, 0.0)"
        )


def _check_order(op: str, order: str) -> None:
    if order != "C":
        raise NotImplementedError(
            f"{op}: only order='C' (row-major) is supported, not {order!r}; for column-major order "
            "transpose first (x.T.{op}() reads x in Fortran order)"
        )


def _cast(method: str, x, dtype):
    """``x`` in the accumulator ``dtype`` of a reduction (None: its own); real dtypes only."""
    if dtype is None:
        return x
    try:
        dt = backend.numpy_module.dtype(dtype)
    except TypeError as exc:
        raise DTypeError(f"{method}: unknown dtype={dtype!r}") from exc
    if dt.kind not in "biuf":
        raise DTypeError(
            f"{method}: dtype={dt} is not supported (minidiff tensors hold booleans, integers and reals)"
        )
    return _ops.astype(x, dt)


def _keep(out, x, axis, keepdims: bool):
    """Re-insert the reduced axes of ``x`` as size 1 (``keepdims=True``) for reductions without it."""
    if not keepdims:
        return out
    axes = _ops.normalize_axis("keepdims", axis, x.ndim)
    return _ops.reshape(out, tuple(1 if a in axes else s for a, s in enumerate(x.shape)))


class _TensorMethods:
    """Operators and ndarray methods of every tensor (see the module doc)."""

    def __array_ufunc__(self: _Self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """NEP 13: ``np.sin(t)``, ``ndarray + t``... run minidiff's function (see :mod:`minidiff.primitives.numpy_api`)."""

        return array_ufunc(ufunc, method, *inputs, **kwargs)

    def __array_function__(self: _Self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        """NEP 18: ``np.sum(t)``, ``np.linalg.solve(a, t)``... run minidiff's function (same module)."""

        return array_function(func, types, args, kwargs)

    # ----------------------------------------------------------------- conversion
    def to(self: _Self, device: backend.Device | str | None) -> Tensor:
        """A copy on ``device`` (``"cpu"`` or ``"cuda"``); the tensor itself if already there."""
        dev = backend.get_device(device)
        if dev is self._device:
            return self
        return _ops.to_device(self, dev)

    def requires_grad_(self: _Self, requires_grad: bool = True) -> Tensor:
        """Return a tape leaf with this value whose operations will be recorded (tape style).

        Unlike PyTorch this returns a new tensor: minidiff tensors are values, never changed in place
        by the tape.
        """
        if not requires_grad:
            return self.detach()

        return make_leaf(self)

    # ----------------------------------------------------------------- reverse mode, tape style
    def backward(
        self: _Self,
        cotangent: ArrayLike | None = None,
        retain_graph: bool = False,
        *,
        gradient: ArrayLike | None = None,
    ) -> None:
        """Tape style: add the gradient of ``self`` to ``leaf.grad`` of every tape leaf it depends on.

        Arguments:
            cotangent: the vector ``u`` of the product ``uᵀ·J`` to compute, a tensor (or array-like)
                of ``self``'s shape and dtype.  ``None`` (the default) stands for 1 and needs a scalar
                ``self``; for a non-scalar value pass one, e.g. ``md.ones_like(y)`` for the gradient of
                ``y.sum()``.
            retain_graph: keep the values the tape saved, so ``backward()`` can walk it again.  By
                default the walk frees them (the graph stays, for ``format_tape``), and a second walk
                raises :class:`~minidiff.errors.TapeError`.
            gradient: PyTorch's name for ``cotangent`` (keyword only; give one of the two).

        Gradients accumulate: call ``zero_grad_()`` on each leaf (or an optimizer's ``zero_grad()``)
        between steps.  A non-leaf value keeps its gradient only after :meth:`retain_grad`; hooks
        registered with :meth:`register_hook` run during the walk.  Nothing is written unless the whole
        walk succeeds.

        >>> import minidiff as md
        >>> x = md.tensor([1.0, 2.0], requires_grad=True)
        >>> y = x * x
        >>> y.backward(md.tensor([1.0, 10.0]), retain_graph=True)   # uᵀ·J for u = [1, 10]
        >>> x.grad.tolist()
        [2.0, 40.0]
        >>> y.sum().backward()                                      # the tape was kept: accumulate
        >>> x.grad.tolist()
        [4.0, 44.0]
        """
        if gradient is not None:
            if cotangent is not None:
                raise TypeError("backward: give the cotangent once, as cotangent or as gradient=")
            cotangent = gradient
        backward(self, cotangent, retain_graph)

    def retain_grad(self: _Self) -> None:
        """Keep this value's gradient in ``.grad`` after ``backward()`` (tape style), as PyTorch does.

        A leaf (``requires_grad=True``) keeps its gradient anyway; an intermediate value of the tape
        style keeps it only when asked.  The kept gradient is the one that flowed on to the value's
        inputs (after any :meth:`register_hook` hook changed it) and accumulates like a leaf's.  Inside
        ``md.grad``/``md.vjp``, whose gradients are returned rather than stored, this raises
        :class:`~minidiff.errors.TapeError` (make the value an argument, or read it with a hook).

        >>> import minidiff as md
        >>> x = md.tensor([1.0, 2.0], requires_grad=True)
        >>> h = x * x
        >>> h.retain_grad()
        >>> (3.0 * h).sum().backward()
        >>> h.grad.tolist(), x.grad.tolist()
        ([3.0, 3.0], [6.0, 12.0])
        """
        retain_grad(self)

    @property
    def retains_grad(self: _Self) -> bool:
        """Whether ``backward()`` keeps this value's gradient in ``.grad`` (set by :meth:`retain_grad`)."""
        return False

    def register_hook(self: _Self, fn: Callable[[Tensor], Tensor | None]) -> HookHandle:
        """Call ``fn(grad)`` with the gradient flowing into this tensor in each reverse pass.

        ``grad`` is the complete gradient of the value (the sum over all its uses).  ``fn`` returns
        ``None`` to leave it alone, or a tensor of the same shape, dtype and device to replace it: the
        replacement is what flows on to the inputs (and into ``.grad`` of a leaf or a retained value).
        Hooks of one tensor run in the order they were registered.  Returns a handle whose
        ``remove()`` unregisters the hook (also a context manager).

        Scope: the tensor must be on a tape — a ``requires_grad=True`` leaf or a value computed from
        one (hooks run in ``backward()``), or, inside ``md.grad``/``md.vjp``/``md.jacrev``/``md.hvp``,
        the argument or a value computed from it (hooks run in that transform's reverse pass; there
        ``grad`` may itself be a traced value — differentiate through it, keep it only after
        ``.detach()``).  A plain tensor or a dual number of forward mode raises
        :class:`~minidiff.errors.TapeError` — so a function that registers hooks cannot run under
        ``md.jvp``/``md.jacfwd`` or ``hvp(..., mode="rev-over-fwd")``, rather than silently skip its
        hooks; ``fwd-over-rev`` and ``rev-over-rev`` run them.  A hook returning something else than
        ``None`` or a matching tensor raises, naming the tensor's shape.  A hook on a
        ``requires_grad=True`` tensor does not run in ``md.grad`` of a function of it (that transform
        records a tape of its own).

        >>> import minidiff as md
        >>> x = md.tensor([1.0, 2.0], requires_grad=True)
        >>> h = x * x
        >>> handle = h.register_hook(lambda g: g * 10.0)       # scale what flows back through h
        >>> h.sum().backward()
        >>> x.grad.tolist()
        [20.0, 40.0]
        >>> handle.remove()
        """
        return register_hook(self, fn)

    # ----------------------------------------------------------------- operators
    def __add__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.add(self, other)

    def __radd__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.add(other, self)

    def __sub__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.subtract(self, other)

    def __rsub__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.subtract(other, self)

    def __mul__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.multiply(self, other)

    def __rmul__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.multiply(other, self)

    def __truediv__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.divide(self, other)

    def __rtruediv__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.divide(other, self)

    def __pow__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.power(self, other)

    def __rpow__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.power(other, self)

    def __matmul__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.matmul(self, other)

    def __rmatmul__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.matmul(other, self)

    def __mod__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.remainder(self, other)

    def __rmod__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.remainder(other, self)

    def __floordiv__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.floor_divide(self, other)

    def __rfloordiv__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.floor_divide(other, self)

    def __divmod__(self: _Self, other: ArrayLike) -> tuple[Tensor, Tensor]:
        return _ops.divmod(self, other)

    def __rdivmod__(self: _Self, other: ArrayLike) -> tuple[Tensor, Tensor]:
        return _ops.divmod(other, self)

    # In-place operators.  A tensor is a value, so ``x += v`` makes a new tensor and rebinds ``x`` to
    # it, as ``x = x + v`` does.  On a tape-style leaf (``requires_grad=True``) that rebinding would
    # send the gradient to the old leaf and leave ``x.grad`` None, so it raises instead.
    def _inplace(
        self: _Self, symbol: str, op: Callable[[Tensor, ArrayLike], Tensor], other: ArrayLike
    ) -> Tensor:
        if self._is_tape_leaf():
            raise TapeError(
                f"x {symbol} v: x ({self.dtype}{list(self.shape)}) is a tape leaf with requires_grad=True, "
                f"and `x {symbol} v` would rebind the name x to a new tensor: backward() would then fill "
                "the gradient of the old leaf and x.grad would stay None. Write `y = x "
                f"{symbol[:-1]} v` for a new value (x stays the leaf), x.at[index].set(v) / .add(v) "
                "for a copy with some entries changed, or md.assign_(x, new_value) under md.no_grad() "
                "to replace the value of a parameter (what the optimizers do)"
            )
        return op(self, other)

    def __iadd__(self: _Self, other: ArrayLike) -> Tensor:
        return self._inplace("+=", _ops.add, other)

    def __isub__(self: _Self, other: ArrayLike) -> Tensor:
        return self._inplace("-=", _ops.subtract, other)

    def __imul__(self: _Self, other: ArrayLike) -> Tensor:
        return self._inplace("*=", _ops.multiply, other)

    def __itruediv__(self: _Self, other: ArrayLike) -> Tensor:
        return self._inplace("/=", _ops.divide, other)

    def __ifloordiv__(self: _Self, other: ArrayLike) -> Tensor:
        return self._inplace("//=", _ops.floor_divide, other)

    def __imod__(self: _Self, other: ArrayLike) -> Tensor:
        return self._inplace("%=", _ops.remainder, other)

    def __ipow__(self: _Self, other: ArrayLike) -> Tensor:
        return self._inplace("**=", _ops.power, other)

    def __imatmul__(self: _Self, other: ArrayLike) -> Tensor:
        return self._inplace("@=", _ops.matmul, other)

    def __iand__(self: _Self, other: ArrayLike) -> Tensor:
        return self._inplace("&=", Tensor.__and__, other)

    def __ior__(self: _Self, other: ArrayLike) -> Tensor:
        return self._inplace("|=", Tensor.__or__, other)

    def __ixor__(self: _Self, other: ArrayLike) -> Tensor:
        return self._inplace("^=", Tensor.__xor__, other)

    def __neg__(self: _Self) -> Tensor:
        return _ops.negative(self)

    def __pos__(self: _Self) -> Tensor:
        return self

    def __abs__(self: _Self) -> Tensor:
        return _ops.abs(self)

    def __lt__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.less(self, other)

    def __le__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.less_equal(self, other)

    def __gt__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.greater(self, other)

    def __ge__(self: _Self, other: ArrayLike) -> Tensor:
        return _ops.greater_equal(self, other)

    def __eq__(self: _Self, other: ArrayLike) -> Tensor:  # type: ignore[override]  # elementwise, as NumPy
        return _ops.equal(self, other)

    def __ne__(self: _Self, other: ArrayLike) -> Tensor:  # type: ignore[override]  # elementwise, as NumPy
        return _ops.not_equal(self, other)

    # ``~ & | ^`` are logical on boolean tensors, as in NumPy; NumPy's bitwise meaning on integers is
    # not implemented, so integers raise rather than silently compute the logical result
    def _check_bool(self: _Self, symbol: str, *others) -> None:
        for v in (self, *others):
            kind = v.dtype.kind if hasattr(v, "dtype") else ("b" if isinstance(v, bool) else "?")
            if kind != "b":
                what = f"dtype {v.dtype}" if hasattr(v, "dtype") else f"a {type(v).__name__}"
                raise TypeError(
                    f"{symbol}: minidiff implements {symbol} for boolean tensors only (logical), got "
                    f"{what}; NumPy's bitwise {symbol} on integers is not supported"
                )

    def __invert__(self: _Self) -> Tensor:
        self._check_bool("~")
        return _ops.logical_not(self)

    def __and__(self: _Self, other: ArrayLike) -> Tensor:
        self._check_bool("&", other)
        return _ops.logical_and(self, other)

    def __rand__(self: _Self, other: ArrayLike) -> Tensor:
        self._check_bool("&", other)
        return _ops.logical_and(other, self)

    def __or__(self: _Self, other: ArrayLike) -> Tensor:
        self._check_bool("|", other)
        return _ops.logical_or(self, other)

    def __ror__(self: _Self, other: ArrayLike) -> Tensor:
        self._check_bool("|", other)
        return _ops.logical_or(other, self)

    def __xor__(self: _Self, other: ArrayLike) -> Tensor:
        self._check_bool("^", other)
        return _ops.logical_xor(self, other)

    def __rxor__(self: _Self, other: ArrayLike) -> Tensor:
        self._check_bool("^", other)
        return _ops.logical_xor(other, self)

    def __getitem__(self: _Self, index: Any) -> Tensor:
        return _ops.getitem(self, index)

    def __setitem__(self: _Self, index: Any, value: ArrayLike) -> NoReturn:
        raise TypeError(
            f"tensors do not support item assignment (x[{index!r}] = ...): a minidiff tensor is a value. "
            "Write x = x.at[index].set(value) (or .add(value)): it returns a new tensor and is "
            "differentiable with respect to both x and value"
        )

    @property
    def at(self: _Self) -> IndexUpdater:
        """Functional index updates, in JAX's spelling: ``x.at[index].set(v)``, ``.add(v)``,
        ``.multiply(v)``, ``.min(v)``, ``.max(v)`` and ``.get()`` return a new tensor (``x`` is
        unchanged), differentiable with respect to ``x`` and ``v`` in every mode.

        >>> import minidiff as md
        >>> x = md.zeros(4)
        >>> x.at[1].set(5.0).tolist(), x.at[md.tensor([0, 0, 3])].add(1.0).tolist()
        ([0.0, 5.0, 0.0, 0.0], [2.0, 0.0, 0.0, 1.0])
        """

        return IndexUpdater(self)

    # ----------------------------------------------------------------- method spellings
    # The ndarray methods a NumPy user calls, with NumPy's keywords; each is the md function of the
    # same name, differentiable where the math is.  ``out=`` (minidiff never writes into an array),
    # ``where=`` and ``initial=`` raise; ``dtype=`` casts first, as NumPy's accumulator dtype does.
    @property
    def T(self: _Self) -> Tensor:
        return _ops.transpose(self)

    @property
    def real(self: _Self) -> Tensor:
        """The real part: the tensor itself (minidiff tensors are real)."""
        return self

    @property
    def imag(self: _Self) -> Tensor:
        """The imaginary part: zeros (minidiff tensors are real)."""

        return zeros(self.shape, dtype=self.dtype, device=self.device)

    def conj(self: _Self) -> Tensor:
        """The complex conjugate: the tensor itself (minidiff tensors are real)."""
        return self

    conjugate = conj

    def reshape(self: _Self, *shape: Any, order: str = "C", copy: bool | None = None) -> Tensor:
        """``md.reshape(self, shape)``; ``t.reshape(2, 3)`` and ``t.reshape((2, 3))`` both work.

        >>> import minidiff as md
        >>> md.arange(6.0).reshape(2, -1).shape
        (2, 3)
        """
        _check_order("reshape", order)
        if not shape:
            raise TypeError("reshape: a new shape is required, e.g. t.reshape(2, 3)")
        return _ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    def ravel(self: _Self, order: str = "C") -> Tensor:
        """The elements as a 1-D tensor, in row-major order."""
        _check_order("ravel", order)
        return _ops.ravel(self)

    def flatten(self: _Self, order: str = "C") -> Tensor:
        """The elements as a 1-D tensor (tensors are values, so this is :meth:`ravel`)."""
        _check_order("flatten", order)
        return _ops.ravel(self)

    def squeeze(self: _Self, axis: Axis = None) -> Tensor:
        return _ops.squeeze(self, axis)

    def transpose(self: _Self, *axes: Any) -> Tensor:
        return _ops.transpose(self, (axes[0] if len(axes) == 1 else axes) or None)

    def swapaxes(self: _Self, axis1: int, axis2: int) -> Tensor:
        return _ops.swapaxes(self, axis1, axis2)

    def repeat(self: _Self, repeats: ArrayLike, axis: int | None = None) -> Tensor:
        return _ops.repeat(self, repeats, axis)

    def astype(
        self: _Self,
        dtype: DTypeLike,
        order: str = "K",
        casting: str = "unsafe",
        subok: bool = True,
        copy: bool = True,
    ) -> Tensor:
        """``self`` converted to ``dtype`` (differentiable between floating dtypes)."""
        if casting != "unsafe":
            raise NotImplementedError(f"astype: only casting='unsafe' is supported, not {casting!r}")
        return _ops.astype(self, dtype)

    def copy(self: _Self, order: str = "C") -> Tensor:
        """A new tensor with the same values (on a tape, a new node: the copy is not the leaf).

        ``order`` is accepted for NumPy's signature; the copy is row-major."""
        return wrap(self._data.copy(), self._device)

    def sum(
        self: _Self,
        axis: Axis = None,
        dtype: DTypeLike = None,
        out: None = None,
        keepdims: bool = False,
        initial: Any = _NO_VALUE,
        where: Any = True,
    ) -> Tensor:
        _unsupported("sum", out=out, initial=initial, where=where)
        return _ops.sum(_cast("sum", self, dtype), axis=axis, keepdims=keepdims)

    def mean(
        self: _Self,
        axis: Axis = None,
        dtype: DTypeLike = None,
        out: None = None,
        keepdims: bool = False,
        *,
        where: Any = True,
    ) -> Tensor:
        _unsupported("mean", out=out, where=where)
        return _ops.mean(_cast("mean", self, dtype), axis=axis, keepdims=keepdims)

    def var(
        self: _Self,
        axis: Axis = None,
        dtype: DTypeLike = None,
        out: None = None,
        ddof: int = 0,
        keepdims: bool = False,
        *,
        where: Any = True,
    ) -> Tensor:
        _unsupported("var", out=out, where=where)
        return _ops.var(_cast("var", self, dtype), axis=axis, keepdims=keepdims, ddof=ddof)

    def std(
        self: _Self,
        axis: Axis = None,
        dtype: DTypeLike = None,
        out: None = None,
        ddof: int = 0,
        keepdims: bool = False,
        *,
        where: Any = True,
    ) -> Tensor:
        _unsupported("std", out=out, where=where)
        return _ops.std(_cast("std", self, dtype), axis=axis, keepdims=keepdims, ddof=ddof)

    def prod(
        self: _Self,
        axis: Axis = None,
        dtype: DTypeLike = None,
        out: None = None,
        keepdims: bool = False,
        initial: Any = _NO_VALUE,
        where: Any = True,
    ) -> Tensor:
        _unsupported("prod", out=out, initial=initial, where=where)
        return _ops.prod(_cast("prod", self, dtype), axis=axis, keepdims=keepdims)

    def max(
        self: _Self,
        axis: Axis = None,
        out: None = None,
        keepdims: bool = False,
        initial: Any = _NO_VALUE,
        where: Any = True,
    ) -> Tensor:
        _unsupported("max", out=out, initial=initial, where=where)
        return _ops.max(self, axis=axis, keepdims=keepdims)

    def min(
        self: _Self,
        axis: Axis = None,
        out: None = None,
        keepdims: bool = False,
        initial: Any = _NO_VALUE,
        where: Any = True,
    ) -> Tensor:
        _unsupported("min", out=out, initial=initial, where=where)
        return _ops.min(self, axis=axis, keepdims=keepdims)

    def argmax(self: _Self, axis: int | None = None, out: None = None, *, keepdims: bool = False) -> Tensor:
        _unsupported("argmax", out=out)
        return _keep(_ops.argmax(self, axis=axis), self, axis, keepdims)

    def argmin(self: _Self, axis: int | None = None, out: None = None, *, keepdims: bool = False) -> Tensor:
        _unsupported("argmin", out=out)
        return _keep(_ops.argmin(self, axis=axis), self, axis, keepdims)

    def any(
        self: _Self, axis: Axis = None, out: None = None, keepdims: bool = False, *, where: Any = True
    ) -> Tensor:
        _unsupported("any", out=out, where=where)
        return _keep(_ops.any(self, axis=axis), self, axis, keepdims)

    def all(
        self: _Self, axis: Axis = None, out: None = None, keepdims: bool = False, *, where: Any = True
    ) -> Tensor:
        _unsupported("all", out=out, where=where)
        return _keep(_ops.all(self, axis=axis), self, axis, keepdims)

    def cumsum(self: _Self, axis: int | None = None, dtype: DTypeLike = None, out: None = None) -> Tensor:
        _unsupported("cumsum", out=out)
        return _ops.cumsum(_cast("cumsum", self, dtype), axis=axis)

    def clip(
        self: _Self,
        min: ArrayLike | None = None,  # noqa: A002 - NumPy's names
        max: ArrayLike | None = None,  # noqa: A002
        out: None = None,
    ) -> Tensor:
        _unsupported("clip", out=out)
        return _ops.clip(self, min, max)

    def dot(self: _Self, b: ArrayLike, out: None = None) -> Tensor:
        _unsupported("dot", out=out)
        return _ops.dot(self, b)

    def exp(self: _Self) -> Tensor:
        return _ops.exp(self)

    def log(self: _Self) -> Tensor:
        return _ops.log(self)

    def __round__(self: _Self, ndigits: int | None = None) -> NoReturn:
        raise TypeError(
            "round(): minidiff has no rounding operation; use md.floor(x + 0.5) (a constant, no "
            "derivative) or x.detach().item() for a Python number"
        )


class _TracerMethods:
    """Where a traced value differs."""

    def copy(self: _Self, order: str = "C") -> Tensor:
        return _ops.getitem(self, Ellipsis)  # a new traced value (on a tape, a new node)


_CLASS_ATTRIBUTES = {"__module__", "__qualname__", "__dict__", "__weakref__", "__doc__"}
_CLASS_ATTRIBUTES |= {"__firstlineno__", "__static_attributes__"}  # Python 3.13+


def attach() -> None:
    """Add the operators and methods to :class:`Tensor` and :class:`Tracer` (done once, on import)."""
    for cls, methods in ((Tensor, _TensorMethods), (Tracer, _TracerMethods)):
        for name, value in vars(methods).items():
            if name not in _CLASS_ATTRIBUTES:
                setattr(cls, name, value)


attach()
