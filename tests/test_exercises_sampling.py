"""Specification of ditlib.course.checks_sampling: the checks of the DDPM chain (lesson 03), respaced betas and
the DDIM step (lesson 08) and the Fréchet distance (lesson 10) pass correct solutions (which agree with ditlib),
name each typical mistake, and turn every other failure into one friendly sentence."""
import numpy as np
import pytest
import torch

from ditlib.course.checks_sampling import (check_ddim_step, check_ddpm_sampling_loop, check_frechet_distance,
                                           check_respaced_betas)
from ditlib.course.feedback import CHECKS, Feedback, require
from ditlib.diffusion import GaussianDiffusion, SpacedDiffusion, create_diffusion, space_timesteps
from ditlib.models import build_model
from exercise_helpers import fails_with


# ----------------------------------------------------------------------------- learner-style solutions
def _step(diffusion, model, x, i, y, model_t="map", clip=True):
    """One reverse step written out in plain torch: (μ̃(x̂_0, x), log Σ, x̂_0) at respaced index i, learned Σ."""
    b = diffusion.betas
    ab = torch.cumprod(1 - b, 0)
    abp = torch.cat([b.new_ones(1), ab[:-1]])
    t = torch.full((x.shape[0],), i, dtype=torch.long)
    eps, v = model(x, diffusion.timestep_map[t] if model_t == "map" else t, y).split(x.shape[1], dim=1)
    x0 = (x - (1 - ab[i]).sqrt() * eps) / ab[i].sqrt()
    x0 = x0.clamp(-1, 1) if clip else x0
    mean = b[i] * abp[i].sqrt() / (1 - ab[i]) * x0 + (1 - abp[i]) * (1 - b[i]).sqrt() / (1 - ab[i]) * x
    post = b * (1 - abp) / (1 - ab)
    log_post = post[max(i, 1)].log()                                     # β̃_0 = 0: β̃_1 at i = 0 (ADM)
    frac = (v + 1) / 2
    return mean.to(x.dtype), (frac * b[i].log() + (1 - frac) * log_post).to(x.dtype), x0


def sample_loop(diffusion, model, x_T, y, noises):
    x = x_T
    for i in reversed(range(diffusion.num_timesteps)):
        mean, log_var, _ = _step(diffusion, model, x, i, y)
        x = mean + (i > 0) * torch.exp(0.5 * log_var) * noises[i]
    return x


def respaced_betas(alphas_cumprod, use_timesteps):
    kept = sorted(use_timesteps)
    abar = alphas_cumprod[kept]
    return 1 - abar / torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])


def ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev):
    x0 = (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    return alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev).sqrt() * eps


