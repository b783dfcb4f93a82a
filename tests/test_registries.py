"""The registries (attacks, datasets, training options) and what they must not change: every run key
committed under docs/ is recomputed from its record's config with the current code."""

from __future__ import annotations

import json
from pathlib import Path

from noiseattack.config import RunConfig, train_config_from_dict

ROOT = Path(__file__).resolve().parents[1]


def committed_records() -> list[tuple[Path, dict]]:
    """Every record of every results.jsonl under docs/ (a line torn by a sweep writing it now is skipped)."""
    out = []
    for f in sorted((ROOT / "docs").rglob("results.jsonl")):
        for line in f.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "key" in rec and isinstance(rec.get("config"), dict):
                out.append((f, rec))
    return out


def test_every_committed_run_key_is_recomputed_from_its_config():
    records = committed_records()
    assert len(records) > 400  # the studies, the zoo check, the protocol pilots, the leaderboard
    wrong = [(str(f.relative_to(ROOT)), rec["key"]) for f, rec in records
             if RunConfig(train_config_from_dict(rec["config"]), rec["norm"], rec["seed"]).key != rec["key"]]
    assert not wrong, f"{len(wrong)} of {len(records)} keys changed, e.g. {wrong[:3]}"


def test_the_dataset_registry_is_what_config_data_and_the_plots_read():
    import subprocess
    import sys

    from noiseattack import config, data, datasets
    from noiseattack.report import plots

    assert config.DATASETS == tuple(datasets.DATASETS) == tuple(data.DATASETS)
    assert config.EXTRA_SOURCES == data.EXTRA_SOURCES == tuple(datasets.DATASETS) + tuple(datasets.DERIVED)
    assert plots.DATASET_NAMES == {n: d.display for n, d in datasets.DATASETS.items()}
    for name, info in datasets.DATASETS.items():
        spec = data.DATASETS[name]
        assert (spec.num_classes, spec.hflip, spec.folder) == (info.num_classes, info.hflip, info.folder)
        assert spec.tv_class.__name__ == info.loader and spec.files
    # the registry (and the config that reads it) loads without torch
    code = "import sys, noiseattack.datasets; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_the_config_and_the_registries_load_without_torch_the_zoo_or_the_model():
    import subprocess
    import sys

    code = ("import sys, noiseattack.config; "
            "assert not {'torch', 'noiseattack.zoo', 'noiseattack.models'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_module_imports_another_modules_private_names():
    import ast

    found = []
    for f in sorted((ROOT / "noiseattack").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("noiseattack")):
                found += [f"{f.relative_to(ROOT)}: {a.name}" for a in node.names
                          if a.name.startswith("_") and a.name != "__version__"]
    assert not found, found


def test_every_attack_is_one_registered_spec_and_the_cli_the_grid_and_hparams_read_them():
    from noiseattack import attacks
    from noiseattack.cli import app
    from noiseattack.config import Attack
    from noiseattack.sweep import grid

    names = attacks.names()
    assert names[:4] == ("clean", "constant", "mix", "random") and tuple(a.value for a in Attack) == names
    assert {c.name for c in app.registered_commands} >= set(names)
    assert set(grid.ATTACK_KEYS) == set(names)
    for spec in attacks.specs():
        p = spec.defaults()
        t = resolve_train_config_for(spec.name)
        assert t.attack_params() == spec.check(p, batch_size=128) and t.setting_label() == spec.label(p)
        assert spec.order_of_label(spec.label(p)) == spec.order(p) or spec.name == "clean"


def resolve_train_config_for(attack: str):
    from noiseattack.config import resolve_train_config

    return resolve_train_config(attack=attack, dataset="mnist", device="cpu")


def test_a_records_iebn_kernels_come_from_the_layer_not_its_name():
    from noiseattack import zoo

    assert zoo.has_iebn("iebn") and zoo.has_iebn("iebn-b0+cbam") and not zoo.has_iebn("bn")
    assert not zoo.has_iebn("bnse") and not zoo.has_iebn("gn+eca")


def test_the_readme_attack_table_is_the_registrys():
    from noiseattack import attacks

    readme = (ROOT / "README.md").read_text()
    region = readme.split("<!-- attacks:begin -->\n")[1].split("\n<!-- attacks:end -->")[0]
    assert region == attacks.markdown_table()
