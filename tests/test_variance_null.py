"""The README's variance-null table is what scripts/variance_null.py's fixed-seed simulation gives,
byte for byte (the permutation test's rejection rate under the null); a doc without the region is
one line, exit 2, nothing written."""

import subprocess
import sys
from pathlib import Path

from conftest import assert_region_regenerates

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "variance_null.py"


def test_the_readme_table_regenerates_byte_for_byte(tmp_path):
    assert_region_regenerates(tmp_path, "variance_null.py", "README.md")


def test_a_doc_without_the_region_is_one_line_and_exit_2(tmp_path):
    doc = tmp_path / "notes.md"
    doc.write_text("no region here\n")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--doc", str(doc)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "variance-null" in proc.stderr
    assert proc.stdout == "" and doc.read_text() == "no region here\n"
