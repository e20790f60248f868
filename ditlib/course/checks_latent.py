"""Check of the latent lesson 04: `scaled_latents(codec, images, generator)`, DiT's training data built by hand —
posterior samples z = μ + σ·ε of q(z|x), times the scale factor s = 1 / std(z) measured over all their elements.

The check runs the learner's function on a small `LatentCodec` whose `AutoencoderKL` has random weights drawn
from a private generator, with a posterior σ large enough (about half the spread of μ) that a mean, a sample
and a sample with another ε are told apart. It refuses the library routines that measure the factor or build
the training latents (`call_refusing`); `codec.encode` and the posterior's `.mean`, `.std` and `.sample` are
allowed."""
from __future__ import annotations

import math

import numpy as np
import torch

from .feedback import Problem, as_tensor, call_refusing, exercise, expect_finite, expect_shape, is_close, randn

__all__ = ["check_scaled_latents"]

#################################################################################
#     Lesson 04: scaled latents, z = s·(μ + σ·ε) with s = 1 / std(μ + σ·ε)       #
#################################################################################

_HINTS = {"broadcast": "draw ε with the shape of the posterior mean, torch.randn(q.mean.shape, generator=generator), "
                       "not with the shape of the images",
          "AttributeError": "codec.encode(images) returns the posterior q(z|x), with .mean, .std and .sample(generator)",
          "TypeError": "check the signature scaled_latents(codec, images, generator) and use torch operations",
          "default": "encode with q = codec.encode(images), sample z = q.mean + q.std·ε, then s = 1 / z.std() and "
                     "return (z·s, s)"}
_REFUSAL = ("Your function calls {name}: this exercise asks you to build the scaled latents yourself — encode with "
            "codec.encode(images), sample, and measure s on your samples.")
_CODEC_SCALE = 0.37          # the test codec's stored factor, far from the one its samples need (about 0.8)
_C = 4                       # latent channels of the test codec


def _shortcuts() -> dict:
    from ..latents import LatentDataset, build_latent_dataset, encode_dataset, load_or_encode
    from ..vae import LatentCodec, estimate_scale_factor
    return {estimate_scale_factor: "ditlib's estimate_scale_factor", encode_dataset: "ditlib's encode_dataset",
            load_or_encode: "ditlib's load_or_encode", build_latent_dataset: "ditlib's build_latent_dataset",
            LatentDataset.get_batch: "LatentDataset.get_batch",
            LatentCodec.encode_sample: "codec.encode_sample (it multiplies by the stored codec.scale_factor)"}


def _test_codec(g: torch.Generator):
    """A LatentCodec 32×32×1 -> 8×8×4 with random weights from `g`: μ spread ≈ 1 around ≈ 0.75, σ ≈ 0.2–1.2."""
    from ..autoencoder import AutoencoderKL
    from ..vae import LatentCodec

    with torch.random.fork_rng(devices=[]):            # the modules' own init must not touch the global RNG
        vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 3,
                            up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16),
                            layers_per_block=1, latent_channels=_C, norm_num_groups=4)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if p.ndim > 1:
                p.copy_(randn(g, p.shape) / math.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * randn(g, p.shape))
            else:
                p.copy_(0.1 * randn(g, p.shape))
        w, b = vae.quant_conv.weight, vae.quant_conv.bias      # the moments: μ (first C), then log σ²
        w[:_C] *= 1.5
        b[:_C] += 0.5                                          # a non-zero mean: std and root mean square differ
        w[_C:] *= 0.7
        b[_C:] = -1.0 + 0.1 * randn(g, (_C,))                  # log σ² ≈ −1 ± 0.7: σ about half the spread of μ
    return LatentCodec(vae, _CODEC_SCALE, image_size=32, name="random test VAE")


def _stds(x: torch.Tensor) -> tuple:
    """The standard deviation over all elements, with and without Bessel's correction (both are accepted)."""
    return float(x.std()), float(x.std(correction=0))


def _near(value: float, targets, rel: float = 1e-4) -> bool:
    return any(math.isclose(value, float(t), rel_tol=rel) for t in targets)


def _pair(out) -> tuple:
    """(z, s) from the learner's output, or a Problem naming what came back instead of a (tensor, float) pair."""
    if out is None:
        as_tensor(out)                                  # the "forgot the return statement" message
    if isinstance(out, (torch.Tensor, np.ndarray)):
        raise Problem("Your function returned a single array; return the pair (z, s) — the scaled latents and the "
                      "scale factor, e.g. `return z * s, s`.")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        what = f"a {type(out).__name__} of length {len(out)}" if isinstance(out, (tuple, list)) else f"a {type(out).__name__}"
        raise Problem(f"Your function returned {what}; return the pair (z, s) — the scaled latents and the scale "
                      f"factor, e.g. `return z * s, s`.")
    return out


def _scale(s) -> float:
    """The learner's s as a float, or a Problem: one number (not one per channel), a Python float, finite, non-zero."""
    if isinstance(s, (torch.Tensor, np.ndarray)):
        if np.prod(s.shape) > 1:
            raise Problem(f"Your s has {int(np.prod(s.shape))} numbers (shape {tuple(s.shape)}), one per channel: "
                          f"DiT scales every latent by one number, 1 / std over all elements at once (z.std(), not "
                          f"z.std(dim=(0, 2, 3))).")
        raise Problem("Your s is a 0-d tensor; return it as a Python float, e.g. s = 1.0 / z.std().item().")
    if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)):
        raise Problem(f"Your s is a {type(s).__name__}; return the scale factor as a Python float, e.g. "
                      f"s = 1.0 / z.std().item().")
    s = float(s)
    if not math.isfinite(s) or s == 0:
        raise Problem(f"Your s is {s} — it should be 1 / std of the unscaled samples, a positive number.")
    return s


