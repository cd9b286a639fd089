"""The functional transforms: jvp, vjp, grad, value_and_grad, jacfwd, jacrev, hessian, hvp, vmap.

Each call opens a fresh level (see :mod:`minidiff.modes.levels`), wraps its inputs in that level's tracers,
runs the function and unwraps what comes out, so the transforms nest in any order.

Conventions shared by all of them:

* **pytrees**: wherever a tensor is accepted, a nested tuple, list or dict of tensors is too (a dict
  of parameters, a list of layers); results keep that structure (dicts in sorted key order).
* **argnums** (``grad``, ``value_and_grad``, ``jacfwd``, ``jacrev``, ``hessian``): an int
  differentiates with respect to one positional argument and returns its result alone; a tuple
  differentiates with respect to each of those arguments and returns a tuple with one entry per
  argument, in the order given (even for a one-element tuple).  Other arguments are held constant.
* **has_aux** (``jvp``, ``vjp``, ``grad``, ``value_and_grad``): ``f`` returns a pair ``(output, aux)``;
  only ``output`` is differentiated, ``aux`` (any pytree) comes back beside the result with its
  tensors detached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

from ..errors import ShapeError
from ..modes import levels
from ..modes.batching import Batched, BatchTrace
from ..modes.forward import Dual, ForwardTrace, check_tangent
from ..modes.reverse import Node, ReverseTrace, Taped, walk
from ..primitives.creation import asarray, eye, zeros
from ..primitives.shape import broadcast_to, moveaxis, reshape
from ..tensor import pytree
from ..tensor.core import Tensor, check_differentiable, check_like
from ..tensor.pytree import PyTree


def _check_tuples(op: str, primals: Any, tangents: Any) -> None:
    """``primals`` and ``tangents`` hold one entry per argument of f: a bare tensor is the usual slip."""
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError(
            f"{op}: primals and tangents must be tuples, one entry per argument of f "
            f"(got {type(primals).__name__} and {type(tangents).__name__}; write {op}(f, (x,), (v,)))"
        )


def _check_inputs(op: str, *trees: PyTree) -> None:
    """Fail early, naming the transform the user called, on an input that cannot carry derivatives."""
    for tree in trees:
        for leaf in _tensors(op, tree, "input")[0]:
            check_differentiable(op, leaf)


def _tensors(op: str, tree: PyTree, what: str) -> tuple[list[Tensor], pytree.TreeDef]:
    leaves, treedef = pytree.flatten(tree)
    out = []
    for leaf in leaves:
        if not isinstance(leaf, Tensor):
            try:
                leaf = asarray(leaf)
            except Exception as exc:
                raise TypeError(f"{op}: {what} leaf of type {type(leaf).__name__} is not an array") from exc
        out.append(leaf)
    return out, treedef


# ----------------------------------------------------------------------------- forward mode
def jvp(
    f: Callable[..., Any],
    primals: Sequence[PyTree],
    tangents: Sequence[PyTree],
    *,
    has_aux: bool = False,
    vectorized: bool = False,
) -> tuple[Any, ...]:
    """Forward mode: ``(f(*primals), J·tangents)`` in one pass, with dual numbers.

    ``primals`` and ``tangents`` are tuples (or lists) with one entry per positional argument of
    ``f``, each entry a tensor or a pytree; ``tangents`` has the structure of ``primals``, and each
    tangent the shape and dtype of its primal (a bare tensor instead of a tuple raises ``TypeError``).
    Returns ``(out, tangent_out)``, both with the structure of ``f``'s output;
    with ``has_aux=True``, ``f`` returns ``(out, aux)`` and the result is ``(out, tangent_out, aux)``.
    With ``vectorized=True`` every tangent carries a leading axis of K directions and the result's
    tangent does too: K directional derivatives from one pass (vector mode).

    Example:
        >>> import minidiff as md
        >>> y, dy = md.jvp(md.sin, (md.tensor(0.0),), (md.tensor(2.0),))
        >>> y.item(), dy.item()
        (0.0, 2.0)

        Two arguments, a pytree argument, and an auxiliary output:

        >>> f = lambda x, p: (p["w"] * x).sum() + p["b"]
        >>> x, p = md.tensor([1.0, 2.0]), {"w": md.tensor([3.0, 4.0]), "b": md.tensor(1.0)}
        >>> dx, dp = md.tensor([1.0, 0.0]), {"w": md.zeros(2), "b": md.tensor(1.0)}
        >>> out, tangent = md.jvp(f, (x, p), (dx, dp))
        >>> out.item(), tangent.item()                 # d = w·dx + db = 3 + 1
        (12.0, 4.0)
        >>> out, tangent, aux = md.jvp(lambda x: (x * x, "note"), (x,), (dx,), has_aux=True)
        >>> tangent.tolist(), aux
        ([2.0, 0.0], 'note')

        K directions at once (here the whole Jacobian of an elementwise square, row by row):

        >>> md.jvp(lambda x: x * x, (x,), (md.eye(2),), vectorized=True)[1].tolist()
        [[2.0, 0.0], [0.0, 4.0]]
    """
    _check_tuples("jvp", primals, tangents)
    if len(primals) != len(tangents):
        raise ShapeError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    if vectorized:
        return _vector_jvp(f, primals, tangents, has_aux)
    p_leaves, p_def = _tensors("jvp", tuple(primals), "primal")
    t_leaves, t_def = _tensors("jvp", tuple(tangents), "tangent")
    if p_def != t_def:
        raise ShapeError(f"jvp: tangents have structure {t_def} but primals have {p_def}")
    for p, t in zip(p_leaves, t_leaves):
        check_differentiable("jvp", p)
        check_tangent("jvp", p, t)
    with levels.new_level(ForwardTrace) as trace:
        duals = [Dual(trace, p, t) for p, t in zip(p_leaves, t_leaves)]
        out = f(*pytree.unflatten(p_def, duals))
        out, aux = _split_aux("jvp", out, has_aux)
        o_leaves, o_def = pytree.flatten(out)
        outs, touts = [], []
        for o in o_leaves:
            if isinstance(o, Dual) and o._trace is trace:
                outs.append(o.primal)
                touts.append(o.tangent)
            else:
                o = asarray(o)
                outs.append(o)
                touts.append(zeros(o.shape, o.dtype, o.device))
    result = pytree.unflatten(o_def, outs), pytree.unflatten(o_def, touts)
    return (*result, aux) if has_aux else result


def _vector_jvp(
    f: Callable[..., Any], primals: Sequence[PyTree], tangents: Sequence[PyTree], has_aux: bool
) -> tuple[Any, ...]:
    """K directions at once: the JVP's tangents are batched by vmap (one pass, no loop)."""
    t_leaves, _ = _tensors("jvp", tuple(tangents), "tangent")
    sizes = {t.shape[0] if t.ndim else None for t in t_leaves}
    if len(sizes) != 1 or None in sizes:
        raise ShapeError(
            "jvp(vectorized=True): every tangent needs the same leading number of directions, got "
            f"shapes {[t.shape for t in t_leaves]}"
        )
    box = {}

    def push(*ts: PyTree) -> Any:
        res = jvp(f, primals, ts, has_aux=has_aux)
        box["out"] = res[0]  # the primal output does not depend on the directions
        if has_aux:
            box["aux"] = res[2]
        return res[1]

    touts = vmap(push)(*tangents)
    return (box["out"], touts, box["aux"]) if has_aux else (box["out"], touts)


