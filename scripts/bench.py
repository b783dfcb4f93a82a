"""Training-step speed of the harness, side by side with its limits and with the conventional pipeline.

    python scripts/bench.py                       # ResNet-20, batch 128, CIFAR-100 format, this machine
    python scripts/bench.py --amp                 # the harness in bf16 autocast (CPUs with bf16, GPUs)
    python scripts/bench.py --device cuda --amp   # on a GPU
    python scripts/bench.py --paper-epoch         # also: one paper-preset epoch (ResNet-164), timed

Measured in one process, interleaved over rounds (median of the rounds), so that the ratios hold
even on a busy machine where absolute numbers swing:

  pure       the model and optimizer stepping on one resident, already-normalized batch
  harness    noiseattack.train.train_run: its data path (uint8 dataset on the device, crop and flip
             per batch there, normalization), the norm, the attack, the optimizer
  reference  the IEBN authors' pipeline: torchvision CIFAR100 with per-sample PIL transforms
             (RandomCrop(32, 4), RandomHorizontalFlip, ToTensor, Normalize), a DataLoader with 2
             workers, NCHW, fp32 (as they train), the same model and optimizer

    python scripts/bench.py --zoo                 # also: each zoo layer's step time relative to BN
    python scripts/bench.py --zoo gn,bn+das/stage # ... for the layers named (NAME/PLACEMENT: the attention
                                                  # once per block or stage, --attn-placement's values)

Every ratio is computed within each round, from measurements taken side by side, and the median
of those paired per-round ratios is reported with their min and max: on a shared machine the
absolute rates drift by +-15% between rounds, and a ratio of medians taken at different times
would carry that drift.

The last lines are `ratio <name> <median> min <min> max <max>`, one per target (and one
`step_<layer>_vs_bn` per zoo layer; with --ablations, what each lever buys: channels_last_vs_nchw,
iebn_compiled_vs_eager_kernels, iebn_fused_vs_reference_layer; with --amp, amp_vs_fp32), for scripts to
read (scripts/bench_doc.py tabulates them, with the img/s medians above them). The CPU kind (its vector capability and
bf16 support) is printed first: figures from different kinds do not compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from noiseattack.config import ATTN_PLACEMENTS, ConfigError, RunConfig, resolve_train_config  # noqa: E402
from noiseattack.data import DataError, Normalizer, Split, load_dataset  # noqa: E402
from noiseattack.train import TrainData, build_model, compile_model, train_run  # noqa: E402
from noiseattack.iebn import iebn_kernels  # noqa: E402
from noiseattack.zoo import resolve  # noqa: E402

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load_images(data_dir: str, n: int) -> tuple[Split, bool]:
    """Real CIFAR-100 training images when present, else random same-format ones."""
    try:
        ds = load_dataset("cifar100", data_dir)
        return Split(ds.train.images[:n], ds.train.labels[:n]), True
    except DataError:
        g = torch.Generator().manual_seed(0)
        return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.randint(0, 100, (n,), generator=g)), False


# --------------------------------------------------------------------------- the three pipelines


def _model_and_optimizer(cfg, norm: str, num_classes: int = 100, batch: int | None = None):
    """The run's model (the compiled one when cfg.compile, as train_run steps it, for batches of `batch`
    images, cfg.batch_size by default) and its optimizer."""
    model = build_model(RunConfig(cfg, norm, 0), num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    model.train()
    step_model, _ = compile_model(model, cfg, batch or cfg.batch_size)
    return step_model, opt


def _timed_steps(cfg, model, opt, next_batch, steps: int, warmup: int) -> float:
    """img/s of `steps` SGD steps on the batches `next_batch()` returns, after `warmup` untimed ones."""
    for i in range(warmup + steps):
        if i == warmup:
            sync(cfg.device)
            t0 = time.perf_counter()
        x, y = next_batch()
        with torch.autocast(torch.device(cfg.device).type, torch.bfloat16, enabled=cfg.amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(cfg.device)
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def time_pure(cfg, norm: str, batch: Split, steps: int, warmup: int) -> float:
    """img/s of the model + optimizer on one resident, normalized batch."""
    model, opt = _model_and_optimizer(cfg, norm)
    x = Normalizer(CIFAR100_MEAN, CIFAR100_STD, cfg.device, cfg.channels_last)(batch.images.to(cfg.device))
    y = batch.labels.to(cfg.device)
    return _timed_steps(cfg, model, opt, lambda: (x, y), steps, warmup)


def time_harness(cfg, norm: str, train: Split, steps: int, warmup: int) -> float:
    """img/s of train_run's steps (model build and the tiny evaluation excluded)."""
    bs = cfg.batch_size
    data = TrainData(train=train.to(cfg.device), test=Split(train.images[:bs], train.labels[:bs]).to(cfg.device),
                     extra=None, num_classes=100, flip=True,
                     normalize=Normalizer(CIFAR100_MEAN, CIFAR100_STD, cfg.device, cfg.channels_last))
    marks: dict[int, float] = {}
    done = [0]

    def on_step() -> None:  # synchronises only at the two timing marks
        done[0] += 1
        if done[0] in (warmup, warmup + steps):
            sync(cfg.device)
            marks[done[0]] = time.perf_counter()

    result = train_run(RunConfig(cfg, norm, 0), data, on_step=on_step)
    if result.status == "failed":
        raise RuntimeError(f"{norm}: {result.error}")
    return steps * bs / (marks[warmup + steps] - marks[warmup])


