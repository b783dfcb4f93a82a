"""The README's estimate of what reproducing the paper costs on a GPU, counted from the model:
ResNet-164 (`--preset paper`) against ResNet-20 in multiply-adds per 32x32 image (torch's
FlopCounterMode: convolutions and the classifier) and normalized activations, then the epoch's
arithmetic under an *assumed* effective GPU throughput (ASSUMED_TFLOPS: an assumption, not a
measurement; `python scripts/bench.py --device cuda --paper-epoch` times one epoch for real).

    python scripts/paper_cost.py                    # print the paragraph
    python scripts/paper_cost.py --doc README.md    # and write it into the README's paper-cost region
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from noiseattack.config import resolve_train_config  # noqa: E402
from noiseattack.models import cifar_resnet  # noqa: E402
from noiseattack.report.render import update_region  # noqa: E402

REGION = "paper-cost"
ASSUMED_TFLOPS = (1.0, 2.0)  # effective fp32 TFLOP/s on one current GPU: an assumption (see the paragraph)
STEP_OVER_FORWARD = 3  # a training step (forward + backward) costs about 3 forward passes
RUNS = 10  # 2 norms x 5 seeds, the README's reproduction


def count(depth: int) -> tuple[int, int, int]:
    """(multiply-adds, normalized activations, norm layers) of one 32x32 image's forward pass through
    the paper preset's architecture at `depth`, with BN."""
    cfg = resolve_train_config(attack="clean", preset="paper", dataset="cifar100", depth=depth, device="cpu")
    model = cifar_resnet(cfg.depth, 100, "bn", width=cfg.width, block=cfg.block, shortcut_norm=cfg.shortcut_norm).eval()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.numel())) for m in norms]
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        model(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    return flops.get_total_flops() // 2, sum(seen), len(norms)


def paragraph() -> str:
    cfg = resolve_train_config(attack="clean", preset="paper", dataset="cifar100", device="cpu")
    (mac, act, layers), (mac20, act20, _) = count(cfg.depth), count(20)
    train_tflop = 50_000 * STEP_OVER_FORWARD * 2 * mac / 1e12
    eval_tflop = 10_000 * 2 * mac / 1e12
    epoch = train_tflop + eval_tflop
    lo, hi = (epoch / t for t in reversed(ASSUMED_TFLOPS))  # seconds per epoch, fastest first
    run_h = [s * cfg.epochs / 3600 for s in (lo, hi)]
    return (f"**Wall time: an ESTIMATE, not a measurement.** Counted from our model (`python scripts/paper_cost.py`), "
            f"one ResNet-{cfg.depth} forward pass on a 32×32 image is {mac / 1e6:.0f} M multiply-adds, "
            f"{mac / mac20:.1f}× ResNet-20's {mac20 / 1e6:.0f} M, and it normalizes {act / act20:.0f}× as many "
            f"activations ({act / 1e6:.1f} M against {act20 / 1e6:.1f} M). A training step costs about "
            f"{STEP_OVER_FORWARD}× the forward pass, so one epoch is 50,000 × {STEP_OVER_FORWARD} × 2 × "
            f"{mac / 1e6:.0f} M ≈ {train_tflop:.0f} TFLOP, plus ≈ {eval_tflop:.0f} TFLOP for the 10,000-image "
            f"evaluation: ≈ {epoch:.0f} TFLOP. *Assuming* an effective {ASSUMED_TFLOPS[0]:g}–{ASSUMED_TFLOPS[1]:g} "
            f"TFLOP/s on one current GPU in fp32 (a small fraction of its peak: small feature maps and {layers} "
            f"memory-bound norm layers keep utilisation low), an epoch takes {lo:.0f}–{hi:.0f} s, a "
            f"{cfg.epochs}-epoch run {run_h[0]:.1f}–{run_h[1]:.1f} h, and the {RUNS} runs above "
            f"{RUNS * run_h[0]:.0f}–{RUNS * run_h[1]:.0f} GPU-hours, IEBN somewhat more than BN (its per-instance "
            "gate). The assumption may be off by 2× either way; `python scripts/bench.py --device cuda "
            f"--paper-epoch` times one epoch on your GPU (multiply by {cfg.epochs}).")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc", type=Path, help="a markdown file whose paper-cost region is replaced")
    args = ap.parse_args()
    return update_region(args.doc, REGION, paragraph, "paper_cost")


if __name__ == "__main__":
    sys.exit(main())
