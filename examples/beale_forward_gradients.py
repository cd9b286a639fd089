"""Forward gradients on the Beale function (the idea of Figure 1 of Baydin et al., 2022).

At a point θ, each forward gradient g = (∇f·v) v (v ~ N(0, I)) comes from one forward-mode pass.  A
single sample points anywhere in the half-plane of descent directions, but their running mean
converges to the true gradient ∇f(θ) (computed here by reverse mode), with error shrinking as 1/√k.

Run: ``python examples/beale_forward_gradients.py [--out beale.png] [--samples 2000]`` (needs
matplotlib: ``pip install 'minidiff[plot]'``).
"""

from __future__ import annotations

import argparse

import numpy as np

import minidiff as md


def beale(p):
    x, y = p[0], p[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def samples(theta, n, seed=0):
    """``n`` forward-gradient samples at ``theta`` and the exact gradient (``seed``: an int, a
    ``md.random.Generator`` or a ``numpy.random.Generator``)."""
    rng = md.random.as_generator(seed, op="samples")
    v = rng.normal((n, 2))
    # one vector-mode pass pushes all n directions at once: d_k = ∇f·v_k
    _, d = md.jvp(beale, (theta,), (v,), vectorized=True)
    g = d.numpy()[:, None] * v.numpy()
    return g, md.grad(beale)(theta).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="beale_forward_gradients.png", help="PNG file to write")
    parser.add_argument("--samples", type=int, default=2000, help="number of forward-gradient samples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    theta = md.tensor([1.5, -0.5])
    g, true = samples(theta, args.samples, args.seed)
    running = np.cumsum(g, axis=0) / np.arange(1, len(g) + 1)[:, None]
    err = np.linalg.norm(running - true, axis=1) / np.linalg.norm(true)

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
    xs, ys = np.meshgrid(np.linspace(-1, 4, 200), np.linspace(-2, 2, 200))
    zs = beale(md.tensor(np.stack([xs, ys]))).numpy()
    ax0.contour(xs, ys, np.log1p(zs), levels=30, cmap="viridis", linewidths=0.6)
    t = theta.numpy()
    scale = 1.0 / np.linalg.norm(true)  # the true gradient is drawn with length 1
    for k in range(min(40, len(g))):
        step = -scale * g[k]
        step *= min(1.0, 2.0 / np.linalg.norm(step))  # long samples are shortened to length 2
        ax0.arrow(*t, *step, color="tab:orange", alpha=0.35, width=0.004, length_includes_head=True)
    ax0.arrow(
        *t, *(-scale * true), color="black", width=0.03, length_includes_head=True, label="−∇f (reverse mode)"
    )
    ax0.arrow(
        *t,
        *(-scale * running[-1]),
        color="tab:red",
        width=0.012,
        length_includes_head=True,
        label=f"−mean of {len(g)} forward gradients",
    )
    ax0.plot(3, 0.5, "k*", markersize=10, label="minimum (3, 0.5)")
    ax0.set(title="Beale function: −(forward gradient) samples at θ", xlabel="x", ylabel="y")
    ax0.legend(loc="upper right", fontsize=8)

    k = np.arange(1, len(g) + 1)
    ax1.loglog(k, err, label="‖running mean − ∇f‖ / ‖∇f‖")
    ax1.loglog(k, err[0] / np.sqrt(k), "--", color="gray", label="∝ 1/√k")
    ax1.set(title="Monte-Carlo mean of forward gradients", xlabel="samples k", ylabel="relative error")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"true gradient {true}, mean of {len(g)} samples {running[-1]}, relative error {err[-1]:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