# ----------------------------------------------------------------------------- reverse mode
def vjp(f: Callable[..., Any], *primals: PyTree, has_aux: bool = False) -> tuple[Any, ...]:
    """Reverse mode: ``(f(*primals), vjp_fn)`` where ``vjp_fn(cotangent)`` returns one cotangent per
    primal, computed by one walk of the tape recorded while ``f`` ran.

    The primals are passed as separate positional arguments (each a tensor or a pytree).
    ``vjp_fn`` takes a cotangent with the structure, shapes and dtypes of ``f``'s output and returns
    ``uᵀ·J`` as a **tuple** with one entry per primal (each with that primal's structure), even for a
    single primal.  It may be called many times (the tape is kept while ``vjp_fn`` lives).  With
    ``has_aux=True``, ``f`` returns ``(out, aux)`` and the result is ``(out, vjp_fn, aux)``.

    Example:
        >>> import minidiff as md
        >>> y, back = md.vjp(lambda x: x * x, md.tensor([1.0, 3.0]))
        >>> back(md.tensor([1.0, 1.0]))[0].tolist()
        [2.0, 6.0]

        Two primals, a dict output, and an auxiliary output:

        >>> f = lambda x, y: ({"sum": (x * y).sum(), "x2": x * x}, y.shape)
        >>> out, back, aux = md.vjp(f, md.tensor([1.0, 2.0]), md.tensor([3.0, 4.0]), has_aux=True)
        >>> gx, gy = back({"sum": md.tensor(1.0), "x2": md.zeros(2)})
        >>> gx.tolist(), gy.tolist(), aux
        ([3.0, 4.0], [1.0, 2.0], (2,))
    """
    p_leaves, p_def = _tensors("vjp", tuple(primals), "primal")
    for p in p_leaves:
        check_differentiable("vjp", p)
    with levels.new_level(ReverseTrace) as trace:
        taped = [trace.leaf(p) for p in p_leaves]
        out = f(*pytree.unflatten(p_def, taped))
        out, aux = _split_aux("vjp", out, has_aux)
        o_leaves, o_def = pytree.flatten(out)
        outs: list[Tensor] = []
        roots: list[Node | None] = []
        for o in o_leaves:
            if isinstance(o, Taped) and o._trace is trace:
                outs.append(o.primal)
                roots.append(o._node)
            else:
                outs.append(asarray(o))
                roots.append(None)
    leaf_nodes = [t._node for t in taped]
    targets = set(leaf_nodes)
    out_tree = pytree.unflatten(o_def, outs)

    def vjp_fn(cotangent: PyTree) -> tuple[Any, ...]:
        c_leaves, c_def = _tensors("vjp_fn", cotangent, "cotangent")
        if c_def != o_def:
            raise ShapeError(f"vjp_fn: cotangent has structure {c_def} but the output has {o_def}")
        live_roots, live_cts = [], []
        for o, c, r in zip(outs, c_leaves, roots):
            check_like("vjp_fn", "cotangent", c, o, of="the output")
            if r is not None:
                live_roots.append(r)
                live_cts.append(c)
        cts = walk(live_roots, live_cts, targets, retain=True) if live_roots else {}
        grads = [
            cts[n] if n in cts else zeros(p.shape, p.dtype, p.device) for n, p in zip(leaf_nodes, p_leaves)
        ]
        return tuple(pytree.unflatten(p_def, grads))

    return (out_tree, vjp_fn, aux) if has_aux else (out_tree, vjp_fn)


