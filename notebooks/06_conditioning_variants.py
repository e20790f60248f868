# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Conditioning: how t and y get into the transformer
#
# Lesson 05 turned a latent into a sequence of tokens. A denoiser must also know *how noisy* its input
# is (the timestep t) and *what* to draw (the class y). This lesson builds the two embeddings, then puts
# the four ways of feeding them to a transformer block from the DiT paper next to each other, in code,
# in pictures, in Gflops and in FID.
#
# **Learning objectives.** After this lesson you can
# 1. write the timestep embedder (sinusoidal features, then the MLP) and say what the MLP is for;
# 2. explain the label table's extra "null" row and the label dropout that classifier-free guidance needs;
# 3. describe the four block designs (in-context, cross-attention, adaLN, adaLN-Zero) and what each costs;
# 4. show that an adaLN-Zero block is the identity at initialisation, and why that helps;
# 5. implement `modulate` and the forward pass of an adaLN-Zero block.
#
# **Paper.** DiT §3.2 *DiT block design* (Figure 3) and the comparison in §5, Figure 5 (FID against training
# steps for the four designs on DiT-XL/2: adaLN-Zero is best). The timestep embedding follows ADM/DDPM;
# the null class and label dropout come from classifier-free guidance (Ho & Salimans 2022), used in DiT §4.
#
# *Quick mode* (`DITLIB_QUICK=1`) trains each design for 6 steps on 256 images instead of 150 steps on
# the whole latent training set; every check still runs.

# %%
import json
import math
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import ditlib
from ditlib.configs import TRAIN_CONFIGS
from ditlib.course import exercises, inspect_model, viz, widgets
from ditlib.data import DATA_DIR, FashionMNIST
from ditlib.diffusion import create_diffusion
from ditlib.flops import PAPER_BLOCK_GFLOPS, block_design_table
from ditlib.latents import LatentDataset, build_latent_dataset, encode_dataset
from ditlib.models import BLOCK_DESIGNS, build_model, timestep_embedding
from ditlib.runtime import pick
from ditlib.sample import load_model
from ditlib.train import read_log, train
from ditlib.vae import load_vae

ROOT = Path(ditlib.__file__).resolve().parents[1]
torch.manual_seed(0)
# The course's latent DiT-T/2: 8×8×4 latents, patch 2 -> 16 tokens of width 192, 10 classes.
model_kwargs = dict(input_size=8, in_channels=4, num_classes=10)

# %% [markdown]
# ## 1. The timestep: sinusoids, then an MLP
#
# t is a single integer in [0, 999]. DiT embeds it like ADM: 256 sinusoidal features with geometrically
# spaced frequencies, ω_k = 10000^(−k/128) for k = 0 … 127,
#
# $$\mathrm{emb}(t) = \big[\cos(t\,\omega_0), \dots, \cos(t\,\omega_{127}),\ \sin(t\,\omega_0), \dots, \sin(t\,\omega_{127})\big],$$
#
# then a two-layer MLP (Linear 256→D, SiLU, Linear D→D) maps them to the model width D (§3.2). Both parts
# come from the diffusion U-Nets before DiT: DDPM and ADM embed t with these sinusoids followed by the same kind
# of two-layer MLP; DiT keeps them unchanged.
#
# ### Exercise: the timestep embedder
#
# Write `embed_timestep(t, mlp)`: `t` is an (N,) tensor of integer timesteps, `mlp` the two-layer MLP
# (`mlp[0]` is its first Linear, so `mlp[0].in_features` is the number of features, 256 in DiT). Build the
# (N, 256) features above with your own `torch.exp`/`torch.cos`/`torch.sin` (cosines first, then sines, with
# half = 128 frequencies), cast them to the MLP's dtype, and return `mlp(features)`, one D-vector per t.
# `ditlib`'s `timestep_embedding` does the first half; the check refuses it, so the features are yours.

# %% nbgrader={"grade": false, "grade_id": "embed_timestep", "locked": false, "schema_version": 3, "solution": true, "task": false}
def embed_timestep(t, mlp):
    ### BEGIN SOLUTION
    half = mlp[0].in_features // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)   # ω_k, (half,)
    angles = t[:, None].double() * freqs[None, :]                                         # (N, half)
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)                   # (N, 2·half)
    return mlp(features.to(mlp[0].weight.dtype))                                          # (N, D)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_embed_timestep", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_embed_timestep(embed_timestep)
