"""Finding experiment dirs and grouping their runs by (dataset, model, variant, attack, setting, norm)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .. import attacks, chance
from ..config import ATTACK_FIELDS, ConfigError, TrainConfig, layer_of_row, row_label, train_config_from_dict
from ..results import RESULTS_FILE, read_results
from ..zoo import PAPER, attention_names, norm_names


NO_REFERENCE = "no BN runs to compare with"
ATTACK_ORDER = attacks.names()  # the attack registry's order: clean, constant, mix, ...


class ReportError(ConfigError):
    """Bad input for the report (no such dir, no results). One line, meant for stderr."""


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
    order: tuple  # sort key of the setting: (alpha, beta) or (extra, k) (the attack's `order`)
    finished: list[dict[str, Any]] = field(default_factory=list)  # records
    diverged: list[dict[str, Any]] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # "<experiment dir>/ckpt/<run id>.pt"
    experiments: set[str] = field(default_factory=set)
    dirs: set[Path] = field(default_factory=set)  # the experiment dirs the runs come from
    ident: dict[str, Any] = field(default_factory=dict)  # the setting's identity (TrainConfig.identity())
    params: Any = None  # the attack's parameters (its Params dataclass)

    @property
    def title(self) -> str:
        """The setting's heading: the attack's `title` (`constant attack α=2, β=1`)."""
        return attacks.get(self.key.attack).title(self.params)

    @property
    def tick(self) -> str:
        """The setting's tick on a box plot: the attack's `tick` (`α=2, β=1`)."""
        return attacks.get(self.key.attack).tick(self.params)

    @property
    def accs(self) -> list[float]:
        return [float(r["final_acc"]) for r in self.finished]

    @property
    def at_chance(self) -> int:
        """How many of the finished runs are at chance (`noiseattack.chance`)."""
        return chance.count(self.finished)

    @property
    def mostly_at_chance(self) -> bool:
        """More than half of the finished runs at chance: a comparison with this group measures nothing learned."""
        return chance.mostly(self.finished)


_MODEL_FIELDS = ("dataset", *ATTACK_FIELDS, "depth", "width", "epochs", "train_subset")
# A field that TrainConfig.identity() leaves out at its default (shortcut_norm "same", augment True) is
# shown with that default in a variant label: `augment=True` beside `augment=False`, not `augment=None`.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
_CKPT_RE = re.compile(r"^(?P<norm>.+)-s(?P<seed>-?\d+)\.pt$")


def placed_norm(norm: str, ident: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A run's row label and the identity its group is compared in: the placement of attention is
    part of how a layer sits in the model, not of the setting. A `NORM+ATTN` layer trained with
    attn_placement "block" is the row `bn+cbam (per block)` of the setting without the option (with
    "stage", `bn+das (per stage)`),
    beside the same setting's `bn` and `bn+cbam` (attention after every norm). A layer without
    `+ATTN` builds the same network either way, so it is the same row (`bn`) under both: one
    command `--norm bn,bn+cbam --attn-placement block` compares bn+cbam (per block) with its bn.
    Where such a layer ran under both placements with the same seed, `collect` counts it once."""
    placement = ident.get("attn_placement", "norm")
    if placement == "norm":
        return norm, ident
    return row_label(norm, placement), {k: v for k, v in ident.items() if k != "attn_placement"}


def model_label(cfg: dict[str, Any]) -> str:
    label = f"resnet{cfg['depth']}" + (f"w{cfg['width']}" if cfg.get("width", 1) != 1 else "")
    if cfg.get("train_subset"):
        label += f"-n{cfg['train_subset']}"
    return label + f"-e{cfg['epochs']}"


def _identity(cfg: dict[str, Any]) -> tuple[dict[str, Any], str, tuple, Any]:
    """(identity, setting label, setting sort key, attack parameters) of a flat config dict (a record's
    `config`): the attack's `label` and `order` (noiseattack.attacks)."""
    t = train_config_from_dict(cfg)
    p = t.attack_params()
    return t.identity(), t.setting_label(), t.attack_spec().order(p), p


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
    raw, pending, warn = _read_dirs(exp_dirs)
    found = [(cfg, rec["norm"], rec, None, exp_dir) for cfg, rec, exp_dir in raw]
    found += [(cfg, cfg["norm"], None, ck, exp_dir) for cfg, ck, exp_dir in pending]
    entries, seeds = [], []
    for cfg, norm, rec, ck, exp_dir in found:
        try:
            ident, setting, order, params = _identity(cfg)
        except (ValueError, TypeError, KeyError) as e:
            warn.append(f"{exp_dir / RESULTS_FILE}: unreadable config ({e}); record {rec['key']} is ignored"
                        if ck is None else
                        f"{exp_dir}/config.json: unreadable setting ({e}); unfinished run {ck} is not counted")
            continue
        norm, ident = placed_norm(norm, ident)
        entries.append((ident, setting, (order, params), norm, rec, ck, exp_dir))
        seeds.append(cfg.get("seed"))
    entries, twins = _one_per_seed(entries, seeds)
    if twins:
        warn.append(f"{twins} run(s) found twice under one setting, norm and seed (a layer without attention trained "
                    "under both attention placements is one network): counted once, a finished one first")

    variant_of = _variant_labels([e[0] for e in entries])
    groups: dict[GroupKey, Group] = {}
    for ident, setting, order, norm, rec, ck, exp_dir in entries:
        model = model_label(ident)
        blob = json.dumps({k: v for k, v in ident.items() if k not in _MODEL_FIELDS}, sort_keys=True)
        variant = variant_of[(ident["dataset"], model, blob)]
        key = GroupKey(ident["dataset"], model, variant, ident["attack"], setting, norm)
        g = groups.setdefault(key, Group(key, order[0], ident=ident, params=order[1]))
        g.experiments.add(exp_dir.name)
        g.dirs.add(exp_dir)
        if ck is not None:
            g.unfinished.append(ck)
        elif _finished(rec):
            g.finished.append(rec)
        else:
            g.diverged.append(rec)
    return sorted(groups.values(), key=group_sort_key), warn


