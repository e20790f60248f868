"""Checks of the diffusion lessons 01–03: q_sample, the loss that fits μ and σ through reparameterized samples
(W₂² between sorted samples), the posterior q(x_{t−1} | x_t, x_0), and the hybrid loss
(lessons 07 and 08 check q_sample and the posterior again). The posterior's and the loss's checks refuse a
function that gets them from ditlib's GaussianDiffusion (`call_refusing`)."""
from __future__ import annotations

import math

import numpy as np
import torch

from .feedback import (Problem, as_tensor, call, call_refusing, exercise, expect_finite, expect_shape, expect_values,
                       is_close, randn)

__all__ = ["check_q_sample", "check_sample_loss", "check_posterior_mean_variance", "check_hybrid_loss"]


def _linear_betas(T: int = 1000) -> torch.Tensor:   # DDPM's linear schedule, float64
    return torch.linspace(1e-4, 0.02, T, dtype=torch.float64)


def _short_betas(T: int = 10) -> torch.Tensor:      # a short schedule with large, well-separated values
    return torch.linspace(0.05, 0.4, T, dtype=torch.float64)


_BROADCAST_MSG = ("It looks like ᾱ_t broadcast along the last (width) dimension instead of the batch: reshape "
                  "alphas_cumprod[t] to (B, 1, 1, 1), e.g. with .view(-1, 1, 1, 1), before multiplying.")

#################################################################################
#                Lesson 01: q_sample, x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε                #
#################################################################################

_Q_HINTS = {
    "broadcast": "alphas_cumprod[t] has shape (B,), so reshape it to (B, 1, 1, 1) to broadcast over the images",
    "IndexError": "index alphas_cumprod with t itself; valid timesteps are 0 … T−1",
    "TypeError": "check the signature q_sample(x_start, t, noise, alphas_cumprod) and use torch operations",
    "default": "check your implementation of x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε",
}


@exercise("q_sample")
def check_q_sample(fn) -> str:
    ab_long, ab_short = torch.cumprod(1 - _linear_betas(), 0), torch.cumprod(1 - _short_betas(), 0)
    cases = [  # (B, C, H, W), t, alphas_cumprod, x dtype, description
        ((4, 3, 5, 4), [10, 500, 250, 999], ab_long, torch.float32, "a batch of 4 images of shape 3×5×4"),
        ((1, 1, 6, 6), [0], ab_long, torch.float32, "a batch of 1 at t = 0"),
        ((2, 4, 4, 6), [999, 0], ab_long.float(), torch.float32, "t = T−1 and t = 0 with float32 alphas_cumprod"),
        ((3, 2, 3, 3), [1, 5, 9], ab_short, torch.float64, "float64 images"),
        ((2, 3, 7, 2), [9, 4], ab_short.float(), torch.float32, "a batch of 2 images of width 2"),
    ]
    g = torch.Generator().manual_seed(1)
    for shape, t_list, ab, dtype, case in cases:
        x, noise, t = randn(g, shape, dtype), randn(g, shape, dtype), torch.tensor(t_list)
        args = lambda: (x.clone(), t.clone(), noise.clone(), ab.clone())  # noqa: E731
        out = as_tensor(call(fn, args(), _Q_HINTS))
        expect_shape(out, shape, hint=" (the same shape as x_start) — reshape ᾱ_t to (B, 1, 1, 1) before multiplying")
        expect_finite(out)
        x64, n64, a = x.double(), noise.double(), ab.double()[t].view(-1, 1, 1, 1)
        wrap = lambda a: a.sqrt() * x64 + (1 - a).sqrt() * n64  # noqa: E731
        variants = [
            (a * x64 + (1 - a) * n64, "It looks like you forgot the square roots: the coefficients are √ᾱ_t and "
                                      "√(1−ᾱ_t), not ᾱ_t and 1−ᾱ_t (DDPM Eq. 4)."),
            (a * x64 + (1 - a).sqrt() * n64, "Close, but it looks like you used ᾱ_t instead of √ᾱ_t (forgot the "
                                             "square root): the mean of q(x_t|x_0) is √ᾱ_t·x_0 (DDPM Eq. 4)."),
            (a.sqrt() * x64 + (1 - a) * n64, "Close, but the noise is scaled by the variance 1−ᾱ_t instead of the "
                                             "standard deviation √(1−ᾱ_t) — you forgot the square root."),
            ((1 - a).sqrt() * x64 + a.sqrt() * n64, "The coefficients are swapped: x_0 is scaled by √ᾱ_t and the "
                                                    "noise by √(1−ᾱ_t), so that x_t ≈ x_0 at small t."),
            (a.sqrt() * x64 - (1 - a).sqrt() * n64, "Check the sign: x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε adds the noise "
                                                    "rather than subtracting it."),
            (wrap(ab.double()[t - 1].view(-1, 1, 1, 1)), "Your ᾱ is off by one timestep: index alphas_cumprod "
                                                         "with t itself (timesteps are 0-based, alphas_cumprod[t] is ᾱ_t)."),
            (wrap(ab.double()[(t + 1).clamp(max=len(ab) - 1)].view(-1, 1, 1, 1)),
             "Your ᾱ is off by one timestep: index alphas_cumprod with t itself (timesteps are 0-based, "
             "alphas_cumprod[t] is ᾱ_t)."),
            (wrap(ab.double()[t].view(1, 1, 1, -1)) if shape[3] == shape[0] > 1 else None, _BROADCAST_MSG),
        ]
        expect_values(out, wrap(a), variants, atol=1e-5, rtol=1e-4, case=case, formula="√ᾱ_t·x₀ + √(1−ᾱ_t)·ε",
                      rerun=lambda: as_tensor(call(fn, args(), _Q_HINTS)),
                      random_msg="Your output changes between two calls with the same inputs — use the `noise` "
                           "argument instead of drawing new noise with torch.randn.")
        if out.dtype != x.dtype:
            raise Problem(f"Your values are right, but the output is {out.dtype} while x_start is {x.dtype} — "
                          f"cast the coefficients with .to(x_start.dtype) so the output keeps x_start's dtype.")
    return f"q_sample matches √ᾱ_t·x₀ + √(1−ᾱ_t)·ε on {len(cases)} test cases."

