# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Training a DiT: the whole loop in view
#
# Every piece is in place: the forward process (01), the loss (03), the latents (04), the tokens (05) and
# the conditioning (06). This lesson writes the training loop out in one screen, checks that it does exactly
# what `ditlib.train` does, trains a latent DiT while you watch the loss and the samples, and stops and
# resumes a run without changing a single weight.
#
# **Learning objectives.** After this lesson you can
# 1. write DiT's training step from memory: data → latents → (t, ε) → hybrid loss → AdamW → EMA;
# 2. explain each hyper-parameter of the recipe and why the course's short runs change a few of them;
# 3. read a loss curve and a strip of samples taken during training;
# 4. checkpoint a run and resume it so that it equals an uninterrupted one, bit for bit.
#
# **Paper.** DiT §4 *Training*: AdamW with a constant learning rate of 1 × 10⁻⁴, no weight decay, batch 256,
# random horizontal flips as the only augmentation, an EMA of the weights with decay 0.9999 (the EMA model is
# the one evaluated); §4 *Diffusion*: the diffusion hyper-parameters of ADM (linear β, T = 1000, learned Σ as
# in §3.1) and latents from the Stable Diffusion VAE (§3.1 *Latent diffusion models*), which the official code
# scales by 0.18215.
#
# *Quick mode* (`DITLIB_QUICK=1`) trains on 256 encoded images for a few steps; the full run trains for 1,200
# steps on all 60,000 (a couple of minutes on a 2-core CPU).

# %%
import copy
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import clear_output, display

from ditlib.checkpoints import load_checkpoint
from ditlib.configs import TRAIN_CONFIGS
from ditlib.course import exercises, inspect_model, viz, widgets
from ditlib.data import FashionMNIST, infinite_batches
from ditlib.diffusion import create_diffusion
from ditlib.latents import LatentDataset, build_latent_dataset, encode_dataset
from ditlib.models import DiT
from ditlib.runtime import autocast, pick, seed_everything
from ditlib.sample import Pretrained, load_model, sample_images
from ditlib.train import ema_decay_at, list_checkpoints, lr_at, read_log, train, update_ema
from ditlib.vae import load_vae

# %% [markdown]
# ## 1. The recipe
#
# The course trains the paper's model and diffusion at a small scale. `fmnist-latent-DiT-T/2`, the course's
# default, is a 6-block, width-192 DiT on the 8×8×4 latents of the shipped Fashion-MNIST VAE (16 tokens). Compared
# with §4 it uses a smaller batch and, because it trains for thousands rather than millions of steps, a larger
# learning rate with a short warm-up and a cosine decay, gradient clipping, an EMA whose decay warms up, and
# min-SNR-γ weighting of the ε loss (Hang et al. 2023). Its argument: the steps t are many denoising tasks whose
# gradients conflict, and in ε-prediction ‖ε − ε̂‖² = SNR_t · ‖x₀ − x̂₀‖², so the low-noise steps (large SNR_t)
# weight their error on the clean image the most, although it matters least to the samples; min-SNR caps that
# effective weight at γ by giving those steps the weight min(SNR_t, γ)/SNR_t < 1 (the others keep 1). Each of these was measured on this data (`experiments/results/latent_dit/`); the
# paper's own optimisation is the config `fmnist-latent-DiT-T/2-paper`.

# %%
# NBVAL_CHECK_OUTPUT
config = TRAIN_CONFIGS["fmnist-latent-DiT-T/2"]
for field in ("model", "block", "vae", "image_size", "in_channels", "batch_size", "lr", "weight_decay",
              "warmup_steps", "lr_schedule", "final_lr_ratio", "grad_clip", "min_snr_gamma", "ema_decay",
              "ema_warmup", "hflip", "class_dropout_prob", "learn_sigma", "precision", "max_steps"):
    print(f"{field:18s} {getattr(config, field)!r}")

# %% [markdown]
# The data are latents: for every image (and its mirror image, for the flips) the cache of lesson 04 stores the
# VAE posterior N(μ, σ²), and every draw is a fresh z = scale_factor·(μ + σ·ε). The full cache is built on first use
# (a few minutes) and then read from disk; quick mode encodes 256 images.

# %%
codec = load_vae("fmnist-vae")
if pick(full=True, quick=False):
    latents = build_latent_dataset(codec, progress=False)
else:
    subset = torch.utils.data.Subset(FashionMNIST("train"), range(256))
    latents = LatentDataset(**encode_dataset(codec, subset, progress=False), scale_factor=codec.scale_factor,
                            num_classes=10)