def _one_per_seed(entries: list[tuple], seeds: list[Any]) -> tuple[list[tuple], int]:
    """The entries with one per (identity, norm, seed), in their order: a layer without `+ATTN`
    trained under both placements (`placed_norm`) is one network run twice with one seed. Of two, a
    finished run counts before a diverged one, a diverged one before an unfinished one (a checkpoint)."""
    def rank(e: tuple) -> int:
        rec = e[4]
        return 2 if rec is None else (0 if _finished(rec) else 1)

    best: dict[tuple, int] = {}
    for i, (e, seed) in enumerate(zip(entries, seeds)):
        key = (json.dumps(e[0], sort_keys=True), e[3], json.dumps(seed))
        if key not in best or rank(e) < rank(entries[best[key]]):
            best[key] = i
    kept = sorted(best.values())
    return [entries[i] for i in kept], len(entries) - len(kept)


def _read_dirs(exp_dirs: Sequence[Path]) -> tuple[list, list, list[str]]:
    """The experiment dirs' run records (config, record, dir), each key once, and their unfinished runs
    (setting with norm and seed, checkpoint path, dir) from checkpoints without a record; plus warnings."""
    warn: list[str] = []
    raw: list[tuple[dict[str, Any], dict[str, Any], Path]] = []
    pending: list[tuple[dict[str, Any], str, Path]] = []
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
    return raw, pending, warn


def _variant_labels(idents: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    """(dataset, model label, JSON of the non-model fields) -> variant label: "" where a (dataset, model)
    pair has one setting of the other fields, else the fields that differ between its settings (k=v,...)."""
    rests: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for ident in idents:
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
            variant_of[(*dm, blob)] = ",".join(f"{k}={_short(rest.get(k, _DEFAULTS.get(k)))}" for k in differing)
    return variant_of


def _finished(rec: dict[str, Any]) -> bool:
    """A record that enters the statistics: finished, with a finite final accuracy."""
    return rec["status"] == "finished" and is_finite(rec.get("final_acc"))


def is_finite(v: Any) -> bool:
    """A number, and finite (a record's value may be null, NaN or missing)."""
    return isinstance(v, (int, float)) and math.isfinite(v)


def _short(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "/".join(_short(x) for x in v) or "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def known_order() -> tuple[str, ...]:
    """The paper's four, the other registered norms, then bn+ATTN: the order of rows and colours."""
    return tuple(dict.fromkeys(PAPER + norm_names() + tuple(f"bn+{a}" for a in attention_names())))


def norm_rank(norm: str) -> tuple[int, str]:
    """A layer's place among the rows: the known order, a per-block row right after its layer's."""
    known = known_order()
    base = layer_of_row(norm)[0]
    return (known.index(base), norm) if base in known else (len(known), norm)


def group_sort_key(g: Group) -> tuple:
    """The report's order of groups: dataset, model, variant, attack (the registry's order), setting, norm."""
    k = g.key
    return (k.dataset, k.model, k.variant, attacks.rank(k.attack), g.order, k.setting, norm_rank(k.norm))


def excluded_runs(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """The diverged and unfinished runs of the groups: experiment, norm, seed, status, detail."""
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


_ATTACK_FLAGS = tuple("--" + name.replace("_", "-") for name in attacks.field_names())  # --alpha, --k, ...


def missing_clean(groups: Sequence[Group]) -> list[str]:
    """A warning per (dataset, model, variant) with attacked runs but no clean ones: without the clean
    reference the cost of an attack cannot be read off. Each names the command that adds it."""
    import shlex

    attacked: dict[tuple, Group] = {}
    clean = {g.key.context[:3] for g in groups if g.key.attack == "clean"}
    for g in groups:
        ctx = g.key.context[:3]
        if g.key.attack != "clean" and ctx not in clean and (g.finished or g.diverged):
            attacked.setdefault(ctx, g)
    out = []
    for (dataset, model, variant), g in attacked.items():
        norms = sorted({layer_of_row(h.key.norm)[0] for h in groups
                        if h.key.context[:3] == (dataset, model, variant)}, key=norm_rank)
        cmd = ""
        try:
            cfg = json.loads((sorted(g.dirs)[0] / "config.json").read_text())
        except (OSError, json.JSONDecodeError, IndexError):
            cfg = None
        if cfg and isinstance(cfg.get("command"), str):
            args = shlex.split(cfg["command"])
            keep, skip = [], 0
            for a in args[2:]:
                if skip:
                    skip -= 1
                elif a in _ATTACK_FLAGS or a in ("--name", "--norm"):
                    skip = 1
                else:
                    keep.append(a)
            cmd = ": " + shlex.join(["noiseattack", "clean", "--norm", ",".join(norms), *keep])
        where = f"{dataset} · {model}" + (f" [{variant}]" if variant else "")
        out.append(f"no clean runs for {where}: the clean reference is missing, so the cost of the attack cannot "
                   f"be read off; add it with the same options{cmd or ' under `noiseattack clean`'}")
    return out