def frechet_distance(mu1, sigma1, mu2, sigma2):
    w, v = np.linalg.eigh(sigma1)
    root = (v * np.sqrt(w.clip(min=0))) @ v.T
    trace_sqrt = np.sqrt(np.linalg.eigvalsh(root @ sigma2 @ root).clip(min=0)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


CASES = {"ddpm_sampling_loop": (check_ddpm_sampling_loop, sample_loop),
         "respaced_betas": (check_respaced_betas, respaced_betas),
         "ddim_step": (check_ddim_step, ddim_step),
         "frechet_distance": (check_frechet_distance, frechet_distance)}


_fails_with = fails_with


# ----------------------------------------------------------------------------- the shared contract
def test_each_check_is_registered_under_its_exercise_name():
    for name, (check, _) in CASES.items():
        assert CHECKS[name] is check


@pytest.mark.parametrize("name", sorted(CASES))
def test_correct_solution_passes_with_a_deterministic_message(name):
    check, solution = CASES[name]
    first, second = check(solution), check(solution)
    assert first.passed, first.message
    assert first.message.startswith("✓ Correct:") and name in first.message and "test cases" in first.message
    assert first.message == second.message and first.exercise == name


@pytest.mark.parametrize("name", sorted(CASES))
def test_not_implemented_stub_is_reported_as_not_implemented(name):
    def stub(*args):
        raise NotImplementedError()
    _fails_with(CASES[name][0], stub, "not implemented yet", "raise NotImplementedError()")


@pytest.mark.parametrize("name", sorted(CASES))
def test_missing_return_is_reported(name):
    _fails_with(CASES[name][0], lambda *args: None, "None", "return")


@pytest.mark.parametrize("name", sorted(CASES))
def test_learner_exceptions_never_escape_and_are_named(name):
    _fails_with(CASES[name][0], lambda *args: 1 / 0, "ZeroDivisionError", "division by zero")


@pytest.mark.parametrize("name", sorted(CASES))
def test_odd_return_values_give_one_sentence_of_feedback(name):
    for value in ("oops", torch.zeros(2), torch.zeros(2, 3, 4, 4, 1), (torch.zeros(1), torch.zeros(1)), np.zeros(3),
                  [[0.0]], float("nan"), {"mean": 0}):
        fb = CASES[name][0](lambda *args, value=value: value)
        assert isinstance(fb, Feedback) and not fb.passed and fb.message and "\n" not in fb.message


@pytest.mark.parametrize("name", sorted(CASES))
def test_passing_something_other_than_a_function_gives_feedback(name):
    _fails_with(CASES[name][0], torch.zeros(3), f"check_{name}({name})")


@pytest.mark.parametrize("name", sorted(CASES))
def test_require_raises_assertion_error_on_failure_and_returns_passing_feedback(name):
    check, solution = CASES[name]
    with pytest.raises(AssertionError, match="not implemented yet"):
        require(check(lambda *args: (_ for _ in ()).throw(NotImplementedError())))
    ok = check(solution)
    assert require(ok) is ok


@pytest.mark.parametrize("name", sorted(CASES))
def test_checks_leave_the_global_random_state_alone(name):
    state = torch.random.get_rng_state()
    CASES[name][0](CASES[name][1])
    assert torch.equal(state, torch.random.get_rng_state())


# ----------------------------------------------------------------------------- lesson 03: the DDPM chain
def test_ddpm_loop_solution_equals_ditlib_p_sample_loop_on_a_dit():
    diffusion = create_diffusion("5")
    model = build_model("DiT-debug/2", input_size=8, in_channels=4, num_classes=10).eval()
    y, shape = torch.tensor([1, 7]), (2, 4, 8, 8)
    draws = torch.Generator().manual_seed(0)
    x_T = torch.randn(shape, generator=draws)
    noises = torch.stack([torch.randn(shape, generator=draws) for _ in range(5)][::-1])  # drawn for t = 4 … 0
    gen = torch.Generator().manual_seed(0)
    x_T_again = torch.randn(shape, generator=gen)                  # ditlib then draws one z per step, t = 4 … 0
    with torch.no_grad():
        mine = sample_loop(diffusion, model, x_T, y, noises)
        theirs = diffusion.p_sample_loop(model, shape, noise=x_T_again, model_kwargs={"y": y}, generator=gen)
    assert torch.allclose(mine, theirs, atol=1e-5)


def test_ddpm_loop_without_clipping_and_with_an_if_else_passes():
    def unclipped(diffusion, model, x_T, y, noises):
        x = x_T
        for i in range(diffusion.num_timesteps - 1, -1, -1):
            mean, log_var, _ = _step(diffusion, model, x, i, y, clip=False)
            x = mean + torch.exp(0.5 * log_var) * noises[i] if i > 0 else mean
        return x
    assert check_ddpm_sampling_loop(unclipped)


def _loop(order="down", scale=0.5, pick="t", first_x0=False, noise_at_0=False, model_t="map", var=None):
    def fn(diffusion, model, x_T, y, noises):
        x, T = x_T, diffusion.num_timesteps
        steps = list(reversed(range(T))) if order == "down" else list(range(T))
        for k, i in enumerate(steps):
            mean, log_var, x0 = _step(diffusion, model, x, i, y, model_t=model_t)
            if first_x0:
                return x0
            if var is not None:
                log_var = var(diffusion, i).expand_as(x)
            z = noises[i] if pick == "t" else noises[k]
            x = mean + (i > 0 or noise_at_0) * torch.exp(scale * log_var) * z if scale else mean
        return x
    return fn


def _posterior_log_var(diffusion, i):
    b = diffusion.betas
    ab = torch.cumprod(1 - b, 0)
    abp = torch.cat([b.new_ones(1), ab[:-1]])
    return (b * (1 - abp) / (1 - ab))[max(i, 1)].log().float()


def test_ddpm_loop_that_adds_noise_at_t0_is_named():
    _fails_with(check_ddpm_sampling_loop, _loop(noise_at_0=True), "last step", "t = 0")


def test_ddpm_loop_that_iterates_t_upwards_is_named():
    _fails_with(check_ddpm_sampling_loop, _loop(order="up"), "wrong way", "T−1 down to 0")


def test_ddpm_loop_that_scales_noise_by_the_variance_is_named():
    _fails_with(check_ddpm_sampling_loop, _loop(scale=1.0), "variance", "exp(½·log Σ)")


def test_ddpm_loop_without_noise_is_named():
    _fails_with(check_ddpm_sampling_loop, _loop(scale=None), "adds no noise")


def test_ddpm_loop_returning_the_first_x0_prediction_is_named():
    _fails_with(check_ddpm_sampling_loop, _loop(first_x0=True), "x̂_0 predicted at the first step")


def test_ddpm_loop_taking_noises_by_step_count_is_named():
    _fails_with(check_ddpm_sampling_loop, _loop(pick="k"), "wrong order", "noises[i]")


def test_ddpm_loop_calling_the_model_with_the_respaced_index_is_named():
    _fails_with(check_ddpm_sampling_loop, _loop(model_t="index"), "respaced index", "timestep_map")


def test_ddpm_loop_ignoring_the_learned_variance_is_named():
    _fails_with(check_ddpm_sampling_loop, _loop(var=_posterior_log_var), "β̃_t at every step", "(r + 1)/2")
    _fails_with(check_ddpm_sampling_loop, _loop(var=lambda d, i: d.betas[i].log().float()), "β_t at every step")


def test_ddpm_loop_drawing_fresh_noise_is_named():
    def fresh(diffusion, model, x_T, y, noises):
        return _loop()(diffusion, model, x_T, y, torch.randn_like(noises))
    _fails_with(check_ddpm_sampling_loop, fresh, "changes between two calls", "noises[t]")


def test_ddpm_loop_forgetting_the_labels_or_the_timestep_map_gets_a_hint():
    def no_labels(diffusion, model, x_T, y, noises):
        return model(x_T, diffusion.timestep_map[torch.zeros(len(x_T), dtype=torch.long)])

    def no_map(diffusion, model, x_T, y, noises):
        return model(x_T, diffusion.timestep_map_of_the_model, y)
    _fails_with(check_ddpm_sampling_loop, no_labels, "TypeError", "model(x, diffusion.timestep_map[t], y)")
    _fails_with(check_ddpm_sampling_loop, no_map, "AttributeError", "diffusion.timestep_map[t]")


def test_ddpm_loop_returning_the_trajectory_or_the_model_output_is_named():
    def trajectory(diffusion, model, x_T, y, noises):
        xs, x = [], x_T
        for i in reversed(range(diffusion.num_timesteps)):
            mean, log_var, _ = _step(diffusion, model, x, i, y)
            x = mean + (i > 0) * torch.exp(0.5 * log_var) * noises[i]
            xs.append(x)
        return xs
    _fails_with(check_ddpm_sampling_loop, trajectory, "whole trajectory")
    _fails_with(check_ddpm_sampling_loop, lambda *a: torch.stack(trajectory(*a)), "whole trajectory")
    _fails_with(check_ddpm_sampling_loop, lambda d, m, x, y, n: {"mean": x}, "dict")
    _fails_with(check_ddpm_sampling_loop, lambda d, m, x, y, n: m(x, d.timestep_map[torch.zeros(len(x), dtype=torch.long)], y),
                "whole output", ".split(C, dim=1)")
    _fails_with(check_ddpm_sampling_loop, lambda d, m, x, y, n: x[:, :1], "shape")


def test_ddpm_loop_check_refuses_ditlibs_reverse_step():
    def via_p_mean_variance(diffusion, model, x_T, y, noises):
        x = x_T
        for i in reversed(range(diffusion.num_timesteps)):
            out = diffusion.p_mean_variance(model, x, torch.full((len(x),), i), model_kwargs={"y": y})
            x = out["mean"] + (i > 0) * torch.exp(0.5 * out["log_variance"]) * noises[i]
        return x

    def via_posterior(diffusion, model, x_T, y, noises):
        x = x_T
        for i in reversed(range(diffusion.num_timesteps)):
            t = torch.full((len(x),), i)
            eps, v = model(x, diffusion.timestep_map[t], y).split(x.shape[1], dim=1)
            x0 = diffusion.predict_xstart_from_eps(x, t, eps)
            mean, _, log_post = diffusion.q_posterior_mean_variance(x0, x, t)
            frac = (v + 1) / 2
            x = mean + (i > 0) * torch.exp(0.5 * (frac * diffusion.betas[i].log() + (1 - frac) * log_post)) * noises[i]
        return x

    def via_p_sample_loop(diffusion, model, x_T, y, noises):
        return diffusion.p_sample_loop(model, x_T.shape, noise=x_T, model_kwargs={"y": y})
    for shortcut, name in ((via_p_mean_variance, "GaussianDiffusion.p_mean_variance"),
                           (via_posterior, "GaussianDiffusion.predict_xstart_from_eps"),
                           (via_p_sample_loop, "GaussianDiffusion.p_sample_loop")):
        _fails_with(check_ddpm_sampling_loop, shortcut, f"calls ditlib's {name}", "write the step yourself")


# ----------------------------------------------------------------------------- lesson 08: respaced betas
def test_respaced_betas_solution_equals_ditlib_spaced_diffusion():
    diffusion = create_diffusion("")
    for spacing in ("50", "ddim10", "10,15,20"):
        kept = space_timesteps(1000, spacing)
        ours = respaced_betas(diffusion.alphas_cumprod, kept)
        assert torch.allclose(ours, create_diffusion(spacing).betas, rtol=1e-10, atol=1e-12)


def test_respaced_betas_built_on_ditlib_spaced_diffusion_passes():
    def via_ditlib(alphas_cumprod, use_timesteps):
        a = alphas_cumprod.double()
        betas = 1 - a / torch.cat([a.new_ones(1), a[:-1]])
        return SpacedDiffusion(use_timesteps, betas.numpy()).betas.numpy()
    assert check_respaced_betas(via_ditlib)
    assert check_respaced_betas(lambda a, ts: respaced_betas(a, ts).tolist())


def _prev_of(alphas_cumprod, kept, rule):
    abar = alphas_cumprod[kept]
    if rule == "wrap":
        return abar[torch.arange(len(kept)) - 1]
    if rule == "full":
        return torch.cat([alphas_cumprod[kept[0] - 1:kept[0]] if kept[0] > 0 else torch.ones(1), abar[:-1]])
    return torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])


