"""Training configurations: one named, explicit entry per experiment (model + data + optimisation).

`python -m ditlib train --config NAME` takes a name from `TRAIN_CONFIGS`; `python -m ditlib configs`
lists them with parameter counts and Gflops. The model architectures themselves are the registries
`ditlib.models.DiT_models` and, for the U-Net baseline, `ditlib.unet.UNet_models`; a training config names one
of them, and `build_backbone(config.model_config())` builds it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import ConfigError, UnknownNameError
from .models import DiT, DiT_models, DiTConfig
from .unet import FAMILY as UNET_FAMILY
from .unet import UNet, UNet_models, UNetConfig


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the output folder.

    Defaults are the paper's (§4 "Training"): AdamW, lr 1e-4, no weight decay, batch 256, EMA 0.9999,
    horizontal flips, class dropout 0.1, learned Σ, linear schedule over 1000 steps.
    """
    name: str
    model: str                          # a key of ditlib.models.DiT_models (or of ditlib.unet.UNet_models)
    block: str = "adaLN-Zero"           # conditioning design (§3.2): one of ditlib.models.BLOCK_DESIGNS
    dataset: str = "fashion-mnist"      # "fashion-mnist" or a path to an image folder (one sub-folder per class)
    vae: str | None = None              # latent diffusion (§3.1): a VAE name/path for ditlib.vae.load_vae; None = pixels
    image_size: int = 32                # model input size (pixels, or latent size for latent configs)
    in_channels: int = 1
    num_classes: int = 10
    class_dropout_prob: float = 0.1
    learn_sigma: bool = True
    noise_schedule: str = "linear"
    diffusion_steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0               # linear lr warm-up (0 = none, as in the paper)
    lr_schedule: str = "constant"       # "constant" (the paper's) | "cosine": decay to lr·final_lr_ratio at max_steps
    final_lr_ratio: float = 0.1         # the cosine schedule's last lr, as a fraction of lr
    min_snr_gamma: float | None = None  # None: the paper's equal weighting of t; γ (e.g. 5): min-SNR-γ weighting
                                        # of the ε loss (Hang et al. 2023; ditlib.diffusion.min_snr_weight)
    grad_clip: float | None = None      # max gradient norm (None = no clipping, as in the paper)
    ema_decay: float = 0.9999
    ema_warmup: bool = False            # decay_k = min(ema_decay, (1 + k) / (10 + k)): useful for short runs
    hflip: bool = True
    precision: str = "auto"             # "auto" (bf16 where the hardware computes it natively, else fp32;
                                        # ditlib.runtime.resolve_precision) | "fp32" | "bf16" | "fp16" (+ a gradient scaler)
    tf32: bool = False                  # let float32 matmuls/convolutions use TF32 (Ampere+ GPUs; the official code does)
    grad_checkpointing: bool = False    # recompute each block's activations in backward: less memory, one more forward
    compile: bool | str = "auto"        # torch.compile the model + loss; "auto": in one process on CPU/CUDA for
                                        # runs of ≥ ditlib.train.COMPILE_MIN_STEPS steps (compiling costs 20–30 s)
    fused_adamw: bool = True            # AdamW's fused kernel on CPU and CUDA (False: the foreach kernel)
    num_workers: int = 0                # data-loading processes per rank (decoding image folders); 0 = none
    cache_latents: bool = True          # latent configs: encode the dataset once (ditlib.latents) or every batch
    max_steps: int = 400_000
    log_every: int = 50
    ckpt_every: int = 1000
    sample_every: int = 0               # 0 = no sample grids during training
    snapshot_every: int = 0             # > 0: EMA weights every this many steps in out_dir/snapshots/ (all kept;
                                        # experiments/quality_curve.py measures FID on them)
    seed: int = 0
    # Sampling defaults stored with the checkpoint (the `sample` command can override them).
    sample_steps: int = 250
    sample_cfg_scale: float = 1.5
    sample_guidance_interval: tuple[int, int] | None = None   # guide only LO <= t <= HI (None: every step, as the
                                        # paper; Kynkäänniemi et al. 2024; ditlib.sample.sample_images)
    notes: str = ""

    def __post_init__(self):
        if self.sample_guidance_interval is not None:   # JSON gives a list; keep the config hashable and comparable
            object.__setattr__(self, "sample_guidance_interval", tuple(int(v) for v in self.sample_guidance_interval))

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown training-config fields: {sorted(unknown)}")
        return cls(**data)

    def dit_config(self) -> DiTConfig:
        """The model this config trains, `DiT(config.dit_config())`: the size `model` on this data and design."""
        return DiTConfig.from_name(self.model, input_size=self.image_size, in_channels=self.in_channels,
                                   num_classes=self.num_classes, class_dropout_prob=self.class_dropout_prob,
                                   learn_sigma=self.learn_sigma, block=self.block)

    @property
    def family(self) -> str:
        """ "DiT" or "U-Net" (the baseline of ditlib.unet)."""
        return UNET_FAMILY if self.model in UNet_models else "DiT"

    def model_config(self) -> DiTConfig | UNetConfig:
        """The config of the model this trains, of either family: `build_backbone(config.model_config())`."""
        if self.model in UNet_models:
            return UNetConfig.from_name(self.model, input_size=self.image_size, in_channels=self.in_channels,
                                        num_classes=self.num_classes, class_dropout_prob=self.class_dropout_prob,
                                        learn_sigma=self.learn_sigma)
        if self.model not in DiT_models:
            raise UnknownNameError(f"unknown model {self.model!r}; choose a DiT ({', '.join(DiT_models)}) "
                                   f"or a U-Net ({', '.join(UNet_models)})")
        return self.dit_config()


