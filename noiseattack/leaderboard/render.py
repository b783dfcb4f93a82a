"""A leaderboard as files: leaderboard.md (for people), leaderboard.csv (one line per layer and
setting, every number), leaderboard.json (the same, with the protocol's definition), and the static
HTML page (page.py). Every number comes from the run records through board.build; nothing here
computes statistics."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from .. import chance
from ..report.stats import fmt_p
from .board import PRECISE_FIELDS, RANKED_BY, Board, Cell, Row, SCHEMA, finite, marks

CSV_FIELDS = (
    "rank", "layer", "origin", "params", "step_cost_vs_bn", "robust_acc", "setting", "n", "seeds", "diverged", "failed",
    "at_chance", "mean", "std", "ci95_low", "ci95_high", "min", "max", "diff_vs_bn", "diff_ci95_low", "diff_ci95_high",
    "welch_p", "welch_p_holm", "var_ratio", "var_ratio_ci95_low", "var_ratio_ci95_high", "var_p", "var_p_holm", "marks",
    "drop", "drop_ci95_low", "drop_ci95_high", "drop_vs_bn", "drop_vs_bn_ci95_low", "drop_vs_bn_ci95_high", "precise_n",
    "precise_mean", "precise_std", "precise_mixed_n", "precise_mixed_mean", "precise_mixed_std", "short_of_n",
)


def _r(v: Any, digits: int = 4) -> Any:
    """Numbers rounded for the files (the same bytes on every machine that computes the same values)."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, float):
        return round(v, digits) if finite(v) else None
    return v


def cell_fields(row: Row, sid: str, cell: Cell | None) -> dict[str, Any]:
    """Every number of one layer under one setting, as CSV_FIELDS names them."""
    c = cell or Cell(runs=[])
    s, v, d = c.stats or {}, c.vs_bn or {}, c.drop or {}
    dv = v.get("drop_vs_bn") or {}
    out = {
        "rank": row.rank, "layer": row.layer, "origin": row.origin, "params": row.params,
        "step_cost_vs_bn": _r(row.step_cost, 3), "robust_acc": _r(row.robust), "setting": sid,
        "n": len(c.runs), "seeds": " ".join(map(str, c.seeds)), "diverged": c.diverged, "failed": c.failed,
        "at_chance": c.at_chance, **{k: _r(s.get(k)) for k in ("mean", "std", "ci95_low", "ci95_high", "min", "max")},
        **{k: _r(v.get(k), 6 if k.endswith("p") or "p_" in k else 4) for k in (
            "diff_vs_bn", "diff_ci95_low", "diff_ci95_high", "welch_p", "welch_p_holm", "var_ratio", "var_ratio_ci95_low",
            "var_ratio_ci95_high", "var_p", "var_p_holm")},
        "marks": marks(c.vs_bn), "drop": _r(d.get("estimate")), "drop_ci95_low": _r(d.get("ci_low")),
        "drop_ci95_high": _r(d.get("ci_high")), "drop_vs_bn": _r(dv.get("estimate")),
        "drop_vs_bn_ci95_low": _r(dv.get("ci_low")), "drop_vs_bn_ci95_high": _r(dv.get("ci_high")),
        **{f"{attr}_{k}": (getattr(c, attr) or {}).get("n", 0) if k == "n" else _r((getattr(c, attr) or {}).get(k))
           for attr, _ in PRECISE_FIELDS for k in ("n", "mean", "std")},
        "short_of_n": sid in row.short,
    }
    return out


def to_csv(board: Board) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in board.rows:
        for s in board.protocol.settings:
            w.writerow(cell_fields(row, s.id, row.cells.get(s.id)))
    return buf.getvalue()


def machines_text(board: Board) -> str:
    """"81 runs from 1 machine(s): AMD EPYC (AVX512): 81 runs, 10.1 h (the hours: ...)." for the footers;
    "No runs yet: ..." on an empty board."""
    if not board.records:
        return "No runs yet: the leaderboard grows as they finish."
    return (f"{board.records} runs from {len(board.machines)} machine(s): "
            + "; ".join(f"{m}: {n} run{'s' if n != 1 else ''}, {board.hours.get(m, 0.0):.1f} h"
                        for m, n in board.machines.items())
            + " (the hours: each run's CPU time where it trained at one CPU thread and recorded one, else its wall "
              "time).")


SPLIT_LEGEND = (
    "Cells whose runs come from more than one machine kind. The board's numbers pool them; here they are split: "
    "the runs per kind and their mean, the first kind's mean minus the second's with Welch's 95% interval and p "
    "(not Holm-adjusted). A difference says the cell should be read by kind.")