def _split_aux(op: str, out: Any, has_aux: bool) -> tuple[Any, Any]:
    if not has_aux:
        return out, None
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"{op}: with has_aux=True the function must return a pair (output, aux)")
    return out[0], _strip(out[1])


def _strip(aux: PyTree) -> PyTree:
    """Auxiliary outputs leave the transform as plain values."""
    return pytree.tree_map(lambda a: a.detach() if isinstance(a, Tensor) else a, aux)


def _argnums(op: str, argnums: int | Sequence[int], n: int) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for a in nums:
        if not -n <= a < n:
            raise ValueError(f"{op}: argnums {argnums} out of range for {n} positional arguments")
    return nums


def value_and_grad(
    f: Callable[..., Any], argnums: int | tuple[int, ...] = 0, has_aux: bool = False
) -> Callable[..., Any]:
    """``f`` and its gradient with respect to the arguments ``argnums``, by one reverse pass.

    ``f`` must return a scalar tensor (shape ``()``).  The returned function gives ``(value, grad)``:
    ``grad`` has the structure of the chosen argument (a pytree argument gives a pytree gradient), or
    is a tuple with one such entry per argument when ``argnums`` is a tuple.  With
    ``has_aux=True``, ``f`` returns ``(scalar, aux)`` and the result is ``((value, aux), grad)``.
    Keyword arguments are passed to ``f`` and not differentiated.

    Example:
        >>> import minidiff as md
        >>> value, g = md.value_and_grad(lambda x: (x ** 3).sum())(md.tensor([1.0, 2.0]))
        >>> value.item(), g.tolist()
        (9.0, [3.0, 12.0])

        A dict of parameters, a tuple ``argnums`` and an auxiliary output:

        >>> def loss(params, x):
        ...     pred = (params["w"] * x).sum() + params["b"]
        ...     return pred ** 2, {"pred": pred}
        >>> params, x = {"w": md.tensor([1.0, 2.0]), "b": md.tensor(0.5)}, md.tensor([1.0, 1.0])
        >>> (value, aux), (g_params, g_x) = md.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
        >>> value.item(), aux["pred"].item(), g_params["b"].item(), g_params["w"].tolist(), g_x.tolist()
        (12.25, 3.5, 7.0, [7.0, 7.0], [7.0, 14.0])
    """

    @wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nums = _argnums("grad", argnums, len(args))

        def g(*chosen: Any) -> Any:
            full = list(args)
            for a, c in zip(nums, chosen):
                full[a] = c
            return f(*full, **kwargs)

        _check_inputs("grad", *[args[a] for a in nums])
        res = vjp(g, *[args[a] for a in nums], has_aux=has_aux)
        out, back = res[0], res[1]
        if not isinstance(out, Tensor) or out.shape != ():
            shape = getattr(out, "shape", type(out).__name__)
            raise ShapeError(
                f"grad: the function must return a scalar, got {shape}; use vjp or jacrev for "
                "non-scalar outputs"
            )
        grads = back(asarray(1.0, dtype=out.dtype, device=out.device))
        grads = grads[0] if isinstance(argnums, int) else grads
        return ((out, res[2]), grads) if has_aux else (out, grads)

    return wrapper


