"""Checks of the transformer lessons 05–06: patchify, 1-D sine-cosine embeddings, multi-head self-attention,
the timestep embedding, adaLN's modulate and the adaLN-Zero DiT block. All but modulate refuse a function that
calls the routine it should write (einops or unfold, ditlib's sin-cos tables, scaled_dot_product_attention and
the attention modules, timestep_embedding, DiTBlock itself; `call_refusing`)."""
from __future__ import annotations

import math

import numpy as np
import torch

from .feedback import (as_tensor, call, call_refusing, exercise, expect_finite, expect_shape, expect_values,
                       library_folder, randn)

__all__ = ["check_patchify", "check_sincos_1d", "check_multi_head_attention", "check_embed_timestep", "check_modulate",
           "check_adaln_zero_block"]

#################################################################################
#               Lesson 05a: patchify, (N, C, H, W) -> (N, T, p·p·C)              #
#################################################################################

_PATCH_HINTS = {"broadcast": "split H and W into (H/p, p) and (W/p, p) with reshape before permuting",
                "TypeError": "check the signature patchify(x, patch_size) and use torch operations",
                "default": "check your reshape / permute steps"}
_PATCH_REFUSAL = ("Your function calls {name}: this exercise is patchify without einops or unfold — write it "
                  "yourself with reshape and permute only.")


def _patch_shortcuts() -> dict:
    """What patchify must not call: einops (every function of the package) and unfold (nn.Unfold too)."""
    einops = library_folder("einops")
    return {**({einops: "einops"} if einops else {}), torch.nn.functional.unfold: "torch.nn.functional.unfold"}


