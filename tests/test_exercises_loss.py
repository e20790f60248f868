"""Specification of check_hybrid_loss (lesson 03): the learner's L_simple + L_vlb with a frozen ε is compared
with GaussianDiffusion.training_losses, in values and in gradients; each typical mistake is named, and a function
that calls the library's loss or reverse step is refused."""
import math

import torch

from ditlib.course.checks_diffusion import check_hybrid_loss
from ditlib.course.feedback import CHECKS, Feedback
from ditlib.diffusion import create_diffusion, discretized_gaussian_log_likelihood, mean_flat, normal_kl
from ditlib.models import build_model
from exercise_helpers import fails_with


def _posterior(x_start, x_t, t, betas):
    ab = torch.cumprod(1 - betas, 0)
    abp = torch.cat([ab.new_ones(1), ab[:-1]])
    take = lambda a: a[t].view(-1, 1, 1, 1).to(x_t.dtype)  # noqa: E731
    mean = take(betas * abp.sqrt() / (1 - ab)) * x_start + take((1 - betas).sqrt() * (1 - abp) / (1 - ab)) * x_t
    return mean, take(betas * (1 - abp) / (1 - ab))


def _loss(detach=True, bits=True, decoder=True, frac=lambda v: (v + 1) / 2, clip=False, mse_reduce="mean",
          total=lambda mse, vb: mse + vb):
    def hybrid_loss(diffusion, model, x_start, t, y, noise):
        betas = diffusion.betas
        abar = torch.cumprod(1 - betas, 0)[t].view(-1, 1, 1, 1).to(x_start.dtype)
        x_t = abar.sqrt() * x_start + (1 - abar).sqrt() * noise
        eps, v = model(x_t, t, y).split(x_start.shape[1], dim=1)
        mse = mean_flat((noise - eps) ** 2) if mse_reduce == "mean" else ((noise - eps) ** 2).sum(dim=(1, 2, 3))
        e = eps.detach() if detach else eps
        x0_hat = (x_t - (1 - abar).sqrt() * e) / abar.sqrt()
        model_mean, _ = _posterior(x0_hat.clamp(-1, 1) if clip else x0_hat, x_t, t, betas)
        true_mean, _ = _posterior(x_start, x_t, t, betas)
        log_post = diffusion.posterior_log_variance_clipped[t].view(-1, 1, 1, 1).to(x_start.dtype)
        w = frac(v)
        log_var = w * betas[t].log().view(-1, 1, 1, 1).to(x_start.dtype) + (1 - w) * log_post
        kl = mean_flat(normal_kl(true_mean, log_post, model_mean, log_var))
        nll = -mean_flat(discretized_gaussian_log_likelihood(x_start, means=model_mean, log_scales=0.5 * log_var))
        vb = (torch.where(t == 0, nll, kl) if decoder else kl) / (math.log(2.0) if bits else 1.0)
        return {"mse": mse, "vb": vb, "loss": total(mse, vb)}
    return hybrid_loss


def _fails_with(fn, *phrases):
    return fails_with(check_hybrid_loss, fn, *phrases)


def test_the_check_is_registered_and_passes_a_written_out_loss():
    assert CHECKS["hybrid_loss"] is check_hybrid_loss
    first, second = check_hybrid_loss(_loss()), check_hybrid_loss(_loss())
    assert first.passed, first.message
    assert first.message == second.message and "values and gradients" in first.message


def test_the_written_out_loss_equals_training_losses_on_a_dit():
    diffusion = create_diffusion("")
    torch.manual_seed(0)
    model = build_model("DiT-debug/2", input_size=8, in_channels=4, num_classes=10).eval()   # no label dropout
    for p in model.parameters():                       # away from adaLN-Zero's zero start, so that ε and v vary
        torch.nn.init.normal_(p, std=0.05)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g).clamp(-1, 1), torch.randn(3, 4, 8, 8, generator=g)
    t, y = torch.tensor([0, 17, 900]), torch.tensor([2, 5, 9])
    mine = _loss()(diffusion, model, x0, t, y, noise)
    theirs = diffusion.training_losses(model, x0, t, {"y": y}, noise)
    for key in ("mse", "vb", "loss"):
        assert torch.allclose(mine[key], theirs[key], rtol=1e-3, atol=1e-6), key   # float32 at t = 0


def test_a_bound_that_also_trains_eps_is_named():
    _fails_with(_loss(detach=False), "gradient", "eps.detach()")


def test_wrong_units_decoder_and_weights_are_named():
    _fails_with(_loss(bits=False), "nats", "ln 2")
    _fails_with(_loss(decoder=False), "t = 0", "decoder")
    _fails_with(_loss(frac=lambda r: r), "(r + 1)/2", "raw output r")
    _fails_with(_loss(frac=lambda v: 1 - (v + 1) / 2), "wrong way round")
    _fails_with(_loss(clip=True), "clipped x̂_0")
    _fails_with(_loss(mse_reduce="sum"), "sums", "mean_flat")


def test_a_loss_missing_one_of_its_terms_is_named():
    _fails_with(_loss(total=lambda mse, vb: mse), "L_simple alone")
    _fails_with(_loss(total=lambda mse, vb: vb), "bound's term alone")


def test_odd_outputs_give_one_sentence():
    right = _loss()
    _fails_with(lambda *a: right(*a)["loss"], "return a dict")
    _fails_with(lambda *a: {"mse": right(*a)["mse"]}, "lacks", "vb")
    _fails_with(lambda *a: {k: v.mean() for k, v in right(*a).items()}, "one number", "mean_flat")
    _fails_with(lambda *a: {k: v.detach() for k, v in right(*a).items()}, "no gradient")
    _fails_with(lambda *a: None, "None", "return")
    _fails_with(lambda *a: 1 / 0, "ZeroDivisionError")

    def stub(*a):
        raise NotImplementedError()
    _fails_with(stub, "not implemented yet")


def test_the_check_refuses_the_librarys_loss_and_reverse_step():
    _fails_with(lambda d, m, x0, t, y, n: d.training_losses(m, x0, t, {"y": y}, n),
                "calls ditlib's GaussianDiffusion.training_losses", "write the hybrid loss yourself")

    def via_p_mean_variance(diffusion, model, x_start, t, y, noise):
        terms = _loss()(diffusion, model, x_start, t, y, noise)
        diffusion.p_mean_variance(model, diffusion.q_sample(x_start, t, noise), t, model_kwargs={"y": y})
        return terms
    _fails_with(via_p_mean_variance, "GaussianDiffusion.p_mean_variance")

    def via_posterior(diffusion, model, x_start, t, y, noise):
        diffusion.q_posterior_mean_variance(x_start, x_start, t)
        return _loss()(diffusion, model, x_start, t, y, noise)
    _fails_with(via_posterior, "GaussianDiffusion.q_posterior_mean_variance")


def test_the_check_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    check_hybrid_loss(_loss())
    assert torch.equal(state, torch.random.get_rng_state())
