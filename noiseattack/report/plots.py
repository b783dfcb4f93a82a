"""The report's figures: box plots of final accuracy per attack family, curves per setting."""

from __future__ import annotations

import hashlib
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .. import attacks, chance
from ..datasets import DATASETS, display_name
from .collect import Group, group_sort_key, is_finite, known_order, norm_rank

DATASET_NAMES = {name: d.display for name, d in DATASETS.items()}  # the registry's display names
PLOT_FORMATS = ("png", "svg", "pdf")
DPI = 150


@dataclass
class Plot:
    filename: str  # the PNG's name; the other formats share its stem
    title: str
    kind: str  # "box", "curves", "sweep" or "sweep-curves"
    context: tuple  # (dataset, model, variant, attack) for box, + setting for curves; (option, context) for sweeps
    files: dict[str, bytes] = field(default_factory=dict)  # format ("png", "svg", "pdf") -> bytes

    def names(self) -> dict[str, str]:
        stem = self.filename.rsplit(".", 1)[0]
        return {fmt: f"{stem}.{fmt}" for fmt in self.files}


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(*parts: str) -> str:
    """Parts joined by '_', every character outside [A-Za-z0-9._-] replaced, ending in .png."""
    name = "_".join(_SAFE.sub("-", p.replace("+", "")) for p in parts if p != "")  # 1e+06 -> 1e06
    return name + ".png"


def _legend_room(labels: Iterable[str]) -> float:
    """Extra figure width (inches) for a legend with long labels (a user layer's import path)."""
    return max(0.0, 0.065 * (max((len(n) for n in labels), default=0) - 12))


def norm_colors(norms: Iterable[str]) -> dict[str, str]:
    """A registered layer keeps its colour across plots (its place in the registry); others follow."""
    from matplotlib import colormaps

    palette = [f"C{i}" for i in range(10)] + [colormaps["tab20"](i) for i in range(1, 20, 2)]
    known = known_order()
    extra = sorted({n for n in norms if n not in known})
    return {n: palette[i % len(palette)] for i, n in enumerate(known + tuple(extra))}


_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
             "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}


