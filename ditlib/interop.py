"""DiT weights in diffusers: `to_diffusers`, `from_diffusers`, `to_diffusers_pipeline`, and how the two differ.

diffusers implements the paper's adaLN-Zero DiT as `DiTTransformer2DModel` and its sampler as
`DiTPipeline`. The weights map one to one (below), so `from_diffusers(to_diffusers(m))` gives back
`m.state_dict()` exactly. The two models do not compute exactly the same function, though; with the
same weights their outputs differ in three documented ways:

1. **Timestep features.** diffusers' DiT embeds t with `Timesteps(256, flip_sin_to_cos=True,
   downscale_freq_shift=1)`: frequencies ω_k = 10000^(−k/(128 − 1)) instead of the official
   10000^(−k/128) (`ditlib.models.timestep_embedding`); the cos-then-sin order is the same. The phases
   t·ω_k drift apart as t grows: the 256 features differ by 0.25 on average over t = 0…999 and by up to
   ~2 (a half turn) near t = 999, so the network sees a different conditioning vector than it was
   trained with. Measured (tests/test_interop.py and the shipped model): with random weights of std 0.02
   the outputs differ by at most 5e-4 (output std 0.11); for the trained `fmnist-latent-DiT-T-2` the
   predicted ε differs by 0.015 on average and 0.12 at most (ε std 1.16) over t = 0…999.
2. **One LayerNorm ε.** Before each block's MLP diffusers uses `nn.LayerNorm(eps=norm_eps)`, 1e-5 by
   default and in the converted Hub checkpoints (facebook/DiT-XL-2-256, -512); the official code uses 1e-6
   everywhere. `to_diffusers` sets `norm_eps=1e-6`, so exported models do not have this difference;
   `from_diffusers` of a model with another ε keeps ditlib's 1e-6.
3. **Guidance in `DiTPipeline`.** The pipeline guides all latent channels and uses the null class 1000
   (hard-coded, so guidance works only for 1000-class models); the official sampler, and the FID numbers
   of the paper, guide only the first 3 of the 4 channels (`DiT.forward_with_cfg(..., guided_channels=3)`).
   The pipeline also drops the learned Σ and lets the scheduler choose the variance.

Smaller things: diffusers keeps a copy of the timestep MLP and the label table in every block (ditlib
shares one, as the official code does; `to_diffusers` writes the same weights into every copy, and
`from_diffusers` insists they are equal); diffusers computes its sin-cos position table in float32
(ditlib in float64, then rounds), which `to_diffusers` overrides with ditlib's table.

tests/test_interop.py checks that the round trip is exact, that the outputs differ only by (1): with
diffusers' timestep features swapped into ditlib the two models agree to float error (measured: 0.0).
"""
from __future__ import annotations

import torch

from .models import DiT
from .errors import ConfigError

# ditlib key -> diffusers key, per block i (the attention's fused qkv is split into to_q/to_k/to_v).
_BLOCK_KEYS = {
    "adaLN_modulation.1": "norm1.linear",
    "attn.proj": "attn1.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
}
_EMBEDDER_KEYS = {                                            # shared in ditlib, per block in diffusers
    "t_embedder.mlp.0": "norm1.emb.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "norm1.emb.timestep_embedder.linear_2",
    "y_embedder.embedding_table": "norm1.emb.class_embedder.embedding_table",
}
_TOP_KEYS = {
    "x_embedder.proj": "pos_embed.proj",
    "final_layer.adaLN_modulation.1": "proj_out_1",
    "final_layer.linear": "proj_out_2",
}


def _check_exportable(model: DiT) -> None:
    if not isinstance(model, DiT):
        raise ConfigError(f"only DiTs export to diffusers' DiTTransformer2DModel; this is a {type(model).__name__} "
                          "(the U-Net baseline already is diffusers' UNet2DModel: its .unet)")
    if model.block != "adaLN-Zero":
        raise ConfigError(f"diffusers implements only the adaLN-Zero design; this model uses {model.block!r} blocks")
    if model.mlp_ratio != 4.0:
        raise ConfigError(f"diffusers' DiT has MLP ratio 4; this model has {model.mlp_ratio}")
    if model.y_embedder.embedding_table.num_embeddings != model.num_classes + 1:
        raise ConfigError("diffusers' DiT always has a null-class row (class dropout > 0); this model has none")