display(feedback)
### BEGIN HIDDEN TESTS
exercises.require(feedback)
trained_check, _ = load_model(DATA_DIR / "checkpoints" / "fmnist-latent-DiT-T-2")
t_check = torch.randint(0, 1000, (32,), generator=torch.Generator().manual_seed(5))
with torch.no_grad():
    assert torch.allclose(embed_timestep(t_check, trained_check.t_embedder.mlp), trained_check.t_embedder(t_check),
                          atol=1e-4), "embed_timestep disagrees with the shipped fmnist-latent-DiT-T-2's t_embedder"
### END HIDDEN TESTS

# %% [markdown]
# Each row of the picture is one t of the features alone (before the MLP). The fast sinusoids (left of each
# half) tell neighbouring timesteps apart; the slow ones (right) tell early from late. Every t gets a unique,
# smooth code.

# %%
all_t = torch.arange(1000)
fig, ax = plt.subplots(figsize=(8, 3))
ax.imshow(timestep_embedding(all_t, 256).numpy(), aspect="auto", cmap="RdBu", interpolation="nearest")
ax.set(xlabel="feature (cos half | sin half)", ylabel="timestep t", title="timestep_embedding(t, 256)");

# %% [markdown]
# The MLP is learned: it turns these fixed features into whatever D-dimensional code the blocks find most
# useful. In the model it sits in `t_embedder`, and your function with the model's MLP computes exactly what
# the model computes:

# %%
# NBVAL_CHECK_OUTPUT
model = build_model("DiT-T/2", **model_kwargs)
print(model.t_embedder.mlp)
t = torch.tensor([0, 1, 250, 999])
with torch.no_grad():
    t_emb = embed_timestep(t, model.t_embedder.mlp)                                    # (4, 192)
    assert torch.allclose(t_emb, model.t_embedder(t), atol=1e-5)
print("t_emb:", tuple(t_emb.shape), "== model.t_embedder(t)")

# %% [markdown]
# ## 2. The class label: a table with a "null" row
#
# y is looked up in an embedding table (`nn.Embedding`). The table has **one more row than there are
# classes**: row `num_classes` is the null class ∅, "no label". During training each label is replaced by ∅
# with probability `class_dropout_prob` = 0.1, so the same network also learns the *unconditional* model
# ε(x_t, ∅). Classifier-free guidance (lesson 09) needs both.

# %%
# NBVAL_CHECK_OUTPUT
table = model.y_embedder.embedding_table
print("label table:", tuple(table.weight.shape), f"= ({model.num_classes} classes + ∅, D = {model.hidden_size})")
labels = torch.tensor([3, 7, 1, 9])
dropped = model.y_embedder.token_drop(labels, force_drop_ids=torch.tensor([0, 1, 0, 1]))
assert dropped.tolist() == [3, model.num_classes, 1, model.num_classes]
print("labels", labels.tolist(), "-> with rows 1 and 3 dropped:", dropped.tolist(), "(10 = ∅)")

# %% [markdown]
# Without forced ids, `token_drop` drops each label at random; the rate is `class_dropout_prob`:

# %%
torch.manual_seed(0)
many = torch.zeros(100_000, dtype=torch.long)
rate = (model.y_embedder.token_drop(many) == model.num_classes).float().mean().item()
assert abs(rate - model.class_dropout_prob) < 0.005
print(f"dropped {rate:.3%} of 100,000 labels (class_dropout_prob = {model.class_dropout_prob})")

