"""The leaderboard as one static HTML page: no server, no network, no external file. A table sortable
by any column (click a header), each layer's details (its runs per setting as a strip plot, its mean
test-accuracy curves, its numbers), the protocol's definition and how to add a layer. Plots are
inline SVG written here, so the page is one file and the same bytes for the same records."""

from __future__ import annotations

import html
import json
from typing import Any

from .board import RANKED_BY, Board, Cell, Row
from .render import (COST_LEGEND, SPLIT_LEGEND, drop_text, machines_text, mean_cell, outcome_legend, precise_columns,
                     precise_legend, precise_text, split_rows)

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1400px;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}table{border-collapse:collapse}
#board th{cursor:pointer;user-select:none;background:#f2f2f2;position:sticky;top:0}
#board th:after{content:" \\2195";color:#999}#board th.asc:after{content:" \\25b2"}#board th.desc:after{content:" \\25bc"}
td,th{border:1px solid #ddd;padding:.25rem .4rem;text-align:right;white-space:nowrap}
#board{font-size:13px}#board th{white-space:normal;max-width:9rem;vertical-align:bottom}
td.l,th.l{text-align:left}tr:nth-child(even) td{background:#fafafa}.short{color:#a60}
details{margin:.4rem 0;border:1px solid #ddd;padding:.3rem .6rem}summary{cursor:pointer}
code{background:#f4f4f4;padding:0 .2rem}.note{color:#555}svg text{font:11px sans-serif}
"""
SCRIPT = """
document.querySelectorAll('#board th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var body = document.querySelector('#board tbody'), rows = Array.from(body.rows);
    var asc = !th.classList.contains('asc');
    document.querySelectorAll('#board th').forEach(function(h){h.classList.remove('asc','desc');});
    th.classList.add(asc ? 'asc' : 'desc');
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v, nx = parseFloat(x), ny = parseFloat(y);
      if (x === '' && y !== '') return 1; if (y === '' && x !== '') return -1;
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function(r){body.appendChild(r);});
  });
});
"""


def _td(text: str, value: Any = "", left: bool = False, cls: str = "") -> str:
    v = "" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value))
    c = " ".join(x for x in ("l" if left else "", cls) if x)
    return f'<td{f" class={chr(34)}{c}{chr(34)}" if c else ""} data-v="{html.escape(v)}">{text}</td>'


def _table(board: Board) -> str:
    p = board.protocol
    attacked = [s for s in p.settings if s.id != "clean"]
    heads = [("rank", ""), ("layer", "l"), ("origin", "l"), ("params", ""), ("step vs BN", ""), ("robust acc", "")]
    heads += [(s.title, "") for s in p.settings] + [(f"drop under {s.id}", "") for s in attacked]
    precise_cols = precise_columns(board)
    heads += [(h, "") for _, _, h in precise_cols]
    out = ['<table id="board"><thead><tr>' + "".join(f'<th class="{c}">{html.escape(h)}</th>' for h, c in heads)
           + "</tr></thead><tbody>"]
    for r in board.rows:
        cells = [_td(str(r.rank or "–"), r.rank), _td(f'<a href="#layer-{_id(r.layer)}"><code>{html.escape(r.layer)}'
                                                       f"</code></a>", r.layer, left=True),
                 _td(html.escape(r.origin), r.origin, left=True), _td(f"{r.params:,}" if r.params else "–", r.params),
                 _td(f"{r.step_cost:.2f}" if r.step_cost else "–", r.step_cost),
                 _td(f"{r.robust:.2f}" if r.robust is not None else "–", r.robust)]
        for s in p.settings:
            c = r.cells.get(s.id)
            cells.append(_td(html.escape(mean_cell(c, p.seeds)), c.stats.get("mean") if c and c.runs else None,
                             cls="short" if s.id in r.short else ""))
        for s in attacked:
            c = r.cells.get(s.id)
            cells.append(_td(html.escape(drop_text(c)), (c.drop or {}).get("estimate") if c else None))
        for sid, attr, _ in precise_cols:
            c = r.cells.get(sid)
            cells.append(_td(html.escape(precise_text(c, attr, p.seeds)), (getattr(c, attr) or {}).get("mean") if c else None,
                             cls="short" if sid in r.short else ""))
        out.append(f'<tr id="row-{_id(r.layer)}">' + "".join(cells) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def _id(layer: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in layer)


def _strip_plot(row: Row, board: Board) -> str:
    """Each finished run's final accuracy per setting (dots), the mean (a bar)."""
    settings = board.protocol.settings
    values = [v for s in settings for v in (row.cells[s.id].values if s.id in row.cells else [])]
    if not values:
        return ""
    lo, hi = min(values) - 0.5, max(values) + 0.5
    w, h, left, top, bottom = 120 * len(settings) + 50, 170, 45, 10, 30

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * (h - top - bottom)

    parts = [f'<svg width="{w}" height="{h}" role="img" aria-label="runs of {html.escape(row.layer)}">']
    for t in (lo + 0.5, (lo + hi) / 2, hi - 0.5):
        parts.append(f'<text x="{left - 4}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.1f}</text>'
                     f'<line x1="{left}" x2="{w}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eee"/>')
    for i, s in enumerate(settings):
        cx = left + 60 + 120 * i
        parts.append(f'<text x="{cx}" y="{h - 8}" text-anchor="middle">{html.escape(s.title)}</text>')
        cell = row.cells.get(s.id)
        if not cell or not cell.runs:
            continue
        for j, v in enumerate(cell.values):
            parts.append(f'<circle cx="{cx - 20 + 40 * j / max(1, len(cell.values) - 1):.1f}" cy="{y(v):.1f}" r="3" '
                         f'fill="{COLORS[i % len(COLORS)]}" fill-opacity="0.7"><title>seed {cell.seeds[j]}: '
                         f'{v:.2f}</title></circle>')
        m = cell.stats["mean"]
        parts.append(f'<line x1="{cx - 28}" x2="{cx + 28}" y1="{y(m):.1f}" y2="{y(m):.1f}" stroke="#000"/>')
    return "".join(parts) + "</svg>"


