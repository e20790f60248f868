# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Sampling: how many steps, and which sampler?
#
# A DiT is trained on T = 1000 noise levels, but nothing forces us to take 1000 steps back. This lesson
# samples the shipped latent model with the full DDPM chain, with respaced chains of 250 and 50 steps, with
# DDIM, and with a modern solver from diffusers, from the same starting noise, and measures what the steps
# buy in FID.
#
# **Learning objectives.** After this lesson you can
# 1. respace a diffusion process to fewer steps and derive its new β's from ᾱ;
# 2. write the deterministic DDIM update by hand and match `ditlib`'s sampler;
# 3. drive a ditlib DiT with a diffusers scheduler (DPM-Solver++) and explain why the Σ channels are dropped;
# 4. read a plot of FID against sampling steps and say, sampler by sampler, where more steps stop paying.
#
# **Paper.** DiT §4 *Evaluation metrics*: FID-50K with 250 DDPM sampling steps, as ADM. §5.2 *Scaling model
# vs. sampling compute* (Figure 10): smaller models sampled with more steps do not catch up with larger models
# sampled with fewer, even when they spend more total compute per image. Respacing follows Improved DDPM
# (Nichol & Dhariwal 2021, §4); DDIM is Song et al. 2021 (Eq. 12, η = 0); DPM-Solver++ is Lu et al. 2022.
#
# *Quick mode* (`DITLIB_QUICK=1`) uses fewer steps in the picture and 50 samples at 10 steps for FID; the full
# run uses 500 samples at 10, 25 and 50 steps.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler

from ditlib.course import exercises, inspect_model, viz, widgets
from ditlib.diffusion import create_diffusion, get_named_beta_schedule, randn, space_timesteps
from ditlib.evaluate import compute_metrics, extract_features, reference_images, sample_for_fid, uniform_labels
from ditlib.flops import gflops
from ditlib.runtime import autocast, pick
from ditlib.sample import Pretrained, sample_images

pretrained = Pretrained.load("fmnist-latent-DiT-T-2", device="cpu")
model, codec = pretrained.model, pretrained.codec          # DiT-T/2 on 8×8×4 latents, and its VAE
classes = torch.arange(10)
print(pretrained)

# %% [markdown]
# ## 1. Fewer steps: respacing
#
# Keep only a subset S = {s_1 < s_2 < … < s_K} of the 1000 timesteps. The noise levels ᾱ_{s_i} stay what they
# were (the model was trained on them); only the steps between them get longer. A chain over S is again a
# diffusion, with
#
# $$\beta'_i = 1 - \frac{\bar\alpha_{s_i}}{\bar\alpha_{s_{i-1}}}\qquad(\bar\alpha_{s_0} := 1),$$
#
# so that ∏(1 − β'_i) reproduces ᾱ at every kept step (Improved DDPM §4). The model is still called with the
# original t = s_i. Check it for 50 evenly spaced steps:

# %%
# NBVAL_CHECK_OUTPUT
abar = np.cumprod(1 - get_named_beta_schedule("linear", 1000))           # ᾱ_t of the full process, (1000,)
kept = sorted(space_timesteps(1000, "50"))
betas_by_hand = 1 - abar[kept] / np.concatenate([[1.0], abar[kept][:-1]])
diffusion50 = create_diffusion("50")
assert np.allclose(betas_by_hand, diffusion50.betas.numpy()) and kept == diffusion50.timestep_map.tolist()
print(f"{len(kept)} steps: t = {kept[:4]} … {kept[-3:]}")
print(f"β' from {betas_by_hand[0]:.5f} to {betas_by_hand[-1]:.5f} (the full process: 0.0001 to 0.02)")

# %% [markdown]
# ## 2. DDIM: the deterministic shortcut
#
# DDPM's step is random: x_{t−1} = μ_θ(x_t) + σ_t z. DDIM (Song et al. 2021, Eq. 12 with η = 0) uses the same
# trained ε_θ, but steps deterministically from one kept timestep t to the previous one t′: estimate the clean
# latent, then re-noise it to level t′ with the *predicted* noise,
#
# $$\hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon_\theta(x_t, t)}{\sqrt{\bar\alpha_t}},\qquad
#   x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}}\,\varepsilon_\theta(x_t, t).$$
#
# Written out for 10 steps (t = 900, 800, …, 0), against `ditlib`'s `ddim_sample_loop`:

# %%
ddim_ts = sorted(space_timesteps(1000, "ddim10"), reverse=True)           # 900, 800, …, 0
abar_t = torch.tensor(abar, dtype=torch.float32)
noise = randn((10, 4, 8, 8), generator=torch.Generator().manual_seed(0))
x = noise
with torch.no_grad():
    for i, t in enumerate(ddim_ts):
        eps = model(x, torch.full((10,), t), classes)[:, :4]              # drop the Σ channels
        x0 = (x - (1 - abar_t[t]).sqrt() * eps) / abar_t[t].sqrt()
        abar_prev = abar_t[ddim_ts[i + 1]] if i + 1 < len(ddim_ts) else torch.tensor(1.0)
        x = abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps
    ddim_lib = create_diffusion("ddim10").ddim_sample_loop(model, noise.shape, noise=noise, clip_denoised=False,
                                                           model_kwargs={"y": classes})
assert torch.allclose(x, ddim_lib, atol=1e-4)
print(f"DDIM by hand = ditlib's ddim_sample_loop (max diff {(x - ddim_lib).abs().max():.1e})")

# %% [markdown]
# ## 3. A solver from diffusers
#
# diffusers keeps the sampling algorithm (a *scheduler*) apart from the network. Any scheduler that knows the
# training process, β linear from 10⁻⁴ to 0.02 over 1000 steps with ε-prediction, can drive our DiT. DPM-Solver++
# (multistep, second order) treats sampling as solving an ODE and takes larger, more accurate steps. It only needs
# ε, so we drop DiT's learned-Σ channels: the solver has its own (deterministic) update, no variance needed.

# %%
scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                        beta_schedule="linear", prediction_type="epsilon")
assert np.allclose(scheduler.alphas_cumprod.numpy(), abar, rtol=1e-5)     # the same process as ditlib's


@torch.no_grad()
def dpm_solver_sample(labels, num_steps, noise, precision="fp32"):
    scheduler.set_timesteps(num_steps)
    x = noise
    for t in scheduler.timesteps:                                         # e.g. 999, 949, … for 20 steps
        with autocast(torch.device("cpu"), precision):
            eps = model(x, t.expand(len(x)), labels)[:, :4].float()       # ε only: drop the Σ channels
        x = scheduler.step(eps, t, x).prev_sample
    return x


# %% [markdown]
# ## 4. Side by side, from the same noise
#
# Every row starts from the same x_T (seed 0) for the same ten classes. DDPM rows differ in detail because each
# step also draws fresh noise; the two deterministic samplers depend on x_T alone. Latents are decoded by the VAE.

# %%
ddpm_steps, fast_steps = pick((1000, 250, 50), (50, 25, 10)), pick(50, 10)
rows, names = [], []
for steps in ddpm_steps:
    rows.append(sample_images(model, classes, num_sampling_steps=steps, sampler="ddpm", clip_denoised=False,
                              progress=False, noise=noise))
    names.append(f"DDPM {steps}")
rows.append(sample_images(model, classes, num_sampling_steps=fast_steps, sampler="ddim", clip_denoised=False,
                          progress=False, noise=noise))
names.append(f"DDIM {fast_steps}")
rows.append(dpm_solver_sample(classes, pick(20, 10), noise))
names.append(f"DPM-Solver++ {pick(20, 10)}")
with torch.no_grad():
    images = codec.decode(torch.cat(rows)).clamp(-1, 1)
viz.show_images(images, nrow=10, size=0.9, title=" · ".join(f"row {i + 1}: {n}" for i, n in enumerate(names)));

# %% [markdown]
# How the two chains get there: the model's guess of the clean image, x̂_0, along a 50-step DDPM and a 50-step
# DDIM chain from the same x_T (guidance 2, decoded by the VAE; columns are the fraction of the chain done):

