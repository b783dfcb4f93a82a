"""Regenerate the attention-capacity study's report, plots, claims and doc tables from its committed runs.

    python scripts/capacity_doc.py     # docs/study-capacity/runs* -> docs/study-capacity/ and docs/study-capacity.md

One command, deterministic. For the main grid (runs/): `noiseattack report` on its runs
(report.md/csv, sweeps.csv, the sweep plots against the width and the per-width train/test
curves, PNG and SVG) and its pre-declared claims (claims.md, claims.csv;
`noiseattack.report.claims`) into docs/study-capacity/. For the follow-up (runs-block/: bn+cbam
once per block; runs-controls/: bn and bn+cbam again, fresh seeds, on the follow-up's machine)
the same into docs/study-capacity/follow-up/, where bn+cbam once per block is the report's row
`bn+cbam (per block)`. Then the generated regions of the doc (`<!-- NAME:begin -->` ...
`<!-- NAME:end -->`: status, pilot, sweep, plots, epochs, claims, cost, and the follow-up's
block-status, block-claims, block-sweep, block-plots, block-epochs, block-cost). Text outside the
regions is left as it is. tests/test_capacity_doc.py checks that the committed tables are what it
writes.

The claims about CBAM (h1-h5) were declared before any bn+cbam run of this grid had finished (of
the first design's runs, in runs-pilot-n6000, one had). The widths they name were revised once,
when the bn runs at widths 0.25 and 1 showed that both fit their training set, and the narrow end
moved to 0.125 (the doc says so). They are one family, adjusted together by Holm–Bonferroni.

The follow-up's claims (f1-f5, r1-r2) were declared before any of its runs had been read, after
the main family's results were known; they are a family of their own, on the follow-up's runs
alone, so the main family's adjusted p-values stay what they were and the follow-up's
comparisons do not reuse the cells whose results called for it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from noiseattack.config import row_label, train_config_from_dict
from noiseattack.errors import ConfigError
from noiseattack.fileio import atomic_write_text
from noiseattack.report import ReportError
from noiseattack.report.claims import (Cells, Claim, build_study_report, claims_markdown, cost_markdown, evaluate, load_cells,
                                       write_claims)
from noiseattack.report.collect import norm_rank
from noiseattack.report.render import replace_regions
from noiseattack.report.sweeps import to_markdown as sweeps_markdown
from noiseattack.sweep.grid import load_grid

NARROW, MID, WIDE = "0.125", "0.25", "1"
BN, ATT = "bn", "bn+cbam"
BLOCK = row_label(ATT, "block")  # the follow-up's layer: CBAM once per residual block (the report's row label)


def _helps(cid: str, width: str, where: str) -> Claim:
    return Claim(cid, "h", f"CBAM helps {where}: bn+cbam above bn in test accuracy at width {width}", "mean",
                 ((width, ATT), (width, BN)), (1, -1))


CLAIMS = (
    Claim("p1", "premise", "The widest model over-fits more than the narrowest: bn's train − test gap at width 1 "
          "above that at width 0.125", "mean", ((WIDE, BN), (NARROW, BN)), (1, -1), metric="gap"),
    _helps("h1", NARROW, "the narrowest (under-fitting) model"),
    _helps("h2", MID, "the middle model"),
    _helps("h3", WIDE, "the widest (over-fitting) model"),
    Claim("h4", "h", "CBAM's benefit shrinks with width: (bn+cbam − bn) at width 0.125 above (bn+cbam − bn) at width 1",
          "mean", ((NARROW, ATT), (NARROW, BN), (WIDE, ATT), (WIDE, BN)), (1, -1, -1, 1)),
    Claim("h5", "h", "CBAM changes how much the widest model over-fits: train − test gap, bn+cbam vs bn at width 1",
          "mean", ((WIDE, ATT), (WIDE, BN)), (1, -1), 0, metric="gap"),
)
FOLLOW_UP = (  # cells from the follow-up's own runs: runs-block and runs-controls (fresh seeds, one machine)
    Claim("f1", "f", "CBAM once per block helps the narrowest (under-fitting) model: bn+cbam (per block) above bn "
          "in test accuracy at width 0.125", "mean", ((NARROW, BLOCK), (NARROW, BN)), (1, -1)),
    Claim("f2", "f", "CBAM once per block helps the widest (over-fitting) model: bn+cbam (per block) above bn in test "
          "accuracy at width 1", "mean", ((WIDE, BLOCK), (WIDE, BN)), (1, -1)),
    Claim("f3", "f", "CBAM once per block: its benefit shrinks with width: (bn+cbam (per block) − bn) at width 0.125 "
          "above that at width 1", "mean", ((NARROW, BLOCK), (NARROW, BN), (WIDE, BLOCK), (WIDE, BN)), (1, -1, -1, 1)),
    Claim("f4", "f", "The placement matters for the narrowest model: bn+cbam (per block) vs bn+cbam (after every norm) "
          "in test accuracy at width 0.125", "mean", ((NARROW, BLOCK), (NARROW, ATT)), (1, -1), 0),
    Claim("f5", "f", "The placement matters for the widest model: bn+cbam (per block) vs bn+cbam (after every norm) "
          "in test accuracy at width 1", "mean", ((WIDE, BLOCK), (WIDE, ATT)), (1, -1), 0),
    Claim("r1", "r", "h1 on fresh seeds: CBAM (after every norm) helps the narrowest model: bn+cbam above bn in "
          "test accuracy at width 0.125", "mean", ((NARROW, ATT), (NARROW, BN)), (1, -1)),
    Claim("r2", "r", "h3 on fresh seeds: CBAM (after every norm) helps the widest model: bn+cbam above bn in test "
          "accuracy at width 1", "mean", ((WIDE, ATT), (WIDE, BN)), (1, -1)),
)
REGIONS = ("status", "pilot", "sweep", "plots", "epochs", "claims", "cost", "block-status", "block-claims",
           "block-sweep", "block-plots", "block-epochs", "block-cost")
GRIDS = [Path(__file__).resolve().parent / f"grid_capacity{g}.toml" for g in ("", "_block", "_controls")]


def width_label(cfg) -> str:
    return f"{cfg.width:g}"


def epochs_markdown(cells: Cells) -> str:
    """Per (width, norm): mean test and (in brackets) train accuracy at about ten epochs (the first,
    every n/9-th, the last), and the first epoch at which the mean training accuracy reaches 99%."""
    keys = sorted(cells, key=lambda k: (float(k[0]), norm_rank(k[1])))
    n_ep = max(len(r["history"]) for rs in cells.values() for r in rs)
    stride = max(1, round(n_ep / 9))
    shown = sorted({1, *range(stride, n_ep + 1, stride), n_ep})
    head = ["width", "norm", "n", *(f"ep {e}" for e in shown), "train ≥ 99% from"]
    out = ["| " + " | ".join(head) + " |", "|---:|---|---:|" + "|".join("---:" for _ in head[3:]) + "|"]
    for width, norm in keys:
        hist = [r["history"] for r in cells[(width, norm)] if len(r["history"]) == n_ep]
        test = [np.mean([h[e - 1]["test_acc"] for h in hist]) for e in range(1, n_ep + 1)]
        train = [np.mean([h[e - 1]["train_acc"] for h in hist]) for e in range(1, n_ep + 1)]
        reach = next((str(e) for e, t in zip(range(1, n_ep + 1), train) if t >= 99.0), "never")
        out.append("| " + " | ".join([width, norm, str(len(hist)),
                                      *(f"{test[e - 1]:.1f} ({train[e - 1]:.1f})" for e in shown), reach]) + " |")
    lrs = [h["lr"] for h in next(iter(cells.values()))[0]["history"]]
    out += ["", "Cells: mean test accuracy (mean training accuracy, measured during the epoch) over the seeds. "
            "lr " + ", ".join(f"{lr:.3g} in epochs {a}–{b}" for lr, a, b in _runs_of(lrs)) + "."]
    return "\n".join(out)


def pilot_markdown(cells: Cells) -> str:
    """The first design's runs (6000 images, 15 epochs): per (width, norm) the last epoch's training
    accuracy and the final test accuracy, mean over the seeds run."""
    out = ["| width | norm | n | train acc (last epoch) | test acc | train − test |", "|---:|---|---:|---:|---:|---:|"]
    for width, norm in sorted(cells, key=lambda k: (float(k[0]), norm_rank(k[1]))):
        rs = cells[(width, norm)]
        train = np.mean([r["history"][-1]["train_acc"] for r in rs])
        test = np.mean([r["final_acc"] for r in rs])
        out.append(f"| {width} | {norm} | {len(rs)} | {train:.1f} | {test:.1f} | {train - test:+.1f} |")
    return "\n".join(out)


def status_markdown(cells: Cells, records: list[dict[str, Any]], planned: int) -> str:
    """How much of the grid has run: finished runs of the planned ones, and diverged ones."""
    done = sum(len(rs) for rs in cells.values())
    diverged = sum(r["status"] == "diverged" for r in records)
    state = "complete" if done + diverged >= planned else "**incomplete: the statistics below are provisional**"
    return f"{done} of the grid's {planned} runs finished, {diverged} diverged: {state}."


def _runs_of(values: list[float]) -> list[tuple[float, int, int]]:
    """(value, first epoch, last epoch) of each run of equal values, epochs from 1."""
    out: list[tuple[float, int, int]] = []
    for e, v in enumerate(values, 1):
        if out and math.isclose(out[-1][0], v):
            out[-1] = (out[-1][0], out[-1][1], e)
        else:
            out.append((v, e, e))
    return out


def plots_markdown(plots, prefix: str) -> str:
    """The sweep plots as markdown images, linked as `prefix/filename` (the out dir, relative to the doc)."""
    return "\n\n".join(f"![{p.title}]({prefix}/{p.filename})" for p in plots if p.kind in ("sweep", "sweep-curves"))


def _cost_key(r: dict[str, Any]) -> str:
    cfg = train_config_from_dict(r["config"])
    return f"width {cfg.width:g} · {row_label(r['norm'], cfg.attn_placement)}"  # the report's row label


def _fail(message: str) -> int:
    print(f"capacity_doc: error: {message}", file=sys.stderr)
    return 2


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("docs/study-capacity/runs"))
    ap.add_argument("--block-runs", type=Path, default=Path("docs/study-capacity/runs-block"),
                    help="the follow-up's runs of bn+cbam once per block; absent or empty: not run yet")
    ap.add_argument("--control-runs", type=Path, default=Path("docs/study-capacity/runs-controls"),
                    help="the follow-up's controls (bn, bn+cbam after every norm; fresh seeds)")
    ap.add_argument("--out", type=Path, default=Path("docs/study-capacity"),
                    help="the main grid's report; the follow-up's goes to OUT/follow-up")
    ap.add_argument("--doc", type=Path, default=Path("docs/study-capacity.md"))
    ap.add_argument("--pilot", type=Path, default=Path("docs/study-capacity/runs-pilot-n6000"),
                    help="the first design's runs (6000 images, 15 epochs)")
    ap.add_argument("--grids", type=Path, nargs=3, default=GRIDS, metavar=("MAIN", "BLOCK", "CONTROLS"),
                    help="the study's grids (for the number of runs planned)")
    return ap


def _has_results(d: Path) -> bool:
    return d.is_dir() and any(d.rglob("results.jsonl"))


def _training(r: dict[str, Any]) -> str:
    """A run's training without the width and the attention placement: one for every run of the study."""
    ident = train_config_from_dict(r["config"]).identity()
    return repr(sorted((k, v) for k, v in ident.items() if k not in ("width", "attn_placement")))


