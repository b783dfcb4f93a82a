"""Chance-level results: the one definition of a run "at chance", and how it is shown.

A classifier that ignores its input does best by always predicting the test set's most frequent class:
its accuracy is that class's share p of the n test images (10% on FashionMNIST's and CIFAR-10's
balanced test sets, 11.35% on MNIST's). A run is **at chance** when its final test accuracy is at most

    p + Z * 100 * sqrt(p (1 - p) / n)        (percent; Z = 3)

that is, within three binomial standard errors of always predicting the majority class, or below it (a
run that predicts one other class scores that class's share, below p). Z = 3 because a model that has
learned nothing but guesses with accuracy p per image exceeds the bound only about once in 700 runs
(one-sided normal tail 0.13%), while a run that has learned is missed only when it sits within
3 standard errors of chance: 0.9 points on 10,000 test images, 2.8 on 1,000. A run **predicts a single
class** when one class takes at least SINGLE_CLASS_SHARE (99%) of its predictions on the test set.
Both are measured at the run's final evaluation, on the test images it was evaluated on (its test
subset, where it has one); a run is flagged when either holds (`is_chance`).

Every run record since this module exists holds them (`"chance"`, see `measure`). A record from before
has no predictions: its accuracy is judged against the majority share of its dataset's full test set
as the registry knows it (`noiseattack.datasets`), with n its test subset or the full test set, and
whether it predicted a single class is unknown (None). (A random test subset's largest class can hold
a little more than the full set's share; its sampling spread is of the order of the binomial margin.)

A record's chance is a result, not part of its config: it changes no run key. Summaries, the report,
its plots and the leaderboards count the flagged runs and mark a cell holding any with MARK, explained
by `legend()`; a comparison whose two sides both sit at chance (more than half of each side's runs,
`mostly`) is not informative, whatever its p-value (`noiseattack.report.stats`).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from .datasets import DATASETS

Z = 3.0  # binomial standard errors above the majority share
SINGLE_CLASS_SHARE = 99.0  # % of the test predictions in one class: the run predicts a single class
MARK = "†"


def threshold(majority_share: float, n_test: int, z: float = Z) -> float:
    """The highest accuracy (%) at chance: majority_share (%) + z binomial standard errors on n_test images."""
    p = majority_share / 100.0
    return majority_share + z * 100.0 * math.sqrt(p * (1.0 - p) / n_test)


def measure(final_acc: float, label_counts: Sequence[int], pred_counts: Sequence[int]) -> dict[str, Any]:
    """A finished run's `"chance"` record: from the test labels' class counts and the final evaluation's
    counts of predicted classes (over the same images)."""
    n = int(sum(label_counts))
    share = 100.0 * max(label_counts) / n
    top = 100.0 * max(pred_counts) / max(1, int(sum(pred_counts)))
    limit = threshold(share, n)
    return {"majority_share": round(share, 4), "n_test": n, "threshold": round(limit, 4),
            "at_chance": bool(final_acc <= limit), "top_pred_share": round(top, 4),
            "single_class": bool(top >= SINGLE_CLASS_SHARE)}


def registry_level(dataset: str, test_subset: int | None) -> tuple[float, int] | None:
    """(majority share %, test images) of a dataset's test set as the registry knows it; None when unknown."""
    info = DATASETS.get(dataset)
    if info is None or not info.test_images:
        return None
    return 100.0 * info.test_largest_class / info.test_images, int(test_subset or info.test_images)


def judge(rec: dict[str, Any]) -> dict[str, Any] | None:
    """A run's chance: its record's `"chance"`, or for a record from before it existed, the judgement from
    the registry (single_class None: unknown). None where there is nothing to judge: a run without a
    finite final accuracy (diverged, failed), or an older record of a dataset the registry does not know."""
    acc = rec.get("final_acc")
    if not isinstance(acc, (int, float)) or not math.isfinite(acc):
        return None
    if isinstance(rec.get("chance"), dict):
        return {**rec["chance"], "measured": True}
    cfg = rec.get("config") or {}
    level = registry_level(str(cfg.get("dataset")), cfg.get("test_subset"))
    if level is None:
        return None
    share, n = level
    limit = threshold(share, n)
    return {"majority_share": round(share, 4), "n_test": n, "threshold": round(limit, 4),
            "at_chance": bool(acc <= limit), "top_pred_share": None, "single_class": None, "measured": False}


def is_chance(rec: dict[str, Any]) -> bool:
    """Whether a run is flagged: at chance, or predicting a single class (False where unknown)."""
    j = judge(rec)
    return bool(j and (j["at_chance"] or j.get("single_class")))


def count(records: Iterable[dict[str, Any]]) -> int:
    """How many of the runs are flagged (`is_chance`)."""
    return sum(is_chance(r) for r in records)


def mostly(records: Sequence[dict[str, Any]]) -> bool:
    """Whether more than half of the runs (a side of a comparison, its finished runs) are flagged."""
    return bool(records) and 2 * count(records) > len(records)


def level(records: Iterable[dict[str, Any]]) -> tuple[float, float] | None:
    """(majority share %, threshold %) the runs are judged against (the most common pair, should they
    differ); None where none of them can be judged."""
    pairs = [(j["majority_share"], j["threshold"]) for j in map(judge, records) if j is not None]
    return max(set(pairs), key=lambda pair: (pairs.count(pair), pair)) if pairs else None


def run_note(rec: dict[str, Any]) -> str:
    """What a run's line adds: ` (at chance: majority class 10.00%)`, and `; one class predicted for
    100.0% of the test images` where it predicts a single class; "" for a run that is neither."""
    j = judge(rec)
    if not j or not (j["at_chance"] or j.get("single_class")):
        return ""
    parts = [f"at chance: majority class {j['majority_share']:.2f}%"] if j["at_chance"] else []
    if j.get("single_class"):
        parts.append(f"one class predicted for {j['top_pred_share']:.1f}% of the test images")
    return f" ({'; '.join(parts)})"


def definition() -> str:
    """What "at chance" means, in one clause (legends, READMEs of generated docs)."""
    return (f"final accuracy within {Z:g} binomial standard errors of always predicting the test set's most frequent "
            f"class (or below it), or one class predicted for ≥ {SINGLE_CLASS_SHARE:g}% of the test images")


def legend(what: str = "a cell") -> str:
    """The legend line of MARK: `† a mean with runs at chance: ...`."""
    return f"{MARK} {what} with runs at chance: {definition()}; such runs measure nothing learned."