@pytest.mark.parametrize("wrong, phrases", [
    (lambda a, ts: (1 - a / torch.cat([torch.ones(1, dtype=a.dtype), a[:-1]]))[sorted(ts)], ("original β_t",)),
    (lambda a, ts: 1 - a[sorted(ts)] / _prev_of(a, sorted(ts), "wrap"), ("wrapped around", "1.0")),
    (lambda a, ts: 1 - a[sorted(ts)] / _prev_of(a, sorted(ts), "full"), ("ᾱ_{t_0 − 1}", "ᾱ_prev = 1")),
    (lambda a, ts: respaced_betas(a, ts)[1:], ("forgot the first kept step",)),
    (lambda a, ts: 1 - a[list(ts)] / torch.cat([torch.ones(1, dtype=a.dtype), a[list(ts)][:-1]]), ("not sorted",)),
    (lambda a, ts: respaced_betas(torch.cat([torch.ones(1, dtype=a.dtype), a])[:-1], ts), ("off by one", "0-based")),
    (lambda a, ts: 1 - a[sorted(ts)], ("forgot to divide",)),
    (lambda a, ts: a[sorted(ts)], ("returned ᾱ",)),
    (lambda a, ts: 1 - _prev_of(a, sorted(ts), "one") / a[sorted(ts)], ("upside down",)),
])
def test_respaced_betas_typical_mistake_is_named(wrong, phrases):
    _fails_with(check_respaced_betas, wrong, *phrases)


