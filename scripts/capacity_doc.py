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
writes. The pipeline is `noiseattack.report.study`'s; this file declares the study (`STUDY`).

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

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's package, whichever one is installed

from noiseattack.config import row_label, train_config_from_dict  # noqa: E402
from noiseattack.report import ReportError  # noqa: E402
from noiseattack.report.claims import (Cells, Claim, build_study_report, claims_markdown, cost_markdown, evaluate,  # noqa: E402
                                       load_cells, write_claims)
from noiseattack.report.collect import norm_rank  # noqa: E402
from noiseattack.report.study import (Study, epoch_table, epochs_of, fresh_seeds, lr_runs, one_cpu_kind, one_training,  # noqa: E402
                                      run_study, status_line)
from noiseattack.report.sweeps import to_markdown as sweeps_markdown  # noqa: E402
from noiseattack.sweep.grid import load_grid  # noqa: E402

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
    n_ep = epochs_of(cells)
    stride = max(1, round(n_ep / 9))
    shown = sorted({1, *range(stride, n_ep + 1, stride), n_ep})
    reach = ("train ≥ 99% from",
             lambda test, train: next((str(e) for e, t in enumerate(train, 1) if t >= 99.0), "never"))
    table = epoch_table([(list(k), cells[k]) for k in keys], [("width", "---:"), ("norm", "---")], n_ep, shown,
                        lambda test, train: f"{test:.1f} ({train:.1f})", reach)
    lrs = [h["lr"] for h in next(iter(cells.values()))[0]["history"]]
    return table + "\n\n" + ("Cells: mean test accuracy (mean training accuracy, measured during the epoch) over the "
                             "seeds. lr " + ", ".join(f"{lr:.3g} in epochs {a}–{b}" for lr, a, b in lr_runs(lrs)) + ".")


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


def plots_markdown(plots, prefix: str) -> str:
    """The sweep plots as markdown images, linked as `prefix/filename` (the out dir, relative to the doc)."""
    return "\n\n".join(f"![{p.title}]({prefix}/{p.filename})" for p in plots if p.kind in ("sweep", "sweep-curves"))


def _cost_key(r: dict[str, Any]) -> str:
    cfg = train_config_from_dict(r["config"])
    return f"width {cfg.width:g} · {row_label(r['norm'], cfg.attn_placement)}"  # the report's row label


def _has_results(d: Path) -> bool:
    return d.is_dir() and any(d.rglob("results.jsonl"))


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
    one_training(records, main_records, ("width", "attn_placement"), "the follow-up's runs train otherwise than the "
                 "main grid's (more differs than the width and the attention placement)")
    one_cpu_kind(records, "the follow-up's runs")
    fresh_seeds(control_seeds, main_records, "the follow-up's controls")
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
    bodies = {"status": status_line(cells, records, planned[0]), "pilot": pilot_markdown(pilot),
              **_report_bodies(reports[0], args.out, args.doc), "epochs": epochs_markdown(cells),
              "claims": claims_markdown(main_rows), "cost": cost_markdown(records, _cost_key, "width · norm"),
              "block-status": status_line(f_cells, f_records, planned[1] + planned[2]),
              "block-claims": claims_markdown(f_rows), "block-sweep": "No run yet.", "block-plots": "No run yet.",
              "block-epochs": "No run yet.", "block-cost": "No run yet."}
    if f_records:
        write_claims(f_out, f_rows)
        bodies.update(_report_bodies(reports[1], f_out, args.doc, "block-"), **{
            "block-epochs": epochs_markdown(f_cells), "block-cost": cost_markdown(f_records, _cost_key, "width · norm")})
    return bodies


def load(args) -> dict[str, Any]:
    """Every run the doc reads, checked (one training per runs dir, the follow-up's rules), and the
    reports; nothing written."""
    planned = tuple(len(load_grid(g, defer_device=True).jobs()) for g in args.grids)
    cells, records = load_cells(args.runs, width_label, ("width",))
    pilot, _ = load_cells(args.pilot, width_label, ("width",))
    for where, found in ((args.runs, cells), (args.pilot, pilot)):
        if not found:
            raise ReportError(f"no finished run in '{where}'")
    f_cells, f_records = follow_up_cells(args.block_runs, args.control_runs, records)
    reports = [build_study_report(args.runs, None)]
    if f_records:
        reports.append(build_study_report([d for d in (args.block_runs, args.control_runs) if _has_results(d)], None))
    return {"main": (cells, records), "pilot": pilot, "follow": (f_cells, f_records), "planned": planned,
            "reports": reports}


def write(args, s: dict[str, Any]) -> dict[str, str]:
    """The reports (the main grid's, the follow-up's) and claims; the regions' bodies."""
    for report, out in zip(s["reports"], (args.out, args.out / "follow-up")):
        report.write(out)
        report.prune(out)
    return _bodies(args, s["main"], s["pilot"], s["follow"], s["planned"], s["reports"])


STUDY = Study(
    prog="capacity_doc", description=__doc__.splitlines()[0], doc=Path("docs/study-capacity.md"), regions=REGIONS,
    paths={"runs": (Path("docs/study-capacity/runs"), ""),
           "block_runs": (Path("docs/study-capacity/runs-block"),
                          "the follow-up's runs of bn+cbam once per block; absent or empty: not run yet"),
           "control_runs": (Path("docs/study-capacity/runs-controls"),
                            "the follow-up's controls (bn, bn+cbam after every norm; fresh seeds)"),
           "out": (Path("docs/study-capacity"), "the main grid's report; the follow-up's goes to OUT/follow-up"),
           "pilot": (Path("docs/study-capacity/runs-pilot-n6000"), "the first design's runs (6000 images, 15 epochs)"),
           "grids": (GRIDS, "the study's grids (for the number of runs planned)")},
    nargs={"grids": (3, ("MAIN", "BLOCK", "CONTROLS"))},
    load=load, write=write,
    done="wrote {out}/ (report, sweeps, claims, plots; the follow-up's in follow-up/) and the tables in {doc}")


if __name__ == "__main__":
    sys.exit(run_study(STUDY))
