"""The Diffusion Transformer (DiT) of Peebles & Xie, "Scalable Diffusion Models with Transformers" (§3, Figure 3).

Read it top to bottom in the order the paper introduces the pieces:

1. embedding layers   – patchify (§3.2 "Patchify"), timestep and class-label embeddings (§3.2 "DiT block design");
2. the DiT blocks     – the four conditioning designs of §3.2 (Figure 3): in-context, cross-attention,
                        adaLN and adaLN-Zero (the default, Figure 3 right);
3. the final layer    – (adaptive) LayerNorm, linear decoder to ε and Σ, unpatchify (§3.2 "Transformer decoder");
4. positional embeddings – the fixed 2-D sin-cos table of ViT/MAE;
5. configurations     – the paper's twelve (Table 1 × patch 2/4/8) and the course's small ones (patch 1/2/4/8).

The model knows nothing about the diffusion process: it maps (x_t, t, y) to a tensor with
`in_channels` (ε) or `2 * in_channels` (ε and the Σ interpolation values) channels.
With the default `block="adaLN-Zero"` the `state_dict` uses the key names and shapes of the official
checkpoints (`DiT-XL-2-256x256.pt`), so they load with `strict=True` and compute the same function.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + γ) + β, with (shift, scale) = (β, γ) per sample, broadcast over tokens.

    x: (N, T, D); shift, scale: (N, D).
    """
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


#################################################################################
#                 Embedding layers for timesteps, class labels, patches          #
#################################################################################

def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal timestep features (as in DDPM/ADM): [cos(t·ω_k), sin(t·ω_k)], ω_k = max_period^(-k/(dim/2)).

    t: (N,) float or int timesteps (may be fractional). Returns (N, dim) float32.
    The cosine half comes first, matching the official DiT checkpoints.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]                                   # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)               # (N, 2*half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """t -> 256-d sinusoid -> MLP (Linear, SiLU, Linear) -> (N, hidden_size)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = timestep_embedding(t, self.frequency_embedding_size)          # (N, 256)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))                  # (N, D)


class LabelEmbedder(nn.Module):
    """Class label -> (N, hidden_size) vector, with one extra "null" row used for classifier-free guidance.

    The null class has index `num_classes`. During training each label is replaced by the null
    class with probability `dropout_prob` (§4 "Classifier-free guidance"; Ho & Salimans).
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        use_cfg_embedding = int(dropout_prob > 0)
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)                                    # (N, D)


class PatchEmbed(nn.Module):
    """Patchify (§3.2): a p×p, stride-p convolution = a linear map of each flattened patch.

    (N, C, I, I) -> (N, T, D) with T = (I/p)².
    """

    def __init__(self, input_size: int, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.grid_size = input_size // patch_size
        self.num_patches = self.grid_size ** 2
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)                                                       # (N, D, I/p, I/p)
        return x.flatten(2).transpose(1, 2)                                    # (N, T, D)


#################################################################################
#                                 Core DiT model                                #
#################################################################################

class Attention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention` (fused on CPU and GPU)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                         # each (B, nh, T, hs)
        x = F.scaled_dot_product_attention(q, k, v)                            # (B, nh, T, hs)
        return self.proj(x.transpose(1, 2).reshape(B, T, D))                   # (B, T, D)


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from the image tokens, keys and values from a context sequence.

    x: (B, T, D) tokens; context: (B, S, D) (S = 2 here: [t_emb, y_emb]). Returns (B, T, D).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, dim * 2, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        S, hs = context.shape[1], D // self.num_heads
        q = self.q(x).reshape(B, T, self.num_heads, hs).transpose(1, 2)            # (B, nh, T, hs)
        kv = self.kv(context).reshape(B, S, 2, self.num_heads, hs)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)                                 # each (B, nh, S, hs)
        x = F.scaled_dot_product_attention(q, k, v)                                # (B, nh, T, hs)
        return self.proj(x.transpose(1, 2).reshape(B, T, D))                       # (B, T, D)


class Mlp(nn.Module):
    """Pointwise feed-forward: Linear -> GELU (tanh approximation, as the official DiT) -> Linear."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


# The four block designs of §3.2 (Figure 3), in the paper's order. They share the constructor
# (hidden_size, num_heads, mlp_ratio) and differ only in how the conditioning (t, y) enters.

