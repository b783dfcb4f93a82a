"""How far each foreign source of the mix attack lies from its primary dataset, in the primary's
normalized units: the foreign images' mean shift (mu_F - mu_P) / sigma_P and std ratio
sigma_F / sigma_P, per channel, where mu and sigma are per-channel pixel statistics in [0, 1].

    python scripts/source_shift.py --data-dir DATA                      # print the table
    python scripts/source_shift.py --data-dir DATA --doc docs/sources.md  # and write it into the doc

Our pairings are computed from the real data as noiseattack loads it (28x28 images zero-padded to
32x32, derived sources included); the paper's CIFAR-100 pairings from published statistics (see
PUBLISHED), once with MNIST's and FashionMNIST's published 28x28 statistics and once with ours
(padded), since how the paper resized them is not stated. With --doc, the table replaces the
region between `<!-- source-shift:begin -->` and `<!-- source-shift:end -->`; running it again
changes nothing. DATA must be writable (torchvision extracts the .gz files there).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from noiseattack.data import DataError, load_dataset  # noqa: E402
from noiseattack.report.render import update_region  # noqa: E402

REGION = "source-shift"  # <!-- source-shift:begin --> ... <!-- source-shift:end -->
Stats = tuple[tuple[float, ...], tuple[float, ...]]  # per-channel (mean, std) in [0, 1] pixel units
PUBLISHED: dict[str, Stats] = {  # train split, population statistics
    "CIFAR-100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "MNIST 28×28": ((0.1307,) * 3, (0.3081,) * 3),
    "FashionMNIST 28×28": ((0.2860,) * 3, (0.3530,) * 3),
}
OURS = (("fmnist", ("mnist", "mnist-inverted", "fmnist-inverted", "noise")),
        ("mnist", ("fmnist", "fmnist-inverted", "mnist-inverted", "noise")))
NAMES = {"mnist": "MNIST 32×32", "fmnist": "FashionMNIST 32×32", "mnist-inverted": "mnist-inverted",
         "fmnist-inverted": "fmnist-inverted", "noise": "noise"}


def shift(primary: Stats, foreign: Stats) -> tuple[list[float], list[float]]:
    """([(mu_F - mu_P) / sigma_P per channel], [sigma_F / sigma_P per channel])."""
    (mp, sp), (mf, sf) = primary, foreign
    return [(f - p) / s for f, p, s in zip(mf, mp, sp)], [f / s for f, s in zip(sf, sp)]


def _fmt(values: list[float], signed: bool, digits: int = 2) -> str:
    text = [f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}" for v in values]
    return text[0] if len(set(text)) == 1 else " / ".join(text)


def table(data_dir: Path) -> str:
    """The markdown table: our pairings (computed), then the paper's (published statistics)."""
    rows = []
    stats: dict[str, Stats] = {}
    for primary, extras in OURS:
        for name in (primary, *extras):
            if name not in stats:
                ds = load_dataset(name, data_dir)
                stats[name] = (ds.mean, ds.std)
        for extra in extras:
            rows.append((f"{NAMES[primary]} (ours)", NAMES[extra], "computed from the data", stats[primary],
                         stats[extra]))
    cifar = PUBLISHED["CIFAR-100"]
    for key, ours in (("MNIST 28×28", "mnist"), ("FashionMNIST 28×28", "fmnist")):
        rows.append(("CIFAR-100 (paper)", key, "published", cifar, PUBLISHED[key]))
        rows.append(("CIFAR-100 (paper)", NAMES[ours], "CIFAR-100 published, ours computed", cifar, stats[ours]))
    out = ["| primary | foreign source | statistics | mean shift (μ_F − μ_P) / σ_P | std ratio σ_F / σ_P |",
           "|---|---|---|---:|---:|"]
    for primary, foreign, source, ps, fs in rows:
        m, s = shift(ps, fs)
        out.append(f"| {primary} | {foreign} | {source} | {_fmt(m, True)} | {_fmt(s, False)} |")
    out += ["", "Per-channel statistics (mean, std in [0, 1] pixel units, population, training split): "
            + "; ".join(f"{NAMES.get(k, k)} {_fmt(list(v[0]), False, 4)}, {_fmt(list(v[1]), False, 4)}"
                        for k, v in stats.items())
            + "; " + "; ".join(f"{k} {_fmt(list(v[0]), False, 4)}, {_fmt(list(v[1]), False, 4)} (published)"
                               for k, v in PUBLISHED.items()) + ". Three values are R / G / B.", "", reading(stats)]
    return "\n".join(out)


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.1f}–{hi:.1f}" if f"{lo:.1f}" != f"{hi:.1f}" else f"{lo:.1f}"


def reading(stats: dict[str, Stats]) -> str:
    """What the table says, from its numbers: the paper's shifts (over channels, published and our
    padded statistics) against FashionMNIST's foreign sources here."""
    cifar = PUBLISHED["CIFAR-100"]
    paper = {k: [shift(cifar, s) for s in (PUBLISHED[pub], stats[k])]
             for k, pub in (("mnist", "MNIST 28×28"), ("fmnist", "FashionMNIST 28×28"))}
    dist = {k: [abs(v) for m, _ in pairs for v in m] for k, pairs in paper.items()}
    spread = [v for pairs in paper.values() for _, s in pairs for v in s]
    here = {k: shift(stats["fmnist"], stats[k]) for k in ("mnist", "mnist-inverted", "noise")}
    side = lambda m: "below" if m < 0 else "above"  # noqa: E731
    where = {k: " or ".join(sorted({side(v) for m, _ in pairs for v in m}, reverse=True))
             for k, pairs in paper.items()}  # "below", "above" or "below or above"
    text = [f"Reading it: in the paper, MNIST lies {_span(dist['mnist'])} σ {where['mnist']} CIFAR-100's mean "
            f"and FashionMNIST {_span(dist['fmnist'])} σ {where['fmnist']}, with a spread {_span(spread)} times CIFAR-100's "
            "(over the channels, with the published and with our padded statistics). With FashionMNIST as "
            "the primary:"]
    for k in ("mnist", "mnist-inverted", "noise"):
        m, s = here[k][0][0], here[k][1][0]  # grayscale: every channel alike
        near = ("nearer than" if abs(m) < min(dist["mnist"] + dist["fmnist"]) else
                "farther than" if abs(m) > max(dist["mnist"] + dist["fmnist"]) else "within the range of")
        text.append(f"`{k}` lies {abs(m):.2f} σ {side(m)} it, with a spread {s:.2f} times its ({near} the paper's "
                    "two sources);")
    text[-1] = text[-1].rstrip(";") + "."
    return " ".join(text) + (" These are statistics of the input pixels; the batch statistics each norm sees "
                             "are those of its layer's input, after convolutions, and shift accordingly but "
                             "not by these exact amounts.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("NOISEATTACK_DATA", "data")))
    ap.add_argument("--doc", type=Path, help="a markdown file whose source-shift region is replaced")
    args = ap.parse_args()
    try:
        return update_region(args.doc, REGION, lambda: table(args.data_dir), "source_shift")
    except DataError as e:
        print(f"source_shift: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
