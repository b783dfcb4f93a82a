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
