#!/usr/bin/env bash
# The FashionMNIST robustness study (docs/study-fmnist.md): FashionMNIST is the primary dataset,
# MNIST the foreign one; ResNet-20; a fixed 5000-image training subset; 4 epochs; 5 seeds;
# bn, in, bnse, iebn; clean, constant (2, 1) and (5, 2), mix k = 32 and 64.
# About 75 minutes on a 2-core CPU (OMP_NUM_THREADS=1 leaves the other core to a second
# worker: `noiseattack sweep scripts/grid_fmnist_study.toml --workers 2` runs the same runs).
# Re-running it resumes where it stopped.
#
#   NOISEATTACK_DATA=/path/to/data bash scripts/study_fmnist.sh [RUNS_DIR]
set -euo pipefail
RUNS=${1:-runs/study-fmnist}
COMMON=(--dataset fmnist --runs-dir "$RUNS" --norm bn,in,bnse,iebn --repeats 5 --seed 0
        --epochs 4 --train-subset 5000 --test-subset 2000 --device cpu --no-progress)
noiseattack clean "${COMMON[@]}"
noiseattack constant --alpha 2 --beta 1 "${COMMON[@]}"
noiseattack mix --extra mnist --k 32 "${COMMON[@]}"
noiseattack constant --alpha 5 --beta 2 "${COMMON[@]}"
noiseattack mix --extra mnist --k 64 "${COMMON[@]}"
if noiseattack report --help >/dev/null 2>&1; then
  noiseattack report "$RUNS"
fi