print(latents)

# %% [markdown]
# ## 2. The loop, by hand
#
# One step, in the order of §4:
#
# 1. a batch (z, y) of latents and labels, flipped at random;
# 2. t ~ U{0, …, 999} and ε ~ N(0, I) per sample, and a random 10% of the labels replaced by ∅ (lesson 06);
# 3. the hybrid loss w_t·L_simple + L_vlb at x_t = √ᾱ_t z + √(1 − ᾱ_t) ε (lesson 03, `training_losses`; w_t = 1
#    in the paper, min(SNR_t, γ)/SNR_t with min-SNR weighting);
# 4. an AdamW step (at the step's learning rate: warm-up, then the cosine; after gradient clipping);
# 5. the EMA, θ_ema ← d·θ_ema + (1 − d)·θ.
#
# That is all of it:

# %%
def train_by_hand(config, dataset, num_steps, callback=None, every=1):
    seed_everything(config.seed)
    model = DiT(config.dit_config()).train()
    ema = copy.deepcopy(model).requires_grad_(False).eval()             # the weights we sample from
    diffusion = create_diffusion("", learn_sigma=config.learn_sigma)     # T = 1000, linear β
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batches = infinite_batches(dataset, config.batch_size, seed=config.seed, hflip=config.hflip)
    model_fn = lambda x, t, **kw: model(x, t, **kw).float()             # noqa: E731
    losses = []
    for step in range(num_steps):
        z, y = next(batches)                                             # (B, 4, 8, 8) fresh latents, (B,) labels
        t = torch.randint(0, diffusion.num_timesteps, (len(z),))         # t ~ U{0, …, T−1}
        noise = torch.randn_like(z)                                      # ε ~ N(0, I)
        drop = torch.rand(len(z)) < config.class_dropout_prob            # y -> ∅ for guidance
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, step)                            # warm-up, then the schedule
        with autocast(torch.device("cpu"), config.precision):
            terms = diffusion.training_losses(model_fn, z, t, {"y": y, "force_drop_ids": drop}, noise,
                                              min_snr_gamma=config.min_snr_gamma)
        loss = terms["loss"].mean()                                      # w_t·L_simple + L_vlb
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        update_ema(ema, model, ema_decay_at(config, step))               # θ_ema ← d·θ_ema + (1 − d)·θ
        losses.append(loss.item())
        if callback is not None and (step + 1) % every == 0:
            callback(step + 1, losses, ema)
    return model, ema, losses


# %% [markdown]
# ## 3. Is it really the same loop?
#
# `ditlib.train.train` is this loop plus logging, checkpoints, mixed-precision switches and many processes.
# Both seed the same way and draw t, ε and the dropped labels in the same order, so a few steps of each from
# the same seed must give the same losses and the same EMA weights. (`train` also saves a `loss.png` with
# matplotlib's Agg backend; `%matplotlib inline` switches this notebook's plots back on.)

# %%
check_steps = 3
_, ema_hand, losses_hand = train_by_hand(config, latents, check_steps)
with tempfile.TemporaryDirectory() as tmp:
    train(config.replace(log_every=1), tmp, max_steps=check_steps, dataset=latents, progress=False)
    losses_lib = [row["loss"] for row in read_log(tmp)]
    ema_lib, _ = load_model(Path(tmp) / "final")                        # final = the EMA weights
# %matplotlib inline
assert torch.allclose(torch.tensor(losses_hand), torch.tensor(losses_lib), rtol=1e-5)
worst = max((a - b).abs().max().item() for a, b in zip(ema_hand.state_dict().values(), ema_lib.state_dict().values()))
assert worst < 1e-5, worst
print(f"losses by hand {[round(v, 4) for v in losses_hand]} = ditlib.train; EMA weights agree (max diff {worst:.1e})")

# %% [markdown]
# ## 4. Train, and watch
#
# Now for real. The callback redraws the loss curve in place every few steps and, now and then, samples one
# image of each class from the EMA weights (20 DDIM steps, guidance 2, decoded by the VAE) so you can watch
# when the clothes take shape. Early on the EMA lags far behind the raw weights; its warm-up (d = (1 + k)/(10 + k)) keeps the
# lag short. This short run gets its own cosine: `max_steps` is set to its length, so the learning rate has decayed
# by the last step as it would at the end of the full 6,000.

