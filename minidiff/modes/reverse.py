"""Reverse mode: a tape.

While a reverse trace is open, every primitive applied to one of its :class:`Taped` tensors appends a
:class:`Node` to the tape: the primitive, its parent nodes, its parameters and *only* the inputs and
output that its VJP rule declares it reads (``prim.saves(wanted)``; the others are kept as
shape-and-dtype stubs that raise if a rule reads them).
:func:`walk` then visits the nodes once, newest first — a node is always newer than its parents, so
that is a reverse topological order — pushing cotangents through the VJP rules and summing them where a
value was used more than once.  Broadcasting is undone in one place, :func:`fit_cotangent`.

Two front ends share the walker: the functional ``vjp``/``grad`` (one fresh trace per call) and the
tape style of ``requires_grad=True`` tensors, recorded on the *ambient tape* (level 1)::

    >>> import minidiff as md
    >>> x = md.tensor([1.0, 2.0], requires_grad=True)
    >>> y = (x * x).sum()
    >>> y.backward()
    >>> x.grad.numpy().tolist()
    [2.0, 4.0]
"""

from __future__ import annotations

import itertools
import math
import operator
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import DeviceError, DTypeError, MinidiffError, ShapeError, TapeError, TracerError, describe
from ..primitives.creation import asarray
from ..primitives.registry import bind_args
from ..primitives.shape import sum_to
from ..tensor.core import ArrayLike, Tensor, Tracer, check_differentiable, check_like, column_major, escaped
from . import levels

_CREATED = [0]  # nodes made so far; also their creation order (parents are older than children)


def nodes_created() -> int:
    """How many tape nodes this process has recorded, on any tape (a forward-mode-only path leaves it
    unchanged): the one node counter."""
    return _CREATED[0]


class UndeclaredRead(TapeError):
    """A VJP rule read a value its ``reads=`` declaration does not name (so the tape did not keep it)."""


class _Unsaved:
    """Stands for a value the tape did not keep; reading it raises :class:`UndeclaredRead`."""

    __slots__ = ()

    @property
    def what(self) -> str:
        return "the output"

    def _undeclared(self, *_, **__):
        raise UndeclaredRead(
            f"its VJP rule read the value of {self.what}, which its reads= declaration does not name, "
            "so the tape did not keep it; add it to the rule's reads="
        )

    __array__ = __array_ufunc__ = __array_function__ = __getitem__ = __iter__ = _undeclared
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _undeclared
    __truediv__ = __rtruediv__ = __pow__ = __rpow__ = __matmul__ = __rmatmul__ = _undeclared
    __neg__ = __lt__ = __le__ = __gt__ = __ge__ = __float__ = __bool__ = _undeclared
    shape = dtype = ndim = size = property(_undeclared)


UNSAVED_OUTPUT = _Unsaved()


class Aval(_Unsaved):
    """An input the VJP rule does not declare it reads: the tape keeps its shape, dtype and device."""

    __slots__ = ("shape", "dtype", "device", "column_major", "_position")

    def __init__(self, x: Tensor, position: int = 0):
        self.shape, self.dtype, self.device = x.shape, x.dtype, x._device
        self.column_major = len(self.shape) == 2 and column_major(x)  # only matrices have an order
        self._position = position

    @property
    def what(self) -> str:
        return f"input {self._position} ({self.dtype}{list(self.shape)})"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class Freed(_Unsaved):
    """A value the tape kept for the VJP rules and released after ``backward()``: its shape and dtype
    stay (``format_tape`` shows it as freed)."""

    __slots__ = ("shape", "dtype")
    what = "a value freed by backward()"

    def __init__(self, x: Tensor):
        self.shape, self.dtype = x.shape, x.dtype


class _FreedValue:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<freed>"


FREED = _FreedValue()  # stands for a saved value (an input on the tape, the output, an index) freed


