"""Regenerate overview.md and overview.csv from a committed report.csv, and (with --doc) the table
between `<!-- overview:begin -->` and `<!-- overview:end -->` in a markdown document.

    python scripts/overview.py docs/study-fmnist/report.csv --doc docs/study-fmnist.md

`noiseattack report` writes the same files from the raw results; this script serves where only
the report's rows are committed. Running it twice changes nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from noiseattack import overview

BEGIN, END = "<!-- overview:begin -->", "<!-- overview:end -->"


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
        text = args.doc.read_text()
        if BEGIN not in text or END not in text:
            print(f"overview: error: {args.doc} has no {BEGIN} ... {END} region", file=sys.stderr)
            return 2
        body = md.split("\n", 2)[2].strip()  # without the "# Overview" heading
        body = re.sub(r"^## ", "#### ", body, flags=re.M)
        new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{body}\n{END}", text, flags=re.S)
        args.doc.write_text(new)
    print(f"wrote {out / 'overview.md'}, {out / 'overview.csv'}" + (f" and the overview in {args.doc}" if args.doc else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
