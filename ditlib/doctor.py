"""`python -m ditlib doctor`: what this machine is, which precision `auto` picks and why, and how fast the
default model trains and samples here, in each precision, in well under a minute.

Every speed in the course depends on the hardware (a 2-core CPU with native bf16 trains the default
model ~2× faster in bf16 than in fp32; one without it ~20× slower), so the course's timings name the
kind of machine they came from and point here. The measurements:

* matmul peak: GFLOP/s of a 2048×2048 fp32 matmul (2n³ flops), the yardstick for "% of peak";
* training img/s: the real step of `ditlib.train` (hybrid loss, backward, fused AdamW, EMA) on random
  data of the default config's shape and batch, eager (the CLI compiles long runs on top of it);
  GFLOP/s by the paper's count: Gflops/forward × 2 (multiply-adds) × 3 (forward + backward);
* sampling forward passes/s: one `torch.no_grad()` forward of the batch, the cost of a sampling step.

Where bf16 is emulated, its rows use a small batch (one step of batch 64 would take ~15 s) and say so.
"""
from __future__ import annotations

import copy
import os
import platform
import time

import torch

from .configs import DEFAULT_CONFIG, build_backbone, get_config
from .diffusion import create_diffusion
from .flops import gflops
from .runtime import autocast, cpu_bf16_probe, cpu_name, default_device, hardware_summary, resolve_precision
from .train import COMPILE_MIN_STEPS, make_optimizer, update_ema

PEAK_SIZE = 2048
EMULATED_BATCH = 8            # batch for bf16 rows where bf16 is emulated


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, n: int = PEAK_SIZE, seconds: float = 1.0,
                       device: torch.device | str = "cpu") -> float:
    """GFLOP/s of an n×n @ n×n matmul in `dtype` (2n³ flops per product), timed for about `seconds`."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)                        # (n, n)
    b = torch.randn(n, n, generator=g).to(device, dtype)                        # (n, n)
    a @ b
    _sync(device)
    calls, start = 0, time.perf_counter()
    while calls < 1 or time.perf_counter() - start < seconds:
        a @ b
        calls += 1
        _sync(device)
    return 2 * n ** 3 * calls / (time.perf_counter() - start) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rate(fn, seconds: float, min_calls: int = 2) -> float:
    """Calls per second of `fn` after one untimed call, timed for at least `min_calls` calls and ~`seconds`."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def build_steps(config_name=None, precision: str = "fp32", batch_size: int | None = None,
                device: torch.device | str | None = None, compile: bool = False, fused_adamw: bool = True):
    """(train_step, sample_step, info) for a training config's model on random data of its shape.

    `train_step()` is `ditlib.train`'s step: t ~ U{0..T−1}, ε ~ N(0, I), the hybrid loss (§2) under
    `precision` autocast, backward, gradient clipping (if the config clips), AdamW (fused or foreach), EMA
    update; with `compile` the model and loss are one `torch.compile` graph as `ditlib.train` compiles them.
    `sample_step()` is one `torch.no_grad()` forward of the batch. info: {"config", "model", "batch", "gflops_per_forward"}.
    """
    config = config_name if hasattr(config_name, "dit_config") else get_config(config_name or DEFAULT_CONFIG)
    config = config.replace(fused_adamw=fused_adamw)                  # a TrainConfig or the name of one
    device = torch.device(device) if device is not None else default_device()
    precision = resolve_precision(precision, device, announce=False).precision
    batch = batch_size or config.batch_size
    torch.manual_seed(0)
    model = build_backbone(config.model_config()).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = make_optimizer(model.parameters(), config, device)
    diffusion = create_diffusion("", noise_schedule=config.noise_schedule, learn_sigma=config.learn_sigma,
                                 diffusion_steps=config.diffusion_steps)
    x = torch.randn(batch, config.in_channels, config.image_size, config.image_size, device=device)   # (B, C, I, I)
    y = torch.randint(0, config.num_classes, (batch,), device=device)                                # (B,)

    def loss_terms(x, t, noise, y):
        with autocast(device, precision):
            return diffusion.training_losses(lambda a, b, **k: model(a, b, **k).float(), x, t,
                                             model_kwargs={"y": y}, noise=noise, min_snr_gamma=config.min_snr_gamma)

    losses = torch.compile(loss_terms, dynamic=False) if compile else loss_terms

    def train_step():
        model.train()
        t = torch.randint(0, diffusion.num_timesteps, (batch,), device=device)                       # (B,)
        terms = losses(x, t, torch.randn_like(x), y)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].mean().backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        update_ema(ema, model, 0.999)
        _sync(device)

    t_fixed = torch.full((batch,), 500, device=device)

    @torch.no_grad()
    def sample_step():
        model.eval()
        with autocast(device, precision):
            model(x, t_fixed, y)                                                                     # (B, C_out, I, I)
        _sync(device)

    info = {"config": config.name, "model": config.model, "batch": batch, "precision": precision,
            "gflops_per_forward": gflops(model)}
    return train_step, sample_step, info