# %% [markdown]
# ## 3. Four ways into a block
#
# With t_emb and y_emb in hand (each a D-vector per image), §3.2 tries four block designs:
#
# - **In-context conditioning.** Append t_emb and y_emb as two extra tokens (like ViT's cls token) and use a
#   plain ViT block. They are removed after the last block. Cost: two more tokens, ≈ nothing.
# - **Cross-attention.** Stack [t_emb, y_emb] as a length-2 sequence; after self-attention, each block
#   cross-attends to it. Cost: the most Gflops, "roughly a 15% overhead".
# - **Adaptive layer norm (adaLN).** Replace the LayerNorms' learned scale and shift with ones *regressed*
#   from c = t_emb + y_emb: the same (γ, β) for every token. Cheapest.
# - **adaLN-Zero.** adaLN plus a per-channel gate α on each residual branch, also regressed from c; the
#   regression layer is initialised to zero, so α = 0 and each block starts as the identity.
#
# In `ditlib` they are four classes behind one switch, `DiT(block=...)`. Only the blocks (and the final
# LayerNorm) differ; everything else is shared. The submodules of one block of each:

# %%
# NBVAL_CHECK_OUTPUT
models = {design: build_model("DiT-T/2", block=design, **model_kwargs) for design in BLOCK_DESIGNS}
for design, m in models.items():
    block = m.blocks[0]
    parts = ", ".join(f"{name}: {type(child).__name__}" for name, child in block.named_children())
    print(f"{design:16s} {type(block).__name__:20s} {sum(p.numel() for p in block.parameters()):>7,} params\n"
          f"{'':16s} {parts}")

# %% [markdown]
# The same four as pictures (bottom to top). Each ⊕ adds a branch back to the block's input, carried around
# the branch by the grey skip arrow; the orange path is the conditioning: for adaLN and adaLN-Zero, c =
# t_emb + y_emb goes through an MLP that outputs the (γ, β) (and α) of every modulated box; cross-attention
# reads [t_emb, y_emb] as a context; in-context appends them as tokens at the bottom.

# %%
viz.block_diagrams();

# %% [markdown]
# ### adaLN in code
#
# The adaLN blocks condition through one operation, `modulate`: after a LayerNorm *without* learned affine
# parameters, scale and shift every token by vectors regressed from c,
#
# $$\mathrm{modulate}(h, \beta, \gamma) = h \odot (1 + \gamma) + \beta, \qquad h\in\mathbb R^{N\times T\times D},\ \beta,\gamma\in\mathbb R^{N\times D}.$$
#
# The "1 +" makes γ = 0 mean "leave the normalised h alone". adaLN-Zero's regression MLP outputs six such
# vectors, (β₁, γ₁, α₁) for the attention branch and (β₂, γ₂, α₂) for the MLP branch:
#
# $$x \leftarrow x + \alpha_1 \odot \mathrm{Attn}\big(\mathrm{modulate}(\mathrm{LN}(x), \beta_1, \gamma_1)\big),\qquad
#   x \leftarrow x + \alpha_2 \odot \mathrm{MLP}\big(\mathrm{modulate}(\mathrm{LN}(x), \beta_2, \gamma_2)\big).$$
#
# You will write both in the exercise. First, what the zero initialisation does.
#
# ## 4. adaLN-Zero starts as the identity
#
# `DiT.initialize_weights` zeroes the last Linear of every block's `adaLN_modulation` and the final layer.
# Then all six vectors are 0: α = 0 switches both branches off, and each block returns its input exactly.
# The paper motivates this with ResNets, where initialising every residual block as the identity helps (Goyal
# et al. zero-initialise the last batch-norm scale of each block to speed up large-scale training). The plain
# adaLN block has no
# gates, so it changes its input from the first step:

# %%
# NBVAL_CHECK_OUTPUT
x = torch.randn(2, 16, 192)                    # (N, T, D) tokens
c = torch.randn(2, 192)                        # (N, D) conditioning vector t_emb + y_emb
with torch.no_grad():
    for block in models["adaLN-Zero"].blocks:
        assert torch.equal(block(x, c), x)     # exactly, not approximately
    adaln_change = (models["adaLN"].blocks[0](x, c) - x).abs().max().item()
    out = models["adaLN-Zero"](torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), torch.tensor([1, 2]))
assert adaln_change > 0.1 and torch.equal(out, torch.zeros_like(out))
print("adaLN-Zero: every block is the identity and the model outputs 0 at initialisation")
print("adaLN:      the first block already changes its input")

