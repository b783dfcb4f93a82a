"""IEBN: Instance Enhancement Batch Normalization (Liang et al., AAAI 2020), as the official code
computes it and as one fused autograd Function with a hand-derived backward (eager and
torch.compile'd kernels). Registered as `iebn` in `noiseattack.zoo`."""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from .norms import ConstantNoise

class IEBN(ConstantNoise, _BatchNorm):
    """`iebn`: Instance Enhancement Batch Normalization (Liang et al., AAAI 2020).

        x_hat = batch-normalized x (no affine)
        a     = sigmoid(weight_readjust * avgpool(x) + bias_readjust)   per instance and channel
        out   = x_hat * (weight * a) + bias

    with weight=1, bias=0, weight_readjust=0, bias_readjust=-1 at init. The gate reads the
    layer's raw input x; the constant attack changes x_hat only. Parameter and buffer names and
    shapes are those of the official `BAN2d`, so its state_dict loads into this layer.

    Three implementations of the same function (`impl`), equal within float rounding (tested):
      "compiled"  the fused layer (`_FusedIEBN`: out = x * S + T with per-(n, c) S, T and a
                  hand-derived backward) with its full-size work done by torch.compile'd kernels:
                  one pass over x for every statistic, one fused scale-and-shift, and the same in
                  the backward, compiled per layer shape for the training steps (evaluation, whose
                  batch sizes vary, runs the eager kernels). Falls back to "eager" (with one
                  warning) where compiling fails, e.g. on a CPU machine without a C++ compiler.
      "eager"     the same Function with the full-size work done by stock PyTorch ops.
      "reference" the official code's sequence of operations, kept for the tests to compare against.
    `train.build_model` picks "compiled" or "eager" from `TrainConfig.compile_norms`.
    """

    IMPLS = ("compiled", "eager", "reference")
    default_impl = "eager"  # class-wide default for layers built without `impl` (A/B benchmarks switch it)

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1, impl: str | None = None):
        super().__init__(channels, eps, momentum, affine=False)
        shape = (1, channels, 1, 1)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.weight_readjust = nn.Parameter(torch.zeros(shape))
        self.bias_readjust = nn.Parameter(torch.full(shape, -1.0))
        self.impl = _checked_impl(self.default_impl if impl is None else impl)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if self.impl == "reference":
            return self._forward_reference(x)
        return _FusedIEBN.apply(x, self.weight, self.bias, self.weight_readjust, self.bias_readjust,
                                self.running_mean, self.running_var, self.training, self.momentum, self.eps,
                                self.noise_alpha, self.noise_beta, self.impl == "compiled")

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(x.mean((2, 3), keepdim=True) * self.weight_readjust + self.bias_readjust)
        x_hat = F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training, self.momentum, self.eps)
        if self.attacked:
            alpha, beta = self.noise_alpha, self.noise_beta
            if isinstance(alpha, torch.Tensor):  # per channel
                alpha, beta = alpha.view(1, -1, 1, 1), beta.view(1, -1, 1, 1)
            x_hat = x_hat * alpha + beta
        return x_hat * (self.weight * gate) + self.bias

    def extra_repr(self) -> str:
        return super().extra_repr() + f", impl={self.impl}"


