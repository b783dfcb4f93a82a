"""The report's rows (statistics per group, compared with BN) and their markdown, CSV and JSON forms."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import overview
from ..fileio import atomic_write, atomic_write_text
from .collect import Group, ReportError
from .plots import Plot, describe_context
from .. import chance
from .stats import (ALPHA, MIN_N, NO_REFERENCE, NOT_INFORMATIVE, NOT_MEANINGFUL, REFERENCE, adjust, compare, describe,
                    fmt_p)
from .sweeps import Sweep
from .sweeps import to_csv as sweeps_csv
from .sweeps import to_markdown as sweeps_markdown


FORMATS = ("md", "csv", "json")


COLUMNS = (
    "dataset", "model", "variant", "attack", "setting", "norm", "n", "diverged", "unfinished", "at_chance",
    "mean", "std", "var", "ci95_low", "ci95_high", "min", "max", "diff_vs_bn", "diff_ci95_low", "diff_ci95_high",
    "welch_p", "welch_p_holm", "var_ratio", "var_ratio_ci95_low", "var_ratio_ci95_high", "var_p", "var_p_holm", "bf_p",
    "accuracy_verdict", "stability_verdict", "seeds", "experiments",
)


def build_rows(groups: Sequence[Group], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """One row per group (see COLUMNS): statistics over the finished runs, and the comparison
    with BN in the same context; the p-values of all the comparisons of these rows are adjusted
    together by Holm (each family on its own: the mean tests, the variance tests)."""
    ref = {g.key.context: g for g in groups if g.key.norm == REFERENCE}
    rows, compared = [], []
    untested = dict.fromkeys(c for c in COLUMNS[COLUMNS.index("diff_vs_bn"):COLUMNS.index("accuracy_verdict")])
    for g in groups:
        k = g.key
        accs = g.accs
        row: dict[str, Any] = {"dataset": k.dataset, "model": k.model, "variant": k.variant, "attack": k.attack,
                               "setting": k.setting, "norm": k.norm, "diverged": len(g.diverged),
                               "unfinished": len(g.unfinished), "at_chance": g.at_chance, **describe(accs)}
        if len(accs) < MIN_N:
            row["ci95_low"] = row["ci95_high"] = None
        if k.norm == REFERENCE:
            verdict = "reference" if len(accs) >= MIN_N else f"reference ({NOT_MEANINGFUL})"
            row.update(untested, accuracy_verdict=verdict, stability_verdict=verdict)
        elif k.context not in ref:
            row.update(untested, accuracy_verdict=NO_REFERENCE, stability_verdict=NO_REFERENCE)
        else:
            bn = ref[k.context]
            row.update(compare(accs, bn.accs, alpha, chance=(g.mostly_at_chance, bn.mostly_at_chance)))
            compared.append(row)
        row["seeds"] = " ".join(str(r["seed"]) for r in sorted(g.finished, key=lambda r: r["seed"]))
        row["experiments"] = " ".join(sorted(g.experiments))
        rows.append(row)
    adjust(compared, alpha)
    return [{c: row[c] for c in COLUMNS} for row in rows]


def _cell(v: Any, digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def legend(alpha: float, m_mean: int, m_var: int) -> list[str]:
    """The report's legend: what each column is, and which tests the verdicts use."""
    return [
        "- **95% CI**: t-interval of the mean; std and var with n-1.",
        "- **Δ BN [95% CI]**: mean minus BN's mean in the same dataset, model, attack and setting, with the "
        "Welch–Satterthwaite 95% interval of the difference.",
        "- **Welch p**: Welch's t-test (unequal variances) of equal means, two-sided.",
        "- **var ratio [95% CI]**: the row's variance over BN's (< 1: steadier than BN; its square root is "
        "the ratio of the stds). The interval is the set of ratios the permutation test below does not reject "
        "at 5% (0 and ∞: unbounded; in the CSV an empty upper bound is ∞).",
        "- **perm. p**: permutation test of equal variances, two-sided: both samples centred by their own "
        "medians (an odd-sized one then drops its median's residual, always 0), pooled, and split again in "
        "every way (exact; random splits from a fixed seed when there are more than 20,000), statistic "
        "|log(var ratio)|. No normality assumed. The smallest possible p is 1/3 with 3 runs against 3, "
        "0.029 with 4 or 5 against as many, 0.002 with 6 or 7, 0.00016 with 8: under Holm, stability "
        "verdicts need 6 or more runs per norm.",
        "- **BF p**: Brown–Forsythe test of equal variance (Levene's test centred on the median), for "
        "reference; no verdict uses it.",
        f"- **Holm**: p-values adjusted by Holm–Bonferroni across all the comparisons against BN in this "
        f"report, each family on its own: the {m_mean} Welch tests, and the {m_var} permutation tests of "
        f"variance. Verdicts at α = {alpha:g} on the adjusted p-values: *better / worse than BN* from Welch, "
        "*more / less stable* (significantly smaller / larger variance than BN) from the permutation test. "
        f"The intervals are not adjusted. With fewer than {MIN_N} finished runs (in a row or in BN) no "
        "interval, p-value or verdict is given.",
    ]