# %% [markdown]
# What the zeros do to the first gradient steps is subtler than "gradients reach every layer unchanged". With
# α = 0 each branch's output is multiplied by 0, so the attention and MLP weights of every block get **no
# gradient at all** at the start (∂L/∂W carries the factor α). The learning starts from the zeros, in stages:
# at the very first step only the output layer's linear map gets a gradient (everything upstream reaches the
# loss through its zero weights); from the next step the gradient reaches the residual stream and the gates
# (∂L/∂α is the branch's output, which is not 0); the attention and MLP weights learn only once their α has
# moved away from 0, the residual stream being the identity all along. Section 7's loss curve shows the consequence:
# adaLN-Zero's loss starts at ≈ 1 (the model outputs 0) and stays on a short plateau before it falls, while
# the designs with ordinary initialisation start higher but move at once.
#
# ## 5. What each design costs
#
# Gflops per forward pass of one image, by the paper's convention (`ditlib.flops`, lesson 05), for the paper's
# DiT-XL/2 at 256×256 and for our latent DiT-T/2:

# %%
# NBVAL_CHECK_OUTPUT
xl = block_design_table("DiT-XL/2")
tiny = block_design_table("DiT-T/2", **model_kwargs)
print(f"{'design':16s} {'XL/2 params':>12s} {'XL/2 Gflops':>12s} {'paper':>6s} {'T/2 params':>11s} {'T/2 Mflops':>11s}")
for (design, p_xl, g_xl), (_, p_t, g_t) in zip(xl, tiny):
    print(f"{design:16s} {p_xl / 1e6:>11.1f}M {g_xl:>12.2f} {PAPER_BLOCK_GFLOPS[design]:>6.2f} "
          f"{p_t / 1e6:>10.2f}M {g_t * 1e3:>11.2f}")
overhead = dict((d, g) for d, _, g in xl)
print(f"cross-attention overhead over adaLN-Zero (XL/2): {overhead['cross-attention'] / overhead['adaLN-Zero'] - 1:.1%}")

# %% [markdown]
# adaLN-Zero has the most parameters (six D-vectors regressed per block: D·6D weights each) but almost the
# fewest flops: the regression runs once per *image*, not once per token. Cross-attention costs ~16% more.
# The figure below shows all four designs with their parameters and Gflops at DiT-XL/2.

# %%
widgets.plot_block_designs("DiT-XL/2");

# %% [markdown]
#
# ## 6. Which design trains best: the experiment
#
# `experiments/block_designs.py` repeats Figure 5 on the course's default recipe: DiT-T/2 on the Fashion-MNIST
# latents, the default's full training (6,000 steps of batch 64, cosine learning rate, min-SNR weighting) once
# per design with only the block replaced, and FID-FMNIST at N = 1,000 (DDIM 50, no guidance, as the paper's
# Figure 5) of the EMA weights every 1,500 steps. adaLN-Zero and in-context, the pair the paper's claim rests
# on, are trained with two seeds each, so that a difference can be told from the training noise. Read the
# committed results (one entry per finished run) and draw them beside the paper's own numbers:

# %%
from ditlib.course.findings import block_design_figure

results = ROOT / "experiments" / "results"
entries = json.loads((results / "block_designs.json").read_text())
steps = [s["step"] for s in entries[0]["snapshots"]]
print(f"{'design':16s} {'seed':>4s} " + " ".join(f"{'@ ' + str(s):>8s}" for s in steps) + "   FID-FMNIST, no guidance")
for e in entries:
    print(f"{e['block']:16s} {e['seed']:4d} " + " ".join(f"{s['fid']:8.2f}" for s in e["snapshots"]))
print("designs not in the file yet:", ", ".join(d for d in BLOCK_DESIGNS if d not in {e["block"] for e in entries})
      or "none")
block_design_figure(entries);

