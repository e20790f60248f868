# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Patchify: turning a latent image into a sequence of tokens
#
# A transformer reads sequences. DiT's first layer cuts its input (the 32×32×4 latent of lesson 04)
# into p×p patches, embeds each one as a token, and adds a fixed code for where the patch came from.
# Its last layer undoes the cut. This lesson builds both directions by hand, shows that the patch
# embedding is just a linear layer, follows the patch size p through to the compute of Table 4, and has
# you write the self-attention that the tokens go through next.
#
# **Learning objectives.** After this lesson you can
# 1. patchify and unpatchify with `einops` and with plain reshapes, in the token and feature order DiT uses;
# 2. show that a p×p convolution with stride p is a linear layer applied to each flattened patch;
# 3. predict the sequence length T = (I/p)² and how the Gflops of a DiT grow as p shrinks (Table 4);
# 4. write multi-head self-attention from its query-key-value and output layers;
# 5. build the 2-D sine-cosine positional embedding from 1-D ones, and say why a transformer needs one.
#
# **Paper.** DiT §3.2 *Patchify*: the input z of shape I×I×C becomes a sequence of T tokens of width d by
# linearly embedding each p×p patch, followed by the fixed sine-cosine positional embeddings of ViT;
#
# $$T = (I/p)^2, \qquad p \in \{2, 4, 8\};$$
#
# halving p quadruples T and at least quadruples the Gflops (Figure 4). §3.2 *Transformer decoder*: a
# linear layer maps each final token to p×p×2C numbers (noise and Σ), which are rearranged back into the
# I×I×2C layout. Table 4: the Gflops of the twelve configurations S/B/L/XL × p.
#
# *Quick mode* (`DITLIB_QUICK=1`) changes nothing here: every cell already runs in a second or less.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ditlib.course import exercises, viz
from ditlib.data import FashionMNIST
from ditlib.flops import PAPER_GFLOPS, gflops, gflops_table
from ditlib.models import (PAPER_SIZES, Attention, PatchEmbed, build_model, get_1d_sincos_pos_embed_from_grid,
                           get_2d_sincos_pos_embed)
from ditlib.sample import Pretrained

torch.manual_seed(0)
boot, _ = FashionMNIST("test").examples(per_class=1, classes=[9])      # (1, 1, 32, 32) in [-1, 1]
latents = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))   # the paper's latent shape I×I×C
fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.4))
for ax, p in zip(axes, (2, 4, 8)):
    viz.show_patches(boot[0], p, ax=ax)

# %% [markdown]
# The same 32×32 image cut three ways. Tokens are numbered row by row over the (I/p)×(I/p) grid. Every
# token carries all the numbers of its patch: p·p·C of them.
#
# ## 1. Patchify with `einops`
#
# `einops.rearrange` writes the cut as a pattern: split each spatial axis into (grid position, offset in
# the patch), then gather the grid positions into the token axis and the offsets and channels into the
# feature axis. The order DiT uses is row-major tokens and features ordered (row in patch, column in
# patch, channel):

# %%
# NBVAL_CHECK_OUTPUT
p = 8
tokens = rearrange(boot, "n c (h p) (w q) -> n (h w) (p q c)", p=p, q=p)     # (1, 16, 64)
print(f"image {tuple(boot.shape)} -> tokens {tuple(tokens.shape)}: T = (32/{p})² = {tokens.shape[1]}, "
      f"p·p·C = {tokens.shape[2]} numbers each")
