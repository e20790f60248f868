"""The U-Net baseline: diffusers' `UNet2DModel`, class-conditional, behind the same interface as `DiT`.

The paper's claim (§1, §5, Table 4) is that a transformer can replace the U-Net of latent diffusion (LDM,
Rombach et al.; the ADM U-Net of Dhariwal & Nichol before it) and then improves as its Gflops grow. To test
it, the course needs a U-Net trained exactly as its DiTs are: the same diffusion, loss, recipe, checkpoints,
sampler and FID. This module wraps the field's own U-Net, diffusers' `UNet2DModel`, instead of writing one:

* **(x_t, t, y) -> ε and Σ**, like `DiT.forward`: `out_channels = 2·in_channels` when `learn_sigma`, so the
  U-Net learns the Σ interpolation values of the hybrid loss (§2) as DiT does;
* **class conditioning** through `UNet2DModel`'s own class embedding (`num_class_embeds`), a table whose
  extra last row is the null class ∅: labels are replaced by ∅ with probability `class_dropout_prob` in
  training (or where `force_drop_ids` says, as `ditlib.train` does), so classifier-free guidance (§4) works
  with `forward_with_cfg`; the class vector is added to the timestep embedding (ADM's way);
* **the ADM block layout**: residual blocks whose GroupNorm is modulated by the timestep-and-class vector
  (`resnet_time_scale_shift="scale_shift"`, ADM's AdaGN), self-attention at the lower resolutions, one
  down/upsampling per level, skip connections from each down block to its up block.

The sizes (`UNET_SIZES`) differ only in width and are matched in forward Gflops to the course's DiTs on
8×8×4 latents (`ditlib.flops.counted_gflops`, one counter for both families): UNet-S ~ DiT-XS/2,
UNet-M ~ DiT-T/2, UNet-L ~ DiT-M/2.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn

from .errors import ConfigError, UnknownNameError
from .layers import guided_output

FAMILY = "U-Net"


#################################################################################
#                                  The config                                   #
#################################################################################

@dataclass(frozen=True)
class UNetConfig:
    """Everything that fixes a U-Net's function and weights (saved with checkpoints, with "family": "U-Net").

        input_size, in_channels, num_classes, class_dropout_prob, learn_sigma: as in `DiTConfig`.
        width: channels of the first level; level i has width·channel_mult[i] channels.
        channel_mult: one entry per resolution level (each level after the first halves the resolution).
        attention_levels: per level, whether its blocks have self-attention (ADM: the low resolutions).
        layers_per_block: residual blocks per level on the way down (one more on the way up, diffusers' layout).
        channels_per_group: GroupNorm group size at the first level (ADM: 32 groups of 4 channels at width 128);
            diffusers uses one number of groups at every level, so wider levels have wider groups.
        heads: attention heads at the widest level (and in the middle block).
    """
    input_size: int = 8
    in_channels: int = 4
    width: int = 44
    channel_mult: tuple[int, ...] = (1, 2, 2)
    attention_levels: tuple[bool, ...] = (False, True, True)
    layers_per_block: int = 2
    channels_per_group: int = 4
    heads: int = 2
    num_classes: int = 10
    class_dropout_prob: float = 0.1
    learn_sigma: bool = True

    def __post_init__(self):
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))   # JSON gives lists
        object.__setattr__(self, "attention_levels", tuple(bool(a) for a in self.attention_levels))
        if len(self.attention_levels) != len(self.channel_mult):
            raise ConfigError(f"attention_levels has {len(self.attention_levels)} entries for "
                              f"{len(self.channel_mult)} levels (channel_mult); give one per level")
        if self.input_size % 2 ** (len(self.channel_mult) - 1):
            raise ConfigError(f"{len(self.channel_mult)} levels halve the input {len(self.channel_mult) - 1} times: "
                              f"input_size={self.input_size} must be divisible by {2 ** (len(self.channel_mult) - 1)}")
        if self.width % self.channels_per_group or self.block_out_channels[-1] % self.heads:
            raise ConfigError(f"width {self.width} must divide into groups of {self.channels_per_group} channels and "
                              f"{self.block_out_channels[-1]} channels into {self.heads} heads; choose values that do")
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {self.num_classes}")

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def block_out_channels(self) -> tuple[int, ...]:
        return tuple(self.width * m for m in self.channel_mult)

    @classmethod
    def from_name(cls, name: str, **fields) -> "UNetConfig":
        """The registered size `name` ("UNet-S", "UNet-M", "UNet-L") with any other field, e.g. `in_channels=1`."""
        if name not in UNet_models:
            raise UnknownNameError(f"unknown U-Net config {name!r}; choose one of: {', '.join(UNet_models)}")
        if "width" in fields:
            raise TypeError("width is fixed by the config name; use UNetConfig(...) directly to change it")
        return cls(width=UNET_SIZES[name.removeprefix("UNet-")], **fields)

    @classmethod
    def from_dict(cls, values: dict) -> "UNetConfig":
        """From `to_dict()` (a checkpoint's "model_config")."""
        values = {k: v for k, v in values.items() if k != "family"}
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown U-Net config fields: {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return {"family": FAMILY, **dataclasses.asdict(self)}

    def replace(self, **changes) -> "UNetConfig":
        return dataclasses.replace(self, **changes)


#################################################################################
#                   The model: diffusers' U-Net, DiT's interface                 #
#################################################################################

class UNet(nn.Module):
    """Class-conditional `diffusers.UNet2DModel` with DiT's interface: `forward(x, t, y, force_drop_ids)` and
    `forward_with_cfg(x, t, y, cfg_scale)`, the same attribute names (`input_size`, `in_channels`,
    `out_channels`, `num_classes`, `learn_sigma`, `class_dropout_prob`, `config`), so that `ditlib.train`,
    `ditlib.sample`, the checkpoints and FID take it unchanged. x: (N, C, I, I) -> (N, C_out, I, I).
    """

    def __init__(self, config: UNetConfig | None = None, **fields):
        super().__init__()
        from diffusers import UNet2DModel

        if config is not None and fields:
            raise TypeError("pass either a UNetConfig or its fields as keywords, not both")
        config = config if config is not None else UNetConfig(**fields)
        self.config = config
        self.input_size, self.in_channels, self.out_channels = config.input_size, config.in_channels, config.out_channels
        self.num_classes, self.learn_sigma = config.num_classes, config.learn_sigma
        self.class_dropout_prob = config.class_dropout_prob
        null_rows = int(config.class_dropout_prob > 0)           # the null class ∅ = num_classes, as in DiT
        self.num_class_embeds = config.num_classes + null_rows
        self.unet = UNet2DModel(
            sample_size=config.input_size, in_channels=config.in_channels, out_channels=config.out_channels,
            block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels)),
            norm_num_groups=config.width // config.channels_per_group,
            attention_head_dim=config.width * config.channel_mult[-1] // config.heads,
            resnet_time_scale_shift="scale_shift", num_class_embeds=self.num_class_embeds)

    @property
    def gradient_checkpointing(self) -> bool:
        return bool(getattr(self.unet, "gradient_checkpointing", False))

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enabled: bool) -> None:
        if enabled:
            self.unet.enable_gradient_checkpointing()
        elif self.gradient_checkpointing:
            self.unet.disable_gradient_checkpointing()

    @property
    def has_null_class(self) -> bool:
        """Whether the class table has the null row that classifier-free guidance needs."""
        return self.num_class_embeds > self.num_classes

    def check_inputs(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> None:
        """Refuse inputs this model cannot take, with a message saying why (called once at the entry points)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.input_size, self.input_size):
            raise ConfigError(f"x must have shape (N, {self.in_channels}, {self.input_size}, {self.input_size}); "
                              f"got {tuple(x.shape)}")
        if t.shape != (x.shape[0],) or y.shape != (x.shape[0],):
            raise ConfigError(f"t and y must have shape ({x.shape[0]},), one per image; got {tuple(t.shape)} and {tuple(y.shape)}")
        if y.dtype.is_floating_point:
            raise ConfigError("y must hold integer class labels")
        if y.numel() and y.device.type != "meta" and (int(y.min()) < 0 or int(y.max()) >= self.num_class_embeds):
            raise ConfigError(f"class labels must lie in [0, {self.num_class_embeds - 1}]; "
                              f"got min {int(y.min())}, max {int(y.max())}")

    def drop_labels(self, y: torch.Tensor, force_drop_ids: torch.Tensor | None) -> torch.Tensor:
        """y with the null class where a label is dropped (§4): at random in training, or where force_drop_ids == 1."""
        if force_drop_ids is not None:
            drop = force_drop_ids == 1
        elif self.training and self.class_dropout_prob > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.class_dropout_prob
        else:
            return y
        return torch.where(drop, torch.full_like(y, self.num_classes), y)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C, I, I) noisy input; t: (N,) timesteps; y: (N,) labels -> (N, C_out, I, I)."""
        y = self.drop_labels(y, force_drop_ids)                                # (N,), ∅ = num_classes
        return self.unet(x, t, class_labels=y, return_dict=False)[0]          # (N, C_out, I, I)

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float,
                         guided_channels: int | None = None) -> torch.Tensor:
        """Classifier-free guidance (§4), exactly as `DiT.forward_with_cfg`: the batch is [conditional half;
        null-class half], ε̂ = ε(x, ∅) + s·(ε(x, y) − ε(x, ∅)) on the first `guided_channels` ε channels."""
        if x.shape[0] % 2:
            raise ConfigError("forward_with_cfg needs an even batch: [conditional; unconditional] halves")
        half = x[: len(x) // 2]
        model_out = self.forward(torch.cat([half, half], dim=0), t, y)        # (N, C_out, I, I)
        return guided_output(model_out, self.in_channels, cfg_scale, guided_channels)


#################################################################################
#                                  U-Net configs                                #
#################################################################################

# Width of the first level; with channel_mult (1, 2, 2), two residual blocks per level and attention at 4×4 and
# 2×2, one forward pass of one 8×8×4 latent costs (ditlib.flops.counted_gflops, the paper's convention):
#   UNet-S 24 -> 0.0138 Gflops (DiT-XS/2: 0.0134, +3 %), UNet-M 44 -> 0.0460 (DiT-T/2: 0.0447, +3 %),
#   UNet-L 64 -> 0.0969 (DiT-M/2: 0.1054, -8 %). tests/test_unet.py checks the match within 15 %.
UNET_SIZES = {"S": 24, "M": 44, "L": 64}
UNET_MATCHED_DIT = {"UNet-S": "DiT-XS/2", "UNet-M": "DiT-T/2", "UNet-L": "DiT-M/2"}


def _constructor(name: str):
    def build(**fields) -> UNet:
        return UNet(UNetConfig.from_name(name, **fields))
    build.__doc__ = f"{name}: width {UNET_SIZES[name.removeprefix('UNet-')]}, matched to {UNET_MATCHED_DIT[name]}."
    return build


UNet_models = {f"UNet-{size}": _constructor(f"UNet-{size}") for size in UNET_SIZES}
