"""Checks of the sampling lessons: the DDPM reverse chain (lesson 03), respaced β's and one DDIM step
(lesson 08), and the Fréchet distance behind FID (lesson 10)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..diffusion import GaussianDiffusion, SpacedDiffusion, space_timesteps
from .feedback import Problem, as_tensor, call, call_refusing, exercise, expect_finite, expect_shape, expect_values, randn

__all__ = ["check_ddpm_sampling_loop", "check_respaced_betas", "check_ddim_step", "check_frechet_distance"]


def _respaced(alphas_cumprod: torch.Tensor, timesteps, prev="kept") -> torch.Tensor:
    """β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}} (ᾱ before the first kept step = 1) in float64, over `timesteps` in
    the given order; prev="wrap" builds the known-wrong variant that divides the first step by the last one."""
    ab = alphas_cumprod.double()[torch.tensor(list(timesteps))]
    first = ab[-1:] if prev == "wrap" else ab.new_ones(1)
    return 1 - ab / torch.cat([first, ab[:-1]])

#################################################################################
#          Lesson 03: the DDPM reverse chain, x_{t−1} = μ_θ + σ_θ·z              #
#################################################################################

_LOOP_HINTS = {
    "AttributeError": "read the respaced schedule from diffusion.betas (a float64 tensor of β'_i) and the model's "
                      "timestep of step i from diffusion.timestep_map[t]",
    "IndexError": "loop i over range(diffusion.num_timesteps − 1, −1, −1) and take the noise noises[i]",
    "TypeError": "check the signature sample_loop(diffusion, model, x_T, y, noises) and call the model as "
                 "model(x, diffusion.timestep_map[t], y)",
    "broadcast": "the model returns 2C channels: split them with eps, r = model(...).split(C, dim=1), and reshape "
                 "the schedule values indexed with t to (B, 1, 1, 1)",
    "default": "for i = T−1 … 0: ε, r = model(x, timestep_map[t], y).split(C, 1); x̂_0 from ε; μ̃ from your "
               "posterior_mean_variance; log Σ = v·log β + (1 − v)·log β̃ with v = (r + 1)/2; "
               "x = μ̃ + [i > 0]·exp(½·log Σ)·noises[i]",
}
_LOOP_REFUSAL = ("Your loop calls ditlib's {name}: this exercise asks you to write the step yourself — ε_θ and v from "
                 "the model, x̂_0, the posterior mean μ̃ (your posterior_mean_variance) and the learned variance.")


def _loop_shortcuts() -> dict:
    names = ("p_sample_loop", "p_sample_loop_progressive", "ddim_sample_loop", "ddim_sample", "p_sample",
             "p_mean_variance", "predict_xstart_from_eps", "q_posterior_mean_variance")   # outermost first
    return {getattr(GaussianDiffusion, n): f"GaussianDiffusion.{n}" for n in names}


class _ToyDenoiser(torch.nn.Module):
    """A tiny stand-in for DiT with learned Σ: ε is chosen so that x̂_0 = 0.9·tanh(w·x + e_y + t/T) lies in
    (−1, 1) (so clipping changes nothing), and the extra channels are v = tanh(x/2 − t/T)."""

    def __init__(self, alphas_cumprod: torch.Tensor, channels: int, g: torch.Generator):
        super().__init__()
        self.abar = alphas_cumprod.double()
        self.w, self.e = 1 + 0.5 * randn(g, (channels,), torch.float64), randn(g, (10, channels), torch.float64)

    def forward(self, x, t, y=None):
        if y is None:
            raise TypeError("this model needs the class labels: call it as model(x, t, y)")
        d = x.dtype
        a, s = self.abar[t].to(d).view(-1, 1, 1, 1), t.to(d).view(-1, 1, 1, 1) / len(self.abar)
        x0 = 0.9 * torch.tanh(self.w.to(d).view(1, -1, 1, 1) * x + self.e[y].to(d)[:, :, None, None] + s)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return torch.cat([eps, torch.tanh(0.5 * x - s)], 1)


def _chain(tmap, betas, model, x_T, y, noises, down=True, noise_at_0=False, power=0.5, pick="t", first_x0=False,
           model_t="map", var="learned"):
    """The DDPM chain with learned Σ in plain float64 torch; the keyword arguments build the known-wrong variants."""
    b = betas.double()
    ab = torch.cumprod(1 - b, 0)
    abp = torch.cat([b.new_ones(1), ab[:-1]])
    post = b * (1 - abp) / (1 - ab)
    log_post = torch.log(torch.cat([post[1:2] if len(b) > 1 else b[:1], post[1:]]))   # β̃_0 = 0: use β̃_1 (ADM)
    x, n, C, K = x_T.double(), noises.double(), x_T.shape[1], len(b)
    for k, i in enumerate(range(K - 1, -1, -1) if down else range(K)):
        t = torch.full((x.shape[0],), i)
        out = model(x, tmap[t] if model_t == "map" else t, y=y)
        eps, v = out[:, :C], out[:, C:]
        x0 = ((x - (1 - ab[i]).sqrt() * eps) / ab[i].sqrt()).clamp(-1, 1)
        if first_x0:
            return x0
        mean = b[i] * abp[i].sqrt() / (1 - ab[i]) * x0 + (1 - abp[i]) * (1 - b[i]).sqrt() / (1 - ab[i]) * x
        frac = {"learned": (v + 1) / 2, "swapped": 1 - (v + 1) / 2, "raw_v": v, "posterior": torch.zeros_like(v),
                "beta": torch.ones_like(v)}[var]
        lv = frac * b[i].log() + (1 - frac) * log_post[i]
        z = n[i] if pick == "t" else n[k]
        x = mean + (1.0 if (i > 0 or noise_at_0) else 0.0) * torch.exp(power * lv) * z if power else mean
    return x


@exercise("ddpm_sampling_loop")
def check_ddpm_sampling_loop(fn) -> str:
    """Check `sample_loop(diffusion, model, x_T, y, noises) -> x_0`, the DDPM reverse chain with learned Σ,
    written out: for i = T−1 … 0 (T = diffusion.num_timesteps), ε_θ, r = model(x, diffusion.timestep_map[t], y),
    x̂_0 = (x − √(1 − ᾱ_i)·ε_θ)/√ᾱ_i, μ̃ = posterior mean of (x̂_0, x), log Σ = v·log β'_i + (1 − v)·log β̃'_i
    with v = (r + 1)/2 (Improved DDPM Eq. 15), x = μ̃ + [i > 0]·exp(½·log Σ)·noises[i]. `noises` is a
    (T, B, C, H, W) tensor, noises[i] the z of the step at timestep i (noises[0] unused); clipping x̂_0 to
    [−1, 1] may be done or not (the check's model keeps x̂_0 inside). The routines of GaussianDiffusion that do
    the step (p_mean_variance, q_posterior_mean_variance, predict_xstart_from_eps, p_sample, …) are refused."""
    linear = np.linspace(1e-4, 0.02, 1000)
    short = np.linspace(0.05, 0.4, 5)
    cases = [  # diffusion, original β, (B, C, H, W), dtype, description
        (SpacedDiffusion(space_timesteps(1000, "6"), linear), linear, (2, 3, 4, 4), torch.float32,
         "a 6-step respacing of the 1000-step linear schedule"),
        (SpacedDiffusion(space_timesteps(5, "5"), short), short, (1, 2, 3, 5), torch.float32,
         "a 5-step schedule (every step kept) and a batch of 1"),
        (SpacedDiffusion(space_timesteps(1000, "ddim4"), linear), linear, (3, 1, 2, 2), torch.float64,
         "float64 images on a 4-step respacing (t = 750, 500, 250, 0)"),
    ]
    g = torch.Generator().manual_seed(11)
    for diffusion, base, shape, dtype, case in cases:
        K, tmap, betas = diffusion.num_timesteps, diffusion.timestep_map, diffusion.betas
        model = _ToyDenoiser(torch.cumprod(1 - torch.as_tensor(base), 0), shape[1], g)
        x_T, y = randn(g, shape, dtype), torch.randint(0, 10, (shape[0],), generator=g)
        noises = randn(g, (K, *shape), dtype)
        args = lambda: (diffusion, model, x_T.clone(), y.clone(), noises.clone())  # noqa: E731
        with torch.no_grad():
            out = call_refusing(fn, args(), _LOOP_HINTS, _loop_shortcuts(), _LOOP_REFUSAL)
            if isinstance(out, dict):
                raise Problem("You returned a dict — return the final x, a tensor shaped like x_T.")
            if isinstance(out, (list, tuple)):
                raise Problem(f"You returned a {type(out).__name__} — return only the final x_0, a tensor shaped like "
                              f"x_T, not the whole trajectory.")
            out = as_tensor(out)
            trajectory = "You returned the whole trajectory — return only the final x_0, a tensor shaped like x_T."
            expect_shape(out, shape, known=[((K, *shape), trajectory), ((K + 1, *shape), trajectory),
                                            ((shape[0], 2 * shape[1], *shape[2:]),
                                             "You returned the model's whole output (ε and v): split it with "
                                             ".split(C, dim=1) and return the final x.")],
                         hint=" (the shape of x_T)")
            expect_finite(out)
            run = lambda **kw: _chain(tmap, betas, model, x_T, y, noises, **kw)  # noqa: E731
            upwards = ("Your loop runs the wrong way: the reverse chain goes from t = T−1 down to 0, e.g. for i in "
                       "reversed(range(diffusion.num_timesteps)).")
            variants = [
                (run(noise_at_0=True), "You also added noise at the last step: at t = 0 return the mean itself "
                                       "(multiply the noise by [t > 0])."),
                (run(down=False), upwards),
                (run(down=False, noise_at_0=True), upwards),
                (run(model_t="index") if K != 5 else None,
                 "You called the model with the respaced index i, but it was trained on the original timesteps: "
                 "call model(x, diffusion.timestep_map[t], y)."),
                (run(power=1.0), "You scaled the noise by the variance exp(log Σ); use the standard deviation "
                                 "exp(½·log Σ)."),
                (run(power=1.0, noise_at_0=True), "You scaled the noise by the variance exp(log Σ) (and added noise "
                                                  "at t = 0); use exp(½·log Σ) and no noise at t = 0."),
                (run(power=0.0), "Your chain adds no noise: x_{t−1} = μ̃ + exp(½·log Σ)·noises[t] at every step with "
                                 "t > 0 (the mean alone collapses the samples)."),
                (run(var="raw_v"), "You used the model's raw output r as the interpolation weight; it lies in "
                                   "[−1, 1]: the weight is v = (r + 1)/2 (Improved DDPM Eq. 15)."),
                (run(var="swapped"), "Your variance interpolates the wrong way round: log Σ = v·log β_t + "
                                     "(1 − v)·log β̃_t, with v = (r + 1)/2."),
                (run(var="posterior"), "Your variance is β̃_t at every step: the model's second output v chooses "
                                       "log Σ = v·log β_t + (1 − v)·log β̃_t, v = (r + 1)/2."),
                (run(var="beta"), "Your variance is β_t at every step: the model's second output v chooses "
                                  "log Σ = v·log β_t + (1 − v)·log β̃_t, v = (r + 1)/2."),
                (run(pick="k"), "You took the noises in the wrong order: use noises[i], the noise of the step at "
                                "timestep i (noises[0] is never used)."),
                (run(first_x0=True), "You returned the x̂_0 predicted at the first step; run the whole chain and "
                                     "return the final x."),
            ]
            expect_values(out, run(), variants, atol=1e-4, rtol=1e-3, case=case,
                          formula="x ← μ̃(x̂_0, x) + [t > 0]·exp(½·log Σ)·noises[t] for t = T−1 … 0",
                          rerun=lambda: as_tensor(call(fn, args(), _LOOP_HINTS)),
                          random_msg="Your output changes between two calls with the same inputs — use the given "
                                     "noises[t] instead of drawing new noise with torch.randn.")
    return f"ddpm_sampling_loop runs the reverse chain x_T → x_0 (DDPM Algorithm 2, learned Σ) on {len(cases)} test cases."

#################################################################################
#        Lesson 08: respaced betas, β'_i = 1 − ᾱ_{t_i} / ᾱ_{t_{i−1}}            #
#################################################################################

_RB_HINTS = {
    "TypeError": "use_timesteps may be a set: turn it into a sorted list first, e.g. kept = sorted(use_timesteps)",
    "IndexError": "a set cannot index a tensor, so sort the kept timesteps into a list first, kept = "
                  "sorted(use_timesteps), and index alphas_cumprod with them (0-based, each in 0 … T−1)",
    "default": "sort the kept timesteps, then β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}} with ᾱ before the first kept step = 1",
}


@exercise("respaced_betas")
def check_respaced_betas(fn) -> str:
    """Check `respaced_betas(alphas_cumprod, use_timesteps) -> betas`: alphas_cumprod a (T,) float tensor,
    use_timesteps the kept steps as a set or list of ints in any order; returns the (K,) β' of the sorted kept
    steps t_1 < … < t_K, β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}} with ᾱ before t_1 = 1 (a tensor, NumPy array or list)."""
    ab_long = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    ab_short = torch.cumprod(1 - torch.linspace(0.05, 0.4, 10, dtype=torch.float64), 0)
    ten = sorted(space_timesteps(1000, "10"))
    cases = [  # alphas_cumprod, use_timesteps (as given), description
        (ab_long, [ten[i] for i in (3, 0, 7, 9, 1, 5, 2, 8, 4, 6)], "10 of 1000 steps given in shuffled order"),
        (ab_short, {9, 2, 5}, "the steps {2, 5, 9} of a 10-step schedule (the first kept step is not 0)"),
        (ab_long, sorted(space_timesteps(1000, "ddim5")), "DDIM's 5 steps 0, 200, …, 800 as a sorted list"),
        (ab_long.float(), set(space_timesteps(1000, "25")), "25 of 1000 steps as a set, with float32 alphas_cumprod"),
        (ab_short, [7], "a single kept step"),
    ]
    for ab, given, case in cases:
        kept, K = sorted(given), len(given)
        out = call(fn, (ab.clone(), type(given)(given)), _RB_HINTS)
        if isinstance(out, (list, tuple)) and all(isinstance(v, (int, float)) for v in out):
            out = torch.tensor(out, dtype=torch.float64)
        out = as_tensor(out, numpy_ok=True)
        first = ("You forgot the first kept step: there are as many new betas as kept timesteps, and the first one "
                 "divides by ᾱ = 1 (β'_0 = 1 − ᾱ_{t_0}).")
        expect_shape(out, (K,), known=[((K - 1,), first)], name="betas tensor",
                     hint=f" — one β' per kept timestep ({K} here)")
        expect_finite(out, "betas tensor")
        ref, a = _respaced(ab, kept), ab.double()
        orig = 1 - a / torch.cat([a.new_ones(1), a[:-1]])
        one_based = torch.cat([a.new_ones(1), a])
        variants = [
            (orig[kept], "You took the original β_t at the kept steps (ᾱ_{t_i−1} of the full schedule); divide by ᾱ "
                         "at the previous *kept* step instead: β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}}."),
            (_respaced(ab, kept, prev="wrap") if K > 1 else None,
             "At the first kept step ᾱ_prev must be 1, but your index t_{i−1} wrapped around to the last kept "
             "step — start with last_alpha_cumprod = 1.0."),
            (torch.cat([orig[kept[:1]], ref[1:]]) if kept[0] > 0 else None,
             "Your first β' uses ᾱ_{t_0 − 1} of the full schedule; before the first kept step ᾱ_prev = 1, so "
             "β'_0 = 1 − ᾱ_{t_0}."),
            (_respaced(ab, list(given)) if list(given) != kept else None,
             "The kept timesteps are not sorted: iterate over sorted(use_timesteps), so each β' divides by the "
             "previous kept step in time."),
            (1 - one_based[kept] / torch.cat([a.new_ones(1), one_based[kept][:-1]]),
             "Your ᾱ indices are off by one: timesteps are 0-based, so alphas_cumprod[t] is ᾱ_t."),
            (1 - a[kept], "You forgot to divide by ᾱ at the previous kept step: β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}}, "
                          "not 1 − ᾱ_{t_i}."),
            (a[kept], "You returned ᾱ at the kept steps; return the new betas β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}}."),
            (1 - torch.cat([a.new_ones(1), a[kept][:-1]]) / a[kept],
             "Your ratio is upside down: β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}} (the current ᾱ over the previous one)."),
        ]
        expect_values(out, ref, variants, atol=1e-6, rtol=1e-5, case=case, name="betas tensor",
                      formula="1 − ᾱ_{t_i}/ᾱ_{t_{i−1}} over the sorted kept steps, with ᾱ before the first = 1")
    return (f"respaced_betas keeps ᾱ at the kept steps (β'_i = 1 − ᾱ_{{t_i}}/ᾱ_{{t_{{i−1}}}}) on "
            f"{len(cases)} test cases.")

#################################################################################
#          Lesson 08: one DDIM step with η = 0 (DDIM Eq. 12, no clipping)        #
#################################################################################

_DDIM_HINTS = {
    "TypeError": "check the signature ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev); the ᾱ's are 0-d tensors, "
                 "so use torch.sqrt or ** 0.5",
    "default": "x̂_0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t, then x_prev = √ᾱ_prev·x̂_0 + √(1−ᾱ_prev)·ε",
}


@exercise("ddim_step")
def check_ddim_step(fn) -> str:
    """Check `ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev) -> x_prev`, DDIM Eq. 12 with η = 0 and no
    clipping: x̂_0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t, x_prev = √ᾱ_prev·x̂_0 + √(1−ᾱ_prev)·ε; the ᾱ's are 0-d tensors
    (one noise level for the whole batch)."""
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    cases = [  # (B, C, H, W), dtype, ᾱ_t, ᾱ_prev, description
        ((2, 4, 8, 8), torch.float32, 0.3, 0.6, "2 latents stepping from ᾱ = 0.3 to 0.6"),
        ((1, 1, 5, 5), torch.float32, 0.05, 1.0, "a single image at the last step (ᾱ_prev = 1)"),
        ((3, 2, 4, 6), torch.float64, 0.9, 0.99, "float64 images near the end of the chain"),
        ((2, 3, 4, 4), torch.float32, ab[900].float(), ab[800].float(), "ᾱ_900 → ᾱ_800 of the linear schedule in float32"),
    ]
    g = torch.Generator().manual_seed(12)
    for shape, dtype, a_t, a_prev, case in cases:
        x, eps = randn(g, shape, dtype), randn(g, shape, dtype)
        a_t, a_prev = (torch.as_tensor(v, dtype=v.dtype if torch.is_tensor(v) else torch.float64) for v in (a_t, a_prev))
        out = as_tensor(call(fn, (x.clone(), eps.clone(), a_t.clone(), a_prev.clone()), _DDIM_HINTS))
        expect_shape(out, shape, hint=" (the shape of x_t)")
        expect_finite(out)
        xd, ed, a, p = x.double(), eps.double(), a_t.double(), a_prev.double()
        x0 = (xd - (1 - a).sqrt() * ed) / a.sqrt()
        step = lambda x0, p, d: p.sqrt() * x0 + d.sqrt() * ed  # noqa: E731
        x0_nosqrt = (xd - (1 - a) * ed) / a
        variants = [
            (step((xd - (1 - p).sqrt() * ed) / p.sqrt(), a, 1 - a), "ᾱ_t and ᾱ_prev are swapped: x̂_0 uses ᾱ_t "
                                                                    "(the current step) and the re-noising uses ᾱ_prev."),
            (step(x0, p, 1 - a), "The direction term uses √(1−ᾱ_t); it re-noises to the previous level, so it is "
                                 "√(1−ᾱ_prev)·ε."),
            (p * x0_nosqrt + (1 - p) * ed, "You forgot the square roots: x̂_0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t and "
                                           "x_prev = √ᾱ_prev·x̂_0 + √(1−ᾱ_prev)·ε."),
            (p * x0 + (1 - p) * ed, "You forgot the square roots in the re-noising: x_prev = √ᾱ_prev·x̂_0 + "
                                    "√(1−ᾱ_prev)·ε."),
            (step(x0_nosqrt, p, 1 - p), "You forgot the square roots in x̂_0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t."),
            (step(x0.clamp(-1, 1), p, 1 - p), "You clipped x̂_0 to [−1, 1]; this exercise expects no clipping "
                                              "(as with clip_denoised=False)."),
            (x0, "You returned x̂_0; re-noise it to the previous level: x_prev = √ᾱ_prev·x̂_0 + √(1−ᾱ_prev)·ε."),
            (step((xd + (1 - a).sqrt() * ed) / a.sqrt(), p, 1 - p), "Check the sign in x̂_0: subtract the noise, "
                                                                   "x̂_0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t."),
            (p.sqrt() * x0, "You dropped the direction term: with η = 0 the step re-adds the predicted noise, "
                            "x_prev = √ᾱ_prev·x̂_0 + √(1−ᾱ_prev)·ε."),
        ]
        expect_values(out, step(x0, p, 1 - p), variants, atol=1e-4, rtol=1e-4, case=case,
                      formula="√ᾱ_prev·x̂_0 + √(1−ᾱ_prev)·ε with x̂_0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t")
    return f"ddim_step matches DDIM's deterministic update (Eq. 12, η = 0) on {len(cases)} test cases."

#################################################################################
#   Lesson 10: the Fréchet distance ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^{1/2})    #
#################################################################################

_FD_HINTS = {
    "TypeError": "the inputs are NumPy float64 arrays: use NumPy (np.linalg.eigh, np.trace) or convert them with "
                 "torch.from_numpy",
    "LinAlgError": "take the matrix square root through a symmetric matrix, e.g. Tr (Σ1Σ2)^{1/2} = Σ √eigvalsh(S·Σ2·S) "
                   "with S = Σ1^{1/2}",
    "default": "compute ‖μ1 − μ2‖² + Tr(Σ1) + Tr(Σ2) − 2·Tr (Σ1Σ2)^{1/2}",
}


def _spd(g: torch.Generator, d: int, scale: float) -> torch.Tensor:
    a = randn(g, (d, d), torch.float64)
    return scale * (a @ a.T / d + 0.3 * torch.eye(d, dtype=torch.float64))


def _sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def _number(out) -> float:
    if out is None:
        raise Problem("Your function returned None — did you forget the `return` statement?")
    if isinstance(out, bool) or not isinstance(out, (int, float, complex, np.number, np.ndarray, torch.Tensor)):
        raise Problem(f"Your function returned a {type(out).__name__}; return one number (a float).")
    arr = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    if arr.size != 1:
        raise Problem(f"Your function returned {arr.size} numbers (shape {arr.shape}); return one number: sum the "
                      f"squared mean difference and take the trace of the covariance terms.")
    if np.iscomplexobj(arr):
        raise Problem("Your distance is a complex number — a matrix square root can pick up tiny imaginary parts "
                      "from rounding: take its real part (.real) before the trace.")
    value = float(arr.reshape(()))
    if math.isnan(value) or math.isinf(value):
        raise Problem("Your distance is NaN or infinite — NaN often comes from an elementwise square root of a "
                      "matrix with negative entries: (Σ1Σ2)^{1/2} is a matrix square root (e.g. through np.linalg.eigh).")
    return value


@exercise("frechet_distance")
def check_frechet_distance(fn) -> str:
    """Check `frechet_distance(mu1, sigma1, mu2, sigma2) -> float` on NumPy float64 arrays ((D,) means, (D, D)
    covariances): ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^{1/2}); a float, NumPy scalar or 0-d tensor is accepted."""
    g = torch.Generator().manual_seed(13)
    cases = []  # μ1, Σ1, μ2, Σ2, description
    for d, scale, shift, case in [(4, 1.0, 1.5, "4-dimensional Gaussians"), (8, 3.0, 0.4, "8-dimensional Gaussians"),
                                  (3, 0.5, 0.0, "3-dimensional Gaussians with equal means")]:
        mu1 = randn(g, (d,), torch.float64)
        cases.append((mu1, _spd(g, d, scale), mu1 + shift * randn(g, (d,), torch.float64), _spd(g, d, scale), case))
    mu, sigma = randn(g, (5,), torch.float64), _spd(g, 5, 2.0)
    cases.append((mu, sigma, mu.clone(), sigma.clone(), "two identical distributions (the distance is 0)"))
    for mu1, s1, mu2, s2, case in cases:
        args = tuple(v.numpy().copy() for v in (mu1, s1, mu2, s2))
        got = _number(call(fn, args, _FD_HINTS))
        root = _sqrtm_psd(s1)
        tr_sqrt = torch.linalg.eigvalsh(root @ s2 @ root).clamp(min=0).sqrt().sum().item()
        dist2, tr1, tr2 = ((mu1 - mu2) ** 2).sum().item(), s1.trace().item(), s2.trace().item()
        want = dist2 + tr1 + tr2 - 2 * tr_sqrt
        with np.errstate(invalid="ignore"):
            tr_elementwise = float(np.sqrt(np.diag(args[1] @ args[3])).sum())
        tr_diag = torch.sqrt(s1.diag() * s2.diag()).sum().item()
        variants = [
            (dist2, "You dropped the trace term: the distance also compares the covariances, "
                    "+ Tr(Σ1 + Σ2 − 2(Σ1Σ2)^{1/2})."),
            (math.sqrt(dist2) + tr1 + tr2 - 2 * tr_sqrt, "Square the norm of the mean difference: ‖μ1 − μ2‖², "
                                                        "the sum of the squared differences."),
            (dist2 + tr1 + tr2 - 2 * tr_elementwise, "You took an elementwise square root of Σ1·Σ2; (Σ1Σ2)^{1/2} is "
                                                     "the matrix square root (e.g. through np.linalg.eigh)."),
            (dist2 + tr1 + tr2 - 2 * tr_diag, "You used the square roots of the diagonal entries (elementwise "
                                              "√(Σ1∘Σ2)); (Σ1Σ2)^{1/2} is a matrix square root of the matrix product."),
            (dist2 + tr1 + tr2 - tr_sqrt, "You are missing the factor 2 in front of Tr (Σ1Σ2)^{1/2}."),
            (dist2 + tr1 + tr2, "You only summed the traces of Σ1 and Σ2: subtract 2·Tr (Σ1Σ2)^{1/2}, the "
                                "cross term."),
            (dist2 + tr1 + tr2 - 2 * math.sqrt((s1 @ s2).trace().item()),
             "You took the square root of the trace; the trace term is Tr of the matrix square root, Tr (Σ1Σ2)^{1/2}."),
            (math.sqrt(max(want, 0.0)), "You returned the square root of the distance; FID is the squared Fréchet "
                                        "distance ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^{1/2})."),
        ]
        atol = 1e-6 * (1 + tr1 + tr2 + dist2)
        if math.isclose(got, want, rel_tol=1e-5, abs_tol=atol):
            continue
        for wrong, message in variants:
            if math.isfinite(wrong) and math.isclose(got, wrong, rel_tol=1e-5, abs_tol=atol):
                raise Problem(message)
        raise Problem(f"On {case} your distance is {got:.6g} but it should be {want:.6g} = ‖μ1 − μ2‖² + "
                      f"Tr(Σ1 + Σ2 − 2(Σ1Σ2)^{{1/2}}).")
    return f"frechet_distance matches ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^{{1/2}}) on {len(cases)} test cases."