k = 6                                                                         # any token
row, col = divmod(k, 32 // p)                                                 # its place on the 4×4 grid
assert torch.equal(tokens[0, k], boot[0, 0, row * p:(row + 1) * p, col * p:(col + 1) * p].flatten())
print(f"token {k} is the patch at grid row {row}, column {col}, read row by row")

# %% [markdown]
# Each token, reshaped back to p×p, is one tile of the picture:

# %%
tiles = rearrange(boot, "n c (h p) (w q) -> (n h w) c p q", p=p, q=p)         # (16, 1, 8, 8)
viz.show_images(tiles, nrow=4, titles=[f"token {i}" for i in range(len(tiles))], size=1.0);

# %% [markdown]
# ## 2. Back to an image: unpatchify
#
# DiT's decoder produces one vector of p·p·C_out numbers per token, and `DiT.unpatchify` lays them back
# out as an image. It must be the exact inverse of the cut above. Check it on the paper's latents with the
# DiT-XL/2 layout (built on PyTorch's `meta` device: shapes only, no weights, no memory):

# %%
# NBVAL_CHECK_OUTPUT
with torch.device("meta"):
    xl2 = build_model("DiT-XL/2", learn_sigma=False)                          # input 32×32×4, p = 2
latent_tokens = rearrange(latents, "n c (h p) (w q) -> n (h w) (p q c)", p=2, q=2)   # (2, 256, 16)
assert torch.equal(xl2.unpatchify(latent_tokens), latents)
assert torch.equal(rearrange(latent_tokens, "n (h w) (p q c) -> n c (h p) (w q)", h=16, p=2, q=2), latents)
print(f"latents {tuple(latents.shape)} -> tokens {tuple(latent_tokens.shape)} -> unpatchify -> {tuple(latents.shape)}")
with torch.device("meta"):
    print(f"the real DiT-XL/2 (learn_sigma) decodes each token into p·p·2C = "
          f"{build_model('DiT-XL/2').final_layer.linear.out_features} numbers: ε and Σ for 2×2×4 latent values")

# %% [markdown]
# ## 3. Exercise: patchify without `einops`
#
# Write `patchify(x, patch_size)` with `reshape` and `permute` only: (N, C, H, W) → (N, T, p·p·C), tokens
# row-major over the (H/p, W/p) grid, features ordered (p_row, p_col, c), exactly as
# `rearrange(x, "n c (h p) (w q) -> n (h w) (p q c)")`. Hint: first split H into (H/p, p) and W into
# (W/p, p), then move the axes into the order (N, H/p, W/p, p, p, C).

# %% nbgrader={"grade": false, "grade_id": "patchify", "locked": false, "schema_version": 3, "solution": true, "task": false}
def patchify(x, patch_size):
    ### BEGIN SOLUTION
    n, c, h, w = x.shape
    p = patch_size
    x = x.reshape(n, c, h // p, p, w // p, p)                 # (N, C, H/p, p, W/p, p)
    x = x.permute(0, 2, 4, 3, 5, 1)                           # (N, H/p, W/p, p, p, C)
    return x.reshape(n, (h // p) * (w // p), p * p * c)       # (N, T, p·p·C)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_patchify", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_patchify(patchify)
display(feedback)
### BEGIN HIDDEN TESTS
exercises.require(feedback)
gen_check = torch.Generator().manual_seed(5)             # also against einops on a float64 12×12 batch, every patch size
x_check = torch.randn(2, 3, 12, 12, dtype=torch.float64, generator=gen_check)
for p_check in (1, 2, 3, 4, 6, 12):
    assert torch.equal(patchify(x_check, p_check), rearrange(x_check, "n c (h p) (w q) -> n (h w) (p q c)", p=p_check, q=p_check)), \
        f"patchify disagrees with einops at patch size {p_check} on a (2, 3, 12, 12) float64 batch"
### END HIDDEN TESTS

# %% [markdown]
# Your function, `einops` and `ditlib` agree, for every patch size:

# %%
for p in (2, 4, 8):
    with torch.device("meta"):
        model = build_model(f"DiT-XL/{p}", learn_sigma=False)
    assert torch.equal(patchify(latents, p), rearrange(latents, "n c (h p) (w q) -> n (h w) (p q c)", p=p, q=p))
    assert torch.equal(model.unpatchify(patchify(latents, p)), latents)
print("unpatchify(patchify(x)) == x for p = 2, 4, 8")

# %% [markdown]
# ## 4. The patch embedding is a linear layer
#
# `ditlib.models.PatchEmbed` (like the official code) embeds patches with a `Conv2d` whose kernel size
# and stride are both p. Since the windows do not overlap, output channel d at grid cell (r, c) is
#
# $$\sum_{k,i,j} W_{d,k,i,j}\; z_{k,\,rp+i,\,cp+j} + b_d,$$
#
# a dot product between the flattened patch and the flattened filter W_d: a `Linear(p·p·C, D)` applied
# to every token. The conv stores its weight as (D, C, p, q); reorder it to (D, p, q, C) so it matches the
# (p q c) order of our tokens:

# %%
# NBVAL_CHECK_OUTPUT
embed = PatchEmbed(input_size=32, patch_size=2, in_channels=4, hidden_size=384)   # DiT-S/2's first layer
weight = rearrange(embed.proj.weight, "d c p q -> d (p q c)")                   # (384, 16)
with torch.no_grad():
    by_conv = embed(latents)                                                    # (2, 256, 384)
    by_linear = F.linear(latent_tokens, weight, embed.proj.bias)                # (2, 256, 384)
assert torch.allclose(by_conv, by_linear, atol=1e-5)
print(f"conv weight {tuple(embed.proj.weight.shape)} -> linear weight {tuple(weight.shape)}; "
      f"both give tokens {tuple(by_conv.shape)}")

# %% [markdown]
# So "patchify" and "linearly embed each patch" are one operation. The convolution is just a fast way
# to run it without materialising the (N, T, p·p·C) tensor.
#
# ## 5. How many tokens?
#
# T = (I/p)². For the paper's 32×32 latents and for the course's 32×32 Fashion-MNIST pixels the numbers are
# the same, since I = 32 in both; `PatchEmbed` agrees:

# %%
# NBVAL_CHECK_OUTPUT
inputs = [("paper latents 32×32×4", 32, 4), ("our pixels 32×32×1", 32, 1), ("our latents 8×8×4", 8, 4),
          ("ImageNet pixels 256×256×3", 256, 3)]
print(f"{'input':26s} {'p = 2':>7s} {'p = 4':>7s} {'p = 8':>7s}")
for name, size, channels in inputs:
    counts = [(size // p) ** 2 for p in (2, 4, 8)]
    assert counts == [PatchEmbed(size, p, channels, 8).num_patches for p in (2, 4, 8)]
    print(f"{name:26s} " + " ".join(f"{t:7,d}" for t in counts))

# %% [markdown]
# Tokens set the cost. Count the multiply-adds of one DiT block by hand (D = width, T = tokens): the
# q, k, v and output projections cost 4·T·D², the MLP (hidden width 4D) 8·T·D², the two attention
# products (q·kᵀ and attention·v) 2·T²·D, and the adaLN-Zero regression of 6 vectors from one
# conditioning vector 6·D². So
#
# $$\text{Gflops} \approx \text{depth}\cdot\big(12\,T D^2 + 2\,T^2 D + 6 D^2\big) / 10^9 .$$
#
# Compare with `ditlib.flops.gflops`, which also counts the embeddings, LayerNorms and final layer:

# %%
# NBVAL_CHECK_OUTPUT
for name in PAPER_GFLOPS:
    size, p = name[4:].split("/")
    depth, D, _ = PAPER_SIZES[size]
    T = (32 // int(p)) ** 2
    by_hand = depth * (12 * T * D**2 + 2 * T**2 * D + 6 * D**2) / 1e9
    assert abs(by_hand / gflops(name) - 1) < 0.02, name
    if size == "XL":
        print(f"{name}: T = {T:3d}, by hand {by_hand:7.2f}, ditlib {gflops(name):7.2f} Gflops")

# %% [markdown]
# The first term, linear in T, dominates at these sizes: halving p multiplies T by 4 and the Gflops by a
# little more than 4 (the T² attention term). Try it with the picker: the patch grid of one image, and what
# that choice costs for the paper's DiT-XL on 256×256 images (32×32×4 latents) and for the course's tiny
# DiT-T on 32×32×1 Fashion-MNIST pixels.

# %%
def draw(p):
    viz.show_patches(boot[0], p)
    print(f"p = {p}: T = (32/{p})² = {(32 // p) ** 2} tokens  |  DiT-XL/{p}, 256×256 images: "
          f"{gflops(f'DiT-XL/{p}'):.2f} Gflops  |  DiT-T/{p}, Fashion-MNIST pixels: "
          f"{gflops(f'DiT-T/{p}', input_size=32, in_channels=1, num_classes=10):.3f} Gflops")


viz.choice_widget([2, 4, 8], draw, description="patch size")

# %% [markdown]
# ## 6. Table 4: compute of the twelve DiT models
#
# The paper trains four widths/depths (S, B, L, XL, Table 1) at three patch sizes. `ditlib` counts their
# Gflops by the paper's convention (one multiply-add = one flop, batch of one image):

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'model':9s} {'T':>4s} {'params':>9s} {'ditlib':>8s} {'Table 4':>8s}")
for name, params, g in gflops_table(list(PAPER_GFLOPS)):
    T = (32 // int(name.split("/")[1])) ** 2
    assert abs(g - PAPER_GFLOPS[name]) < 0.01, name
    print(f"{name:9s} {T:4d} {params / 1e6:8.1f}M {g:8.2f} {PAPER_GFLOPS[name]:8.2f}")
for size in PAPER_SIZES:
    print(f"DiT-{size}: p 4 -> 2 multiplies the Gflops by {gflops(f'DiT-{size}/2') / gflops(f'DiT-{size}/4'):.2f}")

# %% [markdown]
# The parameter count barely depends on p (only the patch embedding and the decoder change), yet the
# compute grows about 4× per halving. That is one of the paper's main findings (§5): at fixed parameters,
# smaller patches buy compute, and FID improves with Gflops whether they come from a bigger model or from
# more tokens. On log-log axes the trend is a set of parallel lines of slope ≈ 1:

# %%
token_counts = [(32 // p) ** 2 for p in (8, 4, 2)]                                 # 16, 64, 256
curves = {f"DiT-{size}": [PAPER_GFLOPS[f"DiT-{size}/{p}"] for p in (8, 4, 2)] for size in PAPER_SIZES}
fig = viz.plot_curves(curves, x=token_counts, xlabel="tokens T (p = 8, 4, 2)", ylabel="Gflops (Table 4)",
                      title="Gflops grow with the number of tokens", logy=True)
fig.axes[0].set_xscale("log", base=2)
for line in fig.axes[0].lines:
    line.set_marker("o")

# %% [markdown]
# ## 7. What the tokens meet first: multi-head self-attention, by hand
#
# Every DiT block starts by letting its T tokens look at each other (§3.2: DiT's blocks are ViT's, with the
# conditioning of lesson 06 added). For the (T, D) tokens X of one image and h heads of width d = D/h,
# one linear layer gives each token a query, a key and a value per head, and each head mixes the values
# with weights that compare queries to keys:
#
# $$[Q, K, V] = X W_{qkv} + b_{qkv}, \qquad \mathrm{head}_j = \mathrm{softmax}\Big(rac{Q_j K_j^\top}{\sqrt{d}}\Big) V_j,
# \qquad \mathrm{Attention}(X) = [\mathrm{head}_1, \dots, \mathrm{head}_h]\, W_o + b_o.$$
#
# The softmax runs over the keys, so each token's weights sum to 1; dividing by √d keeps the scores of
# unit-variance q and k at unit variance whatever the head width. The (T, T) score matrix is where the
# T² of section 5's compute comes from. `ditlib`'s `Attention` holds W_qkv as one layer `qkv`
# (D → 3D; its output features are laid out as (3, heads, d): all queries, then all keys, then all values,
# each cut into heads) and W_o as `proj`, and computes the rest with torch's fused
# `scaled_dot_product_attention`.
#
# ### Exercise: multi-head self-attention
#
# Write `multi_head_attention(attention, x)` for an `Attention` layer and tokens x of shape (B, T, D), using
# `attention.qkv`, `attention.num_heads` and `attention.proj` and plain tensor operations (`@`,
# `torch.softmax`, reshapes). Hint: reshape qkv(x) to (B, T, 3, h, d) and permute it to (3, B, h, T, d); after
# the weighted sum, move the heads back next to their token, (B, T, h, d) → (B, T, D), before `proj`. The
# check refuses `scaled_dot_product_attention`, `Attention.forward` and `torch.nn.MultiheadAttention`.

# %% nbgrader={"grade": false, "grade_id": "multi_head_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def multi_head_attention(attention, x):
    ### BEGIN SOLUTION
    B, T, D = x.shape
    h = attention.num_heads
    q, k, v = attention.qkv(x).reshape(B, T, 3, h, D // h).permute(2, 0, 3, 1, 4)    # each (B, h, T, d)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D // h), dim=-1)     # (B, h, T, T)
    heads = weights @ v                                                              # (B, h, T, d)
    return attention.proj(heads.transpose(1, 2).reshape(B, T, D))                   # (B, T, D)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_multi_head_attention", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_multi_head_attention(multi_head_attention)
display(feedback)
### BEGIN HIDDEN TESTS
exercises.require(feedback)
attention_check = Attention(dim=192, num_heads=3).double()           # the shape of the shipped pixel DiT-T/4
tokens_check = torch.randn(2, 64, 192, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
with torch.no_grad():
    assert torch.allclose(multi_head_attention(attention_check, tokens_check), attention_check(tokens_check),
                          atol=1e-8), "multi_head_attention disagrees with ditlib's Attention on 64 tokens of width 192"
### END HIDDEN TESTS

# %% [markdown]
# ## 8. Where is each token? Positional embeddings
#
# Look at your function again: nothing in it knows which token is which. Permute the tokens and its
# output is permuted the same way, nothing else changes:

# %%
attention = Attention(dim=64, num_heads=4)
sequence = torch.randn(1, 16, 64)                                                  # 16 tokens
order = torch.randperm(16)
with torch.no_grad():
    shuffled_first = multi_head_attention(attention, sequence[:, order])
    assert torch.allclose(shuffled_first, multi_head_attention(attention, sequence)[:, order], atol=1e-6)
    assert torch.allclose(shuffled_first, attention(sequence[:, order]), atol=1e-6)      # and ditlib's agrees
print("attention(shuffled tokens) == shuffled attention(tokens): patches are a bag without positions")

# %% [markdown]
# So DiT adds to each token a vector that depends on its position, the fixed sine-cosine code of ViT
# and MAE (after Vaswani et al. 2017). In one dimension, position m gets D numbers:
#
# $$\mathrm{PE}(m) = \big[\sin(m\,\omega_0), \dots, \sin(m\,\omega_{D/2-1}),\ \cos(m\,\omega_0), \dots, \cos(m\,\omega_{D/2-1})\big],
# \qquad \omega_k = \frac{1}{10000^{2k/D}}.$$
#
# Fast frequencies tell neighbours apart, slow ones tell far-apart positions apart.
#
# ### Exercise: the 1-D sine-cosine table
#
# Write `sincos_1d(embed_dim, positions)`: `positions` is an (M,) NumPy array or torch tensor; return the
# (M, embed_dim) table above, all sines first, then all cosines.

# %% nbgrader={"grade": false, "grade_id": "sincos_1d", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sincos_1d(embed_dim, positions):
    ### BEGIN SOLUTION
    positions = torch.as_tensor(positions, dtype=torch.float64).reshape(-1)           # (M,)
    omega = 1.0 / 10000 ** (2 * torch.arange(embed_dim // 2, dtype=torch.float64) / embed_dim)   # (D/2,)
    angles = positions[:, None] * omega[None, :]                                    # (M, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)                           # (M, D)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_sincos_1d", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_sincos_1d(sincos_1d)
display(feedback)
### BEGIN HIDDEN TESTS
exercises.require(feedback)
positions_check = np.array([0.0, 1.0, 2.5, 7.0, 31.0])   # also against ditlib at D = 12, non-integer positions included
table_check = np.asarray(torch.as_tensor(sincos_1d(12, positions_check)).double())
assert table_check.shape == (5, 12) and np.allclose(table_check, get_1d_sincos_pos_embed_from_grid(12, positions_check), atol=1e-6), \
    "sincos_1d disagrees with ditlib.models.get_1d_sincos_pos_embed_from_grid at D = 12"
### END HIDDEN TESTS

# %% [markdown]
# It matches `ditlib`'s table, and it has the property that makes it useful: since
# sin a·sin b + cos a·cos b = cos(a − b), the dot product of two positions depends only on their offset,
#
# $$\mathrm{PE}(m)\cdot\mathrm{PE}(n) = \sum_{k} \cos\big((m-n)\,\omega_k\big).$$

# %%
positions = np.arange(16)
table_1d = np.asarray(sincos_1d(64, positions))                                    # (16, 64)
assert np.allclose(table_1d, get_1d_sincos_pos_embed_from_grid(64, positions))
omega = 1.0 / 10000 ** (2 * np.arange(32) / 64)
offsets = positions[:, None] - positions[None, :]                                  # (16, 16): m − n
assert np.allclose(table_1d @ table_1d.T, np.cos(offsets[..., None] * omega).sum(-1))
print("sincos_1d == ditlib's 1-D table, and PE(m)·PE(n) depends only on m − n")

# %% [markdown]
# ### From 1-D to 2-D
#
# A token on the grid has a row and a column. DiT (like MAE) spends half of the width on each: token
# k = row·G + col of a G×G grid gets [PE_{D/2}(col) | PE_{D/2}(row)]. Build DiT-XL/2's table
# (G = 16, D = 1152) from your 1-D function:

# %%
# NBVAL_CHECK_OUTPUT
grid, width = 16, 1152
rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")          # (16, 16) each
table = np.concatenate([np.asarray(sincos_1d(width // 2, cols.flatten())),             # column half
                        np.asarray(sincos_1d(width // 2, rows.flatten()))], axis=1)       # row half
assert np.allclose(table, get_2d_sincos_pos_embed(width, grid))
print(f"2-D table {table.shape}: T = {grid}² tokens × D = {width}")

# %%
viz.show_pos_embed(get_2d_sincos_pos_embed(width, grid), grid);

# %% [markdown]
# Left: the table, one row per token. The left half codes the column, which changes at every token and
# repeats every 16 tokens (one grid row), hence the bands; the right half codes the row, constant over 16
# consecutive tokens, so down the table it is a smooth sweep. Within each quarter
# (sines, then cosines) the frequency falls from ω = 1 on the left to ω ≈ 10⁻⁴ on the right, where the
# values barely move. Right: the cosine similarity of the centre token's code to every other token's. It
# is highest nearby and falls off smoothly with distance, so neighbouring patches start out with similar
# codes; tokens in the same row or column share half of their code, hence the cross.
#
# The table is not learned. `DiT` stores it as a parameter with `requires_grad=False` so that it travels
# with the checkpoints; the course's trained pixel model (DiT-T/4 on 32×32×1, an 8×8 grid of width 192)
# still carries exactly the table it was built with:

# %%
# NBVAL_CHECK_OUTPUT
pretrained = Pretrained.load("fmnist-DiT-T-4", device="cpu")
pixel_dit, G = pretrained.model, pretrained.model.x_embedder.grid_size
print(f"pos_embed {tuple(pixel_dit.pos_embed.shape)}, requires_grad = {pixel_dit.pos_embed.requires_grad}")
assert np.allclose(pixel_dit.pos_embed[0].numpy(), get_2d_sincos_pos_embed(pixel_dit.hidden_size, G), atol=1e-6)
print(f"after {pretrained.meta['step']:,} training steps it still equals get_2d_sincos_pos_embed({pixel_dit.hidden_size}, {G})")

# %% [markdown]
# ## Summary
#
# - Patchify cuts an I×I×C input into T = (I/p)² tokens of p·p·C numbers, row-major, features (p, q, c);
#   unpatchify is its exact inverse. In `einops`: `"n c (h p) (w q) -> n (h w) (p q c)"`.
# - The patch embedding (a p×p, stride-p convolution) is one linear layer applied to every token.
# - Compute follows tokens: about depth·(12TD² + 2T²D). Halving p multiplies T by 4 and Gflops by a bit
#   more than 4, with almost no new parameters (Table 4: DiT-XL/8 7.4, XL/4 29.1, XL/2 118.6 Gflops).
# - Multi-head attention: q, k, v per head from one `qkv` layer, softmax(q·kᵀ/√d) over the keys, heads
#   merged back per token, then `proj`. It ignores order, so DiT adds a fixed 2-D sine-cosine table: half the width codes the column,
#   half the row, and dot products depend only on offsets.
#
# **More to try.** Shuffle the tokens of an image, unpatchify, and look at it: that is what the model would
# see without positions. How does the share of the T² attention products in the Gflops change from
# DiT-XL/8 to DiT-XL/2? (`ditlib.flops.flop_breakdown(name)["attention_matmuls"]`.)
#
# **Next:** [06 · Conditioning](06_conditioning_variants.ipynb): how the timestep t and the class y enter
# the blocks: in-context, by cross-attention, through adaLN, and with adaLN-Zero. Its exercises: the timestep
# embedder, `modulate`, the adaLN-Zero block, and the whole DiT forward pass.