def _curves(row: Row, board: Board) -> str:
    """Mean test accuracy per epoch, one line per setting."""
    series = []
    for i, s in enumerate(board.protocol.settings):
        cell = row.cells.get(s.id)
        if not cell or not cell.runs:
            continue
        epochs = min(len(r["history"]) for r in cell.runs)
        means = [sum(r["history"][e]["test_acc"] for r in cell.runs) / len(cell.runs) for e in range(epochs)]
        series.append((s.title, COLORS[i % len(COLORS)], means))
    if not series or max(len(m) for _, _, m in series) < 2:
        return ""
    lo = min(min(m) for _, _, m in series) - 0.5
    hi = max(max(m) for _, _, m in series) + 0.5
    n = max(len(m) for _, _, m in series)
    w, h, left, top, bottom, legend = 470, 170, 45, 10, 30, 170

    def xy(e: int, v: float) -> str:
        return f"{left + e / (n - 1) * (w - left - legend):.1f},{top + (hi - v) / (hi - lo) * (h - top - bottom):.1f}"

    parts = [f'<svg width="{w}" height="{h}" role="img" aria-label="curves of {html.escape(row.layer)}">',
             f'<text x="{left}" y="{h - 8}">epoch 1</text><text x="{w - legend}" y="{h - 8}" text-anchor="end">epoch {n}</text>',
             f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{hi - 0.5:.1f}</text>',
             f'<text x="{left - 4}" y="{h - bottom}" text-anchor="end">{lo + 0.5:.1f}</text>']
    for k, (title, color, means) in enumerate(series):
        pts = " ".join(xy(e, v) for e, v in enumerate(means))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>'
                     f'<text x="{w - legend + 8}" y="{top + 12 + 14 * k}" fill="{color}">{html.escape(title)}</text>')
    return "".join(parts) + "</svg>"


