"""Which normalization modules of torch, torchvision and timm run in the harness by import path
(`--norm torch.nn:BatchNorm2d`), and which the constant attack reaches: the table in README.md,
"Norms of torch, torchvision and timm by import path".

    python scripts/layer_survey.py            # a markdown table, one row per module (about a minute)

Each module goes through what `noiseattack clean|mix` and `noiseattack constant` do before they
write anything (`zoo.check_layer` at ResNet-20's channel counts and map sizes, channels_last),
then, if it passes, two training steps and an evaluation of a ResNet-8 of width 0.25 on random
images (`train.train_run`): "runs" means both passed. The constant column says how the attack
reaches it (its own set_noise, or a torch normalization converted in place) or why it is refused.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from noiseattack import zoo  # noqa: E402
from noiseattack.config import ConfigError, RunConfig, resolve_train_config  # noqa: E402
from noiseattack.data import Normalizer, Split  # noqa: E402
from noiseattack.train import TrainData, train_run  # noqa: E402

CANDIDATES = {
    "torch.nn": ["BatchNorm2d", "SyncBatchNorm", "InstanceNorm2d", "GroupNorm", "LayerNorm", "RMSNorm",
                 "LocalResponseNorm", "CrossMapLRN2d", "LazyBatchNorm2d", "LazyInstanceNorm2d", "BatchNorm1d",
                 "BatchNorm3d"],
    "torchvision.ops": ["FrozenBatchNorm2d"],
    "timm.layers": ["BatchNormAct2d", "SyncBatchNormAct", "FrozenBatchNorm2d", "FrozenBatchNormAct2d", "GroupNorm",
                    "GroupNorm1", "GroupNormAct", "GroupNorm1Act", "LayerNorm", "LayerNorm2d", "LayerNormAct2d",
                    "RmsNorm", "RmsNorm2d", "SimpleNorm2d", "EvoNorm2dB0", "EvoNorm2dB1", "EvoNorm2dB2",
                    "EvoNorm2dS0", "EvoNorm2dS0a", "EvoNorm2dS1", "EvoNorm2dS1a", "EvoNorm2dS2", "EvoNorm2dS2a",
                    "FilterResponseNormTlu2d", "FilterResponseNormAct2d", "GlobalResponseNorm"],
}


def _data() -> TrainData:
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=g),
                  torch.randint(0, 10, (32,), generator=g))
    return TrainData(train=split, test=split, extra=None, num_classes=10, flip=True,
                     normalize=Normalizer((0.5,) * 3, (0.25,) * 3, "cpu", True))


def _trains(name: str) -> str | None:
    """None when two steps and an evaluation run; else the run's one-line error."""
    cfg = resolve_train_config(dataset="mnist", depth=8, width=0.25, epochs=1, batch_size=16, device="cpu",
                               compile_norms=False)
    result = train_run(RunConfig(cfg, name, 0), _data())
    return None if result.status in ("finished", "diverged") else f"{result.error}"


def _reach(layer: torch.nn.Module) -> str:
    from noiseattack.norms import noise_targets

    targets = noise_targets(layer)
    own = [t for t in targets if callable(getattr(t, "set_noise", None))]
    return "reached: its set_noise" if own else f"reached: {type(targets[0]).__name__} converted"


def survey_one(path: str) -> tuple[str, str]:
    """(clean/mix column, constant column) for one module by import path."""
    try:
        r = zoo.resolve(path)
        zoo.check_layer(r, constant=False, channels_last=True)
        problem = _trains(r.name)
    except ConfigError as e:
        return "refused: " + str(e).split("': ", 1)[-1], "-"
    if problem is not None:
        return f"fails in training: {problem}", "-"
    try:
        zoo.check_layer(r, constant=True, channels_last=True)
    except ConfigError as e:
        return "runs", "refused: " + str(e).split("': ", 1)[-1]
    return "runs", _reach(r.factory(16))


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    print("| module | clean, mix | constant |")
    print("| --- | --- | --- |")
    for module, names in CANDIDATES.items():
        mod = importlib.import_module(module)
        for name in names:
            if not hasattr(mod, name):
                continue
            clean, constant = survey_one(f"{module}:{name}")
            print(f"| `{module}:{name}` | {clean} | {constant} |", flush=True)


if __name__ == "__main__":
    main()
