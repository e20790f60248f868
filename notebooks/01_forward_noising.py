# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The forward process: destroying an image, one small step at a time
#
# A diffusion model learns to *undo* a fixed noising process. Before any network appears, this lesson
# builds that process by hand and checks every formula against `ditlib.diffusion`.
#
# **Learning objectives.** After this lesson you can
# 1. write the one-step noising q(x_t | x_{t−1}) and the closed form q(x_t | x_0), and say why they agree;
# 2. explain the linear and cosine β schedules through ᾱ_t and the signal-to-noise ratio;
# 3. implement `q_sample`, the function every training step of DiT calls.
#
# **Paper.** DiT §3.1 *Diffusion formulation* (the forward process q(x_t|x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)),
# which follows DDPM (Ho et al. 2020, Eqs. 2 and 4) and uses its linear schedule, β from 10⁻⁴ to 0.02 over
# T = 1000 steps (§4, *Diffusion*).
#
# *Quick mode* (`DITLIB_QUICK=1`) only shrinks the Monte-Carlo check below; everything else is the real thing.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from ditlib.course import exercises, viz
from ditlib.data import FashionMNIST
from ditlib.diffusion import create_diffusion, get_named_beta_schedule
from ditlib.runtime import pick

torch.manual_seed(0)
images, labels = FashionMNIST("test").examples(per_class=1, classes=[0, 1, 5, 7, 9])   # (5, 1, 32, 32) in [-1, 1]
viz.show_images(images, titles=viz.class_titles(labels));

# %% [markdown]
# ## 1. One step of noise
#
# The forward process adds a little Gaussian noise at each step t = 1 … T and shrinks the signal so the
# variance stays bounded (DDPM Eq. 2):
#
# $$q(x_t \mid x_{t-1}) = \mathcal N\big(x_t;\ \sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big).$$
#
# The β_t are fixed, not learned. DiT uses DDPM's *linear* schedule. Build it by hand and compare it with
# `ditlib`'s:

# %%
# NBVAL_CHECK_OUTPUT
T = 1000
betas_by_hand = np.linspace(1e-4, 0.02, T, dtype=np.float64)       # β_1 … β_T
betas = get_named_beta_schedule("linear", T)
assert np.array_equal(betas_by_hand, betas)
print(f"β_1 = {betas[0]:.4g}, β_500 = {betas[499]:.6f}, β_1000 = {betas[-1]:.4g}")

# %% [markdown]
# ## 2. Many steps at once: the closed form
#
# Write α_t = 1 − β_t and ᾱ_t = ∏_{s≤t} α_s. Because a sum of independent Gaussians is Gaussian, t steps
# collapse into one (DDPM Eq. 4, DiT §3.1):
#
# $$q(x_t \mid x_0) = \mathcal N\big(x_t;\ \sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big)
# \quad\Longleftrightarrow\quad x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon,\ \ \varepsilon\sim\mathcal N(0, I).$$
#
# *Derivation for two steps.* x_2 = √α₂ x_1 + √β₂ ε₂ = √α₂(√α₁ x_0 + √β₁ ε₁) + √β₂ ε₂. The mean is
# √(α₁α₂) x_0; the variance is α₂β₁ + β₂ = α₂(1 − α₁) + 1 − α₂ = 1 − α₁α₂. Induction does the rest.
#
# Check it the honest way: run the one-step chain on many copies of the same pixel values and compare
# the empirical mean and variance at several t with the closed form.
#
# From here on t is `ditlib`'s 0-based index, as in the code: t = 0 is the paper's t = 1 and t = 999 is its T.

# %%
num_chains = pick(200_000, 20_000)                 # quick mode: fewer chains, looser tolerance
x0 = torch.tensor([-1.0, -0.3, 0.4, 1.0], dtype=torch.float64)                     # four pixel values
alphas_cumprod = np.cumprod(1 - betas)                                              # ᾱ_t, (T,)
checkpoints = {1, 10, 100, 500, 999}
x = x0.repeat(num_chains, 1)                                                        # (chains, 4)
gen = torch.Generator().manual_seed(0)
worst = 0.0
for t in range(T):                                                                  # t here is 0-based
    x = math.sqrt(1 - betas[t]) * x + math.sqrt(betas[t]) * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    if t in checkpoints:
        mean_err = (x.mean(0) - math.sqrt(alphas_cumprod[t]) * x0).abs().max().item()
        var_err = (x.var(0) - (1 - alphas_cumprod[t])).abs().max().item()
        worst = max(worst, mean_err, var_err)
        print(f"t = {t:3d}: ᾱ_t = {alphas_cumprod[t]:.4f}   |mean − √ᾱ_t x0| ≤ {mean_err:.4f}   |var − (1−ᾱ_t)| ≤ {var_err:.4f}")
tolerance = 6 / math.sqrt(num_chains)              # a few standard errors
assert worst < tolerance, worst
print(f"iterating {T} one-step noisings matches the closed form (largest error {worst:.4f} < {tolerance:.4f})")

# %% [markdown]
# `ditlib` stores ᾱ_t (and every other table the sampler needs) in float64 on the diffusion object:

# %%
# NBVAL_CHECK_OUTPUT
diffusion = create_diffusion("")                   # "" = no respacing: all 1000 steps
assert np.allclose(diffusion.alphas_cumprod.numpy(), alphas_cumprod)
for t in (0, 249, 499, 749, 999):
    print(f"t = {t:3d}: ᾱ_t = {alphas_cumprod[t]:.6f}, √ᾱ_t = {math.sqrt(alphas_cumprod[t]):.6f}")

