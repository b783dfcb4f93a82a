"""docs/study-protocol.md: the IEBN paper's claims re-tested past the transient, on the `fmnist`
protocol's leaderboard runs (#21 item 2), beside what the 150-step study (docs/study-fmnist.md)
concluded; and the mix setting re-evaluated with PreciseBN statistics (#21 item 3). With
`--protocol fmnist-gpu`, the same study on the GPU leaderboard's runs: docs/study-protocol-gpu.md
(device and precision are part of a result: the two never pool).

    python scripts/study_protocol_doc.py                          # docs/study-protocol.md, docs/study-protocol/
    python scripts/study_protocol_doc.py --protocol fmnist-gpu    # docs/study-protocol-gpu.md, .../study-protocol-gpu/
    python scripts/study_protocol_doc.py --doc /tmp/s.md --out /tmp/s   # elsewhere (on a copy of the doc)

`--protocol` picks the runs (docs/leaderboard/<protocol>/runs), the doc and the out dir; each
is an option of its own too. The claims (claims.md, claims.csv) and a report of the study's layers
(report.md, overview, box plots and curves as PNG and SVG) go to the out dir; the doc's
generated regions (`<!-- NAME:begin -->` ... `<!-- NAME:end -->`: scope, status, claims, verdicts,
precise-method, precise, curves, plots, machines, cost) are rewritten, and the text outside them, written
by hand, is left as it is. The pipeline is `noiseattack.report.study`'s; this file declares the
study (`STUDY`).

The claims are declared in scripts/study_protocol_claims.py (before any run was read). Every number
comes from docs/leaderboard/<protocol>/runs; tests/test_study_protocol_doc.py checks the committed
docs are what this writes.
"""

from __future__ import annotations

import csv
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's package, whichever one is installed
sys.path.insert(0, str(REPO / "scripts"))

from noiseattack import protocols  # noqa: E402
from noiseattack.leaderboard.board import check_record, machine_label, machine_split, read_records  # noqa: E402
from noiseattack.precise import PRECISE_BATCHES  # noqa: E402
from noiseattack.report.claims import (build_study_report, claims_markdown, cost_markdown, evaluate,  # noqa: E402
                                       write_claims)
from noiseattack.report.stats import contrast, fmt_p  # noqa: E402
from noiseattack.report.render import remove_report  # noqa: E402
from noiseattack.report.study import Study, run_study  # noqa: E402
from study_protocol_claims import CLAIMS  # noqa: E402
from earlier_study import clean_bn_text  # noqa: E402

LAYERS = ("bn", "bnse", "iebn", "bn-damped", "iebn-b0")
N_WANTED = 10
STEMS = {"fmnist": "study-protocol", "fmnist-gpu": "study-protocol-gpu"}  # protocol -> the doc's name under docs/


def load_runs(runs: Path, proto) -> tuple[dict, list[dict]]:
    """(setting id, layer) -> finished records by seed, for the study's layers; and all their records."""
    cells: dict = defaultdict(list)
    records = []
    for r in read_records([runs]) if runs.is_dir() else []:
        if r["norm"] not in LAYERS:
            continue
        setting = check_record(proto, r)
        records.append(r)
        if r["status"] == "finished":
            cells[(setting, r["norm"])].append(r)
    for v in cells.values():
        v.sort(key=lambda r: r["seed"])
    return cells, records


def status(cells, proto) -> list[str]:
    out = ["| layer | " + " | ".join(s.title for s in proto.settings) + " |", "|---|" + "---:|" * len(proto.settings)]
    short = 0
    for n in LAYERS:
        vals = []
        for s in proto.settings:
            k = len(cells.get((s.id, n), []))
            short += max(0, N_WANTED - k)
            vals.append(f"{k}" + ("" if k >= N_WANTED else f" (of {N_WANTED})"))
        out.append(f"| `{n}` | " + " | ".join(vals) + " |")
    head = (f"**{short} runs short of n = {N_WANTED}**: the claims below are provisional until every cell is full."
            if short else f"Every cell has n >= {N_WANTED}.")
    return [head, "", *out]


def old_readings(path: Path) -> dict[str, str]:
    """The 150-step study's reading of each claim, by id ({} where its claims.csv is absent)."""
    if not path.exists():
        return {}
    with open(path) as f:
        return {r["id"]: r["reading"] for r in csv.DictReader(f)}


