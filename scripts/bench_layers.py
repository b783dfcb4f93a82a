"""Where a zoo layer's step time goes: forward + backward of single layers and of the ops inside them,
at ResNet-20's three stage shapes (batch 128), channels_last and NCHW, in ms (median of 20).

    python scripts/bench_layers.py | tee docs/bench/layers-avx2.txt

`mean(2,3)` and `x*gate` are SE's squeeze and scale as timm writes them; `... via (N,HW,C)` are the
same ops on a (N, H*W, C) view of the channels_last memory, to see whether placing them along the
contiguous dimension helps.
"""

from __future__ import annotations

import platform
import time

import torch
import torch.nn as nn
from timm.layers import get_attn


def bench(f, x, n: int = 20) -> float:
    for _ in range(3):
        f(x).sum().backward()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f(x).sum().backward()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[n // 2] * 1e3


def as_nhwc(t: torch.Tensor) -> torch.Tensor:
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(n, h * w, c)


def main() -> None:
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print(f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} torch threads, "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16 {'yes' if bf16 else 'no'}); torch {torch.__version__}")
    for c, hw in ((16, 32), (32, 16), (64, 8)):
        for fmt, label in ((torch.channels_last, "channels_last"), (torch.contiguous_format, "NCHW")):
            x = torch.randn(128, c, hw, hw).contiguous(memory_format=fmt).requires_grad_()
            gate = torch.rand(128, c, 1, 1, requires_grad=True)
            cbam = get_attn("cbam")(c).to(memory_format=fmt)
            ops = {"bn": nn.BatchNorm2d(c).to(memory_format=fmt), "se": get_attn("se")(c, rd_divisor=1),
                   "eca": get_attn("eca")(c), "cbam": cbam, "cbam.channel": cbam.channel, "cbam.spatial": cbam.spatial,
                   "mean(2,3)": lambda t: t.mean((2, 3)), "x*gate": lambda t, g=gate: t * g}
            if fmt == torch.channels_last:
                ops["mean via (N,HW,C)"] = lambda t: as_nhwc(t).mean(1)
                ops["x*gate via (N,HW,C)"] = lambda t, g=gate: as_nhwc(t) * g.view(g.shape[0], 1, -1)
            print(f"{c:3d} ch {hw:2d}x{hw:<2d} {label:13s} " + "  ".join(f"{k} {bench(f, x):.2f}" for k, f in ops.items()),
                  flush=True)


if __name__ == "__main__":
    main()
