"""A study's pre-declared claims (noiseattack.report.claims): estimates and p-values recomputed here
with scipy, Holm across the family, the readings, the gap metric, and the one-training check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from noiseattack.report import ReportError
from noiseattack.report.claims import Claim, claims_csv, claims_markdown, cost_markdown, evaluate, load_cells, value

from test_report import record, runs, write_exp



def test_mean_claims_match_welch_and_holm_adjusts_the_family():
    a, b, c = [80.0, 81.0, 82.5, 81.5], [70.0, 72.0, 71.0, 69.5], [81.0, 80.0, 82.0, 81.0]
    cells = {("x", "bn+se"): runs("bn+se", a), ("x", "bn"): runs("bn", b), ("y", "bn"): runs("bn", c)}
    claims = (Claim("up", "q", "se above bn", "mean", (("x", "bn+se"), ("x", "bn")), (1, -1), 1),
              Claim("down", "q", "se below bn", "mean", (("x", "bn+se"), ("x", "bn")), (1, -1), -1),
              Claim("same", "q", "bn at y differs from se at x", "mean", (("y", "bn"), ("x", "bn+se")), (1, -1), 0))
    rows = evaluate(claims, cells)
    p_up = stats.ttest_ind(a, b, equal_var=False).pvalue
    p_same = stats.ttest_ind(c, a, equal_var=False).pvalue
    assert rows[0]["estimate"] == pytest.approx(np.mean(a) - np.mean(b)) and rows[0]["p"] == pytest.approx(p_up)
    assert rows[2]["estimate"] == pytest.approx(np.mean(c) - np.mean(a)) and rows[2]["p"] == pytest.approx(p_same)
    # Holm by hand: the smaller p (p_up, twice) times 3, then the larger (p_same) times 1, running maximum
    assert p_up < p_same
    expect = [min(1, 3 * p_up), min(1, 3 * p_up), min(1, max(3 * p_up, p_same))]
    assert [r["p_holm"] for r in rows] == pytest.approx(expect)
    assert [r["reading"] for r in rows] == ["supported", "contradicted", "not distinguishable"]
    assert rows[0]["n"] == "4/4" and rows[0]["ci_low"] > 0


def test_gap_metric_is_last_train_minus_final_test():
    rec = record("bn", 0, 77.0, attack="clean")  # history: train_acc 50 + epoch, 3 epochs
    assert value(rec, "gap") == pytest.approx(53.0 - 77.0) and value(rec, "final_acc") == 77.0
    rec["history"][1]["train_acc"] = 99.0  # the last epoch's, not the best epoch's
    assert value(rec, "gap") == pytest.approx(53.0 - 77.0)
    del rec["history"][-1]["train_acc"]
    assert math.isnan(value(rec, "gap"))
    recs = [record("bn", s, acc, attack="clean") for s, acc in enumerate([60.0, 61.0, 63.0])]
    wide = [record("bn", s, acc, attack="clean") for s, acc in enumerate([40.0, 45.0, 41.0])]
    (row,) = evaluate((Claim("g", "q", "gap larger", "mean", (("w", "bn"), ("n", "bn")), (1, -1), metric="gap"),),
                      {("w", "bn"): wide, ("n", "bn"): recs})
    g_wide, g_narrow = [53 - x for x in (40, 45, 41)], [53 - x for x in (60, 61, 63)]
    assert row["estimate"] == pytest.approx(np.mean(g_wide) - np.mean(g_narrow))
    assert row["p"] == pytest.approx(stats.ttest_ind(g_wide, g_narrow, equal_var=False).pvalue)


def test_too_few_runs_are_not_testable_and_render():
    cells = {("x", "bn"): runs("bn", [1.0, 2.0]), ("x", "gn"): runs("gn", [1.0, 2.0, 3.0])}
    claims = (Claim("v", "q", "bn varies more than gn", "var", (("x", "bn"), ("x", "gn"))),
              Claim("m", "q", "missing cell", "mean", (("x", "bn"), ("z", "bn")), (1, -1)))
    rows = evaluate(claims, cells)
    assert [r["reading"] for r in rows] == ["not testable (n < 3)"] * 2 and rows[1]["n"] == "2/0"
    md, csv_text = claims_markdown(rows), claims_csv(rows)
    assert md.count("\n") == 3 and "| v | bn varies more than gn | 2/3 | — |" in md
    assert csv_text.splitlines()[0].startswith("id,question,claim,kind,metric,n,")


@pytest.mark.parametrize("kw", [dict(kind="median"), dict(metric="loss"), dict(direction=2),
                                dict(weights=(1,)), dict(kind="var", cells=(("x", "bn"),) * 3)])
def test_a_malformed_claim_is_refused(kw):
    args = dict(id="c", question="q", claim="t", kind="mean", cells=(("x", "bn"), ("y", "bn")), weights=(1, -1))
    with pytest.raises(ValueError, match="claim c"):
        Claim(**{**args, **kw})


def test_load_cells_groups_by_label_and_refuses_mixed_trainings(tmp_path):
    write_exp(tmp_path / "runs", "a", runs("bn", [80.0, 81.0, None], attack="clean"))
    write_exp(tmp_path / "runs", "b", runs("bn", [70.0, 71.0], attack="clean", lr=0.05))
    cells, records = load_cells(tmp_path / "runs", lambda cfg: f"lr{cfg.lr:g}", ("lr",))
    assert sorted(cells) == [("lr0.05", "bn"), ("lr0.1", "bn")] and len(records) == 5
    assert [r["final_acc"] for r in cells[("lr0.1", "bn")]] == [80.0, 81.0]  # the diverged run is no cell's
    with pytest.raises(ReportError, match="differ in more than epochs"):
        load_cells(tmp_path / "runs", lambda cfg: "all", ("epochs",))
    assert not math.isnan(value(cells[("lr0.05", "bn")][0], "gap"))


def test_cost_names_the_cpu_kinds_the_records_name():
    recs = [dict(record("bn", s, 80.0, attack="clean"), wall_time_s=w, machine=m) for s, (w, m) in enumerate([
        (100.0, {"threads": 1, "cpu": "EPYC", "cpu_capability": "AVX2"}),
        (300.0, {"threads": 1, "cpu": "EPYC", "cpu_capability": "AVX2"}),
        (200.0, {"threads": 1})])]
    text = cost_markdown([{**r, "versions": {"torch": "2.x"}} for r in recs])
    assert "CPU: EPYC (AVX2): 2 runs; not recorded: 1 run." in text
    assert "**0.17 CPU-hours**" in text and "| bn | 3 | 200 |" in text  # 600 s; mean 200 s
    # Where runs recorded CPU times, those count (not the wall times of runs that waited for a CPU).
    recs[1]["cpu_time_s"] = 120.0
    text = cost_markdown([{**r, "versions": {"torch": "2.x"}} for r in recs])
    assert "CPU: EPYC (AVX2): 2 runs, 0.06 h; not recorded: 1 run, 0.06 h." in text  # 100 + 120 s; 200 s
    assert "**0.12 CPU-hours**" in text and "CPU times where recorded" in text and "| bn | 3 | 140 |" in text
    recs[1]["machine"] = {**recs[1]["machine"], "threads": 2}  # at two threads CPU time adds theirs up: wall time
    text = cost_markdown([{**r, "versions": {"torch": "2.x"}} for r in recs])
    assert "**0.17 CPU-hours**" in text and "CPU times where recorded" not in text and "| bn | 3 | 200 |" in text


def test_a_variance_claim_uses_the_permutation_test_and_its_interval():
    from noiseattack.report import permutation_variance_test, variance_ratio_ci

    wide, narrow = [70.0, 80.0, 75.0, 62.0, 85.0], [80.0, 80.5, 79.5, 80.2, 79.9]
    cells = {("a", "bn"): runs("bn", wide), ("a", "iebn"): runs("iebn", narrow)}
    (row,) = evaluate((Claim("v", "q", "bn varies more", "var", (("a", "bn"), ("a", "iebn"))),), cells)
    ratio, lo, hi = variance_ratio_ci(wide, narrow)
    assert row["estimate"] == pytest.approx(np.var(wide, ddof=1) / np.var(narrow, ddof=1)) == pytest.approx(ratio)
    assert (row["ci_low"], row["ci_high"]) == (lo, hi) and row["p"] == permutation_variance_test(wide, narrow)
    assert row["reading"] == ("supported" if row["p"] < 0.05 else "not distinguishable")
    assert row["p"] < 0.05 and row["reading"] == "supported"  # 5 against 5 with a ratio of ~400


def test_untestable_claims_stay_in_the_holm_family_and_say_why():
    good, flat = [80.0, 81.0, 82.5, 81.5], [70.0, 70.0, 70.0, 70.0]
    cells = {("x", "a"): runs("a", good), ("x", "b"): runs("b", [60.0, 61.0, 62.0, 61.5]),
             ("x", "c"): runs("c", flat), ("x", "d"): runs("d", flat)}
    claims = (Claim("t", "q", "a above b", "mean", (("x", "a"), ("x", "b")), (1, -1)),
              Claim("few", "q", "a above e", "mean", (("x", "a"), ("x", "e")), (1, -1)),
              Claim("flat", "q", "c differs from d", "mean", (("x", "c"), ("x", "d")), (1, -1), 0),
              Claim("inf", "q", "a varies more than c", "var", (("x", "a"), ("x", "c"))))
    rows = evaluate(claims, cells)
    assert [r["reading"] for r in rows[1:3]] == ["not testable (n < 3)", "not testable (no variance)"]
    assert rows[1]["p_holm"] is None and rows[2]["p_holm"] is None
    p = stats.ttest_ind(good, [60.0, 61.0, 62.0, 61.5], equal_var=False).pvalue
    assert rows[0]["p_holm"] == pytest.approx(min(1, 4 * p))  # m = 4 declared claims, not 2 testable ones
    assert rows[3]["estimate"] == math.inf and rows[3]["p"] is not None  # a constant cell: an infinite ratio
    assert "| ratio ∞ |" in claims_markdown(rows)  # no interval for a constant cell