def grad(
    f: Callable[..., Any], argnums: int | tuple[int, ...] = 0, has_aux: bool = False
) -> Callable[..., Any]:
    """The gradient of scalar ``f`` with respect to argument(s) ``argnums`` (reverse mode).

    ``grad(f, argnums)(*args)`` is ``value_and_grad(f, argnums)(*args)[1]``: with an int
    ``argnums`` the gradient has the structure of that argument; with a tuple, it is a tuple with one
    entry per argument named.  With ``has_aux=True``, ``f`` returns ``(scalar, aux)`` and the result
    is ``(grad, aux)``.  ``f`` must return a scalar (use :func:`vjp` or :func:`jacrev` otherwise).

    Example:
        >>> import minidiff as md
        >>> md.grad(lambda x: (x * x).sum())(md.tensor([1.0, -2.0])).tolist()
        [2.0, -4.0]
        >>> f = lambda x, y: (x * y).sum()
        >>> gx, gy = md.grad(f, argnums=(0, 1))(md.tensor([1.0, 2.0]), md.tensor([3.0, 4.0]))
        >>> gx.tolist(), gy.tolist()
        ([3.0, 4.0], [1.0, 2.0])
        >>> g, aux = md.grad(lambda x: ((x * x).sum(), x.shape), has_aux=True)(md.tensor([3.0]))
        >>> g.tolist(), aux
        ([6.0], (1,))
        >>> md.grad(lambda p: p["a"] * p["b"])({"a": md.tensor(2.0), "b": md.tensor(5.0)})
        {'a': tensor(5.), 'b': tensor(2.)}
    """
    vg = value_and_grad(f, argnums, has_aux)

    @wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        (out, g) = vg(*args, **kwargs)
        if has_aux:
            return g, out[1]
        return g

    return wrapper