# %% [markdown]
# By t = 999 the signal coefficient √ᾱ_T ≈ 0.006: x_T is, for all practical purposes, pure noise. That is
# what lets the sampler start from N(0, I).
#
# ## 3. Schedules: linear vs cosine
#
# The linear schedule destroys information fast: ᾱ_t is already small half-way through. Improved DDPM
# (Nichol & Dhariwal 2021, Eq. 17) proposed a *cosine* schedule, ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2) with
# s = 0.008, β clipped at 0.999. Build it by hand and compare:

# %%
s = 0.008
f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2                     # noqa: E731
cosine_abar_by_hand = np.array([f((t + 1) / T) / f(0) for t in range(T)])
cosine_abar = np.cumprod(1 - get_named_beta_schedule("cosine", T))
assert np.allclose(cosine_abar_by_hand[:-1], cosine_abar[:-1], rtol=1e-9)          # the last β is clipped
viz.plot_schedules({"linear (DiT)": alphas_cumprod, "cosine": cosine_abar});

# %% [markdown]
# The right panel is the signal-to-noise ratio SNR(t) = ᾱ_t / (1 − ᾱ_t) on a log scale. SNR = 1
# (the grey line) is where signal and noise have equal power. Under the linear schedule that happens
# near t ≈ 250; under the cosine schedule much later. DiT keeps the linear schedule to stay comparable
# with ADM; the course does too.
#
# ## 4. What the model sees
#
# `diffusion.q_sample(x0, t, noise)` draws x_t in one shot. The same noise ε is used in every column,
# so you see one image fading into its own noise:

# %%
viz.noising_strip(images, diffusion.q_sample, timesteps=[0, 50, 100, 200, 300, 500, 700, 999]);

# %% [markdown]
# And the cosine schedule at the same t keeps much more of the picture:

# %%
cosine = create_diffusion("", noise_schedule="cosine")
viz.noising_strip(images, cosine.q_sample, timesteps=[0, 50, 100, 200, 300, 500, 700, 999]);

# %% [markdown]
# ### Try it: drag t
#
# The slider below re-noises the same images with one fixed ε. Watch the histogram: the pixel values of
# Fashion-MNIST (mostly −1 background) turn into a standard normal bell as t grows.

# %%
viz.timestep_slider(images, diffusion.q_sample, diffusion.alphas_cumprod.numpy(), t=250)

# %% [markdown]
# ## 5. Exercise: implement `q_sample`
#
# Write `q_sample(x_start, t, noise, alphas_cumprod)`:
# - `x_start`, `noise`: tensors (B, C, H, W);
# - `t`: a (B,) tensor of integer timesteps in [0, T − 1], **one per image**;
# - `alphas_cumprod`: the (T,) tensor of ᾱ_t.
#
# Return √ᾱ_t · x_start + √(1 − ᾱ_t) · noise, with each image using its own t. Hint: `alphas_cumprod[t]`
# has shape (B,); it must broadcast against (B, C, H, W).

# %% nbgrader={"grade": false, "grade_id": "q_sample", "locked": false, "schema_version": 3, "solution": true, "task": false}
def q_sample(x_start, t, noise, alphas_cumprod):
    ### BEGIN SOLUTION
    abar = alphas_cumprod[t].to(x_start.dtype).reshape(-1, *([1] * (x_start.ndim - 1)))   # (B, 1, 1, 1)
    return abar.sqrt() * x_start + (1 - abar).sqrt() * noise
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_q_sample", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_q_sample(q_sample)
display(feedback)
### BEGIN HIDDEN TESTS
exercises.require(feedback)
gen_check = torch.Generator().manual_seed(1)             # also agree with ditlib on a float64 batch of 7 at random t
x_check = torch.randn(7, 3, 5, 5, dtype=torch.float64, generator=gen_check)
eps_check = torch.randn(7, 3, 5, 5, dtype=torch.float64, generator=gen_check)
t_check = torch.randint(0, T, (7,), generator=gen_check)
assert torch.allclose(q_sample(x_check, t_check, eps_check, diffusion.alphas_cumprod),
                      diffusion.q_sample(x_check, t_check, eps_check), atol=1e-10), \
    "q_sample disagrees with ditlib.diffusion.GaussianDiffusion.q_sample on a float64 batch of 7 images"
### END HIDDEN TESTS

# %% [markdown]
# Your function and `ditlib`'s agree on real images:

# %%
t = torch.tensor([0, 10, 250, 500, 999])
noise = torch.randn_like(images)
assert torch.allclose(q_sample(images, t, noise, diffusion.alphas_cumprod), diffusion.q_sample(images, t, noise), atol=1e-6)
print("q_sample matches ditlib.diffusion.GaussianDiffusion.q_sample")

# %% [markdown]
# ## Summary
#
# - The forward process q(x_t | x_{t−1}) adds noise of variance β_t and scales the signal by √(1 − β_t).
# - Steps compose into one Gaussian: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε. Training never runs the chain; it
#   jumps straight to a random t.
# - The schedule decides how fast the SNR falls. DiT uses the linear one (β 10⁻⁴ → 0.02, T = 1000).
#
# **More to try.** Where does the linear schedule's SNR cross 1, exactly? (`np.argmin(abs(...))`.)
# How many steps of the cosine schedule keep √ᾱ_t > 0.5?
#
# **Next:** [02 · The reparameterization trick](02_reparameterization.ipynb): why writing a sample as
# mean + σ·ε lets gradients flow, and how that turns "predict the noise" into a model of the reverse process.