class Node:
    """One tape entry: how a value was made, and what its VJP rules need."""

    __slots__ = (
        "prim",
        "parents",
        "args",
        "ans",
        "params",
        "shape",
        "dtype",
        "seq",
        "freed",
        "grad",
        "hooks",
    )

    def __init__(self, prim, parents, args, ans, params, shape, dtype):
        self.prim = prim  # None for a leaf
        self.parents = parents  # ((argnum, parent node), ...)
        self.args = args
        self.ans = ans
        self.params = params
        self.shape = shape
        self.dtype = dtype
        _CREATED[0] += 1
        self.seq = _CREATED[0]
        self.freed = False
        self.grad = None  # accumulated gradient of a tape-style leaf (or of a value that retains it)
        self.hooks = None  # a _Hooks once register_hook or retain_grad asked for one

    def saved_buffers(self) -> dict:
        """``{id: bytes}`` of the buffers this node keeps alive for the backward pass.

        A saved view keeps the whole buffer it views alive, so it counts as that buffer; a buffer kept
        through several values counts once.  :func:`tape_stats` and ``format_tape`` add these up.
        """
        out = {}
        for v in (self.ans, *(self.args or ())):
            if isinstance(v, Tensor):
                owner = _owner(v._data)
                out[id(owner)] = owner.nbytes
        return out

    def saved_bytes(self) -> int:
        """Bytes of the buffers this node keeps alive (see :meth:`saved_buffers`)."""
        return sum(self.saved_buffers().values())

    def __repr__(self) -> str:
        what = "leaf" if self.prim is None else self.prim.name
        return f"<node {self.seq}: {what} -> {self.dtype}{list(self.shape)}>"


class Taped(Tracer):
    """A value recorded on a tape."""

    __slots__ = ("_node",)

    def __init__(self, trace, primal: Tensor, node: Node):
        self._init(trace, primal)
        self._node = node

    @property
    def requires_grad(self) -> bool:
        return True

    @property
    def is_leaf(self) -> bool:
        return self._node.prim is None

    @property
    def grad(self):
        return self._node.grad

    @grad.setter
    def grad(self, value):
        self._node.grad = value

    @property
    def retains_grad(self) -> bool:
        """Whether ``backward()`` keeps this non-leaf value's gradient in ``.grad`` (see ``retain_grad``)."""
        return self._node.hooks is not None and self._node.hooks.retain

    def zero_grad_(self) -> None:
        self._node.grad = None

    def _repr_fields(self) -> list[tuple[str, object]]:
        # display only (see Tracer.__repr__): a leaf, or the primitive that made the value
        if self._node.prim is None:
            return [("value", self), ("requires_grad", True)]
        return [("value", self), ("grad_fn", self._node.prim.name)]


class ReverseTrace(levels.Trace):
    kind = "reverse"

    def __init__(self):
        super().__init__()
        self.recording = True

    def process(self, prim, args, params):
        """Evaluate ``prim`` on the values one level down and, if it has a derivative and the tape is
        recording, append a :class:`Node` keeping what its VJP rule reads (``prim.saves``)."""
        primals = list(args)
        parents = []
        on_tape = []  # the positions of the inputs on this tape
        for i, a in enumerate(args):
            if isinstance(a, Taped) and a._trace is self:
                primals[i] = a.primal
                parents.append((i, a._node))
                on_tape.append(i)
        out = bind_args(prim, primals, params)
        if not (prim.differentiable and self.recording):
            return out
        # save only what the VJP rule reads for the inputs on this tape; shapes suffice for the rest
        keep = prim.saves(on_tape)
        if "*" not in keep:
            for i, p in enumerate(primals):
                if i not in keep and isinstance(p, Tensor):
                    primals[i] = Aval(p, i)
        node = Node(
            prim,
            tuple(parents),
            primals,
            out if "ans" in keep else UNSAVED_OUTPUT,
            params,
            out.shape,
            out.dtype,
        )
        return Taped(self, out, node)

    def leaf(self, x: Tensor) -> Taped:
        node = Node(None, (), None, None, None, x.shape, x.dtype)
        return Taped(self, x, node)


# ----------------------------------------------------------------------------- the walker
def fit_cotangent(c: Tensor, shape, dtype) -> Tensor:
    """Undo broadcasting (sum over broadcast axes) and casting: the one place this happens."""
    if c.shape != shape:
        c = sum_to(c, shape)
    if c.dtype != dtype:
        c = c.astype(dtype)
    return c