# ----------------------------------------------------------------------------- batching
def vmap(f: Callable[..., Any], in_axes: Any = 0, out_axes: Any = 0) -> Callable[..., Any]:
    """Map ``f`` over an axis of its arguments, in one vectorized pass (no Python loop).

    ``in_axes``: an int (the mapped axis of every argument) or a tuple with one entry per positional
    argument, an int or ``None`` (that argument is not mapped: every example sees all of it).  An
    argument may be a pytree: its leaves are all mapped along that axis.  Every mapped axis must have
    the same size.  ``out_axes``: where the mapped axis goes in every output leaf (default 0).  Outputs
    may be pytrees; an output that does not depend on the mapped arguments is broadcast.

    Example:
        >>> import minidiff as md
        >>> md.vmap(lambda row: (row * row).sum())(md.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist()
        [5.0, 25.0]
        >>> xs, w = md.ones((3, 2)), md.tensor([1.0, 2.0])
        >>> md.vmap(lambda x, w: x @ w, in_axes=(0, None))(xs, w).tolist()   # w is shared
        [3.0, 3.0, 3.0]
        >>> md.vmap(lambda d: {"s": d["a"].sum()})({"a": xs})["s"].tolist()
        [2.0, 2.0, 2.0]
        >>> md.vmap(lambda x: x * 2, out_axes=1)(xs).shape
        (2, 3)
    """

    @wraps(f)
    def wrapper(*args: Any) -> Any:
        axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        if len(axes) != len(args):
            raise ValueError(f"vmap: in_axes has {len(axes)} entries for {len(args)} arguments")
        flat_args, sizes = [], set()
        for a, ax in zip(args, axes):
            leaves, tdef = pytree.flatten(a)
            leaves = [asarray(x) for x in leaves]
            if ax is not None:
                for x in leaves:
                    if x.ndim == 0:
                        raise ShapeError("vmap: cannot map over axis of a 0-d tensor")
                    sizes.add(x.shape[ax])
            flat_args.append((leaves, tdef, ax))
        if len(sizes) != 1:
            raise ShapeError(
                f"vmap: mapped axes have different sizes {sorted(sizes)}"
                if sizes
                else "vmap: nothing to map over"
            )
        (size,) = sizes
        with levels.new_level(BatchTrace, size) as trace:
            wrapped = []
            for leaves, tdef, ax in flat_args:
                if ax is None:
                    wrapped.append(pytree.unflatten(tdef, leaves))
                else:
                    wrapped.append(
                        pytree.unflatten(tdef, [Batched(trace, moveaxis(x, ax, 0)) for x in leaves])
                    )
            out = f(*wrapped)
            o_leaves, o_def = pytree.flatten(out)
            results = []
            for o in o_leaves:
                if isinstance(o, Batched) and o._trace is trace:
                    v = o.primal
                else:
                    o = asarray(o)
                    v = broadcast_to(o, (size,) + o.shape)
                results.append(moveaxis(v, 0, out_axes) if out_axes != 0 else v)
        return pytree.unflatten(o_def, results)

    return wrapper


# ----------------------------------------------------------------------------- Jacobians, Hessians
def _basis(leaves: Sequence[Tensor]) -> list[Tensor]:
    """The standard basis of the space of several leaves: for each leaf, its slice of the identity
    shaped as a batch ``(N,) + leaf.shape`` (N = total size), in the leaf's dtype."""

    total = sum(x.size for x in leaves)
    out, offset = [], 0
    for x in leaves:
        block = eye(total, dtype=x.dtype, device=x.device)[:, offset : offset + x.size]
        out.append(reshape(block, (total,) + x.shape))
        offset += x.size
    return out


def _unstack_rows(t: Tensor, leaves: Sequence[Tensor], trailing: tuple[int, ...] | None) -> list[Tensor]:
    """Split a batch of ``N`` rows into one block per leaf, each shaped ``trailing + leaf.shape``."""
    from ..primitives.shape import moveaxis, reshape

    blocks, offset = [], 0
    for x in leaves:
        rows = t[offset : offset + x.size]  # (n, *t.shape[1:])
        blocks.append((rows, x))
        offset += x.size
    return [
        reshape(moveaxis(rows, 0, -1), trailing + x.shape)
        if trailing is not None
        else reshape(rows, x.shape + rows.shape[1:])
        for rows, x in blocks
    ]


