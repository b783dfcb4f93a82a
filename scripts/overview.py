"""Regenerate overview.md and overview.csv from a committed report.csv, and (with --doc) the table
between `<!-- overview:begin -->` and `<!-- overview:end -->` in a markdown document.

    python scripts/overview.py docs/zoo-check/report.csv --doc docs/zoo-check.md

`noiseattack report` writes the same files from the raw results; this script serves where only
the report's rows are committed. Running it twice changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's package, whichever one is installed

from noiseattack import overview  # noqa: E402
from noiseattack.report.study import replace_region  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report_csv", type=Path)
    ap.add_argument("--doc", type=Path, help="a markdown file whose overview region is replaced")
    args = ap.parse_args()
    try:
        rows = overview.read_report_csv(args.report_csv.read_text())
    except OSError as e:
        print(f"overview: error: cannot read {args.report_csv}: {e.strerror}", file=sys.stderr)
        return 2
    tables = overview.build(rows)
    out = args.report_csv.parent
    (out / "overview.csv").write_text(overview.to_csv(tables))
    md = overview.to_markdown(tables)
    (out / "overview.md").write_text(md)
    if args.doc:
        try:
            args.doc.write_text(replace_region(args.doc.read_text(), "overview", overview.doc_body(md)))
        except ValueError as e:
            print(f"overview: error: {args.doc}: {e}", file=sys.stderr)
            return 2
    print(f"wrote {out / 'overview.md'}, {out / 'overview.csv'}" + (f" and the overview in {args.doc}" if args.doc else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