def _collect(roots) -> list[Node]:
    """Every node reachable from ``roots``, oldest first; raises if any was freed."""
    seen = set()
    stack = list(roots)
    nodes = []
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.freed:
            raise TapeError(
                f"backward: the tape through {n.prim.name} was freed by an earlier backward(); "
                "call the first backward(retain_graph=True) to walk it twice"
            )
        nodes.append(n)
        for _, p in n.parents:
            stack.append(p)
    nodes.sort(key=_BY_SEQ)
    return nodes


_BY_SEQ = operator.attrgetter("seq")  # a node's creation order


def _useful(nodes: list[Node], targets) -> set:
    """The nodes (oldest first) on a path to a leaf in ``targets``.

    A node is recorded only when one of its inputs is on the tape, so every node leads back to some
    leaf: when every leaf reached is a target (``targets`` is None, or holds them all, as in ``vjp``)
    every node is useful and the pass over the graph is skipped.
    """
    if targets is None or targets.issuperset([n for n in nodes if n.prim is None]):
        return set(nodes)
    useful = set()
    for n in nodes:  # oldest first: a node is useful if it is a wanted leaf or has a useful parent
        if n.prim is None:
            if n in targets:
                useful.add(n)
        elif any(p in useful for _, p in n.parents):
            useful.add(n)
    return useful


def walk(roots, cotangents, targets=None, retain: bool = True) -> dict:
    """Push ``cotangents`` from ``roots`` back to the leaves; return ``{leaf node: cotangent}`` (and the
    cotangent of every node that retains its gradient, see :func:`retain_grad`).

    Only nodes on a path to a leaf in ``targets`` (every leaf when ``None``) are visited.  A node's hooks
    (:func:`register_hook`) see its cotangent once it is complete, before it flows on to the parents.
    With ``retain=False`` the saved values of the visited nodes are released afterwards.
    """
    nodes = _collect(roots)
    useful = _useful(nodes, targets)
    cts: dict = {}
    retained: dict = {}  # cotangents of values that retain_grad() asked to keep
    for root, ct in zip(roots, cotangents):
        if root in useful:
            cts[root] = cts[root] + ct if root in cts else ct
    for n in reversed(nodes):  # newest first
        if n.prim is None or n not in cts:
            continue
        if _VERSIONS.last_change >= n.seq:
            _check_unmodified(n)
        g = cts.pop(n)
        if n.hooks is not None:
            g = n.hooks.run(g, n)
            if n.hooks.retain:
                retained[n] = g
        wanted = [i for i, p in n.parents if p in useful]
        try:
            contributions = n.prim.vjp(g, n.ans, n.args, n.params, wanted)
        except UndeclaredRead as exc:
            raise UndeclaredRead(f"{n.prim.name}: {exc}") from None
        for i, p in n.parents:
            c = contributions[i]
            if c is None:  # not wanted (no path to a target), or no derivative
                continue
            if c.shape != p.shape or c.dtype != p.dtype:
                c = fit_cotangent(c, p.shape, p.dtype)
            cts[p] = cts[p] + c if p in cts else c
    for n, g in list(cts.items()):  # what is left are the leaves, their cotangents complete
        if n.hooks is not None:
            cts[n] = n.hooks.run(g, n)
    cts.update(retained)
    if not retain:
        for n in nodes:
            if n.prim is not None:
                _release(n)
    return cts


def _release(n: Node) -> None:
    """Free what node ``n`` saved for its VJP rules, keep the graph.

    A saved input or output becomes a marker (:data:`FREED`, or a :class:`Freed` stub keeping the shape
    and dtype of a constant input, whose node is not on the tape), an array-valued parameter (an index)
    becomes :data:`FREED`; the primitive, the parents, the shapes and the small parameters stay, so
    ``format_tape`` still shows the op graph after ``backward()`` and a second walk names the freed
    primitive.  This runs for every node of every ``backward()``, so it does little work per node.
    """
    n.freed = True
    args = n.args  # the node's own list (ReverseTrace.process made it)
    i = 0
    for a in args:
        if isinstance(a, Tensor):
            for j, _ in n.parents:
                if i == j:  # an input on the tape: its node has the shape, a marker suffices
                    args[i] = FREED
                    break
            else:
                args[i] = Freed(a)  # a constant: keep its shape and dtype for format_tape
        i += 1
    if n.ans is not UNSAVED_OUTPUT:
        n.ans = FREED
    params = n.params
    if params:
        for v in params.values():
            if type(v) in _PLAIN or (type(v) is tuple and _PLAIN.issuperset(map(type, v))):
                continue  # numbers, names, axes and shapes stay
            n.params = {k: FREED if _holds_array(v) else v for k, v in params.items()}
            return