#################################################################################
#   Lesson 02: fitting μ and σ through samples, W₂² between sorted samples      #
#################################################################################

_S_HINTS = {"TypeError": "check the signature sample_loss(mu, log_sigma, eps, target) and use torch operations",
            "default": "build x = mu + exp(log_sigma)·eps with torch operations, then return the mean of "
                       "(x.sort().values − target)²"}


def _w2(mu, log_sigma, eps, target, sigma=torch.exp, sort=True, reduce=torch.mean, root=False):
    """W₂² between the sorted samples μ + σ·ε and the target; the keyword arguments build known-wrong variants."""
    x = mu + sigma(log_sigma) * eps
    loss = reduce(((x.sort().values if sort else x) - target).square())
    return loss.sqrt() if root else loss


@exercise("sample_loss")
def check_sample_loss(fn) -> str:
    cases = [(8, 0.5, -0.3, torch.float32, "8 samples"), (1, -1.0, 0.4, torch.float32, "a single sample"),
             (5, 2.0, -1.2, torch.float64, "5 float64 samples"), (64, -0.7, 0.9, torch.float32, "64 samples")]
    g = torch.Generator().manual_seed(2)
    for n, mu0, ls0, dtype, case in cases:
        eps, target = randn(g, (n,), dtype), (randn(g, (n,), dtype) * 0.8 + 1.5).sort().values
        args = lambda: (torch.tensor(mu0, dtype=dtype, requires_grad=True),  # noqa: E731
                        torch.tensor(ls0, dtype=dtype, requires_grad=True), eps.clone(), target.clone())
        out = call(fn, inputs := args(), _S_HINTS)
        if isinstance(out, (float, int)) and not isinstance(out, bool):
            raise Problem("Your function returned a Python number — return the 0-d tensor itself (no .item()), so "
                          "that the gradient can reach μ and σ.")
        out = as_tensor(out)
        expect_shape(out, (), [((n,), f"Your loss has one value per sample, shape ({n},): return their mean over i, "
                                      f"one 0-d tensor.")] if n > 1 else (), "loss", " (one number, a 0-d tensor)")
        expect_finite(out, "loss")
        m, s = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (mu0, ls0))
        ref, e, y = _w2(m, s, eps.double(), target.double()), eps.double(), target.double()
        with torch.no_grad():
            variants = [
                (_w2(m, s, e, y, sort=False), "It looks like you compared x with the target without sorting x: sort "
                                              "the samples (x.sort().values) so that the i-th smallest meets the "
                                              "i-th smallest data point."),
                (_w2(m, s, e, y, sigma=lambda v: v), "You used log_sigma itself as σ — exponentiate it first: "
                                                     "σ = exp(log_sigma), x = μ + σ·ε."),
                (_w2(m, s, e, y, sigma=lambda v: (2 * v).exp()),
                 "It looks like you used the variance σ² = exp(2·log_sigma) instead of σ = exp(log_sigma)."),
                (_w2(m, s, e, y, sigma=lambda v: (v / 2).exp()), "It looks like you treated log_sigma as a log-"
                 "variance (σ = exp(log_sigma/2)) — here it is log σ, so σ = exp(log_sigma)."),
                (_w2(m, s, e, y, reduce=torch.sum), "You summed the squared differences: W₂² between two samples "
                                                    "is their mean over i, so divide by n (use .mean())."),
                (_w2(m, s, e, y, root=True), "You returned W₂, the square root: the loss is the squared distance "
                                             "W₂², the mean of (x₍ᵢ₎ − y₍ᵢ₎)² without the square root."),
            ]
            expect_values(out, ref.detach(), variants, atol=1e-5, rtol=1e-4, case=case, name="loss",
                          formula="the mean over i of (x₍ᵢ₎ − y₍ᵢ₎)², with x = μ + exp(log_sigma)·ε sorted",
                          rerun=lambda: as_tensor(call(fn, args(), _S_HINTS)),
                          random_msg="Your loss changes between two calls with the same inputs — build the samples "
                                     "from the given `eps`, x = μ + exp(log_sigma)·ε, instead of drawing new ones "
                                     "with torch.normal or torch.randn_like.")
        grads = torch.autograd.grad(out, inputs[:2], allow_unused=True) if out.requires_grad else (None, None)
        lost = [name for name, grad in zip(("μ", "σ"), grads) if grad is None or not bool(grad.abs().sum())]
        if lost:
            raise Problem(f"Your loss has the right value, but the gradient cannot reach {' and '.join(lost)}: build "
                          f"x from mu and log_sigma with torch operations, not torch.normal or .detach().")
        for grad, ref_grad, name in zip(grads, torch.autograd.grad(ref, (m, s)), ("mu", "log_sigma")):
            if not is_close(grad, ref_grad, 1e-5, 1e-4):
                raise Problem(f"Your loss has the right value, but its gradient with respect to {name} is wrong on "
                              f"{case} — sort x itself (x.sort().values), so that each sample's gradient meets its "
                              f"own data point.")
    return f"sample_loss matches W₂² between sorted samples, and its gradients in μ and log σ, on {len(cases)} test cases."