def _diagnose(z: torch.Tensor, s: float, q, eps: torch.Tensor, case: str) -> None:
    """Pass if (z, s) is (s·sample, 1 / std(sample)) for sample = μ + σ·ε; else a Problem naming the mistake."""
    mean, std = q.mean.double(), q.std.double()
    sample = mean + std * eps                                            # (N, C, h, w), unscaled
    refs = [1 / v for v in _stds(sample)]
    good = lambda x: is_close(z, x, 1e-4, 1e-4)  # noqa: E731
    if _near(s, refs) and good(sample * s):
        return
    unscaled = z.double() / s                                            # what z is before the learner's s
    same = lambda x: is_close(unscaled, x, 1e-4, 1e-4)  # noqa: E731
    if same(mean):
        raise Problem("You returned the posterior mean, not a sample: DiT trains on posterior samples z = μ + σ·ε "
                      "(a fresh ε each time an image is used), so draw ε and add σ·ε to q.mean.")
    if good(sample / sample.std(dim=(0, 2, 3), keepdim=True)) or good(sample / sample.std(dim=(0, 2, 3),
                                                                                        correction=0, keepdim=True)):
        raise Problem("You scaled each channel by its own std: DiT multiplies all latents by one number s, measured "
                      "over all elements at once (z.std(), not z.std(dim=(0, 2, 3))).")
    if _near(s, refs) and good(sample):
        raise Problem("You forgot to scale: s is right, but the z you returned is the unscaled sample — return z·s, "
                      "the latents DiT trains on.")
    if _near(s, refs) and good(sample / s):
        raise Problem("You divided the samples by s: s = 1 / std is the factor that multiplies, so return z·s.")
    if _near(s, _stds(sample)):
        if good(sample * refs[0]) or good(sample * refs[1]):
            raise Problem("Your z is right, but s is the standard deviation itself (you divided by it): return "
                          "s = 1 / std, the factor that multiplies the unscaled samples.")
        raise Problem("Your s is the standard deviation itself; the scale factor is its reciprocal, s = 1 / std of "
                      "the samples, so that s·z has standard deviation 1.")
    if same(sample):
        if _near(s, [1 / v for v in _stds(mean)]):
            raise Problem("You measured s on the posterior means instead of the samples: DiT trains on samples, whose "
                          "spread includes σ, so s = 1 / std(μ + σ·ε).")
        if _near(s, [_CODEC_SCALE], rel=1e-6):
            raise Problem("You used codec.scale_factor, the factor stored with the weights: this exercise measures it "
                          "— s = 1 / std of your unscaled samples.")
        if _near(s, [1 / v ** 2 for v in _stds(sample)]):
            raise Problem("Your s is 1 / variance; the scale factor is 1 / std — take the square root of the variance.")
        if _near(s, [1 / float(sample.square().mean().sqrt())]):
            raise Problem("It looks like you forgot to subtract the mean: s = 1 / std of the samples (z.std()), not "
                          "1 / root mean square.")
        raise Problem(f"Your z is the right sample times your s, but s = {s:.4g} should be 1 / std of the unscaled "
                      f"samples = {refs[0]:.4g} on {case}, measured over all elements at once.")
    if same(mean + std.square() * eps):
        raise Problem("Your σ is the variance: the posterior's standard deviation is exp(logvar / 2), not "
                      "exp(logvar) — use q.std.")
    noise = (unscaled - mean) / std                                      # the ε the learner must have used
    if abs(float(noise.std()) - 1) < 0.25 and abs(float(noise.mean())) < 0.25:
        raise Problem("Your latents look like posterior samples with another ε: draw ε with torch.randn(mean.shape, "
                      "generator=generator) once, after encoding (or call q.sample(generator)), and use that one "
                      "sample both for s and for z.")
    err = float((z.double() - sample * refs[0]).abs().max())
    raise Problem(f"Your z has the right shape but wrong values on {case} (largest error {err:.3g}) — it should be "
                  f"s·(μ + σ·ε) with ε = torch.randn(mean.shape, generator=generator) and s = 1 / std(μ + σ·ε).")


@exercise("scaled_latents")
def check_scaled_latents(fn) -> str:
    cases = [(4, 11, "a batch of 4 random images"), (1, 12, "a single image (N = 1)"),
             (7, 13, "a batch of 7 random images")]
    g = torch.Generator().manual_seed(40)
    codec, shortcuts = _test_codec(g), _shortcuts()
    for n, seed, case in cases:
        images = torch.rand((n, 1, 32, 32), generator=g) * 2 - 1                # (N, 1, 32, 32) in [-1, 1]
        with torch.random.fork_rng(devices=[]):         # a learner's use of the global RNG leaves it alone too
            out = call_refusing(fn, (codec, images.clone(), torch.Generator().manual_seed(seed)), _HINTS,
                                shortcuts, _REFUSAL)
        z, s = _pair(out)
        z = as_tensor(z, name="z")
        expect_shape(z, (n, _C, 8, 8), name="z", hint=" = (N, C, h, w), the shape of codec.encode(images).mean")
        expect_finite(z, name="z")
        s = _scale(s)
        q = codec.encode(images)
        eps = torch.randn(q.mean.shape, generator=torch.Generator().manual_seed(seed)).double()   # as .sample draws it
        _diagnose(z, s, q, eps, case)
    return (f"scaled_latents returns posterior samples times s = 1 / std(samples), with unit variance, on "
            f"{len(cases)} test cases.")