_PLAIN = {int, bool, float, str, type(None)}


def _holds_array(v) -> bool:
    if isinstance(v, (tuple, list)):
        return any(_holds_array(x) for x in v)
    return isinstance(v, Tensor) or hasattr(v, "nbytes")


# ----------------------------------------------------------------------------- in-place updates
class _Versions:
    """How often :func:`assign_` changed each tensor, and when (on the node clock ``_CREATED``)."""

    def __init__(self):
        self.changed: dict[int, tuple] = {}  # id(tensor) -> (weakref, version, clock)
        self.last_change = 0

    def bump(self, x: Tensor) -> None:
        entry = self.changed.get(id(x))
        version = entry[1] + 1 if entry is not None and entry[0]() is x else 1
        key = id(x)
        self.changed[key] = (weakref.ref(x, lambda _: self.changed.pop(key, None)), version, _CREATED[0])
        self.last_change = _CREATED[0]

    def changed_since(self, x, seq: int):
        """The version of ``x`` if :func:`assign_` changed it after node ``seq`` was recorded."""
        entry = self.changed.get(id(x))
        if entry is not None and entry[0]() is x and entry[2] >= seq:
            return entry[1]
        return None


_VERSIONS = _Versions()


def version(x: Tensor) -> int:
    """How many times :func:`assign_` has changed ``x`` (0 if never)."""
    x = x.primal if isinstance(x, Taped) else x
    entry = _VERSIONS.changed.get(id(x))
    return entry[1] if entry is not None and entry[0]() is x else 0


def _check_unmodified(n: Node) -> None:
    for i, v in enumerate((n.ans, *(n.args or ()))):
        changed = isinstance(v, Tensor) and _VERSIONS.changed_since(v, n.seq)
        if changed:
            what = "its output" if i == 0 else f"its input {i - 1}"
            raise TapeError(
                f"backward: {n.prim.name} saved {what} ({describe(v)}) for the backward pass, and "
                f"md.assign_ has changed that tensor in place since (now version {changed}); the "
                "derivative would use the new value. Call backward() before updating the tensor, or "
                "compute the loss again after the update"
            )


def assign_(x: Tensor, value: ArrayLike) -> None:
    """Replace the value of ``x`` in place, keeping its shape, dtype, device and identity.

    The one in-place update in minidiff (optimizers update parameters with it).  On a tape leaf
    (``requires_grad=True``) it must run under :func:`no_grad`.  Each call bumps the tensor's version:
    a tape that saved the old value refuses to run ``backward()`` through it instead of using the new one.

    >>> import minidiff as md
    >>> w = md.tensor([1.0, 2.0], requires_grad=True)
    >>> loss = (w * w).sum()
    >>> with md.no_grad():
    ...     md.assign_(w, md.tensor([5.0, 6.0]))
    >>> w.tolist(), w.is_leaf
    ([5.0, 6.0], True)
    >>> loss.backward()
    Traceback (most recent call last):
    ...
    minidiff.errors.TapeError: backward: multiply saved its input 0 (float64[2]) for the backward pass, and md.assign_ has changed that tensor in place since (now version 1); the derivative would use the new value. Call backward() before updating the tensor, or compute the loss again after the update
    """
    target = _assign_target(x)

    value = asarray(value, device=x.device).detach()
    if value.shape != x.shape:
        raise ShapeError(f"assign_: new value of shape {value.shape} for a tensor of shape {x.shape}")
    if value.dtype != x.dtype:
        value = value.astype(x.dtype)
    target._data = value._data
    if target is not x:
        x._data = value._data
    _VERSIONS.bump(target)