class IEBNGateHalf(IEBN):
    """`iebn-b0`, a control for IEBN's initialisation: IEBN whose gate bias starts at 0 (gate
    sigmoid(0) = 0.5 at init) in place of -1 (0.2689): it *gates per instance* like IEBN but
    starts less damped. Otherwise `iebn` (parameters, the attack, the implementations)."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1, impl: str | None = None):
        super().__init__(channels, eps, momentum, impl)
        with torch.no_grad():
            self.bias_readjust.zero_()


def _checked_impl(impl: str) -> str:
    if impl not in IEBN.IMPLS:
        raise ValueError(f"unknown IEBN impl '{impl}': choose from {', '.join(IEBN.IMPLS)}")
    return impl


def set_iebn_impl(model: nn.Module, impl: str) -> int:
    """Set `impl` on every IEBN layer of a model; returns how many there are."""
    _checked_impl(impl)
    layers = [m for m in model.modules() if isinstance(m, IEBN)]
    for m in layers:
        m.impl = impl
    return len(layers)


# ---------------------------------------------------------------------------------------------
# The fused IEBN. Notation (per instance n and channel c; m = mean over H, W of x; M = N*H*W):
#   forward (training):  mu, var = batch mean and biased variance per channel;  r = 1/sqrt(var + eps)
#       a = sigmoid(w_r * m + b_r);  G = gamma * a
#       y = (alpha * (x - mu) * r + beta) * G + b  =  x * S + T,   S = alpha r G,  T = b - mu S + beta G
#   backward, with A = sum_hw g and Bc = sum_hw g * (x - mu):
#       dG = alpha r Bc + beta A                    (= sum_hw g * (alpha x_hat + beta))
#       d gamma = sum_n dG a;  dz = dG G (1 - a);  d w_r = sum_n dz m;  d b_r = sum_n dz;  d b = sum_n A
#       dvar = -alpha r^3 sum_n(G Bc) / 2;  dmu = -sum_n A S
#       dx = g S + x U + V,   U = 2 dvar / M,   V = dz w_r / (H W) + (dmu - 2 dvar mu) / M
#   In eval mode mu and var are the running statistics (constants): U = 0, V = dz w_r / (H W).
# Only four things touch full-size tensors: the per-(n, c) statistics of x, the scale-and-shift,
# the per-(n, c) sums A and Bc, and the backward multiply-add. Everything else is (N, C)-sized
# and shared by both kernel sets below.
# ---------------------------------------------------------------------------------------------


def _forward_coefficients(m, mu, var, gamma, b, wr, br, eps: float, alpha, beta):
    """(N, C) algebra of the forward: r, a, G and the per-(n, c) scale S and shift T. alpha and beta are
    numbers (the constant attack) or (C,) tensors (per-channel noise)."""
    r = torch.rsqrt(var + eps)
    a = torch.sigmoid(torch.addcmul(br, m, wr))
    G = a * gamma
    S = G * (r * alpha)
    T = torch.addcmul(b, S, mu, value=-1.0)
    T = T.addcmul_(G, beta) if isinstance(beta, torch.Tensor) else T.add_(G, alpha=beta)
    return r, a, G, S, T


def _backward_coefficients(A, Bc, m, mu, r, a, G, S, wr, count: int, hw: int, training: bool, alpha, beta):
    """(N, C) algebra of the backward: U (C,) or None, V (N, C), and the four parameter grads (4, C)."""
    dG = Bc * (r * alpha)
    dG = dG.addcmul_(A, beta) if isinstance(beta, torch.Tensor) else dG.add_(A, alpha=beta)
    dz = dG * G * (1.0 - a)
    rows = [dG * a, dz * m, dz, A] + ([G * Bc, A * S] if training else [])
    sums = torch.stack(rows).sum(1)  # over n: d gamma, d w_r, d b_r, d b (, sum G Bc, sum A S)
    V = dz * (wr / hw)
    U = None
    if training:
        dvar = sums[4] * r.pow(3) * (-0.5 * alpha)
        V = V.sub_(torch.addcmul(sums[5], dvar, mu, value=2.0), alpha=1.0 / count)
        U = dvar * (2.0 / count)
    return U, V, sums[:4]


def _forward_kernel(x, weight, bias, weight_r, bias_r, eps: float, alpha, beta):
    """(compiled; training) The whole forward: statistics, gate, and y = x * S + T."""
    c = x.shape[1]
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    v, m = torch.var_mean(xf, dim=(2, 3), correction=0)  # per (n, c), one Welford pass over x
    mu = m.mean(0)
    var = v.mean(0) + (m - mu).square().mean(0)  # the law of total variance (equal group sizes): exact
    gamma, b, wr, br = (p.reshape(c).to(m.dtype) for p in (weight, bias, weight_r, bias_r))
    r, a, G, S, T = _forward_coefficients(m, mu, var, gamma, b, wr, br, eps, alpha, beta)
    y = torch.addcmul(T[:, :, None, None], xf, S[:, :, None, None]).to(x.dtype)
    return y, m, mu, var, r, a, G, S


def _backward_kernel(x, g, m, mu, r, a, G, S, wr, alpha, beta):
    """(compiled; training) The whole backward: A and Bc from one pass over (g, x), then dx from one."""
    n, _, h, w = x.shape
    xf, gf = x.to(S.dtype), g.to(S.dtype)
    A = gf.sum((2, 3))
    Bc = (gf * (xf - mu[None, :, None, None])).sum((2, 3))
    U, V, grads = _backward_coefficients(A, Bc, m, mu, r, a, G, S, wr, n * h * w, h * w, True, alpha, beta)
    dx = torch.addcmul(V[:, :, None, None], gf, S[:, :, None, None]).addcmul_(xf, U[None, :, None, None])
    return dx.to(x.dtype), grads


class _Compiled:
    """The torch.compile'd kernels, built on first use; None once compiling has failed in this process."""

    kernels: tuple | None = None
    failed = False
    # Static shapes: one graph per layer shape, dtype and memory layout. Kernels compiled for
    # dynamic shapes ran several times slower on ResNet-20's 16-channel layers (forward, bf16, batch
    # 128, on the CPU that built them; an uncommitted timing). A run trains on fixed-size batches, so a ResNet-20 compiles 3 shapes
    # (a few seconds each, cached on disk by inductor for the next process); a test suite that tries
    # many shapes needs more than dynamo's default of 8 graphs per function.
    RECOMPILE_LIMIT = 1024

    @classmethod
    def get(cls):
        if cls.kernels is None and not cls.failed:
            import torch._dynamo

            # The CUDA wheels log "No CUDA runtime is found, using CUDA_HOME=..." when inductor loads
            # its C++ toolchain on a machine without a GPU: true, and irrelevant to CPU kernels.
            logging.getLogger("torch.utils.cpp_extension").addFilter(
                lambda record: "No CUDA runtime is found" not in record.getMessage())
            cfg = torch._dynamo.config
            cfg.recompile_limit = max(cfg.recompile_limit, cls.RECOMPILE_LIMIT)
            cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, cls.RECOMPILE_LIMIT)
            cls.kernels = (torch.compile(_forward_kernel, dynamic=False, fullgraph=True),
                           torch.compile(_backward_kernel, dynamic=False, fullgraph=True))
        return None if cls.failed else cls.kernels

    @classmethod
    def call(cls, which: int, *args):
        """Run a compiled kernel; None (after one warning) if it cannot be compiled here."""
        kernels = cls.get()
        if kernels is None:
            return None
        try:
            return kernels[which](*args)
        except Exception as e:  # noqa: BLE001 - no C++ compiler, an unsupported device, ...: eager computes the same
            cls.failed, cls.kernels = True, None
            first_line = (str(e).strip().splitlines() or [""])[0][:200]
            warnings.warn(f"IEBN: compiled kernels unavailable ({type(e).__name__}: {first_line}); "
                          "using the eager ones (the same function, slower)", RuntimeWarning, stacklevel=3)
            return None