# %% [markdown]
# adaLN-Zero wins, as in the paper, and far beyond the noise. It ends at 6.72 and 6.67 (two seeds), in-context
# at 9.46 and 9.35, adaLN at 9.55 and cross-attention at 10.00: the seeds of a design agree to within about 0.1,
# the gap to adaLN-Zero is 2.7 or more, and adaLN-Zero leads at every snapshot. adaLN without the zero start is
# no better than in-context: at this scale the zero-initialised gates make the difference. The other three end
# within 0.65 of each other (one seed for adaLN and cross-attention), so their order, unlike the paper's
# (right panel, ImageNet: adaLN, then cross-attention, then in-context), is not resolved here.
#
# ## 7. Re-run it yourself: a short training of each design
#
# The same recipe as the experiment (`fmnist-latent-DiT-T/2`: batch 64, AdamW, warm-up, EMA), only shorter.
# The loss curves show the early advantage of adaLN-Zero without waiting for FID. The latents come from the
# cached posteriors of lesson 04 (the cache is built on first use; quick mode encodes 256 images).

# %%
codec = load_vae("fmnist-vae")
if pick(full=True, quick=False):
    latents = build_latent_dataset(codec, progress=False)        # 60,000 images: encoded once, then cached
else:
    subset = torch.utils.data.Subset(FashionMNIST("train"), range(256))
    latents = LatentDataset(**encode_dataset(codec, subset, progress=False), scale_factor=codec.scale_factor,
                            num_classes=10)
print(latents)

# %%
steps = pick(150, 6)
base = TRAIN_CONFIGS["fmnist-latent-DiT-T/2"].replace(log_every=pick(10, 2), ckpt_every=10**9)
loss_curves = {}
with tempfile.TemporaryDirectory() as tmp:
    for design in BLOCK_DESIGNS:
        train(base.replace(block=design), Path(tmp) / design, max_steps=steps, dataset=latents, progress=False)
        loss_curves[design] = [row["loss"] for row in read_log(Path(tmp) / design)]
# train() saved each run's loss.png with matplotlib's Agg backend; switch this notebook back to inline plots:
# %matplotlib inline
viz.plot_curves(loss_curves, x=list(range(base.log_every, steps + 1, base.log_every)), xlabel="step",
                ylabel="training loss (mse + vb)", logy=True, title=f"{steps} steps per design");

# %% [markdown]
# All four see the same batches (the data stream depends only on the seed and the step). adaLN-Zero starts
# differently: its output is exactly 0 at step 0, so its loss starts near 1 (the variance of ε) while the other
# designs start from random outputs with a larger loss. It leaves that starting point more slowly, then (in the
# stored full run) ends lowest after about a hundred steps, in line with the FID curves above. With only 6 steps
# (quick mode) you see just the start.

# %% [markdown]
# ## 8. Inside the trained model: the gates and the attention
#
# The shipped `fmnist-latent-DiT-T-2` has been trained, so its gates α are no longer zero. How open is each
# block's gate, and does it depend on the noise level? For c = t_emb + y_emb at t = 0 … 950 (the ten labels,
# averaged), the mean |α| of the attention and MLP branches of its six blocks:

# %%
trained, _ = load_model(DATA_DIR / "checkpoints" / "fmnist-latent-DiT-T-2")
gates = inspect_model.adaln_gates(trained, list(range(0, 1000, 50)), y=list(range(10)))
inspect_model.plot_adaln_gates(gates);

# %% [markdown]
# The gates are a function of t, so the model runs a different mix of its blocks at each noise level. In the
# stored run the deeper blocks (3–5) close both gates as t grows, to |α| ≈ 0.07 at t = 950, while the first
# blocks stay open there (block 0's gates near 0.15, block 1's attention gate widest of all around t ≈ 350):
# at high noise the early blocks do most of the work. At small t every MLP gate is about equally open (≈ 0.2):
# near the end of sampling the whole depth refines local detail.
#
# And what does a block attend to? The head-averaged self-attention of the last block, from the centre patch
# of a real latent noised to several t (decoded to pixels for the left column):

# %%
diffusion = create_diffusion("")
z0, y0 = latents.get_batch(torch.arange(1), generator=torch.Generator().manual_seed(0))    # (1, 4, 8, 8), (1,)
inspect_model.plot_attention(trained, z0[0], [0, 300, 700, 999], y=int(y0[0]), diffusion=diffusion,
                             decode=codec.decode);

