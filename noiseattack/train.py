"""The training core: one run (a setting, a norm, a seed) from init to its final accuracy.

The datasets sit on the training device as uint8 tensors; each step indexes a batch, crops and
flips it there (unless the setting turns augmentation off), and normalizes it. Randomness after the
model's init (data order, augmentation, the draws of extra images) comes from one generator seeded
with the run's seed, so a seed fixes the whole run. The step loop has no host synchronisation:
metrics accumulate on the device and are read once per epoch. A checkpoint after every epoch (and
on a requested stop, mid-epoch) holds everything needed to continue bit-identically.
"""

from __future__ import annotations

import functools
import io
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import chance
from .attacks import AttackRun, mixed_batch_loss
from .config import ConfigError, RunConfig, TrainConfig
from .data import Dataset, Normalizer, Split, load_datasets, random_crop_flip
from .fileio import NoiseattackWarning, atomic_write
from .iebn import set_iebn_impl
from .models import cifar_resnet
from .zoo import describe_error
from .precise import PRECISE_BATCHES, running_stat_layers, update_bn_stats

CROP_PAD = 4


class StopRequested(Exception):
    """The run stopped at a step boundary on request, after writing its checkpoint."""


@dataclass
class TrainData:
    """Everything a run reads, already on the training device."""

    train: Split
    test: Split
    extra: Split | None  # the training split of the attack's foreign dataset (mix), if it has one
    num_classes: int
    flip: bool
    normalize: Normalizer


def load_checked_data(cfg: TrainConfig, data_dir: str | Path) -> tuple[Dataset, Dataset | None]:
    """Load (on the CPU) the datasets a setting reads, (primary, the attack's extra dataset or None), and
    check the subsets and the batch against them. Every dataset that is missing is named in one DataError."""
    extras = cfg.attack_spec().extra_datasets(cfg.attack_params())
    loaded = load_datasets([cfg.dataset, *extras], data_dir)
    primary = loaded[cfg.dataset]
    if cfg.train_subset is not None and cfg.train_subset > len(primary.train):
        raise ConfigError(
            f"train subset {cfg.train_subset} is larger than {cfg.dataset}'s training split ({len(primary.train)})")
    if cfg.test_subset is not None and cfg.test_subset > len(primary.test):
        raise ConfigError(f"test subset {cfg.test_subset} is larger than {cfg.dataset}'s test split ({len(primary.test)})")
    n_train = cfg.train_subset or len(primary.train)
    if cfg.batch_size > n_train:
        raise ConfigError(f"batch size {cfg.batch_size} is larger than the {n_train} training images of {cfg.dataset}: "
                          f"use --batch-size {n_train} or less")
    return primary, loaded[extras[0]] if extras else None


def prepare_data(cfg: TrainConfig, data_dir: str | Path) -> TrainData:
    primary, extra_ds = load_checked_data(cfg, data_dir)
    extra = extra_ds.train.to(cfg.device) if extra_ds is not None else None
    return TrainData(
        train=primary.train.subset(cfg.train_subset).to(cfg.device),
        test=primary.test.subset(cfg.test_subset).to(cfg.device),
        extra=extra,
        num_classes=primary.spec.num_classes,
        flip=primary.spec.hflip,
        normalize=Normalizer(primary.mean, primary.std, cfg.device, cfg.channels_last),
    )


def training_batch(data: TrainData, idx: torch.Tensor, generator: torch.Generator, *, augment: bool) -> torch.Tensor:
    """The training images at `idx`, normalized; with `augment`, first randomly cropped (CROP_PAD) and,
    where the dataset allows, flipped. Without it they are used as they are and `generator` is not drawn from."""
    images = data.train.images[idx]
    if augment:
        images = random_crop_flip(images, pad=CROP_PAD, flip=data.flip, generator=generator)
    return data.normalize(images)


