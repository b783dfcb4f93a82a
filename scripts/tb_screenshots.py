"""Screenshots of TensorBoard as a user first sees it: the HParams tab, the Time Series tab, and the
Time Series on the per-norm comparison (the URL the CLI prints: the `<norm>-mean` runs, coloured by
norm; and the same without its run filter: every seed in its norm's colour).

    python scripts/tb_screenshots.py runs/<experiment>/tb --out shots/

Starts `tensorboard --logdir LOGDIR` on localhost only, waits until it answers, takes headless
Chromium screenshots (1400x900) of `#hparams`, `#timeseries` and the comparison (both), and stops the
TensorBoard it started. Headless Chromium drew TensorBoard's WebGL charts empty (swiftshader
included), so they are drawn as SVG (`forceSVG=true`, TensorBoard's own flag; the same charts). Needs `chromium` (Debian: apt-get install
chromium) or Google Chrome on PATH.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from noiseattack.tbhparams import comparison_url  # noqa: E402


def pages(port: int) -> dict[str, str]:
    """{screenshot name: URL}, each with TensorBoard's forceSVG flag (see the docstring)."""
    base = f"http://localhost:{port}/"

    def svg(url: str) -> str:
        return url.replace("/?", "/?forceSVG=true&", 1)

    return {"hparams": base + "?forceSVG=true#hparams", "timeseries": base + "?forceSVG=true#timeseries",
            "compare": svg(comparison_url(port)), "compare-seeds": svg(comparison_url(port, means_only=False))}


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return name
    sys.exit("tb_screenshots: no chromium or google-chrome on PATH (Debian: apt-get install chromium)")


def wait_for(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"tb_screenshots: tensorboard exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"tb_screenshots: tensorboard did not answer at {url} within {timeout_s:.0f} s")


def screenshot(chrome: str, url: str, out: Path, size: str, budget_ms: int) -> None:
    subprocess.run([chrome, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={size}", f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logdir", type=Path)
    ap.add_argument("--out", type=Path, default=Path("tb_screenshots"))
    ap.add_argument("--port", type=int, default=6006)
    ap.add_argument("--size", default="1400,900")
    ap.add_argument("--budget-ms", type=int, default=15000, help="Chromium's virtual time for the page to render")
    args = ap.parse_args()
    chrome = browser()
    args.out.mkdir(parents=True, exist_ok=True)
    base = f"http://localhost:{args.port}/"
    tb = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(args.logdir),
                           "--host", "localhost", "--port", str(args.port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(base + "data/runs", tb)
        for name, url in pages(args.port).items():
            out = (args.out / f"{name}.png").absolute()
            screenshot(chrome, url, out, args.size, args.budget_ms)
            print(out)
    finally:
        tb.terminate()
        try:
            tb.wait(timeout=10)
        except subprocess.TimeoutExpired:
            tb.kill()


if __name__ == "__main__":
    main()
