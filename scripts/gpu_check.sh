#!/usr/bin/env bash
# The GPU check (#23): one prepared command for a machine with a CUDA GPU, run from the repo root.
#
#   bash scripts/gpu_check.sh LOG_DIR [TOTAL_SECONDS]
#
# It runs, each step under its own time limit and logging to LOG_DIR/<step>.log:
#   1. nvidia-smi, and the versions of python, torch, torchvision and timm
#   2. the tests marked `cuda` (tests/test_cuda.py: every layer under both attacks, amp, the IEBN
#      kernels against the CPU, checkpoint/resume and same-seed identity, the compiled model, the
#      memory check)
#   3. scripts/bench.py --device cuda --amp (the harness against pure and the reference pipeline,
#      compiled against eager)
#   4. scripts/bench_sweep.py: four fmnist-gpu runs by one worker, then by four sharing the GPU
#      (throughput, and every run's result equal whatever the layout)
#   5. with TOTAL_SECONDS given, in the time left of it (less 30 s to pack), as many runs as fit, 12
#      workers sharing the GPU (resumable), of the fmnist-gpu leaderboard (docs/leaderboard/fmnist-gpu/runs):
#      the five layers of the paper's claims in all three settings, then the rest of #21's twelve,
#      then every other zoo layer, then the GPU pilot with doubled epochs; the results packed into
#      LOG_DIR/runs.tar.gz
# GPU_CHECK_SKIP="bench-amp many-runs" leaves those steps out (a later session, their figures
# already committed, gives their minutes to the leaderboard).
# and writes LOG_DIR/summary.txt (each step's exit code and seconds).
#
# The machine may have no network and nothing installable: the project runs in place
# (PYTHONPATH=.), with the python3 there (torch, torchvision, timm, typer, rich, tensorboard,
# scipy, matplotlib, pytest). Data: MNIST and FashionMNIST in torchvision's raw layout under
# $NOISEATTACK_DATA (default gpu-data/, a folder git ignores that travels with the working tree).
set -u
LOG_DIR=${1:?usage: scripts/gpu_check.sh LOG_DIR [TOTAL_SECONDS]}
TOTAL_S=${2:-0}
DATA=${NOISEATTACK_DATA:-gpu-data}
PY=${PYTHON:-python3}
mkdir -p "$LOG_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 NOISEATTACK_DATA="$DATA"
SUMMARY="$LOG_DIR/summary.txt"
: > "$SUMMARY"

SKIP=" ${GPU_CHECK_SKIP:-} "

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2 t0=$SECONDS code
  shift 2
  if [[ "$SKIP" == *" $name "* ]]; then echo "== $name: skipped (GPU_CHECK_SKIP)" | tee -a "$SUMMARY"; return; fi
  echo "== $name (limit ${limit}s): $*" | tee -a "$SUMMARY"
  timeout --kill-after=10 "$limit" "$@" >> "$LOG_DIR/$name.log" 2>&1
  code=$?
  echo "== $name: exit $code after $((SECONDS - t0)) s" | tee -a "$SUMMARY"
  tail -n 3 "$LOG_DIR/$name.log" | sed 's/^/   /' | tee -a "$SUMMARY"
}

step machine 30 nvidia-smi
step machine 60 $PY -c 'import sys, torch, torchvision, timm; print(sys.version, "torch", torch.__version__,
"torchvision", torchvision.__version__, "timm", timm.__version__, torch.cuda.get_device_name(),
torch.backends.cpu.get_cpu_capability())'
step cuda-tests 170 $PY -m pytest -m cuda -q -p no:cacheprovider -o addopts="-ra" --maxfail=20 --tb=short tests/test_cuda.py
step bench-amp 130 $PY scripts/bench.py --device cuda --amp --no-compile --rounds 2 --steps 20 --data-dir "$DATA"
step many-runs 150 $PY scripts/bench_sweep.py --protocol fmnist-gpu --norms bn --seeds 0,1,2,3 --settings clean \
  --workers 1,4 --threads 1 --no-compile --data-dir "$DATA"

LEADERBOARD_S=$((TOTAL_S - SECONDS - 30))
if [ "$TOTAL_S" -gt 0 ] && [ "$LEADERBOARD_S" -gt 30 ]; then
  PAPER=bn,bnse,iebn,bn-damped,iebn-b0
  REST12=in,gn,ln,bn+se,bn+eca,bn+cbam,bn+gc
  ZOO=$($PY -c "from noiseattack import zoo; done = set('$PAPER,$REST12'.split(','))
print(','.join(n for n in zoo.norm_names() + tuple('bn+' + a for a in zoo.attention_names()) if n not in done))")
  GRIDS=""
  # #21's order: the study's five layers at n = 5, then at n = 10 (the study's cells), then the rest
  # of the twelve, then the zoo
  for part in "$PAPER:0-4" "$PAPER:5-9" "$REST12:0-4" "$ZOO:0-4"; do
    g=$(mktemp --suffix=.toml)
    $PY scripts/protocol_grid.py fmnist-gpu --seeds "${part##*:}" --set compile=false --norms "${part%%:*}" \
      --data-dir "$DATA" > "$g"
    GRIDS="$GRIDS $g"
  done
  step leaderboard "$LEADERBOARD_S" bash -c "for g in $GRIDS docs/protocols/pilot-gpu-e6.toml docs/protocols/pilot-gpu-random.toml; do
    $PY -m noiseattack sweep \$g --workers 12 --threads 1 --order norm --no-progress; done"
  tar czf "$LOG_DIR/runs.tar.gz" --exclude='*/tb' --exclude='*/ckpt' --exclude='*/.locks' \
    $(ls -d docs/protocols/pilot-gpu/runs docs/protocols/pilot-gpu-random/runs docs/leaderboard/fmnist-gpu/runs \
      2>/dev/null) 2>> "$SUMMARY"
fi
echo "gpu_check done" | tee -a "$SUMMARY"