#################################################################################
#            Lesson 03: the posterior q(x_{t−1} | x_t, x_0) (DDPM Eq. 6–7)       #
#################################################################################

_P_HINTS = {
    "broadcast": "coefficients indexed with t have shape (B,), so reshape them to (B, 1, 1, 1)",
    "IndexError": "index the schedule arrays with t; valid timesteps are 0 … T−1",
    "TypeError": "check the signature posterior_mean_variance(x_start, x_t, t, betas) and use torch operations",
    "default": "check μ̃_t = β_t·√ᾱ_{t−1}/(1−ᾱ_t)·x₀ + (1−ᾱ_{t−1})·√α_t/(1−ᾱ_t)·x_t and β̃_t",
}
_MEAN = "β_t·√ᾱ_{t−1}/(1−ᾱ_t)·x₀ + (1−ᾱ_{t−1})·√α_t/(1−ᾱ_t)·x_t"
_VAR = "β̃_t = β_t·(1−ᾱ_{t−1})/(1−ᾱ_t)"
_P_REFUSAL = ("Your function uses ditlib's {name}: this exercise asks you to compute the posterior mean and variance "
              "yourself from betas (ᾱ_t and ᾱ_{{t−1}}, then DDPM Eq. 7).")


def _posterior(betas, t, x0, xt, prev="shift", sqrt_prev=True, sqrt_alpha=True, view=(-1, 1, 1, 1)):
    """Mean and variance of q(x_{t−1}|x_t,x_0) in float64; the keyword arguments build known-wrong variants."""
    b = betas.double()
    ab = torch.cumprod(1 - b, 0)
    ab_prev = {"shift": torch.cat([b.new_ones(1), ab[:-1]]), "same": ab, "wrap": ab.roll(1)}[prev]
    take = lambda v: v[t].view(*view)  # noqa: E731
    bt, at, abt, abp = take(b), take(1 - b), take(ab), take(ab_prev)
    c1 = bt * (abp.sqrt() if sqrt_prev else abp) / (1 - abt)
    c2 = (1 - abp) * (at.sqrt() if sqrt_alpha else at) / (1 - abt)
    return c1 * x0.double() + c2 * xt.double(), bt * (1 - abp) / (1 - abt), (c1, c2, bt)


