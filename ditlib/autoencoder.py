"""The KL-regularised autoencoder of latent diffusion, in plain PyTorch (no diffusers import).

Latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models")
compresses images with a convolutional autoencoder whose encoder outputs a diagonal Gaussian
q(z|x) = N(μ(x), σ(x)²), trained with a reconstruction loss plus a small KL(q(z|x) ‖ N(0, I)) penalty.
DiT trains on those latents instead of pixels (DiT §3.1 "Latent diffusion models"): the Stable
Diffusion VAE turns 256×256×3 images into 32×32×4 latents, which makes a transformer over patches
affordable. This module implements that autoencoder with the Stable Diffusion VAE's layout:

    encoder:  conv_in -> [DownEncoderBlock: resnets, stride-2 conv] × n -> mid (resnet, attention, resnet)
              -> GroupNorm, SiLU, conv_out (2·latent_channels: mean and log-variance) -> quant_conv (1×1)
    decoder:  post_quant_conv (1×1) -> conv_in -> mid (resnet, attention, resnet)
              -> [UpDecoderBlock: resnets, nearest ×2 + conv] × n (channels reversed) -> GroupNorm, SiLU, conv_out

It is a drop-in replacement for how ditlib uses `diffusers.AutoencoderKL`: the constructor takes the
same config keys, the state_dict has the same key names and shapes (so diffusers checkpoints and
ditlib's VAE checkpoints load with `strict=True`), and outputs agree with diffusers' to float error.
It exists because `import diffusers` costs seconds (it pulls in `torch._dynamo`), which a command that
only needs to decode latents should not pay. Supported: "DownEncoderBlock2D" / "UpDecoderBlock2D"
blocks, SiLU, group norm (no spatial norm), no tiling or slicing.

Architecture facts (all as in diffusers): every GroupNorm has eps 1e-6; residual blocks and the
attention have output scale 1 (no rescaling); the mid-block attention is single-head with head
dimension = channels, pre-normed by a GroupNorm, with a residual connection; the encoder's
downsampling pads (0, 1, 0, 1) (right and bottom only) before a 3×3 stride-2 convolution without
padding; the decoder's up blocks have layers_per_block + 1 resnets.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

GROUP_NORM_EPS = 1e-6

# Config keys, in diffusers' order (so a serialised config reads the same), with diffusers' defaults.
_DEFAULTS = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",),
    "up_block_types": ("UpDecoderBlock2D",),
    "block_out_channels": (64,),
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 32,
    "scaling_factor": 0.18215,
    "shift_factor": None,         # kept for serialisation; not used here
    "latents_mean": None,         # kept; not used
    "latents_std": None,          # kept; not used
    "force_upcast": True,         # kept; not used
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}
# Keys that describe the model without changing its modules: `register_to_config` may set these.
_METADATA_KEYS = ("sample_size", "scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast")
_SEQUENCE_KEYS = ("down_block_types", "up_block_types", "block_out_channels", "latents_mean", "latents_std")


class AutoencoderKLConfig(Mapping):
    """A read-only mapping of an `AutoencoderKL`'s config with attribute access (`config.latent_channels`),
    like diffusers' `FrozenDict` config: `dict(config)`, `config.items()` and `config.to_dict()` work."""

    def __init__(self, values: dict):
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, key):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"AutoencoderKL config has no key {name!r}") from None

    def __setattr__(self, name, value):
        raise AttributeError("the config is read-only; use AutoencoderKL.register_to_config(...)")

    def __repr__(self) -> str:
        return f"AutoencoderKLConfig({self._values!r})"

    def to_dict(self) -> dict:
        """A plain dict copy (sequences as lists: JSON-ready)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._values.items()}


#################################################################################
#                   The posterior q(z|x) and the output records                  #
#################################################################################

class DiagonalGaussianDistribution:
    """q(z|x) = N(mean, std²) from the encoder's moments (B, 2·C, h, w): mean, then log-variance.

    As in diffusers, the log-variance is clamped to [-30, 20]; `parameters` keeps the unclamped moments.
    """

    def __init__(self, parameters: torch.Tensor):
        self.parameters = parameters                                   # (B, 2C, h, w)
        self.mean, logvar = parameters.chunk(2, dim=1)                 # (B, C, h, w) each
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std·ε, ε ~ N(0, I) drawn on `generator`'s device (or the parameters'), in their dtype."""
        device = generator.device if generator is not None else self.parameters.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.parameters.dtype)
        return self.mean + self.std * eps.to(self.parameters.device)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q ‖ N(0, I)) per sample, (B,)."""
        return 0.5 * torch.sum(self.mean.square() + self.var - 1.0 - self.logvar, dim=[1, 2, 3])


class AutoencoderKLOutput(NamedTuple):
    latent_dist: DiagonalGaussianDistribution


class DecoderOutput(NamedTuple):
    sample: torch.Tensor                                               # (B, C_out, H, W)


#################################################################################
#                                 Building blocks                                #
#################################################################################

def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=GROUP_NORM_EPS, affine=True)


class ResnetBlock(nn.Module):
    """x + conv2(SiLU(norm2(conv1(SiLU(norm1(x)))))), the skip through a 1×1 conv when channels change.
    No time embedding, no dropout; (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = _group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = _group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the h·w positions, pre-normed, with a residual connection.
    (B, C, H, W) -> (B, C, H, W); head dimension C, softmax scale 1/√C."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = _group_norm(channels, groups)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])   # "to_out.0": diffusers' [Linear, Dropout]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.group_norm(x.view(b, c, height * width)).transpose(1, 2)     # (B, N, C), N = H·W
        q, k, v = (proj(h).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))   # (B, 1, N, C)
        h = F.scaled_dot_product_attention(q, k, v).squeeze(1)                # (B, N, C)
        h = self.to_out[0](h).transpose(1, 2).reshape(b, c, height, width)    # (B, C, H, W), a channels-last view
        # `h + x` (not `x + h`): the sum then keeps h's channels-last strides, as in diffusers, so the
        # convolutions that follow pick the same kernels and the outputs match diffusers' bit for bit.
        return h + x


