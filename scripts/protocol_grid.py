"""A protocol as a grid file, for `noiseattack sweep` (what `noiseattack bench` trains).

    python scripts/protocol_grid.py fmnist --norms bn,iebn --seeds 0-4 > grid.toml
    python scripts/protocol_grid.py fmnist-gpu --norms bn --seeds 0-9 --runs-dir runs/x --set compile=false

--set KEY=VALUE adds a performance option to [train] (compile, channels_last, eval_batch_size,
compile_norms): anything else would make the runs another protocol's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from noiseattack import protocols  # noqa: E402
from noiseattack.config import PERFORMANCE_FIELDS  # noqa: E402


def seeds(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("protocol")
    ap.add_argument("--norms", required=True)
    ap.add_argument("--seeds", default=None, help="e.g. 0-4 or 0,3,5 [default: the protocol's]")
    ap.add_argument("--settings", default="", help="setting ids, comma-separated [default: all]")
    ap.add_argument("--runs-dir", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    proto = protocols.get(args.protocol)
    doc = proto.grid([n for n in args.norms.split(",") if n], seeds=seeds(args.seeds) if args.seeds else None,
                     runs_dir=args.runs_dir, data_dir=args.data_dir)
    wanted = [s for s in args.settings.split(",") if s]
    if wanted:
        doc["attack"] = [proto.setting(s).grid_table() for s in wanted]
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in PERFORMANCE_FIELDS or key == "device":
            ap.error(f"--set {key}: only performance options ({', '.join(PERFORMANCE_FIELDS)}, not device)")
        doc["train"][key] = {"true": True, "false": False}.get(value.lower(), int(value) if value.isdigit() else value)
    sys.stdout.write(protocols.grid_toml(doc))


if __name__ == "__main__":
    main()
