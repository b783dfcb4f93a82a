"""Put the ratios of committed benchmark logs into a markdown document.

    python scripts/bench.py --zoo --ablations | tee docs/bench/zoo-avx2.txt     # measure (minutes)
    python scripts/bench_doc.py docs/bench/zoo-avx2.txt --doc docs/performance.md

For each log, the text between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->` (NAME: the
log's file name without .txt) is replaced by the log's machine line and a table of its `ratio`
lines (median, min, max of the paired per-round ratios), or, for a log without ratio lines (such
as scripts/bench_layers.py's), by the log itself. Running it twice changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's package, whichever one is installed

from noiseattack.report.study import replace_region  # noqa: E402


def table(log: str) -> str:
    """The machine and the ratio lines as a table; a log without ratio lines, verbatim."""
    lines = log.splitlines()
    if not any(line.startswith("ratio ") for line in lines):
        return "```text\n" + log.strip() + "\n```"
    machine = next((line for line in lines if line.startswith("cpu: ")), "cpu: unknown")
    kind = next((line.split(";")[0] for line in lines if line.startswith(("AVX", "DEFAULT", "ZVECTOR", "VSX"))), "")
    rows = [line.split() for line in lines if line.startswith("ratio ")]
    out = [f"Machine: {machine.removeprefix('cpu: ')}" + (f"; CPU kind {kind}" if kind else ""), "",
           "| ratio | median | min | max |", "|---|---:|---:|---:|"]
    for r in rows:  # ratio NAME MEDIAN min MIN max MAX
        out.append(f"| `{r[1]}` | {r[2]} | {r[4] if len(r) > 4 else ''} | {r[6] if len(r) > 6 else ''} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", type=Path)
    ap.add_argument("--doc", type=Path, required=True)
    args = ap.parse_args()
    text = args.doc.read_text()
    for log in args.logs:
        try:
            text = replace_region(text, f"bench:{log.stem}", table(log.read_text()))
        except ValueError as e:
            print(f"bench_doc: error: {args.doc} has {e}", file=sys.stderr)
            return 2
    args.doc.write_text(text)
    print(f"updated {args.doc} from {', '.join(map(str, args.logs))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