# %%
num_steps, redraw_every, sample_every = pick(1200, 8), pick(25, 4), pick(300, 4)
short = config.replace(max_steps=num_steps)
classes = torch.arange(10)
snapshots = {}


def watch(step, losses, ema):
    if step % sample_every == 0:
        z = sample_images(ema, classes, num_sampling_steps=20, sampler="ddim", cfg_scale=2.0, clip_denoised=False,
                          progress=False)
        with torch.no_grad():
            snapshots[step] = codec.decode(z).clamp(-1, 1)
    clear_output(wait=True)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(range(1, step + 1), losses, lw=0.6, alpha=0.5, label="loss per step")
    window = min(25, step)
    smooth = torch.tensor(losses).unfold(0, window, 1).mean(1)
    ax.plot(range(window, step + 1), smooth, label=f"mean of {window}")
    ax.set(xlabel="step", ylabel="w_t·L_simple + L_vlb", yscale="log", title=f"step {step} / {num_steps}")
    ax.legend()
    display(fig)
    plt.close(fig)


model, ema, losses = train_by_hand(short, latents, num_steps, callback=watch, every=redraw_every)

# %% [markdown]
# The loss sits near 1 for the first few dozen steps: the adaLN-Zero model starts by predicting ε = 0, whose
# squared error is the variance of ε, and the learning rate is still warming up. Then, from about step 50, it
# falls from about 0.9 to about 0.1 within a hundred steps (the model learns the rough shape of the noise), and
# only slowly after that, from about 0.08 at step 200 to about 0.05 at the end. It stays noisy because
# every batch has different t, and the loss differs a lot between small and large t. The samples tell the real
# story, one row per snapshot (20 DDIM steps: a rough look; section 6 samples properly). In the stored run the
# first row (step 300) is formless blobs, and at step 600 only the trousers and the long-sleeved shapes
# (pullover, dress, coat, shirt) have begun; by step 900 those have their outlines and the sneaker appears, while
# the T-shirt and the bag are still lumpy, the sandal a sketch of straps and the ankle boot vague. The last row
# differs little from the one before as the learning rate decays: 1,200 steps draw rough clothes, not clean ones.

# %%
viz.show_images(torch.cat(list(snapshots.values())), nrow=10, size=0.9,
                title="EMA samples at steps " + ", ".join(map(str, snapshots)));

# %% [markdown]
# **Where the noise in the loss curve comes from.** The same trained EMA weights, the same latents (the first 16
# of the 64 below) and the same ε in every bin, with only t changed: the loss terms of `training_losses`,
# averaged in ten bins of t (each dot is one latent at one t):

# %%
z_probe, y_probe = latents.get_batch(torch.arange(64), generator=torch.Generator().manual_seed(0))
by_t = inspect_model.loss_by_t(ema, create_diffusion(""), z_probe, y_probe, num_bins=10)
inspect_model.plot_loss_by_t(by_t);

# %% [markdown]
# The ε error spans more than three orders of magnitude across t: largest at small t, where the little noise
# there is must be told apart from the image's own detail, and nearly zero at large t, where x_t is almost
# pure noise and ε ≈ x_t. The vb term matters only in the first bin (the decoder term at t = 0 and the
# variance of the first steps). This is the picture behind min-SNR (section 1): the low-noise steps have the
# largest ε error, and measured on the clean image their error is weighted by SNR_t, so left alone they would
# dominate the loss. The plot shows the unweighted ‖ε − ε̂‖²; the curve above trains on w_t times it, and
# w_t = min(SNR_t, γ)/SNR_t is below 1 only in the first bin or so (t below about 130, down to 5 × 10⁻⁴ at
# t = 0). Even so, the small t carry most of the loss, and a batch of 64 draws its t uniformly, so how many
# small t it happens to get moves its mean loss by a good fraction of itself: that, not the optimisation, is
# the noise in the curve above.

# %% [markdown]
# **What γ and the schedule do, to play with.** The figure below reweights the errors just measured for the
# paper's equal weighting and for the recipe's γ. Left, against t on a log scale: the weight on the ε error,
# min(SNR_t, γ)/SNR_t (solid), and the weight this leaves on the error of x̂₀, min(SNR_t, γ) (dashed); unweighted,
# that second weight is SNR_t itself. Right: each bin's share of the training loss w_t·mse + vb, the legend giving
# the first bin's. The widget after it lets you pick γ (off, 1, 2, 5, 10, 20), which the figure cannot. Lower γ
# and the cap reaches further into larger t (the solid line stays below 1 longer), and the share moves from the
# low-noise bins to those the cap does not reach; raise it and the weighted case closes in on the unweighted one.
# The shares reweight *this* model's errors: a model trained with another γ would have errors of its own, so read
# them as where the loss puts its weight, not as the outcome of another run. The widget's third panel is the
# learning rate of every step, `lr_at` for the recipe's 6,000 steps (the run above fitted the same cosine into its
# own length): switch to `constant` and the warm-up to 0 for the paper's shape of schedule (at the recipe's lr,
# not the paper's 10⁻⁴), and move the warm-up to see how long the first steps stay small.