class Downsample(nn.Module):
    """Pad right and bottom by one, then a 3×3 stride-2 conv: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # After the mid-block attention x is channels-last; nearest upsampling of such tensors is known to
        # fail for large batches / outputs (diffusers issues 984, pytorch 141831), so only then is it made
        # contiguous, exactly when diffusers does (which keeps the memory layout, hence the numbers, equal).
        if x.shape[0] >= 64 or x.numel() * 2 > 2 ** 31:
            x = x.contiguous()
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownEncoderBlock(nn.Module):
    """`num_layers` resnets (the first maps in -> out channels), then optionally a Downsample."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups)
                                      for i in range(num_layers)])
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock(nn.Module):
    """`num_layers` resnets (the first maps in -> out channels), then optionally an Upsample."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups)
                                      for i in range(num_layers)])
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    """resnet -> (attention) -> resnet at constant channels and resolution."""

    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        # built in diffusers' order (resnet, attention, resnet) so that a seed gives the same initial weights
        first = ResnetBlock(channels, channels, groups)
        self.attentions = nn.ModuleList([AttentionBlock(channels, groups)] if attention else [])
        self.resnets = nn.ModuleList([first, ResnetBlock(channels, channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)


class Encoder(nn.Module):
    """(B, C_in, H, W) -> moments (B, 2·latent_channels, H/f, W/f), f = 2^(len(block_out_channels) − 1)."""

    def __init__(self, in_channels: int, latent_channels: int, block_out_channels: tuple, layers_per_block: int,
                 groups: int, mid_attention: bool):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, stride=1, padding=1)
        last = len(block_out_channels) - 1
        self.down_blocks = nn.ModuleList([
            DownEncoderBlock(block_out_channels[max(i - 1, 0)], channels, layers_per_block, groups, downsample=i < last)
            for i, channels in enumerate(block_out_channels)])
        self.mid_block = MidBlock(block_out_channels[-1], groups, mid_attention)
        self.conv_norm_out = _group_norm(block_out_channels[-1], groups)
        self.conv_out = nn.Conv2d(block_out_channels[-1], 2 * latent_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)                                            # (B, c_0, H, W)
        for block in self.down_blocks:
            h = block(h)                                               # halves H, W except the last
        h = self.mid_block(h)                                          # (B, c_last, H/f, W/f)
        return self.conv_out(F.silu(self.conv_norm_out(h)))            # (B, 2·latent, H/f, W/f)


class Decoder(nn.Module):
    """z (B, latent_channels, h, w) -> (B, C_out, h·f, w·f), the channels of `block_out_channels` reversed."""

    def __init__(self, latent_channels: int, out_channels: int, block_out_channels: tuple, layers_per_block: int,
                 groups: int, mid_attention: bool):
        super().__init__()
        reversed_channels = tuple(reversed(block_out_channels))
        self.conv_in = nn.Conv2d(latent_channels, reversed_channels[0], kernel_size=3, stride=1, padding=1)
        # diffusers' order: up_blocks is registered before mid_block (state_dict order) but filled after it
        # (the order the initial weights are drawn in)
        self.up_blocks = nn.ModuleList()
        self.mid_block = MidBlock(reversed_channels[0], groups, mid_attention)
        last = len(reversed_channels) - 1
        self.up_blocks.extend(
            UpDecoderBlock(reversed_channels[max(i - 1, 0)], channels, layers_per_block + 1, groups, upsample=i < last)
            for i, channels in enumerate(reversed_channels))
        self.conv_norm_out = _group_norm(block_out_channels[0], groups)
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z))                            # (B, c_last, h, w)
        for block in self.up_blocks:
            h = block(h)                                               # doubles h, w except the last
        return self.conv_out(F.silu(self.conv_norm_out(h)))            # (B, C_out, h·f, w·f)


#################################################################################
#                                 The autoencoder                                #
#################################################################################

class AutoencoderKL(nn.Module):
    """The Stable Diffusion VAE architecture, configured by diffusers' `AutoencoderKL` config keys.

    `encode(x)` maps images (B, in_channels, H, W) to an output whose `latent_dist` is q(z|x)
    (`.parameters` (B, 2·latent_channels, h, w), `.mean`, `.std`, `.sample()`); `decode(z)` maps latents
    (B, latent_channels, h, w) to an output whose `.sample` is (B, out_channels, H, W), with
    h = H / 2^(len(block_out_channels) − 1). `config` holds every config value (read-only; change the
    descriptive ones such as `scaling_factor` with `register_to_config`).
    """

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3,
                 down_block_types: tuple = ("DownEncoderBlock2D",), up_block_types: tuple = ("UpDecoderBlock2D",),
                 block_out_channels: tuple = (64,), layers_per_block: int = 1, act_fn: str = "silu",
                 latent_channels: int = 4, norm_num_groups: int = 32, sample_size: int = 32,
                 scaling_factor: float = 0.18215, shift_factor: float | None = None, latents_mean=None,
                 latents_std=None, force_upcast: bool = True, use_quant_conv: bool = True,
                 use_post_quant_conv: bool = True, mid_block_add_attention: bool = True, **unknown):
        if unknown:
            raise TypeError(f"AutoencoderKL got unknown config keys: {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(_DEFAULTS)})")
        super().__init__()
        values = dict(locals())
        config = {key: values[key] for key in _DEFAULTS}
        for key in _SEQUENCE_KEYS:
            if config[key] is not None:
                config[key] = tuple(config[key])
        config["block_out_channels"] = tuple(int(c) for c in config["block_out_channels"])
        _check(config)
        self._config = AutoencoderKLConfig(config)

        channels, groups = config["block_out_channels"], int(norm_num_groups)
        self.encoder = Encoder(in_channels, latent_channels, channels, layers_per_block, groups,
                               bool(mid_block_add_attention))
        self.decoder = Decoder(latent_channels, out_channels, channels, layers_per_block, groups,
                               bool(mid_block_add_attention))
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1) if use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else None

    @classmethod
    def from_config(cls, config) -> "AutoencoderKL":
        """Build from a config mapping (a ditlib checkpoint's "vae_config", a diffusers config.json's
        contents or a model's `.config`); keys starting with "_" (diffusers' `_class_name`, ...) are ignored."""
        return cls(**{k: v for k, v in dict(config).items() if not str(k).startswith("_")})

    @property
    def config(self) -> AutoencoderKLConfig:
        return self._config

    def register_to_config(self, **kwargs) -> None:
        """Update descriptive config values (scaling_factor, shift_factor, latents_mean, latents_std,
        force_upcast, sample_size). Architecture keys may only be "set" to their current value."""
        unknown = sorted(set(kwargs) - set(_DEFAULTS))
        if unknown:
            raise TypeError(f"AutoencoderKL has no config keys {', '.join(unknown)}")
        values = dict(self._config)
        for key, value in kwargs.items():
            if key in _SEQUENCE_KEYS and value is not None:
                value = tuple(value)
            if key not in _METADATA_KEYS and value != values[key]:
                raise ConfigError(f"register_to_config cannot change the architecture key {key!r} "
                                  f"({values[key]!r} -> {value!r}); build a new AutoencoderKL")
            values[key] = value
        self._config = AutoencoderKLConfig(values)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """Images (B, C_in, H, W) -> `AutoencoderKLOutput(latent_dist=q(z|x))` (or a 1-tuple)."""
        moments = self.encoder(x)                                      # (B, 2·latent, h, w)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        posterior = DiagonalGaussianDistribution(moments)
        return AutoencoderKLOutput(posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        """Latents (B, latent, h, w) -> `DecoderOutput(sample=(B, C_out, H, W))` (or a 1-tuple)."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        images = self.decoder(z)
        return DecoderOutput(images) if return_dict else (images,)

    def forward(self, sample: torch.Tensor, sample_posterior: bool = False, return_dict: bool = True,
                generator: torch.Generator | None = None):
        """D(E(x)): decode the posterior mean, or a sample of it with `sample_posterior`."""
        q = self.encode(sample).latent_dist
        images = self.decode(q.sample(generator) if sample_posterior else q.mode()).sample
        return DecoderOutput(images) if return_dict else (images,)

    def extra_repr(self) -> str:
        c = self._config
        return (f"in={c.in_channels}, out={c.out_channels}, latent={c.latent_channels}, "
                f"channels={c.block_out_channels}, layers_per_block={c.layers_per_block}")


def _check(config: dict) -> None:
    depth = len(config["block_out_channels"])
    if depth < 1:
        raise ConfigError("block_out_channels must have at least one entry")
    for key, supported in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        others = sorted({t for t in config[key] if t != supported})
        if others:
            raise ConfigError(f"ditlib's AutoencoderKL supports only {supported!r} in {key}, got {others}; "
                              f"use diffusers.AutoencoderKL for other block types")
        if len(config[key]) != depth:
            raise ConfigError(f"{key} has {len(config[key])} entries but block_out_channels has {depth}")
    if config["act_fn"] != "silu":
        raise ConfigError(f"ditlib's AutoencoderKL supports only act_fn='silu', got {config['act_fn']!r}")
    if int(config["layers_per_block"]) < 1:
        raise ConfigError(f"layers_per_block must be at least 1, got {config['layers_per_block']}")