@exercise("posterior_mean_variance")
def check_posterior_mean_variance(fn) -> str:
    from ..diffusion import GaussianDiffusion

    # building a GaussianDiffusion (SpacedDiffusion, create_diffusion) computes the posterior's coefficients
    shortcuts = {GaussianDiffusion.q_posterior_mean_variance: "GaussianDiffusion.q_posterior_mean_variance",
                 GaussianDiffusion.__init__: "GaussianDiffusion (it computes the posterior's coefficients)"}
    cases = [  # (B, C, H, W), t, betas, x dtype, description
        ((4, 3, 5, 4), [3, 7, 1, 9], _short_betas(), torch.float32, "a batch of 4 images with a 10-step schedule"),
        ((1, 1, 6, 6), [0], _linear_betas(), torch.float32, "a batch of 1 at t = 0"),
        ((3, 2, 4, 4), [999, 0, 500], _linear_betas(), torch.float64, "t = T−1, 0 and 500 with float64 images"),
        ((2, 4, 3, 3), [0, 5], _short_betas(), torch.float32, "t = 0 and 5 with a 10-step schedule"),
    ]
    g = torch.Generator().manual_seed(3)
    for shape, t_list, betas, dtype, case in cases:
        x0, xt, t = randn(g, shape, dtype), randn(g, shape, dtype), torch.tensor(t_list)
        out = call_refusing(fn, (x0.clone(), xt.clone(), t.clone(), betas.clone()), _P_HINTS, shortcuts, _P_REFUSAL)
        if isinstance(out, (torch.Tensor, np.ndarray)):
            raise Problem("Your function returned a single array; return the pair `return mean, variance`.")
        if out is None:
            as_tensor(out)  # raises the "forgot `return`" message
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            n = (f"{len(out)} value{'s' * (len(out) != 1)}" if isinstance(out, (tuple, list))
                 else f"a {type(out).__name__}")
            raise Problem(f"Your function returned {n}; return exactly the pair `return mean, variance`.")
        mean, var = as_tensor(out[0], "mean"), as_tensor(out[1], "variance")
        ref_mean, ref_var, (c1, c2, bt) = _posterior(betas, t, x0, xt)
        expect_shape(mean, shape, name="mean", hint=" (the shape of x_t)")
        if var.ndim == 1 and var.shape[0] == shape[0]:
            raise Problem(f"Your variance has shape ({shape[0]},), which does not broadcast against images of shape "
                          f"{shape} — reshape it to (B, 1, 1, 1), e.g. with .view(-1, 1, 1, 1).")
        try:
            ok = var.ndim == 4 and var.shape[0] == shape[0] and torch.broadcast_shapes(var.shape, shape) == shape
        except RuntimeError:
            ok = False
        if not ok:
            raise Problem(f"Your variance has shape {tuple(var.shape)}; it should be (B, 1, 1, 1) or the shape "
                          f"of x_t {shape}.")
        expect_finite(mean, "mean")
        expect_finite(var, "variance")
        off_by_one = "Your ᾱ_{t−1} is off by one: use ᾱ_{t−1} (alphas_cumprod_prev = [1, ᾱ_0, …, ᾱ_{T−2}]), not ᾱ_t."
        wrap = ("At t = 0, ᾱ_{t−1} must be 1, but indexing alphas_cumprod[t − 1] wraps around to the last timestep "
                "— build alphas_cumprod_prev by prepending 1.0 to alphas_cumprod[:-1].")
        mean_variants = [
            (c1 * xt.double() + c2 * x0.double(), "The two coefficients are swapped: β_t·√ᾱ_{t−1}/(1−ᾱ_t) multiplies "
                                                  "x_0 and (1−ᾱ_{t−1})·√α_t/(1−ᾱ_t) multiplies x_t (DDPM Eq. 7)."),
            (_posterior(betas, t, x0, xt, prev="same")[0], off_by_one),
            (_posterior(betas, t, x0, xt, prev="wrap")[0], wrap),
            (_posterior(betas, t, x0, xt, sqrt_prev=False)[0], "Close, but you forgot the square root on ᾱ_{t−1}: "
                                                              "the x_0 coefficient is β_t·√ᾱ_{t−1}/(1−ᾱ_t)."),
            (_posterior(betas, t, x0, xt, sqrt_alpha=False)[0], "Close, but you forgot the square root on α_t: "
                                                               "the x_t coefficient is (1−ᾱ_{t−1})·√α_t/(1−ᾱ_t)."),
            (_posterior(betas, t, x0, xt, view=(1, 1, 1, -1))[0] if shape[3] == shape[0] > 1 else None,
             "It looks like the coefficients broadcast along the last (width) dimension instead of the batch: "
             "reshape each schedule value indexed with t to (B, 1, 1, 1) before multiplying."),
        ]
        expect_values(mean, ref_mean, mean_variants, atol=1e-4, rtol=2e-3, case=case, name="mean", formula=_MEAN)
        var_variants = [
            (bt, f"Your variance is β_t (DDPM's 'fixed large' choice), but the posterior variance is {_VAR} (DDPM Eq. 7)."),
            (ref_var.sqrt(), f"You returned the standard deviation √β̃_t; return the variance {_VAR} itself."),
            (_posterior(betas, t, x0, xt, prev="wrap")[1], wrap),
        ]
        var = var.expand(shape)
        var_variants = [(v if v is None else v.expand(shape), message) for v, message in var_variants]
        expect_values(var, ref_var.expand(shape), var_variants, atol=1e-6, rtol=2e-3, case=case, name="variance",
                      formula=_VAR)
    return f"posterior_mean_variance matches μ̃_t and β̃_t (DDPM Eq. 7) on {len(cases)} test cases."