# %%
traj = inspect_model.trajectories(model, create_diffusion(str(pick(50, 10))), create_diffusion(f"ddim{pick(50, 10)}"),
                                  [0, 7, 9], every=pick(5, 2), decode=codec.decode, cfg_scale=2.0)
inspect_model.plot_trajectories(traj);

# %% [markdown]
# Both start from the same blurry first guess. The T-shirt and the sneaker have their outlines by 40% of the
# chain in both; the ankle boot is already a boot at 40% under DDIM, but under DDPM it is still a blob there and
# becomes a boot only by 60%. DDPM keeps drawing fresh noise, so its guesses keep changing and its final details
# differ from DDIM's (another sneaker, another heel), while DDIM's guess only sharpens. Scrub through both
# chains at once:

# %%
widgets.trajectory_scrubber(traj)

# %% [markdown]
# ## 5. What the steps buy: FID against sampling steps
#
# FID-FMNIST (`ditlib.evaluate`) is the Fréchet distance between Gaussians fitted to features of samples and of
# real test images; the features are the 128-d penultimate layer of the shipped Fashion-MNIST classifier:
#
# $$\mathrm{FID} = \lVert\mu_s - \mu_r\rVert^2 + \operatorname{tr}\big(\Sigma_s + \Sigma_r - 2(\Sigma_s\Sigma_r)^{1/2}\big).$$
#
# The reference features are computed once; each set of samples then costs one pass of the classifier.
# (Quick mode uses 2,000 of the 10,000 test images as the reference.)

# %%
reference = reference_images("fmnist-test")[: pick(10_000, 2_000)].permute(0, 2, 3, 1)   # uint8 N×H×W×C
ref_features = extract_features(reference)["fid"].double()                              # (N_ref, 128)
mu_r, sigma_r = ref_features.mean(0).numpy(), np.cov(ref_features.numpy(), rowvar=False)


def sqrt_psd(matrix):                                # symmetric square root of a covariance matrix
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(values.clip(min=0))) @ vectors.T


sqrt_sigma_r = sqrt_psd(sigma_r)


def fid_fmnist(images):
    features = extract_features(images)["fid"].double().numpy()                         # (N, 128)
    mu_s, sigma_s = features.mean(0), np.cov(features, rowvar=False)
    # tr (Σ_s Σ_r)^½ = tr (Σ_r^½ Σ_s Σ_r^½)^½, a symmetric matrix: sum of the square roots of its eigenvalues
    tr_covmean = np.sqrt(np.linalg.eigvalsh(sqrt_sigma_r @ sigma_s @ sqrt_sigma_r).clip(min=0)).sum()
    return float(((mu_s - mu_r) ** 2).sum() + np.trace(sigma_s) + np.trace(sigma_r) - 2 * tr_covmean)


# %% [markdown]
# For each sampler and a few step counts, sample without guidance, in the precision `auto` picks (bf16 on a CPU
# with native bf16, fp32 on one without), with the labels spread evenly over the classes, decode and score. With a
# few hundred samples FID is biased upwards (lesson 10, section 2) and moves by a few tenths with the samples
# drawn; every sampler here starts from the same noise and labels, so compare curves, and read differences under
# about half a point as noise. (`sample_for_fid` decodes each batch first and clamps only the images to [−1, 1],
# never the latents, which are not confined to that range; it refuses a latent model without its decoder.)

# %%
num_samples, step_counts = pick(500, 50), pick((10, 25, 50), (10,))
labels = uniform_labels(num_samples, 10)
x_T = randn((num_samples, 4, 8, 8), generator=torch.Generator().manual_seed(1))
fid, samples = {"DDPM": [], "DDIM": [], "DPM-Solver++": []}, {}
for steps in step_counts:
    for sampler in ("ddpm", "ddim"):
        # decode= : each batch of latents is decoded to images first, and only the images are clamped to [-1, 1]
        samples[sampler.upper(), steps] = sample_for_fid(model, num_samples, num_sampling_steps=steps, sampler=sampler,
                                                         seed=1, batch_size=num_samples, progress=False,
                                                         decode=codec.decode, clip_denoised=False, precision="auto")
    with torch.no_grad():
        samples["DPM-Solver++", steps] = codec.decode(dpm_solver_sample(labels, steps, x_T, "auto")).clamp(-1, 1)
    for name in fid:
        fid[name].append(fid_fmnist(samples[name, steps]))