def train_gflops_per_s(img_per_s: float, gflops_per_forward: float) -> float:
    """Achieved GFLOP/s of training by the paper's count: Gflops (multiply-adds) × 2 × 3 (forward + backward)."""
    return img_per_s * gflops_per_forward * 2 * 3


def measure_model(config_name: str | None = None, precision: str = "fp32", batch_size: int | None = None,
                  seconds: float = 2.0, device: torch.device | str | None = None) -> dict:
    """Training img/s and sampling forward passes/s of a training config's model in one precision (eager).

    Returns {"precision", "batch", "train_img_per_s", "train_gflops_per_s", "sample_passes_per_s",
    "gflops_per_forward", "model", "config"}.
    """
    train_step, sample_step, info = build_steps(config_name, precision, batch_size, device)
    train_rate = timed_rate(train_step, seconds) * info["batch"]
    sample_rate = timed_rate(sample_step, seconds / 2)
    return {**info, "train_img_per_s": train_rate,
            "train_gflops_per_s": train_gflops_per_s(train_rate, info["gflops_per_forward"]),
            "sample_passes_per_s": sample_rate}


def run_doctor(config_name: str | None = None, seconds: float = 2.0, device=None, out=print) -> dict:
    """Measure and print the machine report; returns it as a dict (what `--json` writes)."""
    import threading

    device = torch.device(device) if device is not None else default_device()
    report = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
              "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "interop_threads": torch.get_num_interop_threads(), "python_threads": threading.active_count()}
    out("machine")
    out(f"  device          {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    out(f"  CPU             {report['cpu']}, capability {report['cpu_capability']}, {report['cores']} cores, "
        f"{report['torch_threads']} torch threads")
    out(f"  software        torch {report['torch']}, Python {report['python']}")
    if device.type == "cpu":
        probe = cpu_bf16_probe()
        report["bf16_probe"] = probe
        out(f"  bf16            oneDNN bf16 flag {probe['mkldnn_bf16']}; {probe['probe']}: fp32 "
            f"{probe['fp32_gflops']:.0f} GFLOP/s, bf16 {probe['bf16_gflops']:.1f} GFLOP/s "
            f"({probe['speedup']:.2f}× fp32) -> {'native' if probe['native'] else 'emulated'}")
    choice = resolve_precision("auto", device, announce=False)
    report["auto_precision"] = choice.to_dict()
    out(f"  summary         {hardware_summary(device)}")
    out(f"\nprecision auto → {choice.precision}: {choice.reason}")

    peak = matmul_peak_gflops(torch.float32, seconds=min(1.0, seconds / 2), device=device)
    report["fp32_matmul_peak_gflops"] = peak
    out(f"\nfp32 matmul peak ({PEAK_SIZE}² matmul): {peak:.0f} GFLOP/s")

    name = config_name or DEFAULT_CONFIG
    out(f"\nmodel of config {name} (eager training step; `train` also compiles runs of ≥ {COMPILE_MIN_STEPS} steps)")
    out(f"  {'precision':<10} {'batch':>5} {'train img/s':>12} {'GFLOP/s':>8} {'% fp32 peak':>11} {'sample passes/s':>16}")
    rows = []
    native = choice.precision == "bf16"
    for precision in ("fp32", "bf16"):
        if precision == "bf16" and device.type not in ("cpu", "cuda"):
            continue
        batch = None if precision == "fp32" or native else EMULATED_BATCH
        row = measure_model(name, precision if precision == "fp32" else "bf16", batch_size=batch,
                            seconds=seconds, device=device)
        row["emulated"] = precision == "bf16" and not native
        rows.append(row)
        note = "  (bf16 emulated: small batch)" if row["emulated"] else ""
        out(f"  {precision:<10} {row['batch']:>5} {row['train_img_per_s']:>12.1f} {row['train_gflops_per_s']:>8.0f} "
            f"{100 * row['train_gflops_per_s'] / peak:>10.0f}% {row['sample_passes_per_s']:>16.2f}{note}")
    report["rows"] = rows
    fp32_rate = rows[0]["train_img_per_s"]
    if len(rows) > 1:
        ratio = rows[1]["train_img_per_s"] / fp32_rate
        out(f"\nbf16 / fp32 training speed: {ratio:.2f}× -> auto picks {choice.precision}")
        report["bf16_over_fp32_train"] = ratio
    return report
