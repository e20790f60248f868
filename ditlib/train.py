"""Training a DiT (paper §4 "Training"): data -> t, ε -> hybrid loss -> AdamW -> EMA, with checkpoints and exact resume.

`train(config, out_dir)` is what `python -m ditlib train --config NAME` runs, in one process or in each
process of `accelerate launch -m ditlib train ...`. The loop is written out in `train` so the whole recipe
can be read in one place:

    x, y  = next batch (random flips)           # ditlib.data
    t     ~ U{0, …, T−1},  ε ~ N(0, I)
    loss  = mean(L_simple + L_vlb)              # ditlib.diffusion.training_losses
    AdamW step (lr 1e-4, no weight decay in the paper)
    EMA   θ_ema ← d·θ_ema + (1 − d)·θ            # d = 0.9999 in the paper

Many processes (DDP on GPUs and nodes, FSDP, TPUs) go through `accelerate`; see `ditlib.distributed`.
Every process draws each step's randomness (batch, t, ε, label dropout) for the whole global batch and
keeps its own rows, so N processes compute exactly the update one process would, and the logged loss
is the mean over the global batch (reduced across processes). Only the main process writes files.

Resuming: the random stream of a run is (seed, step) for the data and the saved torch RNG state for
t, ε and label dropout, so a run interrupted at step k and resumed equals an uninterrupted run.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoints as ckpt
from .configs import IMAGENET_DATASET, TrainConfig
from .data import StepBatches, _derived_seed, build_dataset, infinite_batches
from .diffusion import create_diffusion
from .models import BLOCKS, DiT, build_model
from .runtime import autocast, resolve_precision, seed_everything

COMPILE_MIN_STEPS = 1000
"""`compile="auto"` compiles the model and loss only for runs of at least this many steps: compiling costs
13–30 s the first time on a CPU (seconds once inductor's cache holds it). Measured with
benchmarks/bench_model.py on a 2-core AMD EPYC with native bf16: fp32 step ×1.08 compiled, bf16 ×0.92 (slower),
so on a CPU "auto" compiles fp32 runs only."""

CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "log.jsonl"
FINAL_WEIGHTS = "final"        # out_dir/final.{safetensors,json}: EMA weights only, for sampling and shipping
KEEP_CHECKPOINTS = 2
SNAPSHOT_DIR = "snapshots"     # out_dir/snapshots/step-{step}: EMA weights every config.snapshot_every steps, all kept


@torch.no_grad()
def update_ema(ema_model, model: torch.nn.Module, decay: float) -> None:
    """θ_ema ← decay·θ_ema + (1 − decay)·θ, parameter by parameter.

    `ema_model` is a module like `model`, or (under FSDP) a list of tensors shaped like this process's
    shards of `model.parameters()`.
    """
    ema_params = list(ema_model if isinstance(ema_model, (list, tuple)) else ema_model.parameters())
    params = [p.detach() for p in model.parameters()]
    if len(ema_params) != len(params):
        raise ValueError(f"the EMA has {len(ema_params)} tensors but the model {len(params)} parameters")
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)                 # one fused update over all tensors


def ema_decay_at(config: TrainConfig, step: int) -> float:
    """The EMA decay used after optimiser step `step` (0-based)."""
    if config.ema_warmup:
        return min(config.ema_decay, (1 + step) / (10 + step))
    return config.ema_decay


LR_SCHEDULES = ("constant", "cosine")


def lr_at(config: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step `step` (0-based), after an optional linear warm-up: constant
    (the paper's), or "cosine" from lr down to lr·final_lr_ratio at step max_steps (an option for short runs)."""
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}; choose one of {LR_SCHEDULES}")
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    span = max(config.max_steps - config.warmup_steps, 1)
    progress = min(max(step - config.warmup_steps, 0) / span, 1.0)
    floor = config.lr * config.final_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def list_checkpoints(out_dir) -> list[Path]:
    """Complete training checkpoints in `out_dir`, oldest first (stems)."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    return sorted(p.with_suffix("") for p in folder.glob("step-*.json"))


def _rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    return tensors


def _set_rng(tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


def _write_training_checkpoint(out_dir, step: int, model_state: dict, ema_state: dict, optimizer_state: dict,
                               config: TrainConfig, model_config: dict, device: torch.device, elapsed_s: float,
                               extra: dict | None = None) -> Path:
    opt_tensors, opt_meta = ckpt.optimizer_to_tensors(optimizer_state)
    tensors = {**ckpt.prefixed(model_state, "model"), **ckpt.prefixed(ema_state, "ema"),
               **opt_tensors, **_rng_tensors(device)}
    meta = {"kind": "training", "step": step, "train_config": config.to_dict(), "model_config": model_config,
            "optimizer": opt_meta, "elapsed_s": elapsed_s, **(extra or {})}
    stem = ckpt.save_checkpoint(Path(out_dir) / CHECKPOINT_DIR / f"step-{step:07d}", tensors, meta)
    for old in list_checkpoints(out_dir)[:-KEEP_CHECKPOINTS]:
        for suffix in (".json", ".safetensors"):
            old.with_suffix(suffix).unlink(missing_ok=True)
    return stem


def save_training_checkpoint(out_dir, step: int, model: DiT, ema: DiT, optimizer, config: TrainConfig,
                             device: torch.device, elapsed_s: float) -> Path:
    """model, EMA, AdamW state and RNG state at `step` -> out_dir/checkpoints/step-{step}.{safetensors,json}."""
    return _write_training_checkpoint(out_dir, step, model.state_dict(), ema.state_dict(), optimizer.state_dict(),
                                      config, model.config(), device, elapsed_s)


def _write_final_weights(out_dir, step: int, ema_state: dict, model_config: dict, config: TrainConfig,
                         elapsed_s: float, extra: dict | None = None, name: str = FINAL_WEIGHTS) -> Path:
    meta = {"kind": "weights", "step": step, "train_config": config.to_dict(), "model_config": model_config,
            "elapsed_s": elapsed_s, **(extra or {})}
    return ckpt.save_checkpoint(Path(out_dir) / name, ckpt.prefixed(ema_state, "ema"), meta)


def list_snapshots(out_dir) -> list[Path]:
    """The EMA snapshots of a run (config.snapshot_every), oldest first, as checkpoint stems."""
    return sorted(p.with_suffix("") for p in (Path(out_dir) / SNAPSHOT_DIR).glob("step-*.json"))


def save_final_weights(out_dir, step: int, ema: DiT, config: TrainConfig, elapsed_s: float, extra: dict | None = None) -> Path:
    return _write_final_weights(out_dir, step, ema.state_dict(), ema.config(), config, elapsed_s, extra)


def read_log(out_dir) -> list[dict]:
    """The loss log of a run: one dict per logged step."""
    path = Path(out_dir) / LOG_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_log(out_dir, step: int) -> None:
    """On resume, drop log lines written after the checkpoint we resume from."""
    rows = [r for r in read_log(out_dir) if r["step"] <= step]
    (Path(out_dir) / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _training_data(config: TrainConfig, dataset, device: torch.device, accelerator):
    """(dataset, codec): what `train` draws batches from, and the VAE that encodes them on the fly (or None).

    Pixels; a latent cache (`ditlib.latents`, built once by the main process); or, for configs with
    `cache_latents=False` (the paper's), images encoded by the VAE batch by batch as in the official script.
    """
    codec = None
    if dataset is None and config.dataset == IMAGENET_DATASET and not Path(config.dataset).is_dir():
        raise ValueError(f"config {config.name!r} trains on ImageNet: pass --data-path DIR (the train folder, one "
                         "sub-folder of images per class) or --latents CACHE (from `python -m ditlib encode-latents`)")
    if config.vae and not config.cache_latents and not getattr(dataset, "selects_flips", False):
        from .vae import load_vae

        codec = load_vae(config.vae, device=device)
        if dataset is None:
            dataset = build_dataset(config.dataset, "train", image_size=config.image_size * codec.downsample_factor,
                                    hflip=False)
        if codec.latent_channels != config.in_channels:
            raise ValueError(f"config {config.name!r} expects {config.in_channels} channels but the VAE's latents "
                             f"have {codec.latent_channels}")
    elif dataset is None and config.vae:
        from .latents import build_latent_dataset

        with accelerator.main_process_first():        # one process encodes and writes the cache; the others read it
            dataset = build_latent_dataset(config.vae, config.dataset, "train", precision=config.precision)
    elif dataset is None:
        dataset = build_dataset(config.dataset, "train", image_size=config.image_size, hflip=False)
    if codec is None and getattr(dataset, "in_channels", config.in_channels) != config.in_channels:
        raise ValueError(f"config {config.name!r} expects {config.in_channels} channels but the dataset has {dataset.in_channels}")
    if getattr(dataset, "num_classes", config.num_classes) > config.num_classes:
        raise ValueError(f"config {config.name!r} has {config.num_classes} classes but the dataset has {dataset.num_classes}")
    return dataset, codec


@torch.no_grad()
def _encode_batch(codec, x: torch.Tensor, seed: int, step: int, rows: slice, global_batch: int) -> torch.Tensor:
    """Images -> scaled latent samples scale·(μ + σ·ε) (§3.1), as the official script does for every batch.
    ε is drawn for the whole global batch from (seed, step) and this process keeps its rows."""
    q = codec.encode(x)                                                        # μ, σ each (b, C, h, w)
    noise_device = q.mean.device if q.mean.device.type == "cuda" else torch.device("cpu")
    generator = torch.Generator(noise_device).manual_seed(_derived_seed(seed, "latent", step))
    eps = torch.randn((global_batch, *q.mean.shape[1:]), generator=generator, device=noise_device)[rows]
    return (q.mean + q.std * eps.to(q.mean.device)) * codec.scale_factor


def _resolve_compile(config: TrainConfig, device: torch.device, precision: str, steps_to_run: int,
                     distributed: bool) -> bool:
    """`config.compile` as a bool. "auto": one process, a run of ≥ COMPILE_MIN_STEPS steps, on a CUDA device
    or on a CPU in fp32 (where the benchmark measured a gain; compiled bf16 was slower there)."""
    if config.compile in (True, False):
        return config.compile
    if config.compile != "auto":
        raise ValueError(f"compile must be True, False or 'auto', got {config.compile!r}")
    fast_here = device.type == "cuda" or (device.type == "cpu" and precision == "fp32")
    return fast_here and not distributed and steps_to_run >= COMPILE_MIN_STEPS


def _make_optimizer(params, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (§4: lr 1e-4, no weight decay); the fused kernel on CPU and CUDA (one pass over all tensors)."""
    fused = config.fused_adamw and device.type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def _set_tf32(device: torch.device, enabled: bool) -> None:
    """TF32 for float32 matmuls and convolutions on CUDA (Ampere and newer): ~8× the fp32 matmul rate, 10-bit mantissas."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def train(config: TrainConfig, out_dir, max_steps: int | None = None, resume: bool = False,
          device: torch.device | str | None = None, progress: bool = True, dataset=None) -> dict:
    """Train `config` into `out_dir`; returns a summary dict (steps, time, final loss, paths).

    out_dir receives `checkpoints/step-*.{safetensors,json}` (model, EMA, AdamW, RNG; the last
    two kept), `log.jsonl` (loss, mse, vb, lr, img/s), `final.{safetensors,json}` (EMA weights only)
    and `loss.png`. `resume=True` continues from the newest checkpoint exactly.

    Under `accelerate launch` every process runs this function: `config.batch_size` is the global batch
    (it must divide by the number of processes), the main process writes every file, and the checkpoint
    format is the same as a single process's, so runs move between one and many processes.
    """
    from .distributed import (is_distributed, is_fsdp, load_full_state_dict, load_optimizer_state_full,
                              make_accelerator, mark_step, optimizer_state_full, rank_rows, run_device, full_state_dict,
                              sharded_ema, weights_swapped)

    out_dir = Path(out_dir)
    max_steps = config.max_steps if max_steps is None else max_steps
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    accelerator = make_accelerator(device, fsdp_wrap=(BLOCKS[config.block].__name__,))
    device = run_device(accelerator, device)
    distributed, fsdp, main = is_distributed(accelerator), is_fsdp(accelerator), accelerator.is_main_process
    rows = rank_rows(accelerator, config.batch_size)          # this process's rows of every global batch
    progress = progress and main
    seed_everything(config.seed)                               # the same on every process: global draws
    _set_tf32(device, config.tf32)
    precision = resolve_precision(config.precision, device, announce=main)   # "auto" -> what this hardware does fast
    run_info = {"precision": precision.to_dict()}             # recorded in every checkpoint's JSON

    existing = list_checkpoints(out_dir)
    if existing and not resume:
        raise FileExistsError(f"{out_dir} already holds checkpoints ({existing[-1].name}); "
                              f"pass --resume to continue that run or choose another --out")
    dataset, codec = _training_data(config, dataset, device, accelerator)

    model = build_model(config.model, **config.model_kwargs()).to(device)
    model.gradient_checkpointing = config.grad_checkpointing
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    param_names = [name for name, _ in model.named_parameters()]
    diffusion = create_diffusion("", noise_schedule=config.noise_schedule, learn_sigma=config.learn_sigma,
                                 diffusion_steps=config.diffusion_steps)

    step, elapsed_before, tensors, meta = 0, 0.0, None, None
    if resume and existing:
        tensors, meta = ckpt.load_checkpoint(existing[-1])
        if meta["train_config"]["model"] != config.model:
            raise ValueError(f"{existing[-1]} was trained with {meta['train_config']['model']}, not {config.model}")
        model.load_state_dict(ckpt.subdict(tensors, "ema" if fsdp else "model"))   # FSDP: the EMA is taken first
        ema.load_state_dict(ckpt.subdict(tensors, "ema"))
        step, elapsed_before = meta["step"], meta.get("elapsed_s", 0.0)
        if main:
            _truncate_log(out_dir, step)
        if progress:
            print(f"resuming {config.name} from {existing[-1]} at step {step}")
    elif resume and progress:
        print(f"--resume: no checkpoint in {out_dir / CHECKPOINT_DIR}, starting from step 0")

    # DDP wraps the model (gradients are averaged in backward); FSDP shards it, and the EMA becomes a
    # list of this process's shards. A plain process keeps the model as it is.
    prepared = accelerator.prepare(model, device_placement=[False])
    if fsdp:
        ema = sharded_ema(prepared)
        if tensors is not None:
            load_full_state_dict(prepared, ckpt.subdict(tensors, "model"))
    optimizer = _make_optimizer(prepared.parameters(), config, device)
    optimizer = accelerator.prepare(optimizer, device_placement=[False])
    scaler = None
    if precision.precision == "fp16":             # fp16 gradients underflow without loss scaling
        if fsdp:
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
            scaler = ShardedGradScaler()
        else:
            scaler = torch.amp.GradScaler(device.type)
    if tensors is not None:
        opt_state = ckpt.optimizer_state_from_tensors(tensors, meta["optimizer"])
        if fsdp:
            load_optimizer_state_full(prepared, optimizer.optimizer, opt_state, param_names)
        else:
            optimizer.load_state_dict(opt_state)
        if scaler is not None and meta.get("grad_scaler"):
            scaler.load_state_dict(meta["grad_scaler"])
        _set_rng(tensors, device)
        del tensors
    compiled = _resolve_compile(config, device, precision.precision, max_steps - step, distributed)
    run_info["compiled"] = compiled
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    # Batch `step` of the global stream; this process gets its rows. Worker processes decode images ahead.
    if config.num_workers > 0:
        batches = iter(torch.utils.data.DataLoader(
            StepBatches(dataset, config.batch_size, seed=config.seed, hflip=config.hflip,
                        num_shards=accelerator.num_processes, shard=accelerator.process_index),
            batch_size=None, sampler=range(step, max_steps), num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator()))  # the loader's own seed draw must not advance torch's global RNG
    else:
        batches = infinite_batches(dataset, config.batch_size, seed=config.seed, start_step=step, hflip=config.hflip,
                                   num_shards=accelerator.num_processes, shard=accelerator.process_index)
    draw_device = torch.device("cpu") if device.type == "xla" else device    # XLA: draw on the host, exactly resumable

    def model_fn(x, t, **kwargs):          # the diffusion sees float32 outputs whatever the autocast
        return prepared(x, t, **kwargs).float()

    def loss_terms(x, t, noise, model_kwargs):   # the hybrid loss (§2), per sample; compiled as one graph
        with autocast(device, precision.precision):
            return diffusion.training_losses(model_fn, x, t, model_kwargs=model_kwargs, noise=noise,
                                             min_snr_gamma=config.min_snr_gamma)

    compute_losses = torch.compile(loss_terms, dynamic=False) if compiled else loss_terms

    def gathered_state():                  # (model, EMA, AdamW) state dicts; a collective under FSDP
        if fsdp:
            model_state = full_state_dict(prepared)
            with weights_swapped(prepared, ema):
                ema_state = full_state_dict(prepared)
            return model_state, ema_state, optimizer_state_full(prepared, optimizer.optimizer, param_names)
        return model.state_dict(), ema.state_dict(), optimizer.state_dict()

    def ema_state_dict():                  # the EMA's weights; a collective under FSDP
        return gathered_state()[1] if fsdp else ema.state_dict()

    def save_checkpoint():
        states = gathered_state()
        if main:
            extra = {**run_info, **({"grad_scaler": scaler.state_dict()} if scaler is not None else {})}
            _write_training_checkpoint(out_dir, step, *states, config, model.config(), device,
                                       elapsed_before + time.perf_counter() - start_time, extra)
        accelerator.wait_for_everyone()

    model.train()
    log_file = open(out_dir / LOG_FILE, "a") if main else None
    start_time = time.perf_counter()
    window_start, window_images = time.perf_counter(), 0
    running = {"loss": 0.0, "mse": 0.0, "vb": 0.0}
    running_n = 0
    bar = tqdm(total=max_steps, initial=step, desc=f"train {config.name}", disable=not progress, dynamic_ncols=True)
    last_row: dict = {}
    step_in_run = 0
    try:
        while step < max_steps:
            x, y = next(batches)                                               # this process's rows
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if codec is not None:
                x = _encode_batch(codec, x, config.seed, step, rows, config.batch_size)
            n = config.batch_size                                              # draws for the global batch
            t = torch.randint(0, diffusion.num_timesteps, (n,), device=draw_device)[rows].to(device)
            noise = torch.randn((n, *x.shape[1:]), device=draw_device)[rows].to(device)
            model_kwargs = {"y": y}
            if config.class_dropout_prob > 0:                                  # label dropout for guidance
                drop = torch.rand(n, device=draw_device) < config.class_dropout_prob
                model_kwargs["force_drop_ids"] = drop[rows].to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, step)
            try:
                terms = compute_losses(x, t, noise, model_kwargs)
            except Exception as err:               # a compiler that fails here must not cost the run
                if compute_losses is loss_terms or step_in_run > 0:
                    raise
                print(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                      "training without it (pass --no-compile to skip the attempt)", file=sys.stderr)
                compute_losses, run_info["compiled"] = loss_terms, False
                terms = compute_losses(x, t, noise, model_kwargs)
            step_in_run += 1
            loss = terms["loss"].mean()
            stats = torch.stack([loss.detach(), terms["mse"].mean().detach(), terms["vb"].mean().detach()])
            if distributed:                                                    # the global-batch mean
                stats = accelerator.reduce(stats, reduction="mean")
            loss_value, mse_value, vb_value = stats.tolist()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {step}; lower the lr or use precision='fp32'")
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(scaler.scale(loss) if scaler is not None else loss)
            if config.grad_clip is not None:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                accelerator.clip_grad_norm_(prepared.parameters(), config.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            update_ema(ema, prepared if fsdp else model, ema_decay_at(config, step))
            mark_step(device)
            step += 1

            running["loss"] += loss_value
            running["mse"] += mse_value
            running["vb"] += vb_value
            running_n += 1
            window_images += config.batch_size
            bar.update(1)
            if step % config.log_every == 0 or step == max_steps:
                now = time.perf_counter()
                last_row = {"step": step, **{k: v / running_n for k, v in running.items()},
                            "lr": lr_at(config, step - 1), "img_per_s": window_images / max(now - window_start, 1e-9),
                            "elapsed_s": elapsed_before + now - start_time}
                if log_file is not None:
                    log_file.write(json.dumps(last_row) + "\n")
                    log_file.flush()
                bar.set_postfix(loss=f"{last_row['loss']:.4f}", img_s=f"{last_row['img_per_s']:.0f}")
                running = {k: 0.0 for k in running}
                running_n, window_start, window_images = 0, now, 0
            if config.snapshot_every and step % config.snapshot_every == 0:
                ema_state = ema_state_dict()
                if main:      # elapsed_s: training time up to this step
                    _write_final_weights(out_dir, step, ema_state, model.config(), config,
                                         elapsed_before + time.perf_counter() - start_time, run_info,
                                         name=f"{SNAPSHOT_DIR}/step-{step:07d}")
            if step % config.ckpt_every == 0 or step == max_steps:
                save_checkpoint()
    except KeyboardInterrupt:
        if main and not fsdp:              # an FSDP checkpoint needs every process, which are stopping too
            path = _write_training_checkpoint(out_dir, step, model.state_dict(), ema.state_dict(),
                                              optimizer.state_dict(), config, model.config(), device,
                                              elapsed_before + time.perf_counter() - start_time,
                                              {**run_info, **({"grad_scaler": scaler.state_dict()} if scaler is not None else {})})
            print(f"\ninterrupted: saved {path}; continue with --resume")
        raise
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()

    elapsed = elapsed_before + time.perf_counter() - start_time
    ema_state = ema_state_dict()
    final = Path(out_dir) / FINAL_WEIGHTS
    if main:
        final = _write_final_weights(out_dir, step, ema_state, model.config(), config, elapsed, run_info)
        try:
            plot_loss(out_dir)
        except Exception as err:  # a plot must never cost a finished run
            print(f"(could not draw loss.png: {err})")
    accelerator.wait_for_everyone()
    return {"steps": step, "elapsed_s": elapsed, "final_loss": last_row.get("loss", math.nan),
            "final_weights": str(final), "out_dir": str(out_dir), **run_info}


def plot_loss(out_dir, path=None):
    """Draw the logged loss (and its mse / vb parts) against the step into out_dir/loss.png."""
    # A bare Figure (no pyplot): works without a display and never changes a notebook's backend.
    from matplotlib.figure import Figure

    rows = read_log(out_dir)
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for key in ("loss", "mse", "vb"):
        ax.plot(steps, [r[key] for r in rows], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (per-step mean)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path or Path(out_dir) / "loss.png")
    fig.savefig(path, dpi=120)
    return path


def export_run(out_dir, dest, command: str | None = None) -> Path:
    """Ship a finished run: copy its EMA weights to `dest`.{safetensors,json} and write `dest`.manifest.json.

    The manifest says how the weights were made: the training command, config, steps, wall time,
    final loss, throughput, parameter count, software versions and the sha256 of the training data.
    """
    import platform
    import shutil

    from .data import DATA_DIR
    from .runtime import hardware_summary

    out_dir, dest = Path(out_dir), Path(dest)
    tensors, meta = ckpt.load_checkpoint(out_dir / FINAL_WEIGHTS)          # verifies the hash
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out_dir / f"{FINAL_WEIGHTS}.safetensors", dest.with_suffix(".safetensors"))
    (dest.with_suffix(".json")).write_text(json.dumps(dict(meta, weights_file=dest.name + ".safetensors"), indent=2))
    config = meta["train_config"]
    rows = read_log(out_dir)
    data_manifest = DATA_DIR / "fashion-mnist" / "MANIFEST.json"
    manifest = {
        "what": f"EMA weights of {config['model']} trained with the config {config['name']!r}",
        "command": command or f"python -m ditlib train --config {config['name']}",
        "steps": meta["step"],
        "batch_size": config["batch_size"],
        "images_seen": meta["step"] * config["batch_size"],
        "train_time_s": round(meta["elapsed_s"], 1),
        "final_loss": rows[-1]["loss"] if rows else None,
        "median_img_per_s": sorted(r["img_per_s"] for r in rows)[len(rows) // 2] if rows else None,
        "parameters": sum(v.numel() for v in ckpt.subdict(tensors, "ema").values()),
        "precision": meta.get("precision", {"used": config["precision"], "requested": config["precision"]}),
        "compiled": meta.get("compiled"),
        "train_config": config,
        "data_sha256": ({k: v["sha256"] for k, v in json.loads(data_manifest.read_text())["files"].items()}
                        if config["dataset"] == "fashion-mnist" and data_manifest.exists() else None),
        "software": {"torch": torch.__version__, "python": platform.python_version()},
        "machine": hardware_summary(),
    }
    dest.with_name(dest.name + ".manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest
