"""A sweep end to end against the pure training compute of its runs, and many runs on one GPU.

    python scripts/bench_sweep.py --protocol fmnist --norms bn,iebn,bnse,bn-damped,iebn-b0 --seeds 0,1 \
        --workers 2 --threads 1                     # CPU: two single-threaded workers
    python scripts/bench_sweep.py ... --workers 1 --threads 2                  # the other layout
    python scripts/bench_sweep.py --protocol fmnist-gpu --workers 1,8 ...    # a GPU: 1 worker, then 8 sharing it

For each worker count W the protocol's runs (the layers, seeds and settings asked for) are trained by
`noiseattack sweep` in a fresh process, as a user runs it, into a fresh runs dir (or --runs-dir:
runs already there are skipped, so a real leaderboard batch can be the measurement). Then:

  pure       every run's steps x the step time of its layer and setting, measured in W processes
             stepping side by side at T threads each (the layout of the sweep: two workers on two
             cores do not run as fast as one alone), on one resident batch: what bench.py calls pure
  wall x W   the sweep's wall time times its W slots: what the machine gave it
  efficiency pure / (wall x W): the share of the machine that was training compute

and where the rest went: in the runs (evaluation, the data path, logging, checkpoints: the runs'
own wall times less their pure compute), compiling (the records' compile_s), and outside the runs
(process start-up, data loading, summaries, slots idle at the end). With several worker counts it
prints the throughput of each (runs per hour) and checks that every run's result is the same
whatever the layout (the largest difference in final accuracy between layouts).

The last lines are `ratio sweep_vs_pure_w<W> <efficiency>` and, with several W, `ratio
runs_per_hour_w<W>_vs_w<first> <x>`, for scripts to read. The CPU kind is printed first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from noiseattack import protocols  # noqa: E402
from noiseattack.config import RunConfig  # noqa: E402


def _step_time(args: tuple) -> float:
    """Seconds per training step of one layer and setting, measured in this (spawned) process."""
    cfg, norm, threads, steps, warmup = args
    import torch.nn.functional as F

    from noiseattack.train import build_model, compile_model

    torch.set_num_threads(threads)
    model = build_model(RunConfig(cfg, norm, 0), 10)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    model.train()
    batch = cfg.batch_size + cfg.attack_spec().extra_images(cfg.attack_params())  # mix: + k
    step_model, _ = compile_model(model, cfg, batch)
    x = torch.randn(batch, 3, 32, 32, device=cfg.device)
    x = x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x
    y = torch.randint(0, 10, (cfg.batch_size,), device=cfg.device)
    sync = torch.cuda.synchronize if cfg.device.startswith("cuda") else (lambda: None)
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        loss = F.cross_entropy(step_model(x)[:cfg.batch_size], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    return (time.perf_counter() - t0) / steps


def pure_step_times(configs: dict[tuple[str, str], object], workers: int, threads: int, steps: int,
                    warmup: int) -> dict[tuple[str, str], float]:
    """(norm, setting) -> seconds per step, each measured in `workers` processes side by side (their median)."""
    ctx = multiprocessing.get_context("spawn")
    out = {}
    with ctx.Pool(workers) as pool:
        for (norm, sid), cfg in configs.items():
            times = pool.map(_step_time, [(cfg, norm, threads, steps, warmup)] * workers)
            out[(norm, sid)] = statistics.median(times)
    return out


def run_sweep(grid_file: Path, workers: int, threads: int) -> float:
    """Wall seconds of `noiseattack sweep` in a fresh process (its output goes to our stderr)."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "noiseattack", "sweep", str(grid_file), "--workers", str(workers), "--threads",
           str(threads), "--no-progress"]
    done = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
    if done.returncode not in (0, 3):
        sys.exit(f"bench_sweep: the sweep exited with {done.returncode}")
    return time.perf_counter() - t0


