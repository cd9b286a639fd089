"""The user-facing array type.

A :class:`Tensor` wraps one backend array (``_data``) and the :class:`~minidiff.backend.Device`
it lives on.  Transforms wrap tensors in *tracers* (subclasses of :class:`Tracer`): a dual number
in forward mode, a tape entry in reverse mode, a batch of values under ``vmap``.  Each tracer
belongs to one *trace* (one transform call, one level), and holds its ``primal``: the value one
level down.  Operators dispatch to the primitives, which find the highest-level tracer among their
arguments and let its trace decide what to do (see :mod:`minidiff.primitives.registry`).
"""

from __future__ import annotations

from . import backend
from .errors import DTypeError, TapeError, TracerError

_ops = None  # minidiff.ops, bound when the package is imported (operators call into it)

# how a value is read out (``Tensor._concrete``): as text or control flow (derivatives need not be
# kept), as a Python number, or as a NumPy array
VALUE, SCALAR, ARRAY = "value", "scalar", "array"

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


class Tensor:
    """An n-dimensional array on a device, with NumPy semantics and operator overloading.

    Example:
        >>> import minidiff as md
        >>> x = md.tensor([1.0, 2.0, 3.0])
        >>> (x * 2 + 1).numpy().tolist()
        [3.0, 5.0, 7.0]
        >>> x.shape, str(x.dtype), str(x.device)
        ((3,), 'float64', 'cpu')
    """

    __slots__ = ("_data", "_device", "__weakref__")
    _level = 0  # concrete values sit below every trace
    __array_priority__ = 1000  # make NumPy defer to our reflected operators

    # ----------------------------------------------------------------- metadata
    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def device(self) -> backend.Device:
        return self._device

    @property
    def requires_grad(self) -> bool:
        """Whether operations on this tensor are recorded on the tape (see ``requires_grad_``)."""
        return False

    @property
    def grad(self):
        """Gradient accumulated by ``backward()``; ``None`` for tensors that are not tape leaves."""
        return None

    @property
    def is_leaf(self) -> bool:
        return True

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # ----------------------------------------------------------------- values
    # Reading a value out of minidiff (a NumPy array, a Python number) drops its derivatives.  A plain
    # tensor converts freely; a value that carries derivatives raises TracerError instead of
    # converting silently (see ``Tracer._concrete`` and docs/tensor.md).
    def _concrete(self, op: str, mode: str) -> Tensor:
        """The plain tensor under this value, or a TracerError if reading it for ``op`` would lose a
        derivative.  Plain tensors are their own concrete value."""
        return self

    def numpy(self):
        """The value as a host NumPy array.

        On the CPU the array shares the tensor's memory and is **read-only** (a tensor is a value:
        ``t.numpy().copy()`` gives an array to write into); from a GPU it is a fresh copy.  A value
        traced inside ``grad``/``jvp``/``vjp``/``hvp``/``vmap`` raises
        :class:`~minidiff.errors.TracerError` (the array would lose its derivative): use
        ``t.detach().numpy()`` for a constant.  A ``requires_grad=True`` tensor of the tape style gives
        its value, read-only, as a constant (PyTorch raises there; see docs/tensor.md).

        >>> import minidiff as md
        >>> a = md.tensor([1.0, 2.0]).numpy()
        >>> a.tolist(), a.flags.writeable
        ([1.0, 2.0], False)
        """
        a = self._device.to_host(self._data)
        if a is self._data and isinstance(a, self._device.array_type):  # share memory read-only
            a = a.view()
            a.flags.writeable = False
        return a

    def __array__(self, dtype=None, copy=None):
        a = self._concrete("np.asarray", ARRAY).numpy()
        if dtype is not None and a.dtype != dtype:
            return a.astype(dtype)
        return a.copy() if copy else a

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """NEP 13: ``np.sin(t)``, ``ndarray + t``... run minidiff's function (see :mod:`minidiff.numpy_api`)."""
        from .numpy_api import array_ufunc

        return array_ufunc(ufunc, method, *inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        """NEP 18: ``np.sum(t)``, ``np.linalg.solve(a, t)``... run minidiff's function (same module)."""
        from .numpy_api import array_function

        return array_function(func, types, args, kwargs)

    def _scalar(self, op: str, mode: str):
        value = self._concrete(op, mode)
        if value.size != 1:
            raise ValueError(f"{op}: tensor of shape {self.shape} has {value.size} elements, not 1")
        return value.numpy().reshape(()).item()

    def item(self):
        """The value of a one-element tensor as a Python scalar (a constant: no derivative).

        Inside ``grad``/``jvp``/``vjp``/``hvp``, on a value that carries a derivative, this raises
        :class:`~minidiff.errors.TracerError` rather than return a number that silently loses it; use
        ``x.detach().item()`` to read the value on purpose.  A ``requires_grad=True`` tensor of the
        tape style gives its value, as PyTorch's ``item()`` does (handy for logging a loss).

        >>> import minidiff as md
        >>> md.tensor([2.5]).item()
        2.5
        >>> md.tensor(3.0, requires_grad=True).item()
        3.0
        """
        return self._scalar("item()", SCALAR)

    def tolist(self):
        """The value as nested Python lists (a constant; same rules as :meth:`item`)."""
        return self._concrete("tolist()", SCALAR).numpy().tolist()

    def __bool__(self) -> bool:
        # control flow on a traced value is fine (the derivative of each branch is still right)
        if self.size != 1:
            raise ValueError(
                f"the truth value of a tensor of shape {self.shape} is ambiguous; use md.any or md.all"
            )
        return bool(self._scalar("bool()", VALUE))

    def __float__(self) -> float:
        return float(self._scalar("float() (which Python's math functions call)", SCALAR))

    def __int__(self) -> int:
        return int(self._scalar("int()", SCALAR))

    def __complex__(self) -> complex:
        return complex(self._scalar("complex()", SCALAR))

    def __index__(self) -> int:
        if self.dtype.kind not in "iu":
            raise TypeError(f"only integer tensors can be used as an index, not {self.dtype}")
        return int(self._scalar("index", VALUE))

    def __format__(self, spec: str) -> str:
        # text never flows back into a computation, so formatting a traced value is allowed
        if not spec:
            return str(self)
        return format(self._scalar("format()", VALUE), spec)

    def __repr__(self) -> str:
        body = repr(self.numpy()).replace("array(", "tensor(", 1)
        if self._device.name != "cpu":
            body = body[:-1] + f", device='{self._device.name}')"
        return body

    def __hash__(self):
        return id(self)

    # ----------------------------------------------------------------- conversion
    def to(self, device) -> Tensor:
        """A copy on ``device`` (``"cpu"`` or ``"cuda"``); the tensor itself if already there."""
        dev = backend.get_device(device)
        if dev is self._device:
            return self
        return _ops.to_device(self, dev)

    def detach(self) -> Tensor:
        """The same values with every derivative dropped (no tape entry, no tangent)."""
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Return a tape leaf with this value whose operations will be recorded (tape style).

        Unlike PyTorch this returns a new tensor: minidiff tensors are values, never changed in place
        by the tape.
        """
        if not requires_grad:
            return self.detach()
        from .reverse import make_leaf

        return make_leaf(self)

    # ----------------------------------------------------------------- reverse mode, tape style
    def backward(self, cotangent=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every tape leaf it depends on."""
        from .reverse import backward

        backward(self, cotangent, retain_graph)

    # ----------------------------------------------------------------- operators
    def __add__(self, other):
        return _ops.add(self, other)

    def __radd__(self, other):
        return _ops.add(other, self)

    def __sub__(self, other):
        return _ops.subtract(self, other)

    def __rsub__(self, other):
        return _ops.subtract(other, self)

    def __mul__(self, other):
        return _ops.multiply(self, other)

    def __rmul__(self, other):
        return _ops.multiply(other, self)

    def __truediv__(self, other):
        return _ops.divide(self, other)

    def __rtruediv__(self, other):
        return _ops.divide(other, self)

    def __pow__(self, other):
        return _ops.power(self, other)

    def __rpow__(self, other):
        return _ops.power(other, self)

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    def __mod__(self, other):
        return _ops.remainder(self, other)

    def __rmod__(self, other):
        return _ops.remainder(other, self)

    def __floordiv__(self, other):
        return _ops.floor_divide(self, other)

    def __rfloordiv__(self, other):
        return _ops.floor_divide(other, self)

    def __divmod__(self, other):
        return _ops.divmod(self, other)

    def __rdivmod__(self, other):
        return _ops.divmod(other, self)

    # In-place operators.  A tensor is a value, so ``x += v`` makes a new tensor and rebinds ``x`` to
    # it, as ``x = x + v`` does.  On a tape-style leaf (``requires_grad=True``) that rebinding would
    # send the gradient to the old leaf and leave ``x.grad`` None, so it raises instead.
    def _inplace(self, symbol: str, op, other):
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

    def _is_tape_leaf(self) -> bool:
        return False

    def __iadd__(self, other):
        return self._inplace("+=", _ops.add, other)

    def __isub__(self, other):
        return self._inplace("-=", _ops.subtract, other)

    def __imul__(self, other):
        return self._inplace("*=", _ops.multiply, other)

    def __itruediv__(self, other):
        return self._inplace("/=", _ops.divide, other)

    def __ifloordiv__(self, other):
        return self._inplace("//=", _ops.floor_divide, other)

    def __imod__(self, other):
        return self._inplace("%=", _ops.remainder, other)

    def __ipow__(self, other):
        return self._inplace("**=", _ops.power, other)

    def __imatmul__(self, other):
        return self._inplace("@=", _ops.matmul, other)

    def __iand__(self, other):
        return self._inplace("&=", Tensor.__and__, other)

    def __ior__(self, other):
        return self._inplace("|=", Tensor.__or__, other)

    def __ixor__(self, other):
        return self._inplace("^=", Tensor.__xor__, other)

    def __neg__(self):
        return _ops.negative(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ops.abs(self)

    def __lt__(self, other):
        return _ops.less(self, other)

    def __le__(self, other):
        return _ops.less_equal(self, other)

    def __gt__(self, other):
        return _ops.greater(self, other)

    def __ge__(self, other):
        return _ops.greater_equal(self, other)

    def __eq__(self, other):
        return _ops.equal(self, other)

    def __ne__(self, other):
        return _ops.not_equal(self, other)

    # ``~ & | ^`` are logical on boolean tensors, as in NumPy; NumPy's bitwise meaning on integers is
    # not implemented, so integers raise rather than silently compute the logical result
    def _check_bool(self, symbol: str, *others) -> None:
        for v in (self, *others):
            kind = v.dtype.kind if hasattr(v, "dtype") else ("b" if isinstance(v, bool) else "?")
            if kind != "b":
                what = f"dtype {v.dtype}" if hasattr(v, "dtype") else f"a {type(v).__name__}"
                raise TypeError(
                    f"{symbol}: minidiff implements {symbol} for boolean tensors only (logical), got "
                    f"{what}; NumPy's bitwise {symbol} on integers is not supported"
                )

    def __invert__(self):
        self._check_bool("~")
        return _ops.logical_not(self)

    def __and__(self, other):
        self._check_bool("&", other)
        return _ops.logical_and(self, other)

    def __rand__(self, other):
        self._check_bool("&", other)
        return _ops.logical_and(other, self)

    def __or__(self, other):
        self._check_bool("|", other)
        return _ops.logical_or(self, other)

    def __ror__(self, other):
        self._check_bool("|", other)
        return _ops.logical_or(other, self)

    def __xor__(self, other):
        self._check_bool("^", other)
        return _ops.logical_xor(self, other)

    def __rxor__(self, other):
        self._check_bool("^", other)
        return _ops.logical_xor(other, self)

    def __getitem__(self, index):
        return _ops.getitem(self, index)

    def __setitem__(self, index, value):
        raise TypeError(
            f"tensors do not support item assignment (x[{index!r}] = ...): a minidiff tensor is a value. "
            "Write x = x.at[index].set(value) (or .add(value)): it returns a new tensor and is "
            "differentiable with respect to both x and value"
        )

    @property
    def at(self):
        """Functional index updates, in JAX's spelling: ``x.at[index].set(v)``, ``.add(v)``,
        ``.multiply(v)``, ``.min(v)``, ``.max(v)`` and ``.get()`` return a new tensor (``x`` is
        unchanged), differentiable with respect to ``x`` and ``v`` in every mode.

        >>> import minidiff as md
        >>> x = md.zeros(4)
        >>> x.at[1].set(5.0).tolist(), x.at[md.tensor([0, 0, 3])].add(1.0).tolist()
        ([0.0, 5.0, 0.0, 0.0], [2.0, 0.0, 0.0, 1.0])
        """
        from .indexing import IndexUpdater

        return IndexUpdater(self)

    # ----------------------------------------------------------------- method spellings
    # The ndarray methods a NumPy user calls, with NumPy's keywords; each is the md function of the
    # same name, differentiable where the math is.  ``out=`` (minidiff never writes into an array),
    # ``where=`` and ``initial=`` raise; ``dtype=`` casts first, as NumPy's accumulator dtype does.
    @property
    def T(self) -> Tensor:
        return _ops.transpose(self)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def real(self) -> Tensor:
        """The real part: the tensor itself (minidiff tensors are real)."""
        return self

    @property
    def imag(self) -> Tensor:
        """The imaginary part: zeros (minidiff tensors are real)."""
        from .creation import zeros

        return zeros(self.shape, dtype=self.dtype, device=self.device)

    def conj(self) -> Tensor:
        """The complex conjugate: the tensor itself (minidiff tensors are real)."""
        return self

    conjugate = conj

    def reshape(self, *shape, order: str = "C", copy=None) -> Tensor:
        """``md.reshape(self, shape)``; ``t.reshape(2, 3)`` and ``t.reshape((2, 3))`` both work.

        >>> import minidiff as md
        >>> md.arange(6.0).reshape(2, -1).shape
        (2, 3)
        """
        _check_order("reshape", order)
        if not shape:
            raise TypeError("reshape: a new shape is required, e.g. t.reshape(2, 3)")
        return _ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    def ravel(self, order: str = "C") -> Tensor:
        """The elements as a 1-D tensor, in row-major order."""
        _check_order("ravel", order)
        return _ops.ravel(self)

    def flatten(self, order: str = "C") -> Tensor:
        """The elements as a 1-D tensor (tensors are values, so this is :meth:`ravel`)."""
        _check_order("flatten", order)
        return _ops.ravel(self)

    def squeeze(self, axis=None) -> Tensor:
        return _ops.squeeze(self, axis)

    def transpose(self, *axes) -> Tensor:
        return _ops.transpose(self, (axes[0] if len(axes) == 1 else axes) or None)

    def swapaxes(self, axis1: int, axis2: int) -> Tensor:
        return _ops.swapaxes(self, axis1, axis2)

    def repeat(self, repeats, axis=None) -> Tensor:
        return _ops.repeat(self, repeats, axis)

    def astype(self, dtype, order: str = "K", casting: str = "unsafe", subok: bool = True, copy=True):
        """``self`` converted to ``dtype`` (differentiable between floating dtypes)."""
        if casting != "unsafe":
            raise NotImplementedError(f"astype: only casting='unsafe' is supported, not {casting!r}")
        return _ops.astype(self, dtype)

    def copy(self, order: str = "C") -> Tensor:
        """A new tensor with the same values (on a tape, a new node: the copy is not the leaf).

        ``order`` is accepted for NumPy's signature; the copy is row-major."""
        return wrap(self._data.copy(), self._device)

    def sum(self, axis=None, dtype=None, out=None, keepdims=False, initial=_NO_VALUE, where=True):
        _unsupported("sum", out=out, initial=initial, where=where)
        return _ops.sum(_cast("sum", self, dtype), axis=axis, keepdims=keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False, *, where=True):
        _unsupported("mean", out=out, where=where)
        return _ops.mean(_cast("mean", self, dtype), axis=axis, keepdims=keepdims)

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True):
        _unsupported("var", out=out, where=where)
        return _ops.var(_cast("var", self, dtype), axis=axis, keepdims=keepdims, ddof=ddof)

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True):
        _unsupported("std", out=out, where=where)
        return _ops.std(_cast("std", self, dtype), axis=axis, keepdims=keepdims, ddof=ddof)

    def prod(self, axis=None, dtype=None, out=None, keepdims=False, initial=_NO_VALUE, where=True):
        _unsupported("prod", out=out, initial=initial, where=where)
        return _ops.prod(_cast("prod", self, dtype), axis=axis, keepdims=keepdims)

    def max(self, axis=None, out=None, keepdims=False, initial=_NO_VALUE, where=True):
        _unsupported("max", out=out, initial=initial, where=where)
        return _ops.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, out=None, keepdims=False, initial=_NO_VALUE, where=True):
        _unsupported("min", out=out, initial=initial, where=where)
        return _ops.min(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None, out=None, *, keepdims=False) -> Tensor:
        _unsupported("argmax", out=out)
        return _keep(_ops.argmax(self, axis=axis), self, axis, keepdims)

    def argmin(self, axis=None, out=None, *, keepdims=False) -> Tensor:
        _unsupported("argmin", out=out)
        return _keep(_ops.argmin(self, axis=axis), self, axis, keepdims)

    def any(self, axis=None, out=None, keepdims=False, *, where=True) -> Tensor:
        _unsupported("any", out=out, where=where)
        return _keep(_ops.any(self, axis=axis), self, axis, keepdims)

    def all(self, axis=None, out=None, keepdims=False, *, where=True) -> Tensor:
        _unsupported("all", out=out, where=where)
        return _keep(_ops.all(self, axis=axis), self, axis, keepdims)

    def cumsum(self, axis=None, dtype=None, out=None) -> Tensor:
        _unsupported("cumsum", out=out)
        return _ops.cumsum(_cast("cumsum", self, dtype), axis=axis)

    def clip(self, min=None, max=None, out=None) -> Tensor:  # noqa: A002 - NumPy's names
        _unsupported("clip", out=out)
        return _ops.clip(self, min, max)

    def dot(self, b, out=None) -> Tensor:
        _unsupported("dot", out=out)
        return _ops.dot(self, b)

    def exp(self) -> Tensor:
        return _ops.exp(self)

    def log(self) -> Tensor:
        return _ops.log(self)

    def __round__(self, ndigits=None):
        raise TypeError(
            "round(): minidiff has no rounding operation; use md.floor(x + 0.5) (a constant, no "
            "derivative) or x.detach().item() for a Python number"
        )


