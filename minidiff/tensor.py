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
from .errors import TracerError

_ops = None  # minidiff.ops, bound when the package is imported (operators call into it)


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
    def numpy(self):
        """The value as a host NumPy array (a copy for device arrays, the array itself on the CPU)."""
        return self._device.to_host(self._data)

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """NEP 13: ``np.sin(t)``, ``ndarray + t``... run minidiff's function (see :mod:`minidiff.numpy_api`)."""
        from .numpy_api import array_ufunc

        return array_ufunc(ufunc, method, *inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        """NEP 18: ``np.sum(t)``, ``np.linalg.solve(a, t)``... run minidiff's function (same module)."""
        from .numpy_api import array_function

        return array_function(func, types, args, kwargs)

    def item(self):
        """The value of a one-element tensor as a Python scalar."""
        if self.size != 1:
            raise ValueError(f"item: tensor of shape {self.shape} has {self.size} elements, not 1")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError(
                f"the truth value of a tensor of shape {self.shape} is ambiguous; use md.any or md.all"
            )
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.kind not in "iu":
            raise TypeError(f"only integer tensors can be used as an index, not {self.dtype}")
        return int(self.item())

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

    def astype(self, dtype) -> Tensor:
        return _ops.astype(self, dtype)

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

    def __invert__(self):
        return _ops.logical_not(self)

    def __and__(self, other):
        return _ops.logical_and(self, other)

    def __or__(self, other):
        return _ops.logical_or(self, other)

    def __getitem__(self, index):
        return _ops.getitem(self, index)

    # ----------------------------------------------------------------- method spellings
    @property
    def T(self) -> Tensor:
        return _ops.transpose(self)

    def reshape(self, *shape):
        return _ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return _ops.transpose(self, (axes[0] if len(axes) == 1 else axes) or None)

    def sum(self, axis=None, keepdims=False):
        return _ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return _ops.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return _ops.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        return _ops.min(self, axis=axis, keepdims=keepdims)

    def exp(self):
        return _ops.exp(self)

    def log(self):
        return _ops.log(self)

    def dot(self, other):
        return _ops.dot(self, other)


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
        value = self
        while isinstance(value, Tracer):
            if value._shape != value.primal.shape:
                raise TracerError(
                    "numpy/item: a tensor inside vmap has no single value; return it from the "
                    "vmapped function instead"
                )
            value = value.primal
        return value.numpy()

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