def build_model(run: RunConfig, num_classes: int) -> nn.Module:
    """The run's model: initialised from the run's seed, attacked when the setting says so."""
    cfg = run.train
    if cfg.device.startswith("cuda"):  # the same seed trains the same run (and a resumed run continues it)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.manual_seed(run.seed)
    model = cifar_resnet(cfg.depth, num_classes, run.norm, width=cfg.width, block=cfg.block,
                         shortcut_norm=cfg.shortcut_norm, attn_placement=cfg.attn_placement)
    cfg.attack_spec().prepare_model(model, cfg.attack_params())  # the constant attack: part of the model
    if cfg.compile:  # the whole-model compile fuses IEBN's eager ops itself
        set_iebn_impl(model, "eager")
    elif cfg.compile_norms:  # otherwise IEBN layers keep the impl they were built with (IEBN.default_impl)
        set_iebn_impl(model, "compiled")
    model = model.to(cfg.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


class _CompileState:
    """What compiling has cost and whether it works, once per process: a sweep worker that trains
    several runs pays for each model structure once (a later model of the same structure reuses the
    compiled code), and after one failure every run of the process trains eagerly."""

    failed = False
    seconds = 0.0  # spent compiling in this process (the probes' wall time)
    RECOMPILE_LIMIT = 1024  # graphs per code object: one per layer type, shape and mode trained in a process


def compile_model(model: nn.Module, cfg: TrainConfig, batch: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """The callable the training steps run: `torch.compile(model)` when `cfg.compile`, else `model`;
    and the seconds this call spent compiling.

    Compiling happens in a probe before the run's first step: a copy of the model takes one training
    step on a zero batch of the run's shape (`batch` images), so that a model that cannot be
    compiled (no C++ compiler, an operation inductor rejects) falls back to the eager model with one
    warning, before the run's own state (weights, running statistics, random draws) is touched. The
    compiled function is the same function: its results equal the eager ones within float rounding
    (tests/test_compile.py). Code that dynamo cannot trace inside a layer (a researcher's layer, say)
    runs eagerly between compiled graphs: each layer compiles or falls back by itself."""
    if not cfg.compile or _CompileState.failed:
        return model, 0.0
    import copy

    import logging

    import torch._dynamo

    # The CUDA wheels log "No CUDA runtime is found, using CUDA_HOME=..." when inductor loads its C++
    # toolchain on a machine without a GPU: true, and irrelevant to CPU kernels (as in iebn._Compiled).
    logging.getLogger("torch.utils.cpp_extension").addFilter(
        lambda record: "No CUDA runtime is found" not in record.getMessage())
    dyn = torch._dynamo.config
    dyn.recompile_limit = max(dyn.recompile_limit, _CompileState.RECOMPILE_LIMIT)
    dyn.accumulated_recompile_limit = max(dyn.accumulated_recompile_limit, _CompileState.RECOMPILE_LIMIT)
    t0 = time.perf_counter()
    compiled = torch.compile(model, dynamic=False)
    try:
        probe = copy.deepcopy(model)
        probe.train()
        x = torch.zeros(batch, 3, 32, 32, device=cfg.device)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=cfg.amp):
            out = torch.compile(probe, dynamic=False)(x)
        out.float().sum().backward()
    except Exception as e:  # noqa: BLE001 - no C++ compiler, an unsupported op, ...: eager computes the same
        _CompileState.failed = True
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"--compile: the model cannot be compiled here ({type(e).__name__}: {first_line}); "
                      "training the eager model (the same function, slower)", NoiseattackWarning, stacklevel=2)
        return model, time.perf_counter() - t0
    spent = time.perf_counter() - t0
    _CompileState.seconds += spent
    return compiled, spent


