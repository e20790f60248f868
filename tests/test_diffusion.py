"""Specification of ditlib.diffusion against closed forms derived independently here (float64 NumPy)."""
import math

import numpy as np
import pytest
import torch

from ditlib.diffusion import (GaussianDiffusion, create_diffusion, discretized_gaussian_log_likelihood,
                              get_named_beta_schedule, space_timesteps)


@pytest.fixture(scope="module")
def diffusion():
    return create_diffusion("")


def reference_alpha_bar(T=1000):
    betas = np.linspace(1e-4, 0.02, T)
    return betas, np.cumprod(1 - betas)


def test_linear_schedule_is_ddpm_s():
    betas = get_named_beta_schedule("linear", 1000)
    assert betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert np.allclose(np.diff(betas), (0.02 - 1e-4) / 999)


def test_alpha_bar_is_the_product_of_alphas(diffusion):
    _, abar = reference_alpha_bar()
    assert np.allclose(diffusion.alphas_cumprod.numpy(), abar, rtol=1e-12)
    assert 3e-5 < abar[-1] < 5e-5             # x_T is almost pure noise


def test_cosine_schedule_follows_its_alpha_bar():
    T = 1000
    betas = get_named_beta_schedule("cosine", T)
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2   # noqa: E731
    abar = np.cumprod(1 - betas)
    ts = np.array([1, 100, 500, 900])
    assert np.allclose(abar[ts - 1], [f(t) / f(0) for t in ts], rtol=1e-6)
    assert betas.max() <= 0.999


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="linear"):
        get_named_beta_schedule("quadratic", 10)


@pytest.mark.parametrize("t", [0, 250, 999])
def test_q_sample_has_the_mean_and_variance_alpha_bar_says(diffusion, t):
    _, abar = reference_alpha_bar()
    torch.manual_seed(0)
    x0 = torch.tensor([[-0.8, 0.1, 0.9]]).double()
    n = 200_000
    xt = diffusion.q_sample(x0.expand(n, 3), torch.full((n,), t), noise=torch.randn(n, 3, dtype=torch.float64))
    assert torch.allclose(xt.mean(0), math.sqrt(abar[t]) * x0[0], atol=4 * math.sqrt((1 - abar[t]) / n))
    assert torch.allclose(xt.var(0), torch.full((3,), 1 - abar[t], dtype=torch.float64), rtol=0.02, atol=1e-6)


def test_q_mean_variance_is_the_closed_form(diffusion):
    _, abar = reference_alpha_bar()
    x0 = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0, 10, 999])
    mean, var, log_var = diffusion.q_mean_variance(x0, t)
    assert torch.allclose(mean, torch.from_numpy(np.sqrt(abar[[0, 10, 999]]))[:, None] * x0)
    assert torch.allclose(var[:, 0], torch.from_numpy(1 - abar[[0, 10, 999]]))
    assert torch.allclose(log_var, var.log())


