"""Sampling from a trained DiT: DDPM / DDIM over respaced timesteps, classifier-free guidance, saving grids,
and the weights to sample from.

`sample_images` is what `python -m ditlib sample` runs. With `cfg_scale > 1` the batch is doubled:
the first half carries the requested labels, the second half the null class, and the model's
`forward_with_cfg` mixes the two predictions (paper §4, "Classifier-free guidance"):
ε̂ = ε(x, ∅) + s·(ε(x, y) − ε(x, ∅)). The paper samples with 250 DDPM steps.

Weights come from a ditlib checkpoint (`load_model`), an official DiT file such as `DiT-XL-2-256x256.pt`
(`load_official_dit`, its `DiTConfig` inferred from the shapes), or a shipped model with the VAE that
decodes its latents (`Pretrained`).
"""
from __future__ import annotations

import argparse
import math
import numbers
import pickle
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .checkpoints import CheckpointError, checkpoint_stem, load_checkpoint, subdict
from .configs import build_backbone, model_config_from_dict
from .data import DATA_DIR, to_uint8
from .diffusion import create_diffusion, randn
from .errors import ConfigError
from .models import MODEL_SIZES, DiT, DiTConfig
from .runtime import autocast, default_device, resolve_precision
from .vae import load_vae

SAMPLERS = ("ddpm", "ddim")


def check_sampling_steps(num_sampling_steps, diffusion_steps: int = 1000) -> int:
    """The number of respaced sampling steps, if it is a whole number from 1 to the diffusion's T; else ValueError."""
    if isinstance(num_sampling_steps, bool) or not isinstance(num_sampling_steps, numbers.Integral) \
            or not 1 <= num_sampling_steps <= diffusion_steps:
        raise ConfigError(f"the number of sampling steps must be a whole number from 1 to {diffusion_steps} "
                          f"(the diffusion's steps), got {num_sampling_steps!r}")
    return int(num_sampling_steps)


def check_guidance_interval(interval, diffusion_steps: int = 1000) -> tuple[int, int]:
    """(lo, hi) with 0 <= lo <= hi < T, or the whole range for None; else a one-line ConfigError."""
    if interval is None:
        return 0, diffusion_steps - 1
    try:
        lo, hi = (int(v) for v in interval)
    except (TypeError, ValueError):
        raise ConfigError(f"guidance_interval must be two timesteps (lo, hi), got {interval!r}") from None
    if not 0 <= lo <= hi < diffusion_steps:
        raise ConfigError(f"guidance_interval must satisfy 0 <= lo <= hi < {diffusion_steps}, got {interval!r}")
    return lo, hi


def sampling_guidance(cfg_scale, guidance_interval, train_config: dict) -> tuple[float, tuple[int, int] | None]:
    """The guidance to sample with: `cfg_scale` (None: the checkpoint's `sample_cfg_scale`, else 1) and the
    steps it applies to: `guidance_interval` if given, else the checkpoint's `sample_guidance_interval`, which
    goes with its scale, so a scale of your own guides every step unless you give an interval too."""
    scale = train_config.get("sample_cfg_scale", 1.0) if cfg_scale is None else cfg_scale
    if guidance_interval is None and cfg_scale is None:
        guidance_interval = train_config.get("sample_guidance_interval")
    return float(scale), (tuple(int(v) for v in guidance_interval) if guidance_interval is not None else None)


def guidance_text(cfg_scale: float, interval) -> str:
    """"cfg 3 for 0 <= t <= 300", "cfg 2" or "cfg 1": how a command reports the guidance it sampled with."""
    return f"cfg {cfg_scale:g}" + (f" for {interval[0]} <= t <= {interval[1]}" if interval and cfg_scale > 1 else "")


def sampling_steps(requested, train_config: dict) -> int:
    """`requested` steps, or the checkpoint's `sample_steps` (250) when None; checked against its T."""
    steps = train_config.get("sample_steps", 250) if requested is None else requested
    return check_sampling_steps(steps, train_config.get("diffusion_steps", 1000))


