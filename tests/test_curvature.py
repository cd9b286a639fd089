"""minidiff.curvature: HVP, Gauss-Newton and Fisher products, Hutchinson estimators, SciPy operators.

References are built independently of the products under test: dense Hessians by central finite
differences of the reverse-mode gradient, Jacobians by ``md.jacfwd`` turned into NumPy matrices, output
-space Hessians written out analytically in NumPy.  Everything in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as sla
from hypothesis import given, settings
from hypothesis import strategies as st

import minidiff as md
from minidiff import curvature as cv
from minidiff import pytree
from minidiff.errors import DeviceError, DTypeError, ShapeError

F = md.nn.functional
MODES = cv.HVP_MODES
DISTS = cv.PROBE_DISTRIBUTIONS


# ----------------------------------------------------------------------------- a small network
def _net(seed=0, n=5, d=3, h=4, c=3):
    rng = np.random.default_rng(seed)
    params = {
        "w1": md.tensor(rng.normal(size=(h, d))),
        "b1": md.tensor(rng.normal(size=h) * 0.1),
        "w2": md.tensor(rng.normal(size=(c, h))),
        "b2": md.tensor(rng.normal(size=c) * 0.1),
    }
    x = md.tensor(rng.normal(size=(n, d)))
    y = md.tensor(rng.integers(0, c, n))

    def model(p):
        return F.linear(md.tanh(F.linear(x, p["w1"], p["b1"])), p["w2"], p["b2"])

    def loss(z):
        return F.cross_entropy(z, y)

    return params, model, loss, y


def _flat(tree):
    return np.concatenate([np.asarray(t.numpy(), dtype=np.float64).ravel() for t in pytree.flatten(tree)[0]])


def _unflat(x, like):
    leaves, treedef = pytree.flatten(like)
    out, off = [], 0
    for p in leaves:
        out.append(md.tensor(np.asarray(x[off : off + p.size]).reshape(p.shape), dtype=p.dtype))
        off += p.size
    return pytree.unflatten(treedef, out)


def _random_like(params, seed, k=None):
    rng = np.random.default_rng(seed)
    lead = () if k is None else (k,)
    return pytree.tree_map(lambda p: md.tensor(rng.normal(size=lead + p.shape)), params)


def _fd_hessian(f, params, eps=1e-5):
    """Dense Hessian by central differences of the gradient (second-order machinery not involved)."""
    theta = _flat(params)
    g = md.grad(f)
    cols = []
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = eps
        cols.append((_flat(g(_unflat(theta + e, params))) - _flat(g(_unflat(theta - e, params)))) / (2 * eps))
    h = np.stack(cols, axis=1)
    return 0.5 * (h + h.T)


def _jacobian(model, params):
    """J (outputs flattened × parameters flattened) from md.jacfwd, as a NumPy matrix."""
    jac = md.jacfwd(model)(params)  # a tree like params, each leaf out.shape + leaf.shape
    z = model(params)
    return np.concatenate([t.numpy().reshape(z.size, -1) for t in pytree.flatten(jac)[0]], axis=1)


def _ce_output_hessian(z):
    """(1/N) ⊕_i (diag(p_i) − p_i p_iᵀ) for the mean softmax cross-entropy, in NumPy."""
    z = z.numpy()
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    n, c = z.shape
    m = np.zeros((n * c, n * c))
    for i in range(n):
        m[i * c : (i + 1) * c, i * c : (i + 1) * c] = (np.diag(p[i]) - np.outer(p[i], p[i])) / n
    return m, p


@pytest.fixture(scope="module")
def net():
    params, model, loss, y = _net()
    f = lambda p: loss(model(p))
    return {
        "params": params,
        "model": model,
        "loss": loss,
        "y": y,
        "f": f,
        "H": _fd_hessian(f, params),
        "J": _jacobian(model, params),
        "M": _ce_output_hessian(model(params)),
    }


# ----------------------------------------------------------------------------- hvp
@pytest.mark.parametrize("mode", MODES)
def test_hvp_equals_dense_hessian_times_v(net, mode):
    v = _random_like(net["params"], 1)
    hv = cv.hvp(net["f"], net["params"], v, mode=mode)
    assert pytree.flatten(hv)[1] == pytree.flatten(net["params"])[1]
    np.testing.assert_allclose(_flat(hv), net["H"] @ _flat(v), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_vectorized_hvp_gives_each_direction(net, mode):
    v = _random_like(net["params"], 2, k=3)
    hv = cv.hvp(net["f"], net["params"], v, mode=mode, vectorized=True)
    for k in range(3):
        vk = pytree.tree_map(lambda t, k=k: t[k], v)
        hk = pytree.tree_map(lambda t, k=k: t[k], hv)
        np.testing.assert_allclose(_flat(hk), net["H"] @ _flat(vk), rtol=1e-6, atol=1e-7)


@settings(max_examples=15, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(1, 3), min_size=0, max_size=2), min_size=1, max_size=3),
    k=st.integers(1, 3),
    mode=st.sampled_from(MODES),
    seed=st.integers(0, 2**16),
)
def test_hvp_of_a_cubic_matches_its_closed_form(shapes, k, mode, seed):
    """f = ½θᵀAθ + Σθ³/6 over a tuple of leaves: H = A + diag(θ), written out in NumPy."""
    rng = np.random.default_rng(seed)
    params = tuple(md.tensor(rng.normal(size=tuple(s))) for s in shapes)
    n = sum(p.size for p in params)
    a = rng.normal(size=(n, n))
    a = a + a.T
    a_t = md.tensor(a)

    def f(p):
        theta = md.concatenate([md.reshape(t, (-1,)) for t in p])
        return 0.5 * (theta * (a_t @ theta)).sum() + (theta**3).sum() / 6

    h = a + np.diag(_flat(params))
    v = _random_like(params, seed + 1, k=k)
    hv = cv.hvp(f, params, v, mode=mode, vectorized=True)
    got = np.stack([_flat(pytree.tree_map(lambda t, j=j: t[j], hv)) for j in range(k)])
    want = np.stack([h @ _flat(pytree.tree_map(lambda t, j=j: t[j], v)) for j in range(k)])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_vector_mode_through_a_small_cnn():
    """Convolutions and max-pooling under vmap: K products at once equal K single products."""
    m = md.nn.models.cnn(image_size=16, channels=2, hidden=8, dtype="float64")
    params = m.parameters()
    x = md.random.Generator(0).normal((3, 1, 16, 16))
    y = md.tensor([0, 3, 9])
    model_fn = lambda q: m.apply(q, x)
    loss_fn = lambda z: F.cross_entropy(z, y)
    v = cv.sample_probes(params, 2, "normal", rng=1)
    many_h = cv.hvp(lambda q: loss_fn(model_fn(q)), params, v, vectorized=True)
    many_g = cv.ggn_vp(model_fn, loss_fn, params, v, vectorized=True)
    for k in range(2):
        vk = pytree.tree_map(lambda t, k=k: t[k], v)
        one_h = cv.hvp(lambda q: loss_fn(model_fn(q)), params, vk, mode="rev-over-rev")
        one_g = cv.ggn_vp(model_fn, loss_fn, params, vk)
        np.testing.assert_allclose(
            _flat(pytree.tree_map(lambda t, k=k: t[k], many_h)), _flat(one_h), atol=1e-10
        )
        np.testing.assert_allclose(
            _flat(pytree.tree_map(lambda t, k=k: t[k], many_g)), _flat(one_g), atol=1e-10
        )


# ----------------------------------------------------------------------------- GGN and Fisher
def test_ggn_vp_equals_explicit_jacobians_for_cross_entropy(net):
    m, _ = net["M"]
    v = _random_like(net["params"], 3)
    gv = cv.ggn_vp(net["model"], net["loss"], net["params"], v)
    want = net["J"].T @ (m @ (net["J"] @ _flat(v)))
    np.testing.assert_allclose(_flat(gv), want, rtol=1e-10, atol=1e-12)


def test_ggn_vp_with_a_non_quadratic_loss_and_a_pytree_output(net):
    """ℓ(z) = Σ log cosh(z₀ − t) + ½Σ z₁²: H_ℓ = diag(sech²(z₀ − t)) ⊕ I, with z a pair of outputs."""
    params, model = net["params"], net["model"]
    t = md.tensor(np.random.default_rng(4).normal(size=(5, 3)))

    def model2(p):
        z = model(p)
        return (z, md.tanh(z[:, :2]))

    def loss2(z):  # log cosh u = softplus(2u) − u − log 2, whose second derivative is sech²(u)
        return (md.softplus(2 * (z[0] - t)) - (z[0] - t)).sum() + 0.5 * (z[1] * z[1]).sum()

    z0 = model(params).numpy() - t.numpy()
    h0 = 1.0 / np.cosh(z0.ravel()) ** 2
    j0 = net["J"]
    jac1 = md.jacfwd(lambda p: model2(p)[1])(params)
    j1 = np.concatenate([a.numpy().reshape(10, -1) for a in pytree.flatten(jac1)[0]], axis=1)
    v = _random_like(params, 5)
    want = j0.T @ (h0 * (j0 @ _flat(v))) + j1.T @ (j1 @ _flat(v))
    got = cv.ggn_vp(model2, loss2, params, v)
    np.testing.assert_allclose(_flat(got), want, rtol=1e-9, atol=1e-11)


def test_ggn_differs_from_the_hessian_of_a_nonlinear_model(net):
    """The GGN drops Σ_k ∂ℓ/∂z_k ∇²z_k: on a tanh network the two products differ (the test can fail)."""
    v = _random_like(net["params"], 6)
    gv = _flat(cv.ggn_vp(net["model"], net["loss"], net["params"], v))
    assert np.linalg.norm(gv - net["H"] @ _flat(v)) > 1e-3 * np.linalg.norm(gv)


def test_vectorized_ggn_vp_gives_each_direction(net):
    m, _ = net["M"]
    v = _random_like(net["params"], 7, k=4)
    gv = cv.ggn_vp(net["model"], net["loss"], net["params"], v, vectorized=True)
    for k in range(4):
        want = net["J"].T @ (m @ (net["J"] @ _flat(pytree.tree_map(lambda t, k=k: t[k], v))))
        np.testing.assert_allclose(
            _flat(pytree.tree_map(lambda t, k=k: t[k], gv)), want, rtol=1e-10, atol=1e-12
        )


def test_analytic_fisher_equals_ggn_for_cross_entropy(net):
    v = _random_like(net["params"], 8)
    fv = cv.fisher_vp(net["model"], net["params"], v)
    gv = cv.ggn_vp(net["model"], net["loss"], net["params"], v)
    np.testing.assert_allclose(_flat(fv), _flat(gv), rtol=1e-12, atol=1e-14)
    m, _ = net["M"]
    np.testing.assert_allclose(_flat(fv), net["J"].T @ m @ net["J"] @ _flat(v), rtol=1e-10, atol=1e-12)


def _sampled_m(p, labels):
    """(1/(N S)) Σ_s ⊕_i g_is g_isᵀ with g_is = p_i − e_{label}: the sampled output-space Fisher."""
    s, n = labels.shape
    c = p.shape[1]
    m = np.zeros((n * c, n * c))
    for i in range(n):
        for lab in labels[:, i]:
            g = p[i] - np.eye(c)[lab]
            m[i * c : (i + 1) * c, i * c : (i + 1) * c] += np.outer(g, g) / (n * s)
    return m


def test_sampled_fisher_with_given_labels_is_the_stated_formula(net):
    _, p = net["M"]
    labels = np.random.default_rng(9).integers(0, 3, size=(3, 5))
    v = _random_like(net["params"], 10)
    fv = cv.fisher_vp(net["model"], net["params"], v, "sampled", labels=md.tensor(labels))
    want = net["J"].T @ _sampled_m(p, labels) @ net["J"] @ _flat(v)
    np.testing.assert_allclose(_flat(fv), want, rtol=1e-10, atol=1e-12)
    # the data's own labels: the empirical Fisher
    fe = cv.fisher_vp(net["model"], net["params"], v, "sampled", labels=net["y"])
    want = net["J"].T @ _sampled_m(p, net["y"].numpy()[None]) @ net["J"] @ _flat(v)
    np.testing.assert_allclose(_flat(fe), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_fisher_mean_converges_to_the_analytic_one(net, seed):
    """CLT bound: every coordinate of F̂v (S samples) lies within 5 standard errors of Fv.

    The variance of one sample is exact: examples are independent and the label of example i takes
    each class c with probability p_ic, so Var = Σ_i Σ_c p_ic (Y_ic − E Y_i)² with
    Y_ic = J_iᵀ g_ic g_icᵀ J_i v / N.
    """
    m, p = net["M"]
    j = net["J"]
    n, c = p.shape
    v = _random_like(net["params"], 11)
    u = j @ _flat(v)
    var = np.zeros(j.shape[1])
    for i in range(n):
        ji, ui = j[i * c : (i + 1) * c], u[i * c : (i + 1) * c]
        ys = np.stack([ji.T @ (p[i] - np.eye(c)[k]) * ((p[i] - np.eye(c)[k]) @ ui) / n for k in range(c)])
        mean = p[i] @ ys
        var += p[i] @ (ys - mean) ** 2
    s = 4000
    fv = cv.fisher_vp(net["model"], net["params"], v, "sampled", n_samples=s, rng=md.random.Generator(seed))
    exact = j.T @ m @ u
    bound = 5 * np.sqrt(var / s)
    err = np.abs(_flat(fv) - exact)
    assert np.all(err <= bound + 1e-12), np.max(err / bound)
    assert np.max(err / bound) > 1e-3  # a sampled estimate, not the analytic value in disguise


def test_sample_labels_follow_the_softmax():
    logits = md.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, -1.0]])
    s = 20000
    labels = cv.sample_labels(logits, s, rng=md.random.Generator(3)).numpy()
    assert labels.shape == (s, 2) and labels.dtype.kind == "i"
    p = np.exp(logits.numpy())
    p /= p.sum(axis=1, keepdims=True)
    for i in range(2):
        freq = np.bincount(labels[:, i], minlength=3) / s
        assert np.all(np.abs(freq - p[i]) <= 5 * np.sqrt(p[i] * (1 - p[i]) / s))


def test_fisher_operator_keeps_its_draw(net):
    """The sampled operator applies one fixed matrix (so CG and Lanczos see a linear operator)."""
    op = cv.fisher_operator(net["model"], net["params"], "sampled", n_samples=2, rng=5)
    x = np.random.default_rng(0).normal(size=op.shape[0])
    np.testing.assert_array_equal(op @ x, op @ x)
    want = net["J"].T @ _sampled_m(net["M"][1], op.labels.numpy()) @ net["J"] @ x
    np.testing.assert_allclose(op @ x, want, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- Hutchinson
def _diag_var(h, dist):
    off = (h**2).sum(axis=1) - np.diag(h) ** 2
    return off if dist == "rademacher" else off + 2 * np.diag(h) ** 2


def _trace_var(h, dist):
    fro = (h**2).sum()
    return 2 * (fro - (np.diag(h) ** 2).sum()) if dist == "rademacher" else 2 * fro


@pytest.mark.parametrize("dist", DISTS)
def test_hutchinson_diag_within_clt_bound(net, dist):
    h, n = net["H"], 3000
    est = cv.hutchinson_diag(net["f"], net["params"], n_probes=n, distribution=dist, rng=11, running=True)
    assert est.n_probes == n
    sd = np.sqrt(_diag_var(h, dist))
    err = np.abs(_flat(est.value) - np.diag(h))
    assert np.all(err <= 5 * sd / np.sqrt(n) + 1e-9), np.max(err / (sd / np.sqrt(n)))
    # the reported standard error estimates the true one (coordinates with some variance)
    ratio = _flat(est.stderr)[sd > 1e-3] / (sd[sd > 1e-3] / np.sqrt(n))
    assert np.all((ratio > 0.7) & (ratio < 1.4)), ratio


@pytest.mark.parametrize("dist", DISTS)
def test_hutchinson_trace_within_clt_bound(net, dist):
    h, n = net["H"], 3000
    est = cv.hutchinson_trace(net["f"], net["params"], n_probes=n, distribution=dist, rng=12, running=True)
    sd = np.sqrt(_trace_var(h, dist))
    assert abs(est.value.item() - np.trace(h)) <= 5 * sd / np.sqrt(n)
    assert 0.8 < est.stderr.item() / (sd / np.sqrt(n)) < 1.25
    plain = cv.hutchinson_trace(net["f"], net["params"], n_probes=n, distribution=dist, rng=12)
    np.testing.assert_allclose(plain.item(), est.value.item(), rtol=1e-12)


def test_rademacher_diag_is_exact_for_a_diagonal_hessian():
    w = md.tensor([0.5, -1.0, 2.0])
    est = cv.hutchinson_diag(lambda p: (p**4).sum() / 12, w, rng=0)
    np.testing.assert_allclose(est.numpy(), w.numpy() ** 2, rtol=1e-14)


@pytest.mark.parametrize("dist", DISTS)
def test_hutchinson_on_a_ggn_matvec_in_chunks(net, dist):
    """A matvec instead of f, K probes in chunks of 7 (vector mode), and one by one (no vmap)."""
    m, _ = net["M"]
    g = net["J"].T @ m @ net["J"]
    prod = cv.gauss_newton(net["model"], net["loss"], net["params"])
    n = 1500
    sd = np.sqrt(_trace_var(g, dist))
    for chunk in (7, 1):
        tr = cv.hutchinson_trace(
            matvec=prod,
            params=net["params"],
            n_probes=n if chunk > 1 else 300,
            distribution=dist,
            rng=13,
            chunk_size=chunk,
        )
        k = n if chunk > 1 else 300
        assert abs(tr.item() - np.trace(g)) <= 5 * sd / np.sqrt(k)
    d = cv.hutchinson_diag(
        matvec=prod, params=net["params"], n_probes=n, distribution=dist, rng=14, chunk_size=64
    )
    sdd = np.sqrt(_diag_var(g, dist))
    assert np.all(np.abs(_flat(d) - np.diag(g)) <= 5 * sdd / np.sqrt(n) + 1e-12)


def test_running_estimate_continues_across_calls(net):
    """Continuing an estimate with b more probes gives (a·first + b·second)/(a + b) of the same draws."""
    f, params = net["f"], net["params"]
    est = cv.hutchinson_diag(f, params, n_probes=5, rng=(gen := md.random.Generator(21)), running=True)
    cv.hutchinson_diag(f, params, n_probes=3, rng=gen, running=est)
    assert est.n_probes == 8
    gen2 = md.random.Generator(21)
    a = _flat(cv.hutchinson_diag(f, params, n_probes=5, rng=gen2))
    b = _flat(cv.hutchinson_diag(f, params, n_probes=3, rng=gen2))
    np.testing.assert_allclose(_flat(est.value), (5 * a + 3 * b) / 8, rtol=1e-12, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(
    chunks=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    shape=st.lists(st.integers(1, 3), max_size=2),
    seed=st.integers(0, 2**16),
)
def test_running_estimate_matches_numpy_mean_and_variance(chunks, shape, seed):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(sum(chunks), *shape)) * 3 + 1
    est, off = cv.RunningEstimate(), 0
    for k in chunks:
        est.update({"a": md.tensor(data[off : off + k])})
        off += k
    np.testing.assert_allclose(est.value["a"].numpy(), data.mean(axis=0), rtol=1e-12, atol=1e-12)
    if len(data) > 1:
        var = data.var(axis=0, ddof=1)
        np.testing.assert_allclose(est.variance["a"].numpy(), var, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(est.stderr["a"].numpy(), np.sqrt(var / len(data)), rtol=1e-10, atol=1e-12)
    else:
        assert np.all(np.isnan(est.stderr["a"].numpy()))


# ----------------------------------------------------------------------------- SciPy operators
def test_cg_solves_damped_hessian_system(net):
    h = net["H"]
    lam = max(0.0, -np.linalg.eigvalsh(h)[0]) + 0.5
    b = np.random.default_rng(15).normal(size=h.shape[0])
    want = np.linalg.solve(h + lam * np.eye(h.shape[0]), b)
    for mode in MODES:
        op = cv.hessian_operator(net["f"], net["params"], mode, damping=lam)
        x, info = sla.cg(op, b, rtol=1e-12, atol=0.0, maxiter=500)
        assert info == 0
        np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-8)
        assert op.n_products > 0


def test_minres_on_an_indefinite_hessian_and_cg_on_the_ggn(net):
    h = net["H"]
    assert np.linalg.eigvalsh(h)[0] < 0  # the point of using MINRES here
    b = np.random.default_rng(16).normal(size=h.shape[0])
    x, info = sla.minres(
        cv.hessian_operator(net["f"], net["params"], damping=1e-3), b, rtol=1e-12, maxiter=2000
    )
    np.testing.assert_allclose(x, np.linalg.solve(h + 1e-3 * np.eye(len(b)), b), rtol=1e-5, atol=1e-6)
    g = net["J"].T @ net["M"][0] @ net["J"]
    x, info = sla.cg(
        cv.ggn_operator(net["model"], net["loss"], net["params"], damping=0.1), b, rtol=1e-12, atol=0.0
    )
    assert info == 0
    np.testing.assert_allclose(x, np.linalg.solve(g + 0.1 * np.eye(len(b)), b), rtol=1e-8, atol=1e-10)


def test_eigsh_top_eigenvalues_match_dense(net):
    h = net["H"]
    dense = np.linalg.eigvalsh(h)
    top = cv.top_eigenvalues(net["f"], net["params"], k=3)
    np.testing.assert_allclose(top, dense[::-1][:3], rtol=1e-8, atol=1e-10)
    low = cv.top_eigenvalues(cv.hessian_operator(net["f"], net["params"]), k=1, which="SA")
    np.testing.assert_allclose(low, dense[:1], rtol=1e-8, atol=1e-10)
    g = net["J"].T @ net["M"][0] @ net["J"]
    vals, vecs = cv.top_eigenvalues(
        cv.fisher_operator(net["model"], net["params"]), k=2, return_eigenvectors=True
    )
    np.testing.assert_allclose(vals, np.linalg.eigvalsh(g)[::-1][:2], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(g @ vecs[:, 0], vals[0] * vecs[:, 0], atol=1e-8)


def test_matmat_in_vector_mode_equals_columns(net):
    x = np.random.default_rng(17).normal(size=(net["H"].shape[0], 4))
    for op in (
        cv.hessian_operator(net["f"], net["params"], damping=0.3),
        cv.hessian_operator(net["f"], net["params"], "rev-over-rev"),
        cv.ggn_operator(net["model"], net["loss"], net["params"]),
        cv.as_operator(lambda v: cv.hvp(net["f"], net["params"], v), net["params"], damping=0.3),
    ):
        cols = np.stack([op @ x[:, j] for j in range(4)], axis=1)
        np.testing.assert_allclose(op @ x, cols, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(op.H @ x, cols, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        cv.hessian_operator(net["f"], net["params"]) @ x, net["H"] @ x, rtol=1e-6, atol=1e-7
    )


def test_operator_converts_dtypes_and_round_trips():
    w = md.tensor([[1.0, 2.0], [3.0, 4.0]], dtype="float32")
    params = {"w": w, "b": md.tensor([0.5], dtype="float64")}
    f = lambda p: (p["w"].astype("float64") ** 2).sum() * p["b"].sum()
    op = cv.hessian_operator(f, params)
    assert op.shape == (5, 5) and op.dtype == np.float64
    tree = op.unflatten(np.arange(5.0))
    assert tree["w"].dtype == np.float32 and tree["b"].dtype == np.float64
    np.testing.assert_array_equal(op.flatten(tree), np.arange(5.0))
    y = op @ np.array([1.0, 0.0, 0.0, 0.0, 0.0])  # column of b: d²f/db dw = 2w, d²f/db² = 0
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, [0.0, 2.0, 4.0, 6.0, 8.0], rtol=1e-6)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_operator_on_each_device(device):
    if device == "cuda" and not md.cuda_available():
        pytest.skip(f"no CUDA device: {md.cuda_unavailable_reason()}")
    p = md.tensor([1.0, 2.0], device=device)
    op = cv.hessian_operator(lambda t: (t**3).sum(), p)
    np.testing.assert_allclose(op @ np.array([1.0, 1.0]), [6.0, 12.0])


# ----------------------------------------------------------------------------- errors
def test_mismatched_vectors_are_rejected(net):
    f, params = net["f"], net["params"]
    v = _random_like(params, 0)
    with pytest.raises(ShapeError, match=r"hvp: v has structure"):
        cv.hvp(f, params, {k: v[k] for k in ("w1", "b1", "w2")})
    with pytest.raises(
        ShapeError, match=r"hvp: v leaf \['w1'\] is float64\[4\] but its parameter is float64\[4, 3\]"
    ):
        cv.hvp(f, params, {**v, "w1": md.zeros(4)})
    with pytest.raises(DTypeError, match="float32"):
        cv.hvp(f, params, {**v, "b1": v["b1"].astype("float32")})
    with pytest.raises(ShapeError, match=r"vectorized=True.*leading axis"):
        cv.hvp(f, params, v, vectorized=True)
    vk = _random_like(params, 0, k=2)
    with pytest.raises(ShapeError, match="different numbers of directions"):
        cv.hvp(f, params, {**vk, "b2": md.zeros((3, 3))}, vectorized=True)
    with pytest.raises(ShapeError, match="ggn_vp: v has structure"):
        cv.ggn_vp(net["model"], net["loss"], params, [v])
    with pytest.raises(ShapeError, match="fisher_vp: v leaf"):
        cv.fisher_vp(net["model"], params, {**v, "b2": md.zeros(2)})
    with pytest.raises(TypeError, match="expected a Tensor"):
        cv.hvp(f, params, {**v, "b2": np.zeros(3)})


def test_bad_settings_are_rejected(net, fake_device):
    f, params, model = net["f"], net["params"], net["model"]
    v = _random_like(params, 0)
    with pytest.raises(ValueError, match="hvp: unknown mode 'fwd'"):
        cv.hvp(f, params, v, mode="fwd")
    with pytest.raises(DTypeError, match="only floating-point"):
        cv.hvp(lambda p: p.sum(), md.tensor([1, 2]), md.tensor([1, 2]))
    with pytest.raises(ShapeError, match="no tensors"):
        cv.hvp(f, {}, {})
    with pytest.raises(ShapeError, match="loss_fn\\(z\\) must return a scalar"):
        cv.ggn_vp(model, lambda z: z * z, params, v)
    with pytest.raises(ShapeError, match=r"logits of shape \(N, C\)"):
        cv.fisher_vp(lambda p: md.reshape(model(p), (-1,)), params, v)
    with pytest.raises(ValueError, match="unknown kind 'true'"):
        cv.fisher_vp(model, params, v, "true")
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1, got 0"):
        cv.fisher_vp(model, params, v, "sampled", n_samples=0)
    with pytest.raises(ValueError, match="labels are only used by kind='sampled'"):
        cv.fisher_vp(model, params, v, labels=net["y"])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        cv.fisher_vp(model, params, v, "sampled", labels=net["y"] + 3)
    with pytest.raises(DTypeError, match="labels must be integers"):
        cv.fisher_vp(model, params, v, "sampled", labels=net["y"].astype("float64"))
    with pytest.raises(ShapeError, match=r"labels of shape \(4,\)"):
        cv.fisher_vp(model, params, v, "sampled", labels=md.tensor([0, 1, 2, 0]))
    with pytest.raises(TypeError, match="rng must be a minidiff.primitives.random.Generator or an int seed"):
        cv.fisher_vp(model, params, v, "sampled", rng="0")  # numpy Generators are accepted: test_rng.py
    with pytest.raises(DeviceError, match="the generator draws on fake"):
        cv.fisher_vp(model, params, v, "sampled", rng=md.random.Generator(0, fake_device))
    with pytest.raises(DeviceError, match=r"v leaf \['b1'\] is float64\[4\] on fake"):
        cv.hvp(f, params, {**v, "b1": v["b1"].to(fake_device)})


@pytest.mark.parametrize("fn", [cv.hutchinson_diag, cv.hutchinson_trace])
def test_hutchinson_errors(net, fn):
    f, params = net["f"], net["params"]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=f"n_probes must be an integer >= 1, got {bad!r}"):
            fn(f, params, n_probes=bad)
    with pytest.raises(ValueError, match="unknown distribution 'gauss'"):
        fn(f, params, distribution="gauss")
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1 or None, got 0"):
        fn(f, params, chunk_size=0)
    with pytest.raises(TypeError, match="either f .* or matvec, not both or neither"):
        fn(f, params, matvec=lambda v: v)
    with pytest.raises(TypeError, match="either f"):
        fn(params=params)
    with pytest.raises(TypeError, match="params is required"):
        fn(f)
    with pytest.raises(ValueError, match="unknown mode"):
        fn(f, params, mode="rev")
    with pytest.raises(ShapeError, match="matvec must return a tree shaped like params"):
        fn(matvec=lambda v: v["w1"], params=params)
    with pytest.raises(TypeError, match="running must be a bool or a RunningEstimate"):
        fn(f, params, running="yes")


def test_running_estimate_of_the_wrong_kind_or_shape():
    est = cv.hutchinson_trace(lambda p: (p * p).sum(), md.tensor([1.0]), running=True)
    with pytest.raises(ValueError, match="cannot continue a running estimate of hutchinson_trace"):
        cv.hutchinson_diag(lambda p: (p * p).sum(), md.tensor([1.0]), running=est)
    with pytest.raises(ShapeError, match="samples of shape"):
        cv.RunningEstimate().update(md.zeros((2, 3))).update(md.zeros((2, 4)))
    with pytest.raises(ShapeError, match="leading number"):
        cv.RunningEstimate().update(md.tensor(1.0))
    assert cv.RunningEstimate().stderr is None


def test_operator_errors(net):
    f, params = net["f"], net["params"]
    op = cv.hessian_operator(f, params)
    n = op.shape[0]
    with pytest.raises(ValueError, match=rf"k must be an integer in \[1, {n}\)"):
        cv.top_eigenvalues(op, k=n)
    with pytest.raises(ValueError, match="unknown which 'BE'"):
        cv.top_eigenvalues(op, which="BE")
    with pytest.raises(TypeError, match="params is only used with a function"):
        cv.top_eigenvalues(op, params)
    with pytest.raises(TypeError, match="give a LinearOperator, or a scalar function f together with params"):
        cv.top_eigenvalues(f)
    with pytest.raises(ValueError, match="damping must be a number >= 0.0, got -1"):
        cv.hessian_operator(f, params, damping=-1)
    with pytest.raises(ValueError, match="hessian_operator: unknown mode"):
        cv.hessian_operator(f, params, "both")
    with pytest.raises(ShapeError, match=rf"a vector of shape \(3,\) for an operator of size {n}"):
        op.unflatten(np.zeros(3))
    with pytest.raises(ValueError):
        op @ np.zeros(n + 1)
    bad = cv.as_operator(lambda v: pytree.tree_map(lambda t: t[:1], v), params)
    with pytest.raises(ShapeError, match="as_operator: v leaf"):
        bad @ np.zeros(n)


# ----------------------------------------------------------------------------- the micro-benchmark
class _FakeClock:
    """Each reading advances by 1 s: every timed call then takes exactly 1 s (no real timing asserted)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def test_curvature_costs_structure_with_a_fake_clock():
    from minidiff.bench.curvature_bench import PRODUCTS, curvature_costs, format_curvature_costs

    r = curvature_costs(
        "mlp",
        batch=3,
        repeats=2,
        warmup=0,
        dtype="float64",
        model_kwargs={"hidden": (5,)},
        clock=_FakeClock(),
    )
    assert r["schema"] == "minidiff.curvature/1" and r["dtype"] == "float64"
    assert set(r["seconds"]) == set(PRODUCTS)
    assert all(q["value"] == pytest.approx(1.0) for q in r["relative_to_gradient"].values())
    assert r["targets"] == {
        "hvp_fwd_over_rev <= 2.5 gradients": True,
        "hvp_fwd_over_rev faster than hvp_rev_over_rev": False,  # equal times under the fake clock
    }
    assert "OPENBLAS_CORETYPE" in r["environment"]["env"]
    text = format_curvature_costs(r)
    assert "hvp_rev_over_rev" in text and "NOT met" in text


def test_curvature_costs_rejects_bad_settings():
    from minidiff.bench.curvature_bench import curvature_costs

    with pytest.raises(ValueError, match="unknown model 'logreg'"):
        curvature_costs("logreg")
    with pytest.raises(ValueError, match="batch must be an integer >= 1, got 0"):
        curvature_costs("mlp", batch=0)


def test_bench_curvature_command_line(tmp_path, capsys):
    import argparse
    import json

    from minidiff.bench import curvature_bench

    parser = argparse.ArgumentParser(prog="minidiff bench curvature")
    curvature_bench.add_arguments(parser)
    out = tmp_path / "r.json"
    args = parser.parse_args(["--batch", "2", "--repeats", "1", "--warmup", "0", "--json", str(out)])
    assert curvature_bench.run(args) == 0
    printed = capsys.readouterr().out
    assert "hvp_fwd_over_rev" in printed and f"wrote {out}" in printed
    assert json.loads(out.read_text())["model"] == "mlp"
    for bad in (["--batch", "0"], ["--model", "logreg"], ["--device", "tpu"], ["--warmup", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
