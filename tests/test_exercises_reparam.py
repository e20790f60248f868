"""Specification of the check of lesson 02's exercise, the loss that fits μ and σ through samples (W₂² between the
sorted reparameterized samples and the sorted data): a written-out solution passes, each typical mistake is
named, the gradients are checked as well as the value, and the learner's exceptions never escape."""
import math

import numpy as np
import torch

from ditlib.course.checks_diffusion import check_sample_loss
from ditlib.course.feedback import CHECKS, Feedback
from exercise_helpers import fails_with


def sample_loss(mu, log_sigma, eps, target, scale="exp", sort=True, reduce="mean", root=False):
    sigma = {"exp": log_sigma.exp(), "raw": log_sigma, "var": (2 * log_sigma).exp(), "half": (log_sigma / 2).exp()}[scale]
    x = mu + sigma * eps                                                   # (n,) samples of N(μ, σ²)
    squared = ((x.sort().values if sort else x) - target).square()         # (n,)
    loss = squared.mean() if reduce == "mean" else squared.sum()           # ()
    return loss.sqrt() if root else loss


def _fails_with(fn, *phrases):
    return fails_with(check_sample_loss, fn, *phrases)


def test_the_written_out_loss_passes_and_is_the_sorted_sample_distance():
    assert CHECKS["sample_loss"] is check_sample_loss
    fb = check_sample_loss(sample_loss)
    assert fb.passed, fb.message
    assert fb.message == check_sample_loss(sample_loss).message
    # by hand: μ = 1, σ = 2, ε = (0.5, −1) gives x = (2, −1), sorted (−1, 2), against y = (0, 1): ((−1)² + 1²)/2 = 1
    mu, log_sigma = torch.tensor(1.0, requires_grad=True), torch.tensor(math.log(2.0), requires_grad=True)
    loss = sample_loss(mu, log_sigma, torch.tensor([0.5, -1.0]), torch.tensor([0.0, 1.0]))
    assert loss.shape == () and torch.isclose(loss, torch.tensor(1.0))
    grad_mu, grad_log_sigma = torch.autograd.grad(loss, [mu, log_sigma])
    # ∂L/∂μ = (2/n)·Σ(x₍ᵢ₎ − y₍ᵢ₎) = (−1 + 1) = 0; ∂L/∂log σ = (2/n)·Σ(x₍ᵢ₎ − y₍ᵢ₎)·σ·ε₍ᵢ₎ = (−1)(2)(−1) + (1)(2)(0.5) = 3
    assert torch.isclose(grad_mu, torch.tensor(0.0)) and torch.isclose(grad_log_sigma, torch.tensor(3.0))


def test_the_check_passes_other_correct_spellings():
    def with_argsort(mu, log_sigma, eps, target):
        x = mu + torch.exp(log_sigma) * eps
        return torch.mean((x[torch.argsort(x)] - target) ** 2)

    def with_mse_loss(mu, log_sigma, eps, target):
        x = mu + log_sigma.exp() * eps
        return torch.nn.functional.mse_loss(torch.sort(x)[0], target)
    for fn in (with_argsort, with_mse_loss):
        assert check_sample_loss(fn).passed, check_sample_loss(fn).message


def test_value_mistakes_are_named():
    _fails_with(lambda m, s, e, y: sample_loss(m, s, e, y, sort=False), "without sorting x", "x.sort().values")
    _fails_with(lambda m, s, e, y: sample_loss(m, s, e, y, scale="raw"), "log_sigma itself as σ", "exponentiate")
    _fails_with(lambda m, s, e, y: sample_loss(m, s, e, y, scale="var"), "variance σ² = exp(2·log_sigma)")
    _fails_with(lambda m, s, e, y: sample_loss(m, s, e, y, scale="half"), "log-variance", "exp(log_sigma/2)")
    _fails_with(lambda m, s, e, y: sample_loss(m, s, e, y, reduce="sum"), "summed", "mean over i")
    _fails_with(lambda m, s, e, y: sample_loss(m, s, e, y, root=True), "W₂, the square root", "W₂²")