def render(fig, formats: Sequence[str] = ("png",), dpi: int = DPI) -> dict[str, bytes]:
    """The figure in each format: PNG at `dpi`, SVG and PDF as vector graphics (fonts as paths in
    SVG, so that it looks the same everywhere; no timestamps and no matplotlib version in the
    metadata, so that the bytes are reproducible: the committed plots are checked byte for byte)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    out = {}
    for fmt in formats:
        buf = io.BytesIO()
        with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "noiseattack"}):
            fig.savefig(buf, format=fmt, dpi=dpi, metadata=_METADATA[fmt])
        out[fmt] = buf.getvalue()
    return out


def box_plot(groups: Sequence[Group], title: str, xlabel: str):
    """Final accuracy per norm (side by side) for each setting (one group on the x-axis each),
    the seeds overlaid as points, and the diverged/unfinished runs counted under the boxes."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    settings: dict[str, str] = {}  # setting -> its tick
    for g in sorted(groups, key=group_sort_key):
        settings.setdefault(g.key.setting, g.tick)
    norms = sorted({g.key.norm for g in groups}, key=norm_rank)
    by = {(g.key.setting, g.key.norm): g for g in groups}
    colors = norm_colors(norms)
    m = len(norms)
    width = 0.8 / max(m, 2)
    fig = Figure(figsize=(max(7.0, 2.5 + len(settings) * (0.6 + 0.45 * m)) + _legend_room(norms), 4.8))
    ax = fig.add_subplot()
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    rng = np.random.default_rng(0)
    any_note = False
    for i, setting in enumerate(settings):
        for j, norm in enumerate(norms):
            g = by.get((setting, norm))
            if g is None:
                continue
            pos = i + (j - (m - 1) / 2) * width
            accs = g.accs
            if accs:
                bp = ax.boxplot([accs], positions=[pos], widths=width * 0.8, patch_artist=True, showfliers=False,
                                manage_ticks=False, medianprops={"color": "black"})
                for patch in bp["boxes"]:
                    patch.set_facecolor(colors[norm])
                    patch.set_alpha(0.55)
                jitter = rng.uniform(-width * 0.22, width * 0.22, len(accs))
                ax.scatter(pos + jitter, accs, s=16, color=colors[norm], edgecolors="black", linewidths=0.5, zorder=3)
            notes = [f"{len(g.diverged)} div." if g.diverged else "",
                     f"{len(g.unfinished)} unf." if g.unfinished else ""]
            note = "\n".join(s for s in notes if s)
            if note:
                any_note = True
                ax.text(pos, 0.02, note, transform=trans, ha="center", va="bottom", fontsize=7, color="firebrick")
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels(list(settings.values()))
    ax.set_xlim(-0.6, len(settings) - 0.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("final test accuracy (%)")
    fig.suptitle(title, fontsize=11)  # centred on the figure: a long legend does not push it off the left edge
    ax.grid(axis="y", alpha=0.3)
    handles = [Patch(facecolor=colors[n], alpha=0.55, edgecolor="black", label=n) for n in norms]
    handles.append(Line2D([], [], marker="o", linestyle="", color="gray", markeredgecolor="black",
                          markersize=4, label="one seed"))
    handles += _chance_line(ax, groups)
    ax.margins(y=0.1)  # room under the boxes for the diverged/unfinished counts
    ax.legend(handles=handles, title="norm", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if any_note:
        ax.text(1.02, 0.0, "not in the boxes:\ndiv. = diverged runs\nunf. = unfinished runs", transform=ax.transAxes,
                ha="left", va="bottom", fontsize=7, color="firebrick")
    fig.tight_layout()
    return fig


def _chance_line(ax, groups: Sequence[Group]) -> list:
    """Where any run of the plot is at chance (`noiseattack.chance`): a dashed line at the majority class's
    share of the test set, the band up to the chance threshold shaded, and their legend entries; else
    nothing (the line would stretch the axis of runs far above it)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    runs = [r for g in groups for r in g.finished]
    found = chance.level(runs) if any(chance.is_chance(r) for r in runs) else None
    if found is None:
        return []
    share, limit = found
    style = {"linestyle": "--", "color": "dimgray", "linewidth": 1.0}
    ax.axhline(share, zorder=1, **style)
    ax.axhspan(share, limit, color="gray", alpha=0.12, linewidth=0, zorder=0)
    return [Line2D([], [], label=f"chance: majority\nclass, {share:.2f}%", **style),
            Patch(facecolor="gray", alpha=0.12, label=f"at chance: up to\n{limit:.2f}% ({chance.Z:g} s.e.)")]


def epoch_stats(runs: Sequence[dict], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, and the mean and std (n-1; 0 for one run) over `runs` of `metric` at each epoch."""
    per_epoch: dict[int, list[float]] = {}
    for r in runs:
        for h in r.get("history") or []:
            v = h.get(metric)
            if "epoch" in h and is_finite(v):
                per_epoch.setdefault(int(h["epoch"]), []).append(float(v))
    ep = np.array(sorted(per_epoch), dtype=int)
    vals = [np.array(per_epoch[e]) for e in ep]
    return (ep, np.array([v.mean() for v in vals]),
            np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in vals]))


