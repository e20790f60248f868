"""Training a DiT (paper §4 "Training"): data -> t, ε -> hybrid loss -> AdamW -> EMA, with checkpoints and exact resume.

`train(config, out_dir)` is what `python -m ditlib train --config NAME` runs. The loop is written out
in `train` so the whole recipe can be read in one place:

    x, y  = next batch (random flips)           # ditlib.data
    t     ~ U{0, …, T−1},  ε ~ N(0, I)
    loss  = mean(L_simple + L_vlb)              # ditlib.diffusion.training_losses
    AdamW step (lr 1e-4, no weight decay in the paper)
    EMA   θ_ema ← d·θ_ema + (1 − d)·θ            # d = 0.9999 in the paper

Resuming: the random stream of a run is (seed, step) for the data and the saved torch RNG state for
t, ε and label dropout, so a run interrupted at step k and resumed equals an uninterrupted run.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoints as ckpt
from .configs import TrainConfig
from .data import build_dataset, infinite_batches
from .diffusion import create_diffusion
from .models import DiT, build_model
from .runtime import autocast, default_device, seed_everything

CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "log.jsonl"
FINAL_WEIGHTS = "final"        # out_dir/final.{safetensors,json}: EMA weights only, for sampling and shipping
KEEP_CHECKPOINTS = 2


@torch.no_grad()
def update_ema(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """θ_ema ← decay·θ_ema + (1 − decay)·θ, parameter by parameter (buffers are copied)."""
    for ema_p, p in zip(ema_model.parameters(), model.parameters()):
        ema_p.lerp_(p.detach(), 1.0 - decay)


def ema_decay_at(config: TrainConfig, step: int) -> float:
    """The EMA decay used after optimiser step `step` (0-based)."""
    if config.ema_warmup:
        return min(config.ema_decay, (1 + step) / (10 + step))
    return config.ema_decay


def lr_at(config: TrainConfig, step: int) -> float:
    """Constant learning rate (the paper's), after an optional linear warm-up."""
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr


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


def save_training_checkpoint(out_dir, step: int, model: DiT, ema: DiT, optimizer, config: TrainConfig,
                             device: torch.device, elapsed_s: float) -> Path:
    opt_tensors, opt_meta = ckpt.optimizer_to_tensors(optimizer)
    tensors = {**ckpt.prefixed(model.state_dict(), "model"), **ckpt.prefixed(ema.state_dict(), "ema"),
               **opt_tensors, **_rng_tensors(device)}
    meta = {"kind": "training", "step": step, "train_config": config.to_dict(), "model_config": model.config(),
            "optimizer": opt_meta, "elapsed_s": elapsed_s}
    stem = ckpt.save_checkpoint(Path(out_dir) / CHECKPOINT_DIR / f"step-{step:07d}", tensors, meta)
    for old in list_checkpoints(out_dir)[:-KEEP_CHECKPOINTS]:
        for suffix in (".json", ".safetensors"):
            old.with_suffix(suffix).unlink(missing_ok=True)
    return stem


def save_final_weights(out_dir, step: int, ema: DiT, config: TrainConfig, elapsed_s: float, extra: dict | None = None) -> Path:
    meta = {"kind": "weights", "step": step, "train_config": config.to_dict(), "model_config": ema.config(),
            "elapsed_s": elapsed_s, **(extra or {})}
    return ckpt.save_checkpoint(Path(out_dir) / FINAL_WEIGHTS, ckpt.prefixed(ema.state_dict(), "ema"), meta)


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


def train(config: TrainConfig, out_dir, max_steps: int | None = None, resume: bool = False,
          device: torch.device | str | None = None, progress: bool = True, dataset=None) -> dict:
    """Train `config` into `out_dir`; returns a summary dict (steps, time, final loss, paths).

    out_dir receives `checkpoints/step-*.{safetensors,json}` (model, EMA, AdamW, RNG; the last
    two kept), `log.jsonl` (loss, mse, vb, lr, img/s), `final.{safetensors,json}` (EMA weights only)
    and `loss.png`. `resume=True` continues from the newest checkpoint exactly.
    """
    out_dir = Path(out_dir)
    max_steps = config.max_steps if max_steps is None else max_steps
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    device = default_device(str(device) if device is not None else None)
    seed_everything(config.seed)

    existing = list_checkpoints(out_dir)
    if existing and not resume:
        raise FileExistsError(f"{out_dir} already holds checkpoints ({existing[-1].name}); "
                              f"pass --resume to continue that run or choose another --out")

    if dataset is None and config.vae:
        from .latents import build_latent_dataset
        dataset = build_latent_dataset(config.vae, config.dataset, "train")
    elif dataset is None:
        dataset = build_dataset(config.dataset, "train", image_size=config.image_size, hflip=False)
    if getattr(dataset, "in_channels", config.in_channels) != config.in_channels:
        raise ValueError(f"config {config.name!r} expects {config.in_channels} channels but the dataset has {dataset.in_channels}")
    if getattr(dataset, "num_classes", config.num_classes) > config.num_classes:
        raise ValueError(f"config {config.name!r} has {config.num_classes} classes but the dataset has {dataset.num_classes}")

    model = build_model(config.model, **config.model_kwargs()).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    diffusion = create_diffusion("", noise_schedule=config.noise_schedule, learn_sigma=config.learn_sigma,
                                 diffusion_steps=config.diffusion_steps)

    step, elapsed_before = 0, 0.0
    if resume and existing:
        tensors, meta = ckpt.load_checkpoint(existing[-1])
        if meta["train_config"]["model"] != config.model:
            raise ValueError(f"{existing[-1]} was trained with {meta['train_config']['model']}, not {config.model}")
        model.load_state_dict(ckpt.subdict(tensors, "model"))
        ema.load_state_dict(ckpt.subdict(tensors, "ema"))
        ckpt.optimizer_from_tensors(optimizer, tensors, meta["optimizer"])
        _set_rng(tensors, device)
        step, elapsed_before = meta["step"], meta.get("elapsed_s", 0.0)
        _truncate_log(out_dir, step)
        if progress:
            print(f"resuming {config.name} from {existing[-1]} at step {step}")
    elif resume and progress:
        print(f"--resume: no checkpoint in {out_dir / CHECKPOINT_DIR}, starting from step 0")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    batches = infinite_batches(dataset, config.batch_size, seed=config.seed, start_step=step, hflip=config.hflip)

    def model_fn(x, t, **kwargs):          # the diffusion sees float32 outputs whatever the autocast
        return model(x, t, **kwargs).float()

    model.train()
    log_file = open(out_dir / LOG_FILE, "a")
    start_time = time.perf_counter()
    window_start, window_images = time.perf_counter(), 0
    running = {"loss": 0.0, "mse": 0.0, "vb": 0.0}
    running_n = 0
    bar = tqdm(total=max_steps, initial=step, desc=f"train {config.name}", disable=not progress, dynamic_ncols=True)
    last_row: dict = {}
    try:
        while step < max_steps:
            x, y = next(batches)
            x, y = x.to(device), y.to(device)
            t = torch.randint(0, diffusion.num_timesteps, (x.shape[0],), device=device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, step)
            with autocast(device, config.precision):
                terms = diffusion.training_losses(model_fn, x, t, model_kwargs={"y": y})
            loss = terms["loss"].mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the lr or use precision='fp32'")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            update_ema(ema, model, ema_decay_at(config, step))
            step += 1

            running["loss"] += loss.item()
            running["mse"] += terms["mse"].mean().item()
            running["vb"] += terms["vb"].mean().item()
            running_n += 1
            window_images += x.shape[0]
            bar.update(1)
            if step % config.log_every == 0 or step == max_steps:
                now = time.perf_counter()
                last_row = {"step": step, **{k: v / running_n for k, v in running.items()},
                            "lr": lr_at(config, step - 1), "img_per_s": window_images / max(now - window_start, 1e-9),
                            "elapsed_s": elapsed_before + now - start_time}
                log_file.write(json.dumps(last_row) + "\n")
                log_file.flush()
                bar.set_postfix(loss=f"{last_row['loss']:.4f}", img_s=f"{last_row['img_per_s']:.0f}")
                running = {k: 0.0 for k in running}
                running_n, window_start, window_images = 0, now, 0
            if step % config.ckpt_every == 0 or step == max_steps:
                save_training_checkpoint(out_dir, step, model, ema, optimizer, config, device,
                                         elapsed_before + time.perf_counter() - start_time)
    except KeyboardInterrupt:
        path = save_training_checkpoint(out_dir, step, model, ema, optimizer, config, device,
                                        elapsed_before + time.perf_counter() - start_time)
        print(f"\ninterrupted: saved {path}; continue with --resume")
        raise
    finally:
        bar.close()
        log_file.close()

    elapsed = elapsed_before + time.perf_counter() - start_time
    final = save_final_weights(out_dir, step, ema, config, elapsed)
    try:
        plot_loss(out_dir)
    except Exception as err:  # a plot must never cost a finished run
        print(f"(could not draw loss.png: {err})")
    return {"steps": step, "elapsed_s": elapsed, "final_loss": last_row.get("loss", math.nan),
            "final_weights": str(final), "out_dir": str(out_dir)}


def plot_loss(out_dir, path=None):
    """Draw the logged loss (and its mse / vb parts) against the step into out_dir/loss.png."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = read_log(out_dir)
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
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
    plt.close(fig)
    return path


def export_run(out_dir, dest, command: str | None = None) -> Path:
    """Ship a finished run: copy its EMA weights to `dest`.{safetensors,json} and write `dest`.manifest.json.

    The manifest says how the weights were made: the training command, config, steps, wall time,
    final loss, throughput, parameter count, software versions and the sha256 of the training data.
    """
    import platform
    import shutil

    from .data import DATA_DIR

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
        "precision": config["precision"],
        "train_config": config,
        "data_sha256": ({k: v["sha256"] for k, v in json.loads(data_manifest.read_text())["files"].items()}
                        if config["dataset"] == "fashion-mnist" and data_manifest.exists() else None),
        "software": {"torch": torch.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
    }
    dest.with_name(dest.name + ".manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest
