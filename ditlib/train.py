"""Training a DiT (paper §4 "Training"): data -> t, ε -> hybrid loss -> AdamW -> EMA, with checkpoints and exact resume.

`train(config, out_dir)` is what `python -m ditlib train --config NAME` runs, in one process or in each
process of `accelerate launch -m ditlib train ...`. Three parts, to read side by side with the official
train.py: `setup` builds a `TrainState` (data, model, EMA, AdamW, the diffusion, a resumed checkpoint),
`train_step` is one step of the recipe, and `train` is the loop around it (log, snapshot, checkpoint):

    x, y  = next batch (random flips)           # ditlib.data (or a VAE's latents, ditlib.latents)
    t     ~ U{0, …, T−1},  ε ~ N(0, I),  y -> ∅ with probability 0.1 (for guidance, §4)
    loss  = mean(L_simple + L_vlb)              # ditlib.diffusion.training_losses (the hybrid loss of §2)
    AdamW step (lr 1e-4, no weight decay in the paper)
    EMA   θ_ema ← d·θ_ema + (1 − d)·θ            # d = 0.9999 in the paper

Many processes (DDP on GPUs and nodes, FSDP, TPUs) go through `accelerate`; see `ditlib.distributed`.
Every process draws each step's randomness (batch, t, ε, label dropout) for the whole global batch and
keeps its own rows, so N processes compute exactly the update one process would, and the logged loss
is the mean over the global batch (reduced across processes). Only the main process writes files
(their layout is `ditlib.runs`).

Resuming: the random stream of a run is (seed, step) for the data and the saved torch RNG state for
t, ε and label dropout, so a run interrupted at step k and resumed equals an uninterrupted run.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoints as ckpt
from .configs import IMAGENET_DATASET, TrainConfig, build_backbone
from .data import StepBatches, build_dataset, derived_seed, infinite_batches
from .diffusion import create_diffusion
from .distributed import (full_state_dict, is_distributed, is_fsdp, load_full_state_dict, load_optimizer_state_full,
                          make_accelerator, mark_step, optimizer_state_full, rank_rows, run_device, sharded_ema,
                          weights_swapped)
from .errors import ConfigError, ExistingFileError
from .latents import build_latent_dataset
from .models import BLOCKS
from .runs import (CHECKPOINT_DIR, FINAL_WEIGHTS, LOG_FILE, SNAPSHOT_DIR, LossLog, list_checkpoints,  # noqa: F401
                   list_snapshots, plot_loss, read_log, set_rng, truncate_log, write_final_weights,
                   write_training_checkpoint)
from .runtime import autocast, resolve_precision, seed_everything
from .vae import load_vae

COMPILE_MIN_STEPS = 1000
"""`compile="auto"` compiles the model and loss only for runs of at least this many steps: compiling costs
13–30 s the first time on a CPU (seconds once inductor's cache holds it). Measured with
benchmarks/bench_model.py on a 2-core AMD EPYC with native bf16: fp32 step ×1.08 compiled, bf16 ×0.92 (slower),
so on a CPU "auto" compiles fp32 runs only."""


#################################################################################
#                     The recipe's pieces: EMA, lr, optimiser                   #
#################################################################################

@torch.no_grad()
def update_ema(ema_model, model: torch.nn.Module, decay: float) -> None:
    """θ_ema ← decay·θ_ema + (1 − decay)·θ, parameter by parameter.

    `ema_model` is a module like `model`, or (under FSDP) a list of tensors shaped like this process's
    shards of `model.parameters()`.
    """
    ema_params = list(ema_model if isinstance(ema_model, (list, tuple)) else ema_model.parameters())
    params = [p.detach() for p in model.parameters()]
    if len(ema_params) != len(params):
        raise ConfigError(f"the EMA has {len(ema_params)} tensors but the model {len(params)} parameters")
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
        raise ConfigError(f"unknown lr_schedule {config.lr_schedule!r}; choose one of {LR_SCHEDULES}")
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    span = max(config.max_steps - config.warmup_steps, 1)
    progress = min(max(step - config.warmup_steps, 0) / span, 1.0)
    floor = config.lr * config.final_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(params, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (§4: lr 1e-4, no weight decay); the fused kernel on CPU and CUDA (one pass over all tensors)."""
    fused = config.fused_adamw and device.type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def resolve_compile(config: TrainConfig, device: torch.device, precision: str, steps_to_run: int,
                    distributed: bool) -> bool:
    """`config.compile` as a bool. "auto": one process, a run of ≥ COMPILE_MIN_STEPS steps, on a CUDA device
    or on a CPU in fp32 (where the benchmark measured a gain; compiled bf16 was slower there)."""
    if config.compile in (True, False):
        return config.compile
    if config.compile != "auto":
        raise ConfigError(f"compile must be True, False or 'auto', got {config.compile!r}")
    fast_here = device.type == "cuda" or (device.type == "cpu" and precision == "fp32")
    return fast_here and not distributed and steps_to_run >= COMPILE_MIN_STEPS


def _set_tf32(device: torch.device, enabled: bool) -> None:
    """TF32 for float32 matmuls and convolutions on CUDA (Ampere and newer): ~8× the fp32 matmul rate, 10-bit mantissas."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def training_data(config: TrainConfig, dataset, device: torch.device, accelerator):
    """(dataset, codec): what `train` draws batches from, and the VAE that encodes them on the fly (or None).

    Pixels; a latent cache (`ditlib.latents`, built once by the main process); or, for configs with
    `cache_latents=False` (the paper's), images encoded by the VAE batch by batch as in the official script.
    """
    codec = None
    if dataset is None and config.dataset == IMAGENET_DATASET and not Path(config.dataset).is_dir():
        raise ConfigError(f"config {config.name!r} trains on ImageNet: pass --data-path DIR (the train folder, one "
                          "sub-folder of images per class) or --latents CACHE (from `python -m ditlib encode-latents`)")
    if config.vae and not config.cache_latents and not getattr(dataset, "selects_flips", False):
        codec = load_vae(config.vae, device=device)
        if dataset is None:
            dataset = build_dataset(config.dataset, "train", image_size=config.image_size * codec.downsample_factor,
                                    hflip=False)
        if codec.latent_channels != config.in_channels:
            raise ConfigError(f"config {config.name!r} expects {config.in_channels} channels but the VAE's latents "
                              f"have {codec.latent_channels}")
    elif dataset is None and config.vae:
        with accelerator.main_process_first():        # one process encodes and writes the cache; the others read it
            dataset = build_latent_dataset(config.vae, config.dataset, "train", precision=config.precision)
    elif dataset is None:
        dataset = build_dataset(config.dataset, "train", image_size=config.image_size, hflip=False)
    if codec is None and getattr(dataset, "in_channels", config.in_channels) != config.in_channels:
        raise ConfigError(f"config {config.name!r} expects {config.in_channels} channels but the dataset has {dataset.in_channels}")
    if getattr(dataset, "num_classes", config.num_classes) > config.num_classes:
        raise ConfigError(f"config {config.name!r} has {config.num_classes} classes but the dataset has {dataset.num_classes}")
    return dataset, codec


@torch.no_grad()
def encode_batch(codec, x: torch.Tensor, seed: int, step: int, rows: slice, global_batch: int) -> torch.Tensor:
    """Images -> scaled latent samples scale·(μ + σ·ε) (§3.1), as the official script does for every batch.
    ε is drawn for the whole global batch from (seed, step) and this process keeps its rows."""
    q = codec.encode(x)                                                        # μ, σ each (b, C, h, w)
    noise_device = q.mean.device if q.mean.device.type == "cuda" else torch.device("cpu")
    generator = torch.Generator(noise_device).manual_seed(derived_seed(seed, "latent", step))
    eps = torch.randn((global_batch, *q.mean.shape[1:]), generator=generator, device=noise_device)[rows]
    return (q.mean + q.std * eps.to(q.mean.device)) * codec.scale_factor


#################################################################################
#                       Setup: everything a run holds                           #
#################################################################################

@dataclass
class TrainState:
    """A run in progress: what `setup` builds, `train_step` advances and `save_checkpoint` writes."""
    config: TrainConfig
    out_dir: Path
    max_steps: int
    accelerator: object
    device: torch.device
    rows: slice                      # this process's rows of every global batch
    model: torch.nn.Module           # the trained weights (unwrapped): a DiT, or the U-Net baseline
    prepared: torch.nn.Module        # the same model as the processes run it (DDP/FSDP-wrapped, or itself)
    ema: object                      # a DiT, or under FSDP this process's shards (a list of tensors)
    optimizer: torch.optim.Optimizer
    scaler: object                   # fp16's gradient scaler, else None
    diffusion: object
    loss_terms: object               # (x, t, ε, model_kwargs) -> per-sample loss terms; eager
    compute_losses: object           # the same, compiled when `run_info["compiled"]`
    batches: object                  # iterator of (x, y): this process's rows of batch `step`
    codec: object                    # the VAE that encodes each batch on the fly, or None
    run_info: dict                   # precision and compilation, recorded in every checkpoint's JSON
    param_names: list
    step: int = 0
    steps_this_run: int = 0
    elapsed_before: float = 0.0      # training seconds of the run before this process resumed it
    start_time: float = field(default_factory=time.perf_counter)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def fsdp(self) -> bool:
        return is_fsdp(self.accelerator)

    @property
    def elapsed_s(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start_time


def setup(config: TrainConfig, out_dir, max_steps: int | None = None, resume: bool = False, device=None,
          dataset=None, announce: bool = True) -> TrainState:
    """Processes, data, model, EMA, AdamW and the diffusion for `config`; with `resume`, the newest checkpoint."""
    out_dir = Path(out_dir)
    max_steps = config.max_steps if max_steps is None else max_steps
    if max_steps < 1:
        raise ConfigError(f"max_steps must be at least 1, got {max_steps}")
    wrap = ("ResnetBlock2D",) if config.family == "U-Net" else (BLOCKS[config.block].__name__,)   # FSDP's units
    accelerator = make_accelerator(device, fsdp_wrap=wrap)
    device = run_device(accelerator, device)
    main, fsdp = accelerator.is_main_process, is_fsdp(accelerator)
    seed_everything(config.seed)                               # the same on every process: global draws
    _set_tf32(device, config.tf32)
    choice = resolve_precision(config.precision, device, announce=main and announce)   # "auto": what is fast here
    precision = choice.precision
    existing = list_checkpoints(out_dir)
    if existing and not resume:
        raise ExistingFileError(f"{out_dir} already holds checkpoints ({existing[-1].name}); "
                                f"pass --resume to continue that run or choose another --out")
    dataset, codec = training_data(config, dataset, device, accelerator)

    model = build_backbone(config.model_config()).to(device)              # a DiT, or the U-Net baseline
    model.gradient_checkpointing = config.grad_checkpointing
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    param_names = [name for name, _ in model.named_parameters()]
    diffusion = create_diffusion("", noise_schedule=config.noise_schedule, learn_sigma=config.learn_sigma,
                                 diffusion_steps=config.diffusion_steps)
    step, elapsed_before, tensors, meta = 0, 0.0, None, None
    if resume and existing:
        tensors, meta = ckpt.load_checkpoint(existing[-1])
        if meta["train_config"]["model"] != config.model:
            raise ConfigError(f"{existing[-1]} was trained with {meta['train_config']['model']}, not {config.model}")
        model.load_state_dict(ckpt.subdict(tensors, "ema" if fsdp else "model"))   # FSDP: the EMA is taken first
        ema.load_state_dict(ckpt.subdict(tensors, "ema"))
        step, elapsed_before = meta["step"], meta.get("elapsed_s", 0.0)
        if main:
            truncate_log(out_dir, step)
        if main and announce:
            print(f"resuming {config.name} from {existing[-1]} at step {step}")
    elif resume and main and announce:
        print(f"--resume: no checkpoint in {out_dir / CHECKPOINT_DIR}, starting from step 0")

    # DDP wraps the model (gradients are averaged in backward); FSDP shards it, and the EMA becomes a
    # list of this process's shards. A plain process keeps the model as it is.
    prepared = accelerator.prepare(model, device_placement=[False])
    if fsdp:
        ema = sharded_ema(prepared)
        if tensors is not None:
            load_full_state_dict(prepared, ckpt.subdict(tensors, "model"))
    optimizer = accelerator.prepare(make_optimizer(prepared.parameters(), config, device), device_placement=[False])
    scaler = None
    if precision == "fp16":                       # fp16 gradients underflow without loss scaling
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
        set_rng(tensors, device)
    compiled = resolve_compile(config, device, precision, max_steps - step, is_distributed(accelerator))
    run_info = {"precision": choice.to_dict(), "compiled": compiled}
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    def loss_terms(x, t, noise, model_kwargs):   # the hybrid loss (§2), per sample; compiled as one graph
        with autocast(device, precision):
            return diffusion.training_losses(lambda *a, **k: prepared(*a, **k).float(), x, t, model_kwargs=model_kwargs,
                                             noise=noise, min_snr_gamma=config.min_snr_gamma)

    return TrainState(config, out_dir, max_steps, accelerator, device, rank_rows(accelerator, config.batch_size),
                      model, prepared, ema, optimizer, scaler, diffusion, loss_terms,
                      torch.compile(loss_terms, dynamic=False) if compiled else loss_terms,
                      _batches(config, dataset, accelerator, device, step, max_steps), codec, run_info, param_names,
                      step=step, elapsed_before=elapsed_before)


def _batches(config: TrainConfig, dataset, accelerator, device: torch.device, step: int, max_steps: int):
    """Batch `step`, `step + 1`, … of the global stream; this process gets its rows. Workers decode images ahead."""
    shards = dict(num_shards=accelerator.num_processes, shard=accelerator.process_index)
    if config.num_workers > 0:
        return iter(torch.utils.data.DataLoader(
            StepBatches(dataset, config.batch_size, seed=config.seed, hflip=config.hflip, **shards),
            batch_size=None, sampler=range(step, max_steps), num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator()))  # the loader's own seed draw must not advance torch's global RNG
    return infinite_batches(dataset, config.batch_size, seed=config.seed, start_step=step, hflip=config.hflip, **shards)


#################################################################################
#                      One step of the recipe, and saving                       #
#################################################################################

def _losses(state: TrainState, x, t, noise, model_kwargs) -> dict:
    """The loss terms, compiled if asked; a compiler that fails on the first step must not cost the run."""
    try:
        return state.compute_losses(x, t, noise, model_kwargs)
    except Exception as err:
        if state.compute_losses is state.loss_terms or state.steps_this_run > 0:
            raise
        print(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
              "training without it (pass --no-compile to skip the attempt)", file=sys.stderr)
        state.compute_losses, state.run_info["compiled"] = state.loss_terms, False
        return state.loss_terms(x, t, noise, model_kwargs)


def train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """One optimiser step on this process's rows (x, y) of global batch `state.step`.

    Returns [loss, mse, vb], each the mean over the global batch.
    """
    config, device, rows, n = state.config, state.device, state.rows, state.config.batch_size
    draw = torch.device("cpu") if device.type == "xla" else device          # XLA: draw on the host, exactly resumable
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if state.codec is not None:                                            # images -> latents, batch by batch
        x = encode_batch(state.codec, x, config.seed, state.step, rows, n)
    t = torch.randint(0, state.diffusion.num_timesteps, (n,), device=draw)[rows].to(device)   # drawn for the
    noise = torch.randn((n, *x.shape[1:]), device=draw)[rows].to(device)                      # global batch
    model_kwargs = {"y": y}
    if config.class_dropout_prob > 0:                                      # label dropout, for guidance (§4)
        model_kwargs["force_drop_ids"] = (torch.rand(n, device=draw) < config.class_dropout_prob)[rows].to(device)
    if state.steps_this_run == 0:
        state.model.check_inputs(x, t, y)                                  # once: it reads values back
    for group in state.optimizer.param_groups:
        group["lr"] = lr_at(config, state.step)
    terms = _losses(state, x, t, noise, model_kwargs)
    loss = terms["loss"].mean()
    stats = torch.stack([loss.detach(), terms["mse"].mean().detach(), terms["vb"].mean().detach()])
    if is_distributed(state.accelerator):                                  # the global-batch mean
        stats = state.accelerator.reduce(stats, reduction="mean")
    stats = stats.tolist()
    if not math.isfinite(stats[0]):
        raise FloatingPointError(f"loss became {stats[0]} at step {state.step}; lower the lr or use precision='fp32'")
    state.optimizer.zero_grad(set_to_none=True)
    state.accelerator.backward(state.scaler.scale(loss) if state.scaler is not None else loss)
    if config.grad_clip is not None:
        if state.scaler is not None:
            state.scaler.unscale_(state.optimizer)
        state.accelerator.clip_grad_norm_(state.prepared.parameters(), config.grad_clip)
    if state.scaler is not None:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    update_ema(state.ema, state.prepared if state.fsdp else state.model, ema_decay_at(config, state.step))
    mark_step(device)
    state.step += 1
    state.steps_this_run += 1
    return stats


def _gathered_state(state: TrainState) -> tuple:
    """(model, EMA, AdamW) state dicts; a collective under FSDP (every process calls it)."""
    if state.fsdp:
        model_state = full_state_dict(state.prepared)
        with weights_swapped(state.prepared, state.ema):
            ema_state = full_state_dict(state.prepared)
        return model_state, ema_state, optimizer_state_full(state.prepared, state.optimizer.optimizer, state.param_names)
    return state.model.state_dict(), state.ema.state_dict(), state.optimizer.state_dict()


def save_checkpoint(state: TrainState, barrier: bool = True) -> Path:
    """Model, EMA, AdamW and RNG state at `state.step` -> out_dir/checkpoints/step-{step} (the main process writes)."""
    states = _gathered_state(state)
    path = state.out_dir / CHECKPOINT_DIR / f"step-{state.step:07d}"
    if state.main:
        extra = {**state.run_info, **({"grad_scaler": state.scaler.state_dict()} if state.scaler is not None else {})}
        path = write_training_checkpoint(state.out_dir, state.step, *states, state.config,
                                         state.model.config.to_dict(), state.device, state.elapsed_s, extra)
    if barrier:
        state.accelerator.wait_for_everyone()
    return path


def save_ema(state: TrainState, name: str = FINAL_WEIGHTS) -> Path:
    """The EMA weights alone -> out_dir/`name` (a collective under FSDP; the main process writes)."""
    ema_state = _gathered_state(state)[1] if state.fsdp else state.ema.state_dict()
    path = state.out_dir / name
    if state.main:          # elapsed_s: training time up to this step
        path = write_final_weights(state.out_dir, state.step, ema_state, state.model.config.to_dict(), state.config,
                                   state.elapsed_s, state.run_info, name=name)
    return path


#################################################################################
#                                   The loop                                    #
#################################################################################

def train(config: TrainConfig, out_dir, max_steps: int | None = None, resume: bool = False,
          device: torch.device | str | None = None, progress: bool = True, dataset=None) -> dict:
    """Train `config` into `out_dir`; returns a summary dict (steps, time, final loss, paths).

    out_dir receives `checkpoints/step-*` (model, EMA, AdamW, RNG; the last two kept), `log.jsonl`,
    `final.{safetensors,json}` (EMA weights only) and `loss.png` (`ditlib.runs`). `resume=True`
    continues from the newest checkpoint exactly. Under `accelerate launch` every process runs this
    function: `config.batch_size` is the global batch (it must divide by the number of processes), the
    main process writes every file, and the checkpoint format is the same as a single process's.
    """
    state = setup(config, out_dir, max_steps, resume, device, dataset, announce=progress)
    log = LossLog(state.out_dir, state.main and progress, state.main, state.step, state.max_steps,
                  f"train {config.name}", config.batch_size)
    state.model.train()
    state.start_time = time.perf_counter()
    try:
        while state.step < state.max_steps:
            x, y = next(state.batches)                                     # this process's rows
            log.add(train_step(state, x, y))
            last = state.step == state.max_steps
            if state.step % config.log_every == 0 or last:
                log.write(state.step, lr_at(config, state.step - 1), state.elapsed_s)
            if config.snapshot_every and state.step % config.snapshot_every == 0:
                save_ema(state, name=f"{SNAPSHOT_DIR}/step-{state.step:07d}")
            if state.step % config.ckpt_every == 0 or last:
                save_checkpoint(state)
    except KeyboardInterrupt:
        if state.main and not state.fsdp:  # an FSDP checkpoint needs every process, which are stopping too
            print(f"\ninterrupted: saved {save_checkpoint(state, barrier=False)}; continue with --resume")
        raise
    finally:
        log.close()
    elapsed, final = state.elapsed_s, save_ema(state)
    if state.main:
        try:
            plot_loss(state.out_dir)
        except Exception as err:  # a plot must never cost a finished run
            print(f"(could not draw loss.png: {err})")
    state.accelerator.wait_for_everyone()
    return {"steps": state.step, "elapsed_s": elapsed, "final_loss": log.rows[-1]["loss"] if log.rows else math.nan,
            "final_weights": str(final), "out_dir": str(state.out_dir), **state.run_info}