#################################################################################
#     Lesson 03: the hybrid loss, L_simple + L_vlb with a frozen ε (IDDPM)      #
#################################################################################

_H_HINTS = {
    "broadcast": "index the schedule with t and reshape it to (B, 1, 1, 1); the model returns 2C channels: split "
                 "them with eps, r = model(x_t, t, y).split(C, dim=1)",
    "IndexError": "index the schedule arrays with the (B,) tensor t itself; valid timesteps are 0 … T−1",
    "TypeError": "check the signature hybrid_loss(diffusion, model, x_start, t, y, noise), call the model as "
                 "model(x_t, t, y) and return a dict {'mse': …, 'vb': …, 'loss': …}",
    "default": "x_t from x_start and noise; ε, r = model(x_t, t, y).split(C, 1); mse = mean_flat((noise − ε)²); "
               "vb = KL (decoder NLL at t = 0) with ε detached, in bits; loss = mse + vb",
}
_H_REFUSAL = ("Your loss calls ditlib's {name}: this exercise asks you to write the hybrid loss yourself — x_t, the "
              "model's ε and v, L_simple, and the bound's term from your posterior_mean_variance.")


class _ToyLossModel(torch.nn.Module):
    """A tiny trainable stand-in for DiT with learned Σ: ε = tanh(a·x + e_y + b·t/T), r = tanh(c·x + d)."""

    def __init__(self, channels: int, T: int, g: torch.Generator, dtype):
        super().__init__()
        p = lambda *shape: torch.nn.Parameter(randn(g, shape, dtype))  # noqa: E731
        self.a, self.b, self.e, self.c, self.d, self.T = p(channels), p(1), p(10, channels), p(channels), p(channels), T

    def forward(self, x, t, y=None):
        if y is None:
            raise TypeError("this model needs the class labels: call it as model(x_t, t, y)")
        view = lambda w: w.view(1, -1, 1, 1)  # noqa: E731
        s = t.to(x.dtype).view(-1, 1, 1, 1) / self.T
        eps = torch.tanh(view(self.a) * x + self.e[y][:, :, None, None] + self.b * s)
        return torch.cat([eps, torch.tanh(view(self.c) * x + view(self.d))], 1)