def _assign_target(x) -> Tensor:
    """The concrete tensor :func:`assign_` changes: ``x`` itself, or the value under a tape leaf."""
    if isinstance(x, Taped) and x._trace is AMBIENT and x.is_leaf:
        if AMBIENT.recording:
            raise TapeError(
                f"assign_: x ({describe(x)}) is a tape leaf with requires_grad=True; update it under "
                "`with md.no_grad():` so the update itself is not recorded"
            )
        return x.primal
    if isinstance(x, Tracer):
        raise TracerError(
            f"assign_: x ({describe(x)}) is traced by {x._trace}; only plain tensors and tape-style "
            "leaves can be changed in place"
        )
    if not isinstance(x, Tensor):
        raise TypeError(f"assign_: x must be a Tensor, got {type(x).__name__}")
    return x


# ----------------------------------------------------------------------------- tape style
AMBIENT = levels.push(ReverseTrace())  # level 1, open for the life of the process
AMBIENT.kind = "tape"


def make_leaf(x: Tensor) -> Taped:
    """A tape-style leaf with the value of ``x`` (``requires_grad=True``)."""

    check_differentiable("requires_grad", x)
    return AMBIENT.leaf(x.detach())


@contextmanager
def no_grad() -> Iterator[None]:
    """Within this block, operations on ``requires_grad`` tensors are not recorded.

    >>> import minidiff as md
    >>> w = md.tensor([1.0], requires_grad=True)
    >>> with md.no_grad():
    ...     y = w * 2
    >>> y.requires_grad
    False
    """
    before = AMBIENT.recording
    AMBIENT.recording = False
    try:
        yield
    finally:
        AMBIENT.recording = before


def is_grad_enabled() -> bool:
    """Whether tape-style operations on ``requires_grad`` tensors are being recorded (not inside
    :func:`no_grad`).

    >>> import minidiff as md
    >>> with md.no_grad():
    ...     md.is_grad_enabled()
    False
    """
    return AMBIENT.recording


def backward(y: Tensor, cotangent=None, retain_graph: bool = False) -> None:
    """Tape-style reverse pass from ``y``: accumulate into ``leaf.grad`` (see ``Tensor.backward``)."""
    from ..primitives.creation import asarray, ones

    if not (isinstance(y, Taped) and y._trace is AMBIENT):
        raise TapeError(
            f"backward: this tensor ({y.dtype}{list(y.shape)}) was not computed from any tensor with "
            "requires_grad=True, so there is nothing to differentiate"
        )
    if cotangent is None:
        if y.shape != ():
            raise ShapeError(
                f"backward: output of shape {y.shape} is not a scalar; pass a cotangent of that shape"
            )
        cotangent = ones((), dtype=y.dtype, device=y.device)
    else:
        cotangent = asarray(cotangent, device=y.device)
        check_like("backward", "cotangent", cotangent, y, of="the output")
    cts = walk([y._node], [cotangent.detach()], None, retain=retain_graph)
    for node, ct in cts.items():  # written only once the whole walk succeeded
        if node.prim is None or node.hooks is not None and node.hooks.retain:
            node.grad = ct if node.grad is None else node.grad + ct


# ----------------------------------------------------------------------------- hooks, retain_grad
class _Hooks:
    """What one tape value asked of the reverse passes: functions to run on its cotangent, and (tape
    style) to keep that cotangent in ``.grad``."""

    __slots__ = ("fns", "retain")

    def __init__(self):
        self.fns: dict = {}
        self.retain = False

    def run(self, g: Tensor, node: Node) -> Tensor:
        for fn in tuple(self.fns.values()):  # in registration order, each sees the previous result
            new = fn(g)
            if new is not None:
                _check_hook_result(fn, new, g, node)
                g = new
        return g


