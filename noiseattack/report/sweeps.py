"""Reports against a swept training option: where experiments differ in exactly one option (width,
depth, training-set size, batch size, lr, ...) and agree on everything else, the report groups them
by that option and draws final test accuracy (mean ± std over seeds, per norm) against it, beside
the train-minus-test accuracy gap, so that under- and over-fitting can be read off; and, per value
of the option, the train and test accuracy per epoch of each norm (the curves behind the gap).

Train accuracy is the last epoch's, measured during training (training mode, augmented batches
unless augmentation is off, under the attack when there is one); test accuracy the final one. A
report without such experiments has no sweeps and nothing here changes it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import chance
from ..config import TRAIN_FIELDS
from ..datasets import display_name
from .collect import Group, norm_rank
from .plots import Plot, epoch_stats, norm_colors, render, safe_filename

DERIVED = {"epochs": ("milestones",)}  # fields that follow the option (lr decays at 50% and 75% of the epochs)
# The options a report draws against, in this order (an attack's parameters are left to the box plots).
SWEEPABLE = ("width", "depth", "train_subset", "batch_size", "lr", "epochs", "weight_decay", "momentum",
             "test_subset", "dataset")
LABELS = {**{name: m.axis for name, m in TRAIN_FIELDS.items() if m.axis}, "dataset": "dataset"}  # their axes
CSV_COLUMNS = ("option", "value", "dataset", "attack", "setting", "context", "norm", "n", "at_chance", "mean", "std",
               "train_mean", "gap_mean", "gap_std")


@dataclass
class Sweep:
    option: str
    context: dict[str, Any]  # the identity without the option
    groups: list[Group] = field(default_factory=list)

    @property
    def values(self) -> list[Any]:
        return sorted({g.ident[self.option] for g in self.groups}, key=_value_key)

    def label(self) -> str:
        """What the experiments share: `FashionMNIST · ResNet-20, 6000 training images, 15 epochs · clean`
        (`..., 15 epochs, no augmentation · clean` for runs without crops and flips)."""
        c, o = self.context, self.option
        parts = []
        if o != "depth":
            parts.append(f"ResNet-{c.get('depth')}" + (f" ({c['width']:g}× width)" if o != "width" and c.get("width", 1) != 1
                                                         else ""))
        if o != "train_subset":
            parts.append(f"{c['train_subset']} training images" if c.get("train_subset") else "full training set")
        if o != "epochs":
            parts.append(f"{c.get('epochs')} epochs")
        if c.get("augment") is False:
            parts.append("no augmentation")
        setting = self.groups[0].key.setting
        head = display_name(c.get("dataset", "")) if o != "dataset" else "datasets"
        return f"{head} · {', '.join(parts)} · {c.get('attack', '')}" + (f" {setting}" if setting != "clean" else "")


def _value_key(v: Any) -> tuple:
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))


def _stable(v: Any) -> str:
    return json.dumps(v, sort_keys=True)


def find_sweeps(groups: Sequence[Group]) -> list[Sweep]:
    """Every set of groups (all norms) whose identities differ in exactly one option of SWEEPABLE, with
    at least two values of it and finished runs. An attack's parameters (alpha, beta, k, extra, ...)
    are left to the box plots."""
    sweeps = []
    for option in SWEEPABLE:
        buckets: dict[str, Sweep] = {}
        for g in groups:
            if not g.finished or option not in g.ident:
                continue
            rest = {k: v for k, v in g.ident.items() if k != option and k not in DERIVED.get(option, ())}
            key = _stable(rest)
            buckets.setdefault(key, Sweep(option, rest)).groups.append(g)
        sweeps += [s for s in buckets.values() if len(s.values) >= 2]
    return sweeps


def sweep_rows(sweep: Sweep) -> list[dict[str, Any]]:
    """Per (value, norm): n, the runs at chance among them, mean and std of final test accuracy, mean
    final train accuracy, and the mean and std over seeds of the train-minus-test gap."""
    rows = []
    for g in sorted(sweep.groups, key=lambda g: (_value_key(g.ident[sweep.option]), norm_rank(g.key.norm))):
        test = np.array(g.accs)
        train = np.array([_train_acc(r) for r in g.finished], float)
        gap = train - test
        rows.append({"option": sweep.option, "value": g.ident[sweep.option], "dataset": g.key.dataset,
                     "attack": g.key.attack, "setting": g.key.setting, "context": sweep.label(), "norm": g.key.norm,
                     "n": len(test), "at_chance": g.at_chance, "mean": float(test.mean()), "std": _std(test),
                     "train_mean": _nanmean(train), "gap_mean": _nanmean(gap), "gap_std": _std(gap[np.isfinite(gap)])})
    return rows


def _n_range(rows: list[dict[str, Any]]) -> str:
    lo, hi = min(r["n"] for r in rows), max(r["n"] for r in rows)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _train_acc(rec: dict[str, Any]) -> float:
    hist = rec.get("history") or []
    v = hist[-1].get("train_acc") if hist else None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan


def _std(x: np.ndarray) -> float | None:
    return float(x.std(ddof=1)) if len(x) > 1 else None


def _nanmean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None


def to_csv(sweeps: Sequence[Sweep]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for s in sweeps:
        for r in sweep_rows(s):
            w.writerow({k: "" if r[k] is None else (repr(r[k]) if isinstance(r[k], float) else r[k])
                        for k in CSV_COLUMNS})
    return buf.getvalue()


def to_markdown(sweeps: Sequence[Sweep]) -> list[str]:
    """Report sections: per sweep a table with the option as its first column."""
    out = []
    for s in sweeps:
        out += [f"### {s.label()} against {s.option}", "",
                f"| {s.option} | norm | n | mean | std | train acc | train − test (mean ± std) |",
                "|---:|---|---:|---:|---:|---:|---:|"]
        for r in sweep_rows(s):
            f = lambda v: "—" if v is None else f"{v:.2f}"
            mark = chance.MARK if r["at_chance"] else ""
            out.append(f"| {r['value']} | {r['norm']} | {r['n']} | {f(r['mean'])}{mark} | {f(r['std'])} | "
                       f"{f(r['train_mean'])} | {f(r['gap_mean'])} ± {f(r['gap_std'])} |")
        out.append("")
    return out


def sweep_plot(sweep: Sweep, title: str):
    """Two panels against the option: final test accuracy (mean ± std per norm), and train − test gap."""
    from matplotlib.figure import Figure

    rows = sweep_rows(sweep)
    values = sweep.values
    numeric = all(isinstance(v, (int, float)) for v in values)
    xpos = {v: (v if numeric else i) for i, v in enumerate(values)}
    norms = sorted({r["norm"] for r in rows}, key=norm_rank)
    colors = norm_colors(norms)
    fig = Figure(figsize=(11.0, 4.4))
    ax_acc, ax_gap = fig.subplots(1, 2)
    for norm in norms:
        rs = [r for r in rows if r["norm"] == norm]
        x = [xpos[r["value"]] for r in rs]
        kw = dict(color=colors[norm], marker="o", markersize=4, capsize=3)
        ax_acc.errorbar(x, [r["mean"] for r in rs], yerr=[r["std"] or 0 for r in rs],
                        label=f"{norm} (n={_n_range(rs)})", **kw)
        ax_gap.errorbar(x, [r["gap_mean"] if r["gap_mean"] is not None else math.nan for r in rs],
                        yerr=[r["gap_std"] or 0 for r in rs], **kw)
    for ax, ylabel in ((ax_acc, "final test accuracy (%)"), (ax_gap, "train − test accuracy (%), last epoch")):
        if numeric and min(values) > 0 and max(values) / min(values) >= 4:
            ax.set_xscale("log", base=2)
        ax.set_xticks([xpos[v] for v in values])
        ax.set_xticklabels([f"{v:g}" if isinstance(v, float) else str(v) for v in values])
        ax.set_xlabel(LABELS.get(sweep.option, sweep.option))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_gap.axhline(0, color="gray", linewidth=0.8)
    ax_acc.set_title("test accuracy (mean ± std over seeds)", fontsize=9)
    ax_gap.set_title("generalization gap (over- vs under-fitting)", fontsize=9)
    ax_acc.legend(title="norm", fontsize=8)
    fig.suptitle(textwrap.fill(title, 100))  # a long context wraps rather than running off the figure
    fig.tight_layout()
    return fig


def sweep_curves_plot(sweep: Sweep, title: str):
    """One panel per value of the option: per norm, test accuracy per epoch (solid, mean ± std over
    the finished seeds) and training accuracy per epoch (dashed, mean), on one shared y axis."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    values = sweep.values
    norms = sorted({g.key.norm for g in sweep.groups}, key=norm_rank)
    colors = norm_colors(norms)
    fig = Figure(figsize=(3.6 * len(values) + 1.6, 4.2))
    axes = fig.subplots(1, len(values), sharey=True, squeeze=False)[0]
    for ax, value in zip(axes, values):
        for g in sorted((g for g in sweep.groups if g.ident[sweep.option] == value), key=lambda g: norm_rank(g.key.norm)):
            c = colors[g.key.norm]
            ep, test, test_sd = epoch_stats(g.finished, "test_acc")
            if len(ep):
                ax.plot(ep, test, color=c, marker="o", markersize=2.5)
                ax.fill_between(ep, test - test_sd, test + test_sd, color=c, alpha=0.2, linewidth=0)
            ep, train, _ = epoch_stats(g.finished, "train_acc")
            if len(ep):
                ax.plot(ep, train, color=c, linestyle="--", linewidth=1.2)
        ax.set_title(f"{sweep.option} = {value:g}" if isinstance(value, float) else f"{sweep.option} = {value}",
                     fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    n = {m: _n_range([{"n": len(g.finished)} for g in sweep.groups if g.key.norm == m]) for m in norms}
    handles = [Line2D([], [], color=colors[m], label=f"{m} (n={n[m]})") for m in norms]
    handles += [Line2D([], [], color="black", label="test (mean ± std)"),
                Line2D([], [], color="black", linestyle="--", label="train (mean)")]
    axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    fig.suptitle(textwrap.fill(title, 100))  # a long context wraps rather than running off the figure
    fig.tight_layout()
    return fig


def make_sweep_plots(sweeps: Sequence[Sweep], formats: Sequence[str], dpi: int) -> list:
    """Per sweep two figures, as `Plot`s: kind "sweep" (`sweep_plot`, against the option) and kind
    "sweep-curves" (`sweep_curves_plot`, per epoch for each value of the option)."""
    plots = []
    for s in sweeps:
        ctx = _stable(s.context)
        setting = s.groups[0].key.setting
        tag = hashlib.sha256(ctx.encode()).hexdigest()[:6]
        name = safe_filename("sweep", s.groups[0].key.dataset, s.option, s.context.get("attack", ""), setting, tag)
        title = f"{s.label()}: against {LABELS.get(s.option, s.option)}"
        plots.append(Plot(name, title, "sweep", (s.option, ctx), render(sweep_plot(s, title), formats, dpi)))
        title = f"{s.label()}: train and test accuracy per epoch, per {s.option}"
        plots.append(Plot(name.replace("sweep_", "sweep-curves_", 1), title, "sweep-curves", (s.option, ctx),
                          render(sweep_curves_plot(s, title), formats, dpi)))
    return plots
