"""``minidiff reproduce forward-gradient``: the paper's Rf/Rb table, the depth sweep, and training.

The default run is sized for a few minutes on a 2-core CPU; ``full=True`` uses the paper's widths
and longer runs.  Everything is written to ``out_dir``: one JSON file per part, PNG figures (when
matplotlib is installed) and ``summary.md``, the tables printed at the end.
"""

from __future__ import annotations

import json
import math
import os

from .rfrb import build_model, depth_sweep, rfrb
from .timing import timed
from .training import smooth, tf_over_tb, train

#: Baydin et al. (2022), as summarized in papers.md (unverified: quote as "reported")
PAPER = {
    "logreg": {"Rf": 2.435, "Rb": 4.389, "Rf_over_Rb": 0.555, "Tf_over_Tb": 0.553},
    "mlp": {"Rf": 2.468, "Rb": 4.165, "Rf_over_Rb": 0.592, "Tf_over_Tb": 0.211},
    "cnn": {"Rf": 1.434, "Rb": 2.211, "Rf_over_Rb": 0.649, "Tf_over_Tb": 0.514},
}

DEFAULT = {
    "repeats": 10,
    "depth_layers": (1, 2, 5, 10, 20, 50, 100),
    "depth_width": 256,
    "depth_repeats": 3,
    "steps": {"logreg": 400, "mlp": 300, "cnn": 40},
    "tuned_models": ("logreg", "mlp"),
    "lr_grid": {"sgd": (1e-2, 1e-1), "fgd": (1e-3, 1e-2)},
}
FULL = {
    **DEFAULT,
    "repeats": 50,
    "depth_width": 1024,
    "depth_repeats": 10,
    "steps": {"logreg": 5000, "mlp": 5000, "cnn": 1000},
    "tuned_models": ("logreg", "mlp", "cnn"),
    "lr_grid": {"sgd": (3e-3, 1e-2, 3e-2, 1e-1), "fgd": (3e-4, 1e-3, 3e-3, 1e-2)},
}
PAPER_LR, PAPER_DECAY = 2e-4, 1e-4


def _save(out_dir, name, obj):
    path = os.path.join(out_dir, name)
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1, default=float)
    return path


def _fmt(v, digits=3):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def reproduce_forward_gradient(
    out_dir: str = "results/forward-gradient",
    full: bool = False,
    progress=None,
    log=print,
    models=("logreg", "mlp", "cnn"),
) -> dict:
    """Run the three parts and write their results; return the summary dictionary."""
    cfg = FULL if full else DEFAULT
    os.makedirs(out_dir, exist_ok=True)
    bar = progress or (lambda total, label: _NullBar())

    def parts():
        return {
            "full": full,
            "rfrb": _rfrb_part(models, cfg, bar, out_dir),
            "depth": _depth_part(cfg, bar, out_dir),
            "training": {name: _training_part(name, cfg, bar, out_dir) for name in models},
        }

    summary, seconds = timed(parts)
    summary["seconds"] = seconds
    summary["figures"] = _figures(out_dir, summary)
    text = format_summary(summary)
    with open(os.path.join(out_dir, "summary.md"), "w") as fh:
        fh.write(text)
    log(text)
    return summary


def _rfrb_part(models, cfg, bar, out_dir) -> dict:
    """Rf and Rb of each model, with both samplers (peak memory with the normal one)."""
    out = {}
    with bar(2 * len(models), "Rf/Rb of the three models") as b:
        for name in models:
            model, shape = build_model(name)
            row = {}
            for dist in ("normal", "rademacher"):
                r = rfrb(
                    model,
                    shape,
                    batch=64,
                    repeats=cfg["repeats"],
                    distribution=dist,
                    memory=dist == "normal",
                    name=name,
                )
                _save(out_dir, f"rfrb_{name}_{dist}.json", r)
                row[dist] = r
                b.update(1)
            out[name] = row
    return out


def _depth_part(cfg, bar, out_dir) -> dict:
    layers = cfg["depth_layers"]
    with bar(len(layers), f"depth sweep (width {cfg['depth_width']})") as b:
        depth = depth_sweep(
            layers, width=cfg["depth_width"], repeats=cfg["depth_repeats"], progress=lambda n: b.update(1)
        )
    _save(out_dir, "depth.json", depth)
    return depth