@torch.no_grad()
def sample_images(model: DiT, labels, *, num_sampling_steps: int = 250, sampler: str = "ddpm",
                  cfg_scale: float = 1.0, seed=0, guided_channels: int | None = None,
                  guidance_interval: tuple[int, int] | None = None, noise_schedule: str = "linear",
                  diffusion_steps: int = 1000, clip_denoised: bool = True,
                  eta: float = 0.0, precision: str = "auto", progress: bool = True,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
    """Generate one image per label. Returns a float tensor (N, C, I, I) in the model's data range.

    The same (model, labels, settings, seed) always gives the same images: the initial noise and every
    step's noise come from one `torch.Generator` seeded with `seed`. `seed` may also be a list with one
    seed per label: then sample i draws all its noise from its own generator, so it comes out the same
    whatever batch it is sampled in (how `ditlib.distributed` splits FID sampling over processes).
    `clip_denoised` clips x̂_0 to [−1, 1] at each step (right for pixels; the official latent sampler
    does not clip). `guidance_interval=(lo, hi)` guides only the steps whose timestep t (of the
    diffusion's T) lies in [lo, hi] and runs the other steps on the conditional half alone: cheaper, and
    better where guidance at high noise would pull every sample of a class toward one layout (Kynkäänniemi
    et al. 2024, "Applying guidance in a limited interval"; the DiT paper guides every step).
    `precision="auto"` runs the model in bf16 only where the hardware computes it natively
    (`ditlib.runtime.resolve_precision`), else fp32.
    """
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if cfg_scale < 1.0:
        raise ConfigError(f"cfg_scale must be >= 1 (1 = no guidance), got {cfg_scale}")
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device).precision          # once, not at every step
    labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    if labels.numel() == 0:
        raise ConfigError("no labels given: pass at least one class to sample")
    if int(labels.min()) < 0 or int(labels.max()) >= model.num_classes:
        raise ConfigError(f"labels must lie in [0, {model.num_classes - 1}]; got {labels.tolist()}")
    check_sampling_steps(num_sampling_steps, diffusion_steps)
    respacing = f"ddim{num_sampling_steps}" if sampler == "ddim" else str(num_sampling_steps)
    diffusion = create_diffusion(respacing, noise_schedule=noise_schedule, learn_sigma=model.learn_sigma,
                                 diffusion_steps=diffusion_steps)

    n = labels.shape[0]
    if isinstance(seed, (list, tuple, torch.Tensor)):
        seeds = [int(s) for s in seed]
        if len(seeds) != n:
            raise ConfigError(f"{len(seeds)} seeds for {n} labels: pass one seed, or one per label")
        generator = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    else:
        generator = torch.Generator(device=device).manual_seed(seed)
    shape = (n, model.in_channels, model.input_size, model.input_size)
    z = noise if noise is not None else randn(shape, generator=generator, device=device)
    if tuple(z.shape) != shape:
        raise ConfigError(f"noise has shape {tuple(z.shape)}, expected {shape}")
    use_cfg = cfg_scale > 1.0
    lo, hi = check_guidance_interval(guidance_interval, diffusion_steps)
    if use_cfg:
        if not model.has_null_class:
            raise ConfigError("this model was trained without class dropout, so it has no null class for guidance; use cfg_scale=1")
        z = torch.cat([z, z], dim=0)
        if isinstance(generator, list):         # the null-class half needs noise rows too; each sample's
            generator = generator + generator   # generator draws them, so nothing depends on the batch
        labels = torch.cat([labels, torch.full_like(labels, model.num_classes)], dim=0)
        forward = partial(model.forward_with_cfg, cfg_scale=cfg_scale, guided_channels=guided_channels)
    else:
        forward = model.forward

    def model_fn(x, t, y):
        with autocast(device, precision):
            if not use_cfg or guidance_interval is None or lo <= int(t[0]) <= hi:   # all rows: one step
                return forward(x, t, y).float()
            out = model.forward(x[:n], t[:n], y[:n]).float()             # outside the interval: no guidance,
            return torch.cat([out, out], dim=0)                          # so the null half is not computed

    was_training = model.training
    model.eval()
    loop = diffusion.ddim_sample_loop if sampler == "ddim" else diffusion.p_sample_loop
    extra = {"eta": eta} if sampler == "ddim" else {}
    samples = loop(model_fn, z.shape, noise=z, clip_denoised=clip_denoised, model_kwargs={"y": labels},
                   device=device, progress=progress, generator=generator, **extra)
    model.train(was_training)
    return samples[:n] if use_cfg else samples


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


#################################################################################
#                  Loading trained weights: ditlib's and the official            #
#################################################################################

def load_model(path, which: str = "ema", device: torch.device | str = "cpu"):
    """Build the DiT (or U-Net baseline) stored in a ditlib checkpoint and load its `which` ("ema" or "model") weights.

    Returns (model in eval mode, meta). Weights-only exports have only "ema".
    """
    tensors, meta = load_checkpoint(path)
    state = subdict(tensors, which)
    if not state:
        kinds = sorted({k.split(".", 1)[0] for k in tensors} & {"model", "ema"})
        raise CheckpointError(f"{checkpoint_stem(path)} holds no {which!r} weights (it has: {kinds or 'none'})")
    if "model_config" not in meta:
        raise CheckpointError(f"{checkpoint_stem(path)}.json has no model_config: cannot rebuild the model")
    model = build_backbone(model_config_from_dict(meta["model_config"]))   # a DiT, or the U-Net baseline
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"the weights in {checkpoint_stem(path)} do not fit its model_config: {err}") from None
    return model.to(device).eval(), meta


# The official DiT checkpoints (facebookresearch/DiT) ----------------------------