def test_a_sample_that_ignores_eps_is_named():
    def with_normal(mu, log_sigma, eps, target):
        x = torch.normal(mu.expand(len(eps)), log_sigma.exp().expand(len(eps)))
        return (x.sort().values - target).square().mean()

    def with_randn_like(mu, log_sigma, eps, target):
        return sample_loss(mu, log_sigma, torch.randn_like(eps), target)
    state = torch.random.get_rng_state()
    try:
        for fn in (with_normal, with_randn_like):
            _fails_with(fn, "changes between two calls", "`eps`", "torch.normal")
    finally:
        torch.random.set_rng_state(state)


def test_missing_gradients_are_named():
    reach = "the gradient cannot reach"
    advice = "not torch.normal or .detach()"
    _fails_with(lambda m, s, e, y: sample_loss(m, s, e, y).detach(), f"{reach} μ and σ", advice)
    _fails_with(lambda m, s, e, y: sample_loss(m.detach(), s, e, y), f"{reach} μ:", advice)
    _fails_with(lambda m, s, e, y: sample_loss(m, s.detach(), e, y), f"{reach} σ", advice)

    def no_grad(m, s, e, y):
        with torch.no_grad():
            return sample_loss(m, s, e, y)

    def via_numpy(m, s, e, y):
        x = np.sort(m.item() + np.exp(s.item()) * e.numpy())
        return torch.tensor(np.mean((x - y.numpy()) ** 2), requires_grad=True)   # a fresh leaf, cut off from μ, σ
    for fn in (no_grad, via_numpy):
        _fails_with(fn, f"{reach} μ and σ", advice)
    _fails_with(lambda m, s, e, y: sample_loss(m, s, e, y).item(), "Python number", "no .item()")


def test_a_wrong_gradient_with_the_right_value_is_named():
    def straight_through_sort(mu, log_sigma, eps, target):      # sorted values, but each gradient goes to x unsorted
        x = mu + log_sigma.exp() * eps
        x_sorted = x.detach().sort().values + (x - x.detach())
        return (x_sorted - target).square().mean()
    _fails_with(straight_through_sort, "right value", "gradient with respect to log_sigma is wrong", "sort x itself")


def test_a_loss_per_sample_and_other_shapes_are_named():
    _fails_with(lambda m, s, e, y: (((m + s.exp() * e).sort().values - y) ** 2), "one value per sample", "(8,)")
    _fails_with(lambda m, s, e, y: sample_loss(m, s, e, y).reshape(1, 1), "shape (1, 1)", "0-d tensor")
    _fails_with(lambda m, s, e, y: sample_loss(m, s, e, y).detach().numpy(), "NumPy")


def test_learner_exceptions_never_escape():
    def unpacks_wrongly(mu, log_sigma, eps, target):
        return (mu + log_sigma.exp() * eps).sort() - target          # a (values, indices) pair minus a tensor

    def not_implemented(*args):
        raise NotImplementedError()

    def breaks_autograd(mu, log_sigma, eps, target):
        mu.add_(0.0)                                                  # in place on a leaf that requires grad
        return sample_loss(mu, log_sigma, eps, target)
    _fails_with(unpacks_wrongly, "TypeError", "sample_loss(mu, log_sigma, eps, target)")
    _fails_with(not_implemented, "not implemented yet")
    _fails_with(breaks_autograd, "RuntimeError")
    _fails_with(lambda *args: 1 / 0, "ZeroDivisionError")
    _fails_with(lambda *args: None, "None", "return")
    _fails_with(lambda *args: torch.tensor(float("nan")), "NaN")


def test_the_check_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    check_sample_loss(sample_loss)
    assert torch.equal(state, torch.random.get_rng_state())
