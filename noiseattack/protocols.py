"""Protocols: named, versioned benchmark settings that every result on a leaderboard shares.

A protocol fixes everything a result depends on but the layer and the seed: the primary dataset
and its subsets, the model, the training recipe, the precision, the device class and the torch
thread count, the attack settings (clean, constant (2, 1), mix from a far foreign source at a
fixed k, ...) and the seeds. `noiseattack protocols` lists them; `noiseattack bench` trains a
layer under one; `noiseattack leaderboard` compares every layer's committed runs of one.

A run belongs to a protocol when its training setting's identity (`TrainConfig.identity()`, the
fields that determine results) is one of the protocol's settings: its key is then one of the
protocol's keys for its layer and seed. A change to a protocol's definition changes those
identities, so it comes with a new version (and a new leaderboard dir); runs of the old version
are refused, never mixed in. The device class is part of the result too: `fmnist` runs on CPUs
in fp32 at one thread, so that results from every CPU kind pool (they differ by float rounding
only, not by precision; records keep the CPU kind, and a study tests kinds against each other
where more than one contributes to a cell); `fmnist-gpu` is the same recipe on a CUDA GPU, its
own leaderboard.

Definitions are data, here; the measurements that chose them are in docs/protocols.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import attacks
from .config import ConfigError, RunConfig, TrainConfig, resolve_train_config, train_config_from_dict

LEADERBOARD_ROOT = Path("docs/leaderboard")


@dataclass(frozen=True)
class Setting:
    """One attack setting of a protocol: its short id (a leaderboard column) and its options."""

    id: str  # "clean", "constant", "mix"
    title: str  # "constant (2, 1)"
    options: dict[str, Any]  # resolve_train_config's attack options: attack and its parameters (alpha, beta, ...)

    def params(self) -> Any:
        """The attack's parameters (its Params dataclass): the options given, its defaults for the rest."""
        spec = attacks.get(self.options["attack"])
        return spec.Params(**{k: v for k, v in self.options.items() if k != "attack"})

    def grid_table(self) -> dict[str, Any]:
        """The grid's [[attack]] table for this setting (the attack registry's `grid_table`)."""
        return attacks.get(self.options["attack"]).grid_table(self.params())


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    summary: str
    train: dict[str, Any]  # resolve_train_config's options, but the attack's and the device's
    settings: tuple[Setting, ...]
    seeds: int  # n: seeds 0 .. n-1 per layer and setting
    device: str  # "cpu" or "cuda": the device class of its results
    threads: int | None  # torch threads per run on a CPU (None: not fixed, e.g. on a GPU)
    notes: tuple[str, ...] = field(default=())

    @property
    def precision(self) -> str:
        return "bf16 autocast" if self.train.get("amp") else "fp32"

    def train_config(self, setting: Setting | str, device: str | None = None) -> TrainConfig:
        """The exact TrainConfig of one setting (on `device`, default the protocol's)."""
        s = self.setting(setting) if isinstance(setting, str) else setting
        return resolve_train_config(**self.train, **s.options, device=device or self.device)

    def setting(self, id: str) -> Setting:
        for s in self.settings:
            if s.id == id:
                return s
        raise ConfigError(f"protocol {self.name} has no setting '{id}': choose {', '.join(x.id for x in self.settings)}")

    def identities(self) -> dict[str, str]:
        """JSON of each setting's identity -> its id: what a run of this protocol version has."""
        import json

        return {json.dumps(self.train_config(s, "cpu").identity(), sort_keys=True): s.id for s in self.settings}

    def setting_of(self, config: dict[str, Any]) -> str | None:
        """The setting id of a record's config (its `config` dict), or None when it is not this protocol's."""
        import json

        names = {f.name for f in dataclasses.fields(TrainConfig)}
        ident = train_config_from_dict({k: v for k, v in config.items() if k in names}).identity()
        return self.identities().get(json.dumps(ident, sort_keys=True))

    def keys(self, norm: str, seeds: range | list[int] | None = None) -> dict[str, tuple[str, int]]:
        """run key -> (setting id, seed) for a layer over `seeds` (default the protocol's)."""
        seeds = range(self.seeds) if seeds is None else seeds
        return {RunConfig(self.train_config(s, "cpu"), norm, seed).key: (s.id, seed)
                for s in self.settings for seed in seeds}

    def grid(self, norms: list[str] | tuple[str, ...], *, seeds: list[int] | None = None,
             runs_dir: str | Path | None = None, data_dir: str | Path | None = None) -> dict[str, Any]:
        """The protocol as a grid document (what `sweep.parse_grid` takes; `grid_toml` writes it)."""
        train = {**self.train, "device": self.device,
                 "runs_dir": str(runs_dir if runs_dir is not None else self.runs_dir())}
        if data_dir is not None:
            train["data_dir"] = str(data_dir)
        return {"train": train,
                "grid": {"norms": list(norms), "seeds": list(seeds if seeds is not None else range(self.seeds))},
                "attack": [s.grid_table() for s in self.settings]}

    def runs_dir(self) -> Path:
        return LEADERBOARD_ROOT / self.name / "runs"

    def describe(self) -> dict[str, Any]:
        """The definition as plain data (what `noiseattack protocols --format json` prints)."""
        return {"name": self.name, "version": self.version, "summary": self.summary, "device": self.device,
                "precision": self.precision, "threads": self.threads, "seeds": self.seeds, "train": self.train,
                "settings": [{"id": s.id, "title": s.title, **s.options} for s in self.settings],
                "notes": list(self.notes)}


def grid_toml(doc: dict[str, Any]) -> str:
    """A grid document as TOML (the subset grids use: tables of scalars and flat or nested lists)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to a grid")

    lines = []
    for table in ("train", "grid"):
        lines += [f"[{table}]", *(f"{k} = {value(v)}" for k, v in doc[table].items()), ""]
    for a in doc["attack"]:
        lines += ["[[attack]]", *(f"{k} = {value(v)}" for k, v in a.items()), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the protocols

# FashionMNIST, past the early transient, on a 2-core CPU: ResNet-20 at half width (8/16/32
# channels) on the full training set for 3 epochs (1404 steps), lr 0.1 falling linearly to 0 per
# step, no augmentation, evaluated on the full test set. Chosen by the pilot in docs/protocols.md.
_FMNIST_RECIPE: dict[str, Any] = {
    "dataset": "fmnist", "depth": 20, "width": 0.5, "epochs": 3, "batch_size": 128, "lr": 0.1, "momentum": 0.9,
    "weight_decay": 1e-4, "lr_schedule": "linear", "augment": False,
}
_CONSTANT = Setting("constant", "constant (2, 1)", {"attack": "constant", "alpha": 2.0, "beta": 1.0})
_CLEAN = Setting("clean", "clean", {"attack": "clean"})


def _mix(extra: str, k: int) -> Setting:
    return Setting("mix", f"mix {extra} k={k}", {"attack": "mix", "extra": extra, "k": k})


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("fmnist", 1, "FashionMNIST, ResNet-20 half width, 3 epochs of the full training set, fp32, one CPU thread",
             _FMNIST_RECIPE, (_CLEAN, _CONSTANT, _mix("mnist-inverted", 128)), seeds=5, device="cpu", threads=1,
             notes=("the leaderboard this project runs and commits; about 300 CPU-seconds per clean or constant "
                    "run, twice that under mix (its batches hold 128 + 128 images)",)),
    Protocol("fmnist-gpu", 1, "the fmnist recipe on a CUDA GPU (fp32): its own leaderboard",
             _FMNIST_RECIPE, (_CLEAN, _CONSTANT, _mix("mnist-inverted", 128)), seeds=5, device="cuda", threads=None,
             notes=("device and precision are part of a result: GPU runs never pool with the CPU's",)),
    Protocol("mnist", 1, "MNIST, the fmnist recipe, FashionMNIST as the foreign source, fp32, one CPU thread",
             {**_FMNIST_RECIPE, "dataset": "mnist"}, (_CLEAN, _CONSTANT, _mix("fmnist", 128)), seeds=5, device="cpu",
             threads=1, notes=("the leaderboard's second primary dataset",)),
    Protocol("cifar100", 1, "CIFAR-100, ResNet-20, 100 epochs with crops and flips, cosine lr, fp32, on a GPU",
             {"dataset": "cifar100", "depth": 20, "width": 1, "epochs": 100, "batch_size": 128, "lr": 0.1,
              "momentum": 0.9, "weight_decay": 5e-4, "lr_schedule": "cosine", "augment": True},
             (_CLEAN, _CONSTANT, _mix("mnist", 128)), seeds=5, device="cuda", threads=None,
             notes=("for users with CIFAR-100 and a GPU; defined and dry-runnable here, not run by this project",)),
)}


def get(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown protocol '{name}': choose {', '.join(PROTOCOLS)}") from None
