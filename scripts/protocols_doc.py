"""docs/protocols.md: how the `fmnist` protocol was chosen, generated from the pilots' committed runs.

    python scripts/protocols_doc.py                 # rewrites docs/protocols.md
    python scripts/protocols_doc.py --out /tmp/p.md # elsewhere (to look before committing)

Every number comes from the records under docs/protocols/pilot/runs (CPU), docs/protocols/pilot-gpu/runs
(GPU) and docs/leaderboard/fmnist/runs (the protocol's own runs, as they land); the text around them
is fixed here. tests/test_protocols_doc.py checks that the committed doc is what this writes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from noiseattack import protocols  # noqa: E402
from noiseattack.leaderboard.board import machine_label, read_records  # noqa: E402
from earlier_study import clean_bn_text  # noqa: E402

PILOT_CPU = REPO / "docs" / "protocols" / "pilot" / "runs"
PILOT_GPU = REPO / "docs" / "protocols" / "pilot-gpu" / "runs"
BOARD = REPO / "docs" / "leaderboard" / "fmnist" / "runs"


def label(c: dict) -> str:
    """A pilot cell's setting and recipe variant, from a record's config."""
    if c["attack"] == "constant":
        s = f"constant ({c['alpha']:g}, {c['beta']:g})"
    elif c["attack"] == "mix":
        s = f"mix {c['extra']} k={c['k']}"
    else:
        s = "clean"
    variant = [f"{c['epochs']} epochs", f"width {c['width']:g}"]
    if c.get("augment", True):
        variant.append("crops and flips")
    if c.get("label_smoothing"):
        variant.append(f"label smoothing {c['label_smoothing']:g}")
    return f"{s} | {', '.join(variant)}"


def cells(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        if r.get("status") == "finished":
            out[(label(r["config"]), r["norm"])].append(r)
    return out


def fmt(values: list[float]) -> str:
    m = statistics.mean(values)
    return f"{m:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{m:.2f}"


def table(groups: dict[tuple[str, str], list[dict]], keep=lambda lab, norm: True) -> list[str]:
    lines = ["| setting | recipe | layer | n | final test accuracy (%) | machine |", "|---|---|---|---:|---:|---|"]
    for (lab, norm), recs in sorted(groups.items()):
        if not keep(lab, norm):
            continue
        setting, recipe = lab.split(" | ")
        machines = ", ".join(sorted({machine_label(r) for r in recs}))
        lines.append(f"| {setting} | {recipe} | `{norm}` | {len(recs)} | {fmt([r['final_acc'] for r in recs])} "
                     f"| {machines} |")
    return lines


def doubling(groups) -> list[str]:
    """Each setting's BN at 3 epochs beside 6, where the pilots have both."""
    lines = ["| setting | layer | 3 epochs (n) | 6 epochs (n) | doubling adds | machine |", "|---|---|---:|---:|---:|---|"]
    for (lab, norm), recs in sorted(groups.items()):
        setting, recipe = lab.split(" | ")
        if not recipe.startswith("3 epochs, width 0.5") or "flips" in recipe or "smoothing" in recipe:
            continue
        twice = groups.get((f"{setting} | {recipe.replace('3 epochs', '6 epochs')}", norm))
        if not twice:
            continue
        a, b = [r["final_acc"] for r in recs], [r["final_acc"] for r in twice]
        lines.append(f"| {setting} | `{norm}` | {fmt(a)} ({len(a)}) | {fmt(b)} ({len(b)}) | "
                     f"{statistics.mean(b) - statistics.mean(a):+.2f} | {', '.join(sorted({machine_label(r) for r in recs + twice}))} |")
    return lines


