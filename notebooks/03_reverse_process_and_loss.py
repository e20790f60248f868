# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · The reverse process and the loss: learning to undo one step
#
# Lesson 01 destroyed images step by step; lesson 02 showed that predicting the noise ε is enough to
# describe a reverse step. This lesson puts the pieces together: the exact reverse step when the
# clean image is known, the loss DiT trains with, the variance DiT learns, and finally a sampler,
# written out line by line, that turns noise into clothes with the shipped pretrained model.
#
# **Learning objectives.** After this lesson you can
# 1. derive the posterior q(x_{t−1} | x_t, x_0) and check it by simulation and against `ditlib`;
# 2. explain why "predict ε with a mean-squared error" (L_simple) is the variational bound with its
#    weights dropped;
# 3. read DiT's second output as a variance between β̃_t and β_t, and write the hybrid loss
#    L_simple + L_vlb yourself, the bound seeing a frozen ε, matching `training_losses` value and gradient;
# 4. write the DDPM sampling loop yourself, ε_θ → x̂_0 → μ̃ → learned Σ, and reproduce `ditlib`'s samples exactly.
#
# **Paper.** DiT §3.1 *Diffusion formulation*: the reverse process p_θ(x_{t−1} | x_t) = N(μ_θ(x_t), Σ_θ(x_t))
# is trained with the variational bound, μ_θ is reparameterized as a noise predictor ε_θ trained with
# L_simple = ‖ε_θ(x_t) − ε_t‖², and, following Nichol & Dhariwal, ε_θ is trained with L_simple while Σ_θ is
# trained with the full bound L. Sampling draws x_T ~ N(0, I) and then x_{t−1} ~ p_θ(x_{t−1} | x_t). The formulas come
# from DDPM (Ho et al. 2020, Eqs. 6–7, 10–12, 14 and Algorithm 2) and Improved DDPM (Nichol & Dhariwal
# 2021, §3.1 and Eq. 15).
#
# *Quick mode* (`DITLIB_QUICK=1`) uses fewer images for the loss curves and 10 instead of 50 sampling
# steps; every check still runs.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from ditlib.course import exercises, viz, widgets
from ditlib.data import DATA_DIR, FashionMNIST
from ditlib.diffusion import create_diffusion, discretized_gaussian_log_likelihood, mean_flat, normal_kl
from ditlib.models import DiT
from ditlib.runtime import pick
from ditlib.sample import load_model, sample_images

diffusion = create_diffusion("")                  # T = 1000, linear β, learned Σ: DiT's training process
T = diffusion.num_timesteps
images, labels = FashionMNIST("test").examples(per_class=1, classes=[0, 1, 5, 7, 9])   # (5, 1, 32, 32)

# %% [markdown]
# ## 1. The reverse step when x_0 is known: q(x_{t−1} | x_t, x_0)
#
# Going backwards, q(x_{t−1} | x_t) would need the whole data distribution. But if we also know the clean
# image x_0, Bayes' rule gives a Gaussian:
#
# $$q(x_{t-1}\mid x_t, x_0) \propto q(x_t \mid x_{t-1})\; q(x_{t-1}\mid x_0)
# = \mathcal N\big(x_t;\ \sqrt{\alpha_t}\,x_{t-1},\ \beta_t\big)\;\mathcal N\big(x_{t-1};\ \sqrt{\bar\alpha_{t-1}}\,x_0,\ 1-\bar\alpha_{t-1}\big).$$
#
# Both factors are Gaussian in x_{t−1}, so their product is too: the precisions (inverse variances) add,
# and the mean is the precision-weighted average of what each factor says about x_{t−1}:
#
# $$\frac{1}{\tilde\beta_t} = \frac{\alpha_t}{\beta_t} + \frac{1}{1-\bar\alpha_{t-1}}
# \;\Rightarrow\; \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t,
# \qquad
# \tilde\mu_t = \tilde\beta_t\Big(\frac{\sqrt{\alpha_t}}{\beta_t}\,x_t + \frac{\sqrt{\bar\alpha_{t-1}}}{1-\bar\alpha_{t-1}}\,x_0\Big)
# = \frac{\beta_t\sqrt{\bar\alpha_{t-1}}}{1-\bar\alpha_t}\,x_0 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t .$$
#
# (The first step uses α_t(1 − ᾱ_{t−1}) + β_t = 1 − ᾱ_t.) This is DDPM Eqs. 6–7. In code, timesteps are
# 0-based: index t holds the paper's step t + 1, and ᾱ "before the first step" is 1, so at t = 0 the
# posterior variance is 0: x_0 is then known exactly.
#
# Compute the three numbers by hand for one timestep:

# %%
# NBVAL_CHECK_OUTPUT
s = 100                                                           # one timestep (0-based)
beta, abar, abar_prev = (diffusion.betas[s].item(), diffusion.alphas_cumprod[s].item(),
                         diffusion.alphas_cumprod[s - 1].item())
