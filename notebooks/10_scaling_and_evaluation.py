# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10 · Scaling and evaluation: what FID measures, and what more compute buys
#
# The paper's central claim is a scaling law: more Gflops per forward pass, better samples. "Better" means
# a lower FID. This lesson opens that number up (what it computes, how it depends on the sample count and on
# the network that extracts the features), then reads the course's own scaling grid and puts it next to
# the paper's Figures 8 and 9, and last races a DiT against a U-Net of the same Gflops.
#
# **Learning objectives.** After this lesson you can
# 1. compute FID by hand from two sets of feature vectors and match torch-fidelity;
# 2. explain why FID depends on the number of samples and on the feature extractor, and which comparisons
#    are therefore meaningless;
# 3. estimate training compute as Gflops × batch × steps × 3, for our grid and for DiT-XL/2;
# 4. read FID against training steps and against Gflops, and say how far our small grid supports the
#    paper's claims;
# 5. put a DiT and a U-Net of the same Gflops side by side, trained and measured alike, and say where the
#    paper's "transformers replace U-Nets" holds at this scale and where it does not.
#
# **Paper.** DiT §4 *Evaluation metrics* (FID-50K as the main metric, plus sFID, IS, precision/recall) and
# §5 *Experiments*: Figure 6 (FID vs steps for 12 models), Figure 8 (FID vs Gflops), Figure 9 (FID vs
# training compute), and the compute estimate "Gflops · batch size · training steps · 3". FID itself is
# from Heusel et al. 2017.
#
# *Quick mode* (`DITLIB_QUICK=1`) uses smaller image sets for the FID sections and races the DiT and the U-Net
# of section 7 for 10 steps on 256 images instead of 300 on the whole latent cache; the scaling grid is read
# from the saved results either way.

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import ditlib
from ditlib.course import exercises, viz
from ditlib.data import FashionMNIST
from ditlib.evaluate import compute_metrics, extract_features, inception_weights_path
from ditlib.flops import PAPER_GFLOPS, gflops
from ditlib.runtime import pick

RESULTS = Path(ditlib.__file__).resolve().parents[1] / "experiments" / "results"
train_images = FashionMNIST("train").images                          # uint8 (60000, 1, 32, 32)
test_images = FashionMNIST("test").images                            # uint8 (10000, 1, 32, 32)
nhwc = lambda x: x.permute(0, 2, 3, 1)                               # noqa: E731  the layout metrics take

# %% [markdown]
# ## 1. FID by hand
#
# FID embeds every image with a fixed network (Inception-v3 in the paper; here the course's Fashion-MNIST
# classifier: FID-FMNIST, which lesson 08 used to score sampling steps), fits a Gaussian N(μ, Σ) to each set of feature vectors, and reports the
# squared Fréchet (2-Wasserstein) distance between the two Gaussians (Heusel et al. 2017):
#
# $$\mathrm{FID} = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{Tr}\big(\Sigma_1 + \Sigma_2 - 2\,(\Sigma_1\Sigma_2)^{1/2}\big).$$
#
# The first term compares the average image, the second the spread and correlations of the features.
# (Σ₁Σ₂)^{1/2} is not symmetric, but its trace equals that of the symmetric matrix
# (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}, whose eigenvalues `numpy.linalg.eigvalsh` computes reliably.
#
# Take real images on both sides: a subset of the training set against the test set (the "real vs real"
# floor of `docs/results.md`).

# %%
gen = torch.Generator().manual_seed(0)
pool = train_images[torch.randperm(len(train_images), generator=gen)[:pick(10_000, 1_000)]]
reference = test_images[:pick(10_000, 1_000)]
pool_features = extract_features(nhwc(pool))["fid"].double().numpy()          # (N, 128) penultimate layer
reference_features = extract_features(nhwc(reference))["fid"].double().numpy()
print(f"features: {pool_features.shape} train images, {reference_features.shape} reference images")

# %% [markdown]
# **Exercise.** Write the distance itself, `frechet_distance(mu1, sigma1, mu2, sigma2)`: the means are (D,)
# NumPy float64 arrays, the covariances (D, D) symmetric positive semi-definite; return a float. For the trace
# of the matrix square root use the identity above: with S = Σ₁^{1/2} (from `np.linalg.eigh(sigma1)`: V·√w·Vᵀ),
# Tr (Σ₁Σ₂)^{1/2} = Σ √eig(S Σ₂ S) (`np.linalg.eigvalsh`; clip tiny negative eigenvalues at 0). The check
# names the usual slips: the trace term dropped, the norm not squared, an elementwise square root of Σ₁·Σ₂
# instead of the matrix square root, the factor 2 missing.

