"""The layers a DiT is built from (§3.2), below the block designs of `ditlib.models`.

In the order the paper introduces them: `modulate` (adaLN's shift and scale), the embedding layers
(patchify as `PatchEmbed`, the sinusoidal `timestep_embedding` and its MLP `TimestepEmbedder`, the
class-label `LabelEmbedder` with its null class for classifier-free guidance), the transformer's
`Attention`, `CrossAttention` and `Mlp`, and the fixed 2-D sin-cos positional table of ViT/MAE.
Module and parameter names are those of the official code, so its checkpoints load unchanged.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConfigError


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
#                     Attention and MLP, the transformer's layers                #
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


#################################################################################
#                   Sine/cosine positional embeddings (ViT / MAE)               #
#################################################################################

def get_1d_sincos_pos_embed_from_grid(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """1-D table: for positions m (M,), returns (M, embed_dim) = [sin(m·ω_k), cos(m·ω_k)], ω_k = 10000^(-2k/D)."""
    if embed_dim % 2:
        raise ConfigError(f"embed_dim must be even, got {embed_dim}")
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
        raise ConfigError(f"embed_dim must be divisible by 4 for a 2-D sin-cos table, got {embed_dim}")
    rows, cols = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64), indexing="ij")
    emb_col = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, cols)          # (T, D/2)
    emb_row = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, rows)          # (T, D/2)
    return np.concatenate([emb_col, emb_row], axis=1)                         # (T, D)


def guided_output(model_out: torch.Tensor, in_channels: int, cfg_scale: float,
                  guided_channels: int | None = None) -> torch.Tensor:
    """Classifier-free guidance (§4) on a [conditional half; null-class half] batch of model outputs:
    ε̂ = ε(x, ∅) + s·(ε(x, y) − ε(x, ∅)) on the first `guided_channels` ε channels (all `in_channels` by default;
    3 is how the official checkpoints were evaluated), written to both halves; the Σ channels pass unguided.
    model_out: (N, C_out, I, I) -> (N, C_out, I, I). Shared by `DiT` and the U-Net baseline."""
    k = in_channels if guided_channels is None else guided_channels
    if not 0 < k <= in_channels:
        raise ConfigError(f"guided_channels must be in [1, {in_channels}], got {guided_channels}")
    eps, rest = model_out[:, :k], model_out[:, k:]
    cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
    half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
    return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)