coef_x0 = beta * math.sqrt(abar_prev) / (1 - abar)                # multiplies x_0
coef_xt = math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar)      # multiplies x_t
beta_tilde = beta * (1 - abar_prev) / (1 - abar)                  # the posterior variance β̃_t
print(f"t = {s}: μ̃ = {coef_x0:.5f}·x_0 + {coef_xt:.5f}·x_t,   β̃ = {beta_tilde:.6f}  (β = {beta:.6f})")

# %% [markdown]
# **The honest check.** Simulate the forward process for one pixel whose clean value is x_0 = 0.7: draw
# x_{t−1} from q(x_{t−1} | x_0), then x_t from one more noising step. The pairs (x_t, x_{t−1}) are jointly
# Gaussian, so E[x_{t−1} | x_t] is a straight line in x_t; fitting that line by least squares must give
# slope coef_xt, intercept coef_x0·x_0, and a residual variance of β̃_t.

# %%
x0_pixel, n = 0.7, 1_000_000
gen = torch.Generator().manual_seed(0)
x_prev = math.sqrt(abar_prev) * x0_pixel + math.sqrt(1 - abar_prev) * torch.randn(n, generator=gen, dtype=torch.float64)
x_next = math.sqrt(1 - beta) * x_prev + math.sqrt(beta) * torch.randn(n, generator=gen, dtype=torch.float64)
slope, intercept = np.polyfit(x_next.numpy(), x_prev.numpy(), deg=1)         # regress x_{t−1} on x_t
residual_var = (x_prev - (slope * x_next + intercept)).var().item()
print(f"slope     {slope:.5f}  vs coef_xt      {coef_xt:.5f}")
print(f"intercept {intercept:.5f}  vs coef_x0·x_0  {coef_x0 * x0_pixel:.5f}")
print(f"residual variance {residual_var:.6f}  vs β̃_t  {beta_tilde:.6f}")
assert abs(slope - coef_xt) < 2e-3 and abs(intercept - coef_x0 * x0_pixel) < 2e-3
assert abs(residual_var / beta_tilde - 1) < 1e-2

# %% [markdown]
# And `ditlib`'s `q_posterior_mean_variance` on real images at the same t:

# %%
noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
t = torch.full((len(images),), s)
x_t = diffusion.q_sample(images, t, noise)
mean, variance, _ = diffusion.q_posterior_mean_variance(images, x_t, t)
assert torch.allclose(mean, coef_x0 * images + coef_xt * x_t, atol=1e-6)
assert torch.allclose(variance, torch.full_like(variance, beta_tilde))
print("ditlib's posterior mean and variance match the hand formulas")

# %% [markdown]
# How much does the step trust x_0 versus x_t? Plot the two coefficients over t (log axis for t):

# %%
fig = viz.plot_curves({"coefficient of x_0": diffusion.posterior_mean_coef1[1:],
                       "coefficient of x_t": diffusion.posterior_mean_coef2[1:]},
                      x=np.arange(1, T), xlabel="t", title="posterior mean μ̃_t = a·x_0 + b·x_t")
fig.axes[0].set_xscale("log");

# %% [markdown]
# Near t = 0 the step lands half-way between x_t and x_0 (they are almost the same image); for large t
# it mostly keeps x_t (coefficient √α_t ≈ 0.99) and nudges it a little toward x_0.
#
# ## 2. From the bound to L_simple
#
# The model's reverse step is p_θ(x_{t−1} | x_t) = N(μ_θ(x_t, t), Σ_θ(x_t, t)). Training maximises a
# variational lower bound on log p(x_0). Where the bound comes from, in three lines (DDPM Appendix A). Jensen's
# inequality with q(x_{1:T} | x_0) as the proposal gives
#
# $$\log p_\theta(x_0) \ge \mathbb E_q\Big[\log \frac{p_\theta(x_{0:T})}{q(x_{1:T}\mid x_0)}\Big]
#   = \mathbb E_q\Big[\log p(x_T) + \sum_{t\ge1} \log \frac{p_\theta(x_{t-1}\mid x_t)}{q(x_t\mid x_{t-1})}\Big].$$
#
# For t ≥ 2 rewrite each forward step with Bayes' rule, conditioned on x_0 (the Markov chain allows it):
# q(x_t | x_{t−1}) = q(x_{t−1} | x_t, x_0)·q(x_t | x_0)/q(x_{t−1} | x_0). The ratios q(x_t | x_0)/q(x_{t−1} | x_0)
# telescope to q(x_T | x_0)/q(x_1 | x_0), and what is left is, with the sign flipped to make a loss,
#
# $$-\text{bound} = \underbrace{D_{KL}\big(q(x_T\mid x_0)\,\|\,p(x_T)\big)}_{\text{no }\theta}
#   + \sum_{t\ge2} D_{KL}\big(q(x_{t-1}\mid x_t, x_0)\,\|\,p_\theta(x_{t-1}\mid x_t)\big) - \log p_\theta(x_0\mid x_1).$$
#
# The first term has no parameters, so the loss DiT writes (§3.1) is the other two:
#
# $$\mathcal L(\theta) = -\log p_\theta(x_0\mid x_1) + \sum_t D_{KL}\big(q(x_{t-1}\mid x_t, x_0)\,\|\,p_\theta(x_{t-1}\mid x_t)\big).$$
#
# Every KL compares the model's step with the posterior of section 1, the step it should take if it knew x_0.
# Each KL compares two Gaussians. With a fixed variance σ_t² on both sides it is
# ‖μ̃_t − μ_θ‖² / (2σ_t²) plus a constant, and with the ε-form of both means (lesson 02, DDPM Eqs. 10–11)
# the means differ by β_t / (√α_t √(1 − ᾱ_t))·(ε_θ − ε). So each term is a weighted noise error
# (DDPM Eq. 12):
#
# $$L_{t-1} = \lambda_t\,\big\|\varepsilon - \varepsilon_\theta(x_t, t)\big\|^2,\qquad
# \lambda_t = \frac{\beta_t^2}{2\sigma_t^2\,\alpha_t\,(1-\bar\alpha_t)} .$$
#
# Check it with `ditlib`'s Gaussian KL (`normal_kl`), σ_t² = β̃_t, and an imperfect ε_θ:

# %%
# NBVAL_CHECK_OUTPUT
x_start = images.double()                                                 # float64 for a tight check
t = torch.tensor([1, 10, 100, 500, 999])
gen = torch.Generator().manual_seed(2)
eps = torch.randn(x_start.shape, generator=gen, dtype=torch.float64)
eps_theta = eps + 0.1 * torch.randn(x_start.shape, generator=gen, dtype=torch.float64)   # a stand-in network
x_t = diffusion.q_sample(x_start, t, eps)
true_mean, _, log_var = diffusion.q_posterior_mean_variance(x_start, x_t, t)
model_mean = diffusion.q_posterior_mean_variance(diffusion.predict_xstart_from_eps(x_t, t, eps_theta), x_t, t)[0]
kl = mean_flat(normal_kl(true_mean, log_var, model_mean, log_var))      # nats per dimension, (5,)
b, a_bar = diffusion.betas[t], diffusion.alphas_cumprod[t]
weight = b ** 2 / (2 * diffusion.posterior_variance[t] * (1 - b) * (1 - a_bar))      # λ_t
assert torch.allclose(kl, weight * mean_flat((eps - eps_theta) ** 2), rtol=1e-8)
for step, w in zip(t.tolist(), weight.tolist()):
    print(f"t = {step:3d}:  λ_t = {w:.4f}")

# %% [markdown]
# The bound weights a noise error at t = 1 about a hundred times more than at t = 500. DDPM found that dropping the
# weights gives better samples (Eq. 14, §3.4): every t counts the same, so relatively more effort goes to
# the large-t steps that decide the overall shape,
#
# $$L_{\text{simple}} = \mathbb E_{t,\,x_0,\,\varepsilon}\,\big\|\varepsilon - \varepsilon_\theta(\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon,\ t)\big\|^2 .$$
#
# DiT trains its noise prediction with exactly this mean-squared error.
#
# ## 3. Learning Σ: between β̃_t and β_t
#
# L_simple has no Σ in it. DDPM fixed Σ_θ = σ_t² I, with σ_t² = β_t (the best choice if the data were
# N(0, I)) or σ_t² = β̃_t (the best choice if the data were a single image): two extremes. Improved DDPM
# lets the network choose per pixel: it outputs an interpolation weight v ∈ [0, 1] and interpolates *in the
# log domain* (Eq. 15):
#
# $$\Sigma_\theta(x_t, t) = \exp\big(v\,\log\beta_t + (1-v)\,\log\tilde\beta_t\big).$$
#
# DiT does the same: its last layer outputs 2C channels, ε_θ in the first C and, in the other C, a raw value
# r that lies roughly in [−1, 1] and is mapped to the weight v = (r + 1)/2 ∈ [0, 1]. (Two symbols on purpose:
# r is what the network outputs, v what Eq. 15 uses.) How far apart are the two ends?

# %%
fig, (ax_log, ax_ratio) = plt.subplots(1, 2, figsize=(10, 3.2))
steps = np.arange(1, T)                                                   # β̃ at t = 0 is 0 (log = −∞)
viz.plot_curves({"log β_t": diffusion.betas[1:].log(), "log β̃_t": diffusion.posterior_variance[1:].log()},
                x=steps, xlabel="t", title="the two ends of the learned variance", ax=ax_log)
viz.plot_curves({"β_t / β̃_t": diffusion.betas[1:] / diffusion.posterior_variance[1:]}, x=steps, xlabel="t",
                title="their ratio", ax=ax_ratio)
for ax in (ax_log, ax_ratio):
    ax.set_xscale("log")

# %%
# NBVAL_CHECK_OUTPUT
for step in (1, 2, 5, 10, 50, 100, 500, 999):
    print(f"t = {step:3d}:  β_t / β̃_t = {(diffusion.betas[step] / diffusion.posterior_variance[step]).item():.4f}")

