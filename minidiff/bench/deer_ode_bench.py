"""NeuralODE benchmark: DEER against SciPy's ``solve_ivp`` (RK45) and against a sequential solve.

Two measurements on a tiny MLP vector field written in minidiff (state 2, one tanh hidden layer):

* **evaluation** — one trajectory on a grid of T+1 points by :func:`~minidiff.deer.ode.deer_odeint`
  (cold start: ``y0`` broadcast over time) against ``solve_ivp(method="RK45")`` at its default
  tolerances, calling the same minidiff vector field once per stage.  Both are compared with a
  DOP853 solution at rtol 1e-10 (same field), and RK45's number of ``f`` evaluations is recorded.
* **training** — a few Adam steps fitting the cubic spiral ``dy/dt = A y³`` (data from DOP853), with
  the gradient through DEER's derivative rules (one transposed scan; warm start from the previous
  step) against the gradient through minidiff's tape of :func:`~minidiff.deer.ode.sequential_odeint`
  (the same scheme one interval at a time, no adjoint method).  Same initial weights, same steps.

``run_ode_bench(...)`` returns a JSON-ready dictionary, ``format_ode_bench(result)`` a text table.

>>> from minidiff.bench.deer_ode_bench import run_ode_bench, format_ode_bench
>>> r = run_ode_bench(n_points=(20,), repeats=1, warmup=0, train_steps=1, train_points=10)
>>> sorted(r)
['environment', 'evaluation', 'settings', 'training']
>>> "speedup" in format_ode_bench(r)
True
"""

from __future__ import annotations

import argparse

from ..deer.ode import deer_odeint, sequential_odeint
from ..errors import check_number
from ..optim import Adam
from ..primitives import ops
from ..primitives.creation import arange, linspace, tensor, zeros
from ..primitives.random import Generator
from .arguments import int_list, nonnegative_int, output_file, positive_int, seed, write_json
from .environment import environment
from .timing import measure, summarize, timed

#: the spiral's matrix: dy/dt = A y³ (elementwise cube)
SPIRAL = ((-0.1, 2.0), (-2.0, -0.1))


def mlp_field(y, t, p):
    """The NeuralODE vector field for one state ``y`` ``(2,)``: ``W2 tanh(W1 y³ + b1) + b2``."""
    return p["W2"] @ ops.tanh(p["W1"] @ y**3 + p["b1"]) + p["b2"]


def init_mlp(hidden: int, seed: int, dtype: str = "float64", scale: float = 1.0) -> dict:
    rng = Generator(seed)
    return {
        "W1": rng.normal((hidden, 2), std=0.5 * scale, dtype=dtype),
        "b1": zeros((hidden,), dtype=dtype),
        "W2": rng.normal((2, hidden), std=0.1 * scale, dtype=dtype),
        "b2": zeros((2,), dtype=dtype),
    }


def _host_field(params, dtype):
    """``fun(t, y)`` for ``solve_ivp``: the minidiff field on host arrays; counts its calls."""
    calls = [0]

    def fun(t, y):
        calls[0] += 1
        return mlp_field(tensor(y, dtype=dtype), tensor(t, dtype=dtype), params).numpy()

    return fun, calls


def _solve_ivp(params, ts, y0, method, dtype, **tol):
    """``solve_ivp`` once per initial state of ``y0`` ``(B, 2)``: ``((B, T+1, 2) host array, nfev)``."""
    from scipy.integrate import solve_ivp

    fun, calls = _host_field(params, dtype)
    grid = ts.numpy()
    outs = []
    for y in y0.numpy():
        sol = solve_ivp(fun, (grid[0], grid[-1]), y, method=method, t_eval=grid, **tol)
        if not sol.success:
            raise RuntimeError(f"deer ode bench: solve_ivp({method}) failed: {sol.message}")
        outs.append(sol.y.T)
    return tensor(outs, dtype=dtype).numpy(), calls[0]


