# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Latent space: diffusing a compressed image instead of its pixels
#
# DiT never sees a pixel. A frozen autoencoder first squeezes each image into a small *latent*, the
# transformer learns to denoise latents, and the decoder turns its samples back into images. This
# lesson measures what that buys, opens up the autoencoder the course ships, and computes the one
# number that connects it to the diffusion process: the latent scale factor.
#
# **Learning objectives.** After this lesson you can
# 1. explain with numbers (values, tokens, Gflops) why a transformer on 256×256×3 pixels is too expensive,
#    and why attention makes it worse than linear;
# 2. use diffusers' `AutoencoderKL` through `ditlib.vae.LatentCodec`: encode to q(z|x), sample, scale, decode,
#    and measure reconstruction quality in PSNR;
# 3. say why latents are multiplied by a scale factor (0.18215 for Stable Diffusion's VAE), and build DiT's
#    training data yourself: posterior samples times a factor measured on them, over all elements at once;
# 4. see what a latent holds: an 8×8 image with 4 channels, and a space where blends look like clothes.
#
# **Paper.** DiT §3.1 *Latent diffusion models*: a two-stage model (Rombach et al. 2022). An encoder E
# maps an image x to z = E(x); the diffusion model is trained on z with E frozen; a sample z is turned
# into an image by the decoder, x = D(z). §4 *Diffusion*: DiT uses Stable Diffusion's off-the-shelf VAE,
# which downsamples by 8, so a 256×256×3 image becomes a 32×32×4 latent. The forward process of lesson 01
# now acts on z:
#
# $$q(z_t \mid z_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\, z_0,\ (1-\bar\alpha_t) I\big), \qquad z_0 = s\cdot E(x),$$
#
# where s is the scale factor of section 5 (in the official code, `vae.encode(x).latent_dist.sample().mul_(0.18215)`).
#
# *Quick mode* (`DITLIB_QUICK=1`) encodes fewer images for the PSNR and the scale factor; the rest is unchanged.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

from ditlib.course import exercises, viz
from ditlib.data import FashionMNIST
from ditlib.diffusion import create_diffusion
from ditlib.flops import flop_breakdown, gflops
from ditlib.models import DiT
from ditlib.runtime import pick
from ditlib.vae import (SD_VAE_SCALE_FACTOR, VAEWeightsNotFound, load_sd_vae, load_vae, reconstruction_psnr,
                        reconstructions)

torch.manual_seed(0)
images, labels = FashionMNIST("test").examples(per_class=1)        # (10, 1, 32, 32) in [-1, 1], one per class
viz.show_images(images, titles=viz.class_titles(labels));

# %% [markdown]
# ## 1. Why pixels are expensive
#
# Count what a transformer would have to process for one ImageNet image at 256×256, in pixels and in
# the SD VAE's latent space (downsampling factor f = 8, 4 channels). DiT cuts its input into p×p patches,
# one token each (lesson 05), so the sequence length is T = (I/p)² for an I×I input:

# %%
# NBVAL_CHECK_OUTPUT
image_side, image_channels = 256, 3
f, latent_channels = 8, 4                                    # the SD VAE (DiT §4)
latent_side = image_side // f                                # 32
pixel_values = image_side * image_side * image_channels      # 196,608
latent_values = latent_side * latent_side * latent_channels  # 4,096
p = 2
pixel_tokens, latent_tokens = (image_side // p) ** 2, (latent_side // p) ** 2
assert (pixel_values, latent_values, latent_tokens) == (196_608, 4_096, 256)
print(f"values per image:   {pixel_values:,} pixels  vs {latent_values:,} latents  ({pixel_values // latent_values}× fewer)")
print(f"tokens at p = {p}:    {pixel_tokens:,} pixel patches vs {latent_tokens} latent patches ({pixel_tokens // latent_tokens}× fewer)")
print(f"attention pairs T²: {pixel_tokens ** 2:,} vs {latent_tokens ** 2:,} ({(pixel_tokens // latent_tokens) ** 2:,}× fewer)")

# %% [markdown]
# Every linear layer of a transformer costs in proportion to T, but self-attention compares every
# token with every other one: its two matrix products cost 2·T²·D per block. Ask `ditlib.flops` for the
# Gflops of one forward pass of DiT-XL (the paper's convention, Table 4) on the latent, and on
# hypothetical pixel inputs (`gflops(name, input_size, in_channels)`):

# %%
# NBVAL_CHECK_OUTPUT
with torch.device("meta"):                                   # shapes only: no memory, no weights
    xl_pixels_p16 = DiT(input_size=256, patch_size=16, in_channels=3, hidden_size=1152, depth=28, num_heads=16)
rows = [("latent 32×32×4", "DiT-XL/2", 2, flop_breakdown("DiT-XL/2")),
        ("pixels 256×256×3", "DiT-XL/2", 2, flop_breakdown("DiT-XL/2", input_size=256, in_channels=3)),
        ("pixels 256×256×3", "DiT-XL/8", 8, flop_breakdown("DiT-XL/8", input_size=256, in_channels=3)),
        ("pixels 256×256×3", "DiT-XL/16", 16, flop_breakdown(xl_pixels_p16))]
print(f"{'input':18s} {'model':10s} {'tokens T':>9s} {'Gflops':>10s} {'attention T² share':>19s}")
for space, name, patch, parts in rows:
    side = 32 if space.startswith("latent") else 256
    total = sum(parts.values()) / 1e9
    print(f"{space:18s} {name:10s} {(side // patch) ** 2:9,d} {total:10.2f} {parts['attention_matmuls'] / 1e9 / total:18.1%}")
assert abs(gflops("DiT-XL/2") - 118.64) < 0.01                 # Table 4

# %% [markdown]
# DiT-XL/2 on latents is the paper's 118.6 Gflops model. The same network on pixels at patch size 2
# would need 16,384 tokens and about 24,600 Gflops, 208× more, and 70% of that is attention alone
# (on latents: 3.6%). A pixel model with 16×16 patches gets back to 256 tokens and the same cost, but then
# each token is a 768-number patch that one linear layer must embed and one linear layer must predict.
# Latent diffusion splits the work instead: the autoencoder removes detail the eye barely sees
# (*perceptual compression*), once, with convolutions; the transformer spends its compute on the
# content of a 4,096-number summary.
#
# The course's own models make the same trade at small scale: the shipped latent model runs on the
# 8×8×4 latents of a small VAE, the pixel model on 32×32×1 images.

# %%
# NBVAL_CHECK_OUTPUT
for what, name, size, channels in [("latent 8×8×4 (shipped)", "DiT-T/2", 8, 4), ("pixels 32×32×1 (shipped)", "DiT-T/4", 32, 1),
                                   ("pixels 32×32×1", "DiT-T/2", 32, 1)]:
    print(f"{what:26s} {name}: {(size // int(name[-1])) ** 2:4d} tokens, {gflops(name, input_size=size, in_channels=channels):.3f} Gflops")

# %% [markdown]
# ## 2. The autoencoder: diffusers' `AutoencoderKL`
#
# The VAE of Stable Diffusion is the class `diffusers.AutoencoderKL`: a convolutional encoder that
# outputs, for each latent position, a mean μ(x) and a log-variance (a diagonal Gaussian
# q(z|x) = N(μ, σ²)), and a convolutional decoder. It was trained with a reconstruction loss plus a small
# KL(q(z|x) ‖ N(0, I)) penalty (plus perceptual and adversarial terms, which our small one skips).
#
# The course ships a small `AutoencoderKL` of the same architecture, trained on Fashion-MNIST by
# `python -m ditlib train-vae`: three resolution levels instead of four, so it downsamples by 4 and turns
# a 32×32×1 image into an 8×8×4 latent. `load_vae` wraps it in a `LatentCodec`, which adds the scale
# factor and the image ↔ scaled-latent conventions DiT needs:

# %%
# NBVAL_CHECK_OUTPUT
codec = load_vae("fmnist-vae")
print(codec)
print(f"{type(codec.vae).__name__} with {sum(p.numel() for p in codec.vae.parameters()):,} parameters, "
      f"downsampling ×{codec.downsample_factor}, latent {codec.latent_shape}")
print(f"{32 * 32 * 1} pixel values -> {np.prod(codec.latent_shape)} latent values")

# %% [markdown]
# Open the encoder by hand with diffusers' own API (what the official DiT training script calls) and
# compare it with `codec.encode`, which returns the posterior (μ, σ) in the VAE's units:

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    dist = codec.vae.encode(images).latent_dist                 # diffusers' DiagonalGaussianDistribution
q = codec.encode(images)                                        # ditlib: Posterior(mean, std), each (10, 4, 8, 8)
assert torch.allclose(dist.mean, q.mean) and torch.allclose(dist.std, q.std)
print(f"q(z|x): mean {tuple(q.mean.shape)}, std {tuple(q.std.shape)}")
print(f"spread of μ over images and positions: {q.mean.std():.2f};  typical σ: {q.std.median():.3f}")

# %% [markdown]
# σ is tiny next to the spread of μ: the KL weight is small, so q(z|x) is almost a point and a sample
# z = μ + σ·ε stays close to the mean. DiT's training data is such a sample, times the scale factor s;
# sampling ends with the decoder applied to z / s. Both by hand, against `ditlib`:

# %%
s = codec.scale_factor
eps = torch.randn(q.mean.shape, generator=torch.Generator().manual_seed(0))
z_by_hand = (q.mean + q.std * eps) * s                                       # a scaled latent, (10, 4, 8, 8)
z = codec.encode_sample(images, generator=torch.Generator().manual_seed(0))
assert torch.allclose(z_by_hand, z, atol=1e-6)
with torch.no_grad():
    decoded_by_hand = codec.vae.decode(z / s).sample.clamp(-1, 1)             # (10, 1, 32, 32)
assert torch.allclose(decoded_by_hand, codec.decode(z), atol=1e-6)
print("encode_sample = s·(μ + σ·ε) and decode(z) = D(z / s), as in the official DiT code")

# %% [markdown]
# ## 3. How good are the reconstructions?
#
# Top row: test images; bottom row: D(E(x)), the decoded posterior mean.

# %%
reconstructed = codec.reconstruct(images)
viz.show_images(torch.cat([images, reconstructed]), nrow=10, titles=viz.class_titles(labels) + [""] * 10);

# %% [markdown]
# Shapes and contrast survive; the finest texture does not: the "Lee" print on the pullover comes back as an
# unreadable dark band, and stitching disappears. A number for
# it: the peak signal-to-noise ratio, with pixels in [0, 1],
#
# $$\mathrm{PSNR} = 10 \log_{10} \frac{1}{\mathrm{MSE}(x, \hat x)}\ \text{dB},$$
#
# averaged over images. Compute it by hand on the first test images and compare with `reconstruction_psnr`:

# %%
num_test = pick(500, 100)                                    # quick mode: fewer test images
x, x_hat = reconstructions(codec, num_test)                  # (N, 1, 32, 32) each, in [-1, 1]
mse = ((x - x_hat) / 2).square().flatten(1).mean(1)          # per image, in [0, 1] units
psnr_by_hand = (10 * torch.log10(1 / mse)).mean().item()
assert abs(psnr_by_hand - reconstruction_psnr(codec, num_test)) < 1e-4
print(f"PSNR on the first {num_test} test images: {psnr_by_hand:.2f} dB "
      f"(all 10,000, measured after training: {codec.meta['psnr_db']:.2f} dB)")

# %% [markdown]
# About 27 dB: an RMS error of 10^(−27/20) ≈ 4.5% of the pixel range. For reference, the model card of
# the SD VAE the paper uses (ft-EMA) reports 23.8 dB on 256×256 COCO photos, from 48× compression rather
# than our 4×.
#
# ## 4. Inside one latent
#
# A latent is still an image: an 8×8 grid with 4 channels, each position describing the 4×4 pixel block
# above it. That is why lesson 05 can cut it into patches exactly as one cuts an image.

# %%
k = 9                                                        # the ankle boot
panels = [("image", images[k, 0], "gray", 1)] + [(f"channel {c}", z[k, c], "RdBu_r", 3) for c in range(4)] \
    + [("D(z / s)", codec.decode(z[k:k + 1])[0, 0], "gray", 1)]
fig, axes = plt.subplots(1, len(panels), figsize=(9, 1.8))
for ax, (title, values, cmap, limit) in zip(axes, panels):
    ax.imshow(values.numpy(), cmap=cmap, vmin=-limit, vmax=limit)
    ax.set(title=title, xticks=[], yticks=[])
fig.tight_layout()

# %% [markdown]
# The boot's silhouette shows in several channels, each with its own code: channel 3 is strongly positive
# (red) on the background and lower on the boot, channel 1 is negative (blue) on the boot itself, and
# channels 0 and 2 are almost flat. Nothing asks the channels to be readable
# by us; they only have to let the decoder rebuild the image. The values sit on a roughly unit scale
# (colour range ±3) thanks to the factor s. Why that matters is the next section.
#
# ## 5. The latent scale factor
#
# The forward process was designed for data of unit variance: x_T ≈ N(0, I) only if √ᾱ_T x_0 is negligible,
# and the schedule's signal-to-noise ratio SNR(t) = ᾱ_t / (1 − ᾱ_t) assumes Var(x_0) = 1. If the data
# have standard deviation σ_data, the real SNR is σ_data² · ᾱ_t / (1 − ᾱ_t), and every noise level
# shifts. The SD VAE's latents have σ_data ≈ 5.5, so the official code multiplies them by
# 0.18215 ≈ 1/5.5. Where would SNR = 1 fall, for data with our VAE's unscaled spread, the SD VAE's,
# and unit variance?

# %%
# NBVAL_CHECK_OUTPUT
abar = create_diffusion("").alphas_cumprod.numpy()                    # ᾱ_t, linear schedule, T = 1000
for name, std in [("unit variance (scaled)", 1.0), ("our VAE, unscaled", 1 / codec.scale_factor),
                  ("SD VAE, unscaled", 1 / SD_VAE_SCALE_FACTOR)]:
    snr = std ** 2 * abar / (1 - abar)
    print(f"{name:23s} σ_data = {std:4.2f}: SNR = 1 at t = {np.argmax(snr < 1):3d}, SNR(T) = {snr[-1]:.1e}")

# %% [markdown]
# Unscaled SD latents would keep more signal than noise until t ≈ 580 instead of 260, and the last step
# would still carry 30× more signal than the sampler's pure-noise start assumes. Scaling fixes the
# variance without touching the VAE. Only a scale, no shift: the official recipe does not subtract the
# mean.
#
# For the SD VAE, 0.18215 was measured once on its training data and became a constant. Our VAE's factor
# was measured the same way after training (`ditlib.vae.estimate_scale_factor`, on 4,096 training images)
# and is stored with its weights: `codec.scale_factor`. You will now measure it yourself.
#
# ## 6. Exercise: the latents DiT trains on
#
# Write `scaled_latents(codec, images, generator)`: given a codec and images (N, 1, 32, 32) in [−1, 1], return
# the pair `(z, s)` that a DiT training run starts from:
#
# - **the samples**: encode, `q = codec.encode(images)` (the posterior, `q.mean` and `q.std` each (N, C, h, w)),
#   and draw one sample z = μ + σ·ε per image, with ε = `torch.randn(q.mean.shape, generator=generator)`, drawn
#   once, after encoding (exactly what `q.sample(generator)` does: you may call it instead);
# - **the scale**: s = 1 / (standard deviation of those unscaled samples), a Python float;
# - return z·s, which has standard deviation 1, and s.
#
# Two choices make the lesson's point. The standard deviation is taken over **all** elements at once, images,
# channels and positions: DiT multiplies every latent by one number, as the official code multiplies by
# 0.18215, and `codec.decode` divides by that same number (one factor per channel would be another recipe,
# with other factors to undo before decoding). And s is measured on **samples**, not on the means: DiT trains
# on samples (a fresh ε each time an image is used), whose spread is that of μ plus σ. The check runs your
# function on a small VAE with random weights and a large σ, so that a mean and a sample are far apart. It
# refuses `estimate_scale_factor`, `codec.encode_sample` and the latent-cache builders of `ditlib.latents`, and
# `codec.scale_factor` is the very number you are measuring: leave it alone.

# %% nbgrader={"grade": false, "grade_id": "scaled_latents", "locked": false, "schema_version": 3, "solution": true, "task": false}
def scaled_latents(codec, images, generator):
    ### BEGIN SOLUTION
    q = codec.encode(images)                                  # q(z|x): mean, std, each (N, C, h, w), unscaled
    eps = torch.randn(q.mean.shape, generator=generator)      # ε ~ N(0, I), (N, C, h, w)
    z = q.mean + q.std * eps                                  # posterior samples, (N, C, h, w), unscaled
    s = 1.0 / z.double().std().item()                         # one number, over all N·C·h·w elements
    return z * s, s                                           # (N, C, h, w) with std 1, and the float s
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_scaled_latents", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_scaled_latents(scaled_latents)
display(feedback)
### BEGIN HIDDEN TESTS
exercises.require(feedback)
z_check, s_check = scaled_latents(codec, images, torch.Generator().manual_seed(4))    # the shipped VAE, 10 test images
expected_check = codec.encode(images).sample(torch.Generator().manual_seed(4)) * s_check
assert abs(z_check.std().item() - 1) < 1e-3 and torch.allclose(z_check.double(), expected_check.double(), atol=1e-5), \
    "on the shipped VAE, z should be codec.encode(images).sample(generator) · s, with standard deviation 1"
### END HIDDEN TESTS

# %% [markdown]
# Now build the latents of random training images, as a training run does, and compare your s with the
# factor stored with the weights (measured the same way, on 4,096 images):

# %%
num_train = pick(2048, 256)                                  # quick mode: fewer images, a looser estimate
g = torch.Generator().manual_seed(0)
train_images = FashionMNIST("train").get_batch(torch.randperm(60_000, generator=g)[:num_train])[0]   # (N, 1, 32, 32)
z_train, s_measured = scaled_latents(codec, train_images, g)            # (N, 4, 8, 8) with std 1, and s
assert abs(s_measured / codec.scale_factor - 1) < 0.03, (s_measured, codec.scale_factor)
print(f"from {num_train} images: s = {s_measured:.4f};  stored with the weights: s = {codec.scale_factor:.4f}")
print(f"scaled latents: mean {z_train.mean():.2f}, std {z_train.std():.2f}")

# %% [markdown]
# ## 7. Walking through latent space
#
# Blend two images in two ways, for λ from 0 to 1:
# - in latent space: decode (1 − λ)·z_a + λ·z_b (top row);
# - in pixel space: (1 − λ)·x_a + λ·x_b (bottom row).

# %%
def blend(a, b, steps=8):
    """Top row: decoded latent blends; bottom row: pixel blends, between images[a] and images[b]."""
    lam = torch.linspace(0, 1, steps).reshape(-1, 1, 1, 1)
    z_a, z_b = codec.encode(images[a:a + 1]).mean * s, codec.encode(images[b:b + 1]).mean * s
    in_latents = codec.decode((1 - lam) * z_a + lam * z_b)
    in_pixels = (1 - lam) * images[a:a + 1] + lam * images[b:b + 1]
    return viz.show_images(torch.cat([in_latents, in_pixels]), nrow=steps,
                           title=" → ".join(viz.class_titles(labels[[a, b]])) + ": latent blend (top), pixel blend (bottom)")


blend(2, 3);                                                 # pullover -> dress

# %% [markdown]
# The pixel row is a double exposure: both pictures are fully there at every step, at partial opacity;
# the "Lee" lettering stays sharp but fades with the pullover (barely visible one frame before the end, gone at
# λ = 1), and the dress's outline shows through the pullover. In the
# latent row the decoder draws one garment at each step. It never drew the lettering: already at λ = 0
# the pullover has a dark smudge across the chest where "Lee" was, as in its reconstruction in section 3.
# Along the row the smudge fades and the body narrows toward the dress. The sleeves are the least
# convincing part; they fade rather than shrink.
# With only 4× compression our latent space is still close to pixels, so the effect is moderate. What
# matters for DiT is that the decoder, not the diffusion model, turns any nearby latent into plausible
# pixels. Try other pairs:

# %%
pairs = {"sandal → ankle boot": (5, 9), "T-shirt → trouser": (0, 1), "shirt → bag": (6, 8), "coat → sneaker": (4, 7)}
viz.choice_widget(list(pairs), lambda name: blend(*pairs[name]), description="pair")

# %% [markdown]
# ## 8. At full scale: the Stable Diffusion VAE
#
# `load_sd_vae("stabilityai/sd-vae-ft-ema")` returns the VAE the paper used (about 84 M parameters, a
# 335 MB download from the Hugging Face Hub) as the same `LatentCodec`: 256×256×3 → 32×32×4, s = 0.18215.
# It looks in the local cache first and never waits long on a network it cannot reach: offline, it
# stops at once with instructions. The cell below stays offline unless you set `ALLOW_DOWNLOAD = True`.

# %%
ALLOW_DOWNLOAD = False                                       # True: fetch the SD VAE (335 MB) if it is not cached
if not ALLOW_DOWNLOAD:
    os.environ["HF_HUB_OFFLINE"] = "1"                       # cache only, in this kernel
try:
    sd_codec = load_sd_vae("stabilityai/sd-vae-ft-ema")
    assert sd_codec.scale_factor == SD_VAE_SCALE_FACTOR and sd_codec.latent_shape == (4, 32, 32)
    print(sd_codec)
except VAEWeightsNotFound as err:
    print(f"{type(err).__name__}: {err}")

# %% [markdown]
# With the weights available, everything in this lesson works on it unchanged: `sd_codec.encode_sample(x)`
# for RGB images x (N, 3, 256, 256) in [−1, 1], `sd_codec.decode(z)` for DiT-XL/2's samples.
#
# ## Summary
#
# - A transformer on pixels pays for every value: 196,608 per 256×256 image and, at p = 2, 16,384 tokens;
#   DiT-XL/2 would cost about 24,600 Gflops, 70% of it attention (which grows like T²). The SD VAE's
#   32×32×4 latent (f = 8) has 48× fewer values and 256 tokens: 118.6 Gflops.
# - `AutoencoderKL` encodes x to a diagonal Gaussian q(z|x); DiT trains on s · (μ + σ·ε) and decodes its
#   samples with D(z / s). Our small one maps 32×32×1 → 8×8×4 at about 27 dB PSNR.
# - The scale factor s = 1 / std of posterior samples, one number over all elements, gives the diffusion
#   unit-variance data, the scale its noise schedule assumes; DiT trains on s · (μ + σ·ε). s is 0.18215 for
#   the SD VAE, 0.491 for ours (measured from data, stored with the weights).
# - A latent is a small multi-channel image, and blends of latents decode to plausible images.
#
# **More to try.** Compute the scale factor per channel (`s_measured / z_train.std(dim=(0, 2, 3))`): how
# different are the four channels? Measure s on the means `codec.encode(train_images).mean` instead of the
# samples: how much does our VAE's small σ change it? Measure the PSNR of `codec.reconstruct(x, sample=True)`:
# how much does σ cost?
#
# **Next:** [05 · Patchify](05_vit_patchify.ipynb): how DiT cuts this latent into a sequence of tokens, and
# where each token learns its position.
