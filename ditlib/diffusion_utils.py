"""The pieces of the diffusion that are not the process itself (`ditlib.diffusion` re-exports them).

The β schedules of DDPM (linear) and Improved DDPM (cosine), the Gaussian KL divergence and the
discretised Gaussian log-likelihood of the variational bound (DDPM §3.3, Improved DDPM §3.1), and
seeded noise that does not depend on the batch a sample is drawn in. Arrays are float64.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .errors import ConfigError


#################################################################################
#                              Noise schedules                                  #
#################################################################################

def get_named_beta_schedule(schedule_name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """β_1..β_T as float64.

    "linear": DDPM's β from 1e-4 to 0.02 over 1000 steps (rescaled so that other T give the same curve);
    the schedule DiT uses. "cosine": Improved DDPM Eq. 17, ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2), s = 0.008,
    β clipped at 0.999.
    """
    if schedule_name == "linear":
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    if schedule_name == "cosine":
        return betas_for_alpha_bar(num_diffusion_timesteps,
                                   lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise ConfigError(f"unknown noise schedule {schedule_name!r}; choose 'linear' or 'cosine'")


def betas_for_alpha_bar(num_diffusion_timesteps: int, alpha_bar: Callable[[float], float],
                        max_beta: float = 0.999) -> np.ndarray:
    """β_t = 1 − ᾱ(t/T) / ᾱ((t−1)/T) for a continuous ᾱ on [0, 1], clipped at `max_beta`."""
    betas = []
    for i in range(num_diffusion_timesteps):
        t1, t2 = i / num_diffusion_timesteps, (i + 1) / num_diffusion_timesteps
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.array(betas, dtype=np.float64)


#################################################################################
#                         Gaussian helpers (KL and NLL)                         #
#################################################################################

def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension: (N, ...) -> (N,)."""
    return x.mean(dim=list(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x) by the tanh approximation used by DDPM/ADM (and so by DiT's loss)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, *, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log p(x) of data in [−1, 1] quantised to 256 levels under N(means, e^{2·log_scales}) (DDPM §3.3).

    Each pixel value owns the bin [x − 1/255, x + 1/255]; the two edge bins extend to ±∞.
    Returns elementwise log-likelihoods in nats, shape of x.
    """
    if not x.shape == means.shape == log_scales.shape:
        raise ConfigError(f"shapes differ: x {tuple(x.shape)}, means {tuple(means.shape)}, log_scales {tuple(log_scales.shape)}")
    centered_x = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def randn(shape, generator=None, device=None, dtype=None) -> torch.Tensor:
    """N(0, I) noise of `shape`. `generator` is one torch.Generator (or None: the global RNG), or a list
    of generators, one per sample: row i is drawn from generator i, so a sample's noise does not depend
    on which batch (or which process of a distributed run) it is drawn in."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ConfigError(f"{len(generator)} generators for a batch of {shape[0]}: pass one per sample")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=device, dtype=dtype) for g in generator])
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)
