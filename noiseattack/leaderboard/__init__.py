"""Leaderboards: every layer's committed runs of one protocol, compared and ranked.

    from noiseattack import leaderboard, protocols
    board = leaderboard.build_leaderboard(protocols.get("fmnist"))      # from docs/leaderboard/fmnist/runs
    leaderboard.write_leaderboard(board, "docs/leaderboard/fmnist")     # .md, .csv, .json, .html

- board.py: reading the records (refusing any run that is not the protocol's), the statistics, the rank
- render.py: leaderboard.md, leaderboard.csv, leaderboard.json
- page.py: leaderboard.html, one static page (sortable table, per-layer details, inline SVG plots)
- bench.py: `noiseattack bench`: the calibration check, a layer's runs, its place
"""

from __future__ import annotations

from pathlib import Path

from ..protocols import Protocol
from .board import Board, build
from .page import to_html
from .render import to_csv, to_json, to_markdown

FILES = ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "leaderboard.html")

HOW_TO_ADD = """<ol>
<li>Write your layer: a class or function called with the channel count that returns an <code>nn.Module</code>
keeping N×C×H×W (see the README's <em>Your own layer</em>), e.g. <code>mypkg/layers.py: MyNorm</code>.</li>
<li>In a clone of this repository: <code>noiseattack bench --norm mypkg.layers:MyNorm --protocol {name}
--workers 2 --threads 1</code>. It first checks that your machine reproduces the committed BN
(a calibration), then trains every setting × seed of the protocol into <code>{runs}</code> (re-run it to resume),
and prints your layer's place.</li>
<li>Commit the new <code>results.jsonl</code> lines under <code>{runs}</code> (each record carries the layer's import
path and the sha256 of its source file) with your layer's source, and regenerate:
<code>noiseattack leaderboard --protocol {name}</code>.</li>
</ol>
<p>A run of another protocol version, another precision or device, another thread count, or from a changed layer
source is refused: a leaderboard never mixes results.</p>
<p>Every run's curves, in TensorBoard: <code>noiseattack tensorboard {runs}</code> rebuilds their logs from the
committed records and prints the command that opens the per-layer comparison.</p>"""


def default_runs_dir(proto: Protocol) -> Path:
    return proto.runs_dir()


def build_leaderboard(proto: Protocol, runs_dirs: list[str | Path] | None = None) -> Board:
    """The board of `proto` from its runs dirs (default docs/leaderboard/<name>/runs)."""
    dirs = [Path(d) for d in runs_dirs] if runs_dirs else [default_runs_dir(proto)]
    return build(proto, dirs)


def render_files(board: Board) -> dict[str, str]:
    p = board.protocol
    how = HOW_TO_ADD.format(name=p.name, runs=default_runs_dir(p))
    return {"leaderboard.md": to_markdown(board), "leaderboard.csv": to_csv(board),
            "leaderboard.json": to_json(board), "leaderboard.html": to_html(board, how)}


def write_leaderboard(board: Board, out_dir: str | Path) -> list[Path]:
    from ..fileio import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_files(board).items():
        atomic_write_text(out / name, text)
        written.append(out / name)
    return written


__all__ = ["Board", "FILES", "build_leaderboard", "default_runs_dir", "render_files", "write_leaderboard"]
