"""The user-facing array type.

A :class:`Tensor` wraps one backend array (``_data``) and the :class:`~minidiff.backend.Device`
it lives on.  Transforms wrap tensors in *tracers* (subclasses of :class:`Tracer`): a dual number
in forward mode, a tape entry in reverse mode, a batch of values under ``vmap``.  Each tracer
belongs to one *trace* (one transform call, one level), and holds its ``primal``: the value one
level down.  Operators dispatch to the primitives, which find the highest-level tracer among their
arguments and let its trace decide what to do (see :mod:`minidiff.primitives.registry`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, Union

from .. import backend
from ..errors import DeviceError, DTypeError, MinidiffError, ShapeError, TracerError

if TYPE_CHECKING:  # for type checkers only: the operators and methods modes/tensor_methods.py attaches
    from ..modes.tensor_methods import _TensorMethods as _AttachedMethods
else:
    _AttachedMethods = object


class _SupportsArray(Protocol):
    def __array__(self) -> Any: ...


#: What the array functions accept besides a tensor: Python numbers, nested sequences of them, NumPy
#: (or CuPy) arrays and anything else with ``__array__``.
ArrayLike = Union["Tensor", _SupportsArray, complex, float, int, bool, Sequence[Any]]
#: An axis argument of a reduction: one axis, several, or None for all.
Axis = int | tuple[int, ...] | None
#: A shape: one length or a sequence of them.
ShapeLike = int | Sequence[int]
#: A device: a :class:`~minidiff.backend.Device`, its name (``"cpu"``, ``"cuda"``), or None for the default.
DeviceLike = backend.Device | str | None
#: A dtype as NumPy takes it: a name (``"float32"``), a type (``float``), a NumPy dtype.
DTypeLike = Any

# how a value is read out (``Tensor._concrete``): as text or control flow (derivatives need not be
# kept), as a Python number, or as a NumPy array
VALUE, SCALAR, ARRAY = "value", "scalar", "array"


class Tensor(_AttachedMethods):
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
    _data: Any  # the backend array (NumPy or CuPy)
    _device: backend.Device
    _level = 0  # concrete values sit below every trace
    __array_priority__ = 1000  # make NumPy defer to our reflected operators

    # ----------------------------------------------------------------- metadata
    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self) -> Any:  # a NumPy dtype
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def device(self) -> backend.Device:
        return self._device

    @property
    def requires_grad(self) -> bool:
        """Whether operations on this tensor are recorded on the tape (see ``requires_grad_``)."""
        return False

    @property
    def grad(self) -> Tensor | None:
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

    def numpy(self) -> Any:  # a NumPy ndarray
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

    def _scalar(self, op: str, mode: str):
        value = self._concrete(op, mode)
        if value.size != 1:
            raise ValueError(f"{op}: tensor of shape {self.shape} has {value.size} elements, not 1")
        return value.numpy().reshape(()).item()

    def item(self) -> Any:  # a Python bool, int, float or complex
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

    def tolist(self) -> Any:
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

    def detach(self) -> Tensor:
        """The same values with every derivative dropped (no tape entry, no tangent)."""
        return self

    def _is_tape_leaf(self) -> bool:
        return False

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


class Tracer(Tensor):
    """A tensor that belongs to one transform call (a *trace*), wrapping a value one level down."""

    __slots__ = ("_trace", "_level", "primal", "_shape")
    is_batch = False  # True for vmap's tracers, whose value holds a whole batch (minidiff.modes.batching)

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
        value: Tensor = self
        while isinstance(value, Tracer):
            trace = value._trace
            if not trace.active:
                raise escaped(op, trace)
            if value.is_batch:
                raise TracerError(
                    f"{op}: a tensor inside vmap has no single value; return it from the vmapped "
                    "function instead"
                )
            if mode != VALUE and trace.kind != "tape":
                raise TracerError(_lost_derivative(op, mode, value))
            value = value.primal
        return value

    def detach(self) -> Tensor:
        value: Tensor = self
        while isinstance(value, Tracer):
            if value.is_batch:  # keep the batch structure of vmap
                return value._trace.detached(value)
            value = value.primal
        return value

    def __repr__(self) -> str:
        """For display only: the kind and level of the tracer, its values and what its kind adds (a
        dual's tangent, a tape entry's ``grad_fn``), e.g. ``Dual(level=2, value=[1., 2.],
        tangent=[0., 1.])``.

        The text is read straight from the arrays underneath, without the conversions ``float()`` and
        ``.numpy()`` go through (which refuse a value that carries a derivative): a string cannot flow
        back into a computation, so printing loses no derivative, works inside every transform and
        after it returned, and summarizes large arrays as NumPy does.  A field whose array has more
        axes than the tracer's ``shape`` (a batch inside ``vmap``, K tangent directions) is named in the
        plural (``values=``, ``tangents=``): its leading axes are the batch or the directions.
        """
        head = f"{type(self).__name__}("
        fields = [f"level={self._level}"]
        for key, value in self._repr_fields():
            if isinstance(value, Tensor):
                key = key + "s" if value._data.ndim > self.ndim else key
                value = _array_text(value, prefix=" " * len(head) + f"{key}=")
            fields.append(f"{key}={value}")
        if self.size > _SUMMARY_THRESHOLD or self.size == 0:
            fields.append(f"shape={self.shape}")
        if self.dtype.name not in ("float64", "int64", "bool"):
            fields.append(f"dtype={self.dtype}")
        if self._device.name != "cpu":
            fields.append(f"device='{self._device.name}'")
        one_line = ", ".join(fields)
        if "\n" not in one_line and len(head) + len(one_line) < _LINE_WIDTH:
            return f"{head}{one_line})"
        return head + (",\n" + " " * len(head)).join(fields) + ")"  # a field per line, rows aligned

    def _repr_fields(self) -> list[tuple[str, object]]:
        """``(name, tensor or text)`` pairs shown by ``repr`` after the level (each kind adds its own)."""
        return [("value", self)]


_SUMMARY_THRESHOLD = 1000  # NumPy's default: larger arrays print as their corners with "..."
_LINE_WIDTH = 100


def _array_text(t: Tensor, prefix: str) -> str:
    """The values under ``t`` as NumPy prints them (display only: never goes through ``_concrete``);
    ``prefix`` is the text before it on its line, so the rows of a matrix line up under its first row."""
    host = t._device.to_host(t._data)
    if host.ndim == 0:
        return str(host[()])
    return backend.numpy_module.array2string(
        host, separator=", ", prefix=prefix, threshold=_SUMMARY_THRESHOLD, max_line_width=_LINE_WIDTH
    )


def _lost_derivative(op: str, mode: str, value: Tracer) -> str:
    what, read = ("a NumPy array", ".numpy()") if mode == ARRAY else ("a Python number", ".item()")
    return (
        f"{op}: this value ({value.dtype}{list(value.shape)}) is traced by {value._trace} and carries "
        f"a derivative; converting it to {what} would silently lose that derivative. Keep computing "
        "with minidiff functions (md.sin, md.exp, md.sum, ... instead of math or NumPy on a converted "
        f"value), or read the value as a constant on purpose with .detach(){read}"
    )


def check_differentiable(op: str, x) -> None:
    """Only floating tensors can carry derivatives: the one check behind every transform's inputs."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a tensor to differentiate, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise DTypeError(
            f"{op}: cannot differentiate with respect to a {x.dtype} tensor of shape {x.shape}; "
            "only floating-point inputs carry derivatives (convert with .astype('float64'))"
        )


def escaped(op: str, trace) -> TracerError:
    """The error for a tracer used after its transform returned (the one wording, wherever caught)."""
    return TracerError(
        f"{op}: a tensor traced by {trace} was used after that transform returned (it escaped, e.g. "
        "through a global or a closure); pass it as an argument or return it instead, or .detach() it "
        "inside"
    )


def check_like(op: str, what: str, value, like, of: str = "its primal") -> None:
    """``value`` (a tangent, a cotangent, a probe) must have the shape, dtype and device of ``like``;
    the one check behind every such pair, naming ``op`` and the field that differs."""
    error: type[MinidiffError]
    if value.shape != like.shape:
        error, field, hint = ShapeError, "shape", ""
    elif value.dtype != like.dtype:
        error, field, hint = DTypeError, "dtype", f"; cast it with .astype({like.dtype})"
    elif value.device is not like.device:
        error, field, hint = DeviceError, "device", "; move it with .to(device)"
    else:
        return
    raise error(
        f"{op}: {what} of {field} {getattr(value, field)} does not match {of} of {field} "
        f"{getattr(like, field)}{hint}"
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
