"""`noiseattack report`: statistics over seeds, verdicts against BN, and plots, across experiments.

Every `results.jsonl` under the given dirs is read; runs are grouped by (dataset, model, attack,
setting, norm), where the model includes the width and the training length (train subset,
epochs), so that runs of different length are never pooled. When two experiments of the same
(dataset, model) differ in any other field of their identity (lr, batch size, milestones, test
subset, ...), a `variant` label names the differing fields and keeps them apart as well.

Per group, over the finished runs: n, mean, std and variance (n-1), the 95% t-interval of the
mean, min, max; against BN in the same (dataset, model, variant, attack, setting): the
difference of the means, Welch's t-test and the Brown-Forsythe test of equal variance
(`scipy.stats.levene(center="median")`), both two-sided, alpha 0.05, no correction for multiple
comparisons. With fewer than 3 finished runs (in the row or in BN) no interval, p-value or
verdict is given. Diverged runs (in results.jsonl) and unfinished ones (a checkpoint in `ckpt/`
without a record) are counted in their own columns and listed, never part of the statistics.

Outputs (in the output dir): report.md, report.csv, overview.md and overview.csv (one row per
norm, one column per setting: `noiseattack.overview`), and PNG plots: per attack family a box
plot of final accuracy per norm and setting with the seeds overlaid, and per setting the test
accuracy per epoch (mean +- std over seeds) of each norm.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats

from .config import ConfigError, train_config_from_dict
from .zoo import PAPER, attention_names, norm_names
from . import overview
from .fileio import atomic_write, atomic_write_text
from .results import RESULTS_FILE, read_results

ALPHA = 0.05
MIN_N = 3  # fewer finished runs than this: no interval, no test, no verdict
REFERENCE = "bn"
NOT_MEANINGFUL = "n<3: statistics not meaningful"
NO_REFERENCE = "no BN runs to compare with"
ATTACK_ORDER = ("clean", "constant", "mix")
FORMATS = ("md", "csv", "json")

COLUMNS = (
    "dataset", "model", "variant", "attack", "setting", "norm", "n", "diverged", "unfinished",
    "mean", "std", "var", "ci95_low", "ci95_high", "min", "max", "diff_vs_bn", "welch_p", "bf_p",
    "accuracy_verdict", "stability_verdict", "seeds", "experiments",
)


class ReportError(ConfigError):
    """Bad input for the report (no such dir, no results). One line, meant for stderr."""


# --------------------------------------------------------------------------- statistics


def describe(values: Iterable[float], confidence: float = 0.95) -> dict[str, Any]:
    """n, mean, std and var (n-1), the `confidence` t-interval of the mean, min, max.
    Undefined values (std of one value, ...) are None."""
    x = np.asarray(list(values), dtype=float)
    n = len(x)
    out: dict[str, Any] = {"n": n, "mean": None, "std": None, "var": None, "ci95_low": None, "ci95_high": None,
                           "min": None, "max": None}
    if n == 0:
        return out
    mean = float(x.mean())
    out.update(mean=mean, min=float(x.min()), max=float(x.max()))
    if n >= 2:
        std = float(x.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
        out.update(std=std, var=float(x.var(ddof=1)), ci95_low=mean - half, ci95_high=mean + half)
    return out


def _nan_to_none(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def welch_test(a: Sequence[float], b: Sequence[float]) -> tuple[float | None, float | None]:
    """(t, two-sided p) of Welch's unequal-variance t-test of mean(a) = mean(b); None where undefined
    (both samples constant)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(np.asarray(a, float), np.asarray(b, float), equal_var=False)
    return _nan_to_none(res.statistic), _nan_to_none(res.pvalue)


