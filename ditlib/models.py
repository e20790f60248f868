"""The Diffusion Transformer (DiT) of Peebles & Xie, "Scalable Diffusion Models with Transformers" (§3, Figure 3).

Read it top to bottom in the order of Figure 3 (the layers it is built from are `ditlib.layers`):

1. the config      – `DiTConfig`, every number that fixes the model (Table 1's depth, width and heads,
                     the patch size p, the input, the classes, the block design);
2. the DiT blocks  – the four conditioning designs of §3.2: in-context, cross-attention, adaLN and
                     adaLN-Zero (`DiTBlock`, the paper's choice and the default);
3. the final layer – (adaptive) LayerNorm and a linear decoder to ε and Σ (§3.2 "Transformer decoder");
4. the model       – patchify -> + positions -> N blocks conditioned on (t, y) -> decoder -> unpatchify;
5. configurations  – the paper's twelve (Table 1 × patch 2/4/8) and the course's small ones (patch 1/2/4/8).

The model knows nothing about the diffusion process: it maps (x_t, t, y) to a tensor with
`in_channels` (ε) or `2 * in_channels` (ε and the Σ interpolation values) channels.
With the default `block="adaLN-Zero"` the `state_dict` uses the key names and shapes of the official
checkpoints (`DiT-XL-2-256x256.pt`), so they load with `strict=True` and compute the same function.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.utils.checkpoint

from .errors import ConfigError, UnknownNameError
from .layers import (Attention, CrossAttention, LabelEmbedder, Mlp, PatchEmbed, TimestepEmbedder,  # noqa: F401
                     get_1d_sincos_pos_embed_from_grid, get_2d_sincos_pos_embed, guided_output, modulate,
                     timestep_embedding)

BLOCK_DESIGNS = ("in-context", "cross-attention", "adaLN", "adaLN-Zero")   # §3.2, in the paper's order
ADAPTIVE_BLOCKS = ("adaLN", "adaLN-Zero")   # designs that condition through c = t_emb + y_emb


#################################################################################
#                                  The config                                   #
#################################################################################

@dataclass(frozen=True)
class DiTConfig:
    """Everything that fixes a DiT's function and the shapes of its weights (saved with checkpoints).

    The names are the official code's, so configs and checkpoints carry over:
        input_size: spatial size I of the (latent) input; must be divisible by `patch_size`.
        patch_size: p; the number of tokens is T = (I/p)² (§3.2 "Patchify", Figure 4).
        in_channels: C of the input (4 for SD-VAE latents, 1 for Fashion-MNIST pixels).
        hidden_size, depth, num_heads, mlp_ratio: the transformer's width D, blocks N, heads, MLP expansion (Table 1).
        class_dropout_prob: probability of replacing a label by the null class in training (CFG, §4).
        num_classes: number of real classes; the null class is `num_classes`.
        learn_sigma: output 2·C channels (ε and the Σ interpolation v, Nichol & Dhariwal) instead of C.
        block: the conditioning design of §3.2, one of `BLOCK_DESIGNS`.
    """
    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    num_classes: int = 1000
    learn_sigma: bool = True
    block: str = "adaLN-Zero"

    def __post_init__(self):
        if self.block not in BLOCK_DESIGNS:
            raise ConfigError(f"unknown block design {self.block!r}; choose one of: {', '.join(BLOCK_DESIGNS)} (§3.2)")
        if self.input_size % self.patch_size != 0:
            raise ConfigError(f"patch_size={self.patch_size} does not divide input_size={self.input_size}: choose a "
                              f"patch size among {[p for p in (1, 2, 4, 8, 16) if self.input_size % p == 0]}")
        if self.hidden_size % self.num_heads != 0:
            raise ConfigError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {self.num_classes}")

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @classmethod
    def from_name(cls, name: str, **fields) -> "DiTConfig":
        """The registered size `name` ("DiT-XL/2", "DiT-T/4", …) with any other field, e.g. `block="adaLN"`."""
        if name not in DiT_models:
            raise UnknownNameError(f"unknown model config {name!r}; choose one of: {', '.join(DiT_models)}")
        fixed = [key for key in ("depth", "hidden_size", "num_heads", "patch_size") if key in fields]
        if fixed:
            raise TypeError(f"{', '.join(fixed)} is fixed by the config name; use DiTConfig(...) directly to change it")
        size, patch = name[len("DiT-"):].split("/")
        depth, hidden_size, num_heads = MODEL_SIZES[size]
        return cls(depth=depth, hidden_size=hidden_size, num_heads=num_heads, patch_size=int(patch), **fields)

    @classmethod
    def from_dict(cls, values: dict) -> "DiTConfig":
        """From `to_dict()` (a checkpoint's "model_config"); fields it lacks take their defaults."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown DiT config fields: {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "DiTConfig":
        return dataclasses.replace(self, **changes)


#################################################################################
#                    The DiT blocks: four ways to condition                      #
#################################################################################

# The four designs of §3.2 (Figure 3) take the same arguments: the tokens x and the conditioning c.
# Each says, in `condition`, what c is and how the (t, y) embeddings reach the blocks.

class InContextBlock(nn.Module):
    """In-context conditioning (§3.2): a standard pre-norm ViT block, used without modification.

    t_emb and y_emb enter as two extra tokens appended to the sequence (like ViT's cls token), so the
    block treats them like image tokens and ignores c. x: (N, T + 2, D) -> (N, T + 2, D).
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    @staticmethod
    def condition(x: torch.Tensor, t_emb: torch.Tensor, y_emb: torch.Tensor) -> tuple:
        """(x with the two conditioning tokens appended (N, T+2, D), c = None)."""
        return torch.cat([x, torch.stack([t_emb, y_emb], dim=1).to(x.dtype)], dim=1), None

    def forward(self, x: torch.Tensor, c: None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x                                                               # (N, T+2, D)


class CrossAttentionBlock(nn.Module):
    """Cross-attention conditioning (§3.2): self-attention, then cross-attention to c = [t_emb, y_emb], then MLP.

    Each of the three layers is a pre-norm residual branch (as in Vaswani et al.'s decoder and LDM's
    class conditioning). The cross-attention adds ~15% Gflops to DiT-XL/2 (§3.2; `ditlib.flops`).
    x: (N, T, D), c: (N, 2, D) -> (N, T, D).
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.cross_attn = CrossAttention(hidden_size, num_heads)
        self.norm3 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    @staticmethod
    def condition(x: torch.Tensor, t_emb: torch.Tensor, y_emb: torch.Tensor) -> tuple:
        """(x unchanged, c = the length-2 sequence [t_emb, y_emb] (N, 2, D))."""
        return x, torch.stack([t_emb, y_emb], dim=1).to(x.dtype)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.cross_attn(self.norm2(x), c)
        x = x + self.mlp(self.norm3(x))
        return x                                                               # (N, T, D)


def sum_condition(x: torch.Tensor, t_emb: torch.Tensor, y_emb: torch.Tensor) -> tuple:
    """adaLN and adaLN-Zero: (x unchanged, c = t_emb + y_emb (N, D)), one vector per image."""
    return x, (t_emb + y_emb).to(x.dtype)


class AdaLNBlock(nn.Module):
    """Adaptive layer norm (adaLN) conditioning (§3.2).

    The LayerNorms have no learned affine parameters; instead an MLP regresses their shift and scale
    from c = t_emb + y_emb: (β1, γ1) for the attention branch, (β2, γ2) for the MLP branch. No gates,
    and standard (Xavier) initialisation, so unlike adaLN-Zero the block is not the identity at init.
    The same (β, γ) apply to every token. x: (N, T, D), c: (N, D) -> (N, T, D).
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 4 * hidden_size, bias=True))

    condition = staticmethod(sum_condition)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, shift_mlp, scale_mlp = self.adaLN_modulation(c).chunk(4, dim=1)   # each (N, D)
        x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x                                                               # (N, T, D)


class DiTBlock(nn.Module):
    """The adaLN-Zero DiT block (§3.2, Figure 3), the paper's choice and our default.

    From c = t_emb + y_emb an MLP regresses six vectors: (β1, γ1, α1) for the attention branch and
    (β2, γ2, α2) for the MLP branch. Each branch is LayerNorm -> modulate(β, γ) -> layer -> ×α ->
    residual. The regression layer is zero-initialised (`DiT.initialize_weights`), so α = 0 and the
    block is the identity at initialisation. x: (N, T, D), c: (N, D) -> (N, T, D).
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    condition = staticmethod(sum_condition)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x                                                               # (N, T, D)


BLOCKS = dict(zip(BLOCK_DESIGNS, (InContextBlock, CrossAttentionBlock, AdaLNBlock, DiTBlock)))


#################################################################################
#                        The final layer and the model                          #
#################################################################################

class FinalLayer(nn.Module):
    """Transformer decoder (§3.2): the final LayerNorm ("adaptive if using adaLN"), then a linear map
    of each token to p·p·out_channels values.

    `adaptive=True` (adaLN, adaLN-Zero): the norm's shift and scale are regressed from c, as in the blocks.
    `adaptive=False` (in-context, cross-attention): a standard LayerNorm with learned affine parameters.
    x: (N, T, D), c: (N, D) (read only when adaptive) -> (N, T, p*p*C_out).
    """

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, adaptive: bool = True):
        super().__init__()
        self.adaptive = adaptive
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=not adaptive, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        if adaptive:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        x = self.norm_final(x)                                                 # (N, T, D)
        if self.adaptive:
            shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
            x = modulate(x, shift, scale)
        return self.linear(x)                                                  # (N, T, p*p*C_out)