def side_by_side(rows, old: dict[str, str], proto) -> list[str]:
    """Each claim's reading after 150 steps and past the transient; what the mix claims compare."""
    out = ["| id | claim | 150 steps (docs/study-fmnist.md) | past the transient (this study) |", "|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['id']} | {r['claim']} | {old.get(r['id'], '—')} | {r['reading']} |")
    k = proto.setting("mix").options["k"]
    return out + ["", "The 150-step study's mix claims used k = 64 foreign images per batch of 128 (and a second "
                  "source, MNIST, whose claims b2, b4, b5 have no counterpart here); this study's mix setting has "
                  f"k = {k}: at k = 64 the protocol's pilot found no effect on BN (docs/protocols.md)."]


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[str, dict]:
    """'mean difference b − a [95% CI]' of paired runs, and contrast()'s result."""
    res = contrast([b - a], (1,))
    ci = f" [{res['ci_low']:+.2f}, {res['ci_high']:+.2f}]" if res["ci_low"] is not None else ""
    return f"{(b - a).mean():+.2f}{ci}", res


def precise(cells) -> list[str]:
    """Each BN-type layer's mix accuracy with its trained running statistics and with PreciseBN's,
    and the paired difference (PreciseBN minus trained) with its 95% interval; where runs recorded it,
    PreciseBN on mixed batches (the training distribution) too; then what they say."""
    with_mixed = any(isinstance(r.get("precise_mixed_acc"), (int, float)) for recs in cells.values() for r in recs)
    extra = (" PreciseBN, mixed batches | mixed − trained [95% CI] |", "---:|---:|") if with_mixed else ("", "")
    out = ["| layer | setting | n | trained statistics | PreciseBN | PreciseBN − trained [95% CI] | p |" + extra[0],
           "|---|---|---:|---:|---:|---:|---:|" + extra[1]]
    mix, mixed_rows = [], []  # (layer, mean difference, CI low, CI high) of the mix rows, clean and mixed batches
    for setting in ("mix", "clean"):
        for n in LAYERS:
            recs = [r for r in cells.get((setting, n), []) if isinstance(r.get("precise_acc"), (int, float))]
            if not recs:
                continue
            a = np.array([r["final_acc"] for r in recs])
            b = np.array([r["precise_acc"] for r in recs])
            text, res = _paired(a, b)
            row = (f"| `{n}` | {setting} | {len(recs)} | {a.mean():.2f} | {b.mean():.2f} | {text} | "
                   f"{fmt_p(res['p']) if res['p'] is not None else '—'} |")
            if setting == "mix" and res["ci_low"] is not None:
                mix.append((n, float((b - a).mean()), res["ci_low"], res["ci_high"]))
            if with_mixed:
                both = [r for r in recs if isinstance(r.get("precise_mixed_acc"), (int, float))]
                if both:
                    m = np.array([r["precise_mixed_acc"] for r in both])
                    t = np.array([r["final_acc"] for r in both])
                    mtext, mres = _paired(t, m)
                    row += f" {m.mean():.2f} ({len(both)}) | {mtext} |"
                    if setting == "mix" and mres["ci_low"] is not None:
                        mixed_rows.append((n, float((m - t).mean()), mres["ci_low"], mres["ci_high"]))
                else:
                    row += " – | – |"
            out.append(row)
    return out + ["", precise_reading(mix) + (" " + precise_mixed_reading(mixed_rows) if with_mixed else "")]


