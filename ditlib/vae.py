"""The autoencoder of latent diffusion (DiT §3.1 "Latent diffusion models"): images -> latents -> images.

DiT does not model pixels. An off-the-shelf VAE encoder E turns a 256×256×3 image x into a 32×32×4
latent z = E(x) (downsampling factor 8); DiT is trained on z, and its samples are decoded by D. The
official code multiplies the latent by 0.18215 so that it has roughly unit variance, the scale the
diffusion process assumes (x_T ≈ N(0, I)).

Two scales, one interface, `LatentCodec` (encode -> posterior, sample a scaled latent, decode):

- full scale: `load_sd_vae()` loads the Stable Diffusion VAE the paper used (`stabilityai/sd-vae-ft-ema`,
  or `-mse`), scale 0.18215;
- scaled down: a small `AutoencoderKL` trained by `train_vae` on Fashion-MNIST, 32×32×1 -> 8×8×4 (4× fewer
  numbers). Its scale factor is measured on the data after training (1 / std of posterior samples), and
  stored with its weights: `load_vae("fmnist-vae")` loads the shipped one.

The small VAEs are `ditlib.autoencoder.AutoencoderKL`, the SD architecture with diffusers' config keys and
state_dict names (so loading one does not import diffusers); the SD VAE is diffusers' `AutoencoderKL`. This
module only configures, trains, measures and stores them. Training objective (the LDM autoencoder of Rombach et al. 2022 without its
perceptual and adversarial terms), per image, averaged over the batch:

    L = Σ_pixels |x − D(z)|  +  w_KL · KL(q(z|x) ‖ N(0, I)),     z = μ(x) + σ(x)·ε
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch

from .runtime import autocast, default_device, hardware_summary, resolve_precision, seed_everything

SD_VAES = ("stabilityai/sd-vae-ft-ema", "stabilityai/sd-vae-ft-mse")
SD_VAE_SCALE_FACTOR = 0.18215       # the official DiT code: x = vae.encode(x).latent_dist.sample().mul_(0.18215)
SHIPPED_VAES = {"fmnist-vae": "checkpoints/fmnist-vae"}   # name -> stem under ditlib.data.DATA_DIR


#################################################################################
#                  The posterior q(z|x) and the codec interface                  #
#################################################################################

class Posterior(NamedTuple):
    """A diagonal Gaussian q(z|x) = N(mean, std²), unscaled (the VAE's own latent units), each (B, C, h, w)."""
    mean: torch.Tensor
    std: torch.Tensor

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + std·ε, ε ~ N(0, I) drawn from `generator` (on its device) or torch's global RNG."""
        noise_device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=noise_device).to(self.mean.device)
        return self.mean + self.std * eps


def posterior(vae, x: torch.Tensor) -> Posterior:
    """Run the encoder: x (B, C_in, H, W) in [-1, 1] -> q(z|x) in float32, with the log-variance clamped to
    [-30, 20] as diffusers does. Differentiable (used by training and by `LatentCodec.encode`)."""
    moments = vae.encode(x).latent_dist.parameters.float()     # (B, 2·C, h, w): mean, then log σ²
    mean, logvar = moments.chunk(2, dim=1)
    return Posterior(mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0)))