def _check_hook_result(fn, new, g: Tensor, node: Node) -> None:
    name = getattr(fn, "__name__", type(fn).__name__)
    tensor = f"a tensor of shape {node.shape} and dtype {node.dtype}"
    if not isinstance(new, Tensor):
        raise TypeError(
            f"register_hook: hook {name} on {tensor} returned a {type(new).__name__}; a hook returns "
            "None (keep the gradient) or a minidiff tensor of that shape and dtype (the new gradient)"
        )
    error: type[MinidiffError] | None = (
        ShapeError if new.shape != g.shape else DTypeError if new.dtype != g.dtype else None
    )
    if error is None and new.device is not g.device:
        error = DeviceError
    if error is not None:
        raise error(
            f"register_hook: hook {name} on {tensor} returned a gradient of shape {new.shape} and "
            f"dtype {new.dtype} on {new.device}; a replacement gradient must have the tensor's shape, "
            f"dtype and device ({g.device})"
        )


class HookHandle:
    """Registers ``fn`` in ``hooks`` under a fresh key; ``remove()`` unregisters it (also a context
    manager).  Returned by :func:`register_hook` and by ``md.nn`` modules' hook registrations."""

    __slots__ = ("_hooks", "id")

    def __init__(self, hooks: dict, fn: Callable[..., Any]):
        self._hooks, self.id = hooks, next(_HOOK_IDS)
        hooks[self.id] = fn  # dicts keep insertion order: hooks run in registration order

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


_HOOK_IDS = itertools.count()


def _hooks_of(op: str, x) -> _Hooks:
    """The hook record of ``x``'s tape node (made on first use), or an error saying why ``x`` has none."""
    if not isinstance(x, Taped):
        if isinstance(x, Tracer) and x._trace.kind == "forward":
            why = f"is a dual number of {x._trace}, and forward mode has no backward pass"
        else:
            why = "does not require grad, so no gradient flows into it"
        raise TapeError(
            f"{op}: this tensor ({describe(x)}) {why}; use a tensor made with requires_grad=True, a value "
            "computed from one, or (inside md.grad/md.vjp) the argument or a value computed from it"
        )
    if not x._trace.active:
        raise escaped(op, x._trace)
    node = x._node
    if node.hooks is None:
        node.hooks = _Hooks()
    return node.hooks


def register_hook(x: Tensor, fn) -> HookHandle:
    """Run ``fn(grad)`` with the gradient flowing into ``x`` in every reverse pass through its tape."""
    if not callable(fn):
        raise TypeError(f"register_hook: expected a function fn(grad), got {type(fn).__name__}")
    hooks = _hooks_of("register_hook", x)
    return HookHandle(hooks.fns, fn)


def retain_grad(x: Tensor) -> None:
    """Keep the gradient of the tape-style value ``x`` in ``x.grad`` after ``backward()``."""
    if isinstance(x, Taped) and x._trace is not AMBIENT:
        raise TapeError(
            f"retain_grad: this tensor ({describe(x)}) is traced by {x._trace}, whose gradients md.grad "
            "and md.vjp return instead of storing them in .grad; differentiate with respect to the "
            "value (make it an argument) or read its gradient with register_hook"
        )
    hooks = _hooks_of("retain_grad", x)
    if not x.is_leaf:  # a leaf keeps its gradient anyway
        hooks.retain = True


def tape_stats(y: Tensor) -> dict:
    """Per primitive, how many tape nodes lead to ``y`` and how many bytes of arrays they keep alive.

    A buffer kept by several nodes, or through several views, is counted once, whole, in the first
    node that holds it.

    >>> import minidiff as md
    >>> x = md.ones(1000, requires_grad=True)
    >>> stats = md.tape_stats(md.exp(x).sum())
    >>> stats["exp"]["bytes"], stats["sum"]["bytes"]
    (8000, 0)
    """
    if not isinstance(y, Taped):
        return {}
    seen_arrays: set = set()
    stats: dict = {}
    for n in _collect([y._node]):
        if n.prim is None:
            continue
        entry = stats.setdefault(n.prim.name, {"nodes": 0, "bytes": 0})
        entry["nodes"] += 1
        for key, nbytes in n.saved_buffers().items():
            if key not in seen_arrays:
                seen_arrays.add(key)
                entry["bytes"] += nbytes
    return stats


def _owner(array):
    """The array that owns the memory ``array`` views."""
    while getattr(array, "base", None) is not None and hasattr(array.base, "nbytes"):
        array = array.base
    return array