def lr_at(cfg: TrainConfig, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
    """The learning rate of training step `step` (0-based) of epoch `epoch` (0-based).

    "step": lr times lr_gamma after each milestone epoch, constant within an epoch.
    "cosine": lr * (1 + cos(pi t / T)) / 2 and "linear": lr * (1 - t / T), where t is the number of
    steps done before this one and T the steps of the whole run: lr at the first step, falling every
    step, lr / T (linear) from 0 at the last."""
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_gamma ** sum(epoch >= m for m in cfg.milestones)
    frac = (epoch * steps_per_epoch + step) / (cfg.epochs * steps_per_epoch)
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    return cfg.lr * (1.0 - frac)


@torch.no_grad()
def evaluate_counts(model: nn.Module, split: Split, data: TrainData, cfg: TrainConfig,
                    attack: AttackRun | None = None) -> tuple[float, float, list[int]]:
    """(mean cross-entropy, accuracy in %, how many images each class was predicted for) on a split, in
    eval mode, without augmentation (and with the run's `attack` told before the evaluation and each of
    its batches)."""
    model.eval()
    attack = attack or AttackRun()
    attack.before_eval()
    loss_sum = torch.zeros((), device=cfg.device)
    correct = torch.zeros((), device=cfg.device, dtype=torch.long)
    predicted = torch.zeros(data.num_classes, device=cfg.device, dtype=torch.long)
    for i in range(0, len(split), cfg.eval_batch_size):
        x = data.normalize(split.images[i:i + cfg.eval_batch_size])
        y = split.labels[i:i + cfg.eval_batch_size]
        attack.before_eval_batch()
        with torch.autocast(device_type=torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=cfg.amp):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        pred = logits.argmax(1)
        correct += (pred == y).sum()
        predicted += torch.bincount(pred, minlength=data.num_classes)[:data.num_classes]
    n = len(split)
    return loss_sum.item() / n, 100.0 * correct.item() / n, predicted.tolist()


def evaluate_model(model: nn.Module, split: Split, data: TrainData, cfg: TrainConfig,
                   attack: AttackRun | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in %) on a split: `evaluate_counts` without the predicted classes."""
    return evaluate_counts(model, split, data, cfg, attack)[:2]


@dataclass
class RunResult:
    status: str  # "finished", "diverged" or "failed"
    final_acc: float
    best_acc: float
    history: list[dict[str, float]]
    wall_time_s: float
    diverged: dict[str, Any] | None = None  # {"epoch": e, "lr": lr} when status == "diverged"
    # this process's CPU time (every thread of it) over the training epochs and their evaluations
    # (not the final PreciseBN pass, which only BN-type layers pay): unlike the wall time, not inflated
    # by waiting for a CPU that other processes hold (only by sharing its caches and memory bandwidth).
    # None for a run resumed from a checkpoint written before it was kept (its earlier part was not counted)
    cpu_time_s: float | None = None
    compiled: bool = False  # the training steps ran the compiled model (TrainConfig.compile, and it compiled)
    compile_s: float = 0.0  # seconds this run spent compiling (0 where the process had compiled its model before)
    precise_acc: float | None = None  # final accuracy with PreciseBN statistics (None: no BN-type layer)
    # ... with PreciseBN statistics of batches composed as in training, the attack's extra images
    # included (None: no BN-type layer, or an attack that adds no images to a batch)
    precise_mixed_acc: float | None = None
    # status == "failed": the model raised (RunFailure); {"phase", "epoch", "step"} and the one-line error
    failed: dict[str, Any] | None = None
    error: str | None = None
    chance: dict[str, Any] | None = None  # finished: noiseattack.chance.measure of the final evaluation


class RunFailure(Exception):
    """The run's model raised: while it was built (phase "build"), in a training step ("train") or
    in an evaluation ("eval"). The run ends as "failed": no result, one line, and the experiment
    goes on. Non-finite values are not failures but divergence ("diverged", a result of training)."""

    def __init__(self, phase: str, epoch: int, step: int, cause: BaseException):
        self.phase, self.epoch, self.step = phase, epoch, step
        self.error = describe_error(cause)
        super().__init__(self.error)

    def info(self) -> dict[str, Any]:
        return {"phase": self.phase, "epoch": self.epoch, "step": self.step}


@dataclass
class _State:
    """What a checkpoint holds besides the model and optimizer."""

    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # steps of that epoch already done
    perm: torch.Tensor | None = None  # that epoch's data order, while it is in progress
    sums: torch.Tensor | None = None  # [sum of losses * batch, correct] over the epoch so far
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0
    cpu_time_s: float | None = 0.0  # None: resumed from a checkpoint that did not keep it
    pred_counts: list[int] | None = None  # the last evaluation's count of each predicted class


def _rng_states(generator: torch.Generator) -> dict[str, Any]:
    states = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(generator: torch.Generator, states: dict[str, Any]) -> None:
    """Restore the states `_rng_states` saved. They are CPU ByteTensors whatever the device (a checkpoint
    read with map_location="cuda" has moved them to the GPU, where set_state refuses them)."""
    generator.set_state(states["generator"].cpu())
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def save_checkpoint(path: Path, run: RunConfig, model, optimizer, state: _State, generator,
                    attack: AttackRun | None = None) -> None:
    cfg = run.train
    payload = {
        "key": run.key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "state": state.__dict__, "rng": _rng_states(generator),
        "attack": attack.state_dict() if attack is not None else {},  # e.g. the random attack's generator
        # The lr is a function of the epoch (lr_at); the run's key pins these, kept for inspection.
        "schedule": {"lr": cfg.lr, "milestones": list(cfg.milestones), "lr_gamma": cfg.lr_gamma,
                     "lr_now": lr_at(cfg, state.epoch)},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """A checkpoint's payload, unpickled with `weights_only=True`: tensors and plain containers only, so
    a planted file cannot run code. What save_checkpoint writes needs nothing beyond that; anything
    else raises (and the caller treats the file as unreadable)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(path: Path, run: RunConfig, model, optimizer, generator,
                    attack: AttackRun | None = None) -> _State | None:
    """Restore a run from its checkpoint; None when there is none (or it belongs to another run)."""
    if not path.exists():
        return None
    try:
        payload = read_checkpoint(path, map_location=run.train.device)
    except Exception as e:  # noqa: BLE001 - not written by save_checkpoint (its writes are atomic)
        warnings.warn(f"{path}: unreadable checkpoint ({type(e).__name__}); {run.run_id} starts afresh",
                      NoiseattackWarning, stacklevel=2)
        return None
    if not isinstance(payload, dict) or payload.get("key") != run.key:
        return None
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    _set_rng_states(generator, payload["rng"])
    if attack is not None:
        attack.load_state_dict(payload.get("attack") or {})
    return _State(**{"cpu_time_s": None, **payload["state"]})  # older checkpoints did not keep the CPU time


def _all_finite(model: nn.Module) -> bool:
    return bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all())