def variance_test(a: Sequence[float], b: Sequence[float]) -> tuple[float | None, float | None]:
    """(W, p) of the Brown-Forsythe test of equal variance (Levene's test centred on the median);
    None where undefined (no spread in either sample)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.levene(np.asarray(a, float), np.asarray(b, float), center="median")
    return _nan_to_none(res.statistic), _nan_to_none(res.pvalue)


def fmt_p(p: float | None) -> str:
    if p is None:
        return "undefined"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def compare(values: Sequence[float], reference: Sequence[float], alpha: float = ALPHA) -> dict[str, Any]:
    """A norm's final accuracies against BN's: the difference of the means, Welch's p, the
    Brown-Forsythe p, and a plain-language verdict on accuracy and on stability (variance)."""
    a, b = np.asarray(values, float), np.asarray(reference, float)
    out: dict[str, Any] = {"diff_vs_bn": float(a.mean() - b.mean()) if len(a) and len(b) else None,
                           "welch_p": None, "bf_p": None}
    if len(a) < MIN_N or len(b) < MIN_N:
        out.update(accuracy_verdict=NOT_MEANINGFUL, stability_verdict=NOT_MEANINGFUL)
        return out
    _, p = welch_test(a, b)
    _, q = variance_test(a, b)
    out.update(welch_p=p, bf_p=q)
    if p is None:
        out["accuracy_verdict"] = "not testable (no spread in either group)"
    elif p < alpha:
        out["accuracy_verdict"] = "better than BN" if a.mean() > b.mean() else "worse than BN"
    else:
        out["accuracy_verdict"] = f"no significant difference (p={fmt_p(p)})"
    if q is None:
        out["stability_verdict"] = "stability not testable (no spread in either group)"
    elif q < alpha:
        out["stability_verdict"] = "more stable" if a.var(ddof=1) < b.var(ddof=1) else "less stable"
    else:
        out["stability_verdict"] = f"stability not distinguishable (p={fmt_p(q)})"
    return out


# --------------------------------------------------------------------------- collecting runs


@dataclass(frozen=True)
class GroupKey:
    dataset: str
    model: str  # resnet<depth>[w<width>][-n<train_subset>]-e<epochs>
    variant: str  # the other identity fields where experiments of this (dataset, model) differ; usually ""
    attack: str
    setting: str  # clean / a2_b1 / mnist_k32
    norm: str

    @property
    def context(self) -> tuple[str, str, str, str, str]:
        """Everything but the norm: the rows compared with one another."""
        return self.dataset, self.model, self.variant, self.attack, self.setting


@dataclass
class Group:
    key: GroupKey
    order: tuple  # sort key of the setting: (alpha, beta) or (extra, k)
    finished: list[dict[str, Any]] = field(default_factory=list)  # records
    diverged: list[dict[str, Any]] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # "<experiment dir>/ckpt/<run id>.pt"
    experiments: set[str] = field(default_factory=set)

    @property
    def accs(self) -> list[float]:
        return [float(r["final_acc"]) for r in self.finished]


_MODEL_FIELDS = ("dataset", "attack", "alpha", "beta", "extra", "k", "depth", "width", "epochs", "train_subset")
_CKPT_RE = re.compile(r"^(?P<norm>.+)-s(?P<seed>-?\d+)\.pt$")


def model_label(cfg: dict[str, Any]) -> str:
    label = f"resnet{cfg['depth']}" + (f"w{cfg['width']}" if cfg.get("width", 1) != 1 else "")
    if cfg.get("train_subset"):
        label += f"-n{cfg['train_subset']}"
    return label + f"-e{cfg['epochs']}"


def _identity(cfg: dict[str, Any]) -> tuple[dict[str, Any], str, tuple]:
    """(identity, setting label, setting sort key) of a flat config dict (a record's `config`)."""
    t = train_config_from_dict(cfg)
    ident = t.identity()
    if t.attack.value == "constant":
        order: tuple = (t.alpha, t.beta)
    elif t.attack.value == "mix":
        order = (t.extra or "", t.k)
    else:
        order = ()
    return ident, t.setting_label(), order


def find_experiment_dirs(dirs: Sequence[str | Path]) -> list[Path]:
    """Every experiment dir under `dirs`, recursively: one holding results.jsonl, or a config.json
    and a checkpoint (its first run in progress). A dir that does not exist, or holds no
    results.jsonl, raises ReportError."""
    if not dirs:
        raise ReportError("no runs dir given")
    found: dict[Path, None] = {}
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise ReportError(f"runs dir '{d}' does not exist")
        if not d.is_dir():
            raise ReportError(f"'{d}' is not a directory")
        files = sorted(d.rglob(RESULTS_FILE))
        if not files:
            raise ReportError(f"'{d}' holds no {RESULTS_FILE} (no experiment has finished a run there yet)")
        for f in files:
            found.setdefault(f.parent.resolve(), None)
        for ck in sorted(d.rglob("ckpt/*.pt")):
            exp_dir = ck.parent.parent
            if (exp_dir / "config.json").is_file():
                found.setdefault(exp_dir.resolve(), None)
    return list(found)


def _dir_setting(exp_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The setting of an experiment dir: from config.json, else from one of its records."""
    try:
        return json.loads((exp_dir / "config.json").read_text())["setting"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        pass
    for r in records:
        if isinstance(r.get("config"), dict):
            return r["config"]
    return None


def collect(exp_dirs: Sequence[Path]) -> tuple[list[Group], list[str]]:
    """Group the runs of the experiment dirs; returns the groups and warnings (lines)."""
    warn: list[str] = []
    raw: list[tuple[dict[str, Any], dict[str, Any], Path]] = []  # config, record, experiment dir
    pending: list[tuple[dict[str, Any], str, Path]] = []  # cfg, ckpt path, dir (unfinished runs)
    seen_keys: dict[str, Path] = {}
    duplicates = 0
    for exp_dir in exp_dirs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            records = read_results(exp_dir)
        warn += [str(w.message) for w in caught]
        for rec in records:
            if rec["key"] in seen_keys:
                duplicates += 1
                continue
            seen_keys[rec["key"]] = exp_dir
            cfg = rec.get("config")
            if not isinstance(cfg, dict) or "norm" not in rec:
                warn.append(f"{exp_dir / RESULTS_FILE}: a record without a config (key {rec['key']}) is ignored")
                continue
            raw.append((cfg, rec, exp_dir))
        done_ids = {f"{r.get('norm')}-s{r.get('seed')}" for r in records}
        ckpts = sorted((exp_dir / "ckpt").glob("*.pt")) if (exp_dir / "ckpt").is_dir() else []
        setting = _dir_setting(exp_dir, records)
        for ck in ckpts:
            m = _CKPT_RE.match(ck.name)
            if m is None or ck.stem in done_ids:
                continue
            if setting is None:
                warn.append(f"{ck}: an unfinished run whose setting is unknown (no config.json) is not counted")
                continue
            pending.append(({**setting, "norm": m["norm"], "seed": int(m["seed"])}, str(ck), exp_dir))
    if duplicates:
        warn.append(f"{duplicates} run record(s) found in more than one experiment dir (same key): counted once")

    # Identities, and the variant labels of (dataset, model) pairs whose other fields differ.
    entries = []
    for cfg, rec, exp_dir in raw:
        try:
            ident, setting, order = _identity(cfg)
        except (ValueError, TypeError, KeyError) as e:
            warn.append(f"{exp_dir / RESULTS_FILE}: unreadable config ({e}); record {rec['key']} is ignored")
            continue
        entries.append((ident, setting, order, rec["norm"], rec, None, exp_dir))
    for cfg, ck, exp_dir in pending:
        try:
            ident, setting, order = _identity(cfg)
        except (ValueError, TypeError, KeyError) as e:
            warn.append(f"{exp_dir}/config.json: unreadable setting ({e}); unfinished run {ck} is not counted")
            continue
        entries.append((ident, setting, order, cfg["norm"], None, ck, exp_dir))

    rests: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for ident, *_ in entries:
        rest = {k: v for k, v in ident.items() if k not in _MODEL_FIELDS}
        rests[(ident["dataset"], model_label(ident))][json.dumps(rest, sort_keys=True)] = rest
    variant_of: dict[tuple[str, str, str], str] = {}
    for dm, variants in rests.items():
        if len(variants) == 1:
            variant_of[(*dm, next(iter(variants)))] = ""
            continue
        differing = sorted(k for k in set().union(*variants.values())
                           if len({json.dumps(v.get(k)) for v in variants.values()}) > 1)
        for blob, rest in variants.items():
            variant_of[(*dm, blob)] = ",".join(f"{k}={_short(rest.get(k))}" for k in differing)

    groups: dict[GroupKey, Group] = {}
    for ident, setting, order, norm, rec, ck, exp_dir in entries:
        model = model_label(ident)
        blob = json.dumps({k: v for k, v in ident.items() if k not in _MODEL_FIELDS}, sort_keys=True)
        variant = variant_of[(ident["dataset"], model, blob)]
        key = GroupKey(ident["dataset"], model, variant, ident["attack"], setting, norm)
        g = groups.setdefault(key, Group(key, order))
        g.experiments.add(exp_dir.name)
        if ck is not None:
            g.unfinished.append(ck)
        elif rec["status"] == "finished" and _finite(rec.get("final_acc")):
            g.finished.append(rec)
        else:
            g.diverged.append(rec)
    return sorted(groups.values(), key=_group_sort_key), warn


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _short(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "/".join(_short(x) for x in v) or "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _known_order() -> tuple[str, ...]:
    """The paper's four, the other registered norms, then bn+ATTN: the order of rows and colours."""
    return tuple(dict.fromkeys(PAPER + norm_names() + tuple(f"bn+{a}" for a in attention_names())))


def _norm_rank(norm: str) -> tuple[int, str]:
    known = _known_order()
    return (known.index(norm), norm) if norm in known else (len(known), norm)


def _attack_rank(attack: str) -> tuple[int, str]:
    return (ATTACK_ORDER.index(attack), attack) if attack in ATTACK_ORDER else (len(ATTACK_ORDER), attack)


def _group_sort_key(g: Group) -> tuple:
    k = g.key
    return (k.dataset, k.model, k.variant, _attack_rank(k.attack), g.order, k.setting, _norm_rank(k.norm))


# --------------------------------------------------------------------------- rows


def build_rows(groups: Sequence[Group], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """One row per group (see COLUMNS): statistics over the finished runs, and the comparison
    with BN in the same context."""
    ref = {g.key.context: g.accs for g in groups if g.key.norm == REFERENCE}
    rows = []
    for g in groups:
        k = g.key
        accs = g.accs
        row: dict[str, Any] = {"dataset": k.dataset, "model": k.model, "variant": k.variant, "attack": k.attack,
                               "setting": k.setting, "norm": k.norm, "diverged": len(g.diverged),
                               "unfinished": len(g.unfinished), **describe(accs)}
        if len(accs) < MIN_N:
            row["ci95_low"] = row["ci95_high"] = None
        if k.norm == REFERENCE:
            verdict = "reference" if len(accs) >= MIN_N else f"reference ({NOT_MEANINGFUL})"
            row.update(diff_vs_bn=None, welch_p=None, bf_p=None, accuracy_verdict=verdict, stability_verdict=verdict)
        elif k.context not in ref:
            row.update(diff_vs_bn=None, welch_p=None, bf_p=None, accuracy_verdict=NO_REFERENCE,
                       stability_verdict=NO_REFERENCE)
        else:
            row.update(compare(accs, ref[k.context], alpha))
        row["seeds"] = " ".join(str(r["seed"]) for r in sorted(g.finished, key=lambda r: r["seed"]))
        row["experiments"] = " ".join(sorted(g.experiments))
        rows.append({c: row[c] for c in COLUMNS})
    return rows


# --------------------------------------------------------------------------- rendering


def _cell(v: Any, digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _setting_title(attack: str, setting: str, order: tuple) -> str:
    if attack == "constant" and len(order) == 2:
        return f"constant attack α={order[0]:g}, β={order[1]:g}"
    if attack == "mix" and len(order) == 2:
        return f"mix attack: {order[1]} {order[0]} images per batch"
    return f"{attack} ({setting})" if attack != "clean" else "clean (no attack)"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: "" if r[c] is None else (repr(r[c]) if isinstance(r[c], float) else r[c]) for c in COLUMNS})
    return buf.getvalue()


@dataclass
class Plot:
    filename: str
    title: str
    kind: str  # "box" or "curves"
    context: tuple  # (dataset, model, variant, attack) for box, + setting for curves
    png: bytes = b""


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
            "- **95% CI**: t-interval of the mean; std and var with n-1.",
            "- **Δ BN**: mean minus BN's mean in the same dataset, model, attack and setting.",
            "- **Welch p**: Welch's t-test (unequal variances) of equal means, two-sided.",
            "- **BF p**: Brown–Forsythe test of equal variance (Levene's test centred on the median); "
            "*more stable* = significantly smaller variance than BN.",
            f"- Verdicts at α = {self.alpha:g}, with no correction for multiple comparisons. With fewer than "
            f"{MIN_N} finished runs (in a row or in BN) no interval, p-value or verdict is given.", "",
        ]
        head = ["norm", "n", "diverged", "unfinished", "mean", "std", "var", "95% CI", "min", "max", "Δ BN",
                "Welch p", "BF p", "accuracy", "stability"]
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
                name = f"{dataset} · {model}" + (f" [{variant}]" if variant else "") + f" · {attack}"
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
                cells = [r["norm"], r["n"], r["diverged"], r["unfinished"], _cell(r["mean"]), _cell(r["std"]),
                         _cell(r["var"], 3), ci, _cell(r["min"]), _cell(r["max"]),
                         "—" if r["diff_vs_bn"] is None else f"{r['diff_vs_bn']:+.2f}",
                         "—" if r["welch_p"] is None else fmt_p(r["welch_p"]),
                         "—" if r["bf_p"] is None else fmt_p(r["bf_p"]),
                         r["accuracy_verdict"], r["stability_verdict"]]
                out.append("| " + " | ".join(str(c) for c in cells) + " |")
            out.append("")
            if ctx in plots:
                out += [f"![{plots[ctx].title}]({plots[ctx].filename})", ""]
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
            atomic_write(out_dir / p.filename, lambda f, b=p.png: f.write(b))
            written.append(out_dir / p.filename)
        atomic_write_text(out_dir / "report.csv", self.to_csv())
        atomic_write_text(out_dir / "report.md", self.to_markdown())
        atomic_write_text(out_dir / "overview.csv", overview.to_csv(self.overview))
        atomic_write_text(out_dir / "overview.md", overview.to_markdown(self.overview, self.alpha))
        written += [out_dir / name for name in ("report.csv", "report.md", "overview.csv", "overview.md")]
        mode = 0o666 & ~_umask()
        for f in written:  # mkstemp creates 0600; results are meant to be read by others too
            os.chmod(f, mode)
        self.files = written
        return written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _excluded(groups: Sequence[Group]) -> list[dict[str, Any]]:
    out = []
    for g in groups:
        for r in sorted(g.diverged, key=lambda r: r.get("seed", 0)):
            d = r.get("diverged") or {}
            detail = (f"diverged in epoch {d['epoch']} (lr {d['lr']:g})" if "epoch" in d and "lr" in d
                      else "no finite final accuracy")
            out.append({"experiment": r.get("experiment", ""), "norm": g.key.norm, "seed": r.get("seed"),
                        "status": r.get("status", "diverged"), "detail": detail})
        for ck in sorted(g.unfinished):
            m = _CKPT_RE.match(Path(ck).name)
            out.append({"experiment": Path(ck).parent.parent.name, "norm": g.key.norm,
                        "seed": int(m["seed"]) if m else None, "status": "unfinished",
                        "detail": f"checkpoint {Path(ck).name}, no record yet (re-run the experiment to resume)"})
    return out


# --------------------------------------------------------------------------- plots

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(*parts: str) -> str:
    """Parts joined by '_', every character outside [A-Za-z0-9._-] replaced, ending in .png."""
    name = "_".join(_SAFE.sub("-", p.replace("+", "")) for p in parts if p != "")  # 1e+06 -> 1e06
    return name + ".png"


def _norm_colors(norms: Iterable[str]) -> dict[str, str]:
    """A registered layer keeps its colour across plots (its place in the registry); others follow."""
    from matplotlib import colormaps

    palette = [f"C{i}" for i in range(10)] + [colormaps["tab20"](i) for i in range(1, 20, 2)]
    known = _known_order()
    extra = sorted({n for n in norms if n not in known})
    return {n: palette[i % len(palette)] for i, n in enumerate(known + tuple(extra))}


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def box_plot(groups: Sequence[Group], title: str, xlabel: str) -> bytes:
    """Final accuracy per norm (side by side) for each setting (one group on the x-axis each),
    the seeds overlaid as points, and the diverged/unfinished runs counted under the boxes."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    settings: dict[str, tuple] = {}
    for g in sorted(groups, key=_group_sort_key):
        settings.setdefault(g.key.setting, (g.order, g.key.attack))
    norms = sorted({g.key.norm for g in groups}, key=_norm_rank)
    by = {(g.key.setting, g.key.norm): g for g in groups}
    colors = _norm_colors(norms)
    m = len(norms)
    width = 0.8 / max(m, 2)
    fig = Figure(figsize=(max(7.0, 2.5 + len(settings) * (0.6 + 0.45 * m)), 4.8))
    ax = fig.add_subplot()
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    rng = np.random.default_rng(0)
    any_note = False
    for i, setting in enumerate(settings):
        for j, norm in enumerate(norms):
            g = by.get((setting, norm))
            if g is None:
                continue
            pos = i + (j - (m - 1) / 2) * width
            accs = g.accs
            if accs:
                bp = ax.boxplot([accs], positions=[pos], widths=width * 0.8, patch_artist=True, showfliers=False,
                                manage_ticks=False, medianprops={"color": "black"})
                for patch in bp["boxes"]:
                    patch.set_facecolor(colors[norm])
                    patch.set_alpha(0.55)
                jitter = rng.uniform(-width * 0.22, width * 0.22, len(accs))
                ax.scatter(pos + jitter, accs, s=16, color=colors[norm], edgecolors="black", linewidths=0.5, zorder=3)
            notes = [f"{len(g.diverged)} div." if g.diverged else "",
                     f"{len(g.unfinished)} unf." if g.unfinished else ""]
            note = "\n".join(s for s in notes if s)
            if note:
                any_note = True
                ax.text(pos, 0.02, note, transform=trans, ha="center", va="bottom", fontsize=7, color="firebrick")
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels([_tick_label(a, s, o) for s, (o, a) in settings.items()])
    ax.set_xlim(-0.6, len(settings) - 0.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    handles = [Patch(facecolor=colors[n], alpha=0.55, edgecolor="black", label=n) for n in norms]
    handles.append(Line2D([], [], marker="o", linestyle="", color="gray", markeredgecolor="black",
                          markersize=4, label="one seed"))
    ax.margins(y=0.1)  # room under the boxes for the diverged/unfinished counts
    ax.legend(handles=handles, title="norm", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if any_note:
        ax.text(1.02, 0.0, "not in the boxes:\ndiv. = diverged runs\nunf. = unfinished runs", transform=ax.transAxes,
                ha="left", va="bottom", fontsize=7, color="firebrick")
    fig.tight_layout()
    return _png(fig)


def _tick_label(attack: str, setting: str, order: tuple) -> str:
    if attack == "constant" and len(order) == 2:
        return f"α={order[0]:g}, β={order[1]:g}"
    if attack == "mix" and len(order) == 2:
        return f"{order[0]}, k={order[1]}"
    return setting


def curve_plot(groups: Sequence[Group], title: str) -> bytes:
    """Test accuracy per epoch, per norm: mean +- std over the finished seeds; the partial curves
    of diverged runs dotted."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8.0, 4.6))
    ax = fig.add_subplot()
    norms = sorted(groups, key=lambda g: _norm_rank(g.key.norm))
    colors = _norm_colors(g.key.norm for g in norms)
    epochs = {int(h["epoch"]) for g in norms for r in g.finished + g.diverged for h in r.get("history") or []
              if "epoch" in h}
    single = len(epochs) <= 1  # one epoch: error bars side by side instead of bands
    for j, g in enumerate(norms):
        c = colors[g.key.norm]
        per_epoch: dict[int, list[float]] = defaultdict(list)
        for r in g.finished:
            for h in r.get("history") or []:
                if _finite(h.get("test_acc")) and "epoch" in h:
                    per_epoch[int(h["epoch"])].append(float(h["test_acc"]))
        if per_epoch:
            ep = np.array(sorted(per_epoch))
            mean = np.array([np.mean(per_epoch[e]) for e in ep])
            std = np.array([np.std(per_epoch[e], ddof=1) if len(per_epoch[e]) > 1 else 0.0 for e in ep])
            label = f"{g.key.norm} (n={len(g.finished)})"
            if single:
                x = ep + (j - (len(norms) - 1) / 2) * 0.06
                ax.errorbar(x, mean, yerr=std, color=c, marker="o", markersize=4, capsize=4, label=label)
            else:
                ax.plot(ep, mean, marker="o", markersize=3, color=c, label=label)
                ax.fill_between(ep, mean - std, mean + std, color=c, alpha=0.2, linewidth=0)
        for i, r in enumerate(g.diverged):
            hist = [h for h in r.get("history") or [] if _finite(h.get("test_acc"))]
            if hist:
                ax.plot([h["epoch"] for h in hist], [h["test_acc"] for h in hist], linestyle=":", color=c,
                        linewidth=1, label=f"{g.key.norm} diverged (n={len(g.diverged)})" if i == 0 else None)
    if single and epochs:
        e = next(iter(epochs))
        ax.set_xticks([e])
        ax.set_xlim(e - 0.5, e + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title="norm (finished seeds)\nmean ± std", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return _png(fig)


def make_plots(groups: Sequence[Group]) -> list[Plot]:
    """A box plot per (dataset, model, variant, attack) and a curve plot per setting, rendered to PNG bytes."""
    families: dict[tuple, list[Group]] = defaultdict(list)
    contexts: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        k = g.key
        families[(k.dataset, k.model, k.variant, k.attack)].append(g)
        contexts[k.context].append(g)
    plots: list[Plot] = []
    used: set[str] = set()

    def unique(name: str) -> str:
        base, i = name[:-4], 2
        while name in used:
            name, i = f"{base}-{i}.png", i + 1
        used.add(name)
        return name

    def vtag(variant: str) -> str:
        return hashlib.sha256(variant.encode()).hexdigest()[:6] if variant else ""

    xlabels = {"constant": "constant attack setting (x̂ → α·x̂ + β in every norm)",
               "mix": "mixed-dataset attack: foreign dataset, k foreign images per batch", "clean": ""}
    for (dataset, model, variant, attack), gs in families.items():
        where = f"{dataset} · {model}" + (f" [{variant}]" if variant else "")
        title = f"{where} · {attack} attack\nfinal test accuracy (%) over seeds, per norm and setting"
        name = unique(safe_filename("box", dataset, model, vtag(variant), attack))
        plots.append(Plot(name, title.replace("\n", ": "), "box", (dataset, model, variant, attack),
                          box_plot(gs, title, xlabels.get(attack, f"{attack} setting"))))
    for ctx, gs in contexts.items():
        dataset, model, variant, attack, setting = ctx
        where = f"{dataset} · {model}" + (f" [{variant}]" if variant else "")
        title = (f"{where} · {_setting_title(attack, setting, gs[0].order)}\n"
                 "test accuracy per epoch (mean ± std over seeds)")
        name = unique(safe_filename("curves", dataset, model, vtag(variant), attack, setting))
        plots.append(Plot(name, title.replace("\n", ": "), "curves", ctx, curve_plot(gs, title)))
    return plots


# --------------------------------------------------------------------------- the report


def check_out_dir(path: Path) -> None:
    """`path` is a dir, or can be created as one, and is writable."""
    p = Path(path).absolute()
    if p.exists() and not p.is_dir():
        raise ReportError(f"output dir '{path}' is not a directory")
    while not p.exists():
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise ReportError(f"output dir '{path}' is not writable")


def build_report(
    dirs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    *,
    plots: bool = True,
    alpha: float = ALPHA,
) -> Report:
    """Read every results.jsonl under `dirs` (recursively), compute the rows, render the plots,
    and, when `out_dir` is given, write report.md, report.csv and the PNGs there.

    Bad input (a dir that does not exist or holds no results.jsonl, an output dir that cannot be
    written) raises ReportError before anything is written."""
    exp_dirs = find_experiment_dirs(dirs)
    if out_dir is not None:
        check_out_dir(Path(out_dir))
    groups, warn = collect(exp_dirs)
    if not groups:
        raise ReportError("no run records in " + ", ".join(f"'{d}'" for d in dirs)
                          + f" (every {RESULTS_FILE} is empty or unreadable)")
    rows = build_rows(groups, alpha)
    report = Report(rows=rows, sources=list(exp_dirs), excluded=_excluded(groups), overview=overview.build(rows, alpha),
                    warnings=warn, plots=make_plots(groups) if plots else [], alpha=alpha,
                    titles={g.key.context: _setting_title(g.key.attack, g.key.setting, g.order) for g in groups})
    if out_dir is not None:
        report.write(Path(out_dir))
    return report
