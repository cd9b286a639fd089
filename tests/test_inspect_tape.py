"""format_tape: the op graph of a value, before and after backward() freed what the tape saved."""

from __future__ import annotations

import re

import pytest

import minidiff as md
from minidiff.modes.reverse import FREED, Freed
from minidiff.transforms.inspect_tape import format_tape, tape_nodes


def _program():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    y = md.sum(md.exp(x) * md.tensor([3.0, 4.0]) + md.ones(2))
    return x, y


def test_backward_keeps_the_graph_and_marks_what_it_freed():
    x, y = _program()
    before = format_tape(y, names={"x": x}).splitlines()
    assert before[0] == "tape of a float64[] value on level 1: 5 nodes, 32 bytes saved"
    y.backward()
    after = format_tape(y, names={"x": x}).splitlines()
    assert (
        after[0]
        == "tape of a float64[] value on level 1: 5 nodes, 0 bytes saved (4 nodes freed by backward())"
    )
    assert after[1:] == [
        "  %0 = leaf                                float64[2]                          # x",
        "  %1 = exp(%0)                             float64[2]  freed out",
        "  %2 = multiply(%1, const float64[2])      float64[2]  freed const float64[2]",
        "  %3 = add(%2, const float64[2])           float64[2]",
        "  %4 = sum(%3, axis=(0,), keepdims=False)  float64[]",
    ]
    assert [line.replace("saves", "freed") for line in before[1:]] == after[1:]
    assert x.grad.tolist() == pytest.approx([3.0 * 2.718281828459045, 4.0 * 7.38905609893065], rel=1e-12)


def test_freed_nodes_keep_no_arrays_but_keep_their_parents():
    x, y = _program()
    y.backward()
    nodes = tape_nodes(y)
    assert [n.prim.name if n.prim else "leaf" for n in nodes] == ["leaf", "exp", "multiply", "add", "sum"]
    for n in nodes[1:]:
        assert n.freed and n.saved_bytes() == 0 and n.parents
        assert not any(isinstance(a, md.Tensor) for a in n.args)
    assert nodes[1].ans is FREED  # exp kept its output
    constant = nodes[2].args[1]  # multiply kept the constant it multiplies by: its shape stays
    assert isinstance(constant, Freed) and (constant.shape, str(constant.dtype)) == ((2,), "float64")


def test_a_second_backward_through_the_kept_graph_still_raises():
    _, y = _program()
    y.backward()
    with pytest.raises(md.TapeError, match="tape through sum was freed.*retain_graph=True"):
        y.backward()


def test_retain_graph_keeps_the_listing_unchanged():
    x, y = _program()
    before = format_tape(y, names={"x": x})
    y.backward(retain_graph=True)
    assert format_tape(y, names={"x": x}) == before


def test_an_index_parameter_is_freed_with_the_saved_values():
    x = md.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = md.sum(x[md.tensor([0, 2, 2])])
    assert "index=(array([0, 2, 2]),)" in format_tape(y)
    y.backward()
    assert "%1 = getitem(%0, index=<freed>)" in format_tape(y)
    assert x.grad.tolist() == [1.0, 0.0, 2.0]


def _type_columns(lines: list[str]) -> set[int]:
    """Where the type column starts on each line (after the expression and two or more spaces)."""
    return {re.search(r"  +float64\[", line).end() - len("float64[") for line in lines}


def test_columns_stay_aligned_with_long_parameters_and_names():
    w = md.ones((2, 3, 4), requires_grad=True)
    padded = md.pad(w, ((0, 0), (1, 1), (2, 2)))[:, :3, :4]
    y = md.einsum("abc,abc->", padded, md.ones((2, 3, 4)))
    listing = format_tape(y, names={"a_parameter_with_a_rather_long_name": w})
    lines = listing.splitlines()[1:]
    assert (
        max(len(line.split("  float64")[0]) for line in lines) > 60
    )  # an expression longer than the old cap
    assert len(_type_columns(lines)) == 1  # the type column starts at one offset
    assert lines[0].endswith("# a_parameter_with_a_rather_long_name")
    saves = [line.index("saves") for line in lines if "saves" in line]
    y.backward()
    after = format_tape(y).splitlines()[1:]
    assert _type_columns(after) == _type_columns(lines)
    assert [line.index("freed") for line in after if "freed" in line] == saves


def test_an_unsaved_constant_shows_its_shape_not_an_object_repr():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    listing = format_tape(x + md.ones(2))
    assert "%1 = add(%0, const float64[2])" in listing and "object at" not in listing


def test_a_value_not_on_a_tape_is_refused():
    with pytest.raises(TypeError, match="format_tape: this Tensor is not on a tape"):
        format_tape(md.tensor(1.0))