def jacfwd(f: Callable[..., Any], argnums: int | tuple[int, ...] = 0) -> Callable[..., Any]:
    """Jacobian by forward mode: one vectorized JVP over the input basis (shape out.shape + in.shape).

    With an int ``argnums`` the result is the Jacobian with respect to that argument; with a tuple, a
    tuple of Jacobians, one per argument named.  Arguments and outputs may be pytrees: the result has
    the output's structure with every leaf replaced by the argument's structure (the block
    ``d out_leaf / d arg_leaf`` of shape ``out_leaf.shape + arg_leaf.shape``).  Forward mode costs one
    pass per input entry, so it suits functions with few inputs and many outputs (:func:`jacrev` is
    the other way round); both give the same result.  ``has_aux`` is not offered.

    Example:
        >>> import minidiff as md
        >>> md.jacfwd(lambda x: x * x)(md.tensor([1.0, 2.0])).tolist()
        [[2.0, 0.0], [0.0, 4.0]]
        >>> x, y = md.tensor([1.0, 2.0]), md.tensor([3.0, 4.0])
        >>> jx, jy = md.jacfwd(lambda x, y: x * y, argnums=(0, 1))(x, y)
        >>> jx.tolist(), jy.tolist()
        ([[3.0, 0.0], [0.0, 4.0]], [[1.0, 0.0], [0.0, 2.0]])
        >>> J = md.jacfwd(lambda p: {"s": (p["a"] * p["b"]).sum()})({"a": md.ones(2), "b": y})
        >>> J["s"]["a"].tolist(), J["s"]["b"].tolist()
        ([3.0, 4.0], [1.0, 1.0])
    """

    @wraps(f)
    def wrapper(*args: Any) -> Any:
        nums = _argnums("jacfwd", argnums, len(args))
        results = []
        for a in nums:
            x_leaves, x_def = _tensors("jacfwd", args[a], "argument")
            for x in x_leaves:
                check_differentiable("jacfwd", x)

            def g(xa: Tensor, a: int = a) -> Any:
                full = list(args)
                full[a] = xa
                return f(*full)

            primal = pytree.unflatten(x_def, x_leaves)
            basis = pytree.unflatten(x_def, _basis(x_leaves))
            _, t = jvp(g, (primal,), (basis,), vectorized=True)
            t = pytree.tree_map(
                lambda tl: pytree.unflatten(x_def, _unstack_rows(tl, x_leaves, tuple(tl.shape[1:]))), t
            )
            results.append(t)
        return results[0] if isinstance(argnums, int) else tuple(results)

    return wrapper


def jacrev(f: Callable[..., Any], argnums: int | tuple[int, ...] = 0) -> Callable[..., Any]:
    """Jacobian by reverse mode: one tape, its cotangents batched over the output basis.

    ``argnums``, pytrees and the result's structure and shapes are as for :func:`jacfwd` (an int
    gives one Jacobian, a tuple a tuple of them; each block has shape ``out.shape + in.shape``).
    Reverse mode costs one walk per output entry, so it suits many inputs and few outputs.

    Example:
        >>> import minidiff as md
        >>> md.jacrev(lambda x: x.sum() * x)(md.tensor([1.0, 2.0])).tolist()
        [[4.0, 1.0], [2.0, 5.0]]
        >>> f = lambda p: {"d": p["a"] - p["b"], "s": (p["a"] * p["b"]).sum()}
        >>> J = md.jacrev(f)({"a": md.tensor([1.0, 2.0]), "b": md.tensor([3.0, 4.0])})
        >>> J["d"]["b"].tolist(), J["s"]["a"].tolist()
        ([[-1.0, 0.0], [0.0, -1.0]], [3.0, 4.0])
    """

    @wraps(f)
    def wrapper(*args: Any) -> Any:
        nums = _argnums("jacrev", argnums, len(args))

        def g(*chosen: Any) -> Any:
            full = list(args)
            for a, c in zip(nums, chosen):
                full[a] = c
            return f(*full)

        _check_inputs("jacrev", *[args[a] for a in nums])
        out, back = vjp(g, *[args[a] for a in nums])
        o_leaves, o_def = _tensors("jacrev", out, "output")
        cols = vmap(back)(pytree.unflatten(o_def, _basis(o_leaves)))
        jac = []
        for ct_tree in cols:
            c_leaves, c_def = pytree.flatten(ct_tree)
            per_in = [_unstack_rows(c, o_leaves, None) for c in c_leaves]  # [in leaf][out leaf]
            jac.append(
                pytree.unflatten(
                    o_def,
                    [pytree.unflatten(c_def, [blocks[k] for blocks in per_in]) for k in range(len(o_leaves))],
                )
            )
        return jac[0] if isinstance(argnums, int) else tuple(jac)

    return wrapper


