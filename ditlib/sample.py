"""Sampling from a trained DiT: DDPM / DDIM over respaced timesteps, classifier-free guidance, saving grids.

`sample_images` is what `python -m ditlib sample` runs. With `cfg_scale > 1` the batch is doubled:
the first half carries the requested labels, the second half the null class, and the model's
`forward_with_cfg` mixes the two predictions (paper §4, "Classifier-free guidance"):
ε̂ = ε(x, ∅) + s·(ε(x, y) − ε(x, ∅)). The paper samples with 250 DDPM steps.
"""
from __future__ import annotations

import numbers
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .diffusion import create_diffusion, randn
from .models import DiT
from .runtime import autocast, resolve_precision

SAMPLERS = ("ddpm", "ddim")


def check_sampling_steps(num_sampling_steps, diffusion_steps: int = 1000) -> int:
    """The number of respaced sampling steps, if it is a whole number from 1 to the diffusion's T; else ValueError."""
    if isinstance(num_sampling_steps, bool) or not isinstance(num_sampling_steps, numbers.Integral) \
            or not 1 <= num_sampling_steps <= diffusion_steps:
        raise ValueError(f"the number of sampling steps must be a whole number from 1 to {diffusion_steps} "
                         f"(the diffusion's steps), got {num_sampling_steps!r}")
    return int(num_sampling_steps)


def sampling_steps(requested, train_config: dict) -> int:
    """`requested` steps, or the checkpoint's `sample_steps` (250) when None; checked against its T."""
    steps = train_config.get("sample_steps", 250) if requested is None else requested
    return check_sampling_steps(steps, train_config.get("diffusion_steps", 1000))


@torch.no_grad()
def sample_images(model: DiT, labels, *, num_sampling_steps: int = 250, sampler: str = "ddpm",
                  cfg_scale: float = 1.0, seed=0, guided_channels: int | None = None,
                  noise_schedule: str = "linear", diffusion_steps: int = 1000, clip_denoised: bool = True,
                  eta: float = 0.0, precision: str = "auto", progress: bool = True,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
    """Generate one image per label. Returns a float tensor (N, C, I, I) in the model's data range.

    The same (model, labels, settings, seed) always gives the same images: the initial noise and every
    step's noise come from one `torch.Generator` seeded with `seed`. `seed` may also be a list with one
    seed per label: then sample i draws all its noise from its own generator, so it comes out the same
    whatever batch it is sampled in (how `ditlib.distributed` splits FID sampling over processes).
    `clip_denoised` clips x̂_0 to [−1, 1] at each step (right for pixels; the official latent sampler
    does not clip). `precision="auto"` runs the model in bf16 only where the hardware computes it
    natively (`ditlib.runtime.resolve_precision`), else fp32.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if cfg_scale < 1.0:
        raise ValueError(f"cfg_scale must be >= 1 (1 = no guidance), got {cfg_scale}")
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device).precision          # once, not at every step
    labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    if labels.numel() == 0:
        raise ValueError("no labels given: pass at least one class to sample")
    if int(labels.min()) < 0 or int(labels.max()) >= model.num_classes:
        raise ValueError(f"labels must lie in [0, {model.num_classes - 1}]; got {labels.tolist()}")
    check_sampling_steps(num_sampling_steps, diffusion_steps)
    respacing = f"ddim{num_sampling_steps}" if sampler == "ddim" else str(num_sampling_steps)
    diffusion = create_diffusion(respacing, noise_schedule=noise_schedule, learn_sigma=model.learn_sigma,
                                 diffusion_steps=diffusion_steps)

    n = labels.shape[0]
    if isinstance(seed, (list, tuple, torch.Tensor)):
        seeds = [int(s) for s in seed]
        if len(seeds) != n:
            raise ValueError(f"{len(seeds)} seeds for {n} labels: pass one seed, or one per label")
        generator = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    else:
        generator = torch.Generator(device=device).manual_seed(seed)
    shape = (n, model.in_channels, model.input_size, model.input_size)
    z = noise if noise is not None else randn(shape, generator=generator, device=device)
    if tuple(z.shape) != shape:
        raise ValueError(f"noise has shape {tuple(z.shape)}, expected {shape}")
    use_cfg = cfg_scale > 1.0
    if use_cfg:
        if model.y_embedder.embedding_table.num_embeddings <= model.num_classes:
            raise ValueError("this model was trained without class dropout, so it has no null class for guidance; use cfg_scale=1")
        z = torch.cat([z, z], dim=0)
        if isinstance(generator, list):         # the null-class half needs noise rows too; each sample's
            generator = generator + generator   # generator draws them, so nothing depends on the batch
        labels = torch.cat([labels, torch.full_like(labels, model.num_classes)], dim=0)
        forward = partial(model.forward_with_cfg, cfg_scale=cfg_scale, guided_channels=guided_channels)
    else:
        forward = model.forward

    def model_fn(x, t, **kwargs):
        with autocast(device, precision):
            return forward(x, t, **kwargs).float()

    was_training = model.training
    model.eval()
    loop = diffusion.ddim_sample_loop if sampler == "ddim" else diffusion.p_sample_loop
    extra = {"eta": eta} if sampler == "ddim" else {}
    samples = loop(model_fn, z.shape, noise=z, clip_denoised=clip_denoised, model_kwargs={"y": labels},
                   device=device, progress=progress, generator=generator, **extra)
    model.train(was_training)
    return samples[:n] if use_cfg else samples


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [−1, 1] -> (N, H, W, C) uint8 in [0, 255] (the ADM .npz layout)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def tile_images(images: np.ndarray, nrow: int = 8, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """(N, H, W, C) uint8 -> one (rows·(H+p)+p, nrow·(W+p)+p, C) uint8 grid, row-major, white padding.

    (torchvision's `make_grid` layout; written here so that saving a grid does not import torchvision,
    which imports torch._dynamo and costs a second of start-up.)"""
    n, h, w, c = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[top:top + h, left:left + w] = images[i]
    return grid


def save_grid(images: torch.Tensor, path, nrow: int = 8, padding: int = 2, scale: int = 1) -> Path:
    """Save (N, C, H, W) images in [−1, 1] as one PNG grid of `nrow` columns; `scale` enlarges pixels."""
    from PIL import Image

    arr = tile_images(to_uint8(images), nrow=nrow, padding=padding)          # (rows·(H+p)+p, cols·(W+p)+p, C)
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def save_npz(images: torch.Tensor, labels, path) -> Path:
    """Save samples as uint8 N×H×W×C under `arr_0` (ADM reference layout) plus `labels`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, arr_0=to_uint8(images), labels=np.asarray(torch.as_tensor(labels).cpu()))
    return path