def build_backbone(config: DiTConfig | UNetConfig):
    """The model of a config of either family: `DiT(config)` or the U-Net baseline `UNet(config)`."""
    return UNet(config) if isinstance(config, UNetConfig) else DiT(config)


def model_config_from_dict(values: dict) -> DiTConfig | UNetConfig:
    """A checkpoint's "model_config" back to its config: U-Nets store "family": "U-Net", DiTs nothing."""
    return UNetConfig.from_dict(values) if values.get("family") == UNET_FAMILY else DiTConfig.from_dict(values)


DEFAULT_CONFIG = "fmnist-latent-DiT-T/2"

TRAIN_CONFIGS: dict[str, TrainConfig] = {}


def register(config: TrainConfig) -> TrainConfig:
    if config.name in TRAIN_CONFIGS:
        raise ConfigError(f"training config {config.name!r} registered twice")
    TRAIN_CONFIGS[config.name] = config
    return config


# Trains in seconds; exists for tests and smoke runs.
register(TrainConfig(
    name="debug", model="DiT-debug/8", batch_size=8, lr=1e-3, ema_decay=0.9, max_steps=20,
    log_every=5, ckpt_every=10, sample_steps=10, notes="a few seconds on a CPU; for tests only",
))

# The course's default (issue 13, "the 30-minute model"): latent diffusion at small scale (§3.1). The shipped VAE
# turns 32×32×1 images into 8×8×4 latents; DiT-T/2 (6 blocks, width 192) sees 16 tokens of 2×2×4 latent values.
# The architecture, the diffusion (linear β, T = 1000, ε-prediction, learned Σ, the hybrid loss) and AdamW are the
# paper's. Measured on 8×8×4 latents (experiments/results/latent_dit/, FID-FMNIST at N = 1,000, DDIM 50, guidance 2)
# the optimisation differs where a run of thousands rather than millions of steps needs it:
#   batch 64 with lr 7e-4, 200 warm-up steps, clipping at 1 and an EMA with warm-up (3500 steps: FID 8.6),
#   + a cosine lr decay to 0.1·lr over 6000 steps (6.3), + min-SNR-5 weighting of the ε loss (Hang et al. 2023; 5.1).
# It samples with guidance 3 on the steps t <= 300 only (Kynkäänniemi et al. 2024): FID 4.83 -> 3.65 on the shipped
# weights, recall 0.51 -> 0.67 (experiments/results/guidance/); the paper guides every step (the -paper config does).
# 6000 steps take about 11.5 min in fp32 on the project's 2-core EPYC (560 img/s), about twice that on an AVX2-only
# 2-core EPYC; the latent cache (ditlib.latents) is built on the first run and reused.
register(TrainConfig(
    name=DEFAULT_CONFIG, model="DiT-T/2", vae="fmnist-vae", image_size=8, in_channels=4,
    batch_size=64, lr=7e-4, warmup_steps=200, grad_clip=1.0, lr_schedule="cosine", final_lr_ratio=0.1,
    min_snr_gamma=5.0, ema_decay=0.999, ema_warmup=True, max_steps=6000, log_every=50, ckpt_every=500,
    sample_steps=250, sample_cfg_scale=3.0, sample_guidance_interval=(0, 300),
    notes="the course's default: latent DiT-T/2 on the shipped fmnist-vae (8×8×4 latents, 16 tokens), ~30 AVX2 CPU-minutes",
))

# The same model and data with the paper's optimisation (§4): AdamW lr 1e-4 held constant, no warm-up, no clipping,
# batch 256, EMA 0.9999 without warm-up, every t weighted equally; 1500 steps see the default's 384k images.
register(TRAIN_CONFIGS[DEFAULT_CONFIG].replace(
    name="fmnist-latent-DiT-T/2-paper", batch_size=256, lr=1e-4, warmup_steps=0, grad_clip=None,
    lr_schedule="constant", min_snr_gamma=None, ema_decay=0.9999, ema_warmup=False, max_steps=1500, ckpt_every=250,
    sample_cfg_scale=2.0, sample_guidance_interval=None,
    notes="the default's model and data with the paper's optimisation (lr 1e-4, batch 256, EMA 0.9999)",
))

