# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · The reparameterization trick: randomness you can differentiate
#
# Every line of a diffusion model's training draws random numbers: a noise level, a noise image, a
# latent from the VAE. Gradients still reach the parameters, because each of those samples is written
# as *a deterministic function of its parameters and of noise drawn once*. This lesson makes that
# precise, shows what goes wrong without it, and then finds the same trick in two places in DiT.
#
# **Learning objectives.** After this lesson you can
# 1. write a Gaussian sample as x = μ + σ·ε, and say why gradients reach μ and σ that way but not
#    through `torch.normal(mu, sigma)`;
# 2. write the loss that fits the parameters of a distribution by gradient descent *through its
#    samples* (the squared 2-Wasserstein distance between sorted samples), and check its gradients
#    against the chain rule;
# 3. turn a noise prediction ε_θ into the mean of a reverse step (DDPM Eq. 11), and check it
#    against `ditlib.diffusion`;
# 4. recognise the same trick in the VAE encoder that produces DiT's latents.
#
# **Paper.** DiT §3.1 *Diffusion formulation*: the reparameterization trick gives the noisy sample
# x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε_t, and once μ_θ is reparameterized as a noise prediction network ε_θ the
# model is trained with a plain mean-squared error on ε. The trick itself is from Kingma & Welling,
# *Auto-Encoding Variational Bayes* (2014, §2.4); the ε-form of the mean is DDPM (Ho et al. 2020,
# Eqs. 10–11). DiT §3.1 *Latent diffusion models* introduces the VAE encoder of section 4.
#
# *Quick mode* changes nothing here: every cell already runs in a second or two.

# %%
import math

import matplotlib.pyplot as plt
import torch

from ditlib.course import exercises, viz
from ditlib.data import FashionMNIST
from ditlib.diffusion import create_diffusion
from ditlib.vae import load_vae

# %% [markdown]
# ## 1. A sample is a function of its noise
#
# To draw x ~ N(μ, σ²), draw ε ~ N(0, 1) and compute
#
# $$x = \mu + \sigma\,\varepsilon .$$
#
# All the randomness sits in ε. Once ε is drawn, x is ordinary arithmetic on μ and σ, so
# ∂x/∂μ = 1 and ∂x/∂σ = ε. First check that the recipe gives the right distribution:

# %%
# NBVAL_CHECK_OUTPUT
mu, sigma = 3.0, 0.5
eps = torch.randn(100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
x = mu + sigma * eps                                   # 100,000 draws of N(3, 0.5²)
print(f"sample mean {x.mean():.3f} (μ = {mu}),  sample std {x.std():.3f} (σ = {sigma})")
assert abs(x.mean() - mu) < 0.01 and abs(x.std() - sigma) < 0.01

# %% [markdown]
# Now make μ and σ parameters and ask autograd for the gradient of the sum of five samples. The answer
# should be ∂Σx/∂μ = 5 and ∂Σx/∂σ = Σε:

# %%
# NBVAL_CHECK_OUTPUT
mu = torch.tensor(3.0, requires_grad=True)
sigma = torch.tensor(0.5, requires_grad=True)
eps = torch.randn(5, generator=torch.Generator().manual_seed(1))
x = mu + sigma * eps                                   # (5,) samples, still attached to μ and σ
x.sum().backward()
print("samples x =", x.detach().numpy().round(4))
print(f"∂Σx/∂μ = {mu.grad.item():.4f},  ∂Σx/∂σ = {sigma.grad.item():.4f},  Σε = {eps.sum().item():.4f}")
assert mu.grad.item() == 5 and torch.isclose(sigma.grad, eps.sum())

# %% [markdown]
# ### The same numbers without the trick
#
# `torch.normal(mu, sigma)` draws from the same distribution; with the same generator it even returns
# *the same five numbers*. But it treats its output as a fresh random draw that does not depend on μ
# and σ, so the gradient it reports is zero:

# %%
# NBVAL_CHECK_OUTPUT
mu.grad, sigma.grad = None, None
x = torch.normal(mu.expand(5), sigma.expand(5), generator=torch.Generator().manual_seed(1))
x.sum().backward()
print("samples x =", x.detach().numpy().round(4))
print(f"∂Σx/∂μ = {mu.grad.item():.4f},  ∂Σx/∂σ = {sigma.grad.item():.4f}")
assert mu.grad.item() == 0 and sigma.grad.item() == 0

# %% [markdown]
# No error, no warning: an optimiser would stand still. (`torch.distributions.Normal(mu, sigma)` offers
# both: `.sample()` is like `torch.normal`, and `.rsample()`, where *r* stands for *reparameterized*,
# is μ + σ·ε.)
#
# ## 2. Fitting μ and σ through samples
#
# Here is the trick doing real work. Someone hands us 1,000 numbers drawn from N(3, 0.5²); we do not
# know μ and σ. Our model is N(μ, σ²), starting at μ = 0, σ = 1, with σ stored as log σ so that it
# stays positive. At each step we draw 1,000 model samples x = μ + σ·ε and measure how far they are
# from the data.
#
# The distance: sort both sets and compare them in order, mean of (x₍ᵢ₎ − y₍ᵢ₎)². In one dimension,
# matching the i-th smallest with the i-th smallest is the optimal transport plan, so this is the
# squared 2-Wasserstein distance between the two samples. Sorting only permutes, so gradients pass
# through it, and then through x = μ + σ·ε to μ and σ.

# %% [markdown]
# ### Exercise: the loss that fits through samples
#
# Write `sample_loss(mu, log_sigma, eps, target)`. `mu` and `log_sigma` are the model's parameters,
# 0-d tensors that require gradients, with log_sigma = log σ; `eps` is an (n,) tensor of N(0, 1)
# noise and `target` the (n,) data, already sorted in ascending order. Build the n model samples from
# the given `eps`, sort them, and return the 0-d loss
#
# $$L(\mu, \log\sigma) = \frac{1}{n}\sum_{i=1}^{n}\big(x_{(i)} - y_{(i)}\big)^2, \qquad x = \mu + \sigma\,\varepsilon,\ \ \sigma = e^{\log\sigma},$$
#
# where x₍ᵢ₎ is the i-th smallest sample. Use torch operations only, so that autograd can carry the
# gradient back through the sort and the sample to `mu` and `log_sigma`. (Parameterizing by log σ keeps
# σ positive for any value an optimiser picks, which is why networks output log σ, or log σ², rather
# than σ.) The fit below calls your function once per step, with a fresh ε every time.

# %% nbgrader={"grade": false, "grade_id": "sample_loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sample_loss(mu, log_sigma, eps, target):
    ### BEGIN SOLUTION
    x = mu + log_sigma.exp() * eps                                # (n,) samples of N(μ, σ²), attached to μ and σ
    return (x.sort().values - target).square().mean()             # () W₂² between the sorted samples
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_sample_loss", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_sample_loss(sample_loss)
display(feedback)
### BEGIN HIDDEN TESTS
exercises.require(feedback)
gen_check = torch.Generator().manual_seed(2)             # also on 7 float64 samples, gradients included
mu_check = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
log_sigma_check = torch.tensor(-0.4, dtype=torch.float64, requires_grad=True)
eps_check = torch.randn(7, dtype=torch.float64, generator=gen_check)
target_check = (1.0 + torch.randn(7, dtype=torch.float64, generator=gen_check)).sort().values
loss_check = sample_loss(mu_check, log_sigma_check, eps_check, target_check)
x_check, order_check = (0.7 + math.exp(-0.4) * eps_check).sort()
assert loss_check.shape == () and torch.isclose(loss_check, (x_check - target_check).square().mean()), \
    "sample_loss is not the mean of (x₍ᵢ₎ − y₍ᵢ₎)² on 7 float64 samples"
grad_mu_check, grad_log_sigma_check = torch.autograd.grad(loss_check, [mu_check, log_sigma_check])
residual_check = 2 / 7 * (x_check - target_check)
assert torch.isclose(grad_mu_check, residual_check.sum()), "∂L/∂μ is not (2/n)·Σ(x₍ᵢ₎ − y₍ᵢ₎)"
assert torch.isclose(grad_log_sigma_check, (residual_check * math.exp(-0.4) * eps_check[order_check]).sum()), \
    "∂L/∂log σ is not (2/n)·Σ(x₍ᵢ₎ − y₍ᵢ₎)·σ·ε₍ᵢ₎"
### END HIDDEN TESTS

# %% [markdown]
# Now the fit: 300 steps of Adam on μ and log σ, each through 1,000 fresh model samples.

# %%
gen = torch.Generator().manual_seed(0)
target = (3.0 + 0.5 * torch.randn(1000, generator=gen)).sort().values      # the data, sorted once
mu = torch.tensor(0.0, requires_grad=True)
log_sigma = torch.tensor(0.0, requires_grad=True)                         # σ = exp(0) = 1
optimizer = torch.optim.Adam([mu, log_sigma], lr=0.05)
history = {"μ": [], "σ": []}
for step in range(300):
    loss = sample_loss(mu, log_sigma, torch.randn(1000, generator=gen), target)   # fresh ε every step
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    history["μ"].append(mu.item())
    history["σ"].append(log_sigma.exp().item())
print(f"after {step + 1} steps: μ = {mu.item():.2f}, σ = {log_sigma.exp().item():.2f}  (data: 3 and 0.5)")
assert abs(mu.item() - 3) < 0.1 and abs(log_sigma.exp().item() - 0.5) < 0.05

# %%
fig, (ax_fit, ax_hist) = plt.subplots(1, 2, figsize=(10, 3.2))
viz.plot_curves(history, xlabel="gradient step", title="μ and σ, learned through samples", ax=ax_fit)
for value in (3.0, 0.5):
    ax_fit.axhline(value, color="gray", ls="--", lw=0.8)
with torch.no_grad():
    fitted = mu + log_sigma.exp() * torch.randn(1000, generator=gen)
ax_hist.hist([target.numpy(), fitted.numpy()], bins=30, label=["data", "model samples"])
ax_hist.set(title="data vs fitted model", xlabel="x")
ax_hist.legend();

# %% [markdown]
# Both parameters walk to their targets (the dashed lines), and the model's samples match the data's
# histogram. Every step used new ε, so every gradient was a noisy estimate: this is stochastic
# gradient descent, exactly like a diffusion model's training, which draws a new ε for every image at
# every step. Build the samples inside `sample_loss` with
# `torch.normal(mu.expand(n), log_sigma.exp().expand(n))` instead of from `eps`, and nothing moves at
# all: the loss has the same distribution, but, as in section 1, its gradient with respect to μ and σ
# is zero.
#
# **Gradient check.** The sort only decides which data point each sample meets; since σ > 0, it orders
# x and ε alike, so write ε₍ᵢ₎ for the noise of the i-th smallest sample. Then x₍ᵢ₎ = μ + σ·ε₍ᵢ₎, and
# with ∂σ/∂log σ = σ the chain rule gives
#
# $$\frac{\partial L}{\partial\mu} = \frac{2}{n}\sum_i \big(x_{(i)} - y_{(i)}\big), \qquad \frac{\partial L}{\partial\log\sigma} = \frac{2}{n}\sum_i \big(x_{(i)} - y_{(i)}\big)\,\sigma\,\varepsilon_{(i)} .$$
#
# The first vanishes when the samples' mean matches the data's and, once it does, the second when their
# spreads match.
# Autograd, running through your function, must agree:

# %%
gen = torch.Generator().manual_seed(0)
mu = torch.tensor(0.3, requires_grad=True)
log_sigma = torch.tensor(-0.2, requires_grad=True)
eps, y = torch.randn(8, generator=gen), torch.randn(8, generator=gen).sort().values
grad_mu, grad_log_sigma = torch.autograd.grad(sample_loss(mu, log_sigma, eps, y), [mu, log_sigma])
sigma = log_sigma.detach().exp()
x_sorted, order = (mu.detach() + sigma * eps).sort()                      # order: the permutation of the sort
residual = 2 / len(eps) * (x_sorted - y)                                  # (8,) (2/n)·(x₍ᵢ₎ − y₍ᵢ₎)
assert torch.isclose(grad_mu, residual.sum(), atol=1e-6)
assert torch.isclose(grad_log_sigma, (residual * sigma * eps[order]).sum(), atol=1e-6)
print(f"autograd agrees with the chain rule: ∂L/∂μ = {grad_mu:.4f} = (2/n)·Σ(x₍ᵢ₎ − y₍ᵢ₎),  "
      f"∂L/∂log σ = {grad_log_sigma:.4f} = (2/n)·Σ(x₍ᵢ₎ − y₍ᵢ₎)·σ·ε₍ᵢ₎")

# %% [markdown]
# ## 3. Predicting ε reparameterizes the reverse step
#
# Lesson 01's closed form is itself a reparameterization: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (DiT §3.1).
# Read it backwards: knowing x_t and the ε that made it gives back the clean image,
#
# $$x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon}{\sqrt{\bar\alpha_t}} .$$
#
# To step back from x_t to x_{t−1}, the sampler needs the mean of q(x_{t−1} | x_t, x_0) (lesson 03
# derives it; DDPM Eq. 7):
#
# $$\tilde\mu_t = \frac{\beta_t\sqrt{\bar\alpha_{t-1}}}{1-\bar\alpha_t}\,x_0 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t .$$
#
# Put the first equation into the second. Since √ᾱ_{t−1}/√ᾱ_t = 1/√α_t, the coefficient of x_t
# becomes [β_t + α_t(1 − ᾱ_{t−1})] / [(1 − ᾱ_t)√α_t] = 1/√α_t (the bracket is 1 − ᾱ_t), and
# the coefficient of ε is −β_t / (√α_t √(1 − ᾱ_t)). So (DDPM Eq. 10)
#
# $$\tilde\mu_t = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\varepsilon\Big).$$
#
# The network never sees x_0 or ε. It *predicts* the noise, ε_θ(x_t, t), and the mean of the reverse
# step follows by plugging that prediction in (DDPM Eq. 11):
#
# $$\mu_\theta(x_t, t) = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\varepsilon_\theta(x_t, t)\Big).$$
#
# `ditlib` takes the two-step route instead: x̂_0 from ε̂ (`predict_xstart_from_eps`), then the posterior
# mean (`q_posterior_mean_variance`). Check on real images that both give the same mean, for the true ε
# and for an imperfect guess of it:

# %%
# NBVAL_CHECK_OUTPUT
diffusion = create_diffusion("")                                          # T = 1000, DiT's linear schedule
images, labels = FashionMNIST("test").examples(per_class=1, classes=[0, 1, 5, 7, 9])
x_start = images.double()                                                 # (5, 1, 32, 32), float64 for exactness
t = torch.tensor([1, 10, 100, 500, 999])                                  # one timestep per image
gen = torch.Generator().manual_seed(0)
eps = torch.randn(x_start.shape, generator=gen, dtype=torch.float64)
x_t = diffusion.q_sample(x_start, t, eps)
eps_guess = eps + 0.1 * torch.randn(x_start.shape, generator=gen, dtype=torch.float64)   # a stand-in for ε_θ

beta = diffusion.betas[t].view(-1, 1, 1, 1)                               # (5, 1, 1, 1)
abar = diffusion.alphas_cumprod[t].view(-1, 1, 1, 1)
mean_eq11 = (x_t - beta / (1 - abar).sqrt() * eps_guess) / (1 - beta).sqrt()
mean_ditlib = diffusion.q_posterior_mean_variance(diffusion.predict_xstart_from_eps(x_t, t, eps_guess), x_t, t)[0]
assert torch.allclose(mean_eq11, mean_ditlib, rtol=0, atol=1e-10)
true_mean = diffusion.q_posterior_mean_variance(x_start, x_t, t)[0]      # uses the real x_0
assert torch.allclose((x_t - beta / (1 - abar).sqrt() * eps) / (1 - beta).sqrt(), true_mean, atol=1e-10)
print("Eq. 11 = posterior mean of x̂_0(ε̂), for the true ε and for a guess, at t =", t.tolist())

# %% [markdown]
# ### Why predict ε and not x_0?
#
# On paper the targets are interchangeable: given x_t, any one of ε, x_0 and μ̃_t gives the other two, so
# a network could be trained to output any of them. DDPM and DiT predict ε, for three reasons.
#
# **1. One scale for every t.** The target ε ~ N(0, I) has unit variance at every noise level, and the
# input x_t keeps a bounded variance too (lesson 01). So one network with one unweighted loss serves all
# 1,000 timesteps. The other targets change scale with t. x_0 is nearly given away at t = 1 and nearly
# unguessable at t = T. μ̃_t is mostly x_t/√α_t; the part left for the network,
# β_t/(√α_t √(1 − ᾱ_t))·ε, is 0.6–2% of ε. The conversion factors show it. An error δ in ε̂ is an error
# √(1/ᾱ_t − 1)·δ in x̂_0 and β_t / √(α_t (1 − ᾱ_t))·δ in the step's mean. So a plain MSE on x_0, or on
# μ, is the ε-MSE reweighted by the squares of these factors:

# %%
# NBVAL_CHECK_OUTPUT
for step in (0, 10, 100, 500, 999):
    a_bar, b = diffusion.alphas_cumprod[step].item(), diffusion.betas[step].item()
    to_x0, to_mean = math.sqrt(1 / a_bar - 1), b / math.sqrt((1 - b) * (1 - a_bar))
    print(f"t = {step:3d}:  δ in ε moves x̂_0 by {to_x0:8.3f}·δ   and the step's mean by {to_mean:.4f}·δ")

# %% [markdown]
# Squared, the x̂_0 factor runs from 10⁻⁴ at t = 0 to 2.5·10⁴ at t = 999. An x_0 loss would put
# nearly all its weight on the noisiest steps, where no network can recover the image (an error of 0.1
# in ε is 16 in x̂_0 at t = 999), and almost none on the nearly clean ones. The mean's factor is tiny
# everywhere (at most 0.02, so 4·10⁻⁴ squared) and still moves threefold across t. DDPM tried x_0 too,
# and found it gave worse samples (Ho et al. 2020, §3.2). Here are the x̂_0 of the imperfect guess above
# (ε off by 0.1 per pixel), clipped to [−1, 1] as the sampler does:

# %%
x0_guess = diffusion.predict_xstart_from_eps(x_t, t, eps_guess).clamp(-1, 1)
viz.show_images(torch.cat([x_t, x0_guess]), nrow=5,
                titles=[f"x_t, t = {s}" for s in t.tolist()] + ["x̂_0 from ε̂"] * 5);

# %% [markdown]
# The same small error in ε̂ is invisible in x̂_0 at t = 1 and 10, adds visible noise at t = 500, and
# leaves nothing of the image at t = 999: measured as x_0, one ε-sized mistake changes size by four
# orders of magnitude across t.
#
# **2. ε is the score, up to a scale.** The noising kernel q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) has
# ∇ log q(x_t | x_0) = −(x_t − √ᾱ_t x_0)/(1 − ᾱ_t) = −ε/√(1 − ᾱ_t). Regressing on ε is therefore
# denoising score matching (Vincent 2011). Its best solution, the average ε given x_t, is the score of
# the noisy data distribution p_t, times a constant:
#
# $$\varepsilon_\theta(x_t, t) = -\sqrt{1-\bar\alpha_t}\;\nabla_{x_t}\log p_t(x_t).$$
#
# That links DDPM to the score-based models of Song & Ermon (2019). It is also what guidance works on
# (lesson 09): adding log-probabilities adds scores, so classifier-free guidance mixes two ε predictions.
#
# **3. It trained best.** DDPM ablated this very choice (Ho et al. 2020, Table 2, CIFAR-10). Predicting ε
# with the simple unweighted loss gave the best FID of the table, 3.17. Predicting μ̃ worked only with
# the true variational bound; with the unweighted MSE it did not train (the table marks it unstable).
# DiT keeps ε and this loss (§3.1), plus the bound's term for the learned Σ of lesson 03.
#
# ## 4. The same trick inside the VAE
#
# DiT does not denoise pixels: it denoises the latents of a VAE (DiT §3.1, lesson 04). The VAE encoder
# does not output one latent per image but a Gaussian q(z | x) = N(mean, std²), a `Posterior` in
# `ditlib.vae`. During the VAE's training the decoder must see a *sample* of it, and the reconstruction
# error must reach the encoder's mean and std. Same problem, same answer: `Posterior.sample` is the one
# line z = mean + std·ε (and `vae_loss` decodes `q.sample()`).
#
# Load the small VAE shipped with the course and encode the five images:

# %%
# NBVAL_CHECK_OUTPUT
codec = load_vae("fmnist-vae")
posterior = codec.encode(images)                                          # q(z|x) in the VAE's own units
print(codec)
print("mean", tuple(posterior.mean.shape), " std", tuple(posterior.std.shape))

# %% [markdown]
# Sample by hand with the same generator that `Posterior.sample` uses: the result is identical, bit for bit.

# %%
eps = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(0))
z_by_hand = posterior.mean + posterior.std * eps                          # (5, 4, 8, 8)
z_ditlib = posterior.sample(torch.Generator().manual_seed(0))
assert torch.equal(z_by_hand, z_ditlib)
print(f"z = mean + std·ε reproduces Posterior.sample; typical |mean| = {posterior.mean.abs().mean():.2f}, "
      f"typical std = {posterior.std.mean():.3f}")