def precise_mixed_reading(rows: list[tuple[str, float, float, float]]) -> str:
    """What PreciseBN on mixed batches says beside the clean-batch rows, from its intervals alone:
    equivalent (the whole interval within ±1 point), moved (the interval excludes zero), or neither."""
    if not rows:
        return "No mix runs with n >= 2 recorded PreciseBN on mixed batches yet."
    near = [r for r in rows if -1.0 <= r[2] and r[3] <= 1.0]
    far = [r for r in rows if r not in near and (r[2] > 0 or r[3] < 0)]
    open_ = [r for r in rows if r not in near and r not in far]
    names = lambda rs: ", ".join(f"`{r[0]}`" for r in rs)  # noqa: E731
    parts = []
    if near:
        parts.append(f"On mixed batches, PreciseBN stays within a point of the trained statistics (the whole 95% "
                     f"interval within ±1) for {names(near)}: the recomputation itself does not lose accuracy there, so "
                     "the clean-batch change is the clean-vs-mixed difference in statistics")
    if far:
        parts.append(f"on mixed batches it still moves {names(far)} by "
                     + ", ".join(f"{r[1]:+.2f} [{r[2]:+.2f}, {r[3]:+.2f}]" for r in far)
                     + ": there the exponential average and the population statistics of the same distribution differ")
    if open_:
        parts.append(f"for {names(open_)} the mixed-batch interval is too wide to say either "
                     + ", ".join(f"({r[1]:+.2f} [{r[2]:+.2f}, {r[3]:+.2f}])" for r in open_))
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def precise_reading(mix: list[tuple[str, float, float, float]]) -> str:
    """What the mix rows say, from their intervals alone."""
    if not mix:
        return "No mix runs with n >= 2 yet: nothing to read."
    down = [m for m in mix if m[3] < 0]
    up = [m for m in mix if m[2] > 0]
    parts = []
    if down:
        lo, hi = -max(m[1] for m in down), -min(m[1] for m in down)
        by = f"{lo:.1f} points" if len(down) == 1 else f"{lo:.1f} to {hi:.1f} points"
        layers = "layers" if len(mix) > 1 else "layer"
        parts.append(f"PreciseBN *lowers* the mix accuracy of {len(down)} of {len(mix)} {layers} "
                     f"(by {by}, every interval below zero): these models were trained to be normalized by statistics that include the foreign "
                     "images, and their running statistics hold the same mixture; clean statistics are the ones they "
                     "never saw. Under this attack the loss is in the model, not in corrupted evaluation statistics")
    if up:
        parts.append(f"PreciseBN recovers accuracy for {', '.join(f'`{m[0]}`' for m in up)} (interval above zero): "
                     "there the running statistics, not the weights, carried part of the loss")
    rest = len(mix) - len(down) - len(up)
    if rest:
        parts.append(f"{rest} layer(s) show no difference distinguishable at 95%")
    return "; ".join(parts) + "."


def curves(cells, proto) -> list[str]:
    out = ["| setting | layer | n | epoch 1 | epoch 2 | epoch 3 | last epoch adds |", "|---|---|---:|---:|---:|---:|---:|"]
    for s in proto.settings:
        for n in LAYERS:
            recs = cells.get((s.id, n), [])
            if not recs:
                continue
            acc = [float(np.mean([r["history"][e]["test_acc"] for r in recs])) for e in range(3)]
            out.append(f"| {s.title} | `{n}` | {len(recs)} | {acc[0]:.2f} | {acc[1]:.2f} | {acc[2]:.2f} | "
                       f"{acc[2] - acc[1]:+.2f} |")
    return out


def by_machine(cells) -> list[str]:
    """Cells whose runs come from more than one machine kind: the two with the most runs, their means
    and Welch's p (the leaderboard's `machine_split`; leaderboard.md lists every kind)."""
    out = []
    for (s, n), recs in sorted(cells.items()):
        sp = machine_split(recs)
        if sp is None:
            continue
        (m1, n1, a), (m2, n2, b) = sp["machines"][:2]
        out.append(f"| {s} | `{n}` | {m1}: {a:.2f} ({n1}) | {m2}: {b:.2f} ({n2}) | "
                   f"{'—' if sp['p'] is None else fmt_p(sp['p'])} |")
    if not out:
        machines = sorted({machine_label(r) for recs in cells.values() for r in recs})
        return [f"Every cell's runs come from one machine kind ({'; '.join(machines) or 'none yet'})."]
    return ["| setting | layer | machine 1 | machine 2 | Welch p |", "|---|---|---|---|---:|", *out]


def scope(proto) -> str:
    """What the study re-tests, on which runs, at which n."""
    return ("The earlier FashionMNIST study (docs/study-fmnist.md) trained 150 SGD steps on 2000 images, where clean "
            f"BN stopped {clean_bn_text()}. This one re-tests its claims on the `{proto.name}` protocol's runs "
            f"(docs/protocols.md): {proto.summary}; settings {', '.join(s.title for s in proto.settings)}. The layers: "
            + ", ".join(f"`{n}`" for n in LAYERS) + f", at n = {N_WANTED} seeds per cell (seeds 0-{N_WANTED - 1}; "
            f"the leaderboard reads the same runs, every seed, and asks n = {proto.seeds} of every cell).")


