"""Specification of the checks of multi-head self-attention (lesson 05) and of the timestep embedding (lesson 06):
a written-out solution passes, each typical mistake is named, and the library's routines are refused."""
import math

import torch
import torch.nn.functional as F

from ditlib.course.checks_transformer import check_embed_timestep, check_multi_head_attention
from ditlib.course.feedback import CHECKS, Feedback
from ditlib.layers import Attention, TimestepEmbedder, timestep_embedding
from exercise_helpers import fails_with


def multi_head_attention(attention, x, scale="head", softmax_dim=-1, proj=True, split="3h"):
    B, T, D = x.shape
    h = attention.num_heads
    if split == "3h":
        q, k, v = attention.qkv(x).reshape(B, T, 3, h, D // h).permute(2, 0, 3, 1, 4)     # each (B, h, T, d)
    else:
        q, k, v = attention.qkv(x).reshape(B, T, h, 3, D // h).permute(3, 0, 2, 1, 4)
    d = {"head": D // h, "width": D, "none": 1}[scale]
    weights = (q @ k.transpose(-2, -1) / math.sqrt(d)).softmax(dim=softmax_dim)
    out = (weights @ v).transpose(1, 2).reshape(B, T, D)
    return attention.proj(out) if proj else out


def embed_timestep(t, mlp, order="cos|sin", per="half", t_scale=1.0, use_mlp=True):
    dim = mlp[0].in_features
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / (half if per == "half" else dim))
    args = t[:, None].double() * t_scale * freqs[None]
    parts = [args.cos(), args.sin()] if order == "cos|sin" else [args.sin(), args.cos()]
    features = torch.cat(parts, dim=1).to(mlp[0].weight.dtype)
    return mlp(features) if use_mlp else features


_fails_with = fails_with


def test_the_written_out_attention_passes_and_equals_ditlibs_attention():
    assert CHECKS["multi_head_attention"] is check_multi_head_attention
    fb = check_multi_head_attention(multi_head_attention)
    assert fb.passed, fb.message
    attention = Attention(dim=24, num_heads=4)
    x = torch.randn(2, 9, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(multi_head_attention(attention, x), attention(x), atol=1e-5)


def test_attention_mistakes_are_named():
    mha = multi_head_attention
    _fails_with(check_multi_head_attention, lambda a, x: mha(a, x, scale="none"), "forgot to scale", "√d_head")
    _fails_with(check_multi_head_attention, lambda a, x: mha(a, x, scale="width"), "√D, the model width")
    _fails_with(check_multi_head_attention, lambda a, x: mha(a, x, softmax_dim=-2), "over the queries", "keys")
    _fails_with(check_multi_head_attention, lambda a, x: mha(a, x, proj=False), "output projection", "attention.proj")
    _fails_with(check_multi_head_attention, lambda a, x: mha(a, x, split="h3"), "wrong features", "(B, T, 3, heads, d_head)")
    _fails_with(check_multi_head_attention, lambda a, x: x[:, :1], "shape")


def test_attention_check_refuses_the_library_and_torch_attention():
    def via_sdpa(attention, x):
        B, T, D = x.shape
        h = attention.num_heads
        q, k, v = attention.qkv(x).reshape(B, T, 3, h, D // h).permute(2, 0, 3, 1, 4)
        return attention.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, D))
    _fails_with(check_multi_head_attention, via_sdpa, "scaled_dot_product_attention", "write the attention yourself")
    _fails_with(check_multi_head_attention, lambda a, x: a(x), "calls ditlib's Attention")
    _fails_with(check_multi_head_attention, lambda a, x: Attention.forward(a, x), "calls ditlib's Attention")

    def via_torch_module(attention, x):
        D = x.shape[-1]
        torch_attention = torch.nn.MultiheadAttention(D, attention.num_heads, batch_first=True).to(x.dtype)
        return torch_attention(x, x, x)[0]
    _fails_with(check_multi_head_attention, via_torch_module, "torch.nn.MultiheadAttention")


def test_the_written_out_timestep_embedding_passes_and_equals_ditlibs_embedder():
    assert CHECKS["embed_timestep"] is check_embed_timestep
    fb = check_embed_timestep(embed_timestep)
    assert fb.passed, fb.message
    embedder = TimestepEmbedder(hidden_size=32)
    t = torch.tensor([0, 3, 400, 999])
    with torch.no_grad():
        assert torch.allclose(embed_timestep(t, embedder.mlp), embedder(t), atol=1e-5)


def test_timestep_mistakes_are_named():
    _fails_with(check_embed_timestep, lambda t, m: embed_timestep(t, m, order="sin|cos"), "swapped", "cosines first")
    _fails_with(check_embed_timestep, lambda t, m: embed_timestep(t, m, per="dim"), "10000^(−k/half)")
    _fails_with(check_embed_timestep, lambda t, m: embed_timestep(t, m, t_scale=1e-3), "divided t by 1000")
    _fails_with(check_embed_timestep, lambda t, m: embed_timestep(t, m, use_mlp=False), "sinusoidal features", "mlp")


def test_timestep_check_refuses_ditlibs_embedding():
    _fails_with(check_embed_timestep, lambda t, m: m(timestep_embedding(t, m[0].in_features).to(m[0].weight.dtype)),
                "calls ditlib's timestep_embedding", "build the sinusoidal features yourself")

    def via_embedder(t, mlp):
        embedder = TimestepEmbedder(mlp[-1].out_features, mlp[0].in_features).to(mlp[0].weight.dtype)
        embedder.mlp = mlp
        return embedder(t)
    _fails_with(check_embed_timestep, via_embedder, "TimestepEmbedder")


def test_both_checks_leave_the_global_random_state_alone():
    for check, solution in ((check_multi_head_attention, multi_head_attention), (check_embed_timestep, embed_timestep)):
        state = torch.random.get_rng_state()
        check(solution)
        assert torch.equal(state, torch.random.get_rng_state()), check.__name__