# %% [markdown]
# The std is about 1% of the mean: this encoder is almost certain. (Its training weights the KL term
# by only 10⁻⁴, and LDM's autoencoders use even less, so little pulls q(z|x) toward a wide N(0, I).) Decode a few samples to see
# the spread: columns 3–4 are honest samples, columns 5–6 stretch the noise 30× to show in which
# directions the encoder is unsure.

# %%
gen = torch.Generator().manual_seed(1)
columns = [images, codec.decode(posterior.mean * codec.scale_factor)]
for stretch in (1, 1, 30, 30):
    z = posterior.mean + stretch * posterior.std * torch.randn(posterior.mean.shape, generator=gen)
    columns.append(codec.decode(z * codec.scale_factor))                  # decode expects scaled latents
grid = torch.stack(columns, dim=1).reshape(-1, 1, 32, 32)                  # rows: images, columns: variants
print(f"pixel spread of two honest samples: {(columns[2] - columns[3]).abs().mean():.4f} (one gray level = {2 / 255:.4f})")
viz.show_images(grid, nrow=6, titles=["image", "decode(mean)", "sample", "sample", "mean + 30·std·ε", "mean + 30·std·ε"]
                + [""] * (len(grid) - 6));

# %% [markdown]
# Honest samples decode to the same picture, to well under one gray level. So for DiT the latent of an
# image is, in practice, its posterior mean plus a whisper of noise; the variety in DiT's *generated*
# images comes from the diffusion, not from the VAE.