# %% [markdown]
# The last block's attention is broad at every noise level: its largest weight is 0.10 at t = 0, 0.15 at
# t = 300, 0.09 at t = 700 and 0.07 at t = 999, against 1/16 ≈ 0.06 for a uniform map. The most peaked map is at
# t = 300, where the centre patch looks mostly at its neighbours to the left and below, the body of the boot; at
# t = 0 its largest weight goes to the toe, across the garment, not to itself; at t = 700 and 999, with little
# of the image left, the map is almost flat over the centre and left of the grid. With 16 tokens, each patch
# already covers a large part of the garment, so sharp maps are not to be expected at this size; what the
# figure does show is the map flattening as noise takes over. Drag t, and pick a block or another query patch:

# %%
widgets.attention_widget(trained, z0[0], int(y0[0]), diffusion, decode=codec.decode)

# %% [markdown]
# ## 9. Exercise: `modulate` and the adaLN-Zero block
#
# **Part 1.** Write `modulate(x, shift, scale)`: x is (N, T, D); shift and scale are (N, D), one vector per
# sample. Return x·(1 + scale) + shift, with shift and scale broadcast over the T tokens.

# %% nbgrader={"grade": false, "grade_id": "modulate", "locked": false, "schema_version": 3, "solution": true, "task": false}
def modulate(x, shift, scale):
    ### BEGIN SOLUTION
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)          # (N, 1, D) broadcasts over T
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_modulate", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_modulate(modulate)
display(feedback)
### BEGIN HIDDEN TESTS
exercises.require(feedback)
from ditlib.models import modulate as ditlib_modulate  # noqa: E402
gen_check = torch.Generator().manual_seed(3)
x_check, b_check, s_check = (torch.randn(shape, generator=gen_check) for shape in [(5, 9, 12), (5, 12), (5, 12)])
assert torch.allclose(modulate(x_check, b_check, s_check), ditlib_modulate(x_check, b_check, s_check), atol=1e-6), \
    "modulate disagrees with ditlib.models.modulate on a batch of 5 with 9 tokens"
### END HIDDEN TESTS

# %% [markdown]
# **Part 2.** Write `adaln_zero_block_forward(block, x, c)` for a `ditlib.models.DiTBlock`, using its
# submodules `block.adaLN_modulation`, `block.norm1`, `block.attn`, `block.norm2`, `block.mlp` and your
# `modulate`. x is (N, T, D), c is (N, D). Hint: `block.adaLN_modulation(c).chunk(6, dim=1)` gives
# (shift, scale, gate) for attention, then (shift, scale, gate) for the MLP, each (N, D). The check
# randomises the modulation weights, so the gates are not zero.

# %% nbgrader={"grade": false, "grade_id": "adaln_zero_block", "locked": false, "schema_version": 3, "solution": true, "task": false}
def adaln_zero_block_forward(block, x, c):
    ### BEGIN SOLUTION
    shift1, scale1, gate1, shift2, scale2, gate2 = block.adaLN_modulation(c).chunk(6, dim=1)   # each (N, D)
    x = x + gate1.unsqueeze(1) * block.attn(modulate(block.norm1(x), shift1, scale1))
    x = x + gate2.unsqueeze(1) * block.mlp(modulate(block.norm2(x), shift2, scale2))
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_adaln_zero_block", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_adaln_zero_block(adaln_zero_block_forward)
display(feedback)
### BEGIN HIDDEN TESTS
exercises.require(feedback)
trained, _ = load_model(DATA_DIR / "checkpoints" / "fmnist-latent-DiT-T-2")
gen_check = torch.Generator().manual_seed(4)
x_check, c_check = torch.randn(3, 16, 192, generator=gen_check), torch.randn(3, 192, generator=gen_check)
with torch.no_grad():
    for trained_block in trained.blocks:
        assert torch.allclose(adaln_zero_block_forward(trained_block, x_check, c_check),
                              trained_block(x_check, c_check), atol=1e-4), \
            "adaln_zero_block_forward disagrees with a block of the shipped fmnist-latent-DiT-T-2"
### END HIDDEN TESTS

# %% [markdown]
# Your block computes what the shipped, trained model computes, block by block:

# %%
trained, _ = load_model(DATA_DIR / "checkpoints" / "fmnist-latent-DiT-T-2")
x, c = torch.randn(4, 16, 192), torch.randn(4, 192)
with torch.no_grad():
    for trained_block in trained.blocks:
        assert torch.allclose(adaln_zero_block_forward(trained_block, x, c), trained_block(x, c), atol=1e-4)
        x = trained_block(x, c)
print(f"adaln_zero_block_forward matches all {len(trained.blocks)} trained blocks")

# %% [markdown]
# ## 10. Exercise: the whole forward pass, from its parts
#
# A DiT is these pieces in a row (Figure 3). Write `dit_forward(model, x, t, y)` from the model's own parts,
# at evaluation (no label dropout), for x: (N, C, I, I), t and y: (N,):
#
# 1. patchify, `model.x_embedder(x)` → (N, T, D), and add the positional table `model.pos_embed`;
# 2. embed t, `model.t_embedder(t)`, and y, `model.y_embedder(y, False)` (False: keep every label);
# 3. `x, c = model.condition(x, t_emb, y_emb)`: how the design feeds (t, y) to the blocks (c = t_emb + y_emb
#    for adaLN-Zero; the other designs of section 3 append tokens or build a context);
# 4. every block in turn, `x = block(x, c)`;
# 5. `model.final_layer(x, c)` on the T image tokens (`x[:, :model.num_patches]`: in-context added two), then
#    `model.unpatchify` back to (N, C_out, I, I).
#
# The check compares with `model(x, t, y)` on small random models and names the usual slips: the positional
# embedding forgotten, conditioning on t (or y) alone, labels dropped, blocks skipped, a plain reshape instead
# of `unpatchify`.

# %% nbgrader={"grade": false, "grade_id": "dit_forward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def dit_forward(model, x, t, y):
    ### BEGIN SOLUTION
    x = model.x_embedder(x) + model.pos_embed                          # (N, T, D)
    t_emb, y_emb = model.t_embedder(t), model.y_embedder(y, False)       # (N, D) each; no label dropout
    x, c = model.condition(x, t_emb, y_emb)                              # adaLN-Zero: c = t_emb + y_emb
    for block in model.blocks:
        x = block(x, c)                                                  # (N, T, D)
    x = model.final_layer(x[:, :model.num_patches], c)                   # (N, T, p·p·C_out)
    return model.unpatchify(x)                                           # (N, C_out, I, I)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_dit_forward", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_dit_forward(dit_forward)
display(feedback)
### BEGIN HIDDEN TESTS
_ = exercises.require(feedback)                          # AssertionError with the message if it failed
### END HIDDEN TESTS

# %% [markdown]
# Your forward pass is the shipped model's, on latents it was trained for:

# %%
z, t, labels = torch.randn(4, 4, 8, 8), torch.tensor([0, 250, 500, 999]), torch.tensor([0, 3, 7, 10])
with torch.no_grad():
    ours, reference = dit_forward(trained.eval(), z, t, labels), trained(z, t, labels)
assert torch.allclose(ours, reference, atol=1e-5)
print(f"dit_forward = the trained DiT-T/2's forward: output {tuple(ours.shape)}, max diff {(ours - reference).abs().max():.1e}")

# %% [markdown]
# ## Summary
#
# - t enters as 256 sinusoidal features and a two-layer MLP; y as a row of a table with one extra null row,
#   which label dropout (p = 0.1) teaches the model to use: one network, conditional and unconditional.
# - In-context tokens and cross-attention treat the conditioning as a sequence; adaLN and adaLN-Zero turn
#   c = t_emb + y_emb into per-channel scales, shifts (and gates) applied to every token: `modulate`.
# - adaLN-Zero's zero-initialised regression makes every block the identity at the start. It costs almost no
#   flops, beats in-context clearly after the default's 6,000 steps (section 6), and is DiT's design;
#   cross-attention costs ~16% more Gflops and, in the paper, still trails it.
#
# **More to try.** Change `class_dropout_prob` to 0 in `build_model` and look at the label table's shape. In
# section 7, train for 600 steps: does the design that leads at 150 steps still lead, and by how much?
#
# **Next:** [07 · Training a DiT](07_training_dit.ipynb): the whole training loop in thirty lines, a live loss
# curve, samples as the model learns, and checkpoints that resume exactly.