def _training_part(name, cfg, bar, out_dir) -> dict:
    """Training at the paper's learning rate, then (tuned models) each method at its best rate of a grid."""
    steps = cfg["steps"][name]
    runs: dict = {}
    plan = [("same", m, PAPER_LR) for m in ("fgd", "sgd")]
    if name in cfg["tuned_models"]:
        plan += [("grid", m, lr) for m in ("fgd", "sgd") for lr in cfg["lr_grid"][m]]
    with bar(len(plan) * steps, f"training {name}") as b:
        for kind, method, lr in plan:
            run = train(name, method, steps=steps, lr=lr, decay=PAPER_DECAY, progress=b.update)
            runs.setdefault(kind, []).append(run)
    entry = {"same_rate": _pair(runs["same"])}
    if "grid" in runs:
        entry["tuned"] = _pair([_best(runs["grid"], m) for m in ("fgd", "sgd")])
    _save(out_dir, f"training_{name}.json", {"runs": runs, "comparison": entry})
    return entry


class _NullBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        pass


def _best(runs, method):
    """The run of ``method`` with the lowest final smoothed loss (a diverged run never wins)."""

    def final(r):
        s = smooth(r["history"]["loss"])
        return s[-1] if s and math.isfinite(s[-1]) and not r["diverged"] else float("inf")

    return min((r for r in runs if r["method"] == method), key=final)


def _pair(runs):
    fgd = next(r for r in runs if r["method"] == "fgd")
    sgd = next(r for r in runs if r["method"] == "sgd")
    cmp = tf_over_tb(fgd, sgd)
    cmp.update(
        fgd_lr=fgd["lr"],
        sgd_lr=sgd["lr"],
        fgd_final_loss=fgd["history"]["loss"][-1],
        sgd_final_loss=sgd["history"]["loss"][-1],
        fgd_test_accuracy=fgd["test_accuracy"],
        sgd_test_accuracy=sgd["test_accuracy"],
        fgd_seconds=fgd["history"]["seconds"][-1],
        sgd_seconds=sgd["history"]["seconds"][-1],
        steps=fgd["steps"],
    )
    cmp["runs"] = {"fgd": fgd["history"], "sgd": sgd["history"]}
    return cmp


def format_summary(summary: dict) -> str:
    """The measured tables beside the paper's reported numbers, as Markdown."""
    lines = ["# Forward gradients on minidiff: measured against Baydin et al. (2022)", ""]
    lines += _machine_lines(summary) + _rfrb_lines(summary["rfrb"])
    if summary["depth"]:
        lines += _depth_lines(summary["depth"])
    if summary["training"]:
        lines += _training_lines(summary["training"])
    lines.append(
        f"Total time: {summary.get('seconds', 0):.0f} s. Figures: {', '.join(summary.get('figures') or ['none'])}"
    )
    return "\n".join(lines) + "\n"


def _machine_lines(summary) -> list[str]:
    env = next(iter(summary["rfrb"].values()))["normal"]["environment"] if summary["rfrb"] else {}
    return [
        f"Machine: {env.get('cpu')} ({env.get('logical_cores')} logical cores), numpy {env.get('numpy')}, "
        f"OPENBLAS_CORETYPE={env.get('env', {}).get('OPENBLAS_CORETYPE')}, allocator "
        f"{env.get('allocator', {}).get('mode')}.",
        "",
    ]