# %% [markdown]
# ## Summary
#
# - A Gaussian sample written as x = μ + σ·ε is a differentiable function of μ and σ; the randomness
#   is isolated in ε. `torch.normal` gives the same numbers but a zero gradient.
# - With it, parameters can be fitted by gradient descent through samples. Your `sample_loss`, the
#   squared 2-Wasserstein distance between sorted samples, fits a 1-D Gaussian to data; its gradients
#   are the chain rule's (2/n)·Σ(x₍ᵢ₎ − y₍ᵢ₎) for μ and (2/n)·Σ(x₍ᵢ₎ − y₍ᵢ₎)·σ·ε₍ᵢ₎ for log σ.
# - DiT's forward process is this trick, and "predict the noise" reparameterizes the reverse mean:
#   μ_θ = (x_t − β_t/√(1 − ᾱ_t)·ε_θ)/√α_t (DDPM Eq. 11). ε is the better target: unit variance at
#   every t, the score up to a scale, and the best FID in DDPM's ablation.
# - The VAE encoder samples its latents the same way, z = mean + std·ε; for the shipped VAE the std is
#   so small that a latent is essentially its mean.
#
# **More to try.** Fit μ and σ to a *bimodal* target (half the points from N(−2, 0.3²), half from
# N(2, 0.3²)). What does the best single Gaussian look like under the sorted-sample loss? Rerun the fit
# with 20 model samples per step instead of 1,000 (compared with 20 quantiles of the data,
# `target[25::50]`): how does the wobble of the curves change?
#
# **Next:** [03 · The reverse process and the loss](03_reverse_process_and_loss.ipynb): the posterior
# q(x_{t−1} | x_t, x_0) in full, the ε-MSE loss, DiT's learned variance, and a sampler written by hand.
