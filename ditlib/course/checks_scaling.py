"""Checks of lessons 10–11: FID's sample-count bias and the largest per-GPU batch under DDP and FSDP."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

from .feedback import Problem, call, exercise

__all__ = ["check_extrapolate_fid", "check_max_batch_per_gpu"]

#################################################################################
#        Lesson 10: FID's sample-count bias, FID(n) ≈ FID_∞ + k / n             #
#################################################################################

_FIDX_HINTS = {"TypeError": "check the signature extrapolate_fid(ns, fids) and return the pair (fid_inf, k)",
               "default": "fit fids ≈ fid_inf + k / n by least squares, e.g. np.polyfit(1 / n, fids, 1)"}


def _two_numbers(out, what: str) -> tuple:
    if out is None:
        raise Problem("Your function returned None — did you forget the `return` statement?")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Problem(f"Return the pair {what} as a tuple of two numbers; you returned a {type(out).__name__}"
                      + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "") + ".")
    try:
        return tuple(float(np.asarray(v).reshape(())) for v in out)
    except (TypeError, ValueError):
        raise Problem(f"Both items of {what} must be single numbers.") from None


@exercise("extrapolate_fid")
def check_extrapolate_fid(fn) -> str:
    cases = [([100, 500, 2000, 10000], 0.4, 650.0, "four sample counts"),
             ([50, 50, 200, 200, 1000, 1000], 2.0, 90.0, "repeated sample counts"),
             ([300, 3000], 0.0, 1200.0, "two sample counts (an exact fit)")]
    rng = np.random.default_rng(10)
    for ns, fid_inf, k, case in cases:
        n = np.asarray(ns, dtype=float)
        fids = fid_inf + k / n + rng.normal(0, 0.05, size=n.shape) * (len(ns) > 2)
        got = _two_numbers(call(fn, (list(ns), list(fids)), _FIDX_HINTS), "(fid_inf, k)")
        slope, intercept = np.polyfit(1 / n, fids, 1)
        want = (intercept, slope)
        close = lambda a, b: all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6) for x, y in zip(a, b))  # noqa: E731
        if close(got, want):
            continue
        if close(got, want[::-1]):
            raise Problem("The two numbers are swapped: return (fid_inf, k), the intercept first, then the slope.")
        s_n, i_n = np.polyfit(n, fids, 1)
        if close(got, (i_n, s_n)):
            raise Problem("You fitted FID against n; the bias goes like 1/n, so regress the FIDs on 1 / n.")
        if math.isclose(got[0], float(np.min(fids)), rel_tol=1e-6):
            raise Problem("FID_∞ is not the smallest measured FID: it is the intercept of a straight-line fit "
                          "of FID against 1 / n (the value as n → ∞).")
        raise Problem(f"On {case} your (fid_inf, k) = ({got[0]:.4g}, {got[1]:.4g}) but the least-squares fit of "
                      f"FID = fid_inf + k / n gives ({want[0]:.4g}, {want[1]:.4g}).")
    return f"extrapolate_fid recovers FID_∞ and k by least squares in 1/n on {len(cases)} test cases."


#################################################################################
#     Lesson 11: the largest per-GPU batch that fits, DDP vs FSDP               #
#################################################################################

_BATCH_HINTS = {"TypeError": "check the signature max_batch_per_gpu(num_params, activation_bytes_per_image, "
                             "gpu_gb, num_gpus, fsdp)",
                "default": "static = 20 bytes per parameter (÷ num_gpus under FSDP), then the largest whole b with "
                           "static + b · activation_bytes_per_image ≤ gpu_gb · 10⁹"}
_COPIES = {16: "forgot the EMA weights (or one of AdamW's two moments)", 12: "left out two of the five copies",
           8: "counted only the weights and their gradients", 4: "counted only the weights",
           24: "counted one copy too many"}


def _batch(num_params, act, gpu_bytes, num_gpus, fsdp, *, per_param=20, shard=None, act_shard=1,
           rounding=math.floor, strict=False) -> int:
    """The per-GPU batch under a given (possibly wrong) way of counting, in exact arithmetic (no float rounding)."""
    shard = fsdp if shard is None else shard
    static = Fraction(per_param * num_params, num_gpus if shard else 1)
    b = (Fraction(gpu_bytes) - static) / Fraction(act, act_shard)
    return max(rounding(b) - (1 if strict and b == int(b) else 0), 0)


def _one_number(out) -> float:
    if out is None:
        raise Problem("Your function returned None — did you forget the `return` statement?")
    if isinstance(out, (torch.Tensor, np.ndarray)):
        if (out.numel() if isinstance(out, torch.Tensor) else out.size) != 1:
            raise Problem(f"Return one whole number of images; you returned a {type(out).__name__} of shape "
                          f"{tuple(out.shape)}.")
        out = out.item()
    if isinstance(out, np.generic):
        out = out.item()
    if isinstance(out, bool) or not isinstance(out, (int, float)):
        raise Problem(f"Return one whole number of images (an int); you returned a {type(out).__name__}.")
    if not math.isfinite(out):
        raise Problem(f"Your function returned {out} — return a whole number of images (an int ≥ 0).")
    return out


@exercise("max_batch_per_gpu")
def check_max_batch_per_gpu(fn) -> str:
    cases = [(675_129_632, 660_000_000, 80, 8, False, "a DiT-XL/2-like model under DDP on 8 GPUs"),
             (675_129_632, 660_000_000, 80, 8, True, "a DiT-XL/2-like model under FSDP on 8 GPUs"),
             (130_000_000, 120_000_000, 24, 1, False, "a DiT-B/2-like model on one GPU"),
             (32_000_000, 50_000_000, 16, 1, True, "a small model under FSDP on one GPU (nothing to shard)"),
             (458_000_000, 400_000_000, 40, 16, False, "a DiT-L/2-like model under DDP on 16 GPUs"),
             (458_000_000, 400_000_000, 40, 16, True, "a DiT-L/2-like model under FSDP on 16 GPUs"),
             (3_000_000_000, 480_000_000, 40, 8, False, "a 3B-parameter model whose 60 GB of static memory do "
                                                        "not fit a 40 GB GPU under DDP"),
             (3_000_000_000, 480_000_000, 40, 8, True, "the same 3B-parameter model under FSDP on 8 GPUs"),
             (1_000_000_000, 1_000_000_000, 40, 4, True, "a case exactly at the boundary (5 GB static + 35 "
                                                         "images of 1 GB = 40 GB)")]
    for num_params, act, gpu_gb, num_gpus, fsdp, case in cases:
        got = _one_number(call(fn, (num_params, act, gpu_gb, num_gpus, fsdp), _BATCH_HINTS))
        args = (num_params, act, gpu_gb * 10 ** 9, num_gpus, fsdp)
        want = _batch(*args)
        if got == want:
            continue
        static = num_params * 20 / (num_gpus if fsdp else 1)
        near = lambda v: math.isclose(got, v, rel_tol=1e-6)  # noqa: E731
        if any(near(v * scale) for v in (static, static + want * act, gpu_gb * 1e9 - static)
               for scale in (1, 1e-9, 2 ** -30)):
            raise Problem(f"On {case} you returned {got:g}, a memory figure; return a batch size: the number of "
                          f"images per GPU, the largest b with static + b · activation_bytes_per_image "
                          f"≤ gpu_gb · 10⁹.")
        if got < 0:
            raise Problem(f"On {case} you returned a negative batch ({got:g}): when even the static memory does not "
                          f"fit, no image fits — return 0.")
        if got != int(got):
            raise Problem(f"On {case} you returned {got:g}, not a whole number of images: round down to the largest "
                          f"batch that fits (math.floor, or // on the bytes) and return an int.")
        variants = [
            (_batch(*args, shard=True), "DDP does not shard: every GPU keeps the full weights, gradients, AdamW "
                                        "state and EMA, so only FSDP divides the 20 bytes per parameter by num_gpus."),
            (_batch(*args, shard=False), "With fsdp=True the weights, gradients, AdamW state and EMA are sharded: each "
                                         "GPU holds 20 · num_params / num_gpus bytes of them."),
            (_batch(*args, act_shard=num_gpus), "Activations are not sharded: each GPU stores the activations of its "
                                                "own images, under FSDP too, so every image costs the full "
                                                "activation_bytes_per_image on its GPU."),
            (_batch(*args[:2], gpu_gb * 2 ** 30, *args[3:]),
             "Use gigabytes of 10⁹ bytes (GB), not gibibytes of 2³⁰ bytes: an 80 GB GPU holds 80 · 10⁹ bytes."),
            (_batch(*args, rounding=math.ceil), "You rounded up (math.ceil, or round() of a fraction ≥ ½), so that "
                                                "batch does not fit: round down to the largest whole batch that fits "
                                                "(math.floor, or //)."),
            (_batch(*args, strict=True), "A batch that fills the GPU exactly still fits: the condition is static + "
                                         "b · activation_bytes_per_image ≤ gpu_gb · 10⁹, with ≤, not <."),
            (_batch(*args) * num_gpus, "That is the global batch of all GPUs; return the batch of one GPU."),
            (_batch(*args, per_param=5), "Each fp32 number takes 4 bytes: 5 copies × 4 bytes = 20 bytes per "
                                         "parameter."),
        ] + [(_batch(*args, per_param=k), f"You counted {k} bytes per parameter ({k // 4} fp32 "
                                          f"cop{'y' if k == 4 else 'ies'}): you {why}; there are 20 bytes, 5 fp32 "
                                          f"copies: the weights, their gradients, AdamW's two moments and the EMA "
                                          f"weights.") for k, why in _COPIES.items()]
        for value, message in variants:
            if value != want and got == value:
                raise Problem(f"On {case}: {message}")
        raise Problem(f"On {case} ({num_params:,} parameters, {act / 1e6:g} MB of activations per image, "
                      f"{num_gpus} GPU(s) of {gpu_gb} GB, fsdp={fsdp}) you returned {got:g}; the largest batch that "
                      f"fits is {want} (static {static / 1e9:.4g} GB per GPU).")
    return f"max_batch_per_gpu gives the largest per-GPU batch under DDP and FSDP on {len(cases)} test cases."