def diffusers_state_dict(model: DiT) -> dict[str, torch.Tensor]:
    """ditlib's state dict under diffusers' key names (embedders repeated in every block, qkv split)."""
    sd = model.state_dict()
    out = {}
    for ours, theirs in _TOP_KEYS.items():
        for kind in ("weight", "bias"):
            out[f"{theirs}.{kind}"] = sd[f"{ours}.{kind}"]
    for i in range(model.depth):
        prefix = f"blocks.{i}."
        for ours, theirs in _BLOCK_KEYS.items():
            for kind in ("weight", "bias"):
                out[f"transformer_blocks.{i}.{theirs}.{kind}"] = sd[f"{prefix}{ours}.{kind}"]
        for kind in ("weight", "bias"):
            q, k, v = sd[f"{prefix}attn.qkv.{kind}"].chunk(3, dim=0)
            for name, part in (("to_q", q), ("to_k", k), ("to_v", v)):
                out[f"transformer_blocks.{i}.attn1.{name}.{kind}"] = part
        for ours, theirs in _EMBEDDER_KEYS.items():
            for kind in ("weight", "bias"):
                if f"{ours}.{kind}" in sd:
                    out[f"transformer_blocks.{i}.{theirs}.{kind}"] = sd[f"{ours}.{kind}"]
    return out


def to_diffusers(model: DiT):
    """The same weights as a diffusers `DiTTransformer2DModel` (float32, on the model's device, eval mode).

    Uses `norm_eps=1e-6` (the official ε, see the module docstring) and ditlib's position table.
    """
    from diffusers import DiTTransformer2DModel

    _check_exportable(model)
    device = next(model.parameters()).device
    transformer = DiTTransformer2DModel(
        num_attention_heads=model.num_heads, attention_head_dim=model.hidden_size // model.num_heads,
        in_channels=model.in_channels, out_channels=model.out_channels, num_layers=model.depth, dropout=0.0,
        attention_bias=True, sample_size=model.input_size, patch_size=model.patch_size,
        activation_fn="gelu-approximate", num_embeds_ada_norm=model.num_classes, upcast_attention=False,
        norm_type="ada_norm_zero", norm_elementwise_affine=False, norm_eps=1e-6,
    )
    transformer.load_state_dict(diffusers_state_dict(model), strict=True)
    transformer.pos_embed.pos_embed.copy_(model.pos_embed.detach())           # (1, T, D), not saved by diffusers
    return transformer.to(device).eval()