# DiT against the U-Net (issue 21; experiments/unet_vs_dit.py): the default's data, recipe and sampling with another
# model. Each U-Net (diffusers' UNet2DModel, ditlib.unet) is matched within 15 % in forward Gflops to one DiT:
# UNet-S ~ DiT-XS/2, UNet-M ~ DiT-T/2 (the default), UNet-L ~ DiT-M/2.
for _model, _note in (("DiT-XS/2", "a smaller DiT (4 blocks, width 128)"), ("DiT-M/2", "a larger DiT (8 blocks, width 256)")):
    register(TRAIN_CONFIGS[DEFAULT_CONFIG].replace(
        name=f"fmnist-latent-{_model}", model=_model, notes=f"the default's recipe with {_note}, 16 tokens"))
for _model in UNet_models:
    register(TRAIN_CONFIGS[DEFAULT_CONFIG].replace(
        name=f"fmnist-latent-{_model}", model=_model,
        notes=f"the default's recipe with the U-Net baseline {_model} (diffusers' UNet2DModel)"))

# Pixel space: a 4.2M-parameter DiT on 64 tokens of Fashion-MNIST pixels (the course's default before issue 13).
# 3500 steps of batch 64 took 26 min on a 2-core CPU with native bf16 (142 img/s); on an AVX2-only CPU, where
# "auto" trains in fp32 (~80 img/s reported), about 45 min.
register(TrainConfig(
    name="fmnist-DiT-T/4", model="DiT-T/4", batch_size=64, lr=7e-4, warmup_steps=200, grad_clip=1.0,
    ema_decay=0.999, ema_warmup=True, max_steps=3500, log_every=50, ckpt_every=500,
    sample_steps=250, sample_cfg_scale=2.0,
    notes="DiT-T/4 on Fashion-MNIST pixels (64 tokens), ~45 AVX2 CPU-minutes",
))

# Two more small pixel-space configs for comparisons (patch 2 quadruples the tokens; patch 8 divides them by 4).
for _patch in (2, 8):
    register(TRAIN_CONFIGS["fmnist-DiT-T/4"].replace(
        name=f"fmnist-DiT-T/{_patch}", model=f"DiT-T/{_patch}",
        notes=f"DiT-T at patch {_patch}: {(32 // _patch) ** 2} tokens",
    ))


# The paper's configurations (§4 "Training"; Table 4): ImageNet at 256×256 and 512×512, through the SD VAE
# (32×32×4 and 64×64×4 latents, scale 0.18215), 1000 classes, AdamW lr 1e-4 without weight decay, global
# batch 256, EMA 0.9999, random horizontal flips, class dropout 0.1, 400K steps (the paper's model
# comparisons; DiT-XL/2 went on to 7M steps at 256 and 3M at 512). `dataset` is a placeholder: pass
# `--data-path` (an ImageNet train folder, one sub-folder per class, read with the ADM centre crop) or
# `--latents` (a cache from `python -m ditlib encode-latents`). Like the official script, each batch is
# encoded by the VAE as it is drawn (cache_latents=False), with TF32 matmuls and precision "auto" (bf16 on
# A100/H100-class GPUs; `--precision fp32` gives the official script's numerics); docs/full-scale.md
# has the launch commands. The paper trained only DiT-XL/2 at 512; the other sizes are there to try.
IMAGENET_DATASET = "imagenet"
for _resolution in (256, 512):
    for _size in ("S", "B", "L", "XL"):
        for _patch in (2, 4, 8):
            register(TrainConfig(
                name=f"imagenet{_resolution}-DiT-{_size}/{_patch}", model=f"DiT-{_size}/{_patch}",
                dataset=IMAGENET_DATASET, vae="stabilityai/sd-vae-ft-ema", image_size=_resolution // 8,
                in_channels=4, num_classes=1000, batch_size=256, lr=1e-4, weight_decay=0.0, ema_decay=0.9999,
                hflip=True, class_dropout_prob=0.1, tf32=True, max_steps=400_000,
                log_every=100, ckpt_every=50_000, num_workers=4, cache_latents=False,
                sample_steps=250, sample_cfg_scale=1.5,
                notes=f"the paper's DiT-{_size}/{_patch} on ImageNet {_resolution}×{_resolution} (needs --data-path)",
            ))


def get_config(name: str) -> TrainConfig:
    if name not in TRAIN_CONFIGS:
        raise UnknownNameError(f"unknown training config {name!r}; choose one of: {', '.join(TRAIN_CONFIGS)} "
                               f"(`python -m ditlib configs` lists them)")
    return TRAIN_CONFIGS[name]
