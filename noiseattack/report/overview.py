"""The overview: one row per norm, one column per attack setting, for each dataset and model.

Built from the report's rows (`noiseattack.report`), so that it can also be regenerated from a
committed report.csv (`scripts/overview.py`). Each cell is `mean ± std (n)` of the final test
accuracy over seeds, marked ▲ / ▼ where the mean is significantly higher / lower than BN's in the
same setting and ◆ where the variance differs significantly from BN's, by the same tests, alpha
and Holm–Bonferroni adjustment as the report (Welch; the permutation test of variances; each
family adjusted across all the report's comparisons against BN). A report.csv written before the
adjusted columns existed is adjusted here, from its Welch and Brown–Forsythe p-values, and the
legend says so. `params`
is the whole model's trainable parameter count with that layer (ResNet at that depth and width,
the dataset's number of classes), counted on the meta device.

    overview.md    a table per (dataset, model, variant), with the legend
    overview.csv   the same numbers, machine-readable: per setting `mean`, `std`, `n`, `vs_bn`
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import defaultdict
from typing import Any, Iterable, Sequence

from .. import attacks, chance
from ..config import layer_of_row
from ..datasets import DATASETS
from ..errors import ConfigError
from .stats import NOT_INFORMATIVE, holm, variance_differs

ALPHA = 0.05


def _num(v: Any) -> float | None:
    """A report value (float, or its CSV text) as a float; None where absent."""
    if v is None or v == "":
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def setting_name(attack: str, setting: str) -> str:
    """A setting's column: the attack's `column` (`clean`, `constant a2_b1`); an unknown attack's `attack setting`."""
    try:
        return attacks.get(attack).column(setting)
    except ConfigError:
        return f"{attack} {setting}"


def _setting_order(attack: str, setting: str) -> tuple:
    """The columns' order: the attacks' (the registry's), then each attack's settings by its `order`,
    parsed back from the label (a report.csv has the labels only)."""
    try:
        key = attacks.get(attack).order_of_label(setting)
    except ConfigError:
        key = (setting,)
    return attacks.rank(attack)[0], attack, key


def marks(row: dict[str, Any], alpha: float = ALPHA) -> str:
    """▲ / ▼: mean significantly above / below BN's; ◆: variance significantly different from BN's;
    by the Holm-adjusted p-values of the row (`welch_p_holm`, `var_p_holm`); none where the row and BN
    both sit at chance (its verdict NOT_INFORMATIVE); no ◆ where its stability verdict discounts the
    variance test (a lower variance that is a collapse to chance: `stats.variance_differs`)."""
    out = ""
    if row.get("accuracy_verdict") == NOT_INFORMATIVE:  # both sides at chance: no mark, whatever p says
        return out
    p, diff = _num(row.get("welch_p_holm")), _num(row.get("diff_vs_bn"))
    if p is not None and diff is not None and p < alpha:
        out += "▲" if diff > 0 else "▼"
    if variance_differs(row, _num(row.get("var_p_holm")), alpha):
        out += "◆"
    return out


