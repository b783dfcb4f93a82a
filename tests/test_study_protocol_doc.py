"""docs/study-protocol.md (docs/study-protocol-gpu.md) and their claims.* are what
scripts/study_protocol_doc.py writes from the committed runs of the fmnist (fmnist-gpu) protocol."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("protocol, stem", [("fmnist", "study-protocol"), ("fmnist-gpu", "study-protocol-gpu")])
def test_the_study_regenerates_byte_for_byte(tmp_path, protocol, stem):
    subprocess.run([sys.executable, str(REPO / "scripts" / "study_protocol_doc.py"), "--protocol", protocol,
                    "--out", str(tmp_path)], check=True, capture_output=True)
    for rel in (f"{stem}.md", f"{stem}/claims.md", f"{stem}/claims.csv"):
        assert (tmp_path / rel).read_bytes() == (REPO / "docs" / rel).read_bytes(), rel


def test_the_precise_reading_follows_the_intervals():
    sys.path.insert(0, str(REPO / "scripts"))
    from study_protocol_doc import precise_reading

    assert precise_reading([]).startswith("No mix runs")
    down = precise_reading([("bn", -60.0, -70.0, -50.0), ("iebn", -30.0, -50.0, -10.0)])
    assert "lowers* the mix accuracy of 2 of 2 layers (by 30.0 to 60.0 points" in down and "recovers" not in down
    mixed = precise_reading([("bn", 5.0, 1.0, 9.0), ("iebn", 0.1, -1.0, 1.2)])
    assert "recovers accuracy for `bn`" in mixed and "1 layer(s) show no difference" in mixed and "lowers" not in mixed
