"""Look at a tape: the nodes that lead to a reverse-mode value, oldest first, one line each.

:func:`format_tape` is for reading and teaching; it only reads what the tape already holds (each
node's primitive, parents, parameters and saved values) and changes nothing.  Nodes are numbered
``%0, %1, …`` in recording order, so the listing is a program and the backward pass walks it bottom
up.  ``saves`` lists what the node keeps alive for its VJP rules (``out`` is the node's own output); the
byte count in the heading counts an array kept by several nodes once, as ``md.tape_stats`` does.

>>> import minidiff as md
>>> from minidiff.transforms.inspect_tape import format_tape
>>> x = md.tensor([1.0, 2.0], requires_grad=True)
>>> y = (md.exp(x) * 3.0).sum()
>>> print(format_tape(y, names={"x": x}))
tape of a float64[] value on level 1: 4 nodes, 16 bytes saved
  %0 = leaf                                float64[2]             # x
  %1 = exp(%0)                             float64[2]  saves out
  %2 = multiply(%1, 3.0)                   float64[2]
  %3 = sum(%2, axis=(0,), keepdims=False)  float64[]
"""

from __future__ import annotations

from typing import Any

from ..modes.reverse import FREED, Aval, Freed, Node
from ..tensor.core import Tensor

__all__ = ["format_tape", "tape_nodes"]


def _node_of(y: Tensor) -> Node:
    node = getattr(y, "_node", None)
    if node is None:
        raise TypeError(
            f"format_tape: this {type(y).__name__} is not on a tape; compute it from a tensor with "
            "requires_grad=True (or inside md.vjp/md.grad) to record one"
        )
    return node


def tape_nodes(y: Tensor) -> list:
    """The tape nodes that ``y`` depends on, oldest first (a node always comes after its parents)."""
    seen, stack, nodes = set(), [_node_of(y)], []
    while stack:  # iterative: a 10,000-op chain must not hit the recursion limit
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        nodes.append(n)
        stack.extend(p for _, p in n.parents)
    nodes.sort(key=lambda n: n.seq)
    return nodes


def _short(v: Any, limit: int = 40) -> str:
    if isinstance(v, Tensor):
        return repr(v.detach().item()) if v.size == 1 and v.ndim == 0 else f"const {_type(v)}"
    if isinstance(v, (Aval, Freed)):  # a constant the tape did not keep (or freed): its shape and dtype stay
        return f"const {_type(v)}"
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _type(v: Any) -> str:
    return f"{v.dtype}[{','.join(str(d) for d in v.shape)}]"


def format_tape(y: Tensor, names: dict | None = None) -> str:
    """The tape that computed ``y``, one node per line, oldest first.

    ``names`` maps display names to tensors (leaves or intermediate values) to label their nodes.
    Inputs that are not on the tape (constants) are shown inline.  ``backward()`` (without
    ``retain_graph=True``) frees the values the nodes saved but keeps the graph: the listing stays, and
    the last column says ``freed`` where it said ``saves`` (an array-valued parameter, such as an
    index, shows as ``<freed>``).  The columns are as wide as their longest entry.

    >>> import minidiff as md
    >>> x = md.tensor([1.0, 2.0], requires_grad=True)
    >>> y = md.sum(md.reshape(x * x, (2, 1)) * md.tensor([[1.0], [2.0]]))
    >>> y.backward()
    >>> print(format_tape(y, names={"x": x}))
    tape of a float64[] value on level 1: 5 nodes, 0 bytes saved (4 nodes freed by backward())
      %0 = leaf                                  float64[2]                              # x
      %1 = multiply(%0, %0)                      float64[2]    freed %0
      %2 = reshape(%1, shape=(2, 1))             float64[2,1]
      %3 = multiply(%2, const float64[2,1])      float64[2,1]  freed const float64[2,1]
      %4 = sum(%3, axis=(0, 1), keepdims=False)  float64[]
    """
    nodes = tape_nodes(y)
    label = {n: f"%{k}" for k, n in enumerate(nodes)}
    tags: dict[Node | None, list[str]] = {}
    for name, t in (names or {}).items():
        node = getattr(t, "_node", None)
        if node in label:
            tags.setdefault(node, []).append(name)
    rows, total = [], 0
    counted: dict = {}
    for n in nodes:
        expr, saves, kept_bytes = _describe_node(n, label, counted)
        total += kept_bytes
        tag = f"# {', '.join(tags[n])}" if n in tags else ""
        rows.append((f"{label[n]} = {expr}", f"{n.dtype}[{','.join(str(d) for d in n.shape)}]", saves, tag))
    w0 = max(20, *(len(r[0]) for r in rows))  # as wide as the longest expression: columns stay aligned
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    lines = []
    for expr, typ, saves, tag in rows:
        line = (
            f"  {expr:<{w0}}  {typ:<{w1}}  {saves:<{w2}}  {tag}"
            if tag
            else f"  {expr:<{w0}}  {typ:<{w1}}  {saves}"
        )
        lines.append(line.rstrip())
    level = getattr(getattr(y, "_trace", None), "level", "?")
    count = f"{len(nodes)} node" + ("s" if len(nodes) != 1 else "")
    head = f"tape of a {_type(y)} value on level {level}: {count}, {total} bytes saved"
    freed = sum(n.freed for n in nodes)
    if freed:
        head += f" ({freed} node{'s' if freed != 1 else ''} freed by backward())"
    return "\n".join([head, *lines])


def _describe_node(n: Node, label: dict, counted: dict) -> tuple[str, str, int]:
    """``(expression, what it saves, bytes it keeps alive not counted yet)`` of one tape node; a value
    kept by several nodes is counted once (``counted`` holds the buffers seen)."""
    kind = getattr(n.prim, "name", None)
    if n.prim is None:
        return "leaf", "", 0
    parent_of = {i: p for i, p in n.parents}
    args = [label[parent_of[i]] if i in parent_of else _short(a) for i, a in enumerate(n.args)]
    args += [f"{k}={_short(v)}" for k, v in (n.params or {}).items()]
    kept = list(dict.fromkeys(args[i] for i, a in enumerate(n.args) if _saved(a, n.freed)))
    if _saved(n.ans, n.freed):
        kept.append("out")
    verb = "freed" if n.freed else "saves"
    nbytes = 0
    for key, size in n.saved_buffers().items():  # the tape's one measure, as md.tape_stats counts
        if key not in counted:
            counted[key] = size
            nbytes += size
    return f"{kind}({', '.join(args)})", f"{verb} {', '.join(kept)}" if kept else "", nbytes


def _saved(v: Any, freed: bool) -> bool:
    """Whether ``v`` is a value the node keeps (or, once freed by ``backward()``, kept until then)."""
    return v is FREED or isinstance(v, Freed) if freed else isinstance(v, Tensor)