# %% [markdown]
# The two ends differ by a factor of 2.2 at t = 1, by 4% at t = 50 and by less than 1% after t = 200
# (Improved DDPM Fig. 1 makes the same comparison). So Σ only matters for the first few dozen steps,
# which is also where most of the log-likelihood is decided (Improved DDPM Fig. 2). A narrow range in
# log space is also why the weight v is easy to learn.
#
# Σ is trained by the full bound L_vlb; its gradient is not allowed to reach ε_θ (a stop-gradient), so
# ε is trained by L_simple alone. Improved DDPM's *hybrid loss* is L_simple + λ·L_vlb with λ = 0.001 (Eq. 16).
# The code evaluates one random term L_{t−1} per image, in bits per dimension: an estimate of L_vlb / T,
# which with T = 1000 plays the part of that small λ.
#
# ## 4. The hybrid loss, by hand, on the pretrained model
#
# `data/checkpoints/fmnist-DiT-T-4` is a DiT trained by this course on Fashion-MNIST pixels (32×32×1,
# patch 4, 6 blocks of width 192, learned Σ). Load it:

# %%
# NBVAL_CHECK_OUTPUT
model, meta = load_model(DATA_DIR / "checkpoints" / "fmnist-DiT-T-4")     # EMA weights, eval mode
config = meta["model_config"]
print(f"{meta['train_config']['model']}: {config['depth']} blocks, width {config['hidden_size']}, "
      f"patch {config['patch_size']}, {config['in_channels']} channel in, "
      f"{model.out_channels} out (ε and r), {meta['step']} training steps")

# %% [markdown]
# `diffusion.training_losses` returns three numbers per image: `mse` (L_simple), `vb` (one term of the
# bound, training Σ only) and `loss` = mse + vb. Recompute the first from the raw model output:

# %%
t = torch.tensor([10, 50, 100, 500, 900])                                 # one timestep per image
noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(3))
with torch.no_grad():
    losses = diffusion.training_losses(model, images, t, model_kwargs={"y": labels}, noise=noise)
    x_t = diffusion.q_sample(images, t, noise)
    eps_theta, r = model(x_t, t, labels).split(1, dim=1)                 # (5, 1, 32, 32) each: ε_θ and raw r
mse = (noise - eps_theta).square().mean(dim=(1, 2, 3))                    # L_simple, per image
assert torch.allclose(mse, losses["mse"], atol=1e-6)
print("L_simple by hand matches training_losses(...)['mse']")

# %% [markdown]
# And the `vb` term: the KL between the true posterior and the model's Gaussian, whose mean comes from
# ε_θ (lesson 02) and whose log-variance comes from the raw output r through v = (r + 1)/2 (Eq. 15), converted
# from nats to bits:

# %%
true_mean, _, true_log_var = diffusion.q_posterior_mean_variance(images, x_t, t)
model_mean = diffusion.q_posterior_mean_variance(diffusion.predict_xstart_from_eps(x_t, t, eps_theta), x_t, t)[0]
frac = (r + 1) / 2                                                        # the weight v = (r + 1)/2 ∈ [0, 1]
log_beta = diffusion.betas[t].log().float().view(-1, 1, 1, 1)
log_beta_tilde = diffusion.posterior_variance[t].log().float().view(-1, 1, 1, 1)
model_log_var = frac * log_beta + (1 - frac) * log_beta_tilde             # Improved DDPM Eq. 15
vb = mean_flat(normal_kl(true_mean, true_log_var, model_mean, model_log_var)) / math.log(2)
assert torch.allclose(vb, losses["vb"], rtol=1e-4, atol=1e-7)
assert torch.allclose(mse + vb, losses["loss"], atol=1e-6)
for row in zip(t.tolist(), mse.tolist(), vb.tolist()):
    print("t = {:3d}:  mse = {:.4f}   vb = {:.6f} bits/dim".format(*row))

# %% [markdown]
# (At t = 0 the bound's term is the decoder's −log p_θ(x_0 | x_1) instead of a KL; `training_losses`
# switches to it there.)
#
# ## 5. What training bought: trained vs untrained, t by t
#
# An untrained DiT of the same configuration outputs exactly zero (its last layer starts at zero; lesson
# 06 explains why): it predicts ε = 0 and r = 0, i.e. v = 1/2, the geometric mean of β_t and β̃_t. Its mse is therefore
# E[ε²] = 1 at every t. Measure both models on the same images and noise at several t:

# %%
untrained = DiT(**config).eval()
x_start, y = FashionMNIST("test").examples(per_class=pick(6, 2))           # (60, 1, 32, 32); quick: 20
timesteps = [0, 10, 50, 100, 250, 500, 750, 999]
gen = torch.Generator().manual_seed(4)
curves = {name: {"mse": [], "vb": []} for name in ("trained", "untrained")}
with torch.no_grad():
    assert untrained(x_start, torch.zeros(len(y), dtype=torch.long), y).abs().max() == 0
    for step in timesteps:
        t = torch.full((len(x_start),), step)
        noise = torch.randn(x_start.shape, generator=gen)
        for name, net in (("trained", model), ("untrained", untrained)):
            losses = diffusion.training_losses(net, x_start, t, model_kwargs={"y": y}, noise=noise)
            for key in ("mse", "vb"):
                curves[name][key].append(losses[key].mean().item())