def hessian(f: Callable[..., Any], argnums: int | tuple[int, ...] = 0) -> Callable[..., Any]:
    """Hessian of scalar ``f``: forward mode over reverse mode (``jacfwd(jacrev(f))``).

    For an argument of shape ``s`` the Hessian has shape ``s + s``.  With a tuple ``argnums`` the
    result is a nested tuple of blocks: ``H[i][j]`` is ``d²f / d arg_i d arg_j`` of shape
    ``arg_i.shape + arg_j.shape``.  Pytree arguments give nested structures the same way.  To apply
    the Hessian to a vector without forming it, use :func:`hvp`.

    Example:
        >>> import minidiff as md
        >>> md.hessian(lambda x: (x ** 3).sum())(md.tensor([1.0, 2.0])).tolist()
        [[6.0, 0.0], [0.0, 12.0]]
        >>> x, y = md.tensor([1.0, 2.0]), md.tensor([3.0, 4.0])
        >>> H = md.hessian(lambda x, y: (x * x * y).sum(), argnums=(0, 1))(x, y)
        >>> H[0][1].tolist(), H[1][1].tolist()        # d²f/dx dy = diag(2x), d²f/dy² = 0
        ([[2.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]])
    """
    hess = jacfwd(jacrev(f, argnums), argnums)

    @wraps(f)
    def wrapper(*args: Any) -> Any:
        _check_inputs("hessian", *[args[a] for a in _argnums("hessian", argnums, len(args))])
        return hess(*args)

    return wrapper


HVP_MODES = ("fwd-over-rev", "rev-over-fwd", "rev-over-rev")


def hvp(
    f: Callable[..., Any], primals: Sequence[PyTree], tangents: Sequence[PyTree], mode: str = "fwd-over-rev"
) -> tuple[Any, ...]:
    """Hessian-vector product ``H·v`` of scalar ``f`` at ``primals``, never forming ``H``.

    ``mode``: ``"fwd-over-rev"`` (JVP of the gradient: one tape, whose walk carries tangents),
    ``"rev-over-fwd"`` (gradient of the directional derivative: a tape of the forward-mode pass) or
    ``"rev-over-rev"`` (VJP of the gradient: a tape of a tape walk, the most memory).  ``primals`` and
    ``tangents`` are tuples, one entry (a tensor or a pytree) per argument of ``f``, as for
    :func:`jvp`; a bare tensor raises ``TypeError``.  Returns a tuple with the structure of
    ``primals``: ``H·v`` for all arguments together (the full Hessian over every argument, applied
    to all the tangents at once).

    The compositions are written once, in :func:`hessian_product`; this checks the positional
    ``primals`` and ``tangents`` and applies it once.  ``minidiff.curvature.hvp(f, params, v, mode)``
    is the same product on one pytree of parameters, ``hvp(f, (params,), (v,), mode)[0]``, with
    its leaves checked by name and a ``vectorized=`` option for K directions at once.

    Example:
        >>> import minidiff as md
        >>> f = lambda x: (x ** 3).sum()
        >>> md.hvp(f, (md.tensor([1.0, 2.0]),), (md.tensor([1.0, 1.0]),))[0].tolist()
        [6.0, 12.0]
        >>> g = lambda p: (p["w"] ** 3).sum() * p["b"]
        >>> p = {"w": md.tensor([1.0, 2.0]), "b": md.tensor(2.0)}
        >>> v = {"w": md.tensor([1.0, 0.0]), "b": md.tensor(0.0)}
        >>> (hv,) = md.hvp(g, (p,), (v,), mode="rev-over-rev")
        >>> hv["w"].tolist(), hv["b"].item()           # [6·w·b·v_w, 3w²·v_w summed]
        ([12.0, 0.0], 3.0)
    """
    check_hvp_mode("hvp", mode)
    _check_tuples("hvp", primals, tangents)
    primals, tangents = tuple(primals), tuple(tangents)
    p_leaves, p_def = _tensors("hvp", primals, "primal")
    t_leaves, t_def = _tensors("hvp", tangents, "tangent")
    if p_def != t_def:
        raise ShapeError(f"hvp: tangents have structure {t_def} but primals have {p_def}")
    for p, t in zip(p_leaves, t_leaves):
        check_differentiable("hvp", p)
        check_tangent("hvp", p, t)
    return hessian_product(f, primals, mode)(tangents)