def test_respaced_betas_indexing_with_a_set_gets_the_sorting_hint():
    def indexes_with_the_set(alphas_cumprod, use_timesteps):
        if isinstance(use_timesteps, set):
            return respaced_betas(alphas_cumprod[use_timesteps], range(len(use_timesteps)))
        return respaced_betas(alphas_cumprod, use_timesteps)
    _fails_with(check_respaced_betas, indexes_with_the_set, "IndexError", "sorted(use_timesteps)")


# ----------------------------------------------------------------------------- lesson 08: one DDIM step
def test_ddim_step_solution_equals_ditlib_ddim_sample():
    diffusion = GaussianDiffusion(np.linspace(1e-4, 0.02, 1000), model_var_type="fixed_small")
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64), torch.randn(3, 2, 4, 4, generator=g,
                                                                                   dtype=torch.float64)
    for t in (999, 500, 0):
        tt = torch.full((3,), t)
        ref = diffusion.ddim_sample(lambda x_, t_: eps, x, tt, clip_denoised=False, eta=0.0)["sample"]
        mine = ddim_step(x, eps, diffusion.alphas_cumprod[t], diffusion.alphas_cumprod_prev[t])
        assert torch.allclose(mine, ref, atol=1e-8)


def test_ddim_step_with_math_sqrt_on_the_scalars_passes():
    import math
    assert check_ddim_step(lambda x, e, a, p: math.sqrt(p) * (x - math.sqrt(1 - a) * e) / math.sqrt(a)
                           + math.sqrt(1 - p) * e)


