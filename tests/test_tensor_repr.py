"""Printing traced values: the kind and level of the tracer, its values, and what its kind adds (a dual's
tangent, a tape entry's grad_fn), for display only — never a way around the conversion rules."""

from __future__ import annotations

import numpy as np
import pytest

import minidiff as md


def test_tape_style_leaf_and_result_show_their_values():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    assert repr(x) == "Taped(level=1, value=[1., 2.], requires_grad=True)"
    assert repr(x * x) == "Taped(level=1, value=[1., 4.], grad_fn=multiply)"
    assert str(md.sum(x * x)) == "Taped(level=1, value=5.0, grad_fn=sum)"
    assert f"{md.sum(x)}" == "Taped(level=1, value=3.0, grad_fn=sum)"  # format() without a spec is str()


def test_a_dual_shows_its_value_and_tangent():
    with md.dual_level():
        d = md.make_dual(md.tensor([1.0, 2.0]), md.tensor([0.0, 1.0]))
        assert repr(d) == "Dual(level=2, value=[1., 2.], tangent=[0., 1.])"
        assert repr(d * d) == "Dual(level=2, value=[1., 4.], tangent=[0., 4.])"


def test_a_dual_inside_a_transform_prints_without_raising_but_still_refuses_conversion():
    seen = []

    def f(x):
        seen.append(repr(x))
        with pytest.raises(md.TracerError, match="lose that derivative"):
            float(x)  # printing is no conversion path: the rule for numbers still holds
        return x * x

    md.jvp(f, (md.tensor(3.0),), (md.tensor(1.0),))
    assert seen == ["Dual(level=2, value=3.0, tangent=1.0)"]


def test_nested_levels_show_each_kind_and_the_values_underneath():
    seen = []

    def inner(x):
        seen.append((repr(x), repr(x.primal)))
        return x * x

    md.grad(lambda x: md.jvp(inner, (x,), (md.tensor(1.0),))[1])(md.tensor(3.0))
    assert seen == [
        ("Dual(level=3, value=3.0, tangent=1.0)", "Taped(level=2, value=3.0, requires_grad=True)")
    ]


def test_batched_values_show_one_row_per_example():
    seen = []

    def f(row):
        seen.append(repr(row))
        return row.sum()

    md.vmap(f)(md.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    assert seen == [
        "Batched(level=2,\n"
        "        batch_size=3,\n"
        "        values=[[1., 2.],\n"
        "                [3., 4.],\n"
        "                [5., 6.]])"
    ]


def test_vector_mode_tangents_are_named_in_the_plural():
    seen = []

    def f(x):
        seen.append(repr(x))
        return x * x

    md.jacfwd(f)(md.tensor([0.0, 1.0]))
    assert seen == [
        "Dual(level=3,\n     value=[0., 1.],\n     tangents=[[1., 0.],\n               [0., 1.]])"
    ]


def test_large_values_are_summarized_as_numpy_does():
    x = md.arange(5000.0).requires_grad_()
    text = repr(x * 2.0)
    assert "..." in text and "shape=(5000,)" in text and "grad_fn=multiply" in text
    assert len(text) < 300
    assert np.array2string(np.arange(5000.0) * 2, separator=", ").split(",")[0] in text


def test_float32_and_empty_tracers_say_so():
    x = md.tensor([1.5], dtype="float32", requires_grad=True)
    assert repr(x) == "Taped(level=1, value=[1.5], requires_grad=True, dtype=float32)"
    e = md.zeros((0, 3), requires_grad=True)
    assert repr(e) == "Taped(level=1, value=[], requires_grad=True, shape=(0, 3))"


def test_an_escaped_tracer_still_prints():
    leaked = []
    md.grad(lambda x: leaked.append(x) or (x * x).sum())(md.tensor([2.0]))
    assert repr(leaked[0]) == "Taped(level=2, value=[2.], requires_grad=True)"
    with pytest.raises(md.TracerError, match="escaped"):
        leaked[0].numpy()


def test_plain_tensors_keep_numpys_repr():
    assert repr(md.tensor([1.0, 2.0])) == "tensor([1., 2.])"