def _max_dev(a, b) -> float:
    return float(abs(a - b).max())


def _initial_states(batch: int, seed: int, dtype: str):
    """``(batch, 2)`` starts: (1, 0) first, the others on the unit circle at random angles."""
    angles = Generator(seed + 1).uniform((batch,), 0.0, 6.283185307179586, dtype=dtype)
    angles = ops.where(arange(batch) == 0, 0.0, angles)
    return ops.stack([ops.cos(angles), ops.sin(angles)], axis=1)


def evaluation(n_points, hidden, t_end, repeats, warmup, seed, dtype, batch=1) -> list:
    params = init_mlp(hidden, seed, dtype, scale=2.0)
    y0 = _initial_states(batch, seed, dtype)
    rows = []
    for n in n_points:
        ts = linspace(0.0, t_end, n + 1, dtype=dtype)
        ys, stats = deer_odeint(mlp_field, y0, ts, params, return_stats=True)
        ref, _ = _solve_ivp(params, ts, y0, "DOP853", dtype, rtol=1e-10, atol=1e-12)
        rk, nfev = _solve_ivp(params, ts, y0, "RK45", dtype)
        deer_dev = _max_dev(ys.numpy(), ref)
        t_deer = measure(lambda ts=ts: deer_odeint(mlp_field, y0, ts, params), repeats, warmup)
        t_rk = measure(lambda ts=ts: _solve_ivp(params, ts, y0, "RK45", dtype), repeats, warmup)
        tol, rk_m, nfev_m = _rk45_as_accurate_as(deer_dev, ref, params, ts, y0, dtype)
        t_rk_m = measure(
            lambda ts=ts, tol=tol: _solve_ivp(params, ts, y0, "RK45", dtype, rtol=tol, atol=tol),
            repeats,
            warmup,
        )
        rows.append(
            dict(
                T=n,
                batch=batch,
                deer_seconds=t_deer.median,
                deer_iqr=t_deer.iqr,
                rk45_seconds=t_rk.median,
                rk45_iqr=t_rk.iqr,
                speedup=t_rk.median / t_deer.median,
                deer_iterations=stats.iterations,
                deer_converged=stats.converged,
                rk45_nfev=nfev,
                deer_max_dev=deer_dev,
                rk45_max_dev=_max_dev(rk, ref),
                rk45_matched_tol=tol,
                rk45_matched_seconds=t_rk_m.median,
                rk45_matched_nfev=nfev_m,
                rk45_matched_max_dev=_max_dev(rk_m, ref),
                speedup_matched=t_rk_m.median / t_deer.median,
            )
        )
    return rows


def _rk45_as_accurate_as(deviation, ref, params, ts, y0, dtype):
    """RK45 tightened (rtol = atol = 1e-4, 1e-5, … down to 1e-12) until its largest deviation from
    ``ref`` is at most ``deviation``: ``(tol, trajectory, nfev)``."""
    tol = 1e-4
    while True:
        rk, nfev = _solve_ivp(params, ts, y0, "RK45", dtype, rtol=tol, atol=tol)
        if _max_dev(rk, ref) <= deviation or tol <= 1e-12:
            return tol, rk, nfev
        tol /= 10


def _spiral_data(n_points, t_end, dtype):
    from scipy.integrate import solve_ivp

    ts = linspace(0.0, t_end, n_points + 1, dtype=dtype)
    A = tensor(SPIRAL, dtype=dtype).numpy()
    sol = solve_ivp(
        lambda t, y: A @ y**3,
        (0.0, t_end),
        [1.0, 0.0],
        method="DOP853",
        rtol=1e-10,
        atol=1e-12,
        t_eval=ts.numpy(),
    )
    return ts, tensor(sol.y.T, dtype=dtype)