def _patches(x: torch.Tensor, p: int, tokens: str = "hw", features: str = "pqc") -> torch.Tensor:
    """Patchify with a given token order (over the grid h, w) and feature order (over p, q, c)."""
    n, c, H, W = x.shape
    dims = dict(c=1, h=2, p=3, w=4, q=5)
    y = x.reshape(n, c, H // p, p, W // p, p).permute(0, *[dims[k] for k in tokens + features])
    return y.reshape(n, (H // p) * (W // p), p * p * c)


@exercise("patchify")
def check_patchify(fn) -> str:
    cases = [((2, 3, 8, 8), 2, torch.float32, "2 RGB images of size 8×8 with p = 2"),
             ((1, 4, 16, 16), 4, torch.float32, "a single 4-channel 16×16 latent with p = 4"),
             ((3, 4, 8, 8), 4, torch.float64, "float64 latents with p = 4"),
             ((2, 3, 16, 16), 2, torch.float32, "2 RGB images of size 16×16 with p = 2")]
    g, shortcuts = torch.Generator().manual_seed(5), _patch_shortcuts()
    for shape, p, dtype, case in cases:
        x = randn(g, shape, dtype)
        n, c, H, W = shape
        T, D = (H // p) * (W // p), p * p * c
        out = as_tensor(call_refusing(fn, (x.clone(), p), _PATCH_HINTS, shortcuts, _PATCH_REFUSAL))
        expect_shape(out, (n, T, D), hint=" = (N, T, p·p·C)", known=[
            ((n, D, T), f"Your output is transposed: it should be (N, T, p·p·C) = {(n, T, D)}, one row per token."),
            ((n, H // p, W // p, D), "Flatten the (H/p, W/p) grid into a single token dimension: the output "
                                     "should be (N, T, p·p·C)."),
        ])
        expect_finite(out)
        variants = [
            (_patches(x, p, features="cpq"), "Each token's features are in (c, p, q) order; ditlib expects (p, q, c) "
                                             "— channels last, i.e. 'n c (h p) (w q) -> n (h w) (p q c)', which is "
                                             "what unpatchify inverts."),
            (_patches(x, p, features="qpc"), "Inside each patch you swapped rows and columns: features should be "
                                             "ordered (p, q, c) = (row in the patch, column in the patch, channel)."),
            (_patches(x, p, tokens="wh"), "Your tokens are in column-major order; ditlib expects row-major order over "
                                          "the (H/p, W/p) grid, token index = row·(W/p) + col."),
            (x.reshape(n, T, D), "A plain reshape mixes pixels from different patches — reshape to (N, C, H/p, p, W/p, p), "
                                 "permute to (N, H/p, W/p, p, p, C), then reshape to (N, T, p·p·C)."),
        ]
        expect_values(out, _patches(x, p), variants, atol=1e-6, rtol=0.0, case=case,
                      formula="rearrange(x, 'n c (h p) (w q) -> n (h w) (p q c)')")
    return f"patchify matches rearrange 'n c (h p) (w q) -> n (h w) (p q c)' on {len(cases)} test cases."

#################################################################################
#           Lesson 05b: 1-D sine-cosine positional embeddings (ViT / MAE)        #
#################################################################################

_S_HINTS = {"TypeError": "check the signature sincos_1d(embed_dim, positions); positions may be a NumPy array or "
                         "a torch tensor of shape (M,)",
            "AttributeError": "positions may be a NumPy array or a torch tensor of shape (M,), so convert them "
                              "first, e.g. with torch.as_tensor(positions)",
            "default": "check your implementation of [sin(m·ω_k) …, cos(m·ω_k) …] with ω_k = 1/10000^(2k/D)"}
_S_REFUSAL = ("Your function calls ditlib's {name}: this exercise asks you to build the sine-cosine table "
              "yourself, with torch (or NumPy) operations.")


def _sincos(D: int, pos: torch.Tensor, omega=None, layout: str = "sin|cos") -> torch.Tensor:
    k = torch.arange(D // 2, dtype=torch.float64)
    omega = 1.0 / 10000 ** (2 * k / D) if omega is None else omega
    arg = pos.double()[:, None] * omega[None, :]
    s, c = arg.sin(), arg.cos()
    if layout == "interleaved":
        return torch.stack([s, c], dim=-1).reshape(len(pos), D)
    return torch.cat([s, c] if layout == "sin|cos" else [c, s], dim=1)


@exercise("sincos_1d")
def check_sincos_1d(fn) -> str:
    from ..layers import get_1d_sincos_pos_embed_from_grid, get_2d_sincos_pos_embed, timestep_embedding

    shortcuts = {get_2d_sincos_pos_embed: "get_2d_sincos_pos_embed",
                 get_1d_sincos_pos_embed_from_grid: "get_1d_sincos_pos_embed_from_grid",
                 timestep_embedding: "timestep_embedding"}
    cases = [(8, np.arange(6, dtype=np.float64), "D = 8 and NumPy positions 0 … 5"),
             (16, torch.tensor([0.0, 2.5, 7.0, 15.0]), "D = 16 and float32 torch positions"),
             (4, np.array([3.0]), "a single position"),
             (32, torch.arange(10, dtype=torch.float64), "D = 32 and torch positions 0 … 9")]
    for D, positions, case in cases:
        pos = torch.as_tensor(positions).double()
        M = len(pos)
        given = positions.copy() if isinstance(positions, np.ndarray) else positions.clone()
        out = as_tensor(call_refusing(fn, (D, given), _S_HINTS, shortcuts, _S_REFUSAL), numpy_ok=True)
        expect_shape(out, (M, D), hint=" = (M, embed_dim)", known=[
            ((D, M), f"Your output is transposed: it should be (M, embed_dim) = {(M, D)}, one row per position."),
            ((M, D // 2), "Your output has only D/2 features: concatenate the D/2 sines and the D/2 cosines."),
        ])
        expect_finite(out)
        k = torch.arange(D // 2, dtype=torch.float64)
        variants = [
            (_sincos(D, pos, layout="cos|sin"), "Your halves are swapped: ditlib puts all the sines first, then all "
                                                "the cosines, [sin(m·ω_k) …, cos(m·ω_k) …]."),
            (_sincos(D, pos, layout="interleaved"), "You interleaved sin and cos (sin, cos, sin, cos, …); ditlib "
                                                    "concatenates them: first all D/2 sines, then all D/2 cosines."),
            (_sincos(D, pos, omega=1.0 / 10000 ** (k / D)), "Your frequencies use the exponent k/D; it should be "
                                                            "2k/D, ω_k = 1/10000^(2k/D) for k = 0 … D/2−1."),
            (_sincos(D, pos, omega=10000.0 ** (2 * k / D)), "Your frequencies grow with k; they should shrink, "
                                                            "ω_k = 1/10000^(2k/D) for k = 0 … D/2−1."),
        ]
        expect_values(out, _sincos(D, pos), variants, atol=1e-5, rtol=0.0, case=case,
                      formula="[sin(m·ω_k) for all k, then cos(m·ω_k) for all k] with ω_k = 1/10000^(2k/D)")
    return (f"sincos_1d matches [sin(m·ω_k), cos(m·ω_k)] with ω_k = 1/10000^(2k/D) "
            f"on {len(cases)} test cases.")

#################################################################################
#        Lesson 05c: multi-head self-attention, softmax(q·kᵀ/√d_head)·v          #
#################################################################################

_ATTN_HINTS = {"broadcast": "attention.qkv(x) has 3·D features per token: reshape it to (B, T, 3, heads, D/heads) "
                            "and permute to (3, B, heads, T, D/heads) before taking q, k, v",
               "TypeError": "check the signature multi_head_attention(attention, x) and use torch operations",
               "default": "q, k, v from attention.qkv(x) split into heads; softmax(q·kᵀ/√d_head)·v per head; merge "
                          "the heads; attention.proj"}
_ATTN_REFUSAL = ("Your function calls {name}: this exercise asks you to write the attention yourself — q, k, v from "
                 "attention.qkv, the softmax of the scaled scores, the heads merged, then attention.proj.")


def _attention_shortcuts() -> dict:
    from ..layers import Attention
    return {Attention.forward: "ditlib's Attention",
            torch.nn.functional.scaled_dot_product_attention: "torch.nn.functional.scaled_dot_product_attention",
            torch.nn.MultiheadAttention.forward: "torch.nn.MultiheadAttention",          # outermost first
            torch.nn.functional.multi_head_attention_forward: "torch.nn.functional.multi_head_attention_forward"}


def _attention(attn, x, layout="3h", scale="head", softmax_dim=-1, heads="permute", proj=True) -> torch.Tensor:
    """Multi-head self-attention in plain torch; the keyword arguments build the known-wrong variants."""
    B, T, D = x.shape
    h = attn.num_heads
    qkv = attn.qkv(x)
    if layout == "3h":
        q, k, v = qkv.reshape(B, T, 3, h, D // h).permute(2, 0, 3, 1, 4)              # each (B, h, T, d)
    else:                                                                         # heads outside: (B, T, h, 3, d)
        q, k, v = qkv.reshape(B, T, h, 3, D // h).permute(3, 0, 2, 1, 4)
    if heads == "reshape":                                                        # heads split without a permute
        q, k, v = (z.transpose(1, 2).reshape(B, T, D).reshape(B, h, T, D // h) for z in (q, k, v))
    d = {"head": D // h, "width": D, "none": 1}[scale]
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=softmax_dim)    # (B, h, T, T)
    out = (w @ v).transpose(1, 2).reshape(B, T, D)
    return attn.proj(out) if proj else out


def _random_module(build, g: torch.Generator, dtype, scale: float) -> torch.nn.Module:
    """build() with every weight redrawn from `g` times `scale`; the module's own init leaves the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        module = build().to(dtype)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(randn(g, p.shape, dtype) * scale)
    return module


@exercise("multi_head_attention")
def check_multi_head_attention(fn) -> str:
    from ..layers import Attention

    cases = [(2, 5, 12, 3, torch.float32, "a batch of 2 with 5 tokens of width 12 and 3 heads"),
             (1, 4, 8, 1, torch.float32, "a single sequence of 4 tokens and one head"),
             (3, 7, 16, 4, torch.float64, "float64 inputs, 3 sequences of 7 tokens, 4 heads")]
    g = torch.Generator().manual_seed(9)
    for B, T, D, h, dtype, case in cases:
        attn = _random_module(lambda: Attention(D, h), g, dtype, 0.5)
        x = randn(g, (B, T, D), dtype)
        with torch.no_grad():
            out = as_tensor(call_refusing(fn, (attn, x.clone()), _ATTN_HINTS, _attention_shortcuts(), _ATTN_REFUSAL))
            expect_shape(out, (B, T, D), hint=" (the shape of x)")
            expect_finite(out)
            run = lambda **kw: _attention(attn, x, **kw)  # noqa: E731
            variants = [
                (run(scale="none"), "You forgot to scale the scores: divide q·kᵀ by √d_head before the softmax, or "
                                    "the softmax saturates as the width grows."),
                (run(scale="width") if h > 1 else None, "You scaled the scores by √D, the model width; divide by √d_head "
                                                        "= √(D/heads), the width of one head."),
                (run(softmax_dim=-2), "Your softmax runs over the queries: take it over the keys (the last dimension "
                                      "of the (T, T) scores), so that each query's weights sum to 1."),
                (run(proj=False), "You left out the output projection: after merging the heads, apply attention.proj."),
                (run(layout="h3") if h > 1 else None,
                 "Your q, k, v are cut from the wrong features: qkv(x) is laid out as (3, heads, d_head), so reshape "
                 "it to (B, T, 3, heads, d_head)."),
                (run(heads="reshape") if h > 1 else None,
                 "You split the heads with a reshape alone: (B, T, D) → (B, T, heads, d_head) → transpose to (B, "
                 "heads, T, d_head); a reshape straight to (B, heads, T, d_head) mixes tokens and heads."),
            ]
            expect_values(out, run(), variants, atol=1e-4, rtol=1e-4, case=case,
                          formula="proj(concat_heads(softmax(q·kᵀ/√d_head)·v)) with q, k, v from qkv(x)")
    return f"multi_head_attention matches ditlib's Attention on {len(cases)} test cases."

#################################################################################
#          Lesson 06: the timestep embedding, sinusoids then an MLP             #
#################################################################################

_T_HINTS = {"broadcast": "build the (N, half) angles as t[:, None] · ω[None, :] with half = mlp[0].in_features // 2",
            "TypeError": "check the signature embed_timestep(t, mlp): t is an (N,) tensor, mlp the two-layer MLP",
            "default": "features = [cos(t·ω_k), sin(t·ω_k)] with ω_k = 10000^(−k/half), then mlp(features)"}
_T_REFUSAL = ("Your function calls {name}: this exercise asks you to build the sinusoidal features yourself "
              "(ω_k, the cosines, the sines), then apply the MLP.")


def _t_shortcuts() -> dict:
    from ..layers import TimestepEmbedder, get_1d_sincos_pos_embed_from_grid, timestep_embedding
    return {TimestepEmbedder.forward: "ditlib's TimestepEmbedder", timestep_embedding: "ditlib's timestep_embedding",
            get_1d_sincos_pos_embed_from_grid: "ditlib's get_1d_sincos_pos_embed_from_grid"}


def _t_features(t, dim, order="cos|sin", per="half", t_scale=1.0) -> torch.Tensor:
    half = dim // 2
    k = torch.arange(half, dtype=torch.float64)
    freqs = torch.exp(-math.log(10000.0) * k / {"half": half, "dim": dim}[per])
    args = t.double()[:, None] * t_scale * freqs[None]
    parts = [args.cos(), args.sin()] if order == "cos|sin" else [args.sin(), args.cos()]
    return torch.cat(parts, dim=1)


@exercise("embed_timestep")
def check_embed_timestep(fn) -> str:
    cases = [([0, 1, 250, 999], 256, 32, torch.float32, "t = 0, 1, 250, 999 with DiT's 256 features"),
             ([7], 16, 8, torch.float32, "a batch of one t with 16 features"),
             ([0, 17, 500], 64, 12, torch.float64, "a float64 MLP and 64 features")]
    g = torch.Generator().manual_seed(12)
    for t_list, dim, D, dtype, case in cases:
        mlp = _random_module(lambda: torch.nn.Sequential(torch.nn.Linear(dim, D), torch.nn.SiLU(), torch.nn.Linear(D, D)),
                             g, dtype, 0.3)
        t = torch.tensor(t_list)
        with torch.no_grad():
            out = as_tensor(call_refusing(fn, (t.clone(), mlp), _T_HINTS, _t_shortcuts(), _T_REFUSAL))
            N = len(t_list)
            expect_shape(out, (N, D), known=[((N, dim), "You returned the sinusoidal features: pass them through the "
                                                        "MLP as well, mlp(features).")],
                         hint=" (one D-vector per timestep)")
            expect_finite(out)
            run = lambda **kw: mlp(_t_features(t, dim, **kw).to(dtype))  # noqa: E731
            variants = [
                (run(order="sin|cos"), "Your halves are swapped: DiT's timestep features put the cosines first, "
                                       "[cos(t·ω), sin(t·ω)] (the positional table of lesson 05 puts the sines first)."),
                (run(per="dim"), "Your frequencies fall too slowly: ω_k = 10000^(−k/half) with half = dim/2, not "
                                 "10000^(−k/dim)."),
                (run(t_scale=1 / 1000), "You divided t by 1000: DiT embeds the integer timestep itself, t ∈ 0 … 999."),
            ]
            expect_values(out, run(), variants, atol=1e-4, rtol=1e-4, case=case,
                          formula="mlp([cos(t·ω_k), sin(t·ω_k)]) with ω_k = 10000^(−k/half)")
    return f"embed_timestep matches ditlib's TimestepEmbedder on {len(cases)} test cases."

#################################################################################
#        Lesson 06a: adaLN's modulate, x·(1 + γ) + β broadcast over tokens       #
#################################################################################

_MOD_HINTS = {"broadcast": "shift and scale are (N, D): unsqueeze them to (N, 1, D) so that they broadcast over "
                           "the T tokens of x (N, T, D)",
              "TypeError": "check the signature modulate(x, shift, scale) and use torch operations",
              "default": "compute x·(1 + scale) + shift with scale and shift unsqueezed to (N, 1, D)"}


@exercise("modulate")
def check_modulate(fn) -> str:
    cases = [((2, 5, 8), torch.float32, "x of shape (2, 5, 8)"),
             ((3, 3, 4), torch.float32, "a batch of 3 with 3 tokens (N = T)"),
             ((1, 7, 6), torch.float64, "a single float64 sample with 7 tokens"),
             ((4, 4, 16), torch.float32, "a batch of 4 with 4 tokens of width 16")]
    g = torch.Generator().manual_seed(6)
    for shape, dtype, case in cases:
        n, T, D = shape
        x, shift, scale = randn(g, shape, dtype), randn(g, (n, D), dtype), randn(g, (n, D), dtype)
        out = as_tensor(call(fn, (x.clone(), shift.clone(), scale.clone()), _MOD_HINTS))
        expect_shape(out, shape, hint=" (the shape of x) — unsqueeze shift and scale to (N, 1, D)")
        expect_finite(out)
        x64, b, s = x.double(), shift.double()[:, None], scale.double()[:, None]    # b, s: (N, 1, D)
        variants = [
            (x64 * s + b, "It looks like you forgot the 1 +: adaLN scales by (1 + γ), so that γ = 0 (a zero "
                          "regression output) leaves the normalised x unchanged — x·(1 + scale) + shift."),
            (x64 * (1 + b) + s, "shift and scale are swapped: the output is x·(1 + scale) + shift, so scale "
                                "multiplies and shift is added."),
            ((x64 + b) * (1 + s), "You added the shift before scaling: the order is x·(1 + scale) + shift, "
                                  "the shift is added last."),
            (x64 * (1 + scale.double()[None]) + shift.double()[None] if T == n else None,
             "It looks like shift and scale broadcast along the token dimension instead of the batch: unsqueeze "
             "them to (N, 1, D), e.g. scale.unsqueeze(1), so every token of sample i gets sample i's shift and scale."),
        ]
        expect_values(out, x64 * (1 + s) + b, variants, atol=1e-5, rtol=1e-4, case=case,
                      formula="x·(1 + scale) + shift with shift, scale unsqueezed to (N, 1, D)")
    return f"modulate matches x·(1 + scale) + shift, broadcast over tokens, on {len(cases)} test cases."

#################################################################################
#             Lesson 06b: the adaLN-Zero DiT block's forward (§3.2)              #
#################################################################################

_BLOCK_HINTS = {"broadcast": "the six modulation vectors are (N, D): unsqueeze them to (N, 1, D) to broadcast over "
                             "the tokens (modulate does it for shift and scale; do it for the gates too)",
                "AttributeError": "use the block's submodules norm1, attn, norm2, mlp and adaLN_modulation",
                "TypeError": "check the signature adaln_zero_block_forward(block, x, c)",
                "default": "split block.adaLN_modulation(c) into six (N, D) chunks and build the two gated "
                           "residual branches"}
_BLOCK_REFUSAL = ("Your function calls ditlib's DiTBlock itself (block(x, c) or its forward): this exercise asks you "
                  "to write that forward pass yourself, from block.adaLN_modulation, modulate, block.attn and "
                  "block.mlp.")


def _random_dit_block(g: torch.Generator, hidden_size: int, num_heads: int, dtype) -> torch.nn.Module:
    """A DiTBlock with every weight drawn from `g` (non-zero modulation, so the gates matter)."""
    from ..models import DiTBlock

    with torch.random.fork_rng(devices=[]):            # nn.Linear's own init must not touch the global RNG
        block = DiTBlock(hidden_size, num_heads, mlp_ratio=2.0)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(randn(g, p.shape) * (0.5 / math.sqrt(p.shape[-1])) + (0.1 if p.ndim == 1 else 0.0))
    return block.to(dtype).eval()


def _block_variant(block, x, c, order=("shift", "scale", "gate"), gates="branch", fresh_norm=True):
    """The adaLN-Zero block with a mistake: chunk `order`, `gates` in {"branch", "none", "stream", "both"},
    or (fresh_norm=False) the MLP branch reusing the first normalisation of x."""
    from ..models import modulate

    chunks = block.adaLN_modulation(c).chunk(6, dim=1)
    msa = dict(zip(order, chunks[:3]))
    mlp = dict(zip(order, chunks[3:]))
    h0 = block.norm1(x)

    def branch(x, mod, layer, h):
        out = layer(modulate(h, mod["shift"], mod["scale"]))
        gate = mod["gate"].unsqueeze(1)
        return {"branch": x + gate * out, "none": x + out, "stream": gate * x + out, "both": gate * (x + out)}[gates]

    x = branch(x, msa, block.attn, h0)
    return branch(x, mlp, block.mlp, block.norm2(x) if fresh_norm else h0)


@exercise("adaln_zero_block")
def check_adaln_zero_block(fn) -> str:
    from ..models import DiTBlock

    cases = [(2, 5, 16, 2, torch.float32, "a batch of 2 with 5 tokens of width 16"),
             (1, 4, 8, 2, torch.float32, "a single sample with 4 tokens"),
             (3, 6, 12, 3, torch.float64, "float64 inputs, 3 samples, 6 tokens, 3 heads")]
    g = torch.Generator().manual_seed(7)
    for n, T, D, heads, dtype, case in cases:
        block = _random_dit_block(g, D, heads, dtype)
        x, c = randn(g, (n, T, D), dtype), randn(g, (n, D), dtype)
        with torch.no_grad():
            out = as_tensor(call_refusing(fn, (block, x.clone(), c.clone()), _BLOCK_HINTS,
                                          {DiTBlock.forward: "DiTBlock"}, _BLOCK_REFUSAL))
            expect_shape(out, (n, T, D), hint=" (the shape of x)")
            expect_finite(out)
            ref = block(x, c)
            variants = [
                (_block_variant(block, x, c, gates="none"), "It looks like you left out the gates α: each branch "
                 "is multiplied by its gate before the residual add, x + gate.unsqueeze(1)·branch (that is the "
                 "'Zero' of adaLN-Zero)."),
                (_block_variant(block, x, c, gates="stream"), "The gate multiplies the residual stream; it should "
                 "multiply the branch output: x + gate·attn(modulate(norm1(x), shift, scale))."),
                (_block_variant(block, x, c, gates="both"), "The gate multiplies the sum x + branch; it should "
                 "multiply the branch output only: x + gate·attn(modulate(norm1(x), shift, scale))."),
                (_block_variant(block, x, c, order=("scale", "shift", "gate")), "Your chunks are in the wrong "
                 "order: adaLN_modulation(c).chunk(6, dim=1) gives (shift, scale, gate) for attention, then "
                 "(shift, scale, gate) for the MLP."),
                (_block_variant(block, x, c, order=("gate", "shift", "scale")), "Your chunks are in the wrong "
                 "order: the gate comes last, (shift, scale, gate) for attention, then the same for the MLP."),
                (_block_variant(block, x, c, fresh_norm=False), "The MLP branch reuses norm1(x) from before the "
                 "attention update: normalise the updated x again with norm2(x) after the first residual add."),
            ]
            expect_values(out, ref, variants, atol=1e-4, rtol=1e-4, case=case,
                          formula="x + α1·attn(modulate(norm1(x), β1, γ1)), then x + α2·mlp(modulate(norm2(x), β2, γ2))")
    return f"adaln_zero_block_forward matches ditlib's DiTBlock with random modulation weights on {len(cases)} test cases."
