"""docs/study-protocol.md and docs/study-protocol/claims.* are what scripts/study_protocol_doc.py writes
from the committed runs of the fmnist protocol."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_study_regenerates_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "study_protocol_doc.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for rel in ("study-protocol.md", "study-protocol/claims.md", "study-protocol/claims.csv"):
        assert (tmp_path / rel).read_bytes() == (REPO / "docs" / rel).read_bytes(), rel