def split_rows(board: Board) -> list[list[str]]:
    """One row per cell of `board.splits`: layer, setting, the kinds (`kind: mean (n)`), difference, p."""
    out = []
    for layer, sid, sp in board.splits:
        ci = f" [{sp['ci_low']:+.2f}, {sp['ci_high']:+.2f}]" if sp["ci_low"] is not None else ""
        out.append([layer, sid, "; ".join(f"{m}: {mean:.2f} ({n})" for m, n, mean in sp["machines"]),
                    f"{sp['diff']:+.2f}{ci}", "–" if sp["p"] is None else fmt_p(sp["p"])])
    return out


def split_markdown(board: Board) -> list[str]:
    """The machine-kind section of leaderboard.md ([] where every cell's runs come from one kind)."""
    rows = split_rows(board)
    if not rows:
        return []
    return ["", SPLIT_LEGEND, "", "| layer | setting | by machine kind: mean (n) | difference [95% CI] | Welch p |",
            "|---|---|---|---|---:|", *[f"| `{r[0]}` | {' | '.join(r[1:])} |" for r in rows]]


def to_json(board: Board) -> str:
    p = board.protocol
    doc = {
        "schema": SCHEMA, "protocol": p.describe(), "runs": board.records, "machines": board.machines,
        "run_hours": {m: _r(h, 2) for m, h in board.hours.items()},
        "ranked_by": "robust_acc: the mean of the attacked settings' mean final accuracies; null (no rank) for a "
                     "layer without finished runs in every attacked setting",
        "rows": [{"rank": r.rank, "layer": r.layer, "origin": r.origin, "description": r.description,
                  "params": r.params, "step_cost_vs_bn": _r(r.step_cost, 3), "robust_acc": _r(r.robust),
                  "short_of_n": r.short,
                  "settings": {s.id: {k: v for k, v in cell_fields(r, s.id, r.cells.get(s.id)).items()
                                      if k not in ("rank", "layer", "origin", "params", "step_cost_vs_bn",
                                                   "robust_acc", "setting")}
                               for s in p.settings}} for r in board.rows],
        "machine_splits": [{"layer": layer, "setting": sid,
                            "machines": [{"machine": m, "n": n, "mean": _r(mean)} for m, n, mean in sp["machines"]],
                            **{k: _r(sp[k], 6 if k == "p" else 4) for k in ("diff", "ci_low", "ci_high", "p")}}
                           for layer, sid, sp in board.splits],
        "warnings": board.warnings,
    }
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def mean_cell(cell: Cell | None, n_wanted: int) -> str:
    """`91.23 ± 0.31 (5)▲`: mean ± std (finished runs), `, 2 diverged` beside the count where runs diverged
    (they are left out of the statistics), `*` when fewer runs than n are done (finished or diverged), `†`
    when runs are at chance (`noiseattack.chance`); `–` without runs, `– (5 diverged)` where all diverged."""
    if cell is None or not cell.done:
        return "–"
    diverged = f"{cell.diverged} diverged" if cell.diverged else ""
    short = "*" if cell.done < n_wanted else ""
    if not cell.runs:
        return f"– ({diverged}{short})"
    s = cell.stats
    std = f" ± {s['std']:.2f}" if s.get("std") is not None else ""
    count = f"{len(cell.runs)}, {diverged}" if diverged else str(len(cell.runs))
    return f"{s['mean']:.2f}{std} ({count}{short}){chance.MARK if cell.at_chance else ''}{marks(cell.vs_bn)}"


DIVERGED_LEGEND = ("`N diverged`: runs whose loss turned non-finite (a result of training, not re-run). They count "
                   "as done for n but have no final accuracy, so the cell's statistics and its comparisons are over "
                   "its finished runs only; a setting in which every run diverged leaves the layer unranked.")


def outcome_legend(board: Board) -> str:
    """The legends of the runs' outcomes the board shows: runs at chance (†) and diverged runs; "" where
    no cell has either."""
    cells = [c for r in board.rows for c in r.cells.values()]
    parts = []
    if any(c.at_chance for c in cells):
        parts.append(chance.legend("a cell") + " The mean still counts them; where both a cell's runs and BN's are "
                     "mostly at chance, their comparison is not informative (no ▲/▼/◆); where only the side with the "
                     "lower variance is, that is a collapse, not stability (no ◆).")
    if any(c.diverged for c in cells):
        parts.append(DIVERGED_LEGEND)
    return " ".join(parts)


def drop_text(cell: Cell | None) -> str:
    if cell is None or cell.drop is None:
        return "–"
    d = cell.drop
    ci = f" [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]" if d.get("ci_low") is not None else ""
    return f"{d['estimate']:+.2f}{ci}"