def curve_plot(groups: Sequence[Group], title: str):
    """Test accuracy per epoch, per norm: mean +- std over the finished seeds; the partial curves
    of diverged runs dotted."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8.0 + _legend_room([g.key.norm for g in groups]), 4.6))
    ax = fig.add_subplot()
    norms = sorted(groups, key=lambda g: norm_rank(g.key.norm))
    colors = norm_colors(g.key.norm for g in norms)
    epochs = {int(h["epoch"]) for g in norms for r in g.finished + g.diverged for h in r.get("history") or []
              if "epoch" in h}
    single = len(epochs) <= 1  # one epoch: error bars side by side instead of bands
    for j, g in enumerate(norms):
        c = colors[g.key.norm]
        ep, mean, std = epoch_stats(g.finished, "test_acc")
        if len(ep):
            label = f"{g.key.norm} (n={len(g.finished)})"
            if single:
                x = ep + (j - (len(norms) - 1) / 2) * 0.06
                ax.errorbar(x, mean, yerr=std, color=c, marker="o", markersize=4, capsize=4, label=label)
            else:
                ax.plot(ep, mean, marker="o", markersize=3, color=c, label=label)
                ax.fill_between(ep, mean - std, mean + std, color=c, alpha=0.2, linewidth=0)
        for i, r in enumerate(g.diverged):
            hist = [h for h in r.get("history") or [] if is_finite(h.get("test_acc"))]
            if hist:
                ax.plot([h["epoch"] for h in hist], [h["test_acc"] for h in hist], linestyle=":", color=c,
                        linewidth=1, label=f"{g.key.norm} diverged (n={len(g.diverged)})" if i == 0 else None)
    if single and epochs:
        e = next(iter(epochs))
        ax.set_xticks([e])
        ax.set_xlim(e - 0.5, e + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    fig.suptitle(title, fontsize=11)  # centred on the figure: a long legend does not push it off the left edge
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title="norm (finished seeds)\nmean ± std", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return fig


def describe_context(dataset: str, model: str, variant: str = "") -> str:
    """`fmnist`, `resnet20w2-n4000-e3` -> `FashionMNIST · ResNet-20 (2× width), 4000 training images, 3 epochs`."""
    m = re.fullmatch(r"resnet(?P<depth>\d+)(?:w(?P<width>[\d.]+))?(?:-n(?P<n>\d+))?-e(?P<epochs>\d+)", model)
    if m is None:
        text = model
    else:
        text = f"ResNet-{m['depth']}" + (f" ({m['width']}× width)" if m["width"] else "")
        text += f", {m['n']} training images" if m["n"] else ", full training set"
        text += f", {m['epochs']} epoch" + ("s" if m["epochs"] != "1" else "")
    return f"{display_name(dataset)} · {text}" + (f" [{variant}]" if variant else "")


def make_plots(groups: Sequence[Group], formats: Sequence[str] = ("png",), dpi: int = DPI) -> list[Plot]:
    """A box plot per (dataset, model, variant, attack) and a curve plot per setting, rendered in each format."""
    families: dict[tuple, list[Group]] = defaultdict(list)
    contexts: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        k = g.key
        families[(k.dataset, k.model, k.variant, k.attack)].append(g)
        contexts[k.context].append(g)
    plots: list[Plot] = []
    used: set[str] = set()

    def unique(name: str) -> str:
        base, i = name[:-4], 2
        while name in used:
            name, i = f"{base}-{i}.png", i + 1
        used.add(name)
        return name

    def vtag(variant: str) -> str:
        return hashlib.sha256(variant.encode()).hexdigest()[:6] if variant else ""

    for (dataset, model, variant, attack), gs in families.items():
        title = (f"{describe_context(dataset, model, variant)}\n{attacks.get(attack).family()}: final test accuracy (%) "
                 "over seeds, per norm and setting")
        name = unique(safe_filename("box", dataset, model, vtag(variant), attack))
        plots.append(Plot(name, title.replace("\n", ": "), "box", (dataset, model, variant, attack),
                          render(box_plot(gs, title, attacks.get(attack).axis), formats, dpi)))
    for ctx, gs in contexts.items():
        dataset, model, variant, attack, setting = ctx
        title = (f"{describe_context(dataset, model, variant)}\n{gs[0].title}: "
                 "test accuracy per epoch (mean ± std over seeds)")
        name = unique(safe_filename("curves", dataset, model, vtag(variant), attack, setting))
        plots.append(Plot(name, title.replace("\n", ": "), "curves", ctx, render(curve_plot(gs, title), formats, dpi)))
    return plots