def _ddim(x0_fn, step_fn):
    return lambda x, e, a, p: step_fn(x0_fn(x, e, a), e, p)


_X0 = lambda x, e, a: (x - (1 - a).sqrt() * e) / a.sqrt()  # noqa: E731
_STEP = lambda x0, e, p: p.sqrt() * x0 + (1 - p).sqrt() * e  # noqa: E731


@pytest.mark.parametrize("wrong, phrases", [
    (lambda x, e, a, p: ddim_step(x, e, p, a), ("swapped",)),
    (lambda x, e, a, p: p.sqrt() * _X0(x, e, a) + (1 - a).sqrt() * e, ("direction term", "√(1−ᾱ_prev)")),
    (lambda x, e, a, p: p * (x - (1 - a) * e) / a + (1 - p) * e, ("forgot the square roots",)),
    (_ddim(_X0, lambda x0, e, p: p * x0 + (1 - p) * e), ("square roots in the re-noising",)),
    (_ddim(lambda x, e, a: (x - (1 - a) * e) / a, _STEP), ("square roots in x̂_0",)),
    (_ddim(lambda x, e, a: _X0(x, e, a).clamp(-1, 1), _STEP), ("clipped", "no clipping")),
    (lambda x, e, a, p: _X0(x, e, a), ("returned x̂_0",)),
    (_ddim(lambda x, e, a: (x + (1 - a).sqrt() * e) / a.sqrt(), _STEP), ("sign",)),
    (lambda x, e, a, p: p.sqrt() * _X0(x, e, a), ("dropped the direction term",)),
])
def test_ddim_step_typical_mistake_is_named(wrong, phrases):
    _fails_with(check_ddim_step, wrong, *phrases)


