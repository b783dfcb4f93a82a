"""docs/performance.md's generated regions are what scripts/bench_doc.py makes of the committed logs:
each `<!-- bench:NAME:begin -->` region holds the table of the one log named NAME under docs/bench/."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_doc import table  # noqa: E402


def test_every_bench_region_is_its_logs_table():
    doc = (REPO / "docs" / "performance.md").read_text()
    regions = re.findall(r"<!-- bench:(\S+):begin -->\n(.*?)\n<!-- bench:\1:end -->", doc, flags=re.S)
    assert len(regions) >= 4, "performance.md lost its generated regions"
    for name, body in regions:
        logs = [p for p in (REPO / "docs" / "bench").rglob(f"{name}.*") if p.suffix in (".txt", ".log")]
        assert len(logs) == 1, f"region {name}: want one log named {name}.txt or .log under docs/bench, found {logs}"
        assert body == table(logs[0].read_text()), f"region {name} is not bench_doc.py's table of {logs[0]}"


def test_bench_protocol_prints_the_ratio_lines_bench_doc_reads(capsys, monkeypatch):
    """scripts/bench_protocol.py end to end, at its smallest (one step, one round, two layers): the
    compiled and the eager model of each step, and the ratio lines are what bench_doc.py tabulates."""
    import pytest
    from conftest import cxx_compiler

    from noiseattack import train

    if cxx_compiler() is None:
        pytest.skip("no C++ compiler: torch.compile on a CPU needs one")
    import bench_protocol

    monkeypatch.setattr(train._CompileState, "failed", False)  # a fallback stays in this test (it stops the script)

    argv = ["--settings", "clean", "--norms", "bn,bn-damped", "--steps", "1", "--rounds", "1"]
    assert bench_protocol.main(argv) == 0
    out = capsys.readouterr().out
    ratio = [line.split() for line in out.splitlines() if line.startswith("ratio ")]
    assert [r[1] for r in ratio] == ["compiled_vs_eager_clean_bn", "compiled_vs_eager_clean_bn-damped",
                                     "step_clean_bn-damped_vs_bn"] and all(float(r[2]) > 0 for r in ratio)
    rows = [line for line in table(out).splitlines() if line.startswith("| `")]
    assert rows == [f"| `{r[1]}` | {r[2]} | {r[4]} | {r[6]} |" for r in ratio]
    assert not train._CompileState.failed  # both models compiled: the ratios compare compiled with eager
