"""GPU check: training speed, peak memory and sampling speed of ditlib's DiT at ImageNet-256 latent size.

For each model of `--models` (default DiT-XL/2 and DiT-B/2, built as for ImageNet 256×256 in latent space:
input_size=32, in_channels=4, num_classes=1000, learned Σ) the script measures, in one process:

1. Training rows, one per (batch, gradient checkpointing off / on). One step is what `ditlib.train` does
   per step when it trains on cached latents, without the data loader:

       x     (B, 4, 32, 32)  random tensor standing in for pre-encoded latents, already on the device
       t     (B,)            uniform in [0, 1000)
       y     (B,)            uniform in [0, 1000); class dropout (10 %) happens inside the model (train mode)
       noise (B, 4, 32, 32)  N(0, I)
       loss = diffusion.training_losses(model_fn, x, t, model_kwargs={"y": y}, noise=noise)["loss"].mean()
              under ditlib.runtime.autocast(device, precision), with model_fn = model(...).float()
       loss.backward(); AdamW(lr 1e-4, weight_decay 0).step(); update_ema(ema, model, 0.9999)

   `diffusion = create_diffusion("")` (1000 steps, the hybrid loss). Gradient checkpointing is the
   model's switch `model.gradient_checkpointing`. After `--warmup` untimed steps, `--steps` steps are
   timed between two `torch.cuda.synchronize()` calls. Reported: steps/s, img/s (= B × steps/s) and
   the peak of `torch.cuda.max_memory_allocated`, reset at the start of each row, so it counts the
   weights, the EMA copy, gradients, AdamW moments and activations of that row.

2. Sampling rows, one per batch: DDPM over 250 respaced steps (`create_diffusion("250")`) with
   classifier-free guidance at scale 1.5, as `ditlib.sample.sample_images` does it: the batch is doubled
   ([B labels; B null-class labels], 2B rows) and each step is one `diffusion.p_sample` through
   `model.forward_with_cfg` under autocast. Only `--sample-steps` steps (after warm-up steps) are timed;
   images/s for the full chain is extrapolated as B / (250 × seconds per step). Every step of the chain
   has the same shapes and the same cost, so the extrapolation leaves out only the initial noise draw.

A row that runs out of GPU memory prints "OOM" and the script continues with the next row. A global
time budget (`--max-seconds`) marks the rows it cannot reach as "skipped (time budget)", and a row that
crosses the budget stops timing early (the row says how many steps it timed). The JSON file (`--json`) is
rewritten after every row, so a run cut short still leaves its finished rows.

The figure published by fast-DiT for DiT-XL/2 at batch 128 on one A100 is printed beside the measured
DiT-XL/2 batch-128 rows, labelled as a published figure: it was not measured here.

    .venv/bin/python benchmarks/gpu_check.py                                # on a CUDA GPU, ≤ 420 s
    .venv/bin/python benchmarks/gpu_check.py --json runs/gpu_check.json
    .venv/bin/python benchmarks/gpu_check.py --device cpu --models DiT-debug/8 --batches 2 \\
        --steps 1 --sample-steps 1 --precision fp32                         # a CPU smoke run
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import math
import os
import platform
import shlex
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from ditlib.diffusion import create_diffusion  # noqa: E402
from ditlib.models import DiT_models, build_model  # noqa: E402
from ditlib.runtime import autocast, default_device  # noqa: E402
from ditlib.train import update_ema  # noqa: E402

LEARNING_RATE = 1e-4
EMA_DECAY = 0.9999
TRAIN_DIFFUSION_STEPS = ""        # create_diffusion(""): all 1000 steps, as in training

FAST_DIT_REFERENCE = ("fast-DiT (chuanqi/fast-DiT README): 0.84 steps/s, DiT-XL/2, batch 128, one A100 80GB, "
                      "mixed precision + pre-extracted latents")
FAST_DIT_DETAIL = ("that README row is cumulative: gradient checkpointing is on too, and it reports 27.5 GB; "
                   "see docs/full-scale.md, 'Published speed and memory'")
PUBLISHED_LABEL = "PUBLISHED figure, not measured here"


#################################################################################
#                                   Helpers                                     #
#################################################################################

def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer reads the time the work took (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Free cached blocks and start a new peak, so each row's peak is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak allocated GPU memory since the last reset, in GiB; None on a CPU (not tracked)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def comma_ints(text: str) -> list[int]:
    values = [int(item) for item in comma_list(text)]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def environment(device: torch.device) -> dict:
    """What the numbers depend on: the GPU, torch, CUDA, cuDNN, TF32."""
    env = {
        "device": str(device),
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "host": platform.node(),
        "cpu_threads": torch.get_num_threads(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if device.type == "cuda":
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        env["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    return env


#################################################################################
#                                 One training row                              #
#################################################################################

def train_row(model, diffusion, *, batch: int, grad_checkpointing: bool, args, device: torch.device,
              deadline: float) -> dict:
    """Time `args.steps` training steps (after `args.warmup`) at one batch size; see the module docstring."""
    model.train()
    model.gradient_checkpointing = grad_checkpointing
    ema = copy.deepcopy(model).requires_grad_(False).eval()     # the EMA copy lives on the device, as in training
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    C, I = model.in_channels, model.input_size
    latents = torch.randn(batch, C, I, I, device=device)        # (B, C, I, I): stands in for cached latents

    def model_fn(x, t, **kwargs):                               # the diffusion sees float32 outputs
        return model(x, t, **kwargs).float()                    # (B, 2C, I, I) with learned Σ

    def one_step() -> torch.Tensor:
        t = torch.randint(0, diffusion.num_timesteps, (batch,), device=device)        # (B,)
        y = torch.randint(0, model.num_classes, (batch,), device=device)              # (B,)
        noise = torch.randn_like(latents)                                             # (B, C, I, I)
        with autocast(device, args.precision):
            terms = diffusion.training_losses(model_fn, latents, t, model_kwargs={"y": y}, noise=noise)
        loss = terms["loss"].mean()                                                   # scalar
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        update_ema(ema, model, EMA_DECAY)
        return loss.detach()

    for _ in range(args.warmup):
        one_step()
    synchronize(device)
    start = time.perf_counter()
    timed, loss = 0, None
    while timed < args.steps:
        loss = one_step()
        timed += 1
        if time.perf_counter() > deadline:                      # the budget ran out inside this row
            break
    synchronize(device)
    seconds = time.perf_counter() - start
    steps_per_s = timed / seconds
    row = {
        "steps_per_s": steps_per_s,
        "img_per_s": steps_per_s * batch,
        "peak_mem_gib": peak_memory_gib(device),
        "timed_steps": timed,
        "warmup_steps": args.warmup,
        "seconds": seconds,
        "last_loss": float(loss),
    }
    if timed < args.steps:
        row["note"] = f"stopped early (time budget): {timed} of {args.steps} steps timed"
    if not math.isfinite(row["last_loss"]):
        row["note"] = (row.get("note", "") + "; loss is not finite").lstrip("; ")
    optimizer.zero_grad(set_to_none=True)
    return row


#################################################################################
#                                 One sampling row                              #
#################################################################################

@torch.no_grad()
def sample_row(model, diffusion, *, batch: int, args, device: torch.device, deadline: float) -> dict:
    """Time `args.sample_steps` guided DDPM steps at `batch` images (2·batch rows) and extrapolate to the chain."""
    model.eval()
    C, I = model.in_channels, model.input_size
    z = torch.randn(batch, C, I, I, device=device)                                    # (B, C, I, I)
    x = torch.cat([z, z], dim=0)                                                      # (2B, C, I, I)
    labels = torch.randint(0, model.num_classes, (batch,), device=device)             # (B,)
    null = torch.full_like(labels, model.num_classes)                                 # (B,) the null class
    y = torch.cat([labels, null], dim=0)                                              # (2B,)
    forward = partial(model.forward_with_cfg, cfg_scale=args.cfg_scale)

    def model_fn(x, t, **kwargs):                               # as in ditlib.sample.sample_images
        with autocast(device, args.precision):
            return forward(x, t, **kwargs).float()              # (2B, 2C, I, I)

    chain = diffusion.num_timesteps                             # 250 with the default respacing
    step_index = 0

    def one_step() -> None:
        nonlocal x, step_index
        i = (chain - 1 - step_index) % chain                    # walk down the chain: T−1, T−2, ...
        t = torch.full((x.shape[0],), i, device=device, dtype=torch.long)             # (2B,)
        # The latent sampler does not clip x̂_0 (as sample-fid on latents does not).
        x = diffusion.p_sample(model_fn, x, t, clip_denoised=False, model_kwargs={"y": y})["sample"]
        step_index += 1

    for _ in range(args.warmup):
        one_step()
    synchronize(device)
    start = time.perf_counter()
    timed = 0
    while timed < args.sample_steps:
        one_step()
        timed += 1
        if time.perf_counter() > deadline:
            break
    synchronize(device)
    seconds = time.perf_counter() - start
    seconds_per_step = seconds / timed
    row = {
        "steps_per_s": 1.0 / seconds_per_step,                  # guided sampling steps per second
        "img_per_s": batch / (chain * seconds_per_step),        # extrapolated to the full chain
        "peak_mem_gib": peak_memory_gib(device),
        "timed_steps": timed,
        "warmup_steps": args.warmup,
        "seconds": seconds,
        "chain_steps": chain,
        "forward_batch": 2 * batch,
        "cfg_scale": args.cfg_scale,
        "extrapolated": True,
        "note": f"img/s extrapolated to {chain} steps from {timed} timed steps",
    }
    if timed < args.sample_steps:
        row["note"] += f"; stopped early (time budget): {timed} of {args.sample_steps} steps"
    if not bool(torch.isfinite(x).all()):
        row["note"] += "; samples are not finite"
    return row


#################################################################################
#                               The table and the run                           #
#################################################################################

HEADER = f"{'kind':<6} {'model':<12} {'batch':>5} {'grad-ckpt':>9} {'steps/s':>9} {'img/s':>9} {'peak GiB':>9}  note"


def format_row(row: dict) -> str:
    ckpt = {True: "on", False: "off", None: "-"}[row.get("grad_checkpointing")]
    if row["status"] == "ok":
        peak = "n/a" if row["peak_mem_gib"] is None else f"{row['peak_mem_gib']:.2f}"
        numbers = f"{row['steps_per_s']:>9.3f} {row['img_per_s']:>9.2f} {peak:>9}"
    else:
        text = {"oom": "OOM", "skipped": "skipped (time budget)"}.get(row["status"], row["status"])
        numbers = f"{text:>29}"
    return (f"{row['kind']:<6} {row['model']:<12} {row['batch']:>5} {ckpt:>9} {numbers}  "
            f"{row.get('note', '')}").rstrip()


def is_reference_row(row: dict) -> bool:
    """The measured row that the fast-DiT figure sits beside: DiT-XL/2, training, batch 128."""
    return row["kind"] == "train" and row["model"] == "DiT-XL/2" and row["batch"] == 128


def print_table(rows: list[dict]) -> None:
    print("\n" + HEADER)
    print("-" * len(HEADER))
    for kind in ("train", "sample"):
        kind_rows = [r for r in rows if r["kind"] == kind]
        for index, row in enumerate(kind_rows):
            print(format_row(row))
            following = kind_rows[index + 1] if index + 1 < len(kind_rows) else None
            if is_reference_row(row) and not (following and is_reference_row(following)):
                print(f"{'':<6} ^ {PUBLISHED_LABEL}: {FAST_DIT_REFERENCE}")
        if kind == "train" and kind_rows:
            print()


def run_rows(args, device: torch.device, report: dict, deadline: float) -> None:
    """Every (model, row) in order; OOM and the time budget end a row, never the run."""
    rows = report["rows"]
    start = report["_start"]

    def record(row: dict) -> None:
        rows.append(row)
        print(f"[{time.perf_counter() - start:6.1f} s] {format_row(row)}", flush=True)
        write_json(args.json, report)

    sample_batches = args.sample_batches or args.batches
    for name in args.models:
        plan = [("train", b, ckpt) for b in args.batches for ckpt in (False, True)]
        plan += [("sample", b, None) for b in sample_batches]
        if time.perf_counter() > deadline:
            for kind, batch, ckpt in plan:
                record({"kind": kind, "model": name, "batch": batch, "grad_checkpointing": ckpt, "status": "skipped"})
            continue

        model, oom = None, False
        reset_peak_memory(device)
        build_start = time.perf_counter()
        try:
            torch.manual_seed(args.seed)
            model = build_model(name, input_size=args.input_size, in_channels=args.in_channels,
                                num_classes=args.num_classes, learn_sigma=True).to(device)
        except torch.cuda.OutOfMemoryError:
            oom = True
        if oom:
            model = None
            reset_peak_memory(device)
            for kind, batch, ckpt in plan:
                record({"kind": kind, "model": name, "batch": batch, "grad_checkpointing": ckpt,
                        "status": "oom", "note": "building the model ran out of memory"})
            continue
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"[{time.perf_counter() - start:6.1f} s] built {name}: {parameters / 1e6:.1f}M parameters, "
              f"tokens {(args.input_size // model.patch_size) ** 2}, in {time.perf_counter() - build_start:.1f} s",
              flush=True)
        train_diffusion = create_diffusion(TRAIN_DIFFUSION_STEPS)
        sample_diffusion = create_diffusion(str(args.num_sampling_steps))

        for kind, batch, ckpt in plan:
            row = {"kind": kind, "model": name, "batch": batch, "grad_checkpointing": ckpt, "parameters": parameters}
            if time.perf_counter() > deadline:
                record({**row, "status": "skipped"})
                continue
            reset_peak_memory(device)
            oom = False
            try:
                if kind == "train":
                    result = train_row(model, train_diffusion, batch=batch, grad_checkpointing=ckpt, args=args,
                                       device=device, deadline=deadline)
                else:
                    result = sample_row(model, sample_diffusion, batch=batch, args=args, device=device,
                                        deadline=deadline)
            except torch.cuda.OutOfMemoryError:
                oom = True
            # Outside the except block the traceback (and the row's tensors it holds) is gone.
            if oom:
                model.zero_grad(set_to_none=True)
                reset_peak_memory(device)
                record({**row, "status": "oom"})
            else:
                record({**row, "status": "ok", **result})
        model.gradient_checkpointing = False
        del model
        reset_peak_memory(device)


def write_json(path, report: dict) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    path.write_text(json.dumps(public, indent=2) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke test")
    p.add_argument("--models", type=comma_list, default=["DiT-XL/2", "DiT-B/2"],
                   help="comma-separated keys of ditlib.models.DiT_models (default DiT-XL/2,DiT-B/2)")
    p.add_argument("--input-size", type=int, default=32, help="latent size (32 = ImageNet 256 through the SD VAE)")
    p.add_argument("--in-channels", type=int, default=4)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--batches", type=comma_ints, default=[32, 128], help="training batch sizes (default 32,128)")
    p.add_argument("--sample-batches", type=comma_ints, default=None,
                   help="images per sampling batch (forward batch is twice this, for guidance); default: --batches")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per row (default 20)")
    p.add_argument("--sample-steps", type=int, default=10, help="timed sampling steps per row (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each row's timer (default 3)")
    p.add_argument("--num-sampling-steps", type=int, default=250, help="length of the DDPM chain (default 250)")
    p.add_argument("--cfg-scale", type=float, default=1.5)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                   help="autocast precision (default bf16; fp16 would need a gradient scaler and is not offered)")
    p.add_argument("--no-tf32", dest="tf32", action="store_false",
                   help="keep float32 matmuls in full fp32 on CUDA (default: TF32 on, as in the official DiT script)")
    p.add_argument("--max-seconds", type=float, default=420.0,
                   help="global time budget; rows beyond it are skipped (default 420)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write all results here as JSON (rewritten after every row)")
    args = p.parse_args(argv)
    unknown = [m for m in args.models if m not in DiT_models]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose among: {', '.join(DiT_models)}")
    if args.steps < 1 or args.sample_steps < 1 or args.warmup < 0:
        p.error("--steps and --sample-steps must be ≥ 1, --warmup ≥ 0")
    return args


def main(argv=None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    deadline = start + args.max_seconds
    try:
        device = default_device(args.device)
    except RuntimeError as err:                                 # cuda asked for, none available
        print(f"gpu_check: {err}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32

    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["gpu_check.py", *argv])
    env = environment(device)
    report = {
        "command": command,
        "wrapper_command": os.environ.get("GPU_CHECK_COMMAND"),
        "environment": env,
        "settings": {k: v for k, v in vars(args).items()},
        "reference": {"text": FAST_DIT_REFERENCE, "detail": FAST_DIT_DETAIL, "steps_per_s": 0.84,
                      "model": "DiT-XL/2", "batch": 128, "label": PUBLISHED_LABEL},
        "rows": [],
        "_start": start,
    }

    print("ditlib GPU check: DiT training and sampling at ImageNet-256 latent size")
    print(f"command: {command}")
    if report["wrapper_command"]:
        print(f"wrapper: {report['wrapper_command']}")
    print(f"device: {device}   GPU: {env['gpu_name'] or 'none'}   torch {env['torch']}   "
          f"CUDA {env['cuda'] or 'n/a'}   cuDNN {env['cudnn'] or 'n/a'}   "
          f"TF32 matmul {env.get('tf32_matmul', 'n/a')}")
    amp = "fp32 (no autocast)" if args.precision == "fp32" else f"{args.precision} autocast"
    print(f"precision: {amp}   latents: {args.in_channels}×{args.input_size}×{args.input_size} "
          f"(random, standing in for cached latents; no VAE)   classes: {args.num_classes}   "
          f"time budget: {args.max_seconds:.0f} s")
    print(f"training: {args.warmup} warm-up + {args.steps} timed steps per row (AdamW lr {LEARNING_RATE}, "
          f"EMA {EMA_DECAY}); sampling: {args.warmup} warm-up + {args.sample_steps} timed guided DDPM steps "
          f"(cfg {args.cfg_scale}), img/s EXTRAPOLATED to a {args.num_sampling_steps}-step chain\n", flush=True)

    run_rows(args, device, report, deadline)
    report["elapsed_s"] = time.perf_counter() - start
    write_json(args.json, report)

    print_table(report["rows"])
    print("\nsampling rows: steps/s = guided DDPM steps per second (forward batch 2×batch); img/s = batch / "
          f"({args.num_sampling_steps} × seconds per step), extrapolated from {args.sample_steps} timed steps, "
          "not a timed full chain")
    print(f"\nReference ({PUBLISHED_LABEL}):")
    print(f"  {FAST_DIT_REFERENCE}")
    print(f"  ({FAST_DIT_DETAIL})")
    measured = [r for r in report["rows"] if is_reference_row(r) and r["status"] == "ok"]
    for row in measured:
        ckpt = "on" if row["grad_checkpointing"] else "off"
        print(f"  measured here, DiT-XL/2 batch 128, grad-ckpt {ckpt}: {row['steps_per_s']:.3f} steps/s on "
              f"{env['gpu_name'] or device} ({row['steps_per_s'] / 0.84:.2f}× the published figure; "
              "different GPU and software)")
    print(f"\ndone in {report['elapsed_s']:.1f} s" + (f"; JSON: {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