def test_ddim_step_returning_one_image_or_numpy_gets_a_friendly_message():
    _fails_with(check_ddim_step, lambda x, e, a, p: ddim_step(x, e, a, p)[0], "shape")
    _fails_with(check_ddim_step, lambda x, e, a, p: ddim_step(x, e, a, p).numpy(), "NumPy")


# ----------------------------------------------------------------------------- lesson 10: Fréchet distance
def test_frechet_distance_accepts_torch_numpy_scalar_and_0d_tensor_answers():
    def in_torch(mu1, sigma1, mu2, sigma2):
        m1, s1, m2, s2 = (torch.from_numpy(v) for v in (mu1, sigma1, mu2, sigma2))
        w, v = torch.linalg.eigh(s1)
        root = (v * w.clamp(min=0).sqrt()) @ v.T
        return ((m1 - m2) ** 2).sum() + s1.trace() + s2.trace() - 2 * torch.linalg.eigvalsh(
            root @ s2 @ root).clamp(min=0).sqrt().sum()
    assert check_frechet_distance(in_torch)
    assert check_frechet_distance(lambda *a: np.float64(frechet_distance(*a)))
    assert check_frechet_distance(lambda *a: np.array([frechet_distance(*a)]))


def test_frechet_distance_matches_the_notebook_formula_on_features():
    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(200, 4)), rng.normal(size=(300, 4)) * 1.3 + 0.2
    mu1, mu2, s1, s2 = f1.mean(0), f2.mean(0), np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    # (Σ1Σ2)^{1/2} through its eigenvalues: Σ1Σ2 is similar to the PSD matrix Σ1^{1/2} Σ2 Σ1^{1/2}
    eig = np.linalg.eigvals(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig.clip(min=0)).sum()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def _fd(trace_sqrt=None, factor=2.0, norm_power=2, traces=True, root=False):
    def fn(mu1, sigma1, mu2, sigma2):
        ts = trace_sqrt(sigma1, sigma2) if trace_sqrt else (
            np.trace(sigma1) + np.trace(sigma2) - frechet_distance(0 * mu1, sigma1, 0 * mu1, sigma2)) / 2
        d = np.sqrt(((mu1 - mu2) ** 2).sum()) ** norm_power
        value = d + (np.trace(sigma1) + np.trace(sigma2) - factor * ts if traces else 0.0)
        return float(np.sqrt(value)) if root else float(value)
    return fn


@pytest.mark.parametrize("wrong, phrases", [
    (_fd(traces=False), ("dropped the trace term",)),
    (_fd(norm_power=1), ("Square the norm",)),
    (_fd(trace_sqrt=lambda s1, s2: np.sqrt(np.abs(np.diag(s1 @ s2))).sum()), ("elementwise square root of Σ1·Σ2",)),
    (_fd(trace_sqrt=lambda s1, s2: np.sqrt(np.diag(s1) * np.diag(s2)).sum()), ("diagonal entries", "matrix square root")),
    (_fd(factor=1.0), ("factor 2",)),
    (_fd(factor=0.0), ("only summed the traces",)),
    (_fd(trace_sqrt=lambda s1, s2: np.sqrt(np.trace(s1 @ s2))), ("square root of the trace",)),
    (_fd(root=True), ("square root of the distance",)),
])
def test_frechet_distance_typical_mistake_is_named(wrong, phrases):
    _fails_with(check_frechet_distance, wrong, *phrases)


def test_frechet_distance_nan_complex_and_array_answers_get_a_friendly_message():
    with np.errstate(invalid="ignore"):
        _fails_with(check_frechet_distance, lambda m1, s1, m2, s2: float(np.sqrt(s1 @ s2).trace()) * 0 + np.nan,
                    "NaN", "matrix square root")
    _fails_with(check_frechet_distance, lambda *a: complex(frechet_distance(*a), 1e-9), "complex", ".real")
    _fails_with(check_frechet_distance, lambda m1, s1, m2, s2: (m1 - m2) ** 2, "one number")
