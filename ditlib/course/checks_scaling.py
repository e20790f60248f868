"""Checks of lessons 10–11: FID's sample-count bias and the memory per GPU of DDP and FSDP."""
from __future__ import annotations

import math

import numpy as np

from .feedback import Problem, call, exercise

__all__ = ["check_extrapolate_fid", "check_static_memory_gb"]

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
#          Lesson 11: memory per GPU before activations, DDP vs FSDP            #
#################################################################################

_MEM_HINTS = {"TypeError": "check the signature static_memory_gb(num_params, num_gpus, fsdp)",
              "default": "5 fp32 copies (weights, gradients, 2 AdamW moments, EMA) of 4 bytes per parameter"}


@exercise("static_memory_gb")
def check_static_memory_gb(fn) -> str:
    cases = [(675_129_632, 8, False), (675_129_632, 8, True), (32_000_000, 1, True), (130_000_000, 4, True),
             (458_000_000, 16, False)]
    for num_params, num_gpus, fsdp in cases:
        out = call(fn, (num_params, num_gpus, fsdp), _MEM_HINTS)
        if out is None:
            raise Problem("Your function returned None — did you forget the `return` statement?")
        try:
            got = float(np.asarray(out).reshape(()))
        except (TypeError, ValueError):
            raise Problem(f"Return one number of gigabytes; you returned a {type(out).__name__}.") from None
        total = num_params * 20 / 1e9
        want = total / num_gpus if fsdp else total
        near = lambda v: math.isclose(got, v, rel_tol=1e-6)  # noqa: E731
        if near(want):
            continue
        if near(total / num_gpus) and not fsdp:
            raise Problem("DDP does not shard: every GPU keeps the full weights, gradients and optimizer state, "
                          "so only FSDP divides by num_gpus.")
        if near(total) and fsdp and num_gpus > 1:
            raise Problem("With fsdp=True the states are sharded: divide the total by num_gpus.")
        if near(want * 2 ** 30 / 1e9) or near(want * 1e9 / 2 ** 30):
            raise Problem("Use gigabytes of 10⁹ bytes (GB), not gibibytes of 2³⁰ bytes.")
        copies = got * 1e9 / (num_params * 4) * (num_gpus if fsdp else 1)
        if copies > 0 and abs(copies - round(copies)) < 1e-6:
            raise Problem(f"You counted {round(copies)} fp32 copies per parameter; there are 5: the weights, "
                          f"their gradients, AdamW's two moments and the EMA weights.")
        if near(want / 4) or near(want / 8):
            raise Problem("Each fp32 number takes 4 bytes: multiply the count of numbers by 4.")
        raise Problem(f"For {num_params:,} parameters on {num_gpus} GPU(s) with fsdp={fsdp} you returned "
                      f"{got:.4g} GB; expected {want:.4g} GB (5 fp32 copies × 4 bytes per parameter"
                      f"{', divided by num_gpus' if fsdp else ''}).")
    return f"static_memory_gb gives the per-GPU memory of DDP and FSDP on {len(cases)} test cases."