def _details(board: Board) -> str:
    out = []
    for r in board.rows:
        rows = "".join(f"<tr><td class=l>{html.escape(s.title)}</td><td>{html.escape(mean_cell(r.cells.get(s.id), board.protocol.seeds))}</td>"
                       f"<td>{html.escape(_vs_bn(r.cells.get(s.id)))}</td><td class=l>"
                       f"{html.escape(' '.join(map(str, r.cells[s.id].seeds)) if s.id in r.cells else '')}</td></tr>"
                       for s in board.protocol.settings)
        out.append(f'<details id="layer-{_id(r.layer)}"><summary><code>{html.escape(r.layer)}</code> '
                   f"({html.escape(r.origin)}) — {html.escape(r.description)}</summary>"
                   f"<table><tr><th class=l>setting</th><th>final accuracy</th><th>vs BN [95% CI]</th><th class=l>seeds"
                   f"</th></tr>{rows}</table>{_strip_plot(r, board)}{_curves(r, board)}</details>")
    return "\n".join(out)


def _vs_bn(cell: Cell | None) -> str:
    v = (cell.vs_bn or {}) if cell else {}
    if v.get("diff_vs_bn") is None:
        return "–"
    ci = f" [{v['diff_ci95_low']:+.2f}, {v['diff_ci95_high']:+.2f}]" if v.get("diff_ci95_low") is not None else ""
    return f"{v['diff_vs_bn']:+.2f}{ci}"


def _splits(board: Board) -> str:
    """The cells trained on more than one machine kind, split ("" where there are none)."""
    rows = split_rows(board)
    if not rows:
        return ""
    body = "".join(f"<tr><td class=l><code>{html.escape(r[0])}</code></td>"
                   + "".join(f"<td class=l>{html.escape(c)}</td>" for c in r[1:3])
                   + "".join(f"<td>{html.escape(c)}</td>" for c in r[3:]) + "</tr>" for r in rows)
    return (f"<p>{html.escape(SPLIT_LEGEND)}</p>\n<table><tr><th class=l>layer</th><th class=l>setting</th>"
            f"<th class=l>by machine kind: mean (n)</th><th>difference [95% CI]</th><th>Welch p</th></tr>{body}"
            "</table>\n")


def to_html(board: Board, how_to_add: str) -> str:
    p = board.protocol
    definition = json.dumps(p.describe(), indent=1)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>noiseattack leaderboard: '
            f"{html.escape(p.name)} v{p.version}</title><style>{STYLE}</style></head><body>\n"
            f"<h1>noiseattack leaderboard: <code>{html.escape(p.name)}</code> v{p.version}</h1>\n"
            f"<p>{html.escape(p.summary)}. Final test accuracy (%), mean ± std (n) over seeds; ▲/▼ mean above/below "
            f"BN's, ◆ variance different from BN's (Holm-adjusted p &lt; 0.05 across the board); * fewer runs than the "
            f"protocol's n = {p.seeds}. {html.escape(RANKED_BY)}. Click a "
            f"column to sort. {html.escape(COST_LEGEND)}</p>\n<p>{html.escape(precise_legend(board))}</p>\n" + (f"<p>{html.escape(outcomes)}</p>\n" if (outcomes := outcome_legend(board)) else "")
            + f"{_table(board)}\n" + _splits(board)
            + f'<p class="note">{html.escape(machines_text(board))}'
            + "</p>\n<h2>Layers</h2>\n" + _details(board)
            + f'\n<h2 id="protocol">Protocol</h2>\n<pre>{html.escape(definition)}</pre>\n'
            + f'<h2 id="add">How to add a layer</h2>\n{how_to_add}\n<script>{SCRIPT}</script>\n</body></html>\n')