class InContextBlock(nn.Module):
    """In-context conditioning (§3.2): a standard pre-norm ViT block, used without modification.

    The conditioning is not an argument: `DiT` appends t_emb and y_emb to the sequence as two extra
    tokens (like ViT's cls token) and every block treats them like image tokens.
    x: (N, T + 2, D) -> (N, T + 2, D).
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x                                                               # (N, T+2, D)


class CrossAttentionBlock(nn.Module):
    """Cross-attention conditioning (§3.2): self-attention, then cross-attention to [t_emb, y_emb], then MLP.

    Each of the three layers is a pre-norm residual branch (as in Vaswani et al.'s decoder and LDM's
    class conditioning). The cross-attention adds ~15% Gflops to DiT-XL/2 (§3.2; `ditlib.flops`).
    x: (N, T, D), context: (N, 2, D) -> (N, T, D).
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.cross_attn = CrossAttention(hidden_size, num_heads)
        self.norm3 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.cross_attn(self.norm2(x), context)
        x = x + self.mlp(self.norm3(x))
        return x                                                               # (N, T, D)


class AdaLNBlock(nn.Module):
    """Adaptive layer norm (adaLN) conditioning (§3.2).

    The LayerNorms have no learned affine parameters; instead an MLP regresses their shift and scale
    from c = t_emb + y_emb: (β1, γ1) for the attention branch, (β2, γ2) for the MLP branch. No gates,
    and standard (Xavier) initialisation, so unlike adaLN-Zero the block is not the identity at init.
    The same (β, γ) apply to every token. x: (N, T, D), c: (N, D) -> (N, T, D).
    """

    num_modulations = 4                 # (β1, γ1, β2, γ2)

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, self.num_modulations * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, shift_mlp, scale_mlp = self.adaLN_modulation(c).chunk(4, dim=1)   # each (N, D)
        x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x                                                               # (N, T, D)


class DiTBlock(AdaLNBlock):
    """The adaLN-Zero DiT block (§3.2, Figure 3 right), the paper's choice and our default.

    From c = t_emb + y_emb an MLP regresses six vectors: (β1, γ1, α1) for the attention branch and
    (β2, γ2, α2) for the MLP branch. Each branch is LayerNorm -> modulate(β, γ) -> layer -> ×α ->
    residual. The regression layer is zero-initialised (see `DiT.initialize_weights`), so α = 0 and
    the block is the identity at initialisation. x: (N, T, D), c: (N, D) -> (N, T, D).
    """

    # Same layers (and official key names) as adaLN; the regression also outputs the gates α1, α2.
    num_modulations = 6                 # (β1, γ1, α1, β2, γ2, α2)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x                                                               # (N, T, D)


BLOCKS = {
    "in-context": InContextBlock,
    "cross-attention": CrossAttentionBlock,
    "adaLN": AdaLNBlock,
    "adaLN-Zero": DiTBlock,
}
BLOCK_DESIGNS = tuple(BLOCKS)       # the `block=` choices of `DiT`, in the paper's order
ADAPTIVE_BLOCKS = ("adaLN", "adaLN-Zero")   # designs that condition through c = t_emb + y_emb


class FinalLayer(nn.Module):
    """Transformer decoder (§3.2): the final LayerNorm ("adaptive if using adaLN"), then a linear map
    of each token to p·p·out_channels values.

    `adaptive=True` (adaLN, adaLN-Zero): the norm's shift and scale are regressed from c, as in the blocks.
    `adaptive=False` (in-context, cross-attention): a standard LayerNorm with learned affine parameters.
    x: (N, T, D), c: (N, D) or None -> (N, T, p*p*C_out).
    """

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, adaptive: bool = True):
        super().__init__()
        self.adaptive = adaptive
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=not adaptive, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        if adaptive:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm_final(x)                                                 # (N, T, D)
        if self.adaptive:
            shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
            x = modulate(x, shift, scale)
        return self.linear(x)                                                  # (N, T, p*p*C_out)


