"""Screenshots of TensorBoard as a user first sees it: the HParams tab and the Time Series tab.

    python scripts/tb_screenshots.py runs/<experiment>/tb --out shots/

Starts `tensorboard --logdir LOGDIR` on localhost only, waits until it answers, takes headless
Chromium screenshots (1400x900) of `#hparams` and `#timeseries`, and stops the TensorBoard it
started. Needs `chromium` (Debian: apt-get install chromium) or Google Chrome on PATH.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

TABS = {"hparams": "#hparams", "timeseries": "#timeseries"}


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
        for name, anchor in TABS.items():
            out = (args.out / f"{name}.png").absolute()
            screenshot(chrome, base + anchor, out, args.size, args.budget_ms)
            print(out)
    finally:
        tb.terminate()
        try:
            tb.wait(timeout=10)
        except subprocess.TimeoutExpired:
            tb.kill()


if __name__ == "__main__":
    main()