def follow_up_cells(block_runs: Path, control_runs: Path, main_records: list[dict[str, Any]]):
    """The follow-up's finished runs per (width, norm), `bn+cbam (per block)` for runs-block, and its
    records; none before it has run. Its runs hold only their grid's norms and placement, train as
    the main grid's do but for the width and the placement, ran on one CPU kind, and its controls'
    seeds are not the main grid's (fresh runs, not re-runs)."""
    cells: Cells = {}
    records: list[dict[str, Any]] = []
    control_seeds: set[int] = set()
    for runs, placement, norms in ((block_runs, "block", (ATT,)), (control_runs, "norm", (BN, ATT))):
        if not _has_results(runs):
            continue
        found, recs = load_cells(runs, width_label, ("width",))
        if any(r["norm"] not in norms or train_config_from_dict(r["config"]).attn_placement != placement for r in recs):
            raise ReportError(f"{runs}: the follow-up holds {' and '.join(norms)} runs with attn_placement = "
                              f"'{placement}' only")
        cells.update({(w, row_label(norm, placement)): rs for (w, norm), rs in found.items()})
        records += recs
        if placement == "norm":
            control_seeds |= {r["seed"] for r in recs}
    if records and {_training(r) for r in records} != {_training(r) for r in main_records}:
        raise ReportError("the follow-up's runs train otherwise than the main grid's (more differs than the width "
                          "and the attention placement)")
    cpus = {(r.get("machine", {}).get("cpu"), r.get("machine", {}).get("cpu_capability")) for r in records}
    if len(cpus) > 1:
        raise ReportError(f"the follow-up's runs ran on {len(cpus)} CPU kinds: its comparisons need one")
    reused = sorted(control_seeds & {r["seed"] for r in main_records})
    if reused:
        raise ReportError(f"the follow-up's controls reuse the main grid's seeds {reused}: they must be fresh runs")
    return cells, records