def last_epoch(groups) -> list[str]:
    """The candidate's curves: mean test accuracy after each epoch, and what the last epoch added."""
    lines = ["| setting | layer | n | after epoch 1 | epoch 2 | epoch 3 | last epoch adds |", "|---|---|---:|---:|---:|---:|---:|"]
    for (lab, norm), recs in sorted(groups.items()):
        setting, recipe = lab.split(" | ")
        if recipe != "3 epochs, width 0.5":
            continue
        acc = [statistics.mean(r["history"][e]["test_acc"] for r in recs) for e in range(3)]
        lines.append(f"| {setting} | `{norm}` | {len(recs)} | {acc[0]:.2f} | {acc[1]:.2f} | {acc[2]:.2f} | "
                     f"{acc[2] - acc[1]:+.2f} |")
    return lines


def cost(records: list[dict]) -> list[str]:
    """Wall seconds per run (the records' own: training and evaluation, on a machine running two runs
    side by side), by setting and machine."""
    by: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        if r.get("status") == "finished" and r["config"]["epochs"] == 3 and r["norm"] == "bn":
            by[(label(r["config"]).split(" | ")[0], machine_label(r))].append(r["wall_time_s"])
    lines = ["| setting | machine | runs | median wall s per run |", "|---|---|---:|---:|"]
    for (s, m), v in sorted(by.items()):
        lines.append(f"| {s} | {m} | {len(v)} | {statistics.median(v):.0f} |")
    return lines


def build() -> str:
    cpu = read_records([PILOT_CPU]) if PILOT_CPU.is_dir() else []
    gpu = read_records([PILOT_GPU]) if PILOT_GPU.is_dir() else []
    board = read_records([BOARD]) if BOARD.is_dir() else []
    proto = protocols.get("fmnist")
    definition = json.dumps(proto.describe(), indent=1)
    out = [
        "# The `fmnist` protocol: how it was chosen",
        "",
        "<!-- generated by `python scripts/protocols_doc.py` from the committed runs; do not edit -->",
        "",
        "The earlier FashionMNIST study (docs/study-fmnist.md) trained 150 SGD steps on 2000 images: clean BN ended "
        f"{clean_bn_text()}, in the early transient. A protocol for a standing leaderboard must train past it, and stay cheap "
        "enough for 2-core CPUs to run hundreds of runs. The criteria: clean BN at >= 89% mean test accuracy; past "
        "the transient (doubling the epochs adds little, to clean and to attacked BN, and the last epoch's curves are "
        "flat); about 300 CPU-seconds per run in fp32 at one thread; and a mix setting that moves BN at all.",
        "",
        "**The candidate**: ResNet-20 at half width (8/16/32 channels) on all 60,000 FashionMNIST training images "
        "for 3 epochs (1404 steps of 128), lr 0.1 falling linearly to 0 per step (`--lr-schedule linear`), "
        "momentum 0.9, weight decay 1e-4, no augmentation, evaluated on all 10,000 test images. A linear decay to "
        "zero reaches a flat end in few steps; half width costs less than half of full width's step on these CPUs (compare the harness's img/s in "
        "docs/bench/compile-avx512-amd-t1.txt, full width at one thread, with the clean bn rounds of "
        "docs/bench/compile-protocol-fmnist-avx512-amd.txt, half width at one thread).",
        "",
        "## The CPU pilot",
        "",
        "One seed per cell (docs/protocols/pilot-*.toml; these runs shared the machine with other work, so their "
        "wall times are upper bounds).",
        "",
        *table(cells(cpu)),
        "",
        "## The GPU pilot: which mix setting moves BN",
        "",
        "BN and IEBN, three seeds per cell, on an NVIDIA H200 in fp32 (docs/protocols/pilot-gpu.toml; GPU runs "
        "are not pooled with CPU runs, but they answer which settings are informative).",
        "",
        *table(cells(gpu)),
        "",
        "## Past the transient",
        "",
        "What doubling the epochs (6 instead of 3, the same schedule stretched) adds:",
        "",
        *doubling(cells(cpu + gpu)),
        "",
        "The candidate's curves (mean test accuracy after each epoch):",
        "",
        *last_epoch(cells(cpu + gpu)),
        "",
        "## Cost",
        "",
        *cost(cpu + board),
        "",
        "## The protocol",
        "",
        "```json",
        definition,
        "```",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "protocols.md")
    args = ap.parse_args()
    args.out.write_text(build())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