def training(steps, n_points, hidden, t_end, lr, seed, dtype) -> dict:
    ts, target = _spiral_data(n_points, t_end, dtype)
    runs, grads0 = {}, {}
    for method in ("deer", "sequential"):
        runs[method], grads0[method] = _train_ode(method, steps, ts, target, hidden, lr, seed, dtype)
    med = {m: summarize(r["step_seconds"]).median for m, r in runs.items()}
    gdev = max(
        float(abs(grads0["deer"][k] - grads0["sequential"][k]).max())
        / max(1e-300, float(abs(grads0["sequential"][k]).max()))
        for k in grads0["deer"]
    )
    return dict(
        steps=steps,
        T=n_points,
        runs=runs,
        median_step_seconds=med,
        speedup=med["sequential"] / med["deer"],
        first_gradient_max_rel_dev=gdev,
        final_loss={m: r["losses"][-1] for m, r in runs.items()},
        max_loss_dev=max(abs(a - b) for a, b in zip(runs["deer"]["losses"], runs["sequential"]["losses"])),
    )


def _train_ode(method, steps, ts, target, hidden, lr, seed, dtype):
    """Adam steps fitting ``target`` with the gradient through DEER or through the sequential tape;
    each step timed alone.  Returns the run's record and the first step's gradients."""
    params = {k: v.requires_grad_() for k, v in init_mlp(hidden, seed, dtype).items()}
    opt = Adam(list(params.values()), lr=lr)
    y0, state = target[0], {"previous": None, "iterations": []}

    def step():
        opt.zero_grad()
        if method == "deer":
            ys, stats = deer_odeint(mlp_field, y0, ts, params, init=state["previous"], return_stats=True)
            state["previous"] = ys.detach()
            state["iterations"].append(stats.iterations)
        else:
            ys = sequential_odeint(mlp_field, y0, ts, params)
        loss = ops.mean((ys - target) ** 2)
        loss.backward()
        if "grads0" not in state:  # the first step's gradients, compared between the two methods
            state["grads0"] = {k: p.grad.numpy() for k, p in params.items()}
        opt.step()
        return loss

    losses, times = [], []
    for _ in range(steps):
        loss, seconds = timed(step)
        times.append(seconds)
        losses.append(loss.item())
    record = dict(losses=losses, step_seconds=times, deer_iterations=state["iterations"] or None)
    return record, state["grads0"]


def run_ode_bench(
    n_points=(100, 1000, 10000),
    hidden: int = 16,
    t_end: float = 6.0,
    repeats: int = 5,
    warmup: int = 1,
    batch: int = 1,
    train_steps: int = 10,
    train_points: int = 120,
    lr: float = 1e-2,
    seed: int = 0,
    dtype: str = "float64",
) -> dict:
    """Run both NeuralODE measurements; see the module docstring.  ``n_points`` are the numbers of
    intervals T of the evaluation grids; the training fits ``train_points`` intervals."""
    if not n_points:
        raise ValueError(f"run_ode_bench: n_points must be positive interval counts, got {n_points}")
    for n in n_points:
        check_number("run_ode_bench", "n_points", n, low=1, integer=True)
    counts = dict(
        train_steps=train_steps, train_points=train_points, repeats=repeats, hidden=hidden, batch=batch
    )
    for name, value in counts.items():
        check_number("run_ode_bench", name, value, low=1, integer=True)
    check_number("run_ode_bench", "warmup", warmup, low=0, integer=True)
    settings = dict(
        n_points=[int(n) for n in n_points],
        hidden=hidden,
        batch=batch,
        t_end=t_end,
        repeats=repeats,
        warmup=warmup,
        train_steps=train_steps,
        train_points=train_points,
        lr=lr,
        seed=seed,
        dtype=dtype,
        field="W2 tanh(W1 y^3 + b1) + b2, state 2",
        rk45="scipy solve_ivp RK45 default tolerances (rtol 1e-3, atol 1e-6), t_eval = the grid",
        reference="scipy solve_ivp DOP853 rtol 1e-10 atol 1e-12",
    )
    return dict(
        settings=settings,
        environment=environment(),
        evaluation=evaluation(settings["n_points"], hidden, t_end, repeats, warmup, seed, dtype, batch),
        training=training(train_steps, train_points, hidden, t_end, lr, seed, dtype),
    )