def _read_pickled_state_dict(path) -> dict:
    """torch.load with weights_only=True: tensors, containers and numbers only, so a checkpoint cannot run
    code while it is read. argparse.Namespace (the "args" of official training checkpoints) is allowed too."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[0] if lines else
                      type(err).__name__)
        raise CheckpointError(f"{path} was refused: it holds more than tensors and plain containers, and reading it "
                              f"could run code ({reason}). Never unpickle it fully unless you trust its source") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a state dict")
    for key in ("ema", "model"):        # a training checkpoint {"model", "ema", "opt", "args"}: sample with the EMA
        if isinstance(data.get(key), dict):
            return data[key]
    return data


def infer_dit_config(state: dict, model_name: str | None = None) -> DiTConfig:
    """The `DiTConfig` of an adaLN-Zero state dict in the official layout.

    From the shapes: depth (number of blocks), hidden size, patch size and input channels
    (x_embedder.proj.weight, D×C×p×p), input size (√(pos_embed length)·p), classes (label-table rows − 1,
    the last row being the null class), learn_sigma (final linear outputs 2·p²·C rather than p²·C) and
    the MLP ratio. The head count is not visible in any shape: it comes from `model_name`, else from the
    registry size with this depth and width (`ditlib.models.MODEL_SIZES`).
    """
    needed = ("x_embedder.proj.weight", "pos_embed", "y_embedder.embedding_table.weight", "final_layer.linear.weight",
              "blocks.0.adaLN_modulation.1.weight", "blocks.0.mlp.fc1.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(f"not an adaLN-Zero DiT state dict in the official layout: missing {missing}")
    hidden, in_channels, patch, _ = state["x_embedder.proj.weight"].shape
    tokens = state["pos_embed"].shape[1]
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise CheckpointError(f"pos_embed has {tokens} positions, not a square grid")
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    fields = dict(input_size=grid * patch, in_channels=in_channels, mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / hidden,
                  num_classes=state["y_embedder.embedding_table.weight"].shape[0] - 1, class_dropout_prob=0.1,
                  learn_sigma=state["final_layer.linear.weight"].shape[0] == 2 * patch * patch * in_channels)
    if model_name is not None:
        config = DiTConfig.from_name(model_name, **fields)
        if (config.depth, config.hidden_size, config.patch_size) != (depth, hidden, patch):
            raise CheckpointError(f"the weights are depth {depth}, width {hidden}, patch {patch}, not {model_name} "
                                  f"(depth {config.depth}, width {config.hidden_size}, patch {config.patch_size})")
        return config
    heads = [h for d, w, h in MODEL_SIZES.values() if (d, w) == (depth, hidden)]
    if not heads:
        raise CheckpointError(f"depth {depth} and width {hidden} match no registered size, so the number of "
                              "heads is unknown: pass model_name (or build DiT(...) yourself)")
    return DiTConfig(depth=depth, hidden_size=hidden, num_heads=heads[0], patch_size=patch, **fields)


def load_official_dit(path, model_name: str | None = None, device: torch.device | str = "cpu"):
    """A ready `DiT` (eval mode) from an official checkpoint such as `DiT-XL-2-256x256.pt` or `-512x512.pt`.

    The file is read with `torch.load(weights_only=True)`, never a full unpickle: anything but tensors
    and plain containers is refused with a `CheckpointError` before any of it runs. A plain state dict
    (the released files) or a training checkpoint (`{"model", "ema", "opt", "args"}`; the EMA weights are
    used) is accepted. The config is inferred from the shapes (`infer_dit_config`) unless `model_name`
    (e.g. "DiT-XL/2") is given, and the weights load with strict=True.
    """
    state = _read_pickled_state_dict(path)
    if not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors")
    model = DiT(infer_dit_config(state, model_name))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"the weights in {path} do not fit {model_name or 'the inferred config'}: {err}") from None
    return model.to(device).eval()


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
        device = default_device(device) if not isinstance(device, torch.device) else device
        shipped = DATA_DIR / "checkpoints" / str(name_or_path)
        path = shipped if str(name_or_path) in SHIPPED_MODELS else Path(str(name_or_path)).expanduser()
        model, meta = load_model(path, which=which, device=device)
        codec = None
        vae_name = meta.get("train_config", {}).get("vae")
        if vae_name:
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
        """One image per label, as pixels (N, C, H, W) in [−1, 1]. Other kwargs go to `sample_images`.

        Without `cfg_scale` the checkpoint's guidance is used: its scale with its interval, if it stores one.
        A `cfg_scale` of your own guides every step unless you pass a `guidance_interval` too."""
        cfg = self.train_config
        cfg_scale, interval = sampling_guidance(cfg_scale, kwargs.pop("guidance_interval", None), cfg)
        samples = sample_images(
            self.model, labels, num_sampling_steps=sampling_steps(num_sampling_steps, cfg), cfg_scale=cfg_scale,
            guidance_interval=interval, sampler=sampler, seed=seed, progress=progress,
            noise_schedule=cfg.get("noise_schedule", "linear"), diffusion_steps=cfg.get("diffusion_steps", 1000),
            clip_denoised=kwargs.pop("clip_denoised", self.codec is None), **kwargs)
        if self.codec is None:
            return samples
        with torch.no_grad():
            return self.codec.decode(samples).clamp(-1, 1)
