#!/usr/bin/env bash
# Commit the results of runs that finished (live experiment data under docs/) together with the docs
# generated from them, so that the committed docs are exactly what the committed runs give (the
# byte-for-byte tests check that). Runs may finish while this works: it stages the runs, regenerates,
# and repeats until no run landed in between.
#
#   bash scripts/commit_runs.sh "message"
set -euo pipefail
cd "$(dirname "$0")/.."
MSG=${1:?usage: scripts/commit_runs.sh MESSAGE}
RUNS="docs/leaderboard docs/protocols"
RESULTS=("docs/leaderboard/*results.jsonl" "docs/protocols/*results.jsonl")  # pathspecs: * spans dirs
for attempt in 1 2 3 4 5; do
  git add $RUNS  # the runs (and their config.json) as they are now
  python scripts/protocols_doc.py > /dev/null
  python scripts/study_protocol_doc.py > /dev/null
  python scripts/study_protocol_doc.py --protocol fmnist-gpu > /dev/null
  for d in docs/leaderboard/*/runs; do
    [ -d "$d" ] || continue
    p=$(basename "$(dirname "$d")")
    noiseattack leaderboard --protocol "$p" > /dev/null
  done
  # A run that landed while the docs were regenerated is not in them: regenerate again. Only the
  # generated files are staged now, so a run landing from here on stays out of this commit.
  if git diff --quiet -- "${RESULTS[@]}"; then
    git add docs/protocols.md docs/study-protocol.md docs/study-protocol docs/study-protocol-gpu.md \
      docs/study-protocol-gpu docs/leaderboard/*/leaderboard.*
    git commit -qm "$MSG" && git log --oneline -1
    # what the commit holds, to check the message against: setting, layer, seed, status per new record
    git show HEAD -- "${RESULTS[@]}" | python -c '
import json, sys
recs = [json.loads(line[1:]) for line in sys.stdin if line.startswith("+{")]
for r in recs:
    print("  %s: %s seed %s %s" % (r.get("experiment"), r.get("norm"), r.get("seed"), r.get("status")))
print("  %d run record(s)" % len(recs))'
    exit 0
  fi
  echo "a run landed while regenerating; again" >&2
done
echo "commit_runs: runs kept landing; try again" >&2
exit 1