def format_ode_bench(result: dict) -> str:
    """The two measurements as text tables."""
    s = result["settings"]
    lines = [
        f"NeuralODE evaluation: DEER vs solve_ivp RK45 (field {s['field']}, hidden {s['hidden']}, "
        f"t in [0, {s['t_end']}], {s.get('batch', 1)} trajectories: one DEER solve, one solve_ivp call each; "
        f"{s['dtype']}; medians of {s['repeats']})",
        f"{'T':>7} {'DEER s':>9} {'iters':>5} {'DEER dev':>9} | {'RK45 s':>9} {'nfev':>6} {'RK45 dev':>9} "
        f"{'speedup':>8} | {'tol':>6} {'RK45= s':>9} {'nfev':>6} {'speedup':>8}",
    ]
    for r in result["evaluation"]:
        flag = "" if r["deer_converged"] else " (not converged)"
        lines.append(
            f"{r['T']:>7} {r['deer_seconds']:>9.4f} {r['deer_iterations']:>5} {r['deer_max_dev']:>9.2e} | "
            f"{r['rk45_seconds']:>9.4f} {r['rk45_nfev']:>6} {r['rk45_max_dev']:>9.2e} {r['speedup']:>7.2f}x | "
            f"{r['rk45_matched_tol']:>6.0e} {r['rk45_matched_seconds']:>9.4f} {r['rk45_matched_nfev']:>6} "
            f"{r['speedup_matched']:>7.2f}x{flag}"
        )
    lines.append(
        "(dev: largest deviation from the DOP853 reference on the grid; speedup = RK45 time / DEER time; "
        "RK45=: RK45 with rtol = atol = tol, the loosest power of ten as accurate as DEER on that grid)"
    )
    t = result["training"]
    lines += [
        "",
        f"NeuralODE training: {t['steps']} Adam steps fitting the cubic spiral on {t['T']} intervals",
        f"{'gradient via':>14} {'s/step':>9} {'final loss':>11}",
    ]
    for m, label in (("deer", "DEER rules"), ("sequential", "tape (seq.)")):
        lines.append(f"{label:>14} {t['median_step_seconds'][m]:>9.4f} {t['final_loss'][m]:>11.5f}")
    lines.append(
        f"speedup {t['speedup']:.1f}x; first-step gradients agree to {t['first_gradient_max_rel_dev']:.1e} "
        f"(relative); loss curves differ by at most {t['max_loss_dev']:.1e}"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``minidiff bench deer-ode``."""
    parser.add_argument(
        "--points",
        type=int_list,
        default=(100, 1000, 10000),
        help="evaluation grids: numbers of intervals T",
    )
    parser.add_argument("--batch", type=positive_int, default=1, help="trajectories per solve")
    parser.add_argument("--hidden", type=positive_int, default=16, help="MLP hidden units")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed repeats")
    parser.add_argument("--warmup", type=nonnegative_int, default=1, help="untimed calls")
    parser.add_argument("--train-steps", type=positive_int, default=10, help="Adam steps")
    parser.add_argument("--train-points", type=positive_int, default=120, help="training grid intervals")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the field's weights and the data")
    parser.add_argument("--json", type=output_file, metavar="PATH", help="write the full result as JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``minidiff bench deer-ode``: print the tables, optionally write JSON; returns the exit status."""
    result = run_ode_bench(
        n_points=args.points,
        hidden=args.hidden,
        batch=args.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        train_steps=args.train_steps,
        train_points=args.train_points,
        seed=args.seed,
    )
    print(format_ode_bench(result))
    write_json(result, args.json)
    return 0


__all__ = ["run_ode_bench", "format_ode_bench", "mlp_field", "init_mlp", "add_arguments", "run"]
