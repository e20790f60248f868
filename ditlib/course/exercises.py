"""Self-checks for the course's notebook exercises, all in one namespace for the lessons.

A learner implements a function in a notebook and calls its check, e.g.
``exercises.check_q_sample(q_sample)``; ``display(feedback)`` shows a green ✓ or red ✗ box with one
friendly sentence, and ``exercises.require(feedback)`` turns a failure into an ``AssertionError``
(the hidden tests of the autograder). ``CHECKS`` maps each exercise name to its check.

The checks live in ``checks_diffusion`` (lessons 01–03, the hybrid loss of 03 included), ``checks_latent`` (04, the
scaled latents DiT trains on), ``checks_transformer`` (05–06), ``checks_model``
(the DiT forward, the training step, guidance: 06, 07, 09), ``checks_sampling`` (the DDPM chain, respacing,
DDIM, the Fréchet distance: 03, 08, 10) and ``checks_scaling`` (10–11); what they share, and the contract
every check keeps, in ``feedback``.
"""
from __future__ import annotations

from .feedback import CHECKS, Feedback, require
# In lesson order, so that CHECKS (filled as each check is defined) lists the exercises in that order too.
from .checks_diffusion import check_hybrid_loss, check_posterior_mean_variance, check_q_sample, check_sample_loss
from .checks_latent import check_scaled_latents
from .checks_transformer import (check_adaln_zero_block, check_embed_timestep, check_modulate,
                                 check_multi_head_attention, check_patchify, check_sincos_1d)
from .checks_model import check_dit_forward, check_forward_with_cfg, check_train_step
from .checks_sampling import check_ddim_step, check_ddpm_sampling_loop, check_frechet_distance, check_respaced_betas
from .checks_scaling import check_extrapolate_fid, check_max_batch_per_gpu

__all__ = ["Feedback", "require", "CHECKS", "check_q_sample", "check_sample_loss",
           "check_posterior_mean_variance", "check_hybrid_loss", "check_scaled_latents", "check_patchify",
           "check_sincos_1d", "check_multi_head_attention", "check_embed_timestep", "check_modulate",
           "check_adaln_zero_block", "check_dit_forward", "check_train_step", "check_forward_with_cfg",
           "check_ddpm_sampling_loop", "check_respaced_betas", "check_ddim_step", "check_frechet_distance",
           "check_extrapolate_fid", "check_max_batch_per_gpu"]