# %%
widgets.plot_min_snr(by_t, create_diffusion(""), gammas=(None, config.min_snr_gamma));

# %%
widgets.min_snr_explorer(by_t, create_diffusion(""), steps=config.max_steps, warmup_steps=config.warmup_steps,
                         lr=config.lr, final_lr_ratio=config.final_lr_ratio, gamma=config.min_snr_gamma,
                         schedule=config.lr_schedule)

# %% [markdown]
# ## 5. Checkpoints and exact resume
#
# A long run will be interrupted. `ditlib.train` saves the model, the EMA, AdamW's moments and the random
# state every `ckpt_every` steps; the data stream depends only on (seed, step). So a run stopped at step N
# and resumed should be *identical* to one that never stopped. Test it: N steps, stop, resume to 2N, and
# compare with 2N steps in one go.

# %%
N = pick(10, 2)
with tempfile.TemporaryDirectory() as tmp:
    stopped, straight = Path(tmp) / "stopped", Path(tmp) / "straight"
    train(config.replace(log_every=1), stopped, max_steps=N, dataset=latents, progress=False)
    print("after the first run:", [p.name for p in list_checkpoints(stopped)])
    train(config.replace(log_every=1), stopped, max_steps=2 * N, dataset=latents, progress=False, resume=True)
    train(config.replace(log_every=1), straight, max_steps=2 * N, dataset=latents, progress=False)
    resumed, _ = load_checkpoint(list_checkpoints(stopped)[-1])
    uninterrupted, _ = load_checkpoint(list_checkpoints(straight)[-1])
    same_log = [r["loss"] for r in read_log(stopped)] == [r["loss"] for r in read_log(straight)]
# %matplotlib inline
assert resumed.keys() == uninterrupted.keys() and same_log
assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
print(f"resumed at step {N} and ran to {2 * N}: all {len(resumed)} tensors (model, EMA, AdamW, RNG) equal "
      "the uninterrupted run's, and so does every logged loss")

# %% [markdown]
# On the command line the same is `python -m ditlib train --config fmnist-latent-DiT-T/2 --out runs/me` and,
# after an interruption (Ctrl-C saves a checkpoint too), the same command with `--resume`.
#
# ## 6. Our run against the shipped model
#
# The shipped `fmnist-latent-DiT-T-2` is this very config trained for its full 6,000 steps (its manifest has the
# command, the time and the machine). Same labels, same seed, same sampler (250 DDPM steps, guidance 2):

# %%
shipped = Pretrained.load("fmnist-latent-DiT-T-2", device="cpu")
steps_shipped = shipped.meta.get("step", shipped.train_config["max_steps"])
ours = Pretrained(ema, {"train_config": config.to_dict()}, codec)
grids = [p.sample(classes, num_sampling_steps=pick(250, 10), cfg_scale=2.0, seed=1, progress=False)
         for p in (ours, shipped)]
viz.show_images(torch.cat(grids), nrow=10, size=0.9,
                title=f"top: ours after {num_steps} steps · bottom: shipped after {steps_shipped} steps");