for name, values in fid.items():
    print(f"{name:13s}", "  ".join(f"{s} steps: {v:5.1f}" for s, v in zip(step_counts, values)))

# %% [markdown]
# The FID by hand is `ditlib`'s (torch-fidelity's) FID, checked on the last set of samples in the full run
# (the library recomputes the reference features, which takes a while):

# %%
if pick(full=True, quick=False):
    library_fid = compute_metrics(samples["DDIM", step_counts[-1]], precision_recall=False)["fid"]
    assert abs(library_fid - fid["DDIM"][-1]) < 1e-3 * library_fid, (library_fid, fid["DDIM"][-1])
    print(f"FID by hand {fid['DDIM'][-1]:.3f} = compute_metrics {library_fid:.3f}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.4))
for name, values in fid.items():
    ax.plot(step_counts, values, "o-", label=name)
ax.set(xscale="log", xticks=list(step_counts), xticklabels=[str(s) for s in step_counts],
       xlabel="sampling steps (= forward passes per image)", ylabel="FID-FMNIST", title="fmnist-latent-DiT-T-2")
ax.legend();

# %% [markdown]
# What to read off (the stored full run; your numbers vary a little):
#
# - **Diminishing returns.** DDPM's FID is still falling at 50 steps, but each added step buys less: 0.6 from
#   10 to 25 steps (7.2 → 6.6), 0.3 more from 25 to 50 (→ 6.3). DDIM gains half a point up to 25 steps and
#   nothing after (7.6 → 7.1 → 7.1), and DPM-Solver++ stays within 0.2 (7.0, 6.9, 7.1). Only DDPM's
#   0.9-point fall from 10 to 50 steps is clearly larger than the noise. The picture above shows 1000 DDPM steps are not visibly better than 250 or 50. DiT's 250 steps
#   are a safe default for big ImageNet models; this 16-token latent model does well with 50 or fewer.
# - **At ten steps the samplers are close.** DPM-Solver++ at 10 steps (7.0) is level with DDIM at 25 or 50 and
#   half a point ahead of DDIM at 10; DDPM, the stochastic one, is the best at 25 and 50 steps here, by less than
#   a point, within the noise. In the picture, DDIM and
#   DPM-Solver++ land on nearly the same images from the same x_T: both integrate the same deterministic ODE,
#   the higher-order solver more accurately.
# - **One model cannot say whether steps can replace size.** Where a curve levels off, the model's own error
#   sets the floor; whether a smaller model given more steps could match a bigger one takes several models.
#   That is the paper's Figure 10: there a smaller DiT given many more steps, and more total Gflops per image,
#   stays behind a larger one given fewer. Lesson 10 measures the other axis, model size.
#
# The cost of one sample is simply (steps) × (Gflops per forward pass); for this model:

# %%
# NBVAL_CHECK_OUTPUT
per_pass = gflops(model)
for steps in (10, 25, 50, 250, 1000):
    print(f"{steps:5d} steps × {per_pass * 1e3:.1f} Mflops = {steps * per_pass:7.2f} Gflops per sample")

# %% [markdown]
# ## 6. Exercises: respacing and the DDIM step
#
# Two functions, each the heart of a sampler of this lesson. First the respaced schedule of section 1 for any
# subset of steps: `respaced_betas(alphas_cumprod, use_timesteps)` takes the (T,) tensor of ᾱ_t and the kept
# timesteps as a set or list in any order (what `space_timesteps` returns), and returns the (K,) tensor
# β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}} over the *sorted* kept steps, with ᾱ = 1 before the first one. The check
# names the usual slips: the original β_t taken at the kept steps, the first step's ᾱ_prev not 1, unsorted steps.

# %% nbgrader={"grade": false, "grade_id": "respaced_betas", "locked": false, "schema_version": 3, "solution": true, "task": false}
def respaced_betas(alphas_cumprod, use_timesteps):
    ### BEGIN SOLUTION
    kept = sorted(use_timesteps)
    abar = alphas_cumprod[kept]                                          # ᾱ at the kept steps, (K,)
    return 1 - abar / torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_respaced_betas", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_respaced_betas(respaced_betas)
display(feedback)
### BEGIN HIDDEN TESTS
_ = exercises.require(feedback)                          # AssertionError with the message if it failed
### END HIDDEN TESTS

# %% [markdown]
# Then one deterministic DDIM step of section 2, `ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev)`: x_t and the
# predicted ε are (B, C, H, W), the two ᾱ are 0-d tensors (ᾱ_prev = 1 at the last step); return
# √ᾱ_prev·x̂_0 + √(1 − ᾱ_prev)·ε with x̂_0 = (x_t − √(1 − ᾱ_t)·ε)/√ᾱ_t, unclipped. The check names the usual
# slips: ᾱ_t and ᾱ_prev swapped, √(1 − ᾱ_t) in the re-noising term, square roots forgotten, x̂_0 clipped.

# %% nbgrader={"grade": false, "grade_id": "ddim_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev):
    ### BEGIN SOLUTION
    x0 = (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()   # the clean estimate x̂_0
    return alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev).sqrt() * eps
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_ddim_step", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_ddim_step(ddim_step)
display(feedback)
### BEGIN HIDDEN TESTS
_ = exercises.require(feedback)                          # AssertionError with the message if it failed
### END HIDDEN TESTS

# %% [markdown]
# Together they are a sampler. Your β' are the 50-step chain's, and a 10-step DDIM chain of your steps, on the
# respaced noise levels and calling the model with `timestep_map` (the original t, as it was trained), gives
# `ditlib`'s samples:

# %%
abar_full = torch.tensor(abar)                                           # ᾱ of the 1000-step process, float64
assert torch.allclose(respaced_betas(abar_full, space_timesteps(1000, "50")), diffusion50.betas)
ddim10 = create_diffusion("ddim10")
abar10 = torch.cumprod(1 - respaced_betas(abar_full, space_timesteps(1000, "ddim10")), 0).float()
x = noise
with torch.no_grad():
    for i in reversed(range(len(abar10))):                               # respaced index 9, …, 0
        eps = model(x, ddim10.timestep_map[torch.full((10,), i)], classes)[:, :4]
        x = ddim_step(x, eps, abar10[i], abar10[i - 1] if i > 0 else torch.tensor(1.0))
assert torch.allclose(x, ddim_lib, atol=1e-4)
print(f"your respaced β' and DDIM step = ditlib's ddim_sample_loop (max diff {(x - ddim_lib).abs().max():.1e})")

# %% [markdown]
# ## Summary
#
# - Respacing keeps the trained noise levels and recomputes β' = 1 − ᾱ_{s_i}/ᾱ_{s_{i−1}}: any subset of steps
#   is a valid, shorter diffusion, and the model needs no retraining.
# - DDPM is stochastic and the paper samples it with 250 steps; DDIM and DPM-Solver++ are deterministic ODE
#   solvers built for few steps. On this small model all three are close at 10 steps, and DDPM respaced to 25
#   or 50 steps is as good as any. A diffusers scheduler drives a ditlib DiT through ε alone.
# - More steps give diminishing returns: DDIM and DPM-Solver++ are flat from 25 steps on, and DDPM gains less
#   from each added step. Whether sampling compute can stand in for a bigger model takes more than one model;
#   the paper's answer is no (§5.2, Figure 10).
#
# **More to try.** Sample with `sampler="ddim", eta=1.0` (DDIM with DDPM-like noise) at 25 steps and compare its
# FID. Try `diffusers.EulerDiscreteScheduler` with the same four schedule arguments.
#
# **Next:** [09 · Classifier-free guidance](09_classifier_free_guidance.ipynb): use the null class of lesson 06 to
# trade diversity for fidelity with one number, the guidance scale.