def precise_method() -> str:
    return (f"Each run also records its test accuracy after PreciseBN (every BN-type layer's statistics recomputed "
            f"on {PRECISE_BATCHES} clean training batches, as fvcore's update_bn_stats does). Mix runs recorded with "
            "noiseattack's PreciseBN on mixed batches also record it with the statistics recomputed on the same "
            "batches joined by the attack's foreign images (the training distribution); its columns appear once such "
            "runs exist. It tells the estimator from the distribution.")


REGIONS = ("scope", "status", "claims", "verdicts", "precise-method", "precise", "curves", "plots", "machines",
           "cost")


def load(args) -> dict[str, Any]:
    """The protocol's runs of the study's layers, each checked to be a run of it, the claims
    evaluated, their report (box plots and curves included), and the 150-step study's readings;
    nothing written."""
    proto = protocols.get(args.protocol)
    cells, records = load_runs(args.runs, proto)
    report = build_study_report(args.runs, None, norms=LAYERS) if records else None
    return {"proto": proto, "cells": cells, "records": records, "rows": evaluate(CLAIMS, cells),
            "old": old_readings(args.earlier), "report": report}


def _target(path: str) -> str:
    """A markdown link target: in angle brackets where the path has spaces or parentheses."""
    return f"<{path}>" if any(c in path for c in " ()<>") else path


def plots(args, s: dict[str, Any]) -> str:
    """The study's layers' report (report.md, overview, box plots and curves, PNG and SVG) into
    args.out, old plots removed; the region's body: the plots, linked from the doc."""
    report = s["report"]
    if report is None:  # an older report of runs no longer there would stand beside "No runs yet."
        if args.runs.is_dir():  # a runs dir without runs; a mistyped --runs removes nothing
            remove_report(args.out)
        return "No runs yet."
    report.write(args.out)
    report.prune(args.out)
    rel = Path(os.path.relpath(args.out, args.doc.parent)).as_posix()
    lines = [f"The study's layers only, every seed. The per-setting tables, each layer against `bn`, are in "
             f"[{rel}/report.md]({_target(rel + '/report.md')}) (their Holm adjustment is over these layers' "
             "comparisons, not the leaderboard's); SVG beside every PNG.", ""]
    for p in report.plots:
        lines += [f"![{p.title}]({_target(rel + '/' + p.filename)})", ""]
    return "\n".join(lines[:-1])


def write(args, s: dict[str, Any]) -> dict[str, str]:
    """claims.md, claims.csv and the study's report with its plots into args.out; the regions' bodies."""
    proto, cells, rows = s["proto"], s["cells"], s["rows"]
    write_claims(args.out, rows)
    return {"scope": scope(proto), "status": "\n".join(status(cells, proto)), "claims": claims_markdown(rows),
            "verdicts": "\n".join(side_by_side(rows, s["old"], proto)), "precise-method": precise_method(),
            "precise": "\n".join(precise(cells)), "curves": "\n".join(curves(cells, proto)),
            "plots": plots(args, s), "machines": "\n".join(by_machine(cells)),
            "cost": cost_markdown(s["records"]) if s["records"] else "No runs yet."}


STUDY = Study(
    prog="study_protocol_doc", description=__doc__.splitlines()[0], regions=REGIONS, load=load, write=write,
    options={"protocol": {"choices": sorted(STEMS), "default": "fmnist",
                          "help": "the leaderboard protocol whose runs the study reads (default: fmnist)"}},
    doc=lambda a: Path("docs") / f"{STEMS[a.protocol]}.md",  # docs/study-protocol.md, docs/study-protocol-gpu.md
    paths={"runs": (lambda a: Path("docs/leaderboard") / a.protocol / "runs",
                    "default: docs/leaderboard/<protocol>/runs (absent: no runs yet)"),
           "out": (lambda a: Path("docs") / STEMS[a.protocol],
                   "claims, report and plots go here; default: docs/study-protocol "
                   "(docs/study-protocol-gpu for fmnist-gpu)"),
           "earlier": (Path("docs/study-fmnist/claims.csv"), "the 150-step study's claims, for the side-by-side")},
    done="wrote {out}/ (claims, report, plots) and the tables in {doc}")


if __name__ == "__main__":
    sys.exit(run_study(STUDY))