def time_reference(cfg, norm: str, train: Split, steps: int, warmup: int, root: Path, workers: int) -> float:
    """img/s of torchvision CIFAR100 + PIL transforms + DataLoader(workers) + NCHW."""
    import torchvision
    import torchvision.transforms as T

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(CIFAR100_MEAN, CIFAR100_STD)])
    ds = torchvision.datasets.CIFAR100(str(root), train=True, download=False, transform=transform)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, pin_memory=cfg.device.startswith("cuda"))
    ref_cfg = dataclasses.replace(cfg, channels_last=False, amp=False)  # the authors' framework: NCHW, fp32
    model, opt = _model_and_optimizer(ref_cfg, norm)
    it = iter(loader)

    def next_batch():
        x, y = next(it)
        return x.to(cfg.device, non_blocking=True), y.to(cfg.device, non_blocking=True)

    return _timed_steps(ref_cfg, model, opt, next_batch, steps, warmup)  # the workers stop with `it`


def _with_iebn_impl(impl: str, job):
    """Run `job` with IEBN layers built as `impl` (its config must have compile and compile_norms off:
    `train.build_model` resets the impl otherwise)."""
    from noiseattack.iebn import IEBN

    saved, IEBN.default_impl = IEBN.default_impl, impl
    try:
        return job()
    finally:
        IEBN.default_impl = saved


def write_cifar_files(root: Path, train: Split) -> Path:
    """The CIFAR-100 python pickles of `train` (for the reference's torchvision dataset)."""
    import pickle

    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    data = train.images.numpy().reshape(len(train), 3072)
    with open(base / "train", "wb") as f:
        pickle.dump({"data": data, "fine_labels": train.labels.tolist(), "coarse_labels": [0] * len(train),
                     "filenames": [""] * len(train), "batch_label": ""}, f)
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [str(i) for i in range(100)]}, f)
    return root


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else "none"
    return (f"cpu: {cpu} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
            f"{cpu_kind()}); gpu: {gpu}; torch {torch.__version__}; python {platform.python_version()}")


def cpu_kind() -> str:
    """The CPU's vector capability as torch sees it, and whether it has native bf16 (AVX-512 BF16/AMX)."""
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return f"{torch.backends.cpu.get_cpu_capability()}, bf16 {'yes' if bf16 else 'no'}"


# The zoo's layers timed against BN by --zoo: NAME, or NAME/PLACEMENT for an attention module placed
# once per block or per stage (`bn+das/stage`: DAS as its paper places it, after each stage).
ZOO_DEFAULT = ("bn+se", "bn+eca", "gn", "bn+cbam", "bn+gc", "evonorm-b0", "evonorm-s0", "frn", "rms", "gbn", "brn",
               "bn+das/stage", "bn+das", "bn+ela", "bn+strip")


