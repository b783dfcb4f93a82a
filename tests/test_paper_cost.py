"""The README's paper-cost paragraph is what scripts/paper_cost.py counts from the model, byte for
byte; its count of ResNet-20 is the one written out by hand here."""

import sys
from pathlib import Path

from conftest import assert_region_regenerates

REPO = Path(__file__).resolve().parents[1]


def test_the_readme_paragraph_regenerates_byte_for_byte(tmp_path):
    assert_region_regenerates(tmp_path, "paper_cost.py", "README.md")


def test_resnet20_multiply_adds_and_normalized_activations_by_hand():
    """ResNet-20 on a 32x32 image, 100 classes: a 3x3 stem conv 3->16; per stage three basic blocks of two
    3x3 convs (16, 32, 64 channels at 32x32, 16x16, 8x8), the first conv of stages 2 and 3 from the
    narrower input, with a 1x1 projection on their shortcut; a 64->100 classifier. Norms: one after the
    stem, two per block, one per projection shortcut."""
    sys.path.insert(0, str(REPO / "scripts"))
    import paper_cost

    stem = 32 * 32 * 16 * (3 * 9)
    stage1 = 6 * 32 * 32 * 16 * (16 * 9)
    stage2 = 16 * 16 * 32 * (16 * 9) + 5 * 16 * 16 * 32 * (32 * 9) + 16 * 16 * 32 * 16
    stage3 = 8 * 8 * 64 * (32 * 9) + 5 * 8 * 8 * 64 * (64 * 9) + 8 * 8 * 64 * 32
    fc = 64 * 100
    acts = 32 * 32 * 16 * (1 + 6) + 16 * 16 * 32 * (6 + 1) + 8 * 8 * 64 * (6 + 1)
    assert paper_cost.count(20) == (stem + stage1 + stage2 + stage3 + fc, acts, 1 + 18 + 2)


def test_resnet164_multiply_adds_and_normalized_activations_by_hand():
    """The paper preset's ResNet-164: a 3x3 stem conv 3->16; three stages of 18 bottleneck blocks (1x1 in->p,
    3x3 p->p carrying the stride, 1x1 p->4p; p = 16, 32, 64 at 32x32, 16x16, 8x8), a 1x1 projection on
    each stage's first shortcut; a 256->100 classifier. Norms: after the stem, three per block, one per
    projection shortcut (the preset's `--shortcut-norm bn`)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import paper_cost

    macs, acts, layers, inch = 32 * 32 * 16 * (3 * 9) + 256 * 100, 32 * 32 * 16, 1, 16
    for p, h, h_in in ((16, 32, 32), (32, 16, 32), (64, 8, 16)):
        out = 4 * p
        macs += h_in * h_in * p * inch + h * h * p * (p * 9) + h * h * out * p + h * h * out * inch  # the first block
        acts += h_in * h_in * p + h * h * p + h * h * out + h * h * out
        macs += 17 * (h * h * p * out + h * h * p * (p * 9) + h * h * out * p)
        acts += 17 * (h * h * p + h * h * p + h * h * out)
        layers += 4 + 17 * 3
        inch = out
    assert paper_cost.count(164) == (macs, acts, layers)
