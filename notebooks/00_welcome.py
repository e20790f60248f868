# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Welcome: Diffusion Transformers from scratch
#
# **What DiT is.** Peebles & Xie, *Scalable Diffusion Models with Transformers* (ICCV 2023,
# arXiv 2212.09748), replaced the U-Net inside latent diffusion models with a plain Vision Transformer.
# An image is encoded by a VAE into a small latent, the latent is cut into patches (tokens), and a
# transformer whose every block is conditioned on the timestep and the class (*adaLN-Zero*) predicts
# the noise. Two findings made it matter:
#
# 1. **Quality follows compute.** Across 12 models (S/B/L/XL × patch 8/4/2), FID falls steadily as the
#    transformer's Gflops rise, whether the Gflops come from depth/width or from more tokens (§5,
#    Figures 6 and 8).
# 2. **It beat the U-Nets.** DiT-XL/2 reached FID 2.27 on class-conditional ImageNet 256×256 with
#    classifier-free guidance (Table 2), the state of the art at the time, at lower Gflops than the
#    pixel-space ADM models. Lesson 10 (section 7) puts a DiT and a U-Net of the same Gflops side by side
#    on this course's data and recipe, and finds that at CPU scale the U-Net still wins, although the
#    DiT's FID falls faster as its Gflops grow, the paper's scaling argument.
#
# The same recipe sits under later systems (Stable Diffusion 3, Sora-style video models, PixArt). This
# course rebuilds it piece by piece, on a laptop CPU, with Fashion-MNIST instead of ImageNet.
#
# **Learning objectives.** In the next few minutes you will
# 1. generate images with a small DiT trained by this course's own code;
# 2. see the path from "noise" to "image" that the whole course explains;
# 3. know how the lessons, the `ditlib` library and quick mode fit together.

# %% [markdown]
# ## A trained DiT, in seconds
#
# `data/checkpoints/` ships a small latent DiT (`DiT-T/2`: 6 blocks, width 192, patch 2, on the
# 8×8×4 latents of a small VAE): the course's default model, trained for 6,000 steps on Fashion-MNIST with
# `python -m ditlib train --precision fp32` (the default config `fmnist-latent-DiT-T/2`; the manifest next to it records the
# exact command, the time and the machine). Load it and draw one column per class. (The time printed below is from the run that
# made this notebook's outputs, a quiet 2-core AMD EPYC with native bf16; the README's hardware table has the
# 64-image grid's time on a 2-core CPU without native bf16 too.)

# %%
import time

import torch

from ditlib.course import viz
from ditlib.data import FASHION_MNIST_CLASSES
from ditlib.flops import gflops, num_params
from ditlib.runtime import pick, quick_mode
from ditlib.sample import Pretrained

pipeline = Pretrained.load("fmnist-latent-DiT-T-2")
pipeline

# %%
# NBVAL_CHECK_OUTPUT
model = pipeline.model
print(f"{num_params(model) / 1e6:.2f} M parameters, {gflops(model):.4f} Gflops per forward pass, "
      f"input {tuple(pipeline.codec.latent_shape)} latents, {len(FASHION_MNIST_CLASSES)} classes")

# %%
per_class = pick(full=4, quick=1)                  # quick mode: one image per class, fewer steps
steps = pick(full=250, quick=25)
labels = torch.arange(10).repeat_interleave(per_class)
start = time.perf_counter()
images = pipeline.sample(labels, num_sampling_steps=steps, cfg_scale=1.5, seed=0, progress=False)   # (N, 1, 32, 32)
print(f"{len(labels)} images, {steps} denoising steps each, in {time.perf_counter() - start:.1f} s")
viz.show_images(images.reshape(10, per_class, 1, 32, 32).transpose(0, 1).reshape(-1, 1, 32, 32),
                nrow=10, titles=viz.class_titles(torch.arange(10)) + [""] * (len(labels) - 10));

# %% [markdown]
# Each column is one class (the titles on the first row). Every image started as pure Gaussian noise
# in the 8×8×4 latent space; the transformer removed a little of it at each of the steps, guided toward
# its class, and the VAE's decoder turned the final latent into pixels.
#
# ### From noise to image
#
# The same sampler, stopped at a few points along the way (decoded to pixels each time):

# %%
from ditlib.diffusion import create_diffusion

diffusion = create_diffusion(str(pick(100, 20)))               # respaced: fewer, larger steps
gen = torch.Generator().manual_seed(1)
z = torch.randn(5, *pipeline.codec.latent_shape, generator=gen)
y = torch.tensor([0, 1, 5, 7, 9])
snapshots = []
with torch.no_grad():
    for i, out in enumerate(diffusion.p_sample_loop_progressive(model, z.shape, noise=z, model_kwargs={"y": y},
                                                                 clip_denoised=False, generator=gen, progress=False)):
        if i % max(1, diffusion.num_timesteps // 5) == 0 or i == diffusion.num_timesteps - 1:
            snapshots.append(pipeline.codec.decode(out["pred_xstart"]).clamp(-1, 1))
strip = torch.stack(snapshots, dim=1).reshape(-1, 1, 32, 32)        # rows: images, columns: progress
viz.show_images(strip, nrow=len(snapshots), title="the model's guess of the clean image, early → late");

# %% [markdown]
# At the first step the guess is a bright blob with the class's rough outline; a few steps on, a blurry
# average-looking garment; each later step commits to more detail. Lessons 03 (the reverse process) and 08 (sampling) open up this loop.
#
# ## How the course is built
#
# | lesson | idea | paper |
# |---|---|---|
# | 01 forward noising | q(x_t \| x_0), β schedules, SNR | §3.1 |
# | 02 reparameterization | μ + σ·ε, gradients through samples, ε-prediction | §3.1 |
# | 03 reverse process and loss | posterior, L_simple, learned Σ, hybrid loss | §3.1 |
# | 04 latent space | the VAE, 256×256×3 → 32×32×4, the scale factor | §3.1, §4 |
# | 05 ViT patchify | patches, tokens T = (I/p)², sin-cos positions, Gflops | §3.2 |
# | 06 conditioning | in-context, cross-attention, adaLN, adaLN-Zero | §3.2, Fig. 5 |
# | 07 training | AdamW, EMA, the loop, checkpoints | §4 |
# | 08 sampling | DDPM, respacing, DDIM | §4 |
# | 09 guidance | classifier-free guidance | §3.1, Table 2 |
# | 10 scaling and evaluation | Gflops vs FID | §5, Figs. 6, 8, 9, Table 4 |
# | 11 full scale | ImageNet configs, many GPUs | §4, §5 |
#
# Every lesson derives one idea by hand, then checks that `ditlib` (the library in `ditlib/`) does the
# same thing with an `assert`. The library is what trains and samples for real, from the command line:
#
# ```
# python -m ditlib configs                       # every model config with params and Gflops
# python -m ditlib train                         # the default small model (14–22 min on 2 cores: README)
# python -m ditlib sample --ckpt data/checkpoints/fmnist-latent-DiT-T-2 --out samples.png
# ```
#
# ## Quick mode
#
# Set `DITLIB_QUICK=1` before starting Jupyter (`DITLIB_QUICK=1 make lab`) and every lesson shrinks its
# training and sampling to run in well under two minutes; results get rougher, formulas stay exact.
# The tests run the notebooks this way.

# %%
print("quick mode is", "ON" if quick_mode() else "off")

# %% [markdown]
# ## Exercises and checks
#
# Every lesson from 01 to 11 ends with exercises, and from lesson 03 on they are the algorithms themselves:
# the posterior, the hybrid loss and the DDPM sampling loop (03), multi-head self-attention (05), the timestep
# embedder, the adaLN-Zero block and the whole DiT forward pass (06), the training step (07), respacing and
# the DDIM step (08), the guided forward pass (09), the Fréchet distance and its extrapolation (10). You write a function between
# `### BEGIN SOLUTION` and `### END SOLUTION` (an instructor's student copy has those lines replaced by
# `raise NotImplementedError()`), then run the check cell under it. A check tries your function on several
# inputs and answers in one sentence: either a confirmation or what looks wrong ("forgot the square root",
# "the EMA was updated before the optimiser step", "the Σ channels were guided too").
#
# ## Summary and next
#
# - DiT = latent diffusion with a transformer backbone conditioned by adaLN-Zero; its quality scales
#   with Gflops.
# - A 4-million-parameter DiT trained in minutes on a CPU already draws recognisable clothes.
#
# **Next:** [01 · The forward process](01_forward_noising.ipynb): how an image is turned into noise,
# which is what the model learns to undo.