def posterior_by_bayes(x0, xt, t):
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): product of two Gaussians in x_{t-1}."""
    betas, abar = reference_alpha_bar()
    abar_prev = abar[t - 1] if t > 0 else 1.0
    # q(x_{t-1} | x_0) = N(sqrt(abar_prev) x0, 1 - abar_prev); q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t)
    prec = 1 / (1 - abar_prev) + (1 - betas[t]) / betas[t]
    var = 1 / prec
    mean = var * (math.sqrt(abar_prev) * x0 / (1 - abar_prev) + math.sqrt(1 - betas[t]) * xt / betas[t])
    return mean, var


@pytest.mark.parametrize("t", [1, 5, 300, 999])
def test_posterior_matches_its_closed_form(diffusion, t):
    x0 = np.array([0.3, -0.7, 1.0])
    xt = np.array([0.5, 0.2, -1.3])
    mean, var, log_var = diffusion.q_posterior_mean_variance(torch.tensor(x0)[None], torch.tensor(xt)[None], torch.tensor([t]))
    ref_mean, ref_var = posterior_by_bayes(x0, xt, t)
    assert np.allclose(mean[0].numpy(), ref_mean, rtol=1e-9)
    assert np.allclose(var[0].numpy(), ref_var, rtol=1e-9)
    assert np.allclose(log_var[0].numpy(), np.log(ref_var), rtol=1e-9)


def test_posterior_log_variance_at_t0_is_clipped_to_t1(diffusion):
    _, _, log_var = diffusion.q_posterior_mean_variance(torch.zeros(2, 1), torch.zeros(2, 1), torch.tensor([0, 1]))
    assert log_var[0].item() == pytest.approx(log_var[1].item())
    assert math.isfinite(log_var[0].item())


class ConstantModel(torch.nn.Module):
    """Outputs fixed ε and Σ-interpolation v, whatever the input."""

    def __init__(self, eps, v):
        super().__init__()
        self.eps, self.v = eps, v

    def forward(self, x, t, **kwargs):
        return torch.cat([self.eps, self.v], dim=1)


def test_learned_range_interpolates_between_beta_and_beta_tilde(diffusion):
    betas, abar = reference_alpha_bar()
    x = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    t = torch.tensor([400])
    beta_tilde = betas[400] * (1 - abar[399]) / (1 - abar[400])
    for v, expected in [(1.0, betas[400]), (-1.0, beta_tilde), (0.0, math.sqrt(betas[400] * beta_tilde))]:
        model = ConstantModel(torch.zeros_like(x), torch.full_like(x, v))
        out = diffusion.p_mean_variance(model, x, t)
        assert out["variance"].flatten()[0].item() == pytest.approx(expected, rel=1e-9)


def test_pred_xstart_inverts_q_sample(diffusion):
    x0 = torch.rand(4, 1, 3, 3, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 500, 999])
    xt = diffusion.q_sample(x0, t, noise)
    assert torch.allclose(diffusion.predict_xstart_from_eps(xt, t, noise), x0, atol=1e-6)


def _std_normal_cdf(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def test_vb_at_t0_is_the_discretized_gaussian_nll(diffusion):
    torch.manual_seed(0)
    x0 = (torch.randint(0, 256, (2, 1, 4, 4)).double() / 127.5 - 1)
    x0[0, 0, 0, 0], x0[0, 0, 0, 1] = -1.0, 1.0           # the two edge bins
    noise = torch.randn_like(x0)
    eps, v = torch.randn_like(x0) * 0.1, torch.rand_like(x0) * 2 - 1
    t = torch.zeros(2, dtype=torch.long)
    vb = diffusion.training_losses(ConstantModel(eps, v), x0, t, noise=noise)["vb"]

    # Independent: mean of p(x0 | x1) from x̂0, variance from v; exact Φ; bins of width 2/255.
    betas, abar = reference_alpha_bar()
    xt = math.sqrt(abar[0]) * x0 + math.sqrt(1 - abar[0]) * noise
    x0_hat = (xt - math.sqrt(1 - abar[0]) * eps) / math.sqrt(abar[0])
    mean = x0_hat                                     # at t = 0 the posterior mean is x̂0 (ᾱ_prev = 1)
    log_beta_tilde_1 = math.log(betas[1] * (1 - abar[0]) / (1 - abar[1]))
    log_var = (v + 1) / 2 * math.log(betas[0]) + (1 - v) / 2 * log_beta_tilde_1
    std = torch.exp(0.5 * log_var)
    upper = torch.where(x0 > 0.999, torch.ones_like(x0), _std_normal_cdf((x0 + 1 / 255 - mean) / std))
    lower = torch.where(x0 < -0.999, torch.zeros_like(x0), _std_normal_cdf((x0 - 1 / 255 - mean) / std))
    nll_bits = -torch.log((upper - lower).clamp(min=1e-12)).mean(dim=(1, 2, 3)) / math.log(2)
    # the library uses DDPM's tanh approximation of Φ, accurate to ~1e-3 here
    assert torch.allclose(vb, nll_bits, rtol=5e-3)


@pytest.mark.parametrize("t", [1, 50, 700])
def test_vb_for_t_positive_is_the_kl_to_the_posterior_in_bits(diffusion, t):
    torch.manual_seed(t)
    x0 = torch.rand(1, 1, 3, 3, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    eps, v = noise + 0.3 * torch.randn_like(x0), torch.rand_like(x0) * 2 - 1
    vb = diffusion.training_losses(ConstantModel(eps, v), x0, torch.tensor([t]), noise=noise)["vb"]

    betas, abar = reference_alpha_bar()
    xt = math.sqrt(abar[t]) * x0 + math.sqrt(1 - abar[t]) * noise
    q_mean, q_var = posterior_by_bayes(x0.numpy(), xt.numpy(), t)
    x0_hat = (xt - math.sqrt(1 - abar[t]) * eps) / math.sqrt(abar[t])
    p_mean, _ = posterior_by_bayes(x0_hat.numpy(), xt.numpy(), t)
    p_logvar = ((v + 1) / 2 * math.log(betas[t]) + (1 - v) / 2 * math.log(q_var)).numpy()
    kl = 0.5 * (p_logvar - np.log(q_var) + (q_var + (q_mean - p_mean) ** 2) / np.exp(p_logvar) - 1)
    assert vb.item() == pytest.approx(kl.mean() / math.log(2), rel=1e-6)


def test_training_losses_are_mse_plus_vb_and_vb_trains_only_sigma(diffusion):
    torch.manual_seed(0)
    x0 = torch.rand(3, 1, 4, 4) * 2 - 1
    eps = torch.zeros(3, 1, 4, 4, requires_grad=True)
    v = torch.zeros(3, 1, 4, 4, requires_grad=True)
    noise = torch.randn_like(x0)
    terms = diffusion.training_losses(lambda x, t, **k: torch.cat([eps, v], 1), x0, torch.tensor([3, 30, 300]), noise=noise)
    assert torch.allclose(terms["mse"], (noise ** 2).mean(dim=(1, 2, 3)))
    assert torch.allclose(terms["loss"], terms["mse"] + terms["vb"])
    terms["vb"].sum().backward()
    assert eps.grad is None or torch.count_nonzero(eps.grad) == 0     # ε is frozen inside the bound
    assert torch.count_nonzero(v.grad) > 0


def test_fixed_sigma_needs_only_eps_channels():
    d = create_diffusion("", learn_sigma=False)
    x0 = torch.rand(2, 1, 4, 4) * 2 - 1
    terms = d.training_losses(lambda x, t, **k: torch.zeros_like(x), x0, torch.tensor([1, 2]))
    assert torch.count_nonzero(terms["vb"]) == 0
    with pytest.raises(ValueError, match="2 channels"):
        create_diffusion("").training_losses(lambda x, t, **k: torch.zeros_like(x), x0, torch.tensor([1, 2]))


@pytest.mark.parametrize("respacing,count", [("250", 250), ("50", 50), ("ddim50", 50), ("10,20", 30), ("", 1000)])
def test_respacing_keeps_alpha_bar_at_the_kept_steps(diffusion, respacing, count):
    spaced = create_diffusion(respacing)
    assert spaced.num_timesteps == count
    kept = spaced.timestep_map
    assert torch.allclose(spaced.alphas_cumprod, diffusion.alphas_cumprod[kept], rtol=1e-12)
    assert kept[0] == 0 and kept[-1] <= 999


def test_space_timesteps_spreads_steps_evenly():
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert space_timesteps(10, "3") == {0, 4, 9}
    assert max(space_timesteps(1000, "250")) == 999
    with pytest.raises(ValueError):
        space_timesteps(100, "101")
    with pytest.raises(ValueError, match="timestep_respacing"):
        space_timesteps(100, "fast")


def test_respaced_model_is_called_with_original_timesteps():
    spaced = create_diffusion("ddim10")
    seen = []

    def model(x, t, **kwargs):
        seen.append(t.clone())
        return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])

    spaced.p_mean_variance(model, torch.zeros(2, 1, 2, 2), torch.tensor([9, 1]))
    assert seen[0].tolist() == [900, 100]


def oracle_eps_model(diffusion, x0):
    """A model that knows x0: it returns the exact noise in x_t (and v = 0)."""
    def model(x, t, **kwargs):
        abar = diffusion_base.alphas_cumprod[t].to(x.dtype).view(-1, 1, 1, 1)
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)
    diffusion_base = create_diffusion("")
    return model


@pytest.mark.parametrize("respacing", ["ddim25", "ddim1000"])
def test_ddim_with_a_perfect_denoiser_returns_the_data(respacing):
    d = create_diffusion(respacing)
    x0 = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 1.8 - 0.9
    out = d.ddim_sample_loop(oracle_eps_model(d, x0), x0.shape, noise=torch.randn_like(x0))
    assert torch.allclose(out, x0, atol=1e-5)


def test_sampling_loops_are_deterministic_for_a_generator():
    d = create_diffusion("20")
    model = lambda x, t, **k: torch.cat([0.1 * x, torch.zeros_like(x)], 1)   # noqa: E731
    runs = [d.p_sample_loop(model, (2, 1, 4, 4), generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_timesteps_out_of_range_are_refused(diffusion):
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        diffusion.q_sample(torch.zeros(1, 1), torch.tensor([1000]))


def test_discretized_likelihood_of_a_sharp_gaussian_is_near_one():
    x = torch.tensor([-1.0, 0.0, 1.0])
    ll = discretized_gaussian_log_likelihood(x, means=x, log_scales=torch.full_like(x, math.log(1e-3)))
    assert torch.allclose(ll, torch.zeros(3), atol=1e-3)      # the bin holds ±3.9σ: p ≈ 0.9999


def test_gaussian_diffusion_refuses_bad_settings():
    with pytest.raises(ValueError, match="model_var_type"):
        GaussianDiffusion(np.linspace(1e-4, 0.02, 10), model_var_type="learned")
    with pytest.raises(ValueError, match="betas"):
        GaussianDiffusion(np.array([0.0, 0.1]))


def test_progressive_loop_yields_every_step_and_ends_where_the_loop_ends():
    diffusion = create_diffusion("10", learn_sigma=False)
    model = lambda x, t, **kw: 0.1 * x                                       # noqa: E731  any deterministic ε-model
    shape = (2, 1, 4, 4)
    steps = list(diffusion.p_sample_loop_progressive(model, shape, generator=torch.Generator().manual_seed(3)))
    final = diffusion.p_sample_loop(model, shape, generator=torch.Generator().manual_seed(3))
    assert [s["t"] for s in steps] == list(range(9, -1, -1))
    assert torch.equal(steps[-1]["sample"], final)


def test_min_snr_weight_caps_the_signal_to_noise_ratio_at_gamma(diffusion):
    t = torch.tensor([0, 10, 100, 300, 999])
    abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))[t.numpy()]
    snr = abar / (1.0 - abar)                      # written out from ᾱ_t, independently of the class
    expected = np.minimum(snr, 5.0) / snr
    w = diffusion.min_snr_weight(t, 5.0)
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float32), rtol=1e-5)
    assert w[0] < 0.01 and w[-1] == 1.0            # clean steps down-weighted, noisy steps untouched
    with pytest.raises(ValueError, match="gamma"):
        diffusion.min_snr_weight(t, 0.0)


def test_min_snr_weighting_scales_only_the_eps_term(diffusion):
    torch.manual_seed(0)
    x0 = torch.randn(4, 1, 4, 4)
    t = torch.tensor([1, 50, 400, 900])
    noise = torch.randn_like(x0)
    out = torch.randn(4, 2, 4, 4)
    model = lambda x, ts, **kw: out                # a fixed "model": same output for both calls
    plain = diffusion.training_losses(model, x0, t, noise=noise)
    weighted = diffusion.training_losses(model, x0, t, noise=noise, min_snr_gamma=5.0)
    w = diffusion.min_snr_weight(t, 5.0)
    assert torch.allclose(weighted["mse"], plain["mse"])
    assert torch.allclose(weighted["vb"], plain["vb"])
    assert torch.allclose(weighted["loss"], w * plain["mse"] + plain["vb"])
    assert not torch.allclose(weighted["loss"], plain["loss"])