def ratios(r: dict[str, float], norm: str) -> dict[str, float]:
    """The targets' ratios from one round's rates (img/s); step-time ratios are rate(BN) / rate(layer)."""
    rate = lambda n: r["harness"] if n == norm else r[f"harness_{n}"]
    compiled, eager = (r["harness"], r["harness_flip"]) if r["compile"] else (r["harness_flip"], r["harness"])
    out = {"harness_vs_pure": r["harness"] / r["pure"], "harness_vs_reference": r["harness"] / r["reference"],
           "compiled_vs_eager": compiled / eager,
           "iebn_step_vs_bn_step": rate("bn") / rate("iebn"),
           "constant_step_vs_clean_step": r["harness"] / r["harness_constant"]}
    if "harness_fp32" in r:
        out["amp_vs_fp32"] = r["harness"] / r["harness_fp32"]
    if "harness_iebn_eager" in r:  # the IEBN ablations train an eager model
        if not r["compile"]:  # BN's step in the same (eager) model
            out["iebn_eager_step_vs_bn_step"] = rate("bn") / r["harness_iebn_eager"]
        if "harness_nchw" in r:
            out["channels_last_vs_nchw"] = r["harness"] / r["harness_nchw"]
        out["iebn_compiled_vs_eager_kernels"] = r["harness_iebn_kernels"] / r["harness_iebn_eager"]
        out["iebn_fused_vs_reference_layer"] = r["harness_iebn_eager"] / r["harness_iebn_reference"]
    for k in r:
        if k.startswith("zoo_"):
            out[f"step_{k[4:]}_vs_bn"] = rate("bn") / r[k]
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--norm", default="bn")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved repetitions; ratios are paired per round")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast for pure and harness (the reference stays fp32)")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--no-compile-norms", dest="compile_norms", action="store_false",
                    help="IEBN with its eager kernels instead of the compiled ones")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="the whole model compiled for pure and harness [default: where it pays, as the CLI]; "
                         "harness_flip times the other choice, for the compiled_vs_eager ratio")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference")
    ap.add_argument("--data-dir", default=os.environ.get("NOISEATTACK_DATA", "data"))
    ap.add_argument("--ablations", action="store_true",
                    help="also time the harness without channels_last, and, in an eager model (no whole-model "
                         "compile), IEBN with its compiled kernels, its eager kernels and its reference (unfused) layer")
    ap.add_argument("--paper-epoch", action="store_true", help="also time one paper-preset epoch (ResNet-164)")
    ap.add_argument("--zoo", nargs="?", const=",".join(ZOO_DEFAULT), default="",
                    help=f"also time these layers (comma-separated; default {','.join(ZOO_DEFAULT)}) against BN")
    return ap


def _jobs(args: argparse.Namespace, clean, attacked, train: Split, root: Path) -> dict[str, Callable[[], float]]:
    """The measurements of one round, by name: each returns images per second."""
    def harness(cfg, norm: str) -> Callable[[], float]:
        return lambda: time_harness(cfg, norm, train, args.steps, args.warmup)

    first = Split(train.images[:args.batch_size], train.labels[:args.batch_size])
    others = [n for n in ("bn", "iebn") if n != args.norm]  # the IEBN-vs-BN ratio needs both
    jobs = {
        "pure": lambda: time_pure(clean, args.norm, first, args.steps, args.warmup),
        "harness": harness(clean, args.norm),
        "harness_flip": harness(dataclasses.replace(clean, compile=not clean.compile), args.norm),
        "reference": lambda: time_reference(clean, args.norm, train, args.steps, args.warmup, root, args.workers),
        **{f"harness_{n}": harness(clean, n) for n in others},
        "harness_constant": harness(attacked, args.norm),
    }
    if args.amp:  # the same harness in fp32, for the amp_vs_fp32 ratio
        jobs["harness_fp32"] = harness(dataclasses.replace(clean, amp=False), args.norm)
    for item in (z.strip() for z in args.zoo.split(",") if z.strip()):
        name, _, placement = item.partition("/")
        jobs[f"zoo_{item}"] = harness(dataclasses.replace(clean, attn_placement=placement) if placement else clean, name)
    if args.ablations:
        if clean.channels_last:  # with --no-channels-last the harness is already NCHW
            jobs["harness_nchw"] = harness(dataclasses.replace(clean, channels_last=False), args.norm)
        # IEBN's own kernels in an eager model (a whole-model compile would fuse every variant alike)
        eager_model = dataclasses.replace(clean, compile=False)
        jobs["harness_iebn_kernels"] = harness(dataclasses.replace(eager_model, compile_norms=True), "iebn")
        uncompiled = dataclasses.replace(eager_model, compile_norms=False)
        jobs["harness_iebn_eager"] = harness(uncompiled, "iebn")
        jobs["harness_iebn_reference"] = lambda: _with_iebn_impl("reference", harness(uncompiled, "iebn"))
    return jobs