class DiT(nn.Module):
    """Diffusion Transformer (Figure 3): (x_t, t, y) -> ε (and Σ values when `learn_sigma`).

    Built from a `DiTConfig` (or its fields as keywords: `DiT(input_size=32, in_channels=1, ...)`).
    The block design (§3.2, `BLOCK_DESIGNS`) decides only how (t, y) enter the blocks; everything else
    (patchify, positional table, t/y embedders, decoder, unpatchify) is shared. The final LayerNorm is
    adaptive for the two adaLN designs and a standard LayerNorm for the other two ("adaptive if using
    adaLN", §3.2 "Transformer decoder").
    """

    def __init__(self, config: DiTConfig | None = None, **fields):
        super().__init__()
        if config is not None and fields:
            raise TypeError("pass either a DiTConfig or its fields as keywords, not both")
        config = config if config is not None else DiTConfig(**fields)
        self.config = config
        # The official code's attribute names, read by the sampler, the trainer and the lessons.
        self.input_size, self.patch_size, self.in_channels = config.input_size, config.patch_size, config.in_channels
        self.out_channels, self.num_classes, self.learn_sigma = config.out_channels, config.num_classes, config.learn_sigma
        self.hidden_size, self.depth, self.num_heads = config.hidden_size, config.depth, config.num_heads
        self.mlp_ratio, self.class_dropout_prob, self.block = config.mlp_ratio, config.class_dropout_prob, config.block
        self.gradient_checkpointing = False     # a switch: recompute each block in backward (less memory, more time)

        self.x_embedder = PatchEmbed(config.input_size, config.patch_size, config.in_channels, config.hidden_size)
        self.t_embedder = TimestepEmbedder(config.hidden_size)
        self.y_embedder = LabelEmbedder(config.num_classes, config.hidden_size, config.class_dropout_prob)
        self.num_patches = self.x_embedder.num_patches
        # Fixed sin-cos table, stored (not learned) so that checkpoints carry it, as in the official code.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, config.hidden_size), requires_grad=False)
        design = BLOCKS[config.block]
        self.condition = design.condition       # (x, t_emb, y_emb) -> (x, c): how (t, y) reach the blocks
        self.blocks = nn.ModuleList([design(config.hidden_size, config.num_heads, config.mlp_ratio)
                                     for _ in range(config.depth)])
        self.final_layer = FinalLayer(config.hidden_size, config.patch_size, config.out_channels,
                                      adaptive=config.block in ADAPTIVE_BLOCKS)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Initialisation of §3.2: ViT-style Xavier everywhere, then (adaLN-Zero only) zeros.

        The zeros are the point of adaLN-Zero: every block's modulation regressor and the final
        layer start at zero, so each block computes the identity and the model outputs 0.
        The other three designs keep the standard initialisation (LayerNorm affine weights 1, biases 0).
        """
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.apply(_basic_init)

        grid = int(self.x_embedder.num_patches ** 0.5)
        self.pos_embed.data.copy_(torch.from_numpy(get_2d_sincos_pos_embed(self.hidden_size, grid)).float().unsqueeze(0))

        w = self.x_embedder.proj.weight.data                                   # patch embedding like a Linear
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)

        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)

        if self.block == "adaLN-Zero":      # zero the modulation regressors (α = 0) and the output layer
            for block in self.blocks:
                nn.init.zeros_(block.adaLN_modulation[-1].weight)
                nn.init.zeros_(block.adaLN_modulation[-1].bias)
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
            nn.init.zeros_(self.final_layer.linear.weight)
            nn.init.zeros_(self.final_layer.linear.bias)

    @property
    def has_null_class(self) -> bool:
        """Whether the label table has the null row ∅ that classifier-free guidance needs (class dropout > 0)."""
        return self.y_embedder.embedding_table.num_embeddings > self.num_classes

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, p·p·C) -> (N, C, I, I), the inverse of patchify's token order (row-major over the grid)."""
        c, p = self.out_channels, self.patch_size
        h = w = int(x.shape[1] ** 0.5)
        if h * w != x.shape[1]:
            raise ConfigError(f"cannot unpatchify {x.shape[1]} tokens: not a square grid")
        x = x.reshape(x.shape[0], h, w, p, p, c)                               # (N, h, w, p, p, C)
        x = torch.einsum("nhwpqc->nchpwq", x)                                  # (N, C, h, p, w, p)
        return x.reshape(x.shape[0], c, h * p, w * p)                          # (N, C, I, I)

    def check_inputs(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> None:
        """Refuse inputs this model cannot take, with a message saying why. The entry points (`sample_images`,
        the trainer's first batch) call it once; `forward` does not, since reading the labels back would
        synchronise a GPU at every step."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(f"x must have shape (N, {self.in_channels}, {self.input_size}, {self.input_size}); "
                              f"got {tuple(x.shape)} (wrong channel count?)")
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ConfigError(f"x is {x.shape[-2]}×{x.shape[-1]} but this model was built for "
                              f"{self.input_size}×{self.input_size} inputs")
        if t.shape != (x.shape[0],) or y.shape != (x.shape[0],):
            raise ConfigError(f"t and y must have shape ({x.shape[0]},), one per image; got {tuple(t.shape)} and {tuple(y.shape)}")
        if y.dtype.is_floating_point:
            raise ConfigError("y must hold integer class labels")
        if y.numel() and y.device.type != "meta" and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ConfigError(f"class labels must lie in [0, {self.num_classes - 1}] "
                              f"(or {self.num_classes} for the null class); got min {int(y.min())}, max {int(y.max())}")

    def _run_block(self, block: nn.Module, *args) -> torch.Tensor:
        """One block; with `gradient_checkpointing` (training only) its activations are recomputed in backward."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C, I, I) noisy input; t: (N,) timesteps; y: (N,) labels -> (N, C_out, I, I). `force_drop_ids`
        (N,), 1 where the label becomes the null class, overrides the random label dropout (`ditlib.train`)."""
        x = self.x_embedder(x)                                                 # (N, T, D)
        x = x + self.pos_embed.to(x.dtype)                                     # (N, T, D), bf16 under autocast
        t_emb = self.t_embedder(t)                                             # (N, D)
        y_emb = self.y_embedder(y, self.training, force_drop_ids)              # (N, D)
        x, c = self.condition(x, t_emb, y_emb)                                 # c: (N, D), (N, 2, D) or None
        for block in self.blocks:
            x = self._run_block(block, x, c)                                   # (N, T, D); (N, T+2, D) in-context
        x = self.final_layer(x[:, :self.num_patches], c)                       # (N, T, p*p*C_out)
        return self.unpatchify(x)                                              # (N, C_out, I, I)

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float,
                         guided_channels: int | None = None) -> torch.Tensor:
        """Classifier-free guidance (§4): ε̂ = ε(x, ∅) + s·(ε(x, y) − ε(x, ∅)).

        The batch is [conditional half; unconditional half]: the first N/2 rows carry the real labels,
        the last N/2 the null class; both halves see the same x (the first half is used).
        `guided_channels=None` guides all ε channels; `guided_channels=3` guides only the first three,
        which is how the official checkpoints were evaluated (their FID numbers assume it).
        The Σ channels are passed through unguided.
        """
        if x.shape[0] % 2:
            raise ConfigError("forward_with_cfg needs an even batch: [conditional; unconditional] halves")
        half = x[: len(x) // 2]
        model_out = self.forward(torch.cat([half, half], dim=0), t, y)        # (N, C_out, I, I)
        return guided_output(model_out, self.in_channels, cfg_scale, guided_channels)


#################################################################################
#                                   DiT configs                                 #
#################################################################################

# Table 1 of the paper: (depth, hidden_size, num_heads).
PAPER_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
# The course's small sizes for CPUs: T(iny) is a 6-block, width-192 model (~4M parameters at patch 4);
# XS (~1.3M) and M (~9.8M) bracket it for the scaling experiments (experiments/scaling_grid.py, Figures 6, 8);
# "debug" trains in seconds and exists for tests.
COURSE_SIZES = {"XS": (4, 128, 2), "T": (6, 192, 3), "M": (8, 256, 4), "debug": (2, 32, 2)}
COURSE_PATCHES = (1, 2, 4, 8)     # patch 1 makes sense for small latents (8×8×4 -> 64 tokens)


MODEL_SIZES = {**PAPER_SIZES, **COURSE_SIZES}


def _constructor(name: str):
    def build(**fields) -> DiT:
        return DiT(DiTConfig.from_name(name, **fields))
    depth, hidden_size, num_heads = MODEL_SIZES[name[len("DiT-"):].split("/")[0]]
    build.__doc__ = (f"{name}: depth={depth}, hidden_size={hidden_size}, num_heads={num_heads}, "
                     f"patch_size={name.split('/')[1]}.")
    return build


DiT_models = {
    name: _constructor(name)
    for name in [f"DiT-{size}/{p}" for sizes, patches in ((PAPER_SIZES, (2, 4, 8)), (COURSE_SIZES, COURSE_PATCHES))
                 for size in sizes for p in patches]
}
PAPER_CONFIGS = [f"DiT-{s}/{p}" for s in PAPER_SIZES for p in (2, 4, 8)]


def build_model(name: str, **kwargs) -> DiT:
    """Build a registered config by name, e.g. `build_model('DiT-XL/2', input_size=32, num_classes=1000)`.

    Any `DiT` keyword other than the size fixes the name, e.g. `block='cross-attention'` (§3.2).
    """
    return DiT(DiTConfig.from_name(name, **kwargs))