def model_params(dataset: str, model: str, norm: str) -> int | None:
    """Trainable parameters of the model a report's `model` label names (resnet<depth>[w<width>]...),
    with `norm` everywhere; None where the layer cannot be built here (e.g. a user's module that is
    not importable)."""
    import torch

    from ..models import cifar_resnet  # torch: only where parameters are counted

    m = re.match(r"resnet(?P<depth>\d+)(?:w(?P<width>[\d.]+))?", model)
    if m is None or dataset not in DATASETS:
        return None
    width = float(m["width"]) if m["width"] else 1
    layer, placement = layer_of_row(norm)  # a report's row `bn+cbam (per block)`: attn_placement "block"
    try:
        with torch.device("meta"):
            net = cifar_resnet(int(m["depth"]), DATASETS[dataset].num_classes, layer,
                               width=int(width) if float(width).is_integer() else width,
                               attn_placement=placement)
    except (ConfigError, TypeError, ValueError):
        return None
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def _legacy_adjusted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of a report.csv without the Holm columns, with them: Holm across the rows' Welch
    p-values, and across their Brown–Forsythe p-values (that report had no permutation test)."""
    welch = holm([_num(r.get("welch_p")) for r in rows])
    var = holm([_num(r.get("bf_p")) for r in rows])
    return [{**r, "welch_p_holm": p, "var_p_holm": q} for r, p, q in zip(rows, welch, var)]


def build(rows: Iterable[dict[str, Any]], alpha: float = ALPHA, params: bool = True) -> list[dict[str, Any]]:
    """One table per (dataset, model, variant): {"dataset", "model", "variant", "settings": [names],
    "variance_test", "rows": [{"norm", "params", "cells": {setting: {"mean", "std", "n", "vs_bn"}}}]},
    norms in the report's order. `variance_test` names the test behind ◆: "permutation", or
    "Brown–Forsythe" for a report.csv older than the Holm columns (adjusted here)."""
    rows = list(rows)
    legacy = bool(rows) and "var_p_holm" not in rows[0]
    if legacy:
        rows = _legacy_adjusted(rows)
    tables: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        ctx = (r["dataset"], r["model"], r.get("variant") or "")
        t = tables.setdefault(ctx, {"dataset": ctx[0], "model": ctx[1], "variant": ctx[2], "settings": {},
                                    "norms": {}, "variance_test": "Brown–Forsythe" if legacy else "permutation"})
        name = setting_name(r["attack"], r["setting"])
        t["settings"].setdefault(name, _setting_order(r["attack"], r["setting"]))
        cell = {"mean": _num(r.get("mean")), "std": _num(r.get("std")), "n": int(float(r.get("n") or 0)),
                "diverged": int(float(r.get("diverged") or 0)), "at_chance": int(float(r.get("at_chance") or 0)),
                "vs_bn": marks(r, alpha)}
        t["norms"].setdefault(r["norm"], {})[name] = cell
    out = []
    for t in tables.values():
        settings = sorted(t["settings"], key=lambda s: t["settings"][s])
        out.append({"dataset": t["dataset"], "model": t["model"], "variant": t["variant"], "settings": settings,
                    "variance_test": t["variance_test"], "rows": [{"norm": norm, "cells": cells,
                              "params": model_params(t["dataset"], t["model"], norm) if params else None}
                             for norm, cells in t["norms"].items()]})
    return out


def _cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "—"
    diverged = f", {cell['diverged']} diverged" if cell.get("diverged") else ""
    if cell["mean"] is None:
        return f"— (0{diverged})" if diverged else "—"
    std = "—" if cell["std"] is None else f"{cell['std']:.2f}"
    mark = chance.MARK if cell.get("at_chance") else ""
    return f"{cell['mean']:.2f}{mark} ± {std} ({cell['n']}{diverged}){cell['vs_bn']}"


def to_markdown(tables: Sequence[dict[str, Any]], alpha: float = ALPHA) -> str:
    legacy = any(t.get("variance_test") == "Brown–Forsythe" for t in tables)
    var_test = ("Brown–Forsythe test: this report.csv predates the permutation test" if legacy
                else "permutation test of the log variance ratio on median-centred samples")
    out = ["# Overview", "",
           "Final test accuracy (%) after the last epoch: mean ± std (n finished seeds, and the diverged ones, "
           "which are not in the statistics). Against BN in the same setting: "
           f"▲ / ▼ mean significantly higher / lower (Welch's t-test), ◆ variance significantly different "
           f"({var_test}), at α = {alpha:g} on p-values adjusted by Holm–Bonferroni across all the "
           "comparisons against BN in the report (the mean tests and the variance tests each a family); no "
           "mark with fewer than 3 runs. params: trainable parameters of the whole model with that layer.", ""]
    if any(c.get("at_chance") for t in tables for r in t["rows"] for c in r["cells"].values()):
        out += [chance.legend("a mean") + " No ▲ / ▼ / ◆ where the runs of both the row and BN are mostly at "
                "chance: that comparison is not informative; no ◆ where only the side with the lower variance is: "
                "a collapse, not stability.", ""]
    for t in tables:
        title = f"{t['dataset']} · {t['model']}" + (f" [{t['variant']}]" if t["variant"] else "")
        head = ["norm", "params", *t["settings"]]
        out += [f"## {title}", "", "| " + " | ".join(head) + " |",
                "|---|" + "|".join("---:" for _ in head[1:]) + "|"]
        for r in t["rows"]:
            params = "—" if r["params"] is None else f"{r['params']:,}"
            out.append("| " + " | ".join([r["norm"], params, *(_cell_text(r["cells"].get(s)) for s in t["settings"])])
                       + " |")
        out.append("")
    return "\n".join(out)


def doc_body(markdown: str) -> str:
    """`to_markdown`'s text as a region of another document: without its "# Overview" heading, its
    "## " headings demoted to "#### "."""
    body = markdown.split("\n", 2)[2].strip()
    return re.sub(r"^## ", "#### ", body, flags=re.M)


def to_csv(tables: Sequence[dict[str, Any]]) -> str:
    settings = list(dict.fromkeys(s for t in tables for s in t["settings"]))
    fields = ["dataset", "model", "variant", "norm", "params"]
    for s in settings:
        fields += [f"{s} mean", f"{s} std", f"{s} n", f"{s} diverged", f"{s} at_chance", f"{s} vs_bn"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for t in tables:
        for r in t["rows"]:
            line: dict[str, Any] = defaultdict(str, {"dataset": t["dataset"], "model": t["model"],
                                                     "variant": t["variant"], "norm": r["norm"],
                                                     "params": "" if r["params"] is None else r["params"]})
            for s, c in r["cells"].items():
                line[f"{s} mean"] = "" if c["mean"] is None else repr(c["mean"])
                line[f"{s} std"] = "" if c["std"] is None else repr(c["std"])
                line[f"{s} n"], line[f"{s} diverged"], line[f"{s} vs_bn"] = c["n"], c.get("diverged", 0), c["vs_bn"]
                line[f"{s} at_chance"] = c.get("at_chance", 0)
            w.writerow({f: line[f] for f in fields})
    return buf.getvalue()


def read_report_csv(text: str) -> list[dict[str, Any]]:
    """The rows of a report.csv (as `noiseattack report` writes it)."""
    return list(csv.DictReader(io.StringIO(text)))