def check_hvp_mode(op: str, mode: str) -> None:
    """Raise ``ValueError`` naming ``op`` unless ``mode`` is one of :data:`HVP_MODES`."""
    if mode not in HVP_MODES:
        raise ValueError(f"{op}: unknown mode {mode!r}; choose one of {HVP_MODES}")


def hessian_product(f: Callable[..., Any], primals: PyTree, mode: str = "fwd-over-rev") -> Callable[..., Any]:
    """The Hessian of scalar ``f`` at ``primals`` as a reusable product ``product(tangents, vectorized=False)``.

    This is the one place the three compositions of :func:`hvp` are written (``hvp``,
    ``minidiff.curvature.hvp`` and ``minidiff.curvature.hessian_operator`` all go through it).
    ``primals`` and ``tangents`` are tuples, one entry (a pytree) per argument of ``f``; a product
    returns a tuple shaped like ``primals``.  Inputs are not checked here: the callers check them.

    * ``"fwd-over-rev"``: the JVP of the gradient; each product records the gradient's tape again
      and its walk carries the tangents;
    * ``"rev-over-fwd"``: the gradient of the directional derivative ``∇f·v``;
    * ``"rev-over-rev"``: the VJP of the gradient, whose tape is recorded here, once: each product
      only walks it again (cheapest per product, most memory).

    With ``vectorized=True`` every tangent carries a leading axis of K directions, and so does the
    result: forward over reverse pushes them through one vector-mode JVP, the other modes batch the
    product with :func:`vmap`.

    Example:
        >>> import minidiff as md
        >>> from minidiff.transforms import hessian_product
        >>> H = hessian_product(lambda x: (x ** 3).sum(), (md.tensor([1.0, 2.0]),), "rev-over-rev")
        >>> H((md.tensor([1.0, 0.0]),))[0].tolist(), H((md.eye(2),), vectorized=True)[0].tolist()
        ([6.0, 0.0], [[6.0, 0.0], [0.0, 12.0]])
    """
    check_hvp_mode("hvp", mode)
    primals = tuple(primals)
    nums = tuple(range(len(primals)))
    gradient = grad(f, argnums=nums)
    if mode == "fwd-over-rev":

        def forward_over_reverse(tangents: Sequence[PyTree], vectorized: bool = False) -> tuple[Any, ...]:
            return tuple(jvp(gradient, primals, tuple(tangents), vectorized=vectorized)[1])

        return forward_over_reverse
    if mode == "rev-over-fwd":

        def one(tangents: Sequence[PyTree]) -> tuple[Any, ...]:
            return tuple(grad(lambda *p: jvp(f, p, tuple(tangents))[1], argnums=nums)(*primals))

    else:
        _, back = vjp(gradient, *primals)

        def one(tangents: Sequence[PyTree]) -> tuple[Any, ...]:
            return tuple(back(tuple(tangents)))

    def product(tangents: Sequence[PyTree], vectorized: bool = False) -> tuple[Any, ...]:
        return vmap(one)(tuple(tangents)) if vectorized else one(tangents)

    return product