def from_diffusers(transformer, class_dropout_prob: float = 0.1, check_shared_embedders: bool = True) -> DiT:
    """A ditlib `DiT` (eval mode) with the weights of a diffusers `DiTTransformer2DModel`.

    diffusers stores the timestep MLP and label table once per block; a model exported by `to_diffusers`
    (or converted from the official checkpoints) has identical copies, and block 0's are used. With
    `check_shared_embedders` a model whose copies differ (trained in diffusers) is refused, since
    ditlib has one shared embedder.
    """
    cfg = transformer.config
    if cfg.norm_type != "ada_norm_zero":
        raise ConfigError(f"only ada_norm_zero DiTs can be imported, not {cfg.norm_type!r}")
    hidden = cfg.num_attention_heads * cfg.attention_head_dim
    out_channels = cfg.out_channels or cfg.in_channels
    if out_channels not in (cfg.in_channels, 2 * cfg.in_channels):
        raise ConfigError(f"out_channels={out_channels} is neither in_channels nor 2·in_channels")
    model = DiT(input_size=cfg.sample_size, patch_size=cfg.patch_size, in_channels=cfg.in_channels,
                hidden_size=hidden, depth=cfg.num_layers, num_heads=cfg.num_attention_heads, mlp_ratio=4.0,
                class_dropout_prob=class_dropout_prob, num_classes=cfg.num_embeds_ada_norm,
                learn_sigma=out_channels == 2 * cfg.in_channels)
    theirs = {k: v.detach() for k, v in transformer.state_dict().items()}
    sd = {"pos_embed": transformer.pos_embed.pos_embed.detach().float().cpu()}
    for ours, key in _TOP_KEYS.items():
        for kind in ("weight", "bias"):
            sd[f"{ours}.{kind}"] = theirs[f"{key}.{kind}"]
    for i in range(cfg.num_layers):
        block = f"transformer_blocks.{i}."
        for ours, key in _BLOCK_KEYS.items():
            for kind in ("weight", "bias"):
                sd[f"blocks.{i}.{ours}.{kind}"] = theirs[f"{block}{key}.{kind}"]
        for kind in ("weight", "bias"):
            sd[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [theirs[f"{block}attn1.{name}.{kind}"] for name in ("to_q", "to_k", "to_v")], dim=0)
        for ours, key in _EMBEDDER_KEYS.items():
            for kind in ("weight", "bias"):
                name = f"{block}{key}.{kind}"
                if name not in theirs:
                    continue
                if i == 0:
                    sd[f"{ours}.{kind}"] = theirs[name]
                elif check_shared_embedders and not torch.equal(theirs[name], sd[f"{ours}.{kind}"]):
                    raise ConfigError(f"{name} differs from block 0's copy: this diffusers DiT has per-block "
                                      "embedders, which ditlib's shared embedder cannot represent "
                                      "(pass check_shared_embedders=False to use block 0's)")
    model.load_state_dict({k: v.cpu() for k, v in sd.items()}, strict=True)
    return model.eval()


def linear_schedule_kwargs(diffusion_steps: int = 1000) -> dict:
    """The paper's noise schedule in diffusers' terms: linear β from 1e-4 to 0.02 over 1000 steps, ε-prediction."""
    scale = 1000 / diffusion_steps                  # as ditlib.diffusion.get_named_beta_schedule
    return dict(num_train_timesteps=diffusion_steps, beta_start=scale * 1e-4, beta_end=scale * 0.02,
                beta_schedule="linear", prediction_type="epsilon")


def diffusers_scheduler(name: str = "ddim", diffusion_steps: int = 1000):
    """A diffusers scheduler configured like the paper's process: "ddim" (`DDIMScheduler`, no clipping, as
    for latents) or "dpm" (`DPMSolverMultistepScheduler`, DPM-Solver++, a good 20–25-step sampler)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    kwargs = linear_schedule_kwargs(diffusion_steps)
    if name == "ddim":
        return DDIMScheduler(clip_sample=False, **kwargs)
    if name == "dpm":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **kwargs)
    raise ConfigError(f"scheduler must be 'ddim' or 'dpm' (or a diffusers scheduler object), got {name!r}")


def to_diffusers_pipeline(model: DiT, vae, scheduler="ddim", id2label: dict | None = None):
    """A diffusers `DiTPipeline`: `to_diffusers(model)`, the VAE and a scheduler.

    `vae` is a diffusers `AutoencoderKL` or a `ditlib.vae.LatentCodec` (its scale factor is written into the
    VAE's config, which the pipeline divides by before decoding). `scheduler` is "ddim", "dpm" or a
    diffusers scheduler. Mind the pipeline's guidance (module docstring, point 3): it needs a 1000-class
    model and guides all channels.
    """
    from diffusers import DiTPipeline

    from .vae import LatentCodec

    if isinstance(vae, LatentCodec):
        vae_model = vae.vae
        vae_model.register_to_config(scaling_factor=vae.scale_factor)
    else:
        vae_model = vae
    if isinstance(scheduler, str):
        scheduler = diffusers_scheduler(scheduler)
    return DiTPipeline(transformer=to_diffusers(model), vae=vae_model, scheduler=scheduler, id2label=id2label)
