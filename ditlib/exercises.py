"""Self-checks for the course's notebook exercises.

A learner implements a function in a notebook and calls its check, e.g. ``check_q_sample(q_sample)``.

Contract of every ``check_<name>(fn)``:

* it calls ``fn`` on a few small, deterministic inputs (edge cases included: a batch of 1, t = 0,
  t = T−1, odd shapes, float32 and float64) and compares the results with a reference written here
  in plain torch;
* it returns a :class:`Feedback` and never raises for a mistake in ``fn``: exceptions (including
  ``NotImplementedError``, the placeholder of the student release), ``None``, NumPy arrays, wrong
  shapes, NaNs and wrong values all become a failed Feedback whose message is one friendly sentence;
* wrong values are diagnosed by comparing with known-wrong variants computed here (a missing square
  root, swapped coefficients, …), so the message names the likely mistake and the formula to use;
* messages are deterministic (no timings, no random numbers in success messages), and the inputs
  come from a private ``torch.Generator``, so the global random state is left alone.

``bool(feedback)`` is ``feedback.passed``; Jupyter renders it as a green ✓ or red ✗ box.
``require(feedback)`` turns a failure into an ``AssertionError`` (for autograders), and ``CHECKS``
maps each exercise name to its check function.
"""
from __future__ import annotations

import functools
import html
import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Feedback", "require", "CHECKS", "check_q_sample", "check_reparameterized_sample",
           "check_posterior_mean_variance", "check_latent_scale_factor", "check_patchify", "check_sincos_1d",
           "check_modulate", "check_adaln_zero_block", "check_cfg", "check_extrapolate_fid", "check_static_memory_gb"]


@dataclass(frozen=True)
class Feedback:
    """The result of a check: truthy when passed; ``str()`` is the message."""
    passed: bool
    message: str
    exercise: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message

    def _text(self) -> str:
        return self.message.removeprefix("✓ ")

    def __repr__(self) -> str:
        return f"{'✓' if self.passed else '✗'} {self.exercise}: {self._text()}"

    def _repr_html_(self) -> str:
        color, background, mark = ("#1b5e20", "#e8f5e9", "✓") if self.passed else ("#b71c1c", "#fdecea", "✗")
        return (f'<div style="border-left:4px solid {color};background:{background};color:{color};'
                f'padding:6px 10px;margin:4px 0;font-family:sans-serif">'
                f'<b>{mark} {html.escape(self.exercise)}</b>: {html.escape(self._text())}</div>')


def require(feedback: Feedback) -> Feedback:
    """Raise AssertionError(feedback.message) if the check failed; otherwise return the feedback."""
    if not isinstance(feedback, Feedback):
        raise TypeError(f"require expects the Feedback returned by a check, got {type(feedback).__name__}")
    if not feedback.passed:
        raise AssertionError(feedback.message)
    return feedback


CHECKS: dict = {}

#################################################################################
#                                Shared helpers                                 #
#################################################################################


class _Problem(Exception):
    """Raised inside a check at the first problem found; its text becomes the Feedback message."""


def _exercise(name: str):
    """Decorator: turns a check body (fn -> success text) into a check that always returns a Feedback."""
    def wrap(body):
        @functools.wraps(body)
        def check(fn) -> Feedback:
            if not callable(fn):
                return Feedback(False, f"check_{name} expects your function itself, e.g. check_{name}({name}), "
                                       f"but it got a {type(fn).__name__}.", name)
            try:
                return Feedback(True, "✓ Correct: " + body(fn), name)
            except _Problem as problem:
                return Feedback(False, str(problem), name)
            except Exception as e:  # the learner's output broke the checker: still answer in one sentence
                return Feedback(False, f"The checker could not handle your output ({type(e).__name__}: {_short(e)}) "
                                       f"— make sure your function returns what the exercise asks for.", name)
        CHECKS[name] = check
        return check
    return wrap


