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
