"""The latent cache: encode a dataset once, then draw a fresh latent every time an image is used (DiT §3.1).

The official DiT training script encodes each batch on the fly: `x = vae.encode(x).latent_dist.sample()
.mul_(0.18215)` after a random horizontal flip, so every epoch sees a new z ~ q(z|x) and a new flip of
each image. Encoding is most of the cost of a small DiT step, so it pays to encode once. But caching
one frozen *sample* per image (as fast-DiT's `extract_features.py` does, flip included) changes the
training distribution: the model sees one point of each posterior and one orientation forever,
instead of the posterior itself and both orientations.

This cache keeps the distribution exact and the encoder out of the loop. For every image and its
mirror image it stores the posterior q(z|x) = N(μ, σ²) (μ and σ, float16, in the VAE's own units);
`LatentDataset.get_batch` then draws z = scale_factor · (μ + σ·ε) with fresh ε, from the original or
the flipped posterior as asked. The cache file is keyed by a sha256 of (VAE weights, image size,
dataset content, format), so a different VAE or a changed dataset is re-encoded, never reused.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .errors import ConfigError

CACHE_FORMAT = "ditlib-latent-cache-v1"
DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / "runs" / "cache" / "latents"   # runs/ is not committed


#################################################################################
#                 What a cache depends on: the VAE and the dataset               #
#################################################################################

def dataset_identity(dataset) -> dict:
    """A JSON-able description of an image dataset's content, for the cache key.

    In-memory datasets with uint8 `images` and `labels` tensors (`ditlib.data.FashionMNIST`) are hashed
    by content; `ditlib.data.ImageFolder` by its files' relative paths, labels, sizes and modification
    times, plus the crop size and channels. Other datasets: pass `dataset_id=` to `load_or_encode`.
    """
    from .data import ImageFolder

    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if torch.is_tensor(images) and torch.is_tensor(labels):
        digest = hashlib.sha256()
        for tensor in (images, labels):
            digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return {"name": type(dataset).__name__, "split": getattr(dataset, "split", None), "size": len(dataset),
                "content_sha256": digest.hexdigest()}
    if isinstance(dataset, ImageFolder):
        digest = hashlib.sha256()
        for path, label in dataset.samples:
            stat = path.stat()
            digest.update(f"{path.relative_to(dataset.root)}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return {"name": "ImageFolder", "root": dataset.root.name, "size": len(dataset), "image_size": dataset.image_size,
                "channels": dataset.in_channels, "files_sha256": digest.hexdigest()}
    raise TypeError(f"cannot tell what a {type(dataset).__name__} holds; pass dataset_id={{...}} describing "
                    "its content (name, split, size, a checksum) so the cache can be keyed by it")


def cache_key(codec, dataset_id: dict, precision: str = "fp32") -> str:
    """sha256 of everything the stored posteriors depend on (not the scale factor, applied when drawing).
    `precision` is the encoder's autocast precision actually used ("fp32" keeps the keys of older caches)."""
    parts = {"format": CACHE_FORMAT, "vae_sha256": codec.fingerprint, "image_size": codec.image_size,
             "dataset": dataset_id}
    if precision != "fp32":
        parts["precision"] = precision
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


#################################################################################
#                         Encoding a dataset, once                               #
#################################################################################

ENCODE_BATCH = 64
"""Images per encoder call (128 rows with their flips). Small batches in channels-last layout encode the
60k Fashion-MNIST images and their flips in 84 s (`python -m ditlib encode-latents --vae fmnist-vae
--precision fp32`, whole command) against 148 s in batches of 256 in the default layout (measured 2026-12-01,
2-core AMD EPYC, fp32): the activations of a small batch stay in cache."""


def encode_dataset(codec, dataset, batch_size: int = ENCODE_BATCH, progress: bool = True,
                   precision: str = "fp32") -> dict:
    """Posteriors of every image and of its mirror image, the encoder under `precision` autocast.

    Returns {"mean", "std": float16 (N, 2, C, h, w) (index 1 of dim 1 is the left-right flip), "labels": int64 (N,)}.
    The encoder runs in channels-last layout meanwhile (the same numbers up to float rounding; see ENCODE_BATCH).
    """
    from tqdm.auto import tqdm

    from .runtime import autocast, resolve_precision
    from .data import get_batch

    device = codec.device
    precision = resolve_precision(precision, device).precision
    means, stds, labels = [], [], []
    indices = torch.arange(len(dataset))
    codec.vae.to(memory_format=torch.channels_last)
    try:
        for chunk in tqdm(indices.split(batch_size), desc=f"encode {len(dataset)} images ×2 flips",
                          disable=not progress, mininterval=1.0):
            x, y = get_batch(dataset, chunk)                                 # (B, C_in, S, S)
            x = torch.cat([x, x.flip(-1)]).contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                q = codec.encode(x)                                          # (2B, C, h, w)
            means.append(torch.stack(q.mean.cpu().chunk(2), dim=1).half())   # (B, 2, C, h, w)
            stds.append(torch.stack(q.std.cpu().chunk(2), dim=1).half())
            labels.append(y.to(torch.int64))
    finally:
        codec.vae.to(memory_format=torch.contiguous_format)
    return {"mean": torch.cat(means).contiguous(), "std": torch.cat(stds).contiguous(), "labels": torch.cat(labels)}


def load_or_encode(codec, dataset, cache_dir=None, dataset_id: dict | None = None, batch_size: int = ENCODE_BATCH,
                   progress: bool = True, precision: str = "auto") -> "LatentDataset":
    """The `LatentDataset` of `dataset` under `codec`, read from the cache if a valid entry exists, else
    encoded and stored (atomically, via ditlib.checkpoints) as `<cache_dir>/<name>-<key[:16]>.*`."""
    from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
    from .runtime import resolve_precision

    precision = resolve_precision(precision, codec.device).precision
    dataset_id = dataset_identity(dataset) if dataset_id is None else dataset_id
    key = cache_key(codec, dataset_id, precision)
    name = "-".join(str(p) for p in (dataset_id.get("name"), dataset_id.get("split")) if p).lower() or "dataset"
    stem = Path(cache_dir or DEFAULT_CACHE_DIR) / f"{name}-{key[:16]}"
    num_classes = getattr(dataset, "num_classes", None)
    try:
        tensors, meta = load_checkpoint(stem)
        if meta.get("key") != key:
            raise CheckpointError(f"{stem} holds another cache (key {meta.get('key')}, expected {key})")
    except CheckpointError:
        tensors = encode_dataset(codec, dataset, batch_size=batch_size, progress=progress, precision=precision)
        meta = {"kind": "latent-cache", "key": key, "vae": {"name": codec.name, "sha256": codec.fingerprint,
                                                          "scale_factor": codec.scale_factor},
                "dataset": dataset_id, "precision": precision, "image_size": codec.image_size, "latent_shape": codec.latent_shape,
                "num_classes": num_classes}
        save_checkpoint(stem, tensors, meta)
    return LatentDataset(tensors["mean"], tensors["std"], tensors["labels"], codec.scale_factor,
                         num_classes=meta["num_classes"], path=stem)


def load_latent_cache(path) -> "LatentDataset":
    """An existing cache file (STEM, STEM.json or STEM.safetensors, as written by `load_or_encode` or
    `python -m ditlib encode-latents`) as a `LatentDataset`, without the VAE or the images: what
    `python -m ditlib train --latents STEM` trains on."""
    from .checkpoints import CheckpointError, load_checkpoint

    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != "latent-cache":
        raise CheckpointError(f"{path} is a {meta.get('kind')!r} checkpoint, not a latent cache")
    return LatentDataset(tensors["mean"], tensors["std"], tensors["labels"], meta["vae"]["scale_factor"],
                         num_classes=meta["num_classes"], path=Path(path))


def build_latent_dataset(vae="fmnist-vae", dataset="fashion-mnist", split: str = "train", image_size: int | None = None,
                         cache_dir=None, device=None, batch_size: int = ENCODE_BATCH, progress: bool = True,
                         precision: str = "auto") -> "LatentDataset":
    """One call from names to a training set of latents: load the VAE (`ditlib.vae.load_vae`: a shipped
    name, checkpoint, Hub id or folder, or a `LatentCodec`), build the image dataset
    (`ditlib.data.build_dataset`, no flips), and `load_or_encode` it."""
    from .data import build_dataset
    from .vae import LatentCodec, load_vae

    codec = vae if isinstance(vae, LatentCodec) else load_vae(vae, device=device)
    images = build_dataset(dataset, split, image_size=image_size or codec.image_size, hflip=False)
    return load_or_encode(codec, images, cache_dir=cache_dir, batch_size=batch_size, progress=progress,
                          precision=precision)


#################################################################################
#                   Drawing fresh latents from the cached posteriors             #
#################################################################################

class LatentDataset:
    """Cached posteriors of a dataset and its mirror images; every draw is a fresh sample (DiT §3.1, §4).

    `get_batch(indices, flip_mask, generator)` returns (z float32 (B, C, h, w), y int64 (B,)) with
    z = scale_factor · (μ + σ·ε), ε ~ N(0, I) new on every call, and μ, σ those of the flipped image
    where `flip_mask` is True. Never flip latents themselves: the latent of a mirrored image is not
    the mirrored latent. `selects_flips = True` tells `ditlib.data.infinite_batches` to pass its flip
    choices here instead of flipping the batch; `hflip = False` because the dataset never flips on
    its own. `in_channels`, `image_size` (= latent side) and `num_classes` describe what the DiT sees.
    """

    selects_flips = True
    hflip = False

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, labels: torch.Tensor, scale_factor: float,
                 num_classes: int | None = None, path=None):
        if mean.shape != std.shape or mean.dim() != 5 or mean.shape[1] != 2 or mean.shape[0] != labels.shape[0]:
            raise ConfigError(f"expected mean and std of shape (N, 2, C, h, w) and labels (N,), got "
                              f"{tuple(mean.shape)}, {tuple(std.shape)}, {tuple(labels.shape)}")
        self.mean, self.std, self.labels = mean, std, labels.to(torch.int64)
        self.scale_factor = float(scale_factor)
        self.num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
        self.latent_shape = tuple(mean.shape[2:])               # (C, h, w)
        self.in_channels, self.image_size = self.latent_shape[0], self.latent_shape[-1]
        self.path = path

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __repr__(self) -> str:
        return (f"LatentDataset({len(self)} images ×2 flips, latents {self.latent_shape}, "
                f"scale_factor={self.scale_factor:.5g}, cache={self.path})")

    def _select(self, indices, flip_mask) -> tuple:
        indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        side = (torch.zeros_like(indices) if flip_mask is None
                else torch.as_tensor(flip_mask, dtype=torch.bool).reshape(-1).to(torch.int64))
        if side.shape != indices.shape:
            raise ConfigError(f"flip_mask has {side.numel()} entries for {indices.numel()} indices")
        return indices, side

    def posterior_mean(self, indices, flip_mask=None) -> torch.Tensor:
        """scale_factor · μ for the given images (flipped where asked), float32 (B, C, h, w)."""
        indices, side = self._select(indices, flip_mask)
        return self.mean[indices, side].float() * self.scale_factor

    def get_batch(self, indices, flip_mask=None, generator: torch.Generator | None = None) -> tuple:
        """Draw scale_factor · (μ + σ·ε) for images `indices` (B,), from the flipped posterior where
        `flip_mask` (bool (B,), default all False) is True; ε comes from `generator` (a CPU
        torch.Generator) or torch's global RNG. Returns (z float32 (B, C, h, w), y int64 (B,))."""
        indices, side = self._select(indices, flip_mask)
        mean, std = self.mean[indices, side].float(), self.std[indices, side].float()    # (B, C, h, w)
        eps = torch.randn(mean.shape, generator=generator)
        return (mean + std * eps) * self.scale_factor, self.labels[indices]

    def __getitem__(self, index: int) -> tuple:
        """(z (C, h, w), y): a fresh sample of image `index`, unflipped, from torch's global RNG."""
        z, y = self.get_batch(torch.tensor([int(index)]))
        return z[0], y[0]