# %% [markdown]
# With 250 DDPM steps, ours after 1,200 steps (a fifth of the shipped run, a couple of minutes on a 2-core CPU) draws
# the trousers, the pullover, the coat and the shirt recognisably but coarsely. The rest are not there yet: its
# T-shirt has long sleeves, its dress splits into two legs like shorts, its sandal and sneaker are flat smears,
# its bag is a box without a handle and its ankle boot is a low shoe. The shipped model's 6,000 steps draw every
# class, cleaner and more detailed. Lesson 08 puts a number on "clean" (FID) and lesson 10 on what more compute buys;
# `docs/results.md` plots FID against training minutes for the default.
#
# ## 7. Exercise: the training step
#
# Write the paper's step yourself, the five lines of ideas of section 2 for one batch, as
# `train_step(model, ema, optimizer, diffusion, x, y, t, noise, drop, ema_decay)`. The randomness comes in as
# arguments so that the check can replay it: `t` (B,) timesteps, `noise` like `x`, and `drop`, a bool (B,)
# mask that is True where the label becomes the null class. Then:
#
# 1. the hybrid loss with the labels dropped where `drop` says: `diffusion.training_losses(model, x, t,
#    model_kwargs={"y": y, "force_drop_ids": drop}, noise=noise)["loss"]`, averaged over the batch;
# 2. `optimizer.zero_grad()`, `loss.backward()`, `optimizer.step()`;
# 3. last, the EMA: θ_ema ← d·θ_ema + (1 − d)·θ with d = `ema_decay` (`update_ema(ema, model, ema_decay)`
#    or a loop over the parameters);
#
# and return the loss. The check replays your step against its own on identical copies and names the usual
# slips: labels never dropped, the EMA updated before the optimiser step or with d and 1 − d swapped, stale
# gradients from a missing `zero_grad`, a summed instead of averaged loss.

# %% nbgrader={"grade": false, "grade_id": "train_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def train_step(model, ema, optimizer, diffusion, x, y, t, noise, drop, ema_decay):
    ### BEGIN SOLUTION
    terms = diffusion.training_losses(model, x, t, model_kwargs={"y": y, "force_drop_ids": drop}, noise=noise)
    loss = terms["loss"].mean()                                          # L_simple + L_vlb, over the batch
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    update_ema(ema, model, ema_decay)                                    # after the step: the new weights
    return loss
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_train_step", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_train_step(train_step)
display(feedback)
### BEGIN HIDDEN TESTS
_ = exercises.require(feedback)                          # AssertionError with the message if it failed
### END HIDDEN TESTS

# %% [markdown]
# Your step, from the trained model of section 4, on a real batch of latents: a copy of the model takes three
# steps through your function and another through the same lines written in ditlib's style; the losses agree.

# %%
diffusion = create_diffusion("")
copies = [copy.deepcopy(model) for _ in range(2)]
emas = [copy.deepcopy(ema) for _ in range(2)]
optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-4) for m in copies]
gen = torch.Generator().manual_seed(0)
for step in range(3):
    z, y = latents.get_batch(torch.arange(16) + 16 * step, generator=gen)      # (16, 4, 8, 8), (16,)
    t, noise = torch.randint(0, 1000, (16,), generator=gen), torch.randn(z.shape, generator=gen)
    drop = torch.rand(16, generator=gen) < 0.1
    yours = torch.as_tensor(train_step(copies[0], emas[0], optimizers[0], diffusion, z, y, t, noise, drop, 0.999))
    yours = yours.detach().item()
    terms = diffusion.training_losses(copies[1], z, t, {"y": y, "force_drop_ids": drop}, noise)
    reference = terms["loss"].mean()
    optimizers[1].zero_grad(); reference.backward(); optimizers[1].step(); update_ema(emas[1], copies[1], 0.999)
    print(f"step {step + 1}: your loss {yours:.5f}, ditlib's {reference.item():.5f}")

# %% [markdown]
# ## Summary
#
# - A DiT training step is five lines of ideas: latents, (t, ε, dropped labels), the hybrid loss, AdamW, EMA.
#   `ditlib.train` adds logging, checkpoints and scale, and computes the same numbers.
# - The paper's recipe is deliberately plain (constant lr, no weight decay, flips only). The course's short
#   CPU runs change the optimisation: a smaller batch (64), a larger learning rate (7 × 10⁻⁴) with a warm-up
#   and a cosine decay, gradient clipping, a shorter EMA (0.999) with a warm-up, and min-SNR-γ weighting,
#   which changes the loss itself (w_t·L_simple + L_vlb instead of L_simple + L_vlb). The model and the
#   diffusion process stay the paper's.
# - Sample during training: the loss curve flattens after its first hundred steps while the samples keep
#   improving for hundreds more.
# - A checkpoint that holds the model, EMA, optimiser and RNG state, plus a data stream indexed by step, makes
#   resuming exact.
#
# **More to try.** Set `ema_warmup=False` (`config.replace(...)`) and sample from the EMA after 200 steps:
# with d = 0.999 from the start the EMA still remembers the random initialisation. Try `lr=1e-4`, the paper's.
#
# **Next:** [08 · Sampling](08_sampling.ipynb): 1000, 250 or 50 steps, DDPM or DDIM, and a fast solver from
# diffusers — how many steps do you need, and what do they cost?