def chance_legend(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The legend lines of the chance mark, where a row has runs at chance (none else)."""
    if not any(r.get("at_chance") for r in rows):
        return []
    return [f"- **at chance** ({chance.MARK} on the mean): runs with {chance.definition()}; they are in the "
            "statistics, but measure nothing learned. Where more than half of a row's runs and of BN's are at "
            f"chance, the verdicts say *{NOT_INFORMATIVE}*, whatever the p-values (which stay in the Holm families); "
            "where one side's are, the verdict says which; and where the side with the lower variance is, the "
            "stability verdict says *stability not informative*: a collapse to chance, not stability."]


def _effect_cells(r: dict[str, Any], name: str) -> str:
    """`+1.23 [0.45, 2.01]` (difference of means) or `0.12 [0.01, 0.95]` (variance ratio)."""
    est, low, high = r["diff_vs_bn" if name == "diff" else name], r[f"{name}_ci95_low"], r[f"{name}_ci95_high"]
    if est is None:
        return "—"
    if name == "diff":
        return f"{est:+.2f}" + ("" if low is None else f" [{low:+.2f}, {high:+.2f}]")
    text = f"{est:.3g}"
    if low is None:
        return text
    return f"{text} [{low:.3g}, {'∞' if high is None else f'{high:.3g}'}]"


def _p_cells(r: dict[str, Any], name: str) -> str:
    """`0.012 (0.048)`: the raw p and the Holm-adjusted one."""
    if r[name] is None:
        return "—"
    return f"{fmt_p(r[name])} ({fmt_p(r[f'{name}_holm'])})"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: "" if r[c] is None else (repr(r[c]) if isinstance(r[c], float) else r[c]) for c in COLUMNS})
    return buf.getvalue()


@dataclass
class Report:
    rows: list[dict[str, Any]]  # one per (dataset, model, variant, attack, setting, norm); see COLUMNS
    sources: list[Path]  # the experiment dirs read
    excluded: list[dict[str, Any]]  # diverged and unfinished runs: experiment, norm, seed, status, detail
    warnings: list[str]
    plots: list[Plot]
    alpha: float = ALPHA
    titles: dict[tuple, str] = field(default_factory=dict)  # (dataset, model, variant, attack, setting) -> heading
    files: list[Path] = field(default_factory=list)  # written by write()
    overview: list[dict[str, Any]] = field(default_factory=list)  # noiseattack.overview.build(rows)
    sweeps: list[Sweep] = field(default_factory=list)  # experiments that differ in one training option

    def to_csv(self) -> str:
        return to_csv(self.rows)

    def to_json(self) -> str:
        doc = {"alpha": self.alpha, "min_n": MIN_N, "sources": [str(s) for s in self.sources], "rows": self.rows,
               "excluded_runs": self.excluded, "plots": [p.filename for p in self.plots], "warnings": self.warnings}
        return json.dumps(doc, indent=2, allow_nan=False) + "\n"

    def to_markdown(self) -> str:
        out = [
            "# noiseattack report", "",
            f"Final test accuracy (%) after the last epoch, over seeds, from {len(self.sources)} experiment dir(s). "
            "Statistics are over the finished runs; diverged and unfinished runs are counted in their own "
            "columns and listed below.", "",
            *legend(self.alpha, sum(r["welch_p"] is not None for r in self.rows),
                     sum(r["var_p"] is not None for r in self.rows)),
            *chance_legend(self.rows), "",
        ]
        head = ["norm", "n", "diverged", "unfinished", "at chance", "mean", "std", "var", "95% CI", "min", "max",
                "Δ BN [95% CI]", "Welch p (Holm)", "var ratio [95% CI]", "perm. p (Holm)", "BF p", "accuracy",
                "stability"]
        plots = {p.context: p for p in self.plots}
        contexts: dict[tuple, list[dict[str, Any]]] = {}
        for r in self.rows:
            contexts.setdefault((r["dataset"], r["model"], r["variant"], r["attack"], r["setting"]), []).append(r)
        family_done: set[tuple] = set()
        for ctx, rows in contexts.items():
            dataset, model, variant, attack, setting = ctx
            family = (dataset, model, variant, attack)
            if family not in family_done:
                family_done.add(family)
                name = f"{describe_context(dataset, model, variant)} · {attack}"
                out += [f"## {name}", ""]
                if family in plots:
                    out += [f"![{plots[family].title}]({plots[family].filename})", ""]
            out += [f"### {self.titles.get(ctx, f'{attack} · {setting}')}", "",
                    "experiments: " + ", ".join(f"`{e}`" for e in sorted({e for r in rows
                                                                          for e in r["experiments"].split()})),
                    "", "| " + " | ".join(head) + " |",
                    "|" + "|".join("---" if h in ("norm", "accuracy", "stability") else "---:" for h in head) + "|"]
            for r in rows:
                ci = "—" if r["ci95_low"] is None else f"[{r['ci95_low']:.2f}, {r['ci95_high']:.2f}]"
                cells = [r["norm"], r["n"], r["diverged"], r["unfinished"], r["at_chance"],
                         _cell(r["mean"]) + (chance.MARK if r["at_chance"] else ""), _cell(r["std"]),
                         _cell(r["var"], 3), ci, _cell(r["min"]), _cell(r["max"]), _effect_cells(r, "diff"),
                         _p_cells(r, "welch_p"), _effect_cells(r, "var_ratio"), _p_cells(r, "var_p"),
                         "—" if r["bf_p"] is None else fmt_p(r["bf_p"]), r["accuracy_verdict"],
                         r["stability_verdict"]]
                out.append("| " + " | ".join(str(c) for c in cells) + " |")
            out.append("")
            if ctx in plots:
                out += [f"![{plots[ctx].title}]({plots[ctx].filename})", ""]
        if self.sweeps:
            out += ["## Against a swept training option", "",
                    "Experiments that differ in one training option only: final test accuracy and the "
                    "train − test gap (the last epoch's training accuracy, measured during training: in training "
                    "mode, on augmented batches unless augmentation is off) per value of the option; then the "
                    "train and test accuracy per epoch for each value.", ""]
            sweep_plots = {(p.kind, p.context): p for p in self.plots if p.kind in ("sweep", "sweep-curves")}
            for s, lines in zip(self.sweeps, [sweeps_markdown([s]) for s in self.sweeps]):
                out += lines
                for kind in ("sweep", "sweep-curves"):
                    p = sweep_plots.get((kind, (s.option, json.dumps(s.context, sort_keys=True))))
                    if p is not None:
                        out += [f"![{p.title}]({p.filename})", ""]
        if self.excluded:
            out += ["## Runs not in the statistics", "",
                    "| experiment | norm | seed | status | detail |", "|---|---|---:|---|---|"]
            out += [f"| `{e['experiment']}` | {e['norm']} | {e['seed']} | {e['status']} | {e['detail']} |"
                    for e in self.excluded]
            out.append("")
        if self.warnings:
            out += ["## Warnings", ""] + [f"- {w}" for w in self.warnings] + [""]
        return "\n".join(out)

    def render(self, fmt: str) -> str:
        if fmt == "md":
            return self.to_markdown()
        if fmt == "csv":
            return self.to_csv()
        if fmt == "json":
            return self.to_json()
        raise ReportError(f"unknown format '{fmt}': choose {', '.join(FORMATS)}")

    def write(self, out_dir: str | Path) -> list[Path]:
        """report.md, report.csv and the PNGs into `out_dir` (each file written atomically)."""
        out_dir = Path(out_dir)
        written = []
        for p in self.plots:
            for fmt, name in p.names().items():
                atomic_write(out_dir / name, lambda f, b=p.files[fmt]: f.write(b))
                written.append(out_dir / name)
        tables = {"report.csv": self.to_csv(), "report.md": self.to_markdown(),
                  "overview.csv": overview.to_csv(self.overview),
                  "overview.md": overview.to_markdown(self.overview, self.alpha)}
        if self.sweeps:
            tables["sweeps.csv"] = sweeps_csv(self.sweeps)
        for name, text in tables.items():  # each named in REPORT_TABLES (what remove_report removes)
            atomic_write_text(out_dir / name, text)
            written.append(out_dir / name)
        mode = 0o666 & ~_umask()
        for f in written:  # mkstemp creates 0600; results are meant to be read by others too
            os.chmod(f, mode)
        self.files = written
        return written

    def prune(self, out_dir: str | Path) -> list[Path]:
        """Remove the report plots (box_*, curves_*, sweep_*, sweep-curves_* as png, svg or pdf) in
        `out_dir` that this report did not write: for a dir that holds one generated report (a
        study's), where older plots would otherwise stay. Nothing when this report drew no plots."""
        mine = {name for p in self.plots for name in p.names().values()}
        if not mine:
            return []
        stale = [f for f in _plot_files(out_dir) if f.name not in mine]
        for f in stale:
            f.unlink()
        return stale


REPORT_TABLES = ("report.csv", "report.md", "overview.csv", "overview.md", "sweeps.csv")  # what Report.write names


def _plot_files(out_dir: str | Path) -> list[Path]:
    """The report plots in `out_dir`: box_*, curves_*, sweep_*, sweep-curves_* as png, svg or pdf."""
    return [f for f in sorted(Path(out_dir).glob("*")) if f.suffix in (".png", ".svg", ".pdf")
            and f.name.startswith(("box_", "curves_", "sweep_", "sweep-curves_"))]


def remove_report(out_dir: str | Path) -> list[Path]:
    """Remove a generated report (its tables and plots) from `out_dir`, a dir that holds one
    (a study's), when there is no report to write any more; the files removed. Other files stay."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    gone = [out_dir / n for n in REPORT_TABLES if (out_dir / n).is_file()] + _plot_files(out_dir)
    for f in gone:
        f.unlink()
    return gone


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_region(text: str, name: str, body: str) -> str:
    """`text` with what lies between `<!-- name:begin -->` and `<!-- name:end -->` replaced by
    `body` (the markers kept); ValueError naming the region when `text` lacks it."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"no {begin} ... {end} region")
    return re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{body.strip()}\n{end}", text,
                  flags=re.S)


def update_region(doc: Path | None, name: str, make_body: Callable[[], str], prog: str) -> int:
    """A one-region generator's main (scripts/source_shift.py, variance_null.py, paper_cost.py): print
    `make_body()` and, with `doc`, put it into the doc's region `name` (the file rewritten only where it
    changes). A doc without the region is checked first: one line on stderr naming it, exit 2, nothing
    computed or written. The exit code."""
    text = doc.read_text() if doc is not None and doc.is_file() else ""
    if doc is not None:
        try:
            replace_region(text, name, "")
        except ValueError as e:
            print(f"{prog}: error: {doc} has {e}", file=sys.stderr)
            return 2
    body = make_body()
    print(body)
    if doc is not None and (new := replace_region(text, name, body)) != text:
        atomic_write_text(doc, new)
    return 0


def replace_regions(text: str, bodies: dict[str, str]) -> str:
    """`replace_region` for every (name, body) of `bodies`, in order."""
    for name, body in bodies.items():
        text = replace_region(text, name, body)
    return text