def iebn_kernels(compile_norms: bool) -> str:
    """Which kernels IEBN's training steps ran in this process: "compiled" or "eager"."""
    return "compiled" if compile_norms and not _Compiled.failed else "eager"


class _FusedIEBN(torch.autograd.Function):
    """IEBN as y = x * S + T with per-(n, c) S and T, and the hand-derived backward above.

    The full-size work runs in compiled kernels (`compiled=True`) or in stock PyTorch ops (`_Lanes`).
    Both keep activations in the input's dtype (bf16 under autocast: no upcast copy in memory) and
    do all (N, C)-sized algebra in at least fp32.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, weight_r, bias_r, running_mean, running_var, training, momentum, eps,
                alpha, beta, compiled):
        n, _, h, w = x.shape
        # Evaluation (a forward pass per test batch, whose sizes vary) runs the eager kernels: the
        # compiled ones serve the training steps, which are the time and have one shape per layer.
        compiled = compiled and training
        with torch.autocast(x.device.type, enabled=False):  # the kernels choose their own precision
            out = _Compiled.call(0, x, weight, bias, weight_r, bias_r, eps, alpha, beta) if compiled else None
            if out is None:
                out = _eager_forward(x, weight, bias, weight_r, bias_r, running_mean, running_var, training, eps,
                                     alpha, beta)
        y, m, mu, var, r, a, G, S = out
        if training:
            count = n * h * w
            running_mean.lerp_(mu.to(running_mean.dtype), momentum)
            running_var.lerp_((var * (count / max(count - 1, 1))).to(running_var.dtype), momentum)
        ctx.save_for_backward(x, m, mu, r, a, G, S, weight_r)
        ctx.training, ctx.alpha, ctx.beta, ctx.compiled, ctx.param_dtype = training, alpha, beta, compiled, weight.dtype
        return y

    @staticmethod
    def backward(ctx, g):
        x, m, mu, r, a, G, S, weight_r = ctx.saved_tensors
        c = x.shape[1]
        wr = weight_r.reshape(c).to(S.dtype)
        out = _Compiled.call(1, x, g, m, mu, r, a, G, S, wr, ctx.alpha, ctx.beta) if ctx.compiled else None
        dx, grads = out if out is not None else _eager_backward(x, g, m, mu, r, a, G, S, wr, ctx.training,
                                                                ctx.alpha, ctx.beta)
        d_gamma, d_wr, d_br, d_bias = grads.to(ctx.param_dtype).view(4, 1, c, 1, 1).unbind(0)
        return dx, d_gamma, d_bias, d_wr, d_br, None, None, None, None, None, None, None, None


def _eager_forward(x, weight, bias, weight_r, bias_r, running_mean, running_var, training, eps, alpha, beta):
    c, h, w = x.shape[1:]
    acc = torch.promote_types(x.dtype, torch.float32)
    lanes = _Lanes(x)
    x3 = lanes.view(x)
    m = lanes.sums_nc([x3], acc)[0].div_(h * w)
    if training:
        # batch_norm_update_stats returns its statistics in the running buffers' dtype (without them,
        # in the input's: bf16), so it gets throwaway ones in the accumulation dtype.
        scratch = torch.empty(2, c, dtype=acc, device=x.device)
        mu, var = torch.batch_norm_update_stats(x, scratch[0], scratch[1], 0.0)
    else:
        mu, var = running_mean.to(acc), running_var.to(acc)
    gamma, b, wr, br = torch.cat([weight, bias, weight_r, bias_r]).to(acc).view(4, c).unbind(0)
    r, a, G, S, T = _forward_coefficients(m, mu, var, gamma, b, wr, br, eps, alpha, beta)
    S_lanes, T_lanes = lanes.per_nc(torch.stack([S, T]).to(x.dtype)).unbind(0)
    y, y3 = lanes.new(x)
    torch.addcmul(T_lanes, x3, S_lanes, out=y3)
    return y, m, mu, var, r, a, G, S


def _eager_backward(x, g, m, mu, r, a, G, S, wr, training, alpha, beta):
    n, _, h, w = x.shape
    lanes = _Lanes(x)
    x3, g3 = lanes.view(x), lanes.view(g.to(x.dtype))
    A, B = lanes.sums_nc([g3, g3 * x3], S.dtype).unbind(0)
    Bc = torch.addcmul(B, A, mu, value=-1.0)  # sum g (x - mu)
    U, V, grads = _backward_coefficients(A, Bc, m, mu, r, a, G, S, wr, n * h * w, h * w, training, alpha, beta)
    dx, dx3 = lanes.new(x)
    if U is not None:
        torch.addcmul(lanes.per_nc(V.to(x.dtype)), x3, lanes.per_c(U.to(x.dtype)), out=dx3)
        dx3.addcmul_(g3, lanes.per_nc(S.to(x.dtype)))
    else:
        torch.addcmul(lanes.per_nc(V.to(x.dtype)), g3, lanes.per_nc(S.to(x.dtype)), out=dx3)
    return dx, grads


class _Lanes:
    """A 4D activation viewed as 3D so that per-(n, c) broadcasts run along a long contiguous inner dim
    (the eager kernels).

    Elementwise kernels broadcast an (N, C, 1, 1) operand fast only when the innermost loop is
    long. NCHW: the view is (N, C, HW) and the inner loop runs over HW. channels_last: memory is
    (N, HW, C), and with few channels (C = 16 in ResNet-20's first stage) the inner loop would be
    16 elements, shorter than one AVX-512 register of bf16, which falls back to scalar code (a
    broadcast bf16 add ran ~7x slower than a multiply). So k spatial positions are laid side by
    side: (N, HW / k, k * C), with every per-channel operand repeated k times along the lanes.
    """

    MIN_LANES = 64

    def __init__(self, x: torch.Tensor):
        n, c, h, w = x.shape
        self.shape = (n, c, h, w)
        self.channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        self.k = 1
        if self.channels_last:
            while self.k * c < self.MIN_LANES and (h * w) % (2 * self.k) == 0:
                self.k *= 2

    def view(self, t: torch.Tensor) -> torch.Tensor:
        """x (or a tensor in its memory format) as 3D; other layouts are copied into x's."""
        n, c, h, w = self.shape
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
            return t.permute(0, 2, 3, 1).reshape(n, h * w // self.k, self.k * c)
        return t.contiguous().view(n, c, h * w)

    def new(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh 4D tensor in this layout and its 3D view (to write with `out=`). A Function must not
        return a view: an in-place op after it (ReLU(inplace=True)) would be refused."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        t = torch.empty(self.shape, dtype=like.dtype, device=like.device, memory_format=fmt)
        return t, self.view(t)

    def per_nc(self, t: torch.Tensor) -> torch.Tensor:
        """(..., N, C) operands -> (..., N, 1, lanes), broadcastable against the 3D view."""
        if self.channels_last:
            return (t.repeat(*([1] * (t.dim() - 1)), self.k) if self.k > 1 else t).unsqueeze(-2)
        return t.unsqueeze(-1)

    def per_c(self, t: torch.Tensor) -> torch.Tensor:
        """A (C,) operand -> broadcastable against the 3D view."""
        if self.channels_last:
            return (t.repeat(self.k) if self.k > 1 else t).view(1, 1, -1)
        return t.view(1, -1, 1)

    def sums_nc(self, t3s: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """Per-(n, c) sums over H, W of 3D views: (len(t3s), N, C) in `dtype`.

        Each sum accumulates in fp32 (or fp64) inside the kernel and is rounded once to the input's
        dtype; asking the kernel for an fp32 result would first copy the whole bf16 tensor to fp32.
        """
        n, c = self.shape[:2]
        dim = 1 if self.channels_last else 2
        s = torch.stack([t3.sum(dim) for t3 in t3s]).to(dtype)
        return s.view(len(t3s), n, self.k, c).sum(2) if self.k > 1 else s