def _short(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = lines[0].strip().rstrip(".") if lines else "(no message)"
    return text if len(text) <= 160 else text[:157] + "..."


def _call(fn, args, hints: dict):
    """fn(*args), turning any exception into a one-sentence _Problem (hints: 'broadcast', 'IndexError', 'TypeError', 'default')."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise _Problem("This function is not implemented yet — replace the `raise NotImplementedError()` line "
                       "with your code and run the check again.") from None
    except Exception as e:
        text = str(e)
        if isinstance(e, RuntimeError) and ("size of tensor" in text or "broadcast" in text or "shape" in text):
            hint = hints.get("broadcast", hints["default"])
        else:
            hint = hints.get(type(e).__name__, hints["default"])
        raise _Problem(f"Your function raised {type(e).__name__}: {_short(e)} — {hint}.") from None


def _tensor(out, name: str | None = None, numpy_ok: bool = False) -> torch.Tensor:
    """The learner's output as a tensor, or a _Problem saying why it is not one."""
    it = "Your function returned" if name is None else f"The {name} you returned is"
    if out is None:
        raise _Problem(f"{it} None — did you forget the `return` statement?")
    if isinstance(out, (np.ndarray, np.generic)):
        if numpy_ok:
            return torch.from_numpy(np.array(out))
        raise _Problem(f"{it} a NumPy array — please return a torch tensor (use torch operations such as "
                       f"torch.sqrt instead of NumPy ones).")
    if not isinstance(out, torch.Tensor):
        wanted = "a torch tensor or a NumPy array" if numpy_ok else "a torch tensor"
        raise _Problem(f"{it} a {type(out).__name__}, but {wanted} was expected.")
    return out


def _shape(out: torch.Tensor, expected, known=(), name: str = "output", hint: str = "") -> None:
    got = tuple(out.shape)
    if got == tuple(expected):
        return
    for shape, message in known:
        if got == tuple(shape):
            raise _Problem(message)
    raise _Problem(f"Your {name} has shape {got} but should have shape {tuple(expected)}{hint}.")


def _finite(out: torch.Tensor, name: str = "output") -> None:
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        raise _Problem(f"Your {name} contains NaN or infinite values — look for a square root of a negative "
                       f"number, a log of zero or a division by zero.")


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and torch.allclose(a.detach().double(), b.detach().double(), atol=atol, rtol=rtol)


def _values(out, ref, variants, *, atol, rtol, formula, case, name="output", rerun=None, random_msg=""):
    """Pass if out ≈ ref; else name the first known-wrong variant it matches, or the randomness, or the error."""
    if _close(out, ref, atol, rtol):
        return
    for wrong, message in variants:
        if wrong is not None and _close(out, wrong, atol, rtol):
            raise _Problem(message)
    if rerun is not None and not _close(out, rerun(), 1e-6, 0.0):
        raise _Problem(random_msg)
    err = (out.detach().double() - ref.double()).abs().max().item()
    raise _Problem(f"Your {name} has the right shape but wrong values on {case} (largest error {err:.3g}) "
                   f"— it should be {formula}.")


def _randn(g: torch.Generator, shape, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


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


@_exercise("q_sample")
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
        x, noise, t = _randn(g, shape, dtype), _randn(g, shape, dtype), torch.tensor(t_list)
        args = lambda: (x.clone(), t.clone(), noise.clone(), ab.clone())  # noqa: E731
        out = _tensor(_call(fn, args(), _Q_HINTS))
        _shape(out, shape, hint=" (the same shape as x_start) — reshape ᾱ_t to (B, 1, 1, 1) before multiplying")
        _finite(out)
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
        _values(out, wrap(a), variants, atol=1e-5, rtol=1e-4, case=case, formula="√ᾱ_t·x₀ + √(1−ᾱ_t)·ε",
                rerun=lambda: _tensor(_call(fn, args(), _Q_HINTS)),
                random_msg="Your output changes between two calls with the same inputs — use the `noise` "
                           "argument instead of drawing new noise with torch.randn.")
        if out.dtype != x.dtype:
            raise _Problem(f"Your values are right, but the output is {out.dtype} while x_start is {x.dtype} — "
                           f"cast the coefficients with .to(x_start.dtype) so the output keeps x_start's dtype.")
    return f"q_sample matches √ᾱ_t·x₀ + √(1−ᾱ_t)·ε on {len(cases)} test cases."

#################################################################################
#        Lesson 02: the reparameterization trick, x = μ + exp(log σ)·ε          #
#################################################################################

_R_HINTS = {
    "TypeError": "check the signature reparameterized_sample(mu, log_sigma, eps) and use torch operations",
    "default": "compute μ + exp(log_sigma)·ε with tensor operations (no .item() or NumPy) so gradients can flow",
}


@_exercise("reparameterized_sample")
def check_reparameterized_sample(fn) -> str:
    cases = [((4, 3), torch.float32, "a 4×3 batch"), ((1,), torch.float32, "a single element"),
             ((2, 3, 5), torch.float64, "float64 inputs of shape 2×3×5")]
    g = torch.Generator().manual_seed(2)
    for shape, dtype, case in cases:
        mu0, eps = _randn(g, shape, dtype), _randn(g, shape, dtype)
        ls0 = (torch.rand(shape, generator=g, dtype=torch.float64) * 2.5 - 1.5).to(dtype)
        mu, ls = mu0.clone().requires_grad_(True), ls0.clone().requires_grad_(True)
        out = _tensor(_call(fn, (mu, ls, eps.clone()), _R_HINTS))
        _shape(out, shape, hint=" (the shape of mu)")
        _finite(out)
        m, s, e = mu0.double(), ls0.double(), eps.double()
        variants = [
            (m + (2 * s).exp() * e, "It looks like you used the variance σ² = exp(2·log_sigma) instead of the "
                                    "standard deviation σ = exp(log_sigma): x = μ + σ·ε."),
            (m + s * e, "You used log_sigma itself as σ — exponentiate it first: σ = exp(log_sigma), x = μ + σ·ε."),
            (m + (s / 2).exp() * e, "It looks like you treated log_sigma as a log-variance (σ = exp(log_sigma/2)) "
                                    "— here it is log σ, so σ = exp(log_sigma)."),
            (m - s.exp() * e, "Check the sign: x = μ + σ·ε adds the scaled noise to the mean."),
            (s.exp() + m * e, "You swapped the roles of μ and σ: x = μ + σ·ε, with σ = exp(log_sigma)."),
        ]
        _values(out, m + s.exp() * e, variants, atol=1e-5, rtol=1e-4, case=case, formula="μ + exp(log_sigma)·ε",
                rerun=lambda: _tensor(_call(fn, (mu0.clone(), ls0.clone(), eps.clone()), _R_HINTS)),
                random_msg="Your output changes between two calls with the same inputs — use the `eps` argument "
                           "instead of sampling new noise (torch.randn or torch.normal), so that x = μ + σ·ε is "
                           "a differentiable function of μ and σ.")
        if not out.requires_grad:
            raise _Problem("Your values are right, but no gradient can flow back to mu and log_sigma — remove "
                           ".detach(), torch.no_grad(), .item() or NumPy round trips: the point of the trick is "
                           "that x = μ + σ·ε is differentiable in μ and σ.")
        try:
            out.sum().backward()
        except Exception as e:
            raise _Problem(f"Backpropagating through your output failed ({type(e).__name__}: {_short(e)}) — "
                           f"build the output from mu, log_sigma and eps with plain tensor operations.") from None
        if mu.grad is None or not _close(mu.grad, torch.ones_like(mu0), 1e-5, 1e-4):
            raise _Problem("Your values are right, but the gradient with respect to mu is missing or wrong "
                           "(∂x/∂μ should be 1) — make sure mu enters the output directly, without .detach().")
        if ls.grad is None or not _close(ls.grad, s.exp() * e, 1e-5, 1e-4):
            raise _Problem("Your values are right, but the gradient with respect to log_sigma is missing or "
                           "wrong (∂x/∂log σ should be σ·ε) — compute σ = exp(log_sigma) without .detach().")
    return (f"reparameterized_sample matches μ + exp(log_sigma)·ε and passes gradients to μ and log_sigma "
            f"on {len(cases)} test cases.")

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


@_exercise("posterior_mean_variance")
def check_posterior_mean_variance(fn) -> str:
    cases = [  # (B, C, H, W), t, betas, x dtype, description
        ((4, 3, 5, 4), [3, 7, 1, 9], _short_betas(), torch.float32, "a batch of 4 images with a 10-step schedule"),
        ((1, 1, 6, 6), [0], _linear_betas(), torch.float32, "a batch of 1 at t = 0"),
        ((3, 2, 4, 4), [999, 0, 500], _linear_betas(), torch.float64, "t = T−1, 0 and 500 with float64 images"),
        ((2, 4, 3, 3), [0, 5], _short_betas(), torch.float32, "t = 0 and 5 with a 10-step schedule"),
    ]
    g = torch.Generator().manual_seed(3)
    for shape, t_list, betas, dtype, case in cases:
        x0, xt, t = _randn(g, shape, dtype), _randn(g, shape, dtype), torch.tensor(t_list)
        out = _call(fn, (x0.clone(), xt.clone(), t.clone(), betas.clone()), _P_HINTS)
        if isinstance(out, (torch.Tensor, np.ndarray)):
            raise _Problem("Your function returned a single array; return the pair `return mean, variance`.")
        if out is None:
            _tensor(out)  # raises the "forgot `return`" message
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            n = (f"{len(out)} value{'s' * (len(out) != 1)}" if isinstance(out, (tuple, list))
                 else f"a {type(out).__name__}")
            raise _Problem(f"Your function returned {n}; return exactly the pair `return mean, variance`.")
        mean, var = _tensor(out[0], "mean"), _tensor(out[1], "variance")
        ref_mean, ref_var, (c1, c2, bt) = _posterior(betas, t, x0, xt)
        _shape(mean, shape, name="mean", hint=" (the shape of x_t)")
        if var.ndim == 1 and var.shape[0] == shape[0]:
            raise _Problem(f"Your variance has shape ({shape[0]},), which does not broadcast against images of shape "
                           f"{shape} — reshape it to (B, 1, 1, 1), e.g. with .view(-1, 1, 1, 1).")
        try:
            ok = var.ndim == 4 and var.shape[0] == shape[0] and torch.broadcast_shapes(var.shape, shape) == shape
        except RuntimeError:
            ok = False
        if not ok:
            raise _Problem(f"Your variance has shape {tuple(var.shape)}; it should be (B, 1, 1, 1) or the shape "
                           f"of x_t {shape}.")
        _finite(mean, "mean")
        _finite(var, "variance")
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
        _values(mean, ref_mean, mean_variants, atol=1e-4, rtol=2e-3, case=case, name="mean", formula=_MEAN)
        var_variants = [
            (bt, f"Your variance is β_t (DDPM's 'fixed large' choice), but the posterior variance is {_VAR} (DDPM Eq. 7)."),
            (ref_var.sqrt(), f"You returned the standard deviation √β̃_t; return the variance {_VAR} itself."),
            (_posterior(betas, t, x0, xt, prev="wrap")[1], wrap),
        ]
        var = var.expand(shape)
        var_variants = [(v if v is None else v.expand(shape), message) for v, message in var_variants]
        _values(var, ref_var.expand(shape), var_variants, atol=1e-6, rtol=2e-3, case=case, name="variance",
                formula=_VAR)
    return f"posterior_mean_variance matches μ̃_t and β̃_t (DDPM Eq. 7) on {len(cases)} test cases."

#################################################################################
#              Lesson 04: the latent scale factor, 1 / std(latents)             #
#################################################################################

_L_HINTS = {"TypeError": "check the signature latent_scale_factor(latents) and use torch operations",
            "default": "compute 1 / latents.std() over all elements"}


@_exercise("latent_scale_factor")
def check_latent_scale_factor(fn) -> str:
    cases = [((8, 4, 4, 4), 5.0, 0.7, torch.float32, "a batch of 8 latents with std ≈ 5"),
             ((1, 4, 8, 8), 0.5, -0.2, torch.float32, "a single latent with std ≈ 0.5"),
             ((3, 4, 5, 7), 1.5, 0.3, torch.float64, "float64 latents of shape 3×4×5×7")]
    g = torch.Generator().manual_seed(4)
    for shape, scale, shift, dtype, case in cases:
        z = _randn(g, shape, dtype) * scale + shift
        out = _call(fn, (z.clone(),), _L_HINTS)
        if out is None:
            _tensor(out)  # raises the "forgot `return`" message
        if isinstance(out, bool) or not isinstance(out, (int, float, np.number, np.ndarray, torch.Tensor)):
            raise _Problem(f"Your function returned a {type(out).__name__}; return one number (a float or a 0-d tensor).")
        value = torch.as_tensor(np.asarray(out)) if not isinstance(out, torch.Tensor) else out.detach()
        if value.numel() != 1:
            raise _Problem(f"Your function returned {value.numel()} numbers (shape {tuple(value.shape)}), but the scale "
                           f"factor should be one number: take the std over all elements (latents.std()), not per channel.")
        value = float(value.reshape(()))
        if not math.isfinite(value):
            raise _Problem("Your scale factor is NaN or infinite — compute 1 / latents.std() over all elements.")
        z64 = z.double()
        stds = (z64.std(), z64.std(correction=0))
        near = lambda targets: any(math.isclose(value, float(v), rel_tol=1e-3) for v in targets)  # noqa: E731
        if near([1 / s for s in stds]):
            continue
        if near(stds):
            raise _Problem("You returned the standard deviation itself; the scale factor is its reciprocal, "
                           "1 / std(latents), so that the scaled latents have unit variance.")
        if near([1 / s ** 2 for s in stds]):
            raise _Problem("You returned 1 / variance; the scale factor is 1 / std — take the square root of the variance.")
        if near([1 / z64.pow(2).mean().sqrt()]):
            raise _Problem("It looks like you forgot to subtract the mean: use the standard deviation (latents.std()), "
                           "not the root mean square.")
        raise _Problem(f"Your scale factor {value:.4g} is not 1 / std(latents) = {1 / float(stds[0]):.4g} on {case} — "
                       f"compute 1 / latents.std() over all elements.")
    return f"latent_scale_factor returns 1 / std(latents) on {len(cases)} test cases."

#################################################################################
#               Lesson 05a: patchify, (N, C, H, W) -> (N, T, p·p·C)              #
#################################################################################

_PATCH_HINTS = {"broadcast": "split H and W into (H/p, p) and (W/p, p) with reshape before permuting",
                "TypeError": "check the signature patchify(x, patch_size) and use torch operations",
                "default": "check your reshape / permute steps"}


def _patches(x: torch.Tensor, p: int, tokens: str = "hw", features: str = "pqc") -> torch.Tensor:
    """Patchify with a given token order (over the grid h, w) and feature order (over p, q, c)."""
    n, c, H, W = x.shape
    dims = dict(c=1, h=2, p=3, w=4, q=5)
    y = x.reshape(n, c, H // p, p, W // p, p).permute(0, *[dims[k] for k in tokens + features])
    return y.reshape(n, (H // p) * (W // p), p * p * c)


@_exercise("patchify")
def check_patchify(fn) -> str:
    cases = [((2, 3, 8, 8), 2, torch.float32, "2 RGB images of size 8×8 with p = 2"),
             ((1, 4, 16, 16), 4, torch.float32, "a single 4-channel 16×16 latent with p = 4"),
             ((3, 4, 8, 8), 4, torch.float64, "float64 latents with p = 4"),
             ((2, 3, 16, 16), 2, torch.float32, "2 RGB images of size 16×16 with p = 2")]
    g = torch.Generator().manual_seed(5)
    for shape, p, dtype, case in cases:
        x = _randn(g, shape, dtype)
        n, c, H, W = shape
        T, D = (H // p) * (W // p), p * p * c
        out = _tensor(_call(fn, (x.clone(), p), _PATCH_HINTS))
        _shape(out, (n, T, D), hint=" = (N, T, p·p·C)", known=[
            ((n, D, T), f"Your output is transposed: it should be (N, T, p·p·C) = {(n, T, D)}, one row per token."),
            ((n, H // p, W // p, D), "Flatten the (H/p, W/p) grid into a single token dimension: the output "
                                     "should be (N, T, p·p·C)."),
        ])
        _finite(out)
        variants = [
            (_patches(x, p, features="cpq"), "Each token's features are in (c, p, q) order; ditlib expects (p, q, c) "
                                             "— channels last, i.e. 'n c (h p) (w q) -> n (h w) (p q c)', which is "
                                             "what unpatchify inverts."),
            (_patches(x, p, features="qpc"), "Inside each patch you swapped rows and columns: features should be "
                                             "ordered (p, q, c) = (row in the patch, column in the patch, channel)."),
            (_patches(x, p, tokens="wh"), "Your tokens are in column-major order; ditlib expects row-major order over "
                                          "the (H/p, W/p) grid, token index = row·(W/p) + col."),
            (x.reshape(n, T, D), "A plain reshape mixes pixels from different patches — reshape to (N, C, H/p, p, W/p, p), "
                                 "permute to (N, H/p, W/p, p, p, C), then reshape to (N, T, p·p·C)."),
        ]
        _values(out, _patches(x, p), variants, atol=1e-6, rtol=0.0, case=case,
                formula="rearrange(x, 'n c (h p) (w q) -> n (h w) (p q c)')")
    return f"patchify matches rearrange 'n c (h p) (w q) -> n (h w) (p q c)' on {len(cases)} test cases."

#################################################################################
#           Lesson 05b: 1-D sine-cosine positional embeddings (ViT / MAE)        #
#################################################################################

_S_HINTS = {"TypeError": "check the signature sincos_1d(embed_dim, positions); positions may be a NumPy array or "
                         "a torch tensor of shape (M,)",
            "AttributeError": "positions may be a NumPy array or a torch tensor of shape (M,), so convert them "
                              "first, e.g. with torch.as_tensor(positions)",
            "default": "check your implementation of [sin(m·ω_k) …, cos(m·ω_k) …] with ω_k = 1/10000^(2k/D)"}


def _sincos(D: int, pos: torch.Tensor, omega=None, layout: str = "sin|cos") -> torch.Tensor:
    k = torch.arange(D // 2, dtype=torch.float64)
    omega = 1.0 / 10000 ** (2 * k / D) if omega is None else omega
    arg = pos.double()[:, None] * omega[None, :]
    s, c = arg.sin(), arg.cos()
    if layout == "interleaved":
        return torch.stack([s, c], dim=-1).reshape(len(pos), D)
    return torch.cat([s, c] if layout == "sin|cos" else [c, s], dim=1)


@_exercise("sincos_1d")
def check_sincos_1d(fn) -> str:
    cases = [(8, np.arange(6, dtype=np.float64), "D = 8 and NumPy positions 0 … 5"),
             (16, torch.tensor([0.0, 2.5, 7.0, 15.0]), "D = 16 and float32 torch positions"),
             (4, np.array([3.0]), "a single position"),
             (32, torch.arange(10, dtype=torch.float64), "D = 32 and torch positions 0 … 9")]
    for D, positions, case in cases:
        pos = torch.as_tensor(positions).double()
        M = len(pos)
        given = positions.copy() if isinstance(positions, np.ndarray) else positions.clone()
        out = _tensor(_call(fn, (D, given), _S_HINTS), numpy_ok=True)
        _shape(out, (M, D), hint=" = (M, embed_dim)", known=[
            ((D, M), f"Your output is transposed: it should be (M, embed_dim) = {(M, D)}, one row per position."),
            ((M, D // 2), "Your output has only D/2 features: concatenate the D/2 sines and the D/2 cosines."),
        ])
        _finite(out)
        k = torch.arange(D // 2, dtype=torch.float64)
        variants = [
            (_sincos(D, pos, layout="cos|sin"), "Your halves are swapped: ditlib puts all the sines first, then all "
                                                "the cosines, [sin(m·ω_k) …, cos(m·ω_k) …]."),
            (_sincos(D, pos, layout="interleaved"), "You interleaved sin and cos (sin, cos, sin, cos, …); ditlib "
                                                    "concatenates them: first all D/2 sines, then all D/2 cosines."),
            (_sincos(D, pos, omega=1.0 / 10000 ** (k / D)), "Your frequencies use the exponent k/D; it should be "
                                                            "2k/D, ω_k = 1/10000^(2k/D) for k = 0 … D/2−1."),
            (_sincos(D, pos, omega=10000.0 ** (2 * k / D)), "Your frequencies grow with k; they should shrink, "
                                                            "ω_k = 1/10000^(2k/D) for k = 0 … D/2−1."),
        ]
        _values(out, _sincos(D, pos), variants, atol=1e-5, rtol=0.0, case=case,
                formula="[sin(m·ω_k) for all k, then cos(m·ω_k) for all k] with ω_k = 1/10000^(2k/D)")
    return (f"sincos_1d matches [sin(m·ω_k), cos(m·ω_k)] with ω_k = 1/10000^(2k/D) "
            f"on {len(cases)} test cases.")

#################################################################################
#        Lesson 06a: adaLN's modulate, x·(1 + γ) + β broadcast over tokens       #
#################################################################################

_MOD_HINTS = {"broadcast": "shift and scale are (N, D): unsqueeze them to (N, 1, D) so that they broadcast over "
                           "the T tokens of x (N, T, D)",
              "TypeError": "check the signature modulate(x, shift, scale) and use torch operations",
              "default": "compute x·(1 + scale) + shift with scale and shift unsqueezed to (N, 1, D)"}


@_exercise("modulate")
def check_modulate(fn) -> str:
    cases = [((2, 5, 8), torch.float32, "x of shape (2, 5, 8)"),
             ((3, 3, 4), torch.float32, "a batch of 3 with 3 tokens (N = T)"),
             ((1, 7, 6), torch.float64, "a single float64 sample with 7 tokens"),
             ((4, 4, 16), torch.float32, "a batch of 4 with 4 tokens of width 16")]
    g = torch.Generator().manual_seed(6)
    for shape, dtype, case in cases:
        n, T, D = shape
        x, shift, scale = _randn(g, shape, dtype), _randn(g, (n, D), dtype), _randn(g, (n, D), dtype)
        out = _tensor(_call(fn, (x.clone(), shift.clone(), scale.clone()), _MOD_HINTS))
        _shape(out, shape, hint=" (the shape of x) — unsqueeze shift and scale to (N, 1, D)")
        _finite(out)
        x64, b, s = x.double(), shift.double()[:, None], scale.double()[:, None]    # b, s: (N, 1, D)
        variants = [
            (x64 * s + b, "It looks like you forgot the 1 +: adaLN scales by (1 + γ), so that γ = 0 (a zero "
                          "regression output) leaves the normalised x unchanged — x·(1 + scale) + shift."),
            (x64 * (1 + b) + s, "shift and scale are swapped: the output is x·(1 + scale) + shift, so scale "
                                "multiplies and shift is added."),
            ((x64 + b) * (1 + s), "You added the shift before scaling: the order is x·(1 + scale) + shift, "
                                  "the shift is added last."),
            (x64 * (1 + scale.double()[None]) + shift.double()[None] if T == n else None,
             "It looks like shift and scale broadcast along the token dimension instead of the batch: unsqueeze "
             "them to (N, 1, D), e.g. scale.unsqueeze(1), so every token of sample i gets sample i's shift and scale."),
        ]
        _values(out, x64 * (1 + s) + b, variants, atol=1e-5, rtol=1e-4, case=case,
                formula="x·(1 + scale) + shift with shift, scale unsqueezed to (N, 1, D)")
    return f"modulate matches x·(1 + scale) + shift, broadcast over tokens, on {len(cases)} test cases."

#################################################################################
#             Lesson 06b: the adaLN-Zero DiT block's forward (§3.2)              #
#################################################################################

_BLOCK_HINTS = {"broadcast": "the six modulation vectors are (N, D): unsqueeze them to (N, 1, D) to broadcast over "
                             "the tokens (modulate does it for shift and scale; do it for the gates too)",
                "AttributeError": "use the block's submodules norm1, attn, norm2, mlp and adaLN_modulation",
                "TypeError": "check the signature adaln_zero_block_forward(block, x, c)",
                "default": "split block.adaLN_modulation(c) into six (N, D) chunks and build the two gated "
                           "residual branches"}


def _random_dit_block(g: torch.Generator, hidden_size: int, num_heads: int, dtype) -> torch.nn.Module:
    """A DiTBlock with every weight drawn from `g` (non-zero modulation, so the gates matter)."""
    from .models import DiTBlock

    with torch.random.fork_rng(devices=[]):            # nn.Linear's own init must not touch the global RNG
        block = DiTBlock(hidden_size, num_heads, mlp_ratio=2.0)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(_randn(g, p.shape) * (0.5 / math.sqrt(p.shape[-1])) + (0.1 if p.ndim == 1 else 0.0))
    return block.to(dtype).eval()


def _block_variant(block, x, c, order=("shift", "scale", "gate"), gates="branch", fresh_norm=True):
    """The adaLN-Zero block with a mistake: chunk `order`, `gates` in {"branch", "none", "stream", "both"},
    or (fresh_norm=False) the MLP branch reusing the first normalisation of x."""
    from .models import modulate

    chunks = block.adaLN_modulation(c).chunk(6, dim=1)
    msa = dict(zip(order, chunks[:3]))
    mlp = dict(zip(order, chunks[3:]))
    h0 = block.norm1(x)

    def branch(x, mod, layer, h):
        out = layer(modulate(h, mod["shift"], mod["scale"]))
        gate = mod["gate"].unsqueeze(1)
        return {"branch": x + gate * out, "none": x + out, "stream": gate * x + out, "both": gate * (x + out)}[gates]

    x = branch(x, msa, block.attn, h0)
    return branch(x, mlp, block.mlp, block.norm2(x) if fresh_norm else h0)


@_exercise("adaln_zero_block")
def check_adaln_zero_block(fn) -> str:
    cases = [(2, 5, 16, 2, torch.float32, "a batch of 2 with 5 tokens of width 16"),
             (1, 4, 8, 2, torch.float32, "a single sample with 4 tokens"),
             (3, 6, 12, 3, torch.float64, "float64 inputs, 3 samples, 6 tokens, 3 heads")]
    g = torch.Generator().manual_seed(7)
    for n, T, D, heads, dtype, case in cases:
        block = _random_dit_block(g, D, heads, dtype)
        x, c = _randn(g, (n, T, D), dtype), _randn(g, (n, D), dtype)
        with torch.no_grad():
            out = _tensor(_call(fn, (block, x.clone(), c.clone()), _BLOCK_HINTS))
            _shape(out, (n, T, D), hint=" (the shape of x)")
            _finite(out)
            ref = block(x, c)
            variants = [
                (_block_variant(block, x, c, gates="none"), "It looks like you left out the gates α: each branch "
                 "is multiplied by its gate before the residual add, x + gate.unsqueeze(1)·branch (that is the "
                 "'Zero' of adaLN-Zero)."),
                (_block_variant(block, x, c, gates="stream"), "The gate multiplies the residual stream; it should "
                 "multiply the branch output: x + gate·attn(modulate(norm1(x), shift, scale))."),
                (_block_variant(block, x, c, gates="both"), "The gate multiplies the sum x + branch; it should "
                 "multiply the branch output only: x + gate·attn(modulate(norm1(x), shift, scale))."),
                (_block_variant(block, x, c, order=("scale", "shift", "gate")), "Your chunks are in the wrong "
                 "order: adaLN_modulation(c).chunk(6, dim=1) gives (shift, scale, gate) for attention, then "
                 "(shift, scale, gate) for the MLP."),
                (_block_variant(block, x, c, order=("gate", "shift", "scale")), "Your chunks are in the wrong "
                 "order: the gate comes last, (shift, scale, gate) for attention, then the same for the MLP."),
                (_block_variant(block, x, c, fresh_norm=False), "The MLP branch reuses norm1(x) from before the "
                 "attention update: normalise the updated x again with norm2(x) after the first residual add."),
            ]
            _values(out, ref, variants, atol=1e-4, rtol=1e-4, case=case,
                    formula="x + α1·attn(modulate(norm1(x), β1, γ1)), then x + α2·mlp(modulate(norm2(x), β2, γ2))")
    return f"adaln_zero_block_forward matches ditlib's DiTBlock with random modulation weights on {len(cases)} test cases."

#################################################################################
#        Lesson 09: classifier-free guidance, ε̂ = ε(∅) + s·(ε(y) − ε(∅))        #
#################################################################################

_CFG_HINTS = {"TypeError": "check the signature guided_eps(cond_eps, uncond_eps, cfg_scale); cfg_scale is a float",
              "default": "compute uncond_eps + cfg_scale·(cond_eps − uncond_eps)"}


@_exercise("cfg")
def check_cfg(fn) -> str:
    cases = [((2, 4, 8, 8), 1.5, torch.float32, "2 latents with cfg_scale = 1.5"),
             ((1, 1, 6, 6), 4.0, torch.float32, "a single image with cfg_scale = 4"),
             ((3, 4, 4, 4), 0.0, torch.float64, "float64 inputs with cfg_scale = 0 (purely unconditional)"),
             ((2, 3, 5, 5), 2.5, torch.float64, "float64 inputs with cfg_scale = 2.5")]
    g = torch.Generator().manual_seed(9)
    for shape, s, dtype, case in cases:
        cond, uncond = _randn(g, shape, dtype), _randn(g, shape, dtype)
        out = _tensor(_call(fn, (cond.clone(), uncond.clone(), s), _CFG_HINTS))
        _shape(out, shape, hint=" (the shape of cond_eps)")
        _finite(out)
        e_c, e_u = cond.double(), uncond.double()
        variants = [
            (e_c + s * (e_c - e_u), "You started from the conditional prediction: guidance starts from the "
                                    "unconditional one, ε(x, ∅) + s·(ε(x, y) − ε(x, ∅)), so that s = 1 gives ε(x, y)."),
            (e_c + s * (e_u - e_c), "The roles of cond_eps and uncond_eps are swapped: ε̂ = uncond_eps + "
                                    "s·(cond_eps − uncond_eps) moves away from the unconditional prediction."),
            (s * e_c, "You only scaled the conditional prediction: guidance extrapolates from the unconditional "
                      "one, uncond_eps + s·(cond_eps − uncond_eps)."),
            (s * (e_c - e_u), "You forgot to add the unconditional prediction back: ε̂ = uncond_eps + "
                              "s·(cond_eps − uncond_eps)."),
            (e_u + (s - 1) * (e_c - e_u), "Your scale is off by one (you used s − 1): with the DiT convention "
                                          "ε̂ = uncond_eps + s·(cond_eps − uncond_eps), s = 1 means no guidance."),
        ]
        _values(out, e_u + s * (e_c - e_u), variants, atol=1e-5, rtol=1e-4, case=case,
                formula="uncond_eps + cfg_scale·(cond_eps − uncond_eps)")
    return f"guided_eps matches the cfg rule ε(x, ∅) + s·(ε(x, y) − ε(x, ∅)) on {len(cases)} test cases."


#################################################################################
#        Lesson 10: FID's sample-count bias, FID(n) ≈ FID_∞ + k / n             #
#################################################################################

_FIDX_HINTS = {"TypeError": "check the signature extrapolate_fid(ns, fids) and return the pair (fid_inf, k)",
               "default": "fit fids ≈ fid_inf + k / n by least squares, e.g. np.polyfit(1 / n, fids, 1)"}


def _two_numbers(out, what: str) -> tuple:
    if out is None:
        raise _Problem("Your function returned None — did you forget the `return` statement?")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise _Problem(f"Return the pair {what} as a tuple of two numbers; you returned a {type(out).__name__}"
                       + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "") + ".")
    try:
        return tuple(float(np.asarray(v).reshape(())) for v in out)
    except (TypeError, ValueError):
        raise _Problem(f"Both items of {what} must be single numbers.") from None


@_exercise("extrapolate_fid")
def check_extrapolate_fid(fn) -> str:
    cases = [([100, 500, 2000, 10000], 0.4, 650.0, "four sample counts"),
             ([50, 50, 200, 200, 1000, 1000], 2.0, 90.0, "repeated sample counts"),
             ([300, 3000], 0.0, 1200.0, "two sample counts (an exact fit)")]
    rng = np.random.default_rng(10)
    for ns, fid_inf, k, case in cases:
        n = np.asarray(ns, dtype=float)
        fids = fid_inf + k / n + rng.normal(0, 0.05, size=n.shape) * (len(ns) > 2)
        got = _two_numbers(_call(fn, (list(ns), list(fids)), _FIDX_HINTS), "(fid_inf, k)")
        slope, intercept = np.polyfit(1 / n, fids, 1)
        want = (intercept, slope)
        close = lambda a, b: all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6) for x, y in zip(a, b))  # noqa: E731
        if close(got, want):
            continue
        if close(got, want[::-1]):
            raise _Problem("The two numbers are swapped: return (fid_inf, k), the intercept first, then the slope.")
        s_n, i_n = np.polyfit(n, fids, 1)
        if close(got, (i_n, s_n)):
            raise _Problem("You fitted FID against n; the bias goes like 1/n, so regress the FIDs on 1 / n.")
        if math.isclose(got[0], float(np.min(fids)), rel_tol=1e-6):
            raise _Problem("FID_∞ is not the smallest measured FID: it is the intercept of a straight-line fit "
                           "of FID against 1 / n (the value as n → ∞).")
        raise _Problem(f"On {case} your (fid_inf, k) = ({got[0]:.4g}, {got[1]:.4g}) but the least-squares fit of "
                       f"FID = fid_inf + k / n gives ({want[0]:.4g}, {want[1]:.4g}).")
    return f"extrapolate_fid recovers FID_∞ and k by least squares in 1/n on {len(cases)} test cases."


#################################################################################
#          Lesson 11: memory per GPU before activations, DDP vs FSDP            #
#################################################################################

_MEM_HINTS = {"TypeError": "check the signature static_memory_gb(num_params, num_gpus, fsdp)",
              "default": "5 fp32 copies (weights, gradients, 2 AdamW moments, EMA) of 4 bytes per parameter"}


@_exercise("static_memory_gb")
def check_static_memory_gb(fn) -> str:
    cases = [(675_129_632, 8, False), (675_129_632, 8, True), (32_000_000, 1, True), (130_000_000, 4, True),
             (458_000_000, 16, False)]
    for num_params, num_gpus, fsdp in cases:
        out = _call(fn, (num_params, num_gpus, fsdp), _MEM_HINTS)
        if out is None:
            raise _Problem("Your function returned None — did you forget the `return` statement?")
        try:
            got = float(np.asarray(out).reshape(()))
        except (TypeError, ValueError):
            raise _Problem(f"Return one number of gigabytes; you returned a {type(out).__name__}.") from None
        total = num_params * 20 / 1e9
        want = total / num_gpus if fsdp else total
        near = lambda v: math.isclose(got, v, rel_tol=1e-6)  # noqa: E731
        if near(want):
            continue
        if near(total / num_gpus) and not fsdp:
            raise _Problem("DDP does not shard: every GPU keeps the full weights, gradients and optimizer state, "
                           "so only FSDP divides by num_gpus.")
        if near(total) and fsdp and num_gpus > 1:
            raise _Problem("With fsdp=True the states are sharded: divide the total by num_gpus.")
        if near(want * 2 ** 30 / 1e9) or near(want * 1e9 / 2 ** 30):
            raise _Problem("Use gigabytes of 10⁹ bytes (GB), not gibibytes of 2³⁰ bytes.")
        copies = got * 1e9 / (num_params * 4) * (num_gpus if fsdp else 1)
        if copies > 0 and abs(copies - round(copies)) < 1e-6:
            raise _Problem(f"You counted {round(copies)} fp32 copies per parameter; there are 5: the weights, "
                           f"their gradients, AdamW's two moments and the EMA weights.")
        if near(want / 4) or near(want / 8):
            raise _Problem("Each fp32 number takes 4 bytes: multiply the count of numbers by 4.")
        raise _Problem(f"For {num_params:,} parameters on {num_gpus} GPU(s) with fsdp={fsdp} you returned "
                       f"{got:.4g} GB; expected {want:.4g} GB (5 fp32 copies × 4 bytes per parameter"
                       f"{', divided by num_gpus' if fsdp else ''}).")
    return f"static_memory_gb gives the per-GPU memory of DDP and FSDP on {len(cases)} test cases."