SHIPPED_MODELS = ("fmnist-latent-DiT-T-2", "fmnist-DiT-T-4")
"""Pretrained DiTs in data/checkpoints/, best first (see their .manifest.json for how each was trained)."""


class Pretrained:
    """A trained DiT ready to sample, with the VAE that decodes its latents when it is a latent model (§3.1).

    `Pretrained.load("fmnist-latent-DiT-T-2")` takes a shipped name or a checkpoint path (STEM, STEM.json
    or STEM.safetensors); `.sample(labels)` returns pixel images (N, C, H, W) in [−1, 1] whatever space the
    model works in, using the sampling settings stored with the checkpoint unless you override them.
    """

    def __init__(self, model: DiT, meta: dict, codec=None):
        self.model, self.meta, self.codec = model, meta, codec
        self.train_config = meta.get("train_config", {})

    @classmethod
    def load(cls, name_or_path: str = SHIPPED_MODELS[0], device=None, which: str = "ema") -> "Pretrained":
        from .checkpoints import load_model
        from .data import DATA_DIR
        from .runtime import default_device

        device = default_device(device) if not isinstance(device, torch.device) else device
        shipped = DATA_DIR / "checkpoints" / str(name_or_path)
        path = shipped if str(name_or_path) in SHIPPED_MODELS else Path(str(name_or_path)).expanduser()
        model, meta = load_model(path, which=which, device=device)
        codec = None
        vae_name = meta.get("train_config", {}).get("vae")
        if vae_name:
            from .vae import load_vae
            codec = load_vae(vae_name, device=device)
        return cls(model, meta, codec)

    def __repr__(self) -> str:
        space = f"latent, decoded by {self.codec!r}" if self.codec is not None else "pixel space"
        return f"Pretrained({self.train_config.get('name', 'DiT')}, {space})"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def sample(self, labels, num_sampling_steps: int | None = None, cfg_scale: float | None = None,
               sampler: str = "ddpm", seed: int = 0, progress: bool = True, **kwargs) -> torch.Tensor:
        """One image per label, as pixels (N, C, H, W) in [−1, 1]. Other kwargs go to `sample_images`."""
        cfg = self.train_config
        samples = sample_images(
            self.model, labels,
            num_sampling_steps=sampling_steps(num_sampling_steps, cfg),
            cfg_scale=cfg.get("sample_cfg_scale", 1.0) if cfg_scale is None else cfg_scale,
            sampler=sampler, seed=seed, progress=progress,
            noise_schedule=cfg.get("noise_schedule", "linear"), diffusion_steps=cfg.get("diffusion_steps", 1000),
            clip_denoised=kwargs.pop("clip_denoised", self.codec is None), **kwargs)
        if self.codec is None:
            return samples
        with torch.no_grad():
            return self.codec.decode(samples).clamp(-1, 1)
