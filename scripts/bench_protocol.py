"""Does the whole-model compile pay for a protocol's runs on this machine? The protocol's own model
and training setting (its width, batch, the mix setting's larger batches), at the protocol's thread
count, compiled and eager side by side.

    python scripts/bench_protocol.py                             # fmnist, clean and mix, bn and iebn
    python scripts/bench_protocol.py --settings clean --norms bn,gn,bn+se --rounds 7

Each (setting, layer) builds its model twice, compiled (`torch.compile`, as `--compile` trains it)
and eager (IEBN still with its fused `--compile-norms` kernels, as `--no-compile` trains it), once
(the compile is paid before timing, as a run pays it once); a model that cannot be compiled here
stops the script. Then every round times
`--steps` SGD steps of each on a resident batch of the setting's shape, interleaved, and the
compiled-over-eager ratio of images per second is taken within the round (above 1: the compile
pays), and each layer's compiled step time over the first layer's (`--norms`' first, BN by
default: what a training step of the layer costs against BN's; a run also loads batches, evaluates
and recomputes PreciseBN statistics). The median of those paired ratios is printed
with their min and max, in the last lines: `ratio compiled_vs_eager_<setting>_<layer> <median> min
<min> max <max>` and `ratio step_<setting>_<layer>_vs_<first> ...`. The CPU kind is printed first:
figures from different kinds do not compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package

from bench import _model_and_optimizer, cpu_kind, machine  # noqa: E402
from noiseattack import protocols  # noqa: E402


def stepper(cfg, norm: str, batch: int):
    """One SGD step of the setting's model on a resident batch of `batch` images (loss on the first
    cfg.batch_size, as a mix step), compiled when cfg.compile; returns the step function."""
    torch.manual_seed(0)
    step_model, opt = _model_and_optimizer(cfg, norm, num_classes=10, batch=batch)
    if cfg.compile and not isinstance(step_model, torch._dynamo.eval_frame.OptimizedModule):
        # compile_model fell back (it warned): no compiled step to time
        raise SystemExit(f"bench_protocol: {norm} could not be compiled here; nothing to compare")
    x = torch.randn(batch, 3, 32, 32)
    x = x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x
    y = torch.randint(0, 10, (cfg.batch_size,))

    def step() -> None:
        loss = F.cross_entropy(step_model(x)[:cfg.batch_size], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm: the first steps of a compiled model still settle
    step()
    return step


def timed(step, steps: int, images: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * images / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="fmnist", choices=sorted(protocols.PROTOCOLS))
    ap.add_argument("--settings", default="clean,mix", help="the protocol's setting ids, comma-separated")
    ap.add_argument("--norms", default="bn,iebn")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    proto = protocols.get(args.protocol)
    if proto.device != "cpu":
        ap.error(f"{proto.name} is a {proto.device} protocol: this script times CPU runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(proto.threads or threads)
    try:
        return _bench(proto, args)
    finally:
        torch.set_num_threads(threads)  # as it was (a caller's process goes on)


def _bench(proto, args: argparse.Namespace) -> int:
    """Build, compile, time and print (main's body)."""
    print(machine("cpu"), flush=True)
    print(f"protocol {proto.name} v{proto.version} ({proto.summary}), {proto.threads} thread(s); {args.steps} steps "
          f"per measurement", flush=True)
    pairs = {}
    for sid in args.settings.split(","):
        cfg = proto.train_config(sid, "cpu")
        batch = cfg.batch_size + cfg.attack_spec().extra_images(cfg.attack_params())  # as a run's step: B + k under mix
        for norm in args.norms.split(","):
            t0 = time.perf_counter()
            on, off = (stepper(dataclasses.replace(cfg, compile=c), norm, batch) for c in (True, False))
            print(f"{sid} {norm}: built and compiled in {time.perf_counter() - t0:.0f} s", flush=True)
            pairs[(sid, norm, batch)] = (on, off)
    ratios: dict[str, list[float]] = defaultdict(list)
    first = args.norms.split(",")[0]
    for r in range(args.rounds):
        rates = {}
        for key, (on, off) in pairs.items():
            first_on = r % 2 == 0  # which goes first alternates by round: no order bias
            a, b = (timed(f, args.steps, key[2]) for f in ((on, off) if first_on else (off, on)))
            rates[key] = a, b = (a, b) if first_on else (b, a)
            ratios[f"compiled_vs_eager_{key[0]}_{key[1]}"].append(a / b)
            print(f"round {r + 1}: {key[0]} {key[1]}: compiled {a:.0f} img/s, eager {b:.0f} img/s", flush=True)
        for (sid, norm, batch), (a, _) in rates.items():  # the layer's step time over the first layer's, compiled
            if norm != first:
                ratios[f"step_{sid}_{norm}_vs_{first}"].append(rates[(sid, first, batch)][0] / a)
    print(f"\n{cpu_kind()}; median of {args.rounds} paired per-round ratios, with their min and max")
    for name, v in ratios.items():
        print(f"ratio {name} {statistics.median(v):.3f} min {min(v):.3f} max {max(v):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
