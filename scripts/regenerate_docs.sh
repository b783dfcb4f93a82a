#!/usr/bin/env bash
# Regenerate every generated doc from what is committed: the per-run results (leaderboards, studies,
# protocols, zoo-check), the benchmark logs (performance), the registries and the model (README
# regions but the layer survey's, which is curated from `python scripts/layer_survey.py` and checked
# against the harness by its test). On a clean checkout it changes nothing (`git status` stays clean);
# each doc's own test checks it byte for byte. docs/sources.md also needs the real MNIST and FashionMNIST files: DATA (a
# writable dir with MNIST/raw and FashionMNIST/raw; default: data); without them it is skipped, said so.
#
#   bash scripts/regenerate_docs.sh
#   DATA=/path/to/data bash scripts/regenerate_docs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's package, whichever one is installed
na() { python -m noiseattack "$@"; }
step() { echo "regenerate_docs: $*" >&2; }

step "the 150-step study, the capacity study, the zoo check"  # first: the protocol docs cite the 150-step study
python scripts/study_doc.py > /dev/null
python scripts/capacity_doc.py > /dev/null
na report docs/zoo-check/runs --out docs/zoo-check > /dev/null
python scripts/overview.py docs/zoo-check/report.csv --doc docs/zoo-check.md > /dev/null
step "protocols, the studies on the protocol runs, the leaderboards"
python scripts/protocols_doc.py > /dev/null
python scripts/study_protocol_doc.py > /dev/null
python scripts/study_protocol_doc.py --protocol fmnist-gpu > /dev/null
for d in docs/leaderboard/*/runs; do
  [ -d "$d" ] || continue
  na leaderboard --protocol "$(basename "$(dirname "$d")")" > /dev/null
done
step "performance (every bench region from its log), README regions"
python scripts/bench_doc.py --doc docs/performance.md > /dev/null
python scripts/paper_cost.py --doc README.md > /dev/null
python scripts/variance_null.py --doc README.md > /dev/null
python -c 'import sys; from pathlib import Path; from noiseattack import attacks
from noiseattack.report.render import update_region
sys.exit(update_region(Path("README.md"), "attacks", attacks.markdown_table, "regenerate_docs"))' > /dev/null
DATA=${DATA:-data}
if [ -d "$DATA/MNIST/raw" ] && [ -d "$DATA/FashionMNIST/raw" ]; then
  step "sources (real data in $DATA)"
  python scripts/source_shift.py --data-dir "$DATA" --doc docs/sources.md > /dev/null
else
  step "docs/sources.md skipped: no MNIST/raw and FashionMNIST/raw in $DATA (set DATA)"
fi
step "done; git status shows what changed"