def _report_bodies(report, out: Path, doc: Path, prefix: str = "") -> dict[str, str]:
    """The sweep table and the sweep plots of a report (regions `prefix`sweep, `prefix`plots)."""
    return {f"{prefix}sweep": "\n".join(sweeps_markdown(report.sweeps)).strip() or "No finished sweep yet.",
            f"{prefix}plots": plots_markdown(report.plots, Path(os.path.relpath(out, doc.parent)).as_posix())
            or "No sweep plots yet."}


def _bodies(args, main: tuple, pilot: Cells, follow: tuple, planned: tuple[int, int, int], reports) -> dict[str, str]:
    (cells, records), (f_cells, f_records) = main, follow
    main_rows, f_rows = evaluate(CLAIMS, cells), evaluate(FOLLOW_UP, f_cells)
    write_claims(args.out, main_rows)
    f_out = args.out / "follow-up"
    bodies = {"status": status_markdown(cells, records, planned[0]), "pilot": pilot_markdown(pilot),
              **_report_bodies(reports[0], args.out, args.doc), "epochs": epochs_markdown(cells),
              "claims": claims_markdown(main_rows), "cost": cost_markdown(records, _cost_key, "width · norm"),
              "block-status": status_markdown(f_cells, f_records, planned[1] + planned[2]),
              "block-claims": claims_markdown(f_rows), "block-sweep": "No run yet.", "block-plots": "No run yet.",
              "block-epochs": "No run yet.", "block-cost": "No run yet."}
    if f_records:
        write_claims(f_out, f_rows)
        bodies.update(_report_bodies(reports[1], f_out, args.doc, "block-"), **{
            "block-epochs": epochs_markdown(f_cells), "block-cost": cost_markdown(f_records, _cost_key, "width · norm")})
    return bodies