def _paper_epoch(args: argparse.Namespace, device) -> None:
    """Time one paper-preset epoch (ResNet-164 on 50000 images, then a 10000-image evaluation)."""
    paper = resolve_train_config(attack="clean", preset="paper", dataset="cifar100", batch_size=args.batch_size,
                                 device=args.device, channels_last=args.channels_last, compile_norms=args.compile_norms,
                                 amp=args.amp, epochs=1)
    full, _ = load_images(args.data_dir, 50000)
    steps = len(full) // args.batch_size
    data = TrainData(train=full.to(device), test=Split(full.images[:10000], full.labels[:10000]).to(device),
                     extra=None, num_classes=100, flip=True,
                     normalize=Normalizer(CIFAR100_MEAN, CIFAR100_STD, device, args.channels_last))
    sync(device)
    t0 = time.perf_counter()
    train_run(RunConfig(paper, args.norm, 0), data)
    sync(device)
    print(f"paper-preset epoch (ResNet-164, {steps} steps + 10000-image evaluation): {time.perf_counter() - t0:.1f} s")


def main() -> None:
    ap = _parser()
    args = ap.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        ap.error("--warmup, --steps and --rounds must be >= 1")
    for item in (z.strip() for z in args.zoo.split(",") if z.strip()):
        name, _, placement = item.partition("/")
        if placement and placement not in ATTN_PLACEMENTS:
            ap.error(f"--zoo {item}: unknown placement '{placement}': choose {', '.join(ATTN_PLACEMENTS)}")
        try:
            resolve(name)
        except ConfigError as e:
            ap.error(f"--zoo {item}: {e}")

    common = dict(dataset="cifar100", depth=args.depth, batch_size=args.batch_size, device=args.device,
                  channels_last=args.channels_last, compile_norms=args.compile_norms, compile=args.compile, amp=args.amp,
                  epochs=1)
    clean = resolve_train_config(attack="clean", **common)
    attacked = resolve_train_config(attack="constant", alpha=2.0, beta=1.0, **common)
    device = clean.device
    n = args.batch_size * (args.warmup + args.steps)
    train, real = load_images(args.data_dir, max(n, 4 * args.batch_size))
    train = Split(train.images[:n], train.labels[:n])
    print(machine(device))
    print(f"model: ResNet-{args.depth}, batch {args.batch_size}, 32x32, 100 classes, norm {args.norm}, "
          f"channels_last {args.channels_last}, {'bf16 autocast' if args.amp else 'fp32'}, device {device}, "
          f"compiled {clean.compile} (harness_flip: {not clean.compile}); "
          "reference: NCHW, fp32")
    print("data: " + ("real CIFAR-100" if real else "synthetic CIFAR-100-format images (no CIFAR-100 in "
                      f"{args.data_dir}); speed does not depend on pixel values"))

    with tempfile.TemporaryDirectory() as tmp:
        root = write_cifar_files(Path(tmp), train)
        import torchvision.datasets.cifar as tvc

        tvc.check_integrity = lambda *a, **k: True  # the pickles written above are not the official files
        rates: dict[str, list[float]] = {}
        jobs = _jobs(args, clean, attacked, train, root)
        for r in range(args.rounds):
            for name, job in jobs.items():
                rates.setdefault(name, []).append(job())
            print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print()
    for k, v in med.items():
        print(f"{k:18s} {v:8.1f} img/s   (rounds: {', '.join(f'{x:.0f}' for x in rates[k])})")
    per_round = [ratios({**{k: v[i] for k, v in rates.items()}, "compile": clean.compile}, args.norm)
                 for i in range(args.rounds)]
    print(f"iebn kernels: {iebn_kernels(args.compile_norms)}" + (
        " (the harness's model is compiled whole: its IEBN layers run their eager ops, compiled by inductor)"
        if clean.compile else ""))
    if args.paper_epoch:
        _paper_epoch(args, device)

    print(f"\n{cpu_kind()}; median of {args.rounds} paired per-round ratios, with their min and max")
    for name in per_round[0]:
        values = [r[name] for r in per_round]
        print(f"ratio {name} {statistics.median(values):.3f} min {min(values):.3f} max {max(values):.3f}")


if __name__ == "__main__":
    main()