def _hybrid(betas, model, x0, t, y, noise, detach=True, bits=True, decoder=True, frac="learned", clip=False):
    """The hybrid loss {mse, vb, loss} in plain torch; the keyword arguments build the known-wrong variants."""
    from ..diffusion_utils import discretized_gaussian_log_likelihood, normal_kl

    b = betas.double()
    ab = torch.cumprod(1 - b, 0)
    abp = torch.cat([b.new_ones(1), ab[:-1]])
    post = b * (1 - abp) / (1 - ab)
    log_post = torch.log(torch.cat([post[1:2], post[1:]]))                  # β̃_0 = 0: ADM uses β̃_1 at t = 0
    take = lambda a: a[t].view(-1, 1, 1, 1).to(x0.dtype)  # noqa: E731
    x_t = take(ab).sqrt() * x0 + (1 - take(ab)).sqrt() * noise
    eps, v = model(x_t, t, y).split(x0.shape[1], dim=1)
    mse = ((noise - eps) ** 2).mean(dim=(1, 2, 3))
    e = eps.detach() if detach else eps
    x0_hat = (x_t - (1 - take(ab)).sqrt() * e) / take(ab).sqrt()
    x0_hat = x0_hat.clamp(-1, 1) if clip else x0_hat
    c1, c2 = take(b * abp.sqrt() / (1 - ab)), take((1 - abp) * (1 - b).sqrt() / (1 - ab))
    w = {"learned": (v + 1) / 2, "raw_v": v, "swapped": 1 - (v + 1) / 2}[frac]
    log_var = w * take(b.log()) + (1 - w) * take(log_post)
    mean, true_mean = c1 * x0_hat + c2 * x_t, c1 * x0 + c2 * x_t
    kl = normal_kl(true_mean, take(log_post), mean, log_var).mean(dim=(1, 2, 3))
    nll = -discretized_gaussian_log_likelihood(x0, means=mean, log_scales=0.5 * log_var).mean(dim=(1, 2, 3))
    vb = (torch.where(t == 0, nll, kl) if decoder else kl) / (math.log(2.0) if bits else 1.0)
    return {"mse": mse, "vb": vb, "loss": mse + vb}


def _hybrid_xt(betas, x0, t, noise):
    ab = torch.cumprod(1 - betas.double(), 0)[t].view(-1, 1, 1, 1).to(x0.dtype)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def _loss_terms(out, B: int) -> dict:
    """The learner's {"mse", "vb", "loss"} as (B,) tensors, or a Problem saying what is not."""
    if isinstance(out, (tuple, list)) or isinstance(out, torch.Tensor) or out is None:
        if out is None:
            as_tensor(out)
        raise Problem(f"Your function returned a {type(out).__name__}; return a dict with the three (B,) terms, "
                      f"{{'mse': mse, 'vb': vb, 'loss': mse + vb}}, like training_losses.")
    if not isinstance(out, dict) or not {"mse", "vb", "loss"} <= set(out):
        missing = sorted({"mse", "vb", "loss"} - set(out)) if isinstance(out, dict) else None
        raise Problem(f"Your dict lacks {missing}: return {{'mse': mse, 'vb': vb, 'loss': mse + vb}}." if missing else
                      f"Your function returned a {type(out).__name__}; return {{'mse': mse, 'vb': vb, 'loss': mse + vb}}.")
    terms = {k: as_tensor(out[k], f"'{k}'") for k in ("mse", "vb", "loss")}
    for k, v in terms.items():
        if v.shape == ():
            raise Problem(f"Your '{k}' is one number; return one value per image, shape ({B},): average over the "
                          f"dimensions of each image only (mean_flat), not over the batch.")
        expect_shape(v, (B,), name=f"'{k}'", hint=" (one value per image)")
        expect_finite(v, f"'{k}'")
    return terms