def records(runs_dir: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(runs_dir.rglob("results.jsonl"))
            for line in f.read_text().splitlines() if line.strip()]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="fmnist")
    ap.add_argument("--norms", default="bn,iebn,bnse,bn-damped,iebn-b0")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--settings", default="", help="comma-separated setting ids [default: all of the protocol's]")
    ap.add_argument("--workers", default="2", help="worker counts, comma-separated: one sweep each")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--device", default=None, help="[default: the protocol's]")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="the runs' --compile [default: the protocol's default for the device]")
    ap.add_argument("--runs-dir", type=Path, default=None,
                    help="train into this dir (runs already done there are skipped; one worker count only)")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--pure-steps", type=int, default=20)
    ap.add_argument("--quick", action="store_true",
                    help="a smoke test, not the protocol: 1 epoch of 1024 training images, 512 test images")
    return ap


def main() -> None:
    args = _parser().parse_args()
    proto = protocols.get(args.protocol)
    device = args.device or proto.device
    norms = [n.strip() for n in args.norms.split(",") if n.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]
    wanted = [s.strip() for s in args.settings.split(",") if s.strip()] or [s.id for s in proto.settings]
    if args.runs_dir is not None and len(worker_counts) > 1:
        sys.exit("bench_sweep: --runs-dir takes one worker count")
    print(f"cpu: {torch.backends.cpu.get_cpu_capability()}, {multiprocessing.cpu_count()} cores; "
          f"device {device}" + (f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else "")
          + f"; torch {torch.__version__}")
    extra = {} if args.compile is None else {"compile": args.compile}
    if args.quick:
        extra.update(epochs=1, train_subset=1024, test_subset=512)
        print("--quick: a smoke test of this script, not the protocol's runs")
    proto = dataclasses.replace(proto, train={**proto.train, **extra},
                                settings=tuple(proto.setting(s) for s in wanted))
    configs = {(n, s.id): proto.train_config(s, device) for n in norms for s in proto.settings}
    steps_per_epoch = {s.id: _steps_per_epoch(proto.train_config(s, "cpu"), args.data_dir) for s in proto.settings}
    results: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in worker_counts:
            runs_dir = args.runs_dir or Path(tmp) / f"w{w}"
            doc = proto.grid(norms, seeds=seeds, runs_dir=runs_dir, data_dir=args.data_dir)
            doc["train"]["device"] = device
            grid_file = Path(tmp) / f"grid-w{w}.toml"
            grid_file.write_text(protocols.grid_toml(doc))
            before = {r["key"] for r in records(runs_dir)} if runs_dir.exists() else set()
            wall = run_sweep(grid_file, w, args.threads)
            new = [r for r in records(runs_dir) if r["key"] not in before]
            pure = pure_step_times({k: c for k, c in configs.items() if k[0] in {r["norm"] for r in new}}, w,
                                   args.threads, args.pure_steps, 3)
            results[w] = _account(new, wall, w, pure, steps_per_epoch, proto)
    _print(results, worker_counts)


def _steps_per_epoch(cfg, data_dir: str) -> int:
    from noiseattack.data import load_dataset

    n = cfg.train_subset or len(load_dataset(cfg.dataset, data_dir).train)
    return n // cfg.batch_size


def _account(new: list[dict], wall: float, w: int, pure: dict, steps_per_epoch: dict, proto) -> dict:
    rows = []
    for r in new:
        sid = proto.setting_of(r["config"])
        steps = r["epochs_done"] * steps_per_epoch[sid]
        rows.append({"key": r["key"], "final_acc": r["final_acc"], "wall": r["wall_time_s"],
                     "compile": r.get("compile_s", 0.0), "pure": steps * pure[(r["norm"], sid)]})
    s = {k: sum(x[k] for x in rows) for k in ("wall", "compile", "pure")}
    return {"runs": len(rows), "wall": wall, "slots": w, "pure": s["pure"], "in_runs": s["wall"] - s["pure"],
            "compile": s["compile"], "outside": wall * w - s["wall"] - s["compile"],
            "acc": {x["key"]: x["final_acc"] for x in rows}}


def _print(results: dict[int, dict], worker_counts: list[int]) -> None:
    for w in worker_counts:
        r = results[w]
        total = r["wall"] * r["slots"]
        print(f"\n{w} worker(s): {r['runs']} runs in {r['wall']:.0f} s wall ({3600 * r['runs'] / r['wall']:.1f} runs/h)")
        for name in ("pure", "in_runs", "compile", "outside"):
            print(f"  {name:8s} {r[name]:9.1f} s  {100 * r[name] / total:5.1f}% of wall x {r['slots']}")
    first = results[worker_counts[0]]
    if len(worker_counts) > 1:
        for w in worker_counts[1:]:
            common = set(first["acc"]) & set(results[w]["acc"])
            diff = max((abs(first["acc"][k] - results[w]["acc"][k]) for k in common), default=float("nan"))
            print(f"\n{w} vs {worker_counts[0]} worker(s): {len(common)} runs in both, largest |final_acc difference| "
                  f"{diff:.4f} points")
    print()
    for w in worker_counts:
        r = results[w]
        print(f"ratio sweep_vs_pure_w{w} {r['pure'] / (r['wall'] * r['slots']):.3f}")
    for w in worker_counts[1:]:
        rate = lambda r: r["runs"] / r["wall"]  # noqa: E731
        print(f"ratio runs_per_hour_w{w}_vs_w{worker_counts[0]} {rate(results[w]) / rate(first):.3f}")


if __name__ == "__main__":
    main()