def precise_text(cell: Cell | None, attr: str = "precise", n_wanted: int = 0) -> str:
    """`35.53 ± 14.66 (10)`: a cell's runs re-evaluated with PreciseBN statistics (`attr`: on clean or on
    mixed batches); `*` when short of n, as in `mean_cell`; `–` without any."""
    p = getattr(cell, attr, None) if cell is not None else None
    if not p:
        return "–"
    std = f" ± {p['std']:.2f}" if p.get("std") is not None else ""
    short = "*" if p["n"] + cell.diverged < n_wanted else ""  # diverged runs have no re-evaluation
    return f"{p['mean']:.2f}{std} ({p['n']}{short})"


def precise_columns(board: Board) -> list[tuple[str, str, str]]:
    """The PreciseBN columns of the mix setting: (setting id, Cell attribute, heading). The clean-batch
    one always; the mixed-batch one where some run recorded it (runs from before it did not)."""
    mix = [s.id for s in board.protocol.settings if s.id == "mix"]
    mixed = any(r.cells.get(s) is not None and r.cells[s].precise_mixed for r in board.rows for s in mix)
    return [(s, "precise", f"{s}, PreciseBN") for s in mix] + \
        ([(s, "precise_mixed", f"{s}, PreciseBN on mixed batches") for s in mix] if mixed else [])


COST_LEGEND = (
    "Step vs BN: the cost of the layer's runs over BN's, from the settings whose steps are clean ones' (clean, "
    "constant; not mix, whose batches are larger), on the machine kind they share most: the ratio of median CPU "
    "times of the runs that recorded one (runs written before CPU times were recorded left out), where the layer "
    "and BN both have such runs, else of the fastest wall times (sharing the CPUs only slows a run down). BN's side "
    "includes the BN clean runs in calibration/ beside the runs dir (noiseattack bench's check of a machine, other "
    "seeds): a cost reference where the board's BN runs are from another machine kind.")
PRECISE_LEGEND = (
    "PreciseBN: the mix runs re-evaluated after their BN-type layers' statistics were recomputed on clean "
    "training batches (Wu & Johnson 2021; fvcore's update_bn_stats). Below the trained statistics' accuracy, the "
    "model depends on the mixed-batch statistics it was trained with, so the attack's loss is not in corrupted "
    "evaluation statistics; above it, the running statistics carried part of the loss (docs/study-protocol.md).")
PRECISE_MIXED_LEGEND = (
    " PreciseBN on mixed batches: the same recomputation on the same batches joined by the attack's foreign images, "
    "as in training. Near the trained statistics' accuracy, the clean-batch column's change is the clean-vs-mixed "
    "difference, not the estimator.")


def precise_legend(board: Board) -> str:
    return PRECISE_LEGEND + (PRECISE_MIXED_LEGEND if len(precise_columns(board)) > 1 else "")


def to_markdown(board: Board) -> str:
    p = board.protocol
    attacked = [s for s in p.settings if s.id != "clean"]
    precise_cols = precise_columns(board)
    head = ["rank", "layer", "origin", "params", "step vs BN", "robust acc", *[s.title for s in p.settings],
            *[f"drop under {s.id}" for s in attacked], *[h for _, _, h in precise_cols]]
    lines = [f"# Leaderboard: protocol `{p.name}` v{p.version}", "",
             f"{p.summary}. Final test accuracy (%), mean ± std (n) over seeds; ▲/▼ mean above/below BN's, ◆ variance "
             f"different from BN's (Holm-adjusted p < 0.05 across the board); `*` fewer runs than the protocol's n = "
             f"{p.seeds}. {RANKED_BY}. Drops: the setting's "
             "mean minus the layer's clean mean [95% CI]. " + COST_LEGEND + " " + precise_legend(board), "",
             *([outcomes, ""] if (outcomes := outcome_legend(board)) else []),
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in board.rows:
        cells = [mean_cell(r.cells.get(s.id), p.seeds) for s in p.settings]
        drops = [drop_text(r.cells.get(s.id)) for s in attacked]
        precise = [precise_text(r.cells.get(sid), attr, p.seeds) for sid, attr, _ in precise_cols]
        vals = [str(r.rank or "–"), f"`{r.layer}`", r.origin, f"{r.params:,}" if r.params else "–",
                f"{r.step_cost:.2f}" if r.step_cost else "–", f"{r.robust:.2f}" if r.robust is not None else "–",
                *cells, *drops, *precise]
        lines.append("| " + " | ".join(vals) + " |")
    lines += split_markdown(board)
    lines += ["", machines_text(board)]
    lines += [f"Warning: {w}" for w in board.warnings]
    return "\n".join(lines) + "\n"