# %%
print("   t   mse trained  mse untrained   vb trained  vb untrained   (vb in bits/dim)")
for i, step in enumerate(timesteps):
    print(f"{step:4d}   {curves['trained']['mse'][i]:10.4f}  {curves['untrained']['mse'][i]:13.4f}"
          f"   {curves['trained']['vb'][i]:10.5f}  {curves['untrained']['vb'][i]:12.5f}")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for ax, key, title in zip(axes, ("mse", "vb"), ("L_simple: ‖ε − ε_θ‖² per dimension", "L_vlb term (bits/dim)")):
    viz.plot_curves({name: np.maximum(curves[name][key], 1e-6) for name in curves},   # floor for the log axis
                    x=timesteps, xlabel="t", title=title, logy=True, ax=ax)

# %% [markdown]
# The trained model's noise error falls from about 0.5 at t = 0 to almost nothing at t = 999. Late in
# the process x_t *is* mostly noise, so ε is easy to read off; at small t the noise is a faint texture on
# a clean image, and telling it apart from real detail requires knowing what clothes look like. The vb
# term is largest at t = 0 (the decoder term −log p_θ(x_0 | x_1)) and, for the trained model, falls by
# five orders of magnitude across t. The untrained model's vb stays near 0.01 bits/dim at large t
# because its *mean* is wrong (ε_θ = 0), not its variance.
#
# ## 6. Sampling, written out
#
# Generation runs the learned reverse process (DDPM Algorithm 2, with learned Σ): x_T ~ N(0, I), then
# for each step
#
# 1. run the model: ε_θ and the raw variance output r;
# 2. estimate the clean image x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ)/√ᾱ_t and clip it to [−1, 1] (pixels live there);
# 3. take the posterior mean μ̃_t(x̂_0, x_t) from section 1;
# 4. take the variance from v = (r + 1)/2 (section 3);
# 5. x_{t−1} = μ̃_t + σ_t z with z ~ N(0, I), except at the last step, where no noise is added.
#
# **Respacing.** 1000 model calls per image is slow; DiT samples with 250. `create_diffusion("50")` keeps
# 50 evenly spaced timesteps and defines new β's so that ᾱ at the kept steps is unchanged (Improved DDPM
# §4): β'_i = 1 − ᾱ_{s_i}/ᾱ_{s_{i−1}}. The sampler then counts steps 0 … 49, but the network was trained on
# the original t, so it must be called with `sampler.timestep_map[i]`:

# %%
num_steps = pick(50, 10)
sampler = create_diffusion(str(num_steps))
assert torch.allclose(sampler.alphas_cumprod, diffusion.alphas_cumprod[sampler.timestep_map])
model_t = sampler.timestep_map.tolist()
print(f"{sampler.num_timesteps} steps; the model sees t = {model_t[:4]} … {model_t[-2:]}")

# %% [markdown]
# `ditlib` runs these five steps in `p_sample_loop_progressive`, which yields every x_{t−1} on the way (you
# write the same loop yourself in section 9). The noise comes from one `torch.Generator` in the order `ditlib`
# draws it: first x_T, then one z per step (even at the last, where it is multiplied by 0). Keep x_T and every
# fifth step of the chain:

# %%
y = torch.tensor([0, 1, 5, 7, 9])                                         # one image per class
gen = torch.Generator().manual_seed(0)
x_T = torch.randn(len(y), 1, 32, 32, generator=gen)                       # x_T ~ N(0, I)
snapshots = set(range(num_steps - 1, -1, -max(1, num_steps // 5)))        # x_T and every fifth of the run
x, trajectory, titles = x_T, [], []
for out in sampler.p_sample_loop_progressive(model, x_T.shape, noise=x_T, model_kwargs={"y": y}, generator=gen):
    if out["t"] in snapshots:                                             # x before the step at index t
        trajectory.append(x)
        titles.append(f"t = {sampler.timestep_map[out['t']].item()}")
    x = out["sample"]
samples = x                                                               # (5, 1, 32, 32)
trajectory.append(x)
titles.append("sample")

# %%
strip = torch.stack(trajectory, dim=1).reshape(-1, 1, 32, 32)             # rows: images, columns: time
viz.show_images(strip, nrow=len(trajectory), titles=titles + [""] * (len(strip) - len(titles)),
                title="x_t along the DDPM chain");

# %% [markdown]
# The same run, one point of the chain at a time: drag the slider from x_T (0%) to the sample (100%).

# %%
widgets.trajectory_scrubber({"DDPM, learned Σ": trajectory}, what="x_t")

# %% [markdown]
# Rows are T-shirt, trouser, sandal, sneaker and ankle boot, the classes in `y`. To our eyes x_t is
# noise for the first half of the run; the shapes appear in the second half and the last steps sharpen
# them. This pixel model is small (the 3,500-step pixel DiT-T/4, not the course's latent default) and this
# chain is short and unguided, and it shows: the T-shirt and the trousers come out recognisable, but the
# sandal is a bright horizontal bar, the sneaker faint and the ankle boot blocky. More steps (the paper uses
# 250) and classifier-free guidance (lesson 09) both help, and the latent model of lessons 07–09 draws all ten
# classes far better. In quick mode there are only 10 steps and the samples are rougher still.
#
# ## 7. Exercise: implement `posterior_mean_variance`
#
# Write `posterior_mean_variance(x_start, x_t, t, betas)` for a whole batch:
# - `x_start`, `x_t`: tensors (B, C, H, W);
# - `t`: a (B,) long tensor, one 0-based timestep per image;
# - `betas`: the (T,) float64 tensor of β_t.
#
# Return `(mean, variance)` of q(x_{t−1} | x_t, x_0) (section 1, DDPM Eq. 7): `mean` shaped like x_t, and
# `variance` broadcastable against it, e.g. (B, 1, 1, 1). Remember ᾱ_{t−1} = 1 at t = 0. Hints: build
# `alphas_cumprod_prev` by putting 1.0 in front of `alphas_cumprod[:-1]`, index with t, and reshape; do
# the schedule arithmetic in float64 (at t = 0, 1 − ᾱ_t is 10⁻⁴) and cast to x_t's dtype at the end.

# %% nbgrader={"grade": false, "grade_id": "posterior_mean_variance", "locked": false, "schema_version": 3, "solution": true, "task": false}
def posterior_mean_variance(x_start, x_t, t, betas):
    ### BEGIN SOLUTION
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)                             # ᾱ_t, (T,) float64
    alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])   # ᾱ_{t−1}
    shape = (-1,) + (1,) * (x_t.ndim - 1)                                         # (B, 1, 1, 1)
    beta, abar, abar_prev = (a[t].view(shape) for a in (betas, alphas_cumprod, alphas_cumprod_prev))
    coef_x0 = beta * abar_prev.sqrt() / (1 - abar)                               # in float64: 1 − ᾱ_t is tiny at t = 0
    coef_xt = (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar)
    variance = beta * (1 - abar_prev) / (1 - abar)
    return coef_x0.to(x_t.dtype) * x_start + coef_xt.to(x_t.dtype) * x_t, variance.to(x_t.dtype)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_posterior_mean_variance", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_posterior_mean_variance(posterior_mean_variance)
display(feedback)
### BEGIN HIDDEN TESTS
exercises.require(feedback)
gen_check = torch.Generator().manual_seed(3)             # also agree with ditlib on float64 images, t = 0 and T − 1 included
t_check = torch.cat([torch.tensor([0, T - 1]), torch.randint(1, T - 1, (4,), generator=gen_check)])
x0_check = torch.randn(6, 2, 3, 3, dtype=torch.float64, generator=gen_check)
xt_check = torch.randn(6, 2, 3, 3, dtype=torch.float64, generator=gen_check)
mean_check, variance_check = posterior_mean_variance(x0_check, xt_check, t_check, diffusion.betas)
mean_ref, variance_ref, _ = diffusion.q_posterior_mean_variance(x0_check, xt_check, t_check)
assert torch.allclose(mean_check, mean_ref, atol=1e-8), "the posterior mean disagrees with ditlib.diffusion on a float64 batch"
assert torch.allclose(torch.as_tensor(variance_check).expand_as(variance_ref), variance_ref, atol=1e-10), \
    "the posterior variance disagrees with ditlib.diffusion on a float64 batch"
### END HIDDEN TESTS

# %% [markdown]
# Your function and `ditlib`'s agree on real images, t = 0 included:

# %%
t = torch.tensor([0, 1, 100, 500, 999])
x_t = diffusion.q_sample(images, t, torch.randn(images.shape, generator=torch.Generator().manual_seed(5)))
mean, variance = posterior_mean_variance(images, x_t, t, diffusion.betas)
ref_mean, ref_variance, _ = diffusion.q_posterior_mean_variance(images, x_t, t)
assert torch.allclose(mean, ref_mean, atol=1e-5)
assert torch.allclose(variance.expand_as(ref_variance).float(), ref_variance.float(), atol=1e-7)
print("posterior_mean_variance matches ditlib.diffusion.GaussianDiffusion.q_posterior_mean_variance")

