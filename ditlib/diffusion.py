"""Gaussian diffusion: the forward process, the learned reverse process, its loss, and sampling.

This is the process DiT was trained and sampled with (paper §2 "Diffusion formulation", §4): DDPM
(Ho et al., 2020) with the learned-range Σ and hybrid loss of Improved DDPM (Nichol & Dhariwal, 2021),
as implemented for ADM and reused by the official DiT code. Equation numbers cite the DiT paper
(§2) and, where it defers, DDPM / Improved DDPM.

* forward process  q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)                     (DiT §2, first equation)
* reparameterization x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε,  ε ~ N(0, I)
* reverse process  p_θ(x_{t−1} | x_t) = N(μ_θ(x_t), Σ_θ(x_t))                  (DiT §2)
* loss             L_simple = ‖ε_θ(x_t) − ε‖²  plus  L_vlb for Σ only             (DiT §2, Improved DDPM §3.1)
* learned Σ        Σ_θ = exp(v log β_t + (1 − v) log β̃_t)                       (Improved DDPM Eq. 15)

All schedule arrays are computed in float64 and cast to the input's dtype when used.
The module never looks inside the model: `model(x, t, **model_kwargs)` is all it calls.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from .diffusion_utils import (approx_standard_normal_cdf, betas_for_alpha_bar,  # noqa: F401  (also ditlib.diffusion's API)
                              discretized_gaussian_log_likelihood, get_named_beta_schedule, mean_flat, normal_kl, randn)
from .errors import ConfigError


def _extract(arr: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """arr[t] for each sample, cast to like's dtype/device and shaped (N, 1, 1, ...) to broadcast."""
    out = arr.to(like.device)[timesteps.to(like.device)].to(like.dtype)
    return out.reshape(out.shape + (1,) * (like.ndim - 1))


#################################################################################
#                              Gaussian diffusion                               #
#################################################################################

MODEL_VAR_TYPES = ("learned_range", "fixed_small", "fixed_large")
LOSS_TYPES = ("mse", "rescaled_mse", "kl", "rescaled_kl")