def _state_fingerprint(state: dict) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state_dict (any dtype, any device)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(state[name].shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class LatentCodec:
    """An `AutoencoderKL` plus what DiT needs to use it: images <-> scaled latents (DiT §3.1).

    Images are float (B, C_in, S, S) in [-1, 1]. "Scaled" latents are `scale_factor` × the VAE's latents,
    (B, C, S/f, S/f), f = `downsample_factor`; they are what DiT is trained on and samples.
    `fingerprint` is a sha256 of the weights (what a latent cache is keyed by).
    """

    def __init__(self, vae, scale_factor: float, image_size: int, name: str = "vae",
                 fingerprint: str | None = None, meta: dict | None = None):
        if not scale_factor > 0:
            raise ValueError(f"scale_factor must be positive, got {scale_factor}")
        self.vae = vae.eval().requires_grad_(False)
        self.scale_factor = float(scale_factor)
        self.name, self.meta = name, dict(meta or {})
        self.in_channels = vae.config.in_channels
        self.latent_channels = vae.config.latent_channels
        self.downsample_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if image_size % self.downsample_factor:
            raise ValueError(f"image_size {image_size} is not divisible by the VAE's downsampling factor "
                             f"{self.downsample_factor}")
        self.image_size = image_size
        self._fingerprint = fingerprint

    def __repr__(self) -> str:
        return (f"LatentCodec({self.name!r}, {self.in_channels}×{self.image_size}² -> {self.latent_shape}, "
                f"scale_factor={self.scale_factor:.5g})")

    @property
    def latent_shape(self) -> tuple:
        """(C, h, w) of one latent for an `image_size` image."""
        side = self.image_size // self.downsample_factor
        return (self.latent_channels, side, side)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _state_fingerprint(self.vae.state_dict())
        return self._fingerprint

    def to(self, device) -> "LatentCodec":
        self.vae.to(device)
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> Posterior:
        """Images (B, C_in, S, S) in [-1, 1] -> q(z|x), unscaled, float32, on the codec's device."""
        return posterior(self.vae, x.to(self.device, torch.float32))

    def encode_sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images -> one scaled latent sample scale_factor·(μ + σ·ε), (B, C, h, w): DiT's training data."""
        return self.encode(x).sample(generator) * self.scale_factor

    @torch.no_grad()
    def decode(self, z_scaled: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, h, w) -> images (B, C_in, S, S) float32, clamped to [-1, 1]."""
        z = z_scaled.to(self.device, torch.float32) / self.scale_factor
        return self.vae.decode(z).sample.float().clamp(-1.0, 1.0)

    def reconstruct(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None):
        """D(E(x)): decode the posterior mean (default) or a sample of it."""
        q = self.encode(x)
        z = q.sample(generator) if sample else q.mean
        return self.decode(z * self.scale_factor)


#################################################################################
#              Full scale: the Stable Diffusion VAE used by the paper            #
#################################################################################

class VAEWeightsNotFound(FileNotFoundError):
    """The VAE weights are neither on this machine nor downloadable from here."""


def _how_to_get(repo_id: str, reason: str) -> str:
    folder = repo_id.rsplit("/", 1)[-1]
    return (
        f"cannot load the VAE {repo_id!r}: it is not in the local Hugging Face cache and {reason}.\n"
        f"On a machine with internet access, download it with either\n"
        f"    hf download {repo_id} --local-dir {folder}          "
        f"(older huggingface_hub: huggingface-cli download {repo_id} --local-dir {folder})\n"
        f"or\n"
        f"    python -c \"from diffusers import AutoencoderKL; "
        f"AutoencoderKL.from_pretrained('{repo_id}').save_pretrained('{folder}')\"\n"
        f"then copy the folder {folder}/ (config.json + diffusion_pytorch_model.safetensors) to this machine and "
        f"pass its path instead of the Hub id: load_sd_vae('path/to/{folder}') or load_vae('path/to/{folder}')."
    )


def _hub_reachable(timeout_s: float) -> bool:
    """Can a TCP connection to the Hub be opened within `timeout_s`? (DNS included: it runs in a thread.)"""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    result = []

    def attempt():
        try:
            socket.create_connection(address, timeout=timeout_s).close()
            result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(str(v).strip().lower() in {"1", "true", "yes", "on"} for v in flags if v)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts) and not name.startswith("~")


def load_sd_vae(name_or_path: str = SD_VAES[0], device=None, image_size: int = 256, cache_dir=None,
                connect_timeout_s: float = 3.0) -> LatentCodec:
    """The Stable Diffusion VAE (DiT §3.1) as a `LatentCodec`: 256×256×3 -> 32×32×4, scale 0.18215.

    `name_or_path` is a Hub id (`stabilityai/sd-vae-ft-ema`, the paper's default, or `-mse`) or a local
    folder written by `save_pretrained` / `hf download --local-dir`. The scale factor is the
    checkpoint's `scaling_factor` (0.18215 for both SD VAEs, the constant of the official DiT code).
    A Hub id is looked up in the local cache first; the network is tried only when HF_HUB_OFFLINE is
    unset and the Hub answers within `connect_timeout_s`; otherwise `VAEWeightsNotFound` explains how
    to bring the weights here. Nothing waits longer than that.
    """
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        source, kwargs = str(path), {}
    elif _looks_like_hub_id(str(name_or_path)):
        from huggingface_hub import try_to_load_from_cache

        source, kwargs = str(name_or_path), {"cache_dir": cache_dir}
        cached = isinstance(try_to_load_from_cache(source, "config.json", cache_dir=cache_dir), str)
        if not cached:
            if _hub_offline():
                raise VAEWeightsNotFound(_how_to_get(source, "HF_HUB_OFFLINE is set"))
            if not _hub_reachable(connect_timeout_s):
                from huggingface_hub import constants
                raise VAEWeightsNotFound(_how_to_get(
                    source, f"the Hub ({constants.ENDPOINT}) did not answer within {connect_timeout_s:g} s"))
        else:
            kwargs["local_files_only"] = True
    else:
        raise VAEWeightsNotFound(f"no VAE folder at {path} (and {name_or_path!r} is not a Hub id like "
                                 f"{SD_VAES[0]!r})")
    from diffusers import AutoencoderKL

    try:
        vae = AutoencoderKL.from_pretrained(source, **kwargs)
    except OSError as err:
        if path.is_dir():
            raise
        raise VAEWeightsNotFound(_how_to_get(source, f"downloading it failed ({err})")) from None
    scale = float(vae.config.scaling_factor)
    return LatentCodec(vae.to(default_device(device)), scale, image_size, name=str(name_or_path))


#################################################################################
#              Scaled down: small VAEs trained here on Fashion-MNIST             #
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
        raise ValueError(f"VAE config {config.name!r} registered twice")
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
        raise KeyError(f"unknown VAE config {name!r}; choose one of: {', '.join(VAE_CONFIGS)}")
    return VAE_CONFIGS[name]


def build_vae(config: VAEConfig | str, seed: int | None = None):
    """An untrained `AutoencoderKL` for a config (or config name); `seed` fixes its initial weights."""
    from .autoencoder import AutoencoderKL

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
            raise ValueError("perceptual_weight > 0 needs `features`, a network mapping images to feature vectors")
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


def _gather(dataset, indices: torch.Tensor) -> tuple:
    """(images float (B, C, S, S), labels int64 (B,)) of an image dataset at `indices`."""
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(indices)
    items = [dataset[i] for i in indices.tolist()]
    return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items], dtype=torch.int64)


def estimate_scale_factor(codec: LatentCodec, dataset, num_images: int = 4096, seed: int = 0,
                          batch_size: int = 256) -> float:
    """1 / std of posterior samples z ~ q(z|x) over `num_images` random images of `dataset` (computed in
    the VAE's own units, whatever `codec.scale_factor` is): the factor that gives DiT unit-variance data
    (the role 0.18215 plays for the SD VAE)."""
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[:num_images]
    total, total_sq, count = 0.0, 0.0, 0
    for chunk in indices.split(batch_size):
        z = codec.encode(_gather(dataset, chunk)[0]).sample(generator).double()
        total, total_sq, count = total + z.sum().item(), total_sq + z.square().sum().item(), count + z.numel()
    variance = (total_sq - total * total / count) / (count - 1)
    return 1.0 / math.sqrt(variance)


def train_vae(config: VAEConfig, out_dir, max_steps: int | None = None, device=None, progress: bool = True,
              export=None, command: str | None = None) -> dict:
    """Train a small VAE, measure its scale factor and test PSNR, save `out_dir/final.{safetensors,json}`.

    With `export` (a stem such as `data/checkpoints/fmnist-vae`), also write the same checkpoint there
    plus `<stem>.manifest.json` (command, steps, time, PSNR, scale factor, data checksums). Returns a
    summary dict. Training is short, so there are no intermediate checkpoints and no resume.
    """
    from tqdm.auto import tqdm

    from .data import build_dataset, infinite_batches

    out_dir = Path(out_dir)
    max_steps = config.max_steps if max_steps is None else max_steps
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    if (out_dir / "final.json").exists():
        raise FileExistsError(f"{out_dir} already holds a trained VAE (final.json); choose another --out")
    device = default_device(str(device) if device is not None else None)
    seed_everything(config.seed)
    precision = resolve_precision(config.precision, device)          # "auto" -> bf16 only where it is native
    dataset = build_dataset(config.dataset, "train", image_size=config.image_size, hflip=False)
    if dataset.in_channels != config.in_channels:
        raise ValueError(f"config {config.name!r} expects {config.in_channels} channels, the dataset has {dataset.in_channels}")
    vae = build_vae(config).to(device).train()
    features = None
    if config.perceptual_weight > 0:                 # the frozen feature extractor of FID-FMNIST (ditlib.evaluate)
        from .evaluate import load_classifier

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
    meta = {"kind": "vae", "name": config.name, "vae_config": _autoencoder_config(vae), "scale_factor": scale,
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


#################################################################################
#                          Measuring an autoencoder                              #
#################################################################################

def _test_set(dataset):
    if dataset is not None:
        return dataset
    from .data import FashionMNIST
    return FashionMNIST("test")


def reconstructions(codec: LatentCodec, num_images: int, dataset=None, sample: bool = False,
                    batch_size: int = 250, seed: int = 0) -> tuple:
    """(originals, reconstructions) of the first `num_images` images of `dataset` (default: the
    Fashion-MNIST test split), float32 (N, C, S, S) in [-1, 1] on the CPU."""
    dataset = _test_set(dataset)
    indices = torch.arange(min(num_images, len(dataset)))
    generator = torch.Generator().manual_seed(seed)
    originals, outputs = [], []
    for chunk in indices.split(batch_size):
        x = _gather(dataset, chunk)[0]
        originals.append(x)
        outputs.append(codec.reconstruct(x, sample=sample, generator=generator).cpu())
    return torch.cat(originals), torch.cat(outputs)


def reconstruction_psnr(codec: LatentCodec, n: int = 10000, dataset=None, sample: bool = False) -> float:
    """Mean per-image PSNR (dB, pixels in [0, 1]) of D(E(x)) over the first `n` test images; the posterior
    mean is decoded unless `sample`."""
    x, x_hat = reconstructions(codec, n, dataset, sample=sample)
    mse = ((x - x_hat) / 2).square().flatten(1).mean(1).clamp_min(1e-10)     # [-1, 1] -> [0, 1] units
    return float((10 * torch.log10(1.0 / mse)).mean())


def reconstruction_fid(codec: LatentCodec, n: int = 10000, **metric_kwargs) -> float:
    """rFID: FID of the reconstructions of the first `n` Fashion-MNIST test images against the test
    split, with ditlib.evaluate's Fashion-MNIST feature extractor."""
    from .evaluate import compute_metrics

    _, x_hat = reconstructions(codec, n)
    metrics = compute_metrics(x_hat, reference="fmnist-test", extractor="fmnist", **metric_kwargs)
    return float(metrics["fid"])


#################################################################################
#                     Saving and loading (safetensors + JSON)                    #
#################################################################################

def _autoencoder_config(vae) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vae.config.items() if not k.startswith("_")}


def save_vae(path, vae, meta: dict) -> Path:
    """Write a small VAE as a ditlib checkpoint (`vae.*` tensors; JSON with vae_config and scale_factor)."""
    from .checkpoints import prefixed, save_checkpoint

    for key in ("vae_config", "scale_factor", "image_size"):
        if key not in meta:
            raise ValueError(f"a VAE checkpoint needs {key!r} in its meta")
    return save_checkpoint(path, prefixed(vae.state_dict(), "vae"), dict(meta, kind="vae"))


def _resolve(name_or_path) -> Path:
    if str(name_or_path) in SHIPPED_VAES:
        from .data import DATA_DIR
        return DATA_DIR / SHIPPED_VAES[str(name_or_path)]
    path = Path(str(name_or_path)).expanduser()
    return path.with_suffix("") if path.suffix in (".json", ".safetensors") else path


def load_vae(name_or_path="fmnist-vae", device=None) -> LatentCodec:
    """Any VAE as a `LatentCodec`: a shipped name ("fmnist-vae"), a ditlib VAE checkpoint (STEM, STEM.json or
    STEM.safetensors), or anything `load_sd_vae` takes (a Hub id such as "stabilityai/sd-vae-ft-ema", or a
    diffusers folder)."""
    stem = _resolve(name_or_path)
    if not stem.with_suffix(".json").is_file():
        if str(name_or_path) in SHIPPED_VAES:
            raise VAEWeightsNotFound(f"the shipped VAE {name_or_path!r} is missing ({stem}.json). Restore it with "
                                     f"`git checkout -- data/checkpoints` or retrain it with `python -m ditlib "
                                     f"train-vae --config fmnist-vae-f4 --export {stem}`")
        return load_sd_vae(str(name_or_path), device=device)
    from .autoencoder import AutoencoderKL
    from .checkpoints import CheckpointError, load_checkpoint, subdict

    tensors, meta = load_checkpoint(stem)
    if meta.get("kind") != "vae":
        raise CheckpointError(f"{stem}.json is a {meta.get('kind')!r} checkpoint, not a VAE")
    vae = AutoencoderKL(**meta["vae_config"])
    try:
        vae.load_state_dict(subdict(tensors, "vae"), strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"the weights in {stem} do not fit its vae_config: {err}") from None
    return LatentCodec(vae.to(default_device(device)), meta["scale_factor"], meta["image_size"],
                       name=str(name_or_path), fingerprint=meta["weights_sha256"], meta=meta)


def export_vae(stem, export, command: str | None = None, total_time_s: float | None = None) -> Path:
    """Copy a trained VAE checkpoint to `export` (a stem) and write `<export>.manifest.json` beside it."""
    import importlib.metadata

    from .checkpoints import load_checkpoint, save_checkpoint
    from .data import DATA_DIR

    tensors, meta = load_checkpoint(stem)
    meta = {k: v for k, v in meta.items() if k not in ("format", "weights_sha256", "weights_file")}
    export = save_checkpoint(export, tensors, meta)
    weights_meta = json.loads(export.with_suffix(".json").read_text())
    data_manifest = DATA_DIR / "fashion-mnist" / "MANIFEST.json"
    data_files = ({name: entry["sha256"] for name, entry in json.loads(data_manifest.read_text())["files"].items()
                   if name.startswith("train")} if meta["train_config"]["dataset"] == "fashion-mnist" else None)
    manifest = {
        "what": f"a small AutoencoderKL ({meta['name']}): {meta['image_size']}×{meta['image_size']}×"
                f"{meta['vae_config']['in_channels']} images -> latents {meta['latent_shape']}",
        "command": command, "steps": meta["steps"], "train_time_s": meta["train_time_s"],
        "total_time_s": None if total_time_s is None else round(total_time_s, 1),
        "psnr_db": meta["psnr_db"], "psnr_sample_db": meta["psnr_sample_db"], "psnr_images": meta["psnr_images"],
        "rfid": meta.get("rfid"), "rfid_note": meta.get("rfid_note"),
        "scale_factor": meta["scale_factor"], "latent_shape": meta["latent_shape"],
        "parameters": sum(t.numel() for t in tensors.values()),
        "weights_sha256": weights_meta["weights_sha256"],
        "data": {"dataset": meta["train_config"]["dataset"], "split": "train", "sha256": data_files},
        "software": {name: importlib.metadata.version(name) for name in ("torch", "diffusers")},
        "precision": meta.get("precision"),
        "machine": meta.get("machine") or (f"{os.cpu_count()} CPU cores" if not torch.cuda.is_available()
                                           else torch.cuda.get_device_name()),
    }
    path = export.with_suffix(".manifest.json")
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


#################################################################################
#                                Command line                                    #
#################################################################################

def _cmd_train_vae(args) -> int:
    config = get_vae_config(args.config)
    overrides = {k: v for k, v in {"batch_size": args.batch_size, "lr": args.lr, "kl_weight": args.kl_weight,
                                   "precision": args.precision, "seed": args.seed}.items() if v is not None}
    if overrides:
        config = config.replace(**overrides)
    out = Path(args.out or Path("runs") / config.name)
    command = getattr(args, "invocation", None) or "python -m ditlib " + " ".join(sys.argv[1:])
    summary = train_vae(config, out, max_steps=args.max_steps, device=args.device, export=args.export, command=command)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_encode_latents(args) -> int:
    from .latents import build_latent_dataset

    dataset = build_latent_dataset(args.vae, args.dataset, args.split, image_size=args.image_size,
                                   cache_dir=args.cache_dir, device=args.device, precision=args.precision)
    print(f"{len(dataset)} latents {dataset.latent_shape} (and their flips) in {dataset.path}")
    return 0


def add_cli(subparsers) -> None:
    """Register `train-vae` and `encode-latents` with `python -m ditlib`."""
    p = subparsers.add_parser("train-vae", help="train a small VAE (latent diffusion, DiT §3.1)")
    p.add_argument("--config", default="fmnist-vae-f4", help=f"one of: {', '.join(VAE_CONFIGS)} (default fmnist-vae-f4)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (default: the config's)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config>)")
    p.add_argument("--export", default=None, help="also write the weights to this stem with a manifest "
                                                  "(e.g. data/checkpoints/fmnist-vae)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--kl-weight", type=float, default=None)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                   help="autocast precision (default: the config's, auto = bf16 only where the hardware has it natively)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.set_defaults(func=_cmd_train_vae)

    p = subparsers.add_parser("encode-latents", help="encode a dataset (and its flips) once into the latent cache")
    p.add_argument("--vae", default="fmnist-vae", help="shipped name, VAE checkpoint, Hub id or diffusers folder")
    p.add_argument("--dataset", default="fashion-mnist", help="'fashion-mnist' or an image folder")
    p.add_argument("--split", default="train")
    p.add_argument("--image-size", type=int, default=None, help="pixel size (default: the VAE's)")
    p.add_argument("--cache-dir", default=None, help="default: runs/cache/latents")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="the encoder's autocast precision (default auto: bf16 only where the hardware has it natively)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_encode_latents)