class DiT(nn.Module):
    """Diffusion Transformer: (x_t, t, y) -> ε (and Σ values when `learn_sigma`).

    Args (the names of the official code, so configs and checkpoints carry over):
        input_size: spatial size I of the (latent) input; must be divisible by `patch_size`.
        patch_size: p; the number of tokens is T = (I/p)².
        in_channels: C of the input (4 for SD-VAE latents, 1 for Fashion-MNIST pixels).
        hidden_size, depth, num_heads, mlp_ratio: the transformer's width, blocks, heads, MLP expansion.
        class_dropout_prob: probability of replacing a label by the null class in training (CFG).
        num_classes: number of real classes; the null class is `num_classes`.
        learn_sigma: output 2·C channels (ε and the Σ interpolation v, Nichol & Dhariwal) instead of C.
        block: the conditioning design of §3.2, one of `BLOCK_DESIGNS`:
            "in-context"      – t_emb and y_emb appended as two extra tokens, standard ViT blocks;
            "cross-attention" – blocks cross-attend to the length-2 sequence [t_emb, y_emb];
            "adaLN"           – LayerNorm shift/scale regressed from c = t_emb + y_emb;
            "adaLN-Zero"      – adaLN plus residual gates α, zero-initialised (the paper's DiT; default).
            Everything else (patchify, positional table, t/y embedders, decoder, unpatchify) is shared.
            The final LayerNorm is adaptive for the two adaLN designs and a standard LayerNorm for the
            other two ("adaptive if using adaLN", §3.2 "Transformer decoder").
    """

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
        block: str = "adaLN-Zero",
    ):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown block design {block!r}; choose one of: {', '.join(BLOCK_DESIGNS)} (§3.2)")
        if input_size % patch_size != 0:
            raise ValueError(f"patch_size={patch_size} does not divide input_size={input_size}: "
                             f"choose a patch size among {[p for p in (1, 2, 4, 8, 16) if input_size % p == 0]}")
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.hidden_size = hidden_size
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.num_classes = num_classes
        self.class_dropout_prob = class_dropout_prob
        self.learn_sigma = learn_sigma
        self.block = block
        self.gradient_checkpointing = False     # a switch: recompute each block in backward (less memory, more time)

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        # Fixed sin-cos table, stored (not learned) so that checkpoints carry it, as in the official code.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([BLOCKS[block](hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, adaptive=block in ADAPTIVE_BLOCKS)
        self.initialize_weights()

    def config(self) -> dict:
        """The constructor arguments, enough to rebuild the model (saved with checkpoints)."""
        return dict(input_size=self.input_size, patch_size=self.patch_size, in_channels=self.in_channels,
                    hidden_size=self.hidden_size, depth=self.depth, num_heads=self.num_heads,
                    mlp_ratio=self.mlp_ratio, class_dropout_prob=self.class_dropout_prob,
                    num_classes=self.num_classes, learn_sigma=self.learn_sigma, block=self.block)

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

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, p·p·C) -> (N, C, I, I), the inverse of patchify's token order (row-major over the grid)."""
        c, p = self.out_channels, self.patch_size
        h = w = int(x.shape[1] ** 0.5)
        if h * w != x.shape[1]:
            raise ValueError(f"cannot unpatchify {x.shape[1]} tokens: not a square grid")
        x = x.reshape(x.shape[0], h, w, p, p, c)                               # (N, h, w, p, p, C)
        x = torch.einsum("nhwpqc->nchpwq", x)                                  # (N, C, h, p, w, p)
        return x.reshape(x.shape[0], c, h * p, w * p)                          # (N, C, I, I)

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (N, {self.in_channels}, {self.input_size}, {self.input_size}); "
                             f"got {tuple(x.shape)} (wrong channel count?)")
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"x is {x.shape[-2]}×{x.shape[-1]} but this model was built for "
                             f"{self.input_size}×{self.input_size} inputs")
        if t.shape != (x.shape[0],) or y.shape != (x.shape[0],):
            raise ValueError(f"t and y must have shape ({x.shape[0]},), one per image; got {tuple(t.shape)} and {tuple(y.shape)}")
        if y.dtype.is_floating_point:
            raise ValueError("y must hold integer class labels")
        if y.numel() and y.device.type != "meta" and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(f"class labels must lie in [0, {self.num_classes - 1}] "
                             f"(or {self.num_classes} for the null class); got min {int(y.min())}, max {int(y.max())}")

    def _run_block(self, block: nn.Module, *args) -> torch.Tensor:
        """One block; with `gradient_checkpointing` (training only) its activations are recomputed in backward."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C, I, I) noisy input; t: (N,) timesteps; y: (N,) labels. Returns (N, C_out, I, I).

        `force_drop_ids` (N,), 1 where the label is replaced by the null class, overrides the random
        label dropout (the distributed trainer draws it for the whole global batch; `ditlib.train`).
        """
        if not torch.compiler.is_compiling():                                  # the checks would break the graph
            self._check_inputs(x, t, y)
        x = self.x_embedder(x)                                                 # (N, T, D)
        # Keep the residual stream in the patch embedding's dtype (bf16 under autocast): adding the
        # fp32 table would silently promote every later add, modulate and LayerNorm to fp32.
        x = x + self.pos_embed.to(x.dtype)                                     # (N, T, D)
        t_emb, y_emb = self.t_embedder(t), self.y_embedder(y, self.training, force_drop_ids)   # each (N, D)

        if self.block == "in-context":                 # two extra tokens, removed after the last block
            cond_tokens = torch.stack([t_emb, y_emb], dim=1).to(x.dtype)       # (N, 2, D)
            x = torch.cat([x, cond_tokens], dim=1)                             # (N, T+2, D)
            for block in self.blocks:
                x = self._run_block(block, x)                                  # (N, T+2, D)
            x = self.final_layer(x[:, :-2])                                    # (N, T, p*p*C_out)
        elif self.block == "cross-attention":          # a separate length-2 sequence to attend to
            context = torch.stack([t_emb, y_emb], dim=1).to(x.dtype)           # (N, 2, D)
            for block in self.blocks:
                x = self._run_block(block, x, context)                         # (N, T, D)
            x = self.final_layer(x)                                            # (N, T, p*p*C_out)
        else:                                          # adaLN, adaLN-Zero: one vector c per image
            c = (t_emb + y_emb).to(x.dtype)                                    # (N, D)
            for block in self.blocks:
                x = self._run_block(block, x, c)                               # (N, T, D)
            x = self.final_layer(x, c)                                         # (N, T, p*p*C_out)
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
            raise ValueError("forward_with_cfg needs an even batch: [conditional; unconditional] halves")
        half = x[: len(x) // 2]
        combined = torch.cat([half, half], dim=0)
        model_out = self.forward(combined, t, y)                               # (N, C_out, I, I)
        k = self.in_channels if guided_channels is None else guided_channels
        if not 0 < k <= self.in_channels:
            raise ValueError(f"guided_channels must be in [1, {self.in_channels}], got {guided_channels}")
        eps, rest = model_out[:, :k], model_out[:, k:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        eps = torch.cat([half_eps, half_eps], dim=0)
        return torch.cat([eps, rest], dim=1)


#################################################################################
#                   Sine/cosine positional embeddings (ViT / MAE)               #
#################################################################################

def get_1d_sincos_pos_embed_from_grid(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """1-D table: for positions m (M,), returns (M, embed_dim) = [sin(m·ω_k), cos(m·ω_k)], ω_k = 10000^(-2k/D)."""
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000 ** omega                                              # (D/2,)
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)     # (M, D/2)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)                 # (M, D)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """2-D table for a grid_size × grid_size token grid: (grid_size², embed_dim).

    Token k = row·grid_size + col gets [1-D(col) | 1-D(row)], each half of the width
    (the column half first, as in the MAE/official DiT table).
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for a 2-D sin-cos table, got {embed_dim}")
    rows, cols = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64), indexing="ij")
    emb_col = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, cols)          # (T, D/2)
    emb_row = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, rows)          # (T, D/2)
    return np.concatenate([emb_col, emb_row], axis=1)                         # (T, D)


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