class Tracer(Tensor):
    """A tensor that belongs to one transform call (a *trace*), wrapping a value one level down."""

    __slots__ = ("_trace", "_level", "primal", "_shape")

    def _init(self, trace, primal: Tensor, shape=None):
        self._trace = trace
        self._level = trace.level
        self.primal = primal
        self._data = primal._data
        self._device = primal._device
        self._shape = primal.shape if shape is None else shape

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def numpy(self):
        return self._concrete("numpy()", ARRAY).numpy()

    def copy(self, order: str = "C") -> Tensor:
        return _ops.getitem(self, Ellipsis)  # a new traced value (on a tape, a new node)

    def _is_tape_leaf(self) -> bool:
        return self._trace.kind == "tape" and self.is_leaf

    def _concrete(self, op: str, mode: str) -> Tensor:
        """The plain value under this tracer, or a TracerError saying why reading it would be wrong.

        * the tracer escaped its transform (its trace is closed): always an error;
        * a batch of values inside ``vmap``: no single value to read;
        * a value that carries a derivative of a transform (a dual number, an entry of a ``vjp``
          tape): converting it to a Python number or a NumPy array would drop that derivative
          silently, so it raises.  Text and control flow (``mode == VALUE``) read the value freely,
          and so does the tape style (``requires_grad=True``, the ambient tape): reading a
          parameter or a loss there is an explicit act outside any transform, and gives a constant
          (a read-only array for ``numpy()``), as ``item()`` does in PyTorch.
        """
        value = self
        while isinstance(value, Tracer):
            trace = value._trace
            if not trace.active:
                raise TracerError(
                    f"{op}: this value was traced by {trace}, which has already returned (the tensor "
                    "escaped it, e.g. through a global or a closure); return it from the transformed "
                    "function, or .detach() it inside"
                )
            if value._shape != value.primal.shape:
                raise TracerError(
                    f"{op}: a tensor inside vmap has no single value; return it from the vmapped "
                    "function instead"
                )
            if mode != VALUE and trace.kind != "tape":
                raise TracerError(_lost_derivative(op, mode, value))
            value = value.primal
        return value

    def detach(self) -> Tensor:
        value = self
        while isinstance(value, Tracer):
            if value._shape != value.primal.shape:  # keep the batch structure of vmap
                return value._trace.detached(value)
            value = value.primal
        return value

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}(level={self._level}, shape={self.shape}, dtype={self.dtype})"


