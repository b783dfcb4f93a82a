"""docs/protocols.md is what scripts/protocols_doc.py writes from the committed pilot and protocol runs."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_committed_protocols_doc_regenerates_byte_for_byte(tmp_path):
    out = tmp_path / "protocols.md"
    subprocess.run([sys.executable, str(REPO / "scripts" / "protocols_doc.py"), "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_bytes() == (REPO / "docs" / "protocols.md").read_bytes()
