"""What the earlier 150-step FashionMNIST study (docs/study-fmnist.md) measured, read from its
committed report, for the docs that cite it (scripts/protocols_doc.py, scripts/study_protocol_doc.py)."""

from __future__ import annotations

import csv
from pathlib import Path

REPORT = Path(__file__).resolve().parents[1] / "docs" / "study-fmnist" / "report.csv"


def clean_bn_text(report: Path = REPORT) -> str:
    """'at 73.90% (n = 10)': clean BN's mean final accuracy in the earlier study's report; 'short of
    its plateau' where the report (or its clean BN row) is absent."""
    if not report.exists():
        return "short of its plateau"
    with open(report) as f:
        row = next((r for r in csv.DictReader(f) if r["attack"] == "clean" and r["norm"] == "bn"), None)
    return f"at {float(row['mean']):.2f}% (n = {row['n']})" if row else "short of its plateau"