def main() -> int:
    args = _parser().parse_args()
    try:  # every check before anything is written
        text = args.doc.read_text()
        replace_regions(text, dict.fromkeys(REGIONS, ""))
        planned = tuple(len(load_grid(g, defer_device=True).jobs()) for g in args.grids)
        cells, records = load_cells(args.runs, width_label, ("width",))
        pilot, _ = load_cells(args.pilot, width_label, ("width",))
        for where, found in ((args.runs, cells), (args.pilot, pilot)):
            if not found:
                raise ReportError(f"no finished run in '{where}'")
        f_cells, f_records = follow_up_cells(args.block_runs, args.control_runs, records)
        reports = [build_study_report(args.runs, args.out)]
        if f_records:
            reports.append(build_study_report([d for d in (args.block_runs, args.control_runs) if _has_results(d)],
                                              args.out / "follow-up"))
    except OSError as e:
        return _fail(f"cannot read {e.filename or args.doc}: {e.strerror}")
    except (ReportError, ConfigError) as e:
        return _fail(str(e))
    except ValueError as e:  # a missing region
        return _fail(f"{args.doc}: {e}")
    for report, out in zip(reports, (args.out, args.out / "follow-up")):
        report.prune(out)
    bodies = _bodies(args, (cells, records), pilot, (f_cells, f_records), planned, reports)
    atomic_write_text(args.doc, replace_regions(text, {name: bodies[name] for name in REGIONS}))
    print(f"wrote {args.out}/ (report, sweeps, claims, plots; the follow-up's in follow-up/) and the tables in {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