# %% [markdown]
# ## 8. Exercise: the hybrid loss
#
# Section 4 took the loss apart on one batch with `ditlib`'s helpers. Now write the whole objective DiT
# trains with, `hybrid_loss(diffusion, model, x_start, t, y, noise)`, for a batch of B images, one t each:
#
# - x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε, with ᾱ from `diffusion.betas` (lesson 01);
# - ε_θ, r = `model(x_t, t, y).split(C, dim=1)`;
# - `mse` = L_simple, the mean over each image of (ε − ε_θ)² (`mean_flat`);
# - the model's Gaussian, from a **frozen** ε_θ (`eps.detach()`: the bound trains Σ only, Improved DDPM
#   §3.1): x̂_0 from ε_θ, μ_θ = μ̃(x̂_0, x_t) with your `posterior_mean_variance`, and
#   log Σ_θ = v·log β_t + (1 − v)·log β̃_t with v = (r + 1)/2; take log β̃_t from
#   `diffusion.posterior_log_variance_clipped` (β̃_0 = 0 has no logarithm: that array holds log β̃_1 at t = 0);
# - `vb` = KL(N(μ̃(x_0, x_t), β̃_t) ‖ N(μ_θ, Σ_θ)) averaged over each image (`normal_kl`, `mean_flat`), except
#   at t = 0, where the bound's term is the decoder's −log p_θ(x_0 | x_1),
#   `-discretized_gaussian_log_likelihood(x_start, means=μ_θ, log_scales=½·log Σ_θ)`; both in bits (÷ ln 2);
# - return `{"mse": mse, "vb": vb, "loss": mse + vb}`, each of shape (B,).
#
# The check compares your values *and gradients* with `training_losses` on a small trainable model, names
# the usual slips (ε not frozen in the bound, nats for bits, a KL at t = 0, r used as the weight, the
# interpolation the wrong way round, x̂_0 clipped, a sum where the mean belongs), and refuses a function that
# calls `training_losses` or the library's reverse step.

# %% nbgrader={"grade": false, "grade_id": "hybrid_loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
def hybrid_loss(diffusion, model, x_start, t, y, noise):
    ### BEGIN SOLUTION
    betas = diffusion.betas                                                   # (T,) float64
    abar = torch.cumprod(1 - betas, dim=0)[t].view(-1, 1, 1, 1).to(x_start.dtype)
    x_t = abar.sqrt() * x_start + (1 - abar).sqrt() * noise                   # q(x_t | x_0), lesson 01
    eps, r = model(x_t, t, y).split(x_start.shape[1], dim=1)                  # ε_θ and the raw variance output
    mse = mean_flat((noise - eps) ** 2)                                       # L_simple
    x0_hat = (x_t - (1 - abar).sqrt() * eps.detach()) / abar.sqrt()           # a frozen ε: the bound trains Σ only
    model_mean, _ = posterior_mean_variance(x0_hat, x_t, t, betas)            # μ_θ = μ̃(x̂_0, x_t)
    true_mean, _ = posterior_mean_variance(x_start, x_t, t, betas)            # μ̃(x_0, x_t)
    log_post = diffusion.posterior_log_variance_clipped[t].view(-1, 1, 1, 1).to(x_start.dtype)   # log β̃_t
    v = (r + 1) / 2
    log_var = v * betas[t].log().view(-1, 1, 1, 1).to(x_start.dtype) + (1 - v) * log_post        # Eq. 15
    kl = mean_flat(normal_kl(true_mean, log_post, model_mean, log_var))
    nll = -mean_flat(discretized_gaussian_log_likelihood(x_start, means=model_mean, log_scales=0.5 * log_var))
    vb = torch.where(t == 0, nll, kl) / math.log(2.0)                         # nats → bits per dimension
    return {"mse": mse, "vb": vb, "loss": mse + vb}
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_hybrid_loss", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_hybrid_loss(hybrid_loss)
display(feedback)
### BEGIN HIDDEN TESTS
_ = exercises.require(feedback)
### END HIDDEN TESTS

# %% [markdown]
# Your loss on the pretrained model, with the images, timesteps and noise of section 4, gives the numbers of
# `training_losses`, t = 0 (the decoder term) included:

# %%
t = torch.tensor([0, 10, 50, 500, 900])
noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(3))
with torch.no_grad():
    yours = hybrid_loss(diffusion, model, images, t, labels, noise)
    reference = diffusion.training_losses(model, images, t, model_kwargs={"y": labels}, noise=noise)
for key in ("mse", "vb", "loss"):
    assert torch.allclose(yours[key], reference[key], rtol=1e-3, atol=1e-6), key
for row in zip(t.tolist(), yours["mse"].tolist(), yours["vb"].tolist()):
    print("t = {:3d}:  mse = {:.4f}   vb = {:.6f} bits/dim".format(*row))
print("hybrid_loss matches training_losses")