def train_run(
    run: RunConfig,
    data: TrainData,
    *,
    checkpoint: Path | None = None,
    on_step: Callable[[], None] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunResult:
    """Train one run to the end, resuming from `checkpoint` when it holds this run's state. A model
    that raises (a layer's bug) ends the run as "failed" (see RunFailure), with the epochs it did."""
    t0 = time.perf_counter()
    history: list[dict[str, float]] = []
    try:
        return _train(run, data, history, checkpoint=checkpoint, on_step=on_step, on_epoch=on_epoch,
                      should_stop=should_stop)
    except RunFailure as f:
        return RunResult("failed", math.nan, math.nan, history, time.perf_counter() - t0, failed=f.info(),
                         error=f.error)


def _build(run: RunConfig, data: TrainData) -> tuple[nn.Module, AttackRun]:
    """The run's model and what its attack does during the run; any failure is the run's ("build")."""
    cfg = run.train
    try:
        model = build_model(run, data.num_classes)
        return model, cfg.attack_spec().start(cfg.attack_params(), model=model, data=data, cfg=cfg, seed=run.seed)
    except Exception as e:  # noqa: BLE001 - a layer's constructor or set_noise: the run fails, the others go on
        raise RunFailure("build", 0, 0, e) from e


def _evaluate(model: nn.Module, data: TrainData, cfg: TrainConfig, attack: AttackRun, state: _State):
    """(test loss, test accuracy, predicted classes' counts) after an epoch; NaN (and None) for a model
    whose weights are not finite."""
    try:
        if not _all_finite(model):
            return math.nan, math.nan, None
        return evaluate_counts(model, data.test, data, cfg, attack)
    except Exception as e:  # noqa: BLE001 - the model's code raised: the run fails, the others go on
        raise RunFailure("eval", state.epoch + 1, state.step, e) from e


def _train(run: RunConfig, data: TrainData, history: list[dict[str, float]], *, checkpoint, on_step, on_epoch,
           should_stop) -> RunResult:
    cfg = run.train
    model, attack = _build(run, data)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                nesterov=cfg.nesterov)
    generator = torch.Generator(device=cfg.device).manual_seed(run.seed)
    state = (load_checkpoint(checkpoint, run, model, optimizer, generator, attack) if checkpoint else None) or _State()
    history[:] = state.history
    state.history = history  # the caller's list: a failed run reports the epochs it did
    n = len(data.train)
    bs = min(cfg.batch_size, n)
    steps = n // bs  # the last incomplete batch is dropped: every step has the same shape
    step_model, compile_s = compile_model(model, cfg, bs + attack.extra_images)
    done = functools.partial(RunResult, compiled=step_model is not model, compile_s=round(compile_s, 3))
    device_type = torch.device(cfg.device).type
    t0 = time.perf_counter() - state.wall_time_s
    c0 = time.process_time() - (state.cpu_time_s or 0.0)

    def cpu_time() -> float | None:
        return None if state.cpu_time_s is None else round(time.process_time() - c0, 3)

    def save() -> None:
        if checkpoint:
            state.wall_time_s = time.perf_counter() - t0
            if state.cpu_time_s is not None:
                state.cpu_time_s = time.process_time() - c0
            save_checkpoint(checkpoint, run, model, optimizer, state, generator, attack)

    per_step = cfg.lr_schedule != "step"  # else the lr is set once per epoch
    while state.epoch < cfg.epochs:
        lr = lr_at(cfg, state.epoch, state.step if state.perm is not None else 0, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if state.perm is None:  # a new epoch (else: resuming one mid-way)
            state.perm = torch.randperm(n, device=cfg.device, generator=generator)
            state.sums = torch.zeros(2, device=cfg.device)
            state.step = 0
        model.train()
        while state.step < steps:
            idx = state.perm[state.step * bs:(state.step + 1) * bs]
            x = training_batch(data, idx, generator, augment=cfg.augment)
            y = data.train.labels[idx]
            extra_x = attack.batch_extras(generator)  # mix: drawn after the batch's own draws
            if per_step:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(cfg, state.epoch, state.step, steps)
            _train_step(step_model, optimizer, attack, x, y, extra_x, cfg, device_type, state)
            state.step += 1
            if on_step is not None:
                on_step()
            if should_stop():
                save()
                raise StopRequested(f"stopped in epoch {state.epoch + 1}, step {state.step}")

        loss_sum, correct = state.sums.tolist()  # the one host sync of the training epoch
        seen = steps * bs
        train_loss = loss_sum / seen
        test_loss, test_acc, state.pred_counts = _evaluate(model, data, cfg, attack, state)
        if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
            return done("diverged", math.nan, _best(state.history), state.history,
                        time.perf_counter() - t0, {"epoch": state.epoch + 1, "lr": lr}, cpu_time_s=cpu_time())
        record = {"epoch": state.epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": 100.0 * correct / seen,
                  "test_loss": test_loss, "test_acc": test_acc}
        state.history.append(record)
        state.epoch, state.step, state.perm, state.sums = state.epoch + 1, 0, None, None
        if on_epoch is not None:
            on_epoch(record)
        save()
        if should_stop() and state.epoch < cfg.epochs:  # asked during the evaluation: stop at the boundary
            raise StopRequested(f"stopped after epoch {state.epoch}")

    cpu_time_s = cpu_time()  # the epochs and their evaluations: not the PreciseBN pass (BN-type layers only)
    precise, precise_mixed = _precise(model, data, cfg, run.seed, attack, epoch=state.epoch)
    final = state.history[-1]["test_acc"]
    return done("finished", final, _best(state.history), state.history, time.perf_counter() - t0, cpu_time_s=cpu_time_s,
                precise_acc=precise, precise_mixed_acc=precise_mixed, chance=_chance(final, data, state.pred_counts))


def _train_step(step_model, optimizer: torch.optim.Optimizer, attack: AttackRun, x: torch.Tensor, y: torch.Tensor,
                extra_x: torch.Tensor | None, cfg: TrainConfig, device_type: str, state: _State) -> None:
    """One SGD step on the batch `x, y` (joined by the attack's `extra_x`); adds its loss and correct
    count to `state.sums` on the device (no host sync). The model's code raising fails the run
    (`RunFailure`), not the sweep: the other runs go on."""
    try:
        attack.before_step()
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=cfg.amp):
            loss, logits = mixed_batch_loss(step_model, x, y, extra_x, cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    except Exception as e:  # noqa: BLE001 - the model's code raised: the run fails, the others go on
        raise RunFailure("train", state.epoch + 1, state.step + 1, e) from e
    with torch.no_grad():
        correct = (logits.argmax(1) == y).sum()
        state.sums += torch.stack([loss.detach().float() * len(y), correct.float()])


def _precise(model: nn.Module, data: TrainData, cfg: TrainConfig, seed: int, attack: AttackRun, *,
             epoch: int) -> tuple[float | None, float | None]:
    """`precise_accuracies` after the last `epoch`; the model's code raising there fails the run."""
    try:
        return precise_accuracies(model, data, cfg, seed, attack)
    except Exception as e:  # noqa: BLE001 - the model's code raised in the recomputation
        raise RunFailure("eval", epoch, 0, e) from e


def _chance(final_acc: float, data: TrainData, pred_counts: list[int] | None) -> dict[str, Any] | None:
    """The run's `noiseattack.chance.measure` on its test split; None without the final evaluation's
    predictions (a run resumed from a checkpoint written before they were kept)."""
    if pred_counts is None:
        return None
    labels = torch.bincount(data.test.labels, minlength=data.num_classes).tolist()
    return chance.measure(final_acc, labels, pred_counts)


PRECISE_EXTRA_SEED = 1_000_000_007  # added to the run's seed for the mixed batches' foreign images


def precise_accuracies(model: nn.Module, data: TrainData, cfg: TrainConfig, seed: int,
                       attack: AttackRun | None = None) -> tuple[float | None, float | None]:
    """Test accuracies (%) after PreciseBN (`noiseattack.precise`): every BN-type layer's running
    statistics recomputed on PRECISE_BATCHES training batches, then the model evaluated as usual.

    - clean: the primary's images as they are (no foreign images, no augmentation), drawn with a
      generator seeded from the run's seed. Corrupted evaluation statistics show as a gain here.
    - mixed: the same batches, each joined by the attack's extra images as in training but, like the
      primary's, without augmentation (`batch_extras(augment=False)`, drawn with a generator seeded
      from seed + PRECISE_EXTRA_SEED): the training distribution's population statistics. It
      separates the estimator from the distribution: near the trained statistics' accuracy, a change
      under clean batches is the clean-vs-mixed difference, not PreciseBN's procedure. Both passes
      start from the trained buffers (a layer such as Batch Renorm reads them in its forward). None
      for an attack that adds no images to a batch.

    (None, None) for a model without running statistics. Ends the run: the model's statistics are
    replaced (its checkpoint, written before, keeps the trained ones)."""
    layers = running_stat_layers(model)
    if not layers:
        return None, None
    mixed_pass = attack is not None and attack.extra_images > 0
    trained = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in layers] if mixed_pass else []
    bs = min(cfg.batch_size, len(data.train))
    g = torch.Generator(device=cfg.device).manual_seed(seed)
    n = min(PRECISE_BATCHES * bs, len(data.train) // bs * bs)
    idx = torch.randperm(len(data.train), device=cfg.device, generator=g)[:n].view(-1, bs)

    def accuracy(batches) -> float:
        with torch.autocast(device_type=torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=cfg.amp):
            update_bn_stats(model, batches)
        return evaluate(model, data.test, data, cfg)[1]

    clean = accuracy(data.normalize(data.train.images[i]) for i in idx)
    if not mixed_pass:
        return clean, None
    with torch.no_grad():
        for m, buffers in zip(layers, trained):
            for k, v in buffers.items():
                getattr(m, k).copy_(v)
    g_extra = torch.Generator(device=cfg.device).manual_seed(seed + PRECISE_EXTRA_SEED)
    extras = (attack.batch_extras(g_extra, augment=False) for _ in range(len(idx)))
    mixed = accuracy(torch.cat([data.normalize(data.train.images[i]), x]) for i, x in zip(idx, extras))
    return clean, mixed


def _best(history: list[dict[str, float]]) -> float:
    return max((h["test_acc"] for h in history), default=math.nan)


check_data, evaluate = load_checked_data, evaluate_model  # their former names (sweep.check_grid_data, claims.evaluate)
