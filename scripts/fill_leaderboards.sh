#!/usr/bin/env bash
# Fill the CPU leaderboards in issue #21's order, resuming wherever earlier runs stopped:
#   1. docs/leaderboard/fmnist: the study's five layers at seeds 0-4, then 5-9 (n = 10, the study's cells);
#   2. the rest of #21's twelve (grid-3: in, gn, ln, bn+se, bn+eca, bn+cbam, bn+gc);
#   3. docs/leaderboard/mnist, the second primary (bn, bnse, iebn, bn-damped, iebn-b0, gn; seeds 0-4);
#   4. the rest of the zoo on fmnist (grid-4: 13 layers, 195 runs), as compute allows;
#   5. the protocol pilots b, d, e (docs/protocols);
#   6. bn+das on fmnist (grid-5: 15 runs, each many BN runs' worth of steps: step_clean_bn+das_vs_bn in
#      docs/bench/steps-protocol-fmnist-avx512-amd.txt).
# Layer by layer within each grid (`--order norm`: a layer's row, every setting, completes before the
# next layer starts, so the board ranks one more layer every ~15 runs; checkpointed runs first).
# Two workers, one thread each (the protocols fix one thread), at low priority. Finished runs are
# committed with `bash scripts/commit_runs.sh "message"`. Stop with Ctrl-C (or SIGINT to the sweep and
# its workers): runs in progress write their checkpoints and resume on the next start.
#
#   bash scripts/fill_leaderboards.sh            # everything above, in order
#   WORKERS=1 bash scripts/fill_leaderboards.sh  # one run at a time
set -euo pipefail
cd "$(dirname "$0")/.."
GRIDS=(
  docs/leaderboard/fmnist/grid-1-paper-layers.toml
  docs/leaderboard/fmnist/grid-2-paper-layers-n10.toml
  docs/leaderboard/fmnist/grid-3-zoo.toml
  docs/leaderboard/mnist/grid-1-second-primary.toml
  docs/leaderboard/fmnist/grid-4-zoo-rest.toml
  docs/protocols/pilot-b.toml
  docs/protocols/pilot-d.toml
  docs/protocols/pilot-e.toml
  docs/leaderboard/fmnist/grid-5-das.toml
)
for g in "${GRIDS[@]}"; do
  rc=0
  nice -n 10 noiseattack sweep "$g" --workers "${WORKERS:-2}" --threads 1 --order norm --no-progress || rc=$?
  # 3: some runs failed (a layer raised; recorded, retried on the next start): go on with the next grid.
  # Anything else (2 bad input, 130 interrupted) stops here.
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then exit "$rc"; fi
done
