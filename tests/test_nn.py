"""minidiff.nn: modules, parameter trees, both modes and both styles, hooks, FLOPs, initializers, models."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minidiff as md
from minidiff import nn
from minidiff.nn import functional as F
from minidiff.nn import init

RTOL64 = 1e-10  # float64: two orderings of the same sums
RTOL32 = 2e-4  # float32 forward vs reverse on the paper's models


def close(a, b, rtol=RTOL64, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def leaves(tree):
    return md.pytree.flatten(tree)[0]


def tree_close(a, b, rtol=RTOL64, atol=1e-12):
    la, da = md.pytree.flatten(a)
    lb, db = md.pytree.flatten(b)
    assert da == db
    for x, y in zip(la, lb):
        close(x, y, rtol, atol)


def tree_dot(a, b) -> float:
    return float(
        sum(
            np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64))
            for x, y in zip(leaves(a), leaves(b))
        )
    )


def tiny_mlp(seed=0):
    return nn.models.mlp(6, (5, 4), 3, seed=seed, dtype="float64")


def tiny_cnn(seed=0):
    # 16 → 14 → 12 → 6 → 4 → 2: the paper's CNN layout, small enough for finite differences
    return nn.models.cnn(1, 3, image_size=16, channels=2, hidden=5, seed=seed, dtype="float64")


def batch(shape, seed=1, classes=3):
    g = md.random.Generator(seed)
    return g.normal(shape), g.randint(0, classes, (shape[0],))


# ----------------------------------------------------------------------------- shapes and values
def test_linear_matches_numpy_and_pytorch_layout():
    layer = nn.Linear(4, 3, rng=0, dtype="float64")
    x, _ = batch((5, 4))
    w, b = layer.weight.numpy(), layer.bias.numpy()
    assert w.shape == (3, 4) and b.shape == (3,)
    close(layer(x), x.numpy() @ w.T + b)
    assert layer.output_shape((5, 4)) == (5, 3) == layer(x).shape
    assert layer.output_shape((2, 7, 4)) == (2, 7, 3)
    no_bias = nn.Linear(4, 3, bias=False, rng=0, dtype="float64")
    assert [n for n, _ in no_bias.named_parameters()] == ["weight"] and no_bias.bias is None
    close(no_bias(x), x.numpy() @ no_bias.weight.numpy().T)


def naive_conv(x, w, b, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w) + b
    return out


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (1, 2)])
def test_conv2d_matches_a_direct_loop(stride, padding):
    layer = nn.Conv2d(3, 4, 3, stride=stride, padding=padding, rng=0, dtype="float64")
    x, _ = batch((2, 3, 7, 6))
    y = layer(x)
    close(y, naive_conv(x.numpy(), layer.weight.numpy(), layer.bias.numpy(), stride, padding))
    assert layer.weight.shape == (4, 3, 3, 3)
    assert y.shape == layer.output_shape(x.shape)


def test_pool_relu_flatten_shapes_and_values():
    x, _ = batch((2, 3, 6, 6))
    pool = nn.MaxPool2d(2)
    y = pool(x)
    assert y.shape == pool.output_shape(x.shape) == (2, 3, 3, 3)
    close(y, x.numpy().reshape(2, 3, 3, 2, 3, 2).max(axis=(3, 5)))
    assert nn.MaxPool2d(3, stride=2).output_shape((1, 1, 7, 7)) == (1, 1, 3, 3)
    assert nn.MaxPool2d(3, stride=2)(md.ones((1, 1, 7, 7))).shape == (1, 1, 3, 3)
    close(nn.ReLU()(x), np.maximum(x.numpy(), 0))
    flat = nn.Flatten()
    assert flat(x).shape == flat.output_shape(x.shape) == (2, 108)
    assert nn.Flatten(2)(x).shape == nn.Flatten(2).output_shape(x.shape) == (2, 3, 36)


@pytest.mark.parametrize(
    "build,example,n_params",
    [
        (nn.models.logreg, (784,), 784 * 10 + 10),
        (nn.models.mlp, (784,), 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10),
        (
            lambda **kw: nn.models.mlp_depth(3, width=16, **kw),
            (784,),
            784 * 16 + 16 + 2 * (16 * 16 + 16) + 16 * 10 + 10,
        ),
        (
            nn.models.cnn,
            (1, 28, 28),
            1 * 64 * 9 + 64 + 3 * (64 * 64 * 9 + 64) + 1024 * 1024 + 1024 + 1024 * 10 + 10,
        ),
    ],
)
def test_paper_models_shapes_and_sizes(build, example, n_params):
    model = build()
    assert model.example_shape == example
    assert model.num_parameters() == n_params
    x = md.random.Generator(0).uniform((2, *example), dtype="float32")
    y = model(x)
    assert y.shape == model.output_shape(x.shape) == (2, 10)
    assert str(y.dtype) == "float32" and all(str(p.dtype) == "float32" for p in leaves(model.parameters()))


def test_cnn_layout_is_the_papers():
    model = nn.models.cnn()
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d"] * 2 + [
        "Flatten",
        "Linear",
        "ReLU",
        "Linear",
    ]
    shapes, shape = [], (1, 1, 28, 28)
    for layer in model:
        shape = layer.output_shape(shape)
        shapes.append(shape)
    assert [s[-1] for s in shapes[:10]] == [26, 26, 24, 24, 12, 10, 10, 8, 8, 4]
    assert shapes[10] == (1, 1024) and model[11].out_features == 1024
    assert all(
        layer.padding == (0, 0) and layer.out_channels == 64
        for layer in model
        if isinstance(layer, nn.Conv2d)
    )
    assert nn.models.mlp_depth(5).output_shape((3, 784)) == (3, 10)
    assert len([m for m in nn.models.mlp_depth(5) if isinstance(m, nn.Linear)]) == 6


def test_models_are_seeded():
    a, b, c = nn.models.mlp(seed=3), nn.models.mlp(seed=3), nn.models.mlp(seed=4)
    tree_close(a.parameters(), b.parameters(), 0, 0)
    assert not np.allclose(a[0].weight.numpy(), c[0].weight.numpy())
    d = nn.models.logreg(rng=md.random.Generator(3))
    assert d[0].weight.shape == (10, 784)
    with pytest.raises(ValueError, match="unknown model"):
        nn.models.build("resnet")
    assert nn.models.build("logreg", dtype="float64").dtype == np.float64


# ----------------------------------------------------------------------------- the parameter tree
def test_parameter_tree_names_and_order():
    model = tiny_mlp()
    tree = model.parameters()
    assert sorted(tree) == ["0", "2", "4"]  # ReLUs have no key
    assert sorted(tree["0"]) == ["bias", "weight"]
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert model.num_parameters() == 6 * 5 + 5 + 5 * 4 + 4 + 4 * 3 + 3
    assert tree["2"]["weight"] is model[2].weight
    assert [n for n, _ in model.named_modules()][:3] == ["", "0", "1"]


def test_set_parameters_roundtrip_and_errors(fake_device):
    model = tiny_mlp()
    new = md.pytree.tree_map(lambda p: p * 2.0, model.parameters())
    model.set_parameters(new)
    close(model[0].weight, new["0"]["weight"])
    before = model.parameters()

    bad_shape = md.pytree.tree_map(lambda p: p, before)
    bad_shape["2"]["weight"] = md.zeros((4, 6))
    with pytest.raises(md.ShapeError, match=r"'2\.weight' has shape \(4, 6\).*\(4, 5\)"):
        model.set_parameters(bad_shape)
    bad_dtype = md.pytree.tree_map(lambda p: p, before)
    bad_dtype["0"]["bias"] = before["0"]["bias"].astype("float32")
    with pytest.raises(md.DTypeError, match=r"'0\.bias' has dtype float32.*float64"):
        model.set_parameters(bad_dtype)
    missing = {k: v for k, v in before.items() if k != "4"}
    with pytest.raises(md.ShapeError, match=r"missing \['4\.weight', '4\.bias'\]"):
        model.set_parameters(missing)
    extra = dict(before, **{"9": {"weight": md.zeros(3)}})
    with pytest.raises(md.ShapeError, match=r"unexpected \['9\.weight'\]"):
        model.set_parameters(extra)
    with pytest.raises(md.ShapeError, match="nested dicts"):
        model.set_parameters(list(before.values()))
    moved = md.pytree.tree_map(lambda p: p, before)
    moved["0"]["weight"] = before["0"]["weight"].to(fake_device)
    with pytest.raises(md.DeviceError, match=r"'0\.weight' is on fake"):
        model.set_parameters(moved)
    tree_close(model.parameters(), before, 0, 0)  # nothing changed by the failed calls
    # arrays are accepted (no casting), and an empty dict for a parameterless child
    arrays = {k: {n: np.asarray(p) for n, p in v.items()} for k, v in before.items()}
    model.set_parameters(dict(arrays, **{"1": {}}))
    tree_close(model.parameters(), before, 0, 0)


def test_apply_errors_are_clear():
    layer = nn.Linear(4, 3)
    with pytest.raises(md.ShapeError, match="Linear.apply: the parameter tree has no 'weight'"):
        layer.apply({"w": layer.weight}, md.ones((2, 4), dtype="float32"))
    with pytest.raises(md.ShapeError, match=r"Linear\(4 → 3\): input of shape \(2, 5\)"):
        layer(md.ones((2, 5), dtype="float32"))
    with pytest.raises(md.ShapeError, match="Conv2d"):
        nn.models.cnn().output_shape((1, 3, 28, 28))
    with pytest.raises(md.ShapeError, match="larger than"):
        nn.models.cnn(image_size=12)
    with pytest.raises(TypeError, match="layer 1 is a int"):
        nn.Sequential(nn.ReLU(), 3)
    with pytest.raises(TypeError, match="callable"):
        layer.register_forward_hook("not a function")


# ----------------------------------------------------------------------------- both modes, both styles
@pytest.mark.parametrize("make,shape", [(tiny_mlp, (4, 6)), (tiny_cnn, (2, 1, 16, 16))])
def test_functional_and_tape_gradients_agree(make, shape):
    model = make()
    x, y = batch(shape)
    g = md.grad(lambda p: F.cross_entropy(model.apply(p, x), y))(model.parameters())
    model.requires_grad_()
    assert all(p.requires_grad and p.is_leaf for p in leaves(model.parameters()))
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    tree_close(model.grads(), g)
    # a second backward accumulates; zero_grad clears
    F.cross_entropy(model(x), y).backward()
    tree_close(model.grads(), md.pytree.tree_map(lambda t: 2.0 * t, g))
    model.zero_grad()
    assert all(v is None for v in leaves(model.grads()))
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in leaves(model.parameters()))


@pytest.mark.parametrize("make,shape,order", [(tiny_mlp, (4, 6), 2), (tiny_cnn, (2, 1, 16, 16), 1)])
def test_model_gradients_match_finite_differences(make, shape, order):
    model = make()
    x, y = batch(shape)
    md.testing.check_grads(
        lambda p: F.cross_entropy(model.apply(p, x), y), (model.parameters(),), order=order
    )
    md.testing.check_grads(lambda xx: model.apply(model.parameters(), xx), (x,), order=1)


@pytest.mark.parametrize("make,shape", [(tiny_mlp, (4, 6)), (tiny_cnn, (2, 1, 16, 16))])
def test_forward_mode_equals_gradient_dot_direction(make, shape):
    model = make()
    x, y = batch(shape)
    f = lambda p: F.cross_entropy(model.apply(p, x), y)
    p = model.parameters()
    v = md.pytree.tree_map(lambda t: md.random.normal(t.shape, rng=md.random.Generator(7)), p)
    loss, dv = md.jvp(f, (p,), (v,))
    close(loss, f(p))
    close(dv, tree_dot(md.grad(f)(p), v))


@pytest.mark.parametrize("build,example", [(nn.models.mlp, (784,)), (nn.models.cnn, (1, 28, 28))])
def test_forward_and_reverse_agree_on_the_paper_models_in_float32(build, example):
    model = build()
    x = md.random.Generator(0).uniform((2, *example), dtype="float32")
    y = md.tensor([3, 7])
    f = lambda p: F.cross_entropy(model.apply(p, x), y)
    p = model.parameters()
    rng = md.random.Generator(1)
    v = md.pytree.tree_map(lambda t: rng.normal(t.shape, dtype="float32"), p)
    _, dv = md.jvp(f, (p,), (v,))
    assert str(dv.dtype) == "float32"
    close(dv, tree_dot(md.grad(f)(p), v), rtol=RTOL32, atol=1e-4)


# ----------------------------------------------------------------------------- hooks
def hooked_mlp():
    """Sequential(Linear 0, ReLU 1, Linear 2, ReLU 3, Linear 4), with the references computed by hand."""
    model = tiny_mlp()
    x, y = batch((4, 6))
    p = model.parameters()
    h0 = F.linear(x, p["0"]["weight"], p["0"]["bias"])  # output of layer 0
    a1 = F.relu(h0)
    h2 = F.linear(a1, p["2"]["weight"], p["2"]["bias"])  # output of layer 2

    def rest(h):  # the loss as a function of layer 2's output
        return F.cross_entropy(model[3:].apply({"1": p["4"]}, h), y)

    return model, x, y, a1, h2, rest


def test_hooks_see_the_input_and_the_output_cotangent_functional():
    model, x, y, a1, h2, rest = hooked_mlp()
    seen = {"fwd": [], "bwd": []}
    fh = model[2].register_forward_hook(lambda m, i, o: seen["fwd"].append((m, i, o)))
    bh = model[2].register_backward_hook(lambda m, g: seen["bwd"].append((m, g)))
    f = lambda p: F.cross_entropy(model.apply(p, x), y)

    g = md.grad(f)(model.parameters())
    ((m, inp, out),) = seen["fwd"]
    assert m is model[2]
    close(inp.detach(), a1)
    close(out.detach(), h2)
    ((m, cot),) = seen["bwd"]
    assert m is model[2]
    _, back = md.vjp(rest, h2)  # the reference: cotangent of layer 2's output, by md.vjp
    (want,) = back(md.tensor(1.0))
    close(cot, want)

    # vjp of the model's output with a chosen cotangent u: the last layer's hook sees exactly u
    last = []
    with model[4].register_backward_hook(lambda m, c: last.append(c)):
        out, back = md.vjp(lambda p: model.apply(p, x), model.parameters())
        u = md.random.Generator(5).normal(out.shape)
        back(u)
    close(last[0], u)
    assert len(last) == 1

    # hooks do not change the gradient; removal stops them
    assert len(seen["fwd"]) == 2 and len(seen["bwd"]) == 2  # the grad call, then the vjp call
    fh.remove()
    bh.remove()
    g_plain = md.grad(f)(model.parameters())
    tree_close(g, g_plain)
    assert len(seen["fwd"]) == 2 and len(seen["bwd"]) == 2
    assert len(last) == 1  # removed by leaving the with block


def test_hooks_in_tape_style():
    model, x, y, a1, h2, rest = hooked_mlp()
    seen = []
    model[2].register_forward_hook(lambda m, i, o: seen.append(("fwd", i, o)))
    model[2].register_backward_hook(lambda m, g: seen.append(("bwd", g)))
    model.requires_grad_()
    loss = F.cross_entropy(model(x), y)
    assert [s[0] for s in seen] == ["fwd"]
    close(seen[0][1].detach(), a1)
    close(seen[0][2].detach(), h2)
    loss.backward()
    assert [s[0] for s in seen] == ["fwd", "bwd"]
    close(seen[1][1], md.grad(rest)(h2))
    # the tape style gradient equals the functional one with or without hooks
    model2 = tiny_mlp()
    g = md.grad(lambda p: F.cross_entropy(model2.apply(p, x), y))(model2.parameters())
    tree_close(model.grads(), g)


def test_hooks_on_a_container_and_in_forward_mode():
    model, x, y, *_ = hooked_mlp()
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(("fwd", i, o.detach())))
    model.register_backward_hook(lambda m, g: seen.append(("bwd", g)))
    p = model.parameters()
    v = md.pytree.tree_map(md.ones_like, p)
    out, t = md.jvp(lambda q: model.apply(q, x), (p,), (v,))
    assert [s[0] for s in seen] == ["fwd"]  # forward mode: no cotangent, no backward hook
    assert seen[0][1] is x
    close(seen[0][2], out)
    # the identity inserted for backward hooks passes tangents through unchanged
    model2 = tiny_mlp()
    _, t_plain = md.jvp(lambda q: model2.apply(q, x), (p,), (v,))
    close(t, t_plain)


def test_backward_hook_costs_nothing_unless_registered():
    model, x, y, *_ = hooked_mlp()
    model.requires_grad_()
    assert "nn.backward_hook" not in md.tape_stats(F.cross_entropy(model(x), y))
    handle = model[0].register_backward_hook(lambda m, g: None)
    assert md.tape_stats(F.cross_entropy(model(x), y))["nn.backward_hook"]["nodes"] == 1
    handle.remove()
    assert "nn.backward_hook" not in md.tape_stats(F.cross_entropy(model(x), y))


def test_hooked_model_under_vmap_and_second_order():
    model, x, y, *_ = hooked_mlp()
    cots = []
    model[0].register_backward_hook(lambda m, g: cots.append(g))
    per_example = md.vmap(lambda xi: model(xi))(x)
    close(per_example, model(x))
    f = lambda p: F.cross_entropy(model.apply(p, x), y)
    p = model.parameters()
    plain = tiny_mlp()
    f_plain = lambda q: F.cross_entropy(plain.apply(q, x), y)
    for mode in ("fwd-over-rev", "rev-over-fwd", "rev-over-rev"):
        tree_close(md.hvp(f, (p,), (p,), mode=mode), md.hvp(f_plain, (p,), (p,), mode=mode))
    assert cots  # the hook ran during the reverse passes


# ----------------------------------------------------------------------------- devices and dtypes
def test_to_moves_and_casts(fake_device):
    model = tiny_mlp()
    model.requires_grad_()
    model.to(fake_device)
    assert all(p.device is fake_device and p.requires_grad and p.is_leaf for p in leaves(model.parameters()))
    assert model.device is fake_device
    x, y = batch((4, 6))
    F.cross_entropy(model(x.to(fake_device)), y.to(fake_device)).backward()
    assert model.grads()["0"]["weight"].device is fake_device
    model.to("cpu", dtype="float32")
    assert model.dtype == np.float32 and model.device is md.get_device("cpu")


# ----------------------------------------------------------------------------- initializers
def test_fans():
    assert init.compute_fans((10, 784)) == (784, 10)
    assert init.compute_fans((64, 3, 5, 5)) == (75, 1600)
    assert init.compute_fans((7,)) == (7, 7)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        init.calculate_gain("swish")


SHAPE = (512, 64, 2, 2)  # fan_in 256, fan_out 2048: 131,072 samples
FAN_IN, FAN_OUT = 256, 2048


@pytest.mark.parametrize(
    "fn,kind,scale",
    [
        (init.kaiming_uniform, "uniform", math.sqrt(2) * math.sqrt(3 / FAN_IN)),  # bound
        (init.xavier_uniform, "uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
        (init.kaiming_normal, "normal", math.sqrt(2 / FAN_IN)),  # std
        (init.xavier_normal, "normal", math.sqrt(2 / (FAN_IN + FAN_OUT))),
        (init.lecun_normal, "normal", math.sqrt(1 / FAN_IN)),
    ],
)
def test_initializer_statistics(fn, kind, scale):
    """At a fixed seed: mean within 1% of the std of 0, std within 2% of its target, uniform bounds hold."""
    w = fn(SHAPE, rng=md.random.Generator(0))
    assert w.shape == SHAPE and str(w.dtype) == "float32"
    a = w.numpy().astype(np.float64)
    std = scale / math.sqrt(3) if kind == "uniform" else scale
    assert abs(a.mean()) < 0.01 * std
    assert abs(a.std() / std - 1) < 0.02
    if kind == "uniform":
        assert np.abs(a).max() <= scale and np.abs(a).max() > 0.99 * scale
    else:
        assert abs((np.abs(a) > 2 * std).mean() - 0.0455) < 0.005  # Gaussian tails
    again = fn(SHAPE, rng=md.random.Generator(0))
    np.testing.assert_array_equal(a, again.numpy())
    assert not np.array_equal(a, fn(SHAPE, rng=md.random.Generator(1)).numpy())


def test_uniform_normal_zeros_and_layer_defaults():
    u = init.uniform((1000,), -2.0, 3.0, rng=1, dtype="float64")
    assert str(u.dtype) == "float64" and u.numpy().min() >= -2 and u.numpy().max() < 3
    n = init.normal((20000,), 1.0, 0.5, rng=2)
    assert abs(n.numpy().mean() - 1) < 0.02 and abs(n.numpy().std() - 0.5) < 0.01
    assert not init.zeros((3, 2)).numpy().any()
    with pytest.raises(TypeError, match="floating"):
        init.uniform((2,), dtype="int32")
    lin = nn.Linear(400, 300, rng=0)  # PyTorch's default: U(±1/√fan_in) for weight and bias
    for p in (lin.weight, lin.bias):
        assert np.abs(p.numpy()).max() <= 1 / 20 and np.abs(p.numpy()).max() > 0.95 / 20
    conv = nn.Conv2d(4, 8, 5, rng=0)
    assert np.abs(conv.weight.numpy()).max() <= 1 / 10 and np.abs(conv.bias.numpy()).max() <= 1 / 10


def test_unfold_gives_the_windows_conv2d_multiplies():
    """unfold(x) against windows cut out by hand; conv2d equals weights times the unfolded input."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 5, 4))
    cols = md.nn.functional.unfold(md.tensor(x), (2, 3), stride=1, padding=1)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.stack(
        [xp[:, :, i : i + 6, j : j + 4] for i in range(2) for j in range(3)], axis=2
    )  # (N, C, kh·kw, Ho, Wo) with Ho = 5 + 2 - 2 + 1, Wo = 4 + 2 - 3 + 1
    np.testing.assert_allclose(cols.numpy(), want, rtol=0, atol=0)
    w = rng.normal(size=(4, 3, 2, 3))
    conv = md.nn.functional.conv2d(md.tensor(x), md.tensor(w), padding=1).numpy()
    np.testing.assert_allclose(conv, np.einsum("ock,nckhw->nohw", w.reshape(4, 3, 6), want), rtol=1e-12)
    with pytest.raises(md.ShapeError, match="unfold: expected NCHW"):
        md.nn.functional.unfold(md.ones((3, 4, 4)), 2)


