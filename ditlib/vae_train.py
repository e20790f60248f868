"""Training the small VAEs of the course (DiT §3.1, scaled down): configs, the loss, the loop.

`ditlib.vae` is the interface (encode, decode, load, measure); this module makes new small VAEs:
`VAEConfig` names an `AutoencoderKL` (the SD architecture, narrower and shallower) and its recipe,
`train_vae` trains one on Fashion-MNIST, measures its scale factor, reconstruction PSNR and rFID, and
saves it in the format `ditlib.vae.load_vae` reads (`python -m ditlib train-vae`). Objective (the LDM
autoencoder of Rombach et al. 2022 without its adversarial term), per image, averaged over the batch:

    L = Σ_pixels |x − D(z)|  +  w_KL · KL(q(z|x) ‖ N(0, I))  +  w_P · ‖φ(x) − φ(D(z))‖²,   z = μ(x) + σ(x)·ε

with φ the frozen Fashion-MNIST classifier's features standing in for LDM's LPIPS term (w_P = 0: off).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .autoencoder import AutoencoderKL
from .classifier import load_classifier
from .data import build_dataset, infinite_batches
from .errors import ConfigError, ExistingFileError, UnknownNameError
from .runtime import autocast, default_device, hardware_summary, resolve_precision, seed_everything
from .vae import (LatentCodec, autoencoder_config, estimate_scale_factor, export_vae, posterior, reconstruction_fid,
                  reconstruction_psnr, save_vae)

#################################################################################
#                   The small VAEs: architecture and recipe                      #
#################################################################################

@dataclass(frozen=True)
class VAEConfig:
    """A small AutoencoderKL (the SD architecture, narrower and shallower) and how to train it.

    Each entry of `block_out_channels` after the first halves the resolution: (32, 64, 64) gives
    f = 4, so 32×32×1 images become 8×8×4 latents (256 numbers for 1024 pixels).
    """
    name: str
    in_channels: int = 1
    latent_channels: int = 4
    block_out_channels: tuple = (32, 64, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 32
    mid_block_attention: bool = True
    dataset: str = "fashion-mnist"
    image_size: int = 32
    batch_size: int = 64
    lr: float = 1e-3                    # AdamW, linear warm-up then cosine decay to lr·final_lr_ratio
    warmup_steps: int = 50
    final_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    kl_weight: float = 1e-4             # w_KL: small, as in LDM (whose f=8 VAEs use 1e-6 next to a sum over 196k pixels)
    perceptual_weight: float = 0.0      # w_P: feature matching on the shipped Fashion-MNIST classifier (0 = off; an
                                        # option beyond the LDM recipe, in the spirit of its LPIPS term)
    hflip: bool = True
    precision: str = "auto"             # "auto" | "fp32" | "bf16" (autocast; ditlib.runtime.resolve_precision)
    max_steps: int = 1500               # 96k images, 1.6 epochs of Fashion-MNIST (fp32, 2 cores: ~8 min at ~203 img/s)
    log_every: int = 25
    scale_images: int = 4096            # training images whose posterior samples set the scale factor
    eval_images: int = 10000            # test images for reconstruction PSNR (and rFID)
    measure_fid: bool = True            # rFID through ditlib.evaluate, when its feature extractor is available
    seed: int = 0
    notes: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> "VAEConfig":
        return replace(self, **changes)

    def autoencoder_kwargs(self) -> dict:
        """Arguments of `diffusers.AutoencoderKL` for this config."""
        depth = len(self.block_out_channels)
        return dict(in_channels=self.in_channels, out_channels=self.in_channels,
                    down_block_types=("DownEncoderBlock2D",) * depth, up_block_types=("UpDecoderBlock2D",) * depth,
                    block_out_channels=tuple(self.block_out_channels), layers_per_block=self.layers_per_block,
                    latent_channels=self.latent_channels, norm_num_groups=self.norm_num_groups,
                    sample_size=self.image_size, mid_block_add_attention=self.mid_block_attention)


VAE_CONFIGS: dict[str, VAEConfig] = {}


def register_vae(config: VAEConfig) -> VAEConfig:
    if config.name in VAE_CONFIGS:
        raise ConfigError(f"VAE config {config.name!r} registered twice")
    VAE_CONFIGS[config.name] = config
    return config


# The shipped fmnist-vae (issue 13). Measured at 1500 steps (experiments/results/vae/, rFID-FMNIST at N = 10,000):
# L1 + KL alone 4.13 (PSNR 27.18 dB), 8×8×8 latents 3.61, + feature matching w_P = 1: 0.86, w_P = 3: 0.45 (26.94 dB).
# fp32 on the project's 2-core EPYC: ~203 img/s, 1500 steps ≈ 8 min; about twice that on an AVX2-only 2-core EPYC.
register_vae(VAEConfig(
    name="fmnist-vae-f4", perceptual_weight=3.0,
    notes="Fashion-MNIST 32×32×1 -> 8×8×4 (4× compression), 0.95M parameters, L1 + KL + feature matching, ~8-16 CPU-minutes",
))
register_vae(VAEConfig(
    name="vae-debug", block_out_channels=(8, 16, 16), norm_num_groups=8, mid_block_attention=False,
    batch_size=16, max_steps=20, warmup_steps=2, log_every=5, scale_images=256, eval_images=64, measure_fid=False,
    notes="a few seconds on a CPU; for tests only",
))


def get_vae_config(name: str) -> VAEConfig:
    if name not in VAE_CONFIGS:
        raise UnknownNameError(f"unknown VAE config {name!r}; choose one of: {', '.join(VAE_CONFIGS)}")
    return VAE_CONFIGS[name]


def build_vae(config: VAEConfig | str, seed: int | None = None):
    """An untrained `AutoencoderKL` for a config (or config name); `seed` fixes its initial weights."""
    config = get_vae_config(config) if isinstance(config, str) else config
    if seed is not None:
        torch.manual_seed(seed)
    return AutoencoderKL(**config.autoencoder_kwargs(), scaling_factor=1.0)


#################################################################################
#                                   Training                                     #
#################################################################################

def vae_loss(vae, x: torch.Tensor, kl_weight: float, features=None, perceptual_weight: float = 0.0) -> dict:
    """LDM's autoencoder loss without its GAN term; sums per image, means over the batch.

    L = Σ|x − x̂| + w_KL·KL + w_P·‖φ(x) − φ(x̂)‖², where φ = `features` (a frozen network, e.g. the
    Fashion-MNIST classifier's penultimate layer, standing in for LDM's LPIPS) when `perceptual_weight` > 0.
    Returns {"loss", "rec" (Σ|x − x̂| per image), "kl" (nats per image), "l1" (mean |x − x̂| per pixel),
    "perceptual" (‖φ(x) − φ(x̂)‖² per image; 0 when off)}.
    """
    q = posterior(vae, x)
    x_hat = vae.decode(q.sample()).sample.float()                       # (B, C, H, W)
    abs_err = (x.float() - x_hat).abs().flatten(1)                       # (B, C·H·W)
    rec = abs_err.sum(1).mean()
    kl = 0.5 * (q.mean.square() + q.std.square() - 1.0 - 2.0 * q.std.log()).flatten(1).sum(1).mean()
    loss = rec + kl_weight * kl
    perceptual = torch.zeros((), device=x_hat.device)
    if perceptual_weight > 0:
        if features is None:
            raise ConfigError("perceptual_weight > 0 needs `features`, a network mapping images to feature vectors")
        with torch.no_grad():
            target = features(x.float())                                   # (B, D)
        perceptual = (features(x_hat) - target).square().sum(1).mean()
        loss = loss + perceptual_weight * perceptual
    return {"loss": loss, "rec": rec, "kl": kl, "l1": abs_err.mean(), "perceptual": perceptual}


def _lr_at(config: VAEConfig, step: int, max_steps: int) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, max_steps - config.warmup_steps)
    ratio = config.final_lr_ratio + (1 - config.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.lr * ratio


def train_vae(config: VAEConfig, out_dir, max_steps: int | None = None, device=None, progress: bool = True,
              export=None, command: str | None = None) -> dict:
    """Train a small VAE, measure its scale factor and test PSNR, save `out_dir/final.{safetensors,json}`.

    With `export` (a stem such as `data/checkpoints/fmnist-vae`), also write the same checkpoint there
    plus `<stem>.manifest.json` (command, steps, time, PSNR, scale factor, data checksums). Returns a
    summary dict. Training is short, so there are no intermediate checkpoints and no resume.
    """
    out_dir = Path(out_dir)
    max_steps = config.max_steps if max_steps is None else max_steps
    if max_steps < 1:
        raise ConfigError(f"max_steps must be at least 1, got {max_steps}")
    if (out_dir / "final.json").exists():
        raise ExistingFileError(f"{out_dir} already holds a trained VAE (final.json); choose another --out")
    device = default_device(str(device) if device is not None else None)
    seed_everything(config.seed)
    precision = resolve_precision(config.precision, device)          # "auto" -> bf16 only where it is native
    dataset = build_dataset(config.dataset, "train", image_size=config.image_size, hflip=False)
    if dataset.in_channels != config.in_channels:
        raise ConfigError(f"config {config.name!r} expects {config.in_channels} channels, the dataset has {dataset.in_channels}")
    vae = build_vae(config).to(device).train()
    features = None
    if config.perceptual_weight > 0:                 # the frozen feature extractor of FID-FMNIST (ditlib.classifier)
        classifier = load_classifier(device=device)[0].requires_grad_(False)
        features = lambda images: classifier(images, return_features=True)[0]   # noqa: E731  (B, D)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batches = infinite_batches(dataset, config.batch_size, seed=config.seed, hflip=config.hflip)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    log_file = open(out_dir / "log.jsonl", "w")
    start = time.perf_counter()
    running, running_n, row = {"loss": 0.0, "l1": 0.0, "kl": 0.0, "perceptual": 0.0}, 0, {}
    bar = tqdm(total=max_steps, desc=f"train-vae {config.name}", disable=not progress, dynamic_ncols=True)
    try:
        for step in range(max_steps):
            x, _ = next(batches)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(config, step, max_steps)
            with autocast(device, precision.precision):
                terms = vae_loss(vae, x.to(device), config.kl_weight, features, config.perceptual_weight)
            if not torch.isfinite(terms["loss"]):
                raise FloatingPointError(f"VAE loss became {terms['loss'].item()} at step {step}; lower the lr")
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            for key in running:
                running[key] += terms[key].item()
            running_n += 1
            bar.update(1)
            if (step + 1) % config.log_every == 0 or step + 1 == max_steps:
                row = {"step": step + 1, **{k: v / running_n for k, v in running.items()},
                       "lr": _lr_at(config, step, max_steps), "elapsed_s": time.perf_counter() - start}
                log_file.write(json.dumps(row) + "\n")
                log_file.flush()
                bar.set_postfix(l1=f"{row['l1']:.4f}", kl=f"{row['kl']:.0f}")
                running, running_n = {k: 0.0 for k in running}, 0
    finally:
        bar.close()
        log_file.close()
    train_time = time.perf_counter() - start

    codec = LatentCodec(vae, 1.0, config.image_size, name=config.name)
    scale = estimate_scale_factor(codec, dataset, config.scale_images, seed=config.seed)
    codec.scale_factor = scale
    vae.register_to_config(scaling_factor=scale)
    test_set = build_dataset(config.dataset, "test", image_size=config.image_size) \
        if config.dataset == "fashion-mnist" else dataset
    psnr = reconstruction_psnr(codec, config.eval_images, dataset=test_set)
    psnr_sample = reconstruction_psnr(codec, config.eval_images, dataset=test_set, sample=True)
    rfid, rfid_note = None, "not measured (measure_fid=False)"
    if config.measure_fid and config.dataset == "fashion-mnist":
        try:
            rfid, rfid_note = round(reconstruction_fid(codec, config.eval_images), 3), "ditlib.evaluate, extractor 'fmnist'"
        except Exception as err:     # an optional metric must never cost a finished run
            rfid_note = f"not measured: {type(err).__name__}: {err}"
    meta = {"kind": "vae", "name": config.name, "vae_config": autoencoder_config(vae), "scale_factor": scale,
            "image_size": config.image_size, "latent_shape": codec.latent_shape, "steps": max_steps,
            "train_time_s": round(train_time, 1), "train_config": config.to_dict(),
            "precision": precision.to_dict(), "machine": hardware_summary(device),
            "final_l1": row.get("l1"), "final_kl": row.get("kl"),
            "psnr_db": round(psnr, 3), "psnr_sample_db": round(psnr_sample, 3),
            "psnr_images": min(config.eval_images, len(test_set)), "rfid": rfid, "rfid_note": rfid_note}
    stem = save_vae(out_dir / "final", vae, meta)
    summary = {"final_weights": str(stem), "steps": max_steps, "train_time_s": round(train_time, 1),
               "scale_factor": scale, "psnr_db": round(psnr, 3), "psnr_sample_db": round(psnr_sample, 3), "rfid": rfid,
               "latent_shape": list(codec.latent_shape), "out_dir": str(out_dir)}
    if export is not None:
        summary["exported"] = str(export_vae(stem, export, command=command,
                                             total_time_s=time.perf_counter() - start))
    return summary
