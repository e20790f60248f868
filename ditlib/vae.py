"""The autoencoder of latent diffusion (DiT §3.1 "Latent diffusion models"): images -> latents -> images.

DiT does not model pixels. An off-the-shelf VAE encoder E turns a 256×256×3 image x into a 32×32×4
latent z = E(x) (downsampling factor 8); DiT is trained on z, and its samples are decoded by D. The
official code multiplies the latent by 0.18215 so that it has roughly unit variance, the scale the
diffusion process assumes (x_T ≈ N(0, I)).

Two scales, one interface, `LatentCodec` (encode -> posterior, sample a scaled latent, decode):

- full scale: `load_sd_vae()` loads the Stable Diffusion VAE the paper used (`stabilityai/sd-vae-ft-ema`,
  or `-mse`), scale 0.18215;
- scaled down: a small `AutoencoderKL` trained on Fashion-MNIST (`ditlib.vae_train`), 32×32×1 -> 8×8×4
  (4× fewer numbers). Its scale factor is measured on the data after training (`estimate_scale_factor`:
  1 / std of posterior samples) and stored with its weights: `load_vae("fmnist-vae")` loads the shipped one.

The small VAEs are `ditlib.autoencoder.AutoencoderKL`, the SD architecture with diffusers' config keys and
state_dict names (so loading one does not import diffusers); the SD VAE is diffusers' `AutoencoderKL`. This
module encodes, decodes, measures (PSNR, rFID), stores and loads them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import threading
from pathlib import Path
from typing import NamedTuple

import torch

from .autoencoder import AutoencoderKL
from .checkpoints import CheckpointError, load_checkpoint, prefixed, save_checkpoint, subdict
from .data import DATA_DIR, FashionMNIST, get_batch
from .errors import ConfigError, DitlibError
from .metrics import compute_metrics
from .runtime import default_device

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
            raise ConfigError(f"scale_factor must be positive, got {scale_factor}")
        self.vae = vae.eval().requires_grad_(False)
        self.scale_factor = float(scale_factor)
        self.name, self.meta = name, dict(meta or {})
        self.in_channels = vae.config.in_channels
        self.latent_channels = vae.config.latent_channels
        self.downsample_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if image_size % self.downsample_factor:
            raise ConfigError(f"image_size {image_size} is not divisible by the VAE's downsampling factor "
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

class VAEWeightsNotFound(DitlibError, FileNotFoundError):
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


def estimate_scale_factor(codec: LatentCodec, dataset, num_images: int = 4096, seed: int = 0,
                          batch_size: int = 256) -> float:
    """1 / std of posterior samples z ~ q(z|x) over `num_images` random images of `dataset` (computed in
    the VAE's own units, whatever `codec.scale_factor` is): the factor that gives DiT unit-variance data
    (the role 0.18215 plays for the SD VAE)."""
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[:num_images]
    total, total_sq, count = 0.0, 0.0, 0
    for chunk in indices.split(batch_size):
        z = codec.encode(get_batch(dataset, chunk)[0]).sample(generator).double()
        total, total_sq, count = total + z.sum().item(), total_sq + z.square().sum().item(), count + z.numel()
    variance = (total_sq - total * total / count) / (count - 1)
    return 1.0 / math.sqrt(variance)


#################################################################################
#                          Measuring an autoencoder                              #
#################################################################################

def _test_set(dataset):
    if dataset is not None:
        return dataset
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
        x = get_batch(dataset, chunk)[0]
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
    split, with ditlib.metrics' Fashion-MNIST feature extractor."""
    _, x_hat = reconstructions(codec, n)
    metrics = compute_metrics(x_hat, reference="fmnist-test", extractor="fmnist", **metric_kwargs)
    return float(metrics["fid"])


#################################################################################
#                     Saving and loading (safetensors + JSON)                    #
#################################################################################

def autoencoder_config(vae) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vae.config.items() if not k.startswith("_")}


def save_vae(path, vae, meta: dict) -> Path:
    """Write a small VAE as a ditlib checkpoint (`vae.*` tensors; JSON with vae_config and scale_factor)."""
    for key in ("vae_config", "scale_factor", "image_size"):
        if key not in meta:
            raise ConfigError(f"a VAE checkpoint needs {key!r} in its meta")
    return save_checkpoint(path, prefixed(vae.state_dict(), "vae"), dict(meta, kind="vae"))


def _resolve(name_or_path) -> Path:
    if str(name_or_path) in SHIPPED_VAES:
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