def _lost_derivative(op: str, mode: str, value: Tracer) -> str:
    what, read = ("a NumPy array", ".numpy()") if mode == ARRAY else ("a Python number", ".item()")
    return (
        f"{op}: this value ({value.dtype}{list(value.shape)}) is traced by {value._trace} and carries "
        f"a derivative; converting it to {what} would silently lose that derivative. Keep computing "
        "with minidiff functions (md.sin, md.exp, md.sum, ... instead of math or NumPy on a converted "
        f"value), or read the value as a constant on purpose with .detach(){read}"
    )


def wrap(data, device) -> Tensor:
    """Wrap a backend array (no copy, no checks): the constructor every primitive uses."""
    t = object.__new__(Tensor)
    t._data = data
    t._device = device
    return t


def column_major(x) -> bool:
    """Whether a 2-D value is stored column by column (e.g. ``W.T`` of a row-major ``W``).

    Rules may use it to produce a cotangent in its value's memory order, which makes the gradient
    of a weight used as ``W.T`` row-major, as a hand-written backprop computes it (and BLAS is faster).
    Tape stubs of unsaved inputs carry the answer; traced values answer False.
    """
    hint = getattr(x, "column_major", None)
    if hint is not None:
        return hint
    if type(x) is not Tensor or x._data.ndim != 2:
        return False
    flags = x._data.flags
    return bool(flags.f_contiguous and not flags.c_contiguous)