# %% nbgrader={"grade": false, "grade_id": "frechet_distance", "locked": false, "schema_version": 3, "solution": true, "task": false}
def frechet_distance(mu1, sigma1, mu2, sigma2):
    ### BEGIN SOLUTION
    w, v = np.linalg.eigh(sigma1)
    sqrt_1 = (v * np.sqrt(w.clip(min=0))) @ v.T                                  # Σ₁^{1/2}
    trace_sqrt = np.sqrt(np.linalg.eigvalsh(sqrt_1 @ sigma2 @ sqrt_1).clip(min=0)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_frechet_distance", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_frechet_distance(frechet_distance)
display(feedback)
### BEGIN HIDDEN TESTS
_ = exercises.require(feedback)                          # AssertionError with the message if it failed
### END HIDDEN TESTS

# %% [markdown]
# FID is then your distance between the Gaussians fitted to the two sets of features; on real images it must
# agree with torch-fidelity's, the implementation `ditlib.metrics.compute_metrics` uses:

# %%
def fid_of_features(features_1, features_2):
    """Fit N(μ, Σ) to each set of feature vectors (rows) and return your Fréchet distance between them."""
    return frechet_distance(features_1.mean(0), np.cov(features_1, rowvar=False),
                            features_2.mean(0), np.cov(features_2, rowvar=False))


n_check = pick(2_000, 500)
fid_by_hand = fid_of_features(pool_features[:n_check], reference_features)
fid_library = compute_metrics(nhwc(pool[:n_check]), reference=nhwc(reference), precision_recall=False)["fid"]
assert abs(fid_by_hand - fid_library) < 1e-3 * max(1.0, fid_library), (fid_by_hand, fid_library)
print(f"{n_check} train vs {len(reference)} test images: FID by hand {fid_by_hand:.4f}, "
      f"torch-fidelity (ditlib.metrics) {fid_library:.4f}")

# %% [markdown]
# Two sets of *real* images, and the FID is not 0. Almost all of it is the finite-sample bias of the estimate,
# which the next section measures (section 8 extrapolates it away).
#
# ## 2. Pitfall 1: FID depends on the number of samples
#
# μ and Σ are estimated from n samples. The estimate of Tr((Σ₁Σ₂)^{1/2}) is biased, and the bias shrinks
# roughly like 1/n (Chong & Forsyth 2020, "Effectively unbiased FID"). So even a perfect generator scores
# worse with fewer samples. Measure it: real-vs-real FID at several n, three random subsets each.

# %%
sizes = pick([100, 250, 500, 1_000, 2_000, 5_000, 10_000], [100, 250, 500, 1_000])
rng = np.random.default_rng(0)
fid_at = {n: [fid_of_features(pool_features[rng.choice(len(pool_features), n, replace=False)], reference_features)
              for _ in range(3)] for n in sizes}
for n, values in fid_at.items():
    print(f"n = {n:6d}:  real-vs-real FID {np.mean(values):7.3f} ± {np.std(values):.3f}")
fig = viz.plot_curves({"train subset vs test": [np.mean(v) for v in fid_at.values()]}, x=sizes,
                      xlabel="number of samples n", title="FID-FMNIST of real images against real images")
fig.axes[0].set(xscale="log", yscale="log");

# %% [markdown]
# On the log-log plot the points fall on a line of slope about −1: the floor is mostly a 1/n bias. The
# floor in `docs/results.md` (one subset of 1,000 training images: 0.63; 10,000: 0.087) lies on this curve within the
# spread of the subsets printed above (0.720 ± 0.113 at n = 1,000). Two consequences:
#
# - compare FIDs **only at equal n** (the paper's results use 50,000 samples, "FID-50K"; its sampling-compute
#   study, Figure 10, uses FID-10K);
# - a model's FID at small n mixes its quality with this bias; `docs/results.md` lists the floor at the same n
#   next to every model so the bias can be read off.
#
# ## 3. Pitfall 2: the feature extractor defines the number
#
# FID is a distance *in a feature space*. The paper's numbers use Inception-v3 features (through ADM's
# TensorFlow suite); ours use a 128-d layer of a small Fashion-MNIST classifier. The two are different
# rulers: an FID-FMNIST of 10 says nothing about an Inception FID, and neither can be compared with the
# paper's ImageNet numbers. Even on our own data, changing the extractor changes the values and can
# change the ranking. Compare the classifier's features with the crudest extractor, the raw pixels,
# on two kinds of damaged real images:

# %%
def damaged(kind, images, seed=0):
    x = images.float() / 127.5 - 1                                             # [-1, 1]
    if kind == "noise":
        x = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    elif kind == "shift by 2 pixels":
        x = torch.roll(x, shifts=2, dims=3)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


damage_set = pool[:n_check]
for kind in ("none", "noise", "shift by 2 pixels"):
    images = damaged(kind, damage_set)
    fid_classifier = fid_of_features(extract_features(nhwc(images))["fid"].double().numpy(), reference_features)
    fid_pixels = fid_of_features(images.flatten(1).double().numpy() / 127.5 - 1,
                                  reference.flatten(1).double().numpy() / 127.5 - 1)
    print(f"{kind:18s}  FID in classifier features {fid_classifier:8.2f}   FID in pixel space {fid_pixels:8.2f}")

# %% [markdown]
# The two rulers disagree even on the ranking. In the stored run, pixel space finds the 2-pixel shift by far
# the worse damage (about 108 against 16 for the noise): every pixel moved. The classifier, trained to
# recognise clothes wherever they sit, finds the noise worse (about 24 against 11). Each extractor encodes a
# judgement of which differences matter. Inception's is the one
# the literature agreed on for ImageNet photos; for 32×32 grayscale clothes it is a poor judge (and slow on
# a CPU), which is why the course uses its own classifier. ditlib can still compute Inception FID
# (`extractor="inception"`) where torch-fidelity's weights are on disk; it never downloads them:

# %%
try:
    print("Inception weights found at", inception_weights_path())
except FileNotFoundError as err:
    print(f"FileNotFoundError: {str(err).split(' (looked for')[0]}")       # the machine's cache path left out

# %% [markdown]
# ## 4. Training compute
#
# The paper compares models by training compute, estimated as (§5)
#
# $$\text{training Gflops} \approx \text{Gflops per forward pass} \times \text{batch size} \times \text{training steps} \times 3,$$
#
# the factor 3 counting the backward pass as twice the forward. (The Gflops are those of lesson 05: one
# multiply-add counts as one flop, one image, no guidance.) For DiT-XL/2 at 256×256, with the published
# recipe of 400K steps for the model comparisons and 7M steps for the final model, both at batch 256:

# %%
# NBVAL_CHECK_OUTPUT
xl2 = gflops("DiT-XL/2")                                                      # ImageNet 256: 32×32×4 latents
assert abs(xl2 - PAPER_GFLOPS["DiT-XL/2"]) < 0.01
for steps in (400_000, 7_000_000):
    compute = xl2 * 256 * steps * 3
    print(f"DiT-XL/2, {steps:>9,} steps × batch 256: {xl2:.2f} × 256 × {steps:,} × 3 = {compute:.3e} Gflops "
          f"= {compute * 1e9:.2e} flops")

# %% [markdown]
# About 6 × 10²⁰ multiply-adds for the final model (published recipe; our arithmetic). The course's
# scaling grid (`experiments/scaling_grid.py`) trains small DiTs on the 8×8×4 latents of the small VAE: sizes
# XS, T, M × patches 1, 2, 4, each with the default's whole recipe (6,000 steps of batch 64, cosine learning
# rate, min-SNR weighting, fp32), FID-FMNIST at N = 1,000 (DDIM 50, no guidance, as the paper's figures) of the
# EMA weights every 1,500 steps. Read the finished cells and recompute each one's compute from its Gflops:

# %%
from ditlib.course import findings

grid = json.loads((RESULTS / "scaling_grid.json").read_text())          # one entry per finished run
planned = [f"DiT-{size}/{patch}" for size in ("XS", "T", "M") for patch in (1, 2, 4)]
print(f"{'model':10s} {'seed':>4s} {'params':>8s} {'Gflops':>8s} {'tokens':>6s} {'train Gflops':>13s}  FID at "
      + ", ".join(str(s["step"]) for s in grid[0]["snapshots"]))
for e in grid:
    size, patch = findings.size_and_patch(e["model"])
    compute = findings.training_gflops(e, e["steps"])                      # Gflops × batch × steps × 3
    assert np.isclose(compute, e["gflops"] * e["batch_size"] * e["steps"] * 3)
    print(f"{e['model']:10s} {e['seed']:4d} {e['params'] / 1e6:7.2f}M {e['gflops']:8.4f} {(8 // patch) ** 2:6d} "
          f"{compute:13.3e}  " + "  ".join(f"{s['fid']:5.2f}" for s in e["snapshots"]))
print("cells not run yet:", ", ".join(m for m in planned if m not in {e["model"] for e in grid}) or "none")

# %% [markdown]
# At 6,000 steps a cell costs from about 4 × 10³ training Gflops (XS/4) to 5 × 10⁵ (M/1): between about
# 7 × 10⁴ and 10⁷ times less than one 400K-step DiT-XL/2 run. The printout says which cells are in the committed
# file. Of the missing ones, T/1 and M/1 cost 4 and 9 times the default's Gflops per step, XS/1 about 1.2 times,
# and the patch-4 cells less than the default.
#
# ## 5. FID against steps, Gflops and compute (Figures 6, 8, 9)
#
# The grid's sizes are the course's own (`ditlib.models.COURSE_SIZES`), smaller than the paper's S/B/L/XL:
# XS = 4 blocks of width 128 (2 heads), T = 6 blocks of width 192 (3 heads), M = 8 blocks of width 256
# (4 heads). Colour is the model size, line style the patch size (1, 2, 4: 64, 16, 4 tokens). The figures are
# `ditlib.course.findings` (the same ones `experiments/plot.py` writes); the right panel of the second is the
# paper's Table 4, ImageNet at 256×256 after 400K steps, for the shape of the result: the two FIDs are not on
# one scale.

# %%
findings.scaling_steps_figure(grid);

# %%
findings.scaling_gflops_figure(grid);

# %%
findings.scaling_compute_figure(grid);

# %% [markdown]
# Pick one model size to see it against the others on the compute axis (Figure 9's question: at equal training
# compute, does the bigger model reach the lower FID?).

# %%
def highlight_size(size):
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for e in grid:
        run_size, patch = findings.size_and_patch(e["model"])
        chosen = size == "all" or run_size == size
        ax.plot([findings.training_gflops(e, s["step"]) for s in e["snapshots"]], [s["fid"] for s in e["snapshots"]],
                color=findings.SIZE_COLORS[run_size] if chosen else "0.85", ls=findings.PATCH_STYLES[patch],
                marker="o", ms=3, label=f"{e['model']} seed {e['seed']}" if chosen else None, zorder=2 if chosen else 1)
    ax.set(xlabel="training compute (Gflops)", xscale="log", yscale="log", ylabel="FID-FMNIST",
           title=f"model size: {size}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()


viz.choice_widget(["all", "XS", "T", "M"], highlight_size, description="size")

# %%
by_model = {}
for e in grid:
    by_model.setdefault(e["model"], []).append(e["fid_1k"])
fit = findings.fit_log10([next(e["gflops"] for e in grid if e["model"] == m) for m in by_model],
                         [np.mean(fids) for fids in by_model.values()])
paper = findings.PAPER_FID_400K                                             # Table 4, ImageNet 256, 400K steps
paper_fit = findings.fit_log10([PAPER_GFLOPS[m] for m in paper], list(paper.values()))
print(f"paper (Table 4, 12 models): {paper_fit[1]:+.1f} FID per tenfold Gflops, correlation {paper_fit[2]:+.2f}")
print(f"ours ({len(by_model)} model(s)): " + (f"{fit[1]:+.1f} FID per tenfold Gflops, correlation {fit[2]:+.2f}"
                                          if fit else "one model: no slope yet"))

# %% [markdown]
# ## 6. What the paper claims, and what our grid shows
#
# The paper trains 12 models (S, B, L, XL × patch 8, 4, 2) for 400K steps on ImageNet and reports:
#
# - **Figure 6:** at every stage of training, a larger model or a smaller patch gives a lower FID-50K;
# - **Figure 8:** FID is strongly correlated with Gflops (a correlation of −0.93 across the 12 models),
#   whatever mix of depth, width and tokens produced those Gflops;
# - **Figure 9:** larger models use training compute more efficiently: at equal training Gflops, the bigger
#   model reaches the lower FID.
#
# Read our panels against that, for the cells that are in the file:
#
# - **Figure 6 (bigger is better at every stage): yes, for the three sizes at patch 2.** At every snapshot M/2
#   is ahead of T/2 (two seeds), which is ahead of XS/2: 14.05, 17.0 and 22.2 after 1,500 steps, 4.83, 6.70 and
#   9.84 after 6,000. The two seeds of T/2 agree to within about 0.5 at every snapshot, so the ordering is not
#   noise. In FID points the gaps narrow as training goes on (T/2 to M/2: 3.0 after 1,500 steps, 1.9 after 6,000);
#   in ratio they grow (1.2× to 1.4×), which is what the log-scale panel shows. The patch half of the claim
#   (smaller patches, more tokens, lower FID) needs the patch-1 and patch-4 cells.
# - **Figure 8 (FID follows Gflops): the direction holds** over an 8× range of Gflops (the printout's slope,
#   from three sizes of one patch size), while the paper's −0.93 comes from twelve models that mix sizes and
#   patches. Three sizes of one family lie close to a line almost whatever happens, so our correlation says
#   little yet; the slope says how much a tenfold Gflops buys here.
# - **Figure 9 (at equal training compute the bigger model wins): not shown, and the axis misleads here.**
#   At about 1.3–1.5 × 10⁴ training Gflops, XS/2 after its 6,000 steps (9.84) is far ahead of T/2 after 1,500
#   (17.0), and at 2.6–3.0 × 10⁴ T/2 after 3,000 (10.8) is ahead of M/2 after 1,500 (14.05). But the snapshots of
#   one run with a cosine learning rate are not runs of that length: at step 1,500 the bigger model's learning
#   rate is still near its peak and its EMA has not settled, while the smaller model at the end of its run has
#   finished its decay. The paper's runs use a constant learning rate, where a snapshot is a shorter run;
#   answering Figure 9 here needs the bigger models trained to a shorter schedule, or all models at a constant
#   rate.
#
# When more cells are trained (`python experiments/scaling_grid.py --help`), re-execute this notebook: every
# number and plot above is read from the JSON files.
#
# ## 7. Are U-Nets out? A DiT and a U-Net of the same Gflops
#
# The paper's headline result is a comparison with the U-Net that latent diffusion used before it: without
# guidance, DiT-XL/2 (118.6 Gflops) reaches FID-50K 9.62 on ImageNet 256×256 where LDM's U-Net (103.6 Gflops)
# reaches 10.56 (FIDs: Table 2, DiT-XL/2 after 7M steps; Gflops: §5.1). So far this course has only *told* you that. Here the same question is asked at CPU
# scale: a U-Net, the field's own `diffusers.UNet2DModel` (ADM's layout: residual blocks whose GroupNorm is
# modulated by the timestep-and-class vector, self-attention at the low resolutions, skip connections from
# each level down to the same level up), is wrapped by `ditlib.unet.UNet` so that it takes (x_t, t, y) and
# returns ε and Σ exactly as `DiT` does. Nothing else changes: the same diffusion, hybrid loss, recipe,
# latents, checkpoints, sampler and FID. Each U-Net size is matched in forward Gflops to one DiT, counted by
# one method for both families (`ditlib.flops.counted_gflops`: torch's flop counter, one flop per multiply-add,
# plus one per normalised element, which reproduces the paper's Table 4 on DiTs):

# %%
# NBVAL_CHECK_OUTPUT
from ditlib.configs import TRAIN_CONFIGS, build_backbone
from ditlib.flops import counted_gflops
from ditlib.unet import UNET_MATCHED_DIT

print(f"{'U-Net':8s} {'params':>7s} {'Gflops':>7s}   {'DiT':9s} {'params':>7s} {'Gflops':>7s}  U-Net/DiT")
for unet_name, dit_name in UNET_MATCHED_DIT.items():
    row = []
    for name in (unet_name, dit_name):
        with torch.device("meta"):                                            # shapes only, no weights
            net = build_backbone(TRAIN_CONFIGS[f"fmnist-latent-{name}"].model_config())
        row.append((sum(p.numel() for p in net.parameters()), counted_gflops(net)))
    (up, ug), (dp, dg) = row
    print(f"{unet_name:8s} {up / 1e6:6.2f}M {ug:7.4f}   {dit_name:9s} {dp / 1e6:6.2f}M {dg:7.4f}  {ug / dg:6.2f}")

# %% [markdown]
# At the same Gflops the U-Nets have fewer parameters: a 3×3 convolution on an 8×8 map reuses each weight at
# 64 positions, a DiT's linear layer at 16 tokens. Where does the default's match, UNet-M, spend its compute?
# One forward pass, counted per kind of layer:

# %%
# NBVAL_CHECK_OUTPUT
from collections import Counter

from ditlib.unet import UNet_models

net = UNet_models["UNet-M"]()
macs = Counter()
def count_layer(module, args, out):
    if isinstance(module, torch.nn.Conv2d):
        macs["3×3 convolutions" if module.kernel_size == (3, 3) else "1×1 convolutions"] += (
            out.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1])
    elif isinstance(module, torch.nn.Linear):
        macs["linear layers (attention projections, t/y embedding)"] += out.numel() * module.in_features
hooks = [m.register_forward_hook(count_layer) for m in net.modules()]
with torch.no_grad():
    net.eval()(torch.zeros(1, 4, 8, 8), torch.zeros(1), torch.zeros(1, dtype=torch.long))
for h in hooks:
    h.remove()
total = counted_gflops(net) * 1e9
for kind, n in macs.most_common():
    print(f"{kind:55s} {n / 1e6:6.2f} M multiply-adds  {n / total:5.1%}")
print(f"{'everything else (attention matmuls, GroupNorms)':55s} {(total - sum(macs.values())) / 1e6:6.2f} M"
      f"               {1 - sum(macs.values()) / total:5.1%}")

# %% [markdown]
# **Try it: a short race.** Train the default DiT-T/2 and its U-Net for the same few hundred steps on the same
# latents (the cache of lesson 04), with the same recipe, one after the other, and compare their training losses
# (the same hybrid loss, so the numbers compare) and their speed on this machine. Quick mode runs 10 steps.

# %%
import tempfile

from ditlib.latents import LatentDataset, build_latent_dataset, encode_dataset
from ditlib.runs import read_log
from ditlib.train import train
from ditlib.vae import load_vae

codec = load_vae("fmnist-vae")
if pick(full=True, quick=False):
    race_data = build_latent_dataset(codec, progress=False)                   # the full cache (built once)
else:
    subset = torch.utils.data.Subset(FashionMNIST("train"), range(256))
    race_data = LatentDataset(**encode_dataset(codec, subset, progress=False), scale_factor=codec.scale_factor,
                              num_classes=10)
race_steps = pick(300, 10)
race = {}
for name in ("fmnist-latent-DiT-T/2", "fmnist-latent-UNet-M"):
    config = TRAIN_CONFIGS[name].replace(max_steps=race_steps, log_every=pick(20, 2), ckpt_every=race_steps,
                                         precision="fp32", compile=False)
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(config, tmp, dataset=race_data, progress=False)
        race[config.model] = [(row["step"], row["loss"]) for row in read_log(tmp)]
    print(f"{config.model:8s} {race_steps} steps in {summary['elapsed_s']:5.1f} s: "
          f"{race_steps * config.batch_size / summary['elapsed_s']:4.0f} img/s, last logged loss {race[config.model][-1][1]:.4f}")

fig, ax = plt.subplots(figsize=(6, 3.2))
for model_name, rows in race.items():
    ax.plot(*zip(*rows), marker=".", label=model_name)
ax.set(xlabel="training step", ylabel="hybrid loss (mean over the logged steps)", yscale="log",
       title="DiT-T/2 against UNet-M, the same recipe and data")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()

# %% [markdown]
# In the run that made these outputs (300 steps each, fp32 without compiling, on a quiet 2-core Intel Xeon with
# native bf16) the U-Net's loss is already the lower of the two, and each of its steps took about 1.5 times as long
# as the DiT's (60.7 s against 40.9 s): the
# printed times and the curves show both. A few hundred steps say little about the samples, though.
#
# The committed experiment runs the same race to the end: the small pair, the default's pair and the large pair,
# each trained for 6,000 steps of batch 64 (the default's whole recipe) in fp32, two training seeds for the default's pair, FID-FMNIST at N = 1,000 with DDIM
# 50 without guidance (as the paper's figures) and with the default's guidance (`experiments/unet_vs_dit.py`;
# the commands and the hardware are in `experiments/README.md`). Read the records:

# %%
pair_configs = {f"fmnist-latent-{name}" for pair in UNET_MATCHED_DIT.items() for name in pair}
records = [json.loads(p.read_text()) for p in sorted((RESULTS / "runs").glob("*.json"))]     # every long run
records = [r for r in records if r.get("complete") and r["config"] in pair_configs and not r.get("overrides")]
print(f"{'family':6s} {'model':9s} {'params':>7s} {'Gflops':>7s} {'seed':>4s} {'FID':>6s} {'FID guided':>10s} "
      f"{'training':>9s}  trained on (2 cores, fp32)")
for r in sorted(records, key=lambda r: (r["gflops"], r["family"], r["seed"])):
    print(f"{r['family']:6s} {r['model']:9s} {r['params'] / 1e6:6.2f}M {r['gflops']:7.4f} {r['seed']:4d} "
          f"{r['fid_1k']:6.2f} {r['fid_1k_guided']:10.2f} {r['train_seconds'] / 60:7.1f} min  "
          f"{findings.short_cpu(r['cpu'])}")

# %%
fig = viz.unet_vs_dit_figure(records)
for family in ("DiT", "U-Net"):
    line = viz.fit_log_gflops(records, family)
    print(f"{family}: " + (f"{line[1]:+.1f} FID per tenfold Gflops" if line else "one model size so far: no slope yet"))

# %% [markdown]
# **What holds at this scale, and what does not.**
#
# - **At matched Gflops the U-Net wins, clearly.** After the full 6,000 steps the default DiT-T/2 reaches
#   FID-FMNIST 6.72 and 6.67 without guidance (two training seeds), its U-Net 3.65 and 3.73; the seeds of each model agree to
#   within 0.05 and 0.08, so the gap of about 3 points is far beyond the training noise (and beyond the
#   sampling noise of an N = 1,000 FID). With the default's guidance the gap narrows but stays: 3.66 and
#   3.77 for the DiT against 3.13 and 3.31 for the U-Net. The U-Net also leads at every snapshot (middle and right
#   panels): its FID after 1,500 steps (7.9 and 7.1) is near the DiT's after 6,000.
# - **Per CPU minute the U-Net still wins**, though each of its steps costs about 1.4–1.6 times the DiT's
#   (right panel; per flop the U-Net runs slower, most likely because 3×3 convolutions on 8×8 maps use the CPU
#   less efficiently than the DiT's matmuls; not measured here). For
#   the default's pair (EPYC with native bf16, fp32): at about 11–12 CPU-minutes the U-Net is at 4.8–4.9
#   where the DiT is at 7.8–8.1, and it passes the DiT's final FID between its 6- and 12-minute snapshots,
#   while the DiT needs its full 15–16 minutes. For the small pair (AVX2-only EPYC): UNet-S after 8.5 minutes
#   is at 6.57, DiT-XS/2 after its full 9.3 minutes at 9.84.
# - **Why, most likely.** Three differences favour the U-Net here, none of which the paper's regime shares:
#   (i) *resolution*: its first level convolves all 64 positions of the 8×8 latent, while DiT-T/2 sees 16
#   tokens of 2×2 patches; the paper itself finds that more tokens help at fixed size (Figure 6), and
#   DiT-T/1 with 64 tokens costs four times the Gflops; (ii) *inductive bias*: locality and weight sharing are
#   built into a convolution and must be learned by attention, which costs data and steps, and these models
#   see 384,000 images (6 epochs of Fashion-MNIST) against the paper's 102 million per 400K-step run;
#   (iii) *size*: at the same Gflops the U-Net reaches them with fewer parameters (3.45M against 4.17M), so
#   it is not winning by memorising more. This experiment cannot tell these three apart.
# - **The slope: here DiT does improve faster with Gflops, from a much worse level.** Three pairs: DiT-XS/2 against
#   UNet-S (about 0.0135 Gflops, one seed each, AMD EPYC with AVX2 only), the default's pair (about 0.045, two
#   seeds each, AMD EPYC with native bf16) and DiT-M/2 against UNet-L (about 0.1, one seed each, Intel Xeon with
#   native bf16), all in fp32, so their FIDs compare but their minutes only within a pair. Over that 8× range the
#   DiT's FID without guidance falls from 9.84 to 6.70 (mean of two seeds) to 4.83, a fitted −5.6 FID per tenfold
#   Gflops (the printout above), and the U-Net's from 4.71 to 3.69 to 3.08, −1.9. With the default's guidance the
#   contrast is starker: the DiT goes 6.01, 3.72, 2.98 and the U-Net 3.12, 3.22, 3.08, flat: at the largest pair
#   the two are level (2.98 against 3.08, within the 0.1–0.2 by which two training seeds differ). Part of the
#   U-Net's flatter line is the floor: its FIDs are closer to what a perfect model scores at N = 1,000
#   (0.72 ± 0.11, section 2), where every gain gets smaller. Extended, the unguided lines would cross near
#   0.3 Gflops, three times the largest pair.
#   So the verdict at this scale is: **U-Nets are not out on a CPU budget with 8×8 latents: without guidance the
#   U-Net is better at every size trained here. The transformer closes the gap as it grows, as the paper says,
#   and with guidance it draws level at the largest pair.**
#
# ## 8. Exercise: extrapolating FID to infinitely many samples
#
# Section 2 showed FID_n ≈ FID_∞ + k / n. Write `extrapolate_fid(ns, fids)` that fits this line by least
# squares in the variable 1/n and returns `(fid_inf, k)` as floats. Applied to the real-vs-real
# measurements, FID_∞ should be small: the two sets of real images come from the same distribution. In
# principle it is not quite 0, because only n goes to infinity here: the reference set keeps its n_ref images,
# and its own bias, roughly k / n_ref, does not shrink. In practice the fit cannot resolve a number that small:
# the points at n = 100 scatter by ±0.8 (section 2), and an unweighted fit lets them decide the intercept to
# about ±0.1, so expect an FID_∞ within about 0.1 of 0 (either sign) rather than k / n_ref itself.
# Hint: `np.polyfit(x, y, deg=1)` returns `[slope, intercept]`.

# %% nbgrader={"grade": false, "grade_id": "extrapolate_fid", "locked": false, "schema_version": 3, "solution": true, "task": false}
def extrapolate_fid(ns, fids):
    ### BEGIN SOLUTION
    k, fid_inf = np.polyfit(1.0 / np.asarray(ns, dtype=float), np.asarray(fids, dtype=float), deg=1)
    return float(fid_inf), float(k)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_extrapolate_fid", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
feedback = exercises.check_extrapolate_fid(extrapolate_fid)
display(feedback)
### BEGIN HIDDEN TESTS
_ = exercises.require(feedback)                          # AssertionError with the message if it failed
### END HIDDEN TESTS
ns = [n for n, values in fid_at.items() for _ in values]
fids = [v for values in fid_at.values() for v in values]
fid_inf, k = extrapolate_fid(ns, fids)
design = np.stack([np.ones(len(ns)), 1 / np.array(ns, dtype=float)], axis=1)          # check by the normal equations
expected = np.linalg.lstsq(design, np.array(fids), rcond=None)[0]
assert np.allclose([fid_inf, k], expected, rtol=1e-6, atol=1e-9), "fit FID = fid_inf + k / n by least squares in 1/n"
assert abs(fid_inf) < k / len(reference) + 0.1, f"FID_∞ = {fid_inf:.3f} should lie within about 0.1 of 0"
print(f"FID_∞ ≈ {fid_inf:.3f} and k ≈ {k:.0f}; the reference's own bias k / n_ref ≈ {k / len(reference):.3f}, "
      "smaller than the fit's uncertainty (about ±0.1)")

# %% [markdown]
# ## Summary
#
# - FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{1/2}) between Gaussians fitted to features; we computed it by
#   hand and matched torch-fidelity.
# - It is biased upward by roughly k/n: compare only at equal n (the paper's FID-50K), and know the
#   real-vs-real floor at your n.
# - It is defined by its feature extractor: FID-FMNIST, Inception FID and the paper's ImageNet numbers are
#   three different scales.
# - Training compute ≈ Gflops × batch × steps × 3: about 6.4 × 10²⁰ flops for DiT-XL/2's 7M steps
#   (published recipe), 1.5 × 10¹³ to 1.2 × 10¹⁴ for the grid runs trained so far.
# - Our CPU grid points the same way as the paper's Figures 6 and 8 at patch 2 (M/2 < T/2 < XS/2 at every
#   snapshot, −5.6 FID per tenfold Gflops, FID at N = 1,000 after 6,000 steps); the patch cells are still to
#   run, and its cosine-decay snapshots cannot answer Figure 9.
# - Against a U-Net of the same Gflops, trained and measured exactly alike for 6,000 steps, the DiT loses
#   without guidance at all three sizes (9.8 against 4.7, 6.7 against 3.7, 4.8 against 3.1); its FID falls
#   faster with Gflops (about −5.6 against −1.9 per tenfold), the paper's scaling argument, and with guidance it
#   draws level at the largest pair (3.0 against 3.1).
#
# **More to try.** Recompute the correlation with the FID of the *first* evaluation instead of the last: is
# the ordering already there after 1,500 steps? Estimate FID_∞ for one of the model checkpoints by sampling
# 250, 500 and 1,000 images (`ditlib.evaluate.sample_for_fid`) and extrapolating.
#
# **Next:** [11 · Full scale](11_full_scale.ipynb): the paper's ImageNet configurations, the SD VAE,
# official checkpoints, and launching the same training code on many GPUs.