@pytest.mark.parametrize("small_k", [0, 10**6])
@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1), ((1, 2), (0, 2))])
def test_conv2d_both_gemm_layouts_give_the_loop_and_its_gradients(small_k, stride, padding, monkeypatch):
    """The batch-wide GEMM and the per-image GEMMs (``SMALL_K``), forward and both cotangents, against
    the direct loop and, for the gradients, the old im2col formula differentiated op by op (float64)."""
    monkeypatch.setattr(md.primitives.convolution, "SMALL_K", small_k)
    rng = np.random.default_rng(1)
    x, w, b = rng.normal(size=(2, 3, 7, 6)), rng.normal(size=(4, 3, 3, 2)), rng.normal(size=4)
    r = rng.normal(size=F.conv2d(md.tensor(x), md.tensor(w), stride=stride, padding=padding).shape)
    if stride == 1:
        got = F.conv2d(md.tensor(x), md.tensor(w), md.tensor(b), stride=stride, padding=padding)
        close(got, naive_conv(x, w, b, stride, padding))

    def old(x_, w_):  # pad, slice, stack, matmul: the formula conv2d had before its primitive
        ph, pw = (padding, padding) if isinstance(padding, int) else padding
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        xp_ = md.pad(x_, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        ho, wo = r.shape[2:]
        cols = md.stack(
            [
                xp_[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
                for i in range(3)
                for j in range(2)
            ],
            axis=2,
        )
        return md.matmul(md.reshape(w_, (4, 18)), md.reshape(cols, (2, 18, ho * wo))).reshape(r.shape)

    def loss(conv):
        return lambda x_, w_: (conv(x_, w_) * md.tensor(r)).sum()

    new = md.grad(loss(lambda x_, w_: F.conv2d(x_, w_, stride=stride, padding=padding)), argnums=(0, 1))
    want = md.grad(loss(old), argnums=(0, 1))(md.tensor(x), md.tensor(w))
    for a, e in zip(new(md.tensor(x), md.tensor(w)), want):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-12, atol=1e-12)


def test_conv2d_refuses_bad_shapes_strides_and_paddings():
    with pytest.raises(md.ShapeError, match="conv2d: expected NCHW"):
        F.conv2d(md.ones((3, 4, 4)), md.ones((2, 3, 1, 1)))
    with pytest.raises(md.ShapeError, match="conv2d: expected OIHW"):
        F.conv2d(md.ones((1, 3, 4, 4)), md.ones((2, 3, 1)))
    with pytest.raises(md.ShapeError, match="conv2d: input has 3 channels"):
        F.conv2d(md.ones((1, 3, 4, 4)), md.ones((2, 2, 1, 1)))
    with pytest.raises(md.ShapeError, match="conv2d: stride must be >= 1"):
        F.conv2d(md.ones((1, 3, 4, 4)), md.ones((2, 3, 1, 1)), stride=0)
    with pytest.raises(md.ShapeError, match="conv2d: stride must be >= 1 and padding >= 0"):
        F.conv2d(md.ones((1, 3, 4, 4)), md.ones((2, 3, 1, 1)), padding=-1)
    with pytest.raises(md.ShapeError, match=r"conv2d: kernel \(5, 5\) larger than the padded input \(4, 4\)"):
        F.conv2d(md.ones((1, 3, 4, 4)), md.ones((2, 3, 5, 5)))