class GaussianDiffusion:
    """A discrete-time Gaussian diffusion with ε-prediction (the model predicts the noise).

    Args:
        betas: float64 array (T,) of β_t in (0, 1].
        model_var_type: "learned_range" (the model also outputs v ∈ [−1, 1], Σ = exp(v log β + (1−v) log β̃)),
            "fixed_small" (Σ = β̃_t, the posterior variance) or "fixed_large" (Σ = β_t).
        loss_type: "mse" (L_simple + L_vlb for Σ, DiT's hybrid loss), "rescaled_mse" (vb × T/1000),
            "kl" / "rescaled_kl" (the full variational bound).
    """

    def __init__(self, betas: np.ndarray, model_var_type: str = "learned_range", loss_type: str = "mse"):
        if model_var_type not in MODEL_VAR_TYPES:
            raise ConfigError(f"model_var_type must be one of {MODEL_VAR_TYPES}, got {model_var_type!r}")
        if loss_type not in LOSS_TYPES:
            raise ConfigError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ConfigError("betas must be a 1-D array with values in (0, 1]")
        self.model_var_type = model_var_type
        self.loss_type = loss_type
        self.num_timesteps = int(betas.shape[0])

        alphas = 1.0 - betas
        acp = np.cumprod(alphas)                                   # ᾱ_t
        acp_prev = np.append(1.0, acp[:-1])                        # ᾱ_{t−1}
        acp_next = np.append(acp[1:], 0.0)
        # β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), the variance of q(x_{t−1} | x_t, x_0) (DDPM Eq. 7).
        post_var = betas * (1.0 - acp_prev) / (1.0 - acp)
        # β̃_0 = 0, so its log is clipped to β̃_1 (ADM); a one-step process has no β̃_1 and uses β_1 instead.
        var_at_0 = post_var[1] if len(betas) > 1 else betas[0]
        post_log_var_clipped = np.log(np.append(var_at_0, post_var[1:]))

        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731  (float64 tensors)
        self.betas = t(betas)
        self.alphas_cumprod = t(acp)
        self.alphas_cumprod_prev = t(acp_prev)
        self.alphas_cumprod_next = t(acp_next)
        self.sqrt_alphas_cumprod = t(np.sqrt(acp))
        self.sqrt_one_minus_alphas_cumprod = t(np.sqrt(1.0 - acp))
        self.log_one_minus_alphas_cumprod = t(np.log(1.0 - acp))
        self.sqrt_recip_alphas_cumprod = t(np.sqrt(1.0 / acp))
        self.sqrt_recipm1_alphas_cumprod = t(np.sqrt(1.0 / acp - 1))
        self.posterior_variance = t(post_var)
        self.posterior_log_variance_clipped = t(post_log_var_clipped)
        # μ̃_t(x_t, x_0) = coef1 · x_0 + coef2 · x_t (DDPM Eq. 7).
        self.posterior_mean_coef1 = t(betas * np.sqrt(acp_prev) / (1.0 - acp))
        self.posterior_mean_coef2 = t((1.0 - acp_prev) * np.sqrt(alphas) / (1.0 - acp))
        self.log_betas = t(np.log(betas))
        # fixed_large uses β_t but β̃_1 at t = 0 for a better decoder likelihood (ADM).
        self.fixed_large_variance = t(np.append(var_at_0, betas[1:]))

    # ----------------------------------------------------------------- forward q
    def _check_t(self, t: torch.Tensor, x: torch.Tensor) -> None:
        if t.shape != (x.shape[0],):
            raise ConfigError(f"t must have shape ({x.shape[0]},), one timestep per sample; got {tuple(t.shape)}")
        if torch.compiler.is_compiling():          # reading values back would break a compiled graph
            return
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ConfigError(f"timesteps must lie in [0, {self.num_timesteps - 1}]; got [{int(t.min())}, {int(t.max())}]")

    def q_mean_variance(self, x_start: torch.Tensor, t: torch.Tensor):
        """Mean, variance and log-variance of q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)."""
        self._check_t(t, x_start)
        mean = _extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
        variance = _extract(1.0 - self.alphas_cumprod, t, x_start).expand_as(x_start)
        log_variance = _extract(self.log_one_minus_alphas_cumprod, t, x_start).expand_as(x_start)
        return mean, variance, log_variance

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) by the reparameterization x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε."""
        self._check_t(t, x_start)
        if noise is None:
            noise = torch.randn_like(x_start)
        if noise.shape != x_start.shape:
            raise ConfigError(f"noise has shape {tuple(noise.shape)} but x_start has {tuple(x_start.shape)}")
        return (_extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) (DDPM Eqs. 6–7): returns mean, variance, clipped log-variance."""
        if x_start.shape != x_t.shape:
            raise ConfigError(f"x_start {tuple(x_start.shape)} and x_t {tuple(x_t.shape)} differ in shape")
        self._check_t(t, x_t)
        mean = _extract(self.posterior_mean_coef1, t, x_t) * x_start + _extract(self.posterior_mean_coef2, t, x_t) * x_t
        variance = _extract(self.posterior_variance, t, x_t).expand_as(x_t)
        log_variance = _extract(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t."""
        return _extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps

    def predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor) -> torch.Tensor:
        return ((_extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart)
                / _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t))

    # ---------------------------------------------------------------- reverse p
    def _model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep values the model is called with (identity here; respaced processes map them back)."""
        return t

    def p_mean_variance(self, model, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True,
                        denoised_fn=None, model_kwargs: dict | None = None) -> dict:
        """Run the model and turn its output into p_θ(x_{t−1} | x_t) = N(mean, variance).

        Returns a dict with "mean", "variance", "log_variance", "pred_xstart" (all shaped like x)
        and "extra" (unused here). With `clip_denoised`, x̂_0 is clipped to [−1, 1] before the mean is formed.
        """
        self._check_t(t, x)
        model_kwargs = model_kwargs or {}
        B, C = x.shape[:2]
        model_output = model(x, self._model_timesteps(t), **model_kwargs)

        if self.model_var_type == "learned_range":
            if model_output.shape[1] != 2 * C:
                raise ConfigError(f"learned Σ needs the model to output {2 * C} channels (ε and v); got {model_output.shape[1]}")
            model_output, model_var_values = torch.split(model_output, C, dim=1)
            min_log = _extract(self.posterior_log_variance_clipped, t, x)   # log β̃_t
            max_log = _extract(self.log_betas, t, x)                        # log β_t
            frac = (model_var_values + 1) / 2                               # v ∈ [−1, 1] -> [0, 1]
            model_log_variance = frac * max_log + (1 - frac) * min_log       # Improved DDPM Eq. 15
            model_variance = torch.exp(model_log_variance)
        else:
            if model_output.shape[1] != C:
                raise ConfigError(f"fixed Σ needs the model to output {C} channels (ε); got {model_output.shape[1]}")
            if self.model_var_type == "fixed_large":
                var, log_var = self.fixed_large_variance, torch.log(self.fixed_large_variance)
            else:
                var, log_var = self.posterior_variance, self.posterior_log_variance_clipped
            model_variance = _extract(var, t, x).expand_as(x)
            model_log_variance = _extract(log_var, t, x).expand_as(x)

        pred_xstart = self.predict_xstart_from_eps(x, t, model_output)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        model_mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": model_mean, "variance": model_variance, "log_variance": model_log_variance,
                "pred_xstart": pred_xstart, "extra": None}

    # ------------------------------------------------------------------- losses
    def _vb_terms_bpd(self, model, x_start, x_t, t, clip_denoised=True, model_kwargs=None) -> dict:
        """One term of the variational bound, in bits per dimension.

        t > 0: L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)); t = 0: L_0 = −log p_θ(x_0 | x_1),
        the discretized Gaussian decoder (DDPM §3.3).
        """
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / math.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])
        decoder_nll = mean_flat(decoder_nll) / math.log(2.0)
        return {"output": torch.where(t == 0, decoder_nll, kl), "pred_xstart": out["pred_xstart"]}

    def min_snr_weight(self, t: torch.Tensor, gamma: float) -> torch.Tensor:
        """Min-SNR-γ weights for ε-prediction (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
        Weighting Strategy", eq. 8 rewritten for ε): w_t = min(SNR_t, γ) / SNR_t with SNR_t = ᾱ_t / (1 − ᾱ_t).

        Why: training at every t is many denoising tasks at once, and their gradients conflict (Hang et al.
        §3). In ε-prediction the loss ‖ε − ε̂‖² equals SNR_t · ‖x₀ − x̂₀‖², so measured on the clean image each
        step's x̂₀ error is weighted by SNR_t: the low-noise steps (large SNR_t) dominate, though their ε error
        is the largest of all and a small x̂₀ error there matters little to the samples. Capping that effective
        weight at γ (w_t · SNR_t = min(SNR_t, γ)) stops them from dominating; steps with SNR_t ≤ γ keep weight 1.
        Shape (N,), float32. Beyond the paper: DiT weights all t equally.
        """
        if gamma <= 0:
            raise ConfigError(f"min-SNR gamma must be > 0, got {gamma}")
        abar = self.alphas_cumprod.to(t.device)[t]                              # float64, (N,)
        snr = abar / (1.0 - abar)
        return (torch.clamp(snr, max=gamma) / snr).float()

    def training_losses(self, model, x_start: torch.Tensor, t: torch.Tensor, model_kwargs: dict | None = None,
                        noise: torch.Tensor | None = None, min_snr_gamma: float | None = None) -> dict:
        """The hybrid loss of DiT (§2, §4; Improved DDPM §3.1), per sample.

        Returns {"loss", "mse", "vb"} each of shape (N,): mse = ‖ε − ε_θ‖² (mean over dimensions);
        vb = L_vlb with the ε output detached, so the bound trains only Σ; loss = mse + vb.
        For fixed Σ there is no vb term (it is returned as zeros). With `min_snr_gamma` (an option beyond
        the paper) the ε term is weighted: loss = w_t · mse + vb, w_t from `min_snr_weight`; "mse" stays
        the unweighted ‖ε − ε_θ‖² so that logs compare across weightings.
        """
        model_kwargs = model_kwargs or {}
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise=noise)
        terms: dict = {}

        if self.loss_type in ("kl", "rescaled_kl"):
            terms["loss"] = self._vb_terms_bpd(model, x_start, x_t, t, clip_denoised=False, model_kwargs=model_kwargs)["output"]
            if self.loss_type == "rescaled_kl":
                terms["loss"] = terms["loss"] * self.num_timesteps
            return terms

        model_output = model(x_t, self._model_timesteps(t), **model_kwargs)
        C = x_t.shape[1]
        if self.model_var_type == "learned_range":
            if model_output.shape[1] != 2 * C:
                raise ConfigError(f"learned Σ needs the model to output {2 * C} channels (ε and v); got {model_output.shape[1]}")
            model_output, model_var_values = torch.split(model_output, C, dim=1)
            # The bound sees a frozen ε so that it only trains the variance (Improved DDPM §3.1).
            frozen = torch.cat([model_output.detach(), model_var_values], dim=1)
            vb = self._vb_terms_bpd(lambda *args, **kwargs: frozen, x_start, x_t, t, clip_denoised=False)["output"]
            if self.loss_type == "rescaled_mse":
                vb = vb * self.num_timesteps / 1000.0     # the bound was derived for T = 1000
            terms["vb"] = vb
        else:
            if model_output.shape[1] != C:
                raise ConfigError(f"fixed Σ needs the model to output {C} channels (ε); got {model_output.shape[1]}")
            terms["vb"] = torch.zeros(x_t.shape[0], device=x_t.device, dtype=model_output.dtype)

        terms["mse"] = mean_flat((noise - model_output) ** 2)
        if min_snr_gamma is None:
            terms["loss"] = terms["mse"] + terms["vb"]
        else:
            terms["loss"] = self.min_snr_weight(t, min_snr_gamma) * terms["mse"] + terms["vb"]
        return terms

    # ----------------------------------------------------------------- sampling
    def p_sample(self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None, generator=None) -> dict:
        """One ancestral step: x_{t−1} = μ_θ + σ_θ z, z ~ N(0, I) (no noise at t = 0)."""
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn, model_kwargs=model_kwargs)
        noise = randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        nonzero_mask = (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        sample = out["mean"] + nonzero_mask * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def _initial_noise(self, shape, noise, device, generator):
        if noise is not None:
            if tuple(noise.shape) != tuple(shape):
                raise ConfigError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
            return noise
        return randn(tuple(shape), generator=generator, device=device)

    def _indices(self, progress: bool, desc: str):
        indices = list(range(self.num_timesteps))[::-1]
        return tqdm(indices, desc=desc, leave=False) if progress else indices

    @torch.no_grad()
    def p_sample_loop(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None, model_kwargs=None,
                      device=None, progress=False, generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
        """Ancestral (DDPM) sampling from x_T ~ N(0, I) down to x_0. `generator` makes it deterministic."""
        img = None
        for out in self.p_sample_loop_progressive(model, shape, noise, clip_denoised, denoised_fn, model_kwargs,
                                                  device, progress, generator):
            img = out["sample"]
        return img

    @torch.no_grad()
    def p_sample_loop_progressive(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None,
                                  model_kwargs=None, device=None, progress=False,
                                  generator: torch.Generator | list[torch.Generator] | None = None):
        """The DDPM loop one step at a time: yields {"sample": x_{t−1}, "pred_xstart": x̂_0, "t": t} for t = T−1 … 0."""
        device = device or torch.device("cpu")
        img = self._initial_noise(shape, noise, device, generator)
        for i in self._indices(progress, "DDPM sampling"):
            t = torch.full((shape[0],), i, device=img.device, dtype=torch.long)
            out = self.p_sample(model, img, t, clip_denoised, denoised_fn, model_kwargs, generator)
            img = out["sample"]
            yield {**out, "t": i}

    def ddim_sample(self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None, eta=0.0, generator=None) -> dict:
        """One DDIM step (Song et al., 2021, Eq. 12); eta = 0 is deterministic, eta = 1 is DDPM-like."""
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn, model_kwargs=model_kwargs)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = _extract(self.alphas_cumprod, t, x)
        alpha_bar_prev = _extract(self.alphas_cumprod_prev, t, x)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        mean_pred = out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma ** 2) * eps
        nonzero_mask = (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        noise = randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return {"sample": mean_pred + nonzero_mask * sigma * noise, "pred_xstart": out["pred_xstart"]}

    @torch.no_grad()
    def ddim_sample_loop(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None, model_kwargs=None,
                         device=None, progress=False, eta=0.0, generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
        """DDIM sampling over this process's timesteps (respace with "ddimK" for K steps)."""
        device = device or torch.device("cpu")
        img = self._initial_noise(shape, noise, device, generator)
        for i in self._indices(progress, "DDIM sampling"):
            t = torch.full((shape[0],), i, device=img.device, dtype=torch.long)
            img = self.ddim_sample(model, img, t, clip_denoised, denoised_fn, model_kwargs, eta, generator)["sample"]
        return img


#################################################################################
#                        Respacing (fewer sampling steps)                       #
#################################################################################

def space_timesteps(num_timesteps: int, section_counts) -> set[int]:
    """Which of the original T steps to keep.

    `section_counts` is "ddimK" (K steps at a constant stride, as in DDIM), or a comma-separated list
    / list of ints: the T steps are cut into equal sections and each section keeps that many evenly
    spaced steps ("250" keeps 250 of 1000; "10,15,20" keeps 10, 15, 20 of three thirds).
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ConfigError(f"cannot take exactly {desired} steps of {num_timesteps} with an integer stride")
        try:
            section_counts = [int(x) for x in section_counts.split(",")]
        except ValueError:
            raise ConfigError(f"timestep_respacing must be like '250', '10,20' or 'ddim50'; got {section_counts!r}") from None
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start, kept = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if count < 1 or size < count:
            raise ConfigError(f"cannot take {count} steps from a section of {size} steps")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(stride * j) for j in range(count)]
        start += size
    return set(kept)


class SpacedDiffusion(GaussianDiffusion):
    """The same process seen at a subset S of its timesteps (Improved DDPM §4).

    New betas are chosen so that ᾱ at the kept steps is unchanged: β'_i = 1 − ᾱ_{s_i} / ᾱ_{s_{i−1}}.
    The model is still called with the original timestep values (`timestep_map`).
    """

    def __init__(self, use_timesteps, betas: np.ndarray, **kwargs):
        base = GaussianDiffusion(betas, **kwargs)
        self.use_timesteps = set(use_timesteps)
        self.original_num_steps = base.num_timesteps
        last_alpha_cumprod, new_betas, timestep_map = 1.0, [], []
        for i, alpha_cumprod in enumerate(base.alphas_cumprod.tolist()):
            if i in self.use_timesteps:
                new_betas.append(1 - alpha_cumprod / last_alpha_cumprod)
                last_alpha_cumprod = alpha_cumprod
                timestep_map.append(i)
        self.timestep_map = torch.tensor(timestep_map, dtype=torch.long)
        super().__init__(np.array(new_betas), **kwargs)

    def _model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        return self.timestep_map.to(t.device)[t]


def create_diffusion(timestep_respacing="", noise_schedule: str = "linear", use_kl: bool = False,
                     sigma_small: bool = False, predict_xstart: bool = False, learn_sigma: bool = True,
                     rescale_learned_sigmas: bool = False, diffusion_steps: int = 1000) -> SpacedDiffusion:
    """The diffusion of the official DiT code, with its defaults (§4: linear β 1e-4→0.02, T = 1000, learned Σ).

    timestep_respacing: "" or None for all `diffusion_steps`; "250" for 250 evenly spaced steps;
        "ddim50" for DDIM's constant stride. Training uses ""; the paper samples with "250".
    """
    if predict_xstart:
        raise NotImplementedError("ditlib's diffusion predicts ε (as DiT does); predict_xstart is not supported")
    betas = get_named_beta_schedule(noise_schedule, diffusion_steps)
    if use_kl:
        loss_type = "rescaled_kl"
    elif rescale_learned_sigmas:
        loss_type = "rescaled_mse"
    else:
        loss_type = "mse"
    if timestep_respacing is None or timestep_respacing == "":
        timestep_respacing = [diffusion_steps]
    model_var_type = "learned_range" if learn_sigma else ("fixed_small" if sigma_small else "fixed_large")
    return SpacedDiffusion(space_timesteps(diffusion_steps, timestep_respacing), betas,
                           model_var_type=model_var_type, loss_type=loss_type)