# %% [markdown]
# ## 9. Exercise: the sampling loop
#
# Now the sampler of section 6, written by you: `sample_loop(diffusion, model, x_T, y, noises)`, DDPM
# Algorithm 2 with learned Σ, for any respaced `diffusion`:
#
# - `x_T`: (B, C, H, W) noise to start from; `y`: (B,) labels; `noises`: a (T, B, C, H, W) tensor whose
#   `noises[i]` is the z of the step at index i (T = `diffusion.num_timesteps`, the respaced count);
# - for i = T − 1 down to 0, with `t = torch.full((B,), i, dtype=torch.long)`:
#   1. ε_θ, r = `model(x, diffusion.timestep_map[t], y).split(C, dim=1)` (the network was trained on the
#      original timesteps);
#   2. x̂_0 = (x − √(1 − ᾱ_i)·ε_θ)/√ᾱ_i, clipped to [−1, 1], with ᾱ the cumulative product of
#      1 − `diffusion.betas` (the respaced β');
#   3. μ̃ and β̃ from your `posterior_mean_variance(x̂_0, x, t, diffusion.betas)`;
#   4. log Σ = v·log β'_i + (1 − v)·log β̃_i with v = (r + 1)/2 (section 3);
#   5. x ← μ̃ + exp(½·log Σ)·noises[i]; at i = 0 return μ̃ itself (no noise at the last step, and β̃_0 = 0
#      has no logarithm).
#
# The check runs your loop on a tiny model and names the usual slips: noise added at t = 0, the loop run
# upwards, the model called with i instead of its timestep, r used as the weight, Σ fixed to β̃_t or β_t, the
# variance where the standard deviation belongs, no noise at all, x̂_0 returned instead of x. A loop that calls
# `ditlib`'s `p_mean_variance`, posterior or sampler is refused.

# %% nbgrader={"grade": false, "grade_id": "sample_loop", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sample_loop(diffusion, model, x_T, y, noises):
    ### BEGIN SOLUTION
    betas = diffusion.betas                                               # β'_i of the respaced process, float64
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    x, C = x_T, x_T.shape[1]
    for i in reversed(range(diffusion.num_timesteps)):                    # T − 1, …, 0
        t = torch.full((x.shape[0],), i, dtype=torch.long)
        eps, r = model(x, diffusion.timestep_map[t], y).split(C, dim=1)  # ε_θ and r, at the model's timestep
        abar = alphas_cumprod[i].item()
        x0_hat = ((x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)).clamp(-1, 1)
        mean, variance = posterior_mean_variance(x0_hat, x, t, betas)     # μ̃ and β̃ (section 7)
        if i == 0:
            return mean                                                   # no noise at the last step
        v = (r + 1) / 2
        log_var = v * betas[i].log() + (1 - v) * variance.log()           # Improved DDPM Eq. 15
        x = mean + torch.exp(0.5 * log_var) * noises[i]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_sample_loop", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_ddpm_sampling_loop(sample_loop)
display(feedback)
### BEGIN HIDDEN TESTS
_ = exercises.require(feedback)                          # AssertionError with the message if it failed
### END HIDDEN TESTS

# %% [markdown]
# Your loop on the pretrained model, with the noise drawn in `ditlib`'s order (x_T, then one z per step from
# i = T − 1 down), gives the samples of section 6, and so does `sample_images`, the function behind
# `python -m ditlib sample`. We ask it for fp32, the precision of your loop; by default (`precision="auto"`) it
# runs the model in bf16 on hardware that computes bf16 natively, which moves the samples by bf16's rounding.

# %%
gen = torch.Generator().manual_seed(0)
x_T = torch.randn(len(y), 1, 32, 32, generator=gen)
zs = [torch.randn(x_T.shape, generator=gen) for _ in range(num_steps)]   # drawn at i = T−1, …, 0
with torch.no_grad():
    yours = sample_loop(sampler, model, x_T, y, torch.stack(zs[::-1]))    # noises[i]: the z of step i
assert torch.allclose(yours, samples, atol=1e-5), "your loop differs from ditlib's: did you clip x̂_0 to [−1, 1]?"
assert torch.allclose(samples, sample_images(model, y, num_sampling_steps=num_steps, seed=0, progress=False,
                                             precision="fp32"), atol=1e-5)
print(f"sample_loop = p_sample_loop = sample_images (largest difference {(yours - samples).abs().max():.1e})")

# %% [markdown]
# ## Summary
#
# - Given x_0, the reverse step is Gaussian: q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) with μ̃_t a blend of
#   x_0 and x_t and β̃_t = β_t(1 − ᾱ_{t−1})/(1 − ᾱ_t) (DDPM Eqs. 6–7).
# - Each term of the variational bound is a weighted ‖ε − ε_θ‖²; dropping the weights gives L_simple,
#   the loss DiT trains its noise prediction with.
# - DiT also outputs r, v = (r + 1)/2, and learns Σ_θ = exp(v log β_t + (1 − v) log β̃_t) through the bound, with ε held
#   fixed there: loss = mse + vb, which you wrote and matched with `training_losses`, gradients included. The two
#   ends differ only in the first few dozen steps.
# - A sampler is a short loop, which you wrote: ε_θ → x̂_0 (clipped) → μ̃_t → + σ_t z with the learned σ_t.
#   Respacing keeps ᾱ at fewer steps and calls the model with the original timesteps.
#
# **More to try.** Sample with r forced to −1 (v = 0, Σ = β̃_t) and to +1 (v = 1, Σ = β_t) by editing one line of
# your loop: do the samples change much with 50 steps? Run the loop without clipping x̂_0. Compare the
# trained model's mse at t = 0 with the λ-weighted bound: which steps would the bound have trained hardest?
#
# **Next:** [04 · Latent space](04_latent_space.ipynb): DiT does not denoise pixels but the latents of a
# VAE; how the 32×32×4 latent of a 256×256 image is made, and why it is scaled.