@exercise("hybrid_loss")
def check_hybrid_loss(fn) -> str:
    """Check `hybrid_loss(diffusion, model, x_start, t, y, noise) -> {"mse", "vb", "loss"}` (each (B,)) against
    GaussianDiffusion.training_losses on the same inputs: the values, and the gradients of loss.sum() with
    respect to the model's parameters (the bound sees a frozen ε: Improved DDPM §3.1). The routines of
    GaussianDiffusion that compute the loss or the reverse step are refused."""
    from ..diffusion import GaussianDiffusion

    shortcuts = {getattr(GaussianDiffusion, n): f"GaussianDiffusion.{n}"
                 for n in ("training_losses", "_vb_terms_bpd", "p_mean_variance", "q_posterior_mean_variance",
                           "predict_xstart_from_eps")}
    cases = [  # (B, C, H, W), t, betas, dtype, description
        ((4, 2, 4, 4), [0, 1, 500, 999], _linear_betas(), torch.float32, "t = 0, 1, 500 and 999 of the linear schedule"),
        ((3, 1, 3, 5), [9, 0, 4], _short_betas(), torch.float32, "a 10-step schedule with t = 9, 0 and 4"),
        ((2, 3, 2, 2), [250, 7], _linear_betas(), torch.float64, "float64 images at t = 250 and 7"),
    ]
    g = torch.Generator().manual_seed(5)
    for shape, t_list, betas, dtype, case in cases:
        diffusion = GaussianDiffusion(betas.numpy())
        model = _ToyLossModel(shape[1], len(betas), g, dtype)
        x0, noise = randn(g, shape, dtype).clamp(-1, 1), randn(g, shape, dtype)
        t, y = torch.tensor(t_list), torch.randint(0, 10, (shape[0],), generator=g)
        model.zero_grad()
        out = call_refusing(fn, (diffusion, model, x0.clone(), t.clone(), y.clone(), noise.clone()), _H_HINTS,
                            shortcuts, _H_REFUSAL)
        terms = _loss_terms(out, shape[0])
        ref = diffusion.training_losses(model, x0, t, {"y": y}, noise)
        run = lambda **kw: {k: v.detach() for k, v in _hybrid(betas, model, x0, t, y, noise, **kw).items()}  # noqa: E731
        with torch.no_grad():
            expect_values(terms["mse"], ref["mse"].detach(), [
                (((noise - model(_hybrid_xt(betas, x0, t, noise), t, y)[:, :shape[1]]) ** 2).sum(dim=(1, 2, 3)),
                 "Your 'mse' sums over each image's dimensions; L_simple is their mean (mean_flat)."),
            ], atol=1e-5, rtol=1e-4, case=case, name="'mse'", formula="mean over each image of (noise − ε_θ)²")
            expect_values(terms["vb"], ref["vb"].detach(), [
                (run(bits=False)["vb"], "Your 'vb' is in nats: divide by ln 2 for bits per dimension."),
                (run(decoder=False)["vb"], "At t = 0 the bound's term is not a KL but the decoder's −log p_θ(x_0 | x_1): "
                                           "use discretized_gaussian_log_likelihood there (torch.where(t == 0, …))."),
                (run(frac="raw_v")["vb"], "You used the model's raw output r as the interpolation weight; it lies "
                                          "in [−1, 1]: the weight is v = (r + 1)/2 (Improved DDPM Eq. 15)."),
                (run(frac="swapped")["vb"], "Your log Σ interpolates the wrong way round: v·log β_t + "
                                            "(1 − v)·log β̃_t, with v = (r + 1)/2."),
                (run(clip=True)["vb"], "You clipped x̂_0 to [−1, 1]: the loss uses the unclipped x̂_0 (clipping is "
                                       "for sampling)."),
            ], atol=1e-5, rtol=1e-3, case=case, name="'vb'",
               formula="KL(q(x_{t−1}|x_t,x_0) ‖ p_θ) in bits per dimension, the decoder NLL at t = 0")
            expect_values(terms["loss"], ref["loss"].detach(), [
                (ref["mse"].detach(), "Your 'loss' is L_simple alone: the hybrid loss is mse + vb."),
                (ref["vb"].detach(), "Your 'loss' is the bound's term alone: the hybrid loss is mse + vb."),
            ], atol=1e-5, rtol=1e-3, case=case, name="'loss'", formula="mse + vb")
        grads = []
        for loss in (terms["loss"], ref["loss"], _hybrid(betas, model, x0, t, y, noise, detach=False)["loss"]):
            model.zero_grad()
            if not loss.requires_grad:
                raise Problem("Your loss carries no gradient: compute it from the model's output with torch "
                              "operations (no .item(), .numpy() or torch.no_grad()).")
            loss.sum().backward(retain_graph=True)
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        if not is_close(grads[0], grads[1], 1e-5, 1e-3):
            if is_close(grads[0], grads[2], 1e-5, 1e-3):
                raise Problem("Your values are right but the gradient is not: the bound must see a frozen ε "
                              "(eps.detach()) so that L_vlb trains only Σ and L_simple trains ε (Improved DDPM §3.1).")
            raise Problem(f"Your values are right but the gradient on {case} is not: detach only ε in the bound's "
                          f"term (eps.detach()), nothing else.")
    return f"hybrid_loss matches training_losses (values and gradients) on {len(cases)} test cases."