def _constructor(depth: int, hidden_size: int, num_heads: int, patch_size: int):
    def build(**kwargs) -> DiT:
        for key in ("depth", "hidden_size", "num_heads", "patch_size"):
            if key in kwargs:
                raise TypeError(f"{key} is fixed by the config name; use DiT(...) directly to change it")
        return DiT(depth=depth, hidden_size=hidden_size, num_heads=num_heads, patch_size=patch_size, **kwargs)
    build.__doc__ = f"DiT with depth={depth}, hidden_size={hidden_size}, num_heads={num_heads}, patch_size={patch_size}."
    return build


DiT_models = {
    f"DiT-{size}/{p}": _constructor(*dims, patch_size=p)
    for sizes, patches in ((PAPER_SIZES, (2, 4, 8)), (COURSE_SIZES, COURSE_PATCHES))
    for size, dims in sizes.items()
    for p in patches
}
PAPER_CONFIGS = [f"DiT-{s}/{p}" for s in PAPER_SIZES for p in (2, 4, 8)]


def build_model(name: str, **kwargs) -> DiT:
    """Build a registered config by name, e.g. `build_model('DiT-XL/2', input_size=32, num_classes=1000)`.

    Any `DiT` keyword other than the size fixes the name, e.g. `block='cross-attention'` (§3.2).
    """
    if name not in DiT_models:
        raise KeyError(f"unknown model config {name!r}; choose one of: {', '.join(DiT_models)}")
    return DiT_models[name](**kwargs)