def _rfrb_lines(rfrb_rows) -> list[str]:
    lines = [
        "## Rf and Rb (batch 64, float32; medians)",
        "",
        "| model | runtime(f) ms | Rf (normal v) | Rf (Rademacher v) | Rf w/o sampling | Rb | Rf/Rb | "
        "FLOP-model Rf = Rb | paper Rf | paper Rb | paper Rf/Rb |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rfrb_rows.items():
        n, r = row["normal"], row["rademacher"]
        p = PAPER.get(name, {})
        lines.append(
            f"| {name} | {n['runtime_f']['median'] * 1e3:.2f} | {_fmt(n['Rf']['value'])} | {_fmt(r['Rf']['value'])} | "
            f"{_fmt(n['Rf_without_sampling']['value'])} | {_fmt(n['Rb']['value'])} | {_fmt(n['Rf_over_Rb']['value'])} | "
            f"{_fmt(n['flop_model']['Rf'])} | {p.get('Rf')} | {p.get('Rb')} | {p.get('Rf_over_Rb')} |"
        )
    rademacher = ", ".join(
        f"{name} {_fmt(row['rademacher']['Rf_over_Rb']['value'])}" for name, row in rfrb_rows.items()
    )
    return lines + ["", "Rademacher Rf/Rb: " + rademacher, ""]


def _depth_lines(d) -> list[str]:
    lines = [
        f"## Depth sweep (MLP width {d['width']}, batch {d['batch']})",
        "",
        "| hidden layers | parameters | Rf | Rb | Rf/Rb | peak MiB fwd-grad | peak MiB backprop | backprop/fwd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in d["rows"]:
        lines.append(
            f"| {row['layers']} | {row['parameters']:,} | {_fmt(row['Rf'])} | {_fmt(row['Rb'])} | "
            f"{_fmt(row['Rf_over_Rb'])} | {row['peak_memory_forward_gradient'] / 2**20:.1f} | "
            f"{row['peak_memory_backprop'] / 2**20:.1f} | {_fmt(row['memory_ratio_backprop_over_forward'], 2)} |"
        )
    return lines + [""]


def _training_lines(training) -> list[str]:
    lines = [
        "## Training on digits28 (Tf/Tb: see docs/forward-gradient.md for the definition)",
        "",
        "| model | rates | steps | η FGD | η SGD | final loss FGD | final loss SGD | test acc FGD | test acc SGD "
        "| Tf/Tb | paper Tf/Tb |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in training.items():
        for kind, c in entry.items():
            lines.append(
                f"| {name} | {kind.replace('_', ' ')} | {c['steps']} | {c['fgd_lr']:g} | {c['sgd_lr']:g} | "
                f"{_fmt(c['fgd_final_loss'])} | {_fmt(c['sgd_final_loss'])} | {_fmt(c['fgd_test_accuracy'])} | "
                f"{_fmt(c['sgd_test_accuracy'])} | {_fmt(c['Tf_over_Tb'])} | "
                f"{PAPER.get(name, {}).get('Tf_over_Tb') if kind == 'same_rate' else '–'} |"
            )
    return lines + [""]


def _figures(out_dir, summary) -> list:
    """The training curves per model and the depth sweep as PNGs (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = [_training_figure(plt, out_dir, name, entry) for name, entry in summary["training"].items()]
    if summary["depth"]:
        written.append(_depth_figure(plt, out_dir, summary["depth"]["rows"]))
    return written


def _save_figure(plt, fig, out_dir, name) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    plt.close(fig)
    return name


def _training_figure(plt, out_dir, name, entry) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind, c in entry.items():
        style = "-" if kind == "same_rate" else "--"
        for method, color in (("fgd", "tab:orange"), ("sgd", "tab:blue")):
            h = c["runs"][method]
            label = f"{method.upper()} η={c[f'{method}_lr']:g} ({kind.replace('_', ' ')})"
            axes[0].plot(h["step"], smooth(h["loss"]), style, color=color, label=label)
            axes[1].plot(h["seconds"], smooth(h["loss"]), style, color=color, label=label)
    axes[0].set(xlabel="iteration", ylabel="training loss (EMA)", title=f"{name}: loss vs iteration")
    axes[1].set(xlabel="wall-clock seconds", ylabel="training loss (EMA)", title=f"{name}: loss vs time")
    axes[0].legend(fontsize=7)
    return _save_figure(plt, fig, out_dir, f"training_{name}.png")


def _depth_figure(plt, out_dir, rows) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    n = [r["layers"] for r in rows]
    axes[0].semilogx(n, [r["Rf"] for r in rows], "o-", label="Rf")
    axes[0].semilogx(n, [r["Rb"] for r in rows], "s-", label="Rb")
    axes[0].semilogx(n, [r["Rf_over_Rb"] for r in rows], "^-", label="Rf/Rb")
    axes[0].set(xlabel="hidden layers", title="MLP depth sweep: cost ratios")
    axes[0].legend()
    axes[1].semilogx(
        n, [r["peak_memory_forward_gradient"] / 2**20 for r in rows], "o-", label="forward gradient"
    )
    axes[1].semilogx(n, [r["peak_memory_backprop"] / 2**20 for r in rows], "s-", label="backprop")
    axes[1].set(
        xlabel="hidden layers", ylabel="peak MiB above baseline", title="peak memory of one evaluation"
    )
    axes[1].legend()
    return _save_figure(plt, fig, out_dir, "depth.png")
