"""Sampling for FID (DiT §5): images from a trained DiT, with labels spread evenly over the classes.

`sample_for_fid` returns the images of one process in memory (the lessons, `python -m ditlib fid`);
`sample_fid_images` writes them as PNGs split over the processes of a distributed run and resumes
where it stopped (`python -m ditlib sample-fid`, under `accelerate launch` for many GPUs), and
`collect_fid_npz` packs them in ADM's `.npz` layout. Latent models decode every batch with their VAE
before anything is measured. The metrics themselves are `ditlib.metrics` (re-exported here).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .data import derived_seed, to_uint8
from .errors import ConfigError, MissingFileError
from .metrics import (EXTRACTORS, as_uint8_images, compute_metrics, extract_features, inception_weights_path,  # noqa: F401
                      reference_images, save_adm_npz)
from .sample import Pretrained, load_model, load_official_dit, sample_images
from .vae import load_vae


def uniform_labels(num_samples: int, num_classes: int) -> torch.Tensor:
    """0, 1, …, K−1, 0, 1, … : every class gets num_samples/K samples (±1), as for class-conditional FID."""
    return torch.arange(num_samples) % num_classes


def images_out(model, decode):
    """(model, decode) that turn samples into images: a `Pretrained` brings its VAE's decoder; a latent DiT
    (not 1 or 3 channels) without `decode` is refused, because clamping undecoded latents to [−1, 1]
    would damage them (a third of the scaled latent values lie outside) before anything decodes them."""
    if isinstance(model, Pretrained):
        model, decode = model.model, decode or (model.codec.decode if model.codec is not None else None)
    if decode is None and model.in_channels not in (1, 3):
        raise ConfigError(f"this DiT samples {model.in_channels}-channel latents but FID needs images: pass "
                          "decode=codec.decode (the model's VAE, e.g. Pretrained.load(...).codec), or the Pretrained "
                          "itself, so that each batch is decoded before it is clamped to [-1, 1]")
    return model, decode


def sample_for_fid(model, num_samples: int, cfg_scale: float = 1.0, num_sampling_steps: int = 250,
                   sampler: str = "ddpm", seed: int = 0, batch_size: int = 256, progress: bool = True,
                   decode=None, **sample_kwargs) -> torch.Tensor:
    """`num_samples` images from a DiT (or a `Pretrained`) for FID: float (N, C, H, W) in [-1, 1] on the CPU.

    Labels are spread evenly over the classes (`uniform_labels`). Batches of `batch_size` are
    sampled with `ditlib.sample.sample_images`, batch i with a seed derived from (seed, i), so the
    same (seed, batch_size) always gives the same samples. `decode` (a VAE decoder; required for a
    latent DiT, implied by a `Pretrained`) maps each batch of model outputs to images before they are
    clamped and kept; other keyword arguments go to `sample_images` (noise_schedule, diffusion_steps,
    precision, guided_channels, clip_denoised).
    """
    if num_samples < 1 or batch_size < 1:
        raise ConfigError(f"num_samples and batch_size must be at least 1, got {num_samples} and {batch_size}")
    model, decode = images_out(model, decode)
    labels = uniform_labels(num_samples, model.num_classes)
    out = None
    with tqdm(total=num_samples, desc="sample for FID", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for index, start in enumerate(range(0, num_samples, batch_size)):
            batch_labels = labels[start:start + batch_size]
            images = sample_images(model, batch_labels, num_sampling_steps=num_sampling_steps, sampler=sampler,
                                   cfg_scale=cfg_scale, seed=derived_seed(seed, "fid", index), progress=False,
                                   **sample_kwargs)
            if decode is not None:
                images = decode(images)
            images = images.float().cpu().clamp(-1, 1)
            if out is None:
                out = torch.empty(num_samples, *images.shape[1:])  # filled batch by batch: no list of copies
            out[start:start + len(batch_labels)] = images
            bar.update(len(batch_labels))
    return out


def fid_seed(seed: int, index: int) -> int:
    """The seed of global sample `index`: a function of (seed, index) only."""
    return derived_seed(seed, "fid-sample", index)


def _png_path(out_dir: Path, index: int) -> Path:
    return out_dir / "samples" / f"{index:06d}.png"


def _save_png(image: np.ndarray, path: Path) -> None:
    """uint8 (H, W, C) -> PNG, written to a temporary name and renamed (an interrupted run leaves no half file)."""
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp, format="PNG")
    tmp.replace(path)


def sample_fid_images(model, out_dir, num_samples: int = 50_000, *, accelerator=None, cfg_scale: float = 1.0,
                      num_sampling_steps: int = 250, sampler: str = "ddpm", seed: int = 0, batch_size: int = 64,
                      decode=None, progress: bool = True, **sample_kwargs) -> dict:
    """Sample `num_samples` images for FID, split over the processes of `accelerator`, as PNGs.

    Global sample i has label i mod K (`ditlib.evaluate.uniform_labels`) and its own seed `fid_seed(seed, i)`;
    process r draws the indices i ≡ r (mod world size), so indices are disjoint and the images are the
    same for any number of processes or batch size. Each image goes to `out_dir/samples/{i:06d}.png`;
    indices whose PNG already exists are skipped, so an interrupted run continues where it stopped.
    `decode` maps model outputs to images (a VAE decoder for latent models); other keyword arguments go
    to `ditlib.sample.sample_images` (noise_schedule, diffusion_steps, guided_channels, clip_denoised, precision).
    Returns {"written": indices this process wrote, "skipped": indices it found done}.
    """
    if num_samples < 1 or batch_size < 1:
        raise ConfigError(f"num_samples and batch_size must be at least 1, got {num_samples} and {batch_size}")
    model, decode = images_out(model, decode)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    out_dir = Path(out_dir)
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    labels = uniform_labels(num_samples, model.num_classes)
    mine = list(range(rank, num_samples, world))
    todo = [i for i in mine if not _png_path(out_dir, i).exists()]
    written = []
    with tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"sample for FID (rank {rank})", unit="img",
              disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            images = sample_images(model, labels[chunk], num_sampling_steps=num_sampling_steps, sampler=sampler,
                                   cfg_scale=cfg_scale, seed=[fid_seed(seed, i) for i in chunk], progress=False,
                                   **sample_kwargs)
            if decode is not None:
                images = decode(images)
            for i, image in zip(chunk, to_uint8(images)):
                _save_png(image, _png_path(out_dir, i))
            written += chunk
            bar.update(len(chunk))
    return {"written": written, "skipped": sorted(set(mine) - set(todo))}


def collect_fid_npz(out_dir, num_samples: int, path=None) -> Path:
    """Read `out_dir/samples/000000.png …` back in index order and save ADM's `.npz` (uint8 N×H×W×3 under
    `arr_0`, `ditlib.evaluate.save_adm_npz`). Raises if an index is missing."""
    out_dir = Path(out_dir)
    missing = [i for i in range(num_samples) if not _png_path(out_dir, i).exists()]
    if missing:
        raise MissingFileError(f"{len(missing)} of {num_samples} samples are missing in {out_dir / 'samples'} "
                               f"(first: {missing[:5]}); run sample-fid again to finish them")
    first = np.asarray(Image.open(_png_path(out_dir, 0)))
    pixels = np.empty((num_samples, *first.shape[:2], 1 if first.ndim == 2 else first.shape[2]), dtype=np.uint8)
    for i in range(num_samples):
        image = np.asarray(Image.open(_png_path(out_dir, i)))
        pixels[i] = image[..., None] if image.ndim == 2 else image
    return save_adm_npz(pixels, path or out_dir / f"samples-{num_samples}.npz")


def load_for_sampling(ckpt: str, weights: str, device, vae: str | None, model_name: str | None):
    """(model, train-config dict, codec or None) from a ditlib checkpoint or an official DiT .pt file."""
    if Path(ckpt).suffix in (".pt", ".pth"):
        model = load_official_dit(ckpt, model_name=model_name).to(device)
        train_cfg = {"sample_steps": 250, "sample_cfg_scale": 1.5}
        vae = vae or "stabilityai/sd-vae-ft-ema"
    else:
        model, meta = load_model(ckpt, which=weights, device=device)
        train_cfg = meta.get("train_config", {})
        vae = vae or train_cfg.get("vae")
    codec = None
    if vae:                      # decoding works at any latent size, so the codec's nominal image size does not matter
        codec = load_vae(vae, device=device)
    return model, train_cfg, codec
