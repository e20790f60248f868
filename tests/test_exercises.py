"""Specification of ditlib.course.exercises: each notebook check passes a correct solution, names typical
mistakes specifically, never lets a learner's exception escape, and answers deterministically."""
import math
import re
import sys
from pathlib import Path

import einops
import einops.layers.torch
import numpy as np
import pytest
import torch
from einops import rearrange

from ditlib.course import exercises as ex

import test_exercises_attention as attention_solutions
import test_exercises_latent as latent_solutions
import test_exercises_loss as loss_solutions
import test_exercises_memory as memory_solutions
import test_exercises_model as model_solutions
import test_exercises_reparam as reparam_solutions
import test_exercises_sampling as sampling_solutions
from ditlib.course.feedback import Problem, call_refusing
from ditlib.diffusion import (GaussianDiffusion, create_diffusion, discretized_gaussian_log_likelihood, mean_flat,
                             normal_kl)
from ditlib.models import DiTBlock, build_model, get_1d_sincos_pos_embed_from_grid, timestep_embedding
from exercise_helpers import fails_with

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


# ----------------------------------------------------------------------------- learner-style solutions
def _coef(values, t, x):
    return values[t].to(x.dtype).view(-1, *([1] * (x.ndim - 1)))


def q_sample(x_start, t, noise, alphas_cumprod):
    a = _coef(alphas_cumprod, t, x_start)
    return a.sqrt() * x_start + (1 - a).sqrt() * noise


def posterior_mean_variance(x_start, x_t, t, betas):
    alphas = 1 - betas
    ab = torch.cumprod(alphas, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    c1 = betas * ab_prev.sqrt() / (1 - ab)
    c2 = (1 - ab_prev) * alphas.sqrt() / (1 - ab)
    var = betas * (1 - ab_prev) / (1 - ab)
    return _coef(c1, t, x_start) * x_start + _coef(c2, t, x_start) * x_t, _coef(var, t, x_start)


def patchify(x, patch_size):
    n, c, h, w = x.shape
    p = patch_size
    x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def sincos_1d(embed_dim, positions):
    pos = torch.as_tensor(positions, dtype=torch.float64).reshape(-1)
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 2, dtype=torch.float64) * 2 / embed_dim)
    arg = pos[:, None] * omega[None]
    return torch.cat([arg.sin(), arg.cos()], dim=1)


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def adaln_zero_block_forward(block, x, c):
    shift1, scale1, gate1, shift2, scale2, gate2 = block.adaLN_modulation(c).chunk(6, dim=1)
    x = x + gate1.unsqueeze(1) * block.attn(modulate(block.norm1(x), shift1, scale1))
    return x + gate2.unsqueeze(1) * block.mlp(modulate(block.norm2(x), shift2, scale2))


SOLUTIONS = {"q_sample": q_sample, "sample_loss": reparam_solutions.sample_loss,
             "posterior_mean_variance": posterior_mean_variance, "scaled_latents": latent_solutions.scaled_latents,
             "patchify": patchify, "sincos_1d": sincos_1d, "modulate": modulate,
             "adaln_zero_block": adaln_zero_block_forward}
# The checks of the algorithms (lessons 03, 06–10) have their own files; their reference solutions join the
# shared-contract tests below.
SOLUTIONS.update({"hybrid_loss": loss_solutions._loss(),
                  "multi_head_attention": attention_solutions.multi_head_attention,
                  "embed_timestep": attention_solutions.embed_timestep, "dit_forward": model_solutions.dit_forward, "train_step": model_solutions.train_step,
                  "forward_with_cfg": model_solutions.forward_with_cfg,
                  "ddpm_sampling_loop": sampling_solutions.sample_loop, "respaced_betas": sampling_solutions.respaced_betas,
                  "ddim_step": sampling_solutions.ddim_step, "frechet_distance": sampling_solutions.frechet_distance})


def not_implemented(*args):
    raise NotImplementedError()


def divides_by_zero(*args):
    return 1 / 0


def forgets_return(*args):
    pass


# ----------------------------------------------------------------------------- the shared contract
def test_registry_lists_every_exercise():
    assert set(ex.CHECKS) == set(SOLUTIONS)
    assert ex.CHECKS["q_sample"] is ex.check_q_sample


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_reference_solution_passes_with_a_deterministic_message(name):
    first, second = ex.CHECKS[name](SOLUTIONS[name]), ex.CHECKS[name](SOLUTIONS[name])
    assert first.passed and bool(first), first.message
    assert first.message.startswith("✓ Correct:") and name in first.message and "test cases" in first.message
    assert first.message == second.message and first.exercise == name


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_not_implemented_stub_is_reported_as_not_implemented(name):
    fb = ex.CHECKS[name](not_implemented)
    assert not fb and "not implemented yet" in fb.message and "raise NotImplementedError()" in fb.message


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_learner_exceptions_never_escape_and_are_named(name):
    fb = ex.CHECKS[name](divides_by_zero)
    assert not fb and "ZeroDivisionError" in fb.message and "division by zero" in fb.message
    assert "\n" not in fb.message


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_odd_return_values_give_feedback_instead_of_exceptions(name):
    for value in ("oops", torch.zeros(2), (torch.zeros(1), torch.zeros(1)), np.zeros(3), [[0.0]], float("nan")):
        fb = ex.CHECKS[name](lambda *args, value=value: value)
        assert isinstance(fb, ex.Feedback) and not fb.passed and fb.message


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_missing_return_is_reported(name):
    fb = ex.CHECKS[name](forgets_return)
    assert not fb and "return" in fb.message and "None" in fb.message


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_passing_something_other_than_a_function_gives_feedback(name):
    fb = ex.CHECKS[name](torch.zeros(3))
    assert not fb and f"check_{name}({name})" in fb.message


def test_require_raises_on_failure_and_returns_passing_feedback():
    fb = ex.check_q_sample(not_implemented)
    with pytest.raises(AssertionError, match="not implemented yet"):
        ex.require(fb)
    ok = ex.check_q_sample(q_sample)
    assert ex.require(ok) is ok
    with pytest.raises(TypeError):
        ex.require(True)


def test_feedback_renders_message_in_repr_and_html():
    ok = ex.check_patchify(patchify)
    assert repr(ok).startswith("✓ patchify: Correct:") and str(ok) == ok.message
    assert "✓" in ok._repr_html_() and "Correct: patchify matches" in ok._repr_html_()
    bad = ex.check_patchify(not_implemented)
    assert repr(bad) == f"✗ patchify: {bad.message}"
    assert "✗" in bad._repr_html_() and "not implemented yet" in bad._repr_html_()


def test_checks_leave_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    ex.check_q_sample(q_sample)
    assert torch.equal(state, torch.random.get_rng_state())


# ----------------------------------------------------------------------------- references agree with ditlib
def test_q_sample_and_posterior_solutions_agree_with_ditlib():
    diffusion = create_diffusion("")
    g = torch.Generator().manual_seed(0)
    x0, xt, noise = (torch.randn(3, 2, 4, 4, generator=g) for _ in range(3))
    t = torch.tensor([0, 500, 999])
    assert torch.allclose(q_sample(x0, t, noise, diffusion.alphas_cumprod), diffusion.q_sample(x0, t, noise), atol=1e-6)
    mean, var = posterior_mean_variance(x0, xt, t, diffusion.betas)
    ref_mean, ref_var, _ = diffusion.q_posterior_mean_variance(x0, xt, t)
    assert torch.allclose(mean, ref_mean, atol=1e-5) and torch.allclose(var.expand_as(ref_var), ref_var, atol=1e-8)


def test_sincos_solution_agrees_with_ditlib():
    pos = np.array([0.0, 1.0, 3.5, 12.0])
    assert np.allclose(sincos_1d(8, pos).numpy(), get_1d_sincos_pos_embed_from_grid(8, pos), atol=1e-12)


def test_patchify_solution_is_inverted_by_ditlib_unpatchify():
    model = build_model("DiT-debug/2", input_size=8, in_channels=4, num_classes=10, learn_sigma=False)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.unpatchify(patchify(x, 2)), x)


def sincos_numpy_only(embed_dim, positions):     # works for NumPy positions only (.astype)
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2) * 2 / embed_dim)
    arg = positions.astype(np.float64)[:, None] * omega[None]
    return np.concatenate([np.sin(arg), np.cos(arg)], axis=1)


def test_sincos_check_accepts_numpy_output():
    assert ex.check_sincos_1d(lambda d, p: sincos_numpy_only(d, np.asarray(p, dtype=np.float64)))


def test_posterior_check_accepts_full_shape_variance():
    def full(x_start, x_t, t, betas):
        mean, var = posterior_mean_variance(x_start, x_t, t, betas)
        return mean, var.expand_as(x_t)
    assert ex.check_posterior_mean_variance(full)


# ----------------------------------------------------------------------------- typical mistakes, by exercise
_fails_with = fails_with


def test_q_sample_check_spots_missing_square_root():
    def no_sqrt(x, t, n, ab):
        a = _coef(ab, t, x)
        return a * x + (1 - a) * n

    def no_sqrt_on_signal(x, t, n, ab):
        a = _coef(ab, t, x)
        return a * x + (1 - a).sqrt() * n
    _fails_with(ex.check_q_sample, no_sqrt, "square root")
    _fails_with(ex.check_q_sample, no_sqrt_on_signal, "ᾱ_t instead of √ᾱ_t", "square root")


def test_q_sample_check_spots_swapped_coefficients_and_wrong_sign():
    def swapped(x, t, n, ab):
        a = _coef(ab, t, x)
        return (1 - a).sqrt() * x + a.sqrt() * n

    def minus(x, t, n, ab):
        a = _coef(ab, t, x)
        return a.sqrt() * x - (1 - a).sqrt() * n
    _fails_with(ex.check_q_sample, swapped, "swapped")
    _fails_with(ex.check_q_sample, minus, "sign")


def test_q_sample_check_spots_missing_reshape_to_batch_broadcast():
    def unshaped(x, t, n, ab):  # (B,) against (B, C, H, W): errors, or silently broadcasts when W == B
        a = ab[t].to(x.dtype)
        return a.sqrt() * x + (1 - a).sqrt() * n
    _fails_with(ex.check_q_sample, unshaped, "(B, 1, 1, 1)")

    def silent(x, t, n, ab):  # only the silent mis-broadcast, never an error
        a = ab[t].to(x.dtype)
        a = a.view(1, 1, 1, -1) if x.shape[3] == x.shape[0] else a.view(-1, 1, 1, 1)
        return a.sqrt() * x + (1 - a).sqrt() * n
    _fails_with(ex.check_q_sample, silent, "broadcast", "(B, 1, 1, 1)")


def test_q_sample_check_spots_off_by_one_fresh_noise_numpy_and_dtype():
    _fails_with(ex.check_q_sample, lambda x, t, n, ab: q_sample(x, t - 1, n, ab), "off by one")
    _fails_with(ex.check_q_sample, lambda x, t, n, ab: q_sample(x, t, torch.randn_like(x), ab), "`noise` argument")
    _fails_with(ex.check_q_sample, lambda x, t, n, ab: q_sample(x, t, n, ab).numpy(), "NumPy")
    _fails_with(ex.check_q_sample, lambda x, t, n, ab: q_sample(x, t, n, ab).unsqueeze(0), "shape")

    def float64_out(x, t, n, ab):
        a = ab[t].view(-1, 1, 1, 1)
        return a.sqrt() * x + (1 - a).sqrt() * n
    _fails_with(ex.check_q_sample, float64_out, "dtype")


def _posterior_variant(swap=False, prev="shift", sqrt_prev=True, sqrt_alpha=True, var_kind="tilde", flat=False):
    def fn(x_start, x_t, t, betas):
        alphas = 1 - betas
        ab = torch.cumprod(alphas, 0)
        ab_prev = {"shift": torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]]), "same": ab}.get(prev)
        abp = ab[t - 1] if prev == "wrap" else ab_prev[t]
        abt, bt, at = ab[t], betas[t], alphas[t]
        c1 = bt * (abp.sqrt() if sqrt_prev else abp) / (1 - abt)
        c2 = (1 - abp) * (at.sqrt() if sqrt_alpha else at) / (1 - abt)
        var = {"tilde": bt * (1 - abp) / (1 - abt), "beta": bt}[var_kind]
        if swap:
            c1, c2 = c2, c1
        shape = (-1, 1, 1, 1)
        c1, c2 = c1.view(shape).float(), c2.view(shape).float()
        return c1 * x_start + c2 * x_t, var if flat else var.view(shape)
    return fn


def test_posterior_check_spots_fixed_large_variance_and_swapped_coefficients():
    _fails_with(ex.check_posterior_mean_variance, _posterior_variant(var_kind="beta"), "β_t", "fixed large")
    _fails_with(ex.check_posterior_mean_variance, _posterior_variant(swap=True), "swapped")


def test_posterior_check_spots_off_by_one_and_wraparound_at_t0():
    _fails_with(ex.check_posterior_mean_variance, _posterior_variant(prev="same"), "off by one")
    _fails_with(ex.check_posterior_mean_variance, _posterior_variant(prev="wrap"), "t = 0", "prepending 1.0")


def test_posterior_check_spots_missing_square_roots():
    _fails_with(ex.check_posterior_mean_variance, _posterior_variant(sqrt_prev=False), "square root on ᾱ_{t−1}")
    _fails_with(ex.check_posterior_mean_variance, _posterior_variant(sqrt_alpha=False), "square root on α_t")


def test_posterior_check_rejects_flat_variance_single_tensor_and_std():
    _fails_with(ex.check_posterior_mean_variance, _posterior_variant(flat=True), "broadcast", "(B, 1, 1, 1)")
    _fails_with(ex.check_posterior_mean_variance, lambda *a: posterior_mean_variance(*a)[0], "single", "mean, variance")
    _fails_with(ex.check_posterior_mean_variance, lambda *a: (posterior_mean_variance(*a)[0], posterior_mean_variance(*a)[1].sqrt()),
                "standard deviation")


def test_patchify_check_spots_channel_first_features_and_column_major_tokens():
    def channels_first(x, p):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c * p * p)

    def column_major(x, p):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // p, p, w // p, p).permute(0, 4, 2, 3, 5, 1).reshape(n, -1, c * p * p)
    _fails_with(ex.check_patchify, channels_first, "(c, p, q)", "(p, q, c)")
    _fails_with(ex.check_patchify, column_major, "column-major")


def test_patchify_check_spots_plain_reshape_and_transposed_output():
    _fails_with(ex.check_patchify, lambda x, p: x.reshape(x.shape[0], -1, x.shape[1] * p * p), "mixes pixels")
    _fails_with(ex.check_patchify, lambda x, p: patchify(x, p).transpose(1, 2), "transposed")
    _fails_with(ex.check_patchify, lambda x, p: patchify(x, p).flip(2), "wrong values")


def test_sincos_check_spots_swapped_halves_interleaving_and_missing_factor_two():
    def interleaved(d, pos):
        out = sincos_1d(d, pos)
        return torch.stack([out[:, : d // 2], out[:, d // 2:]], dim=-1).reshape(len(out), d)

    def no_factor_two(d, pos):
        pos = torch.as_tensor(pos, dtype=torch.float64)
        arg = pos[:, None] / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / d)
        return torch.cat([arg.sin(), arg.cos()], 1)
    _fails_with(ex.check_sincos_1d, lambda d, p: sincos_1d(d, p).roll(d // 2, dims=1), "sines first")
    _fails_with(ex.check_sincos_1d, interleaved, "interleaved")
    _fails_with(ex.check_sincos_1d, no_factor_two, "2k/D")
    _fails_with(ex.check_sincos_1d, lambda d, p: sincos_1d(d, p).T, "transposed")


def test_sincos_check_hints_at_torch_positions_when_numpy_only_code_fails():
    _fails_with(ex.check_sincos_1d, sincos_numpy_only, "AttributeError", "torch.as_tensor")


def test_modulate_solution_equals_ditlib_modulate():
    from ditlib.models import modulate as ditlib_modulate
    g = torch.Generator().manual_seed(0)
    x, shift, scale = torch.randn(3, 5, 8, generator=g), torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    assert torch.equal(modulate(x, shift, scale), ditlib_modulate(x, shift, scale))


def test_modulate_check_spots_missing_one_swapped_roles_and_token_broadcast():
    _fails_with(ex.check_modulate, lambda x, b, s: x * s.unsqueeze(1) + b.unsqueeze(1), "forgot the 1 +")
    _fails_with(ex.check_modulate, lambda x, b, s: x * (1 + b.unsqueeze(1)) + s.unsqueeze(1), "swapped")
    _fails_with(ex.check_modulate, lambda x, b, s: (x + b.unsqueeze(1)) * (1 + s.unsqueeze(1)), "added the shift before")
    _fails_with(ex.check_modulate, lambda x, b, s: x * (1 + s) + b, "(N, 1, D)")        # errors when T != N

    def silent(x, b, s):                    # broadcasts over tokens only when it can (T == N), never errors
        if x.shape[0] == x.shape[1]:
            return x * (1 + s) + b
        return modulate(x, b, s)
    _fails_with(ex.check_modulate, silent, "token dimension", "(N, 1, D)")


def _block_with(gates="branch", order=(0, 1, 2), fresh_norm=True, one_modulation=False):
    def forward(block, x, c):
        chunks = block.adaLN_modulation(c).chunk(6, dim=1)
        first, second = [chunks[i] for i in order], [chunks[3 + i] for i in order]
        if one_modulation:
            second = first
        h = block.norm1(x)
        for layer, (shift, scale, gate), norm in ((block.attn, first, None), (block.mlp, second, block.norm2)):
            if norm is not None and fresh_norm:
                h = norm(x)
            out = layer(modulate(h, shift, scale))
            g = gate.unsqueeze(1)
            x = {"branch": x + g * out, "none": x + out, "stream": g * x + out}[gates]
        return x
    return forward


def test_adaln_zero_block_reference_equals_ditlib_block_and_check_spots_gate_mistakes():
    assert ex.check_adaln_zero_block(_block_with()), "the variant helper itself must be right"
    _fails_with(ex.check_adaln_zero_block, _block_with(gates="none"), "left out the gates")
    _fails_with(ex.check_adaln_zero_block, _block_with(gates="stream"), "residual stream")


def test_adaln_zero_block_check_spots_chunk_order_and_stale_norm():
    _fails_with(ex.check_adaln_zero_block, _block_with(order=(1, 0, 2)), "wrong order", "(shift, scale, gate)")
    _fails_with(ex.check_adaln_zero_block, _block_with(order=(1, 2, 0)), "gate comes last")
    _fails_with(ex.check_adaln_zero_block, _block_with(fresh_norm=False), "norm2(x)")
    _fails_with(ex.check_adaln_zero_block, _block_with(one_modulation=True), "wrong values")


def test_adaln_zero_block_check_names_missing_gate_unsqueeze():
    def gate_not_unsqueezed(block, x, c):
        s1, b1, g1, s2, b2, g2 = block.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g1 * block.attn(modulate(block.norm1(x), s1, b1))
        return x + g2 * block.mlp(modulate(block.norm2(x), s2, b2))
    _fails_with(ex.check_adaln_zero_block, gate_not_unsqueezed, "(N, 1, D)")


def test_adaln_zero_block_check_leaves_global_random_state_alone():
    state = torch.random.get_rng_state()
    ex.check_adaln_zero_block(adaln_zero_block_forward)
    assert torch.equal(state, torch.random.get_rng_state())


# ----------------------------------------------------------------------------- library shortcuts are refused
def _refused(check, fn, *phrases):
    """The check refuses fn for calling the library routine it should write, and restores the profile hook."""
    before = sys.getprofile()
    fb = _fails_with(check, fn, "Your function ", *phrases)
    assert "this exercise" in fb.message and "yourself" in fb.message
    assert sys.getprofile() is before
    return fb


def test_call_refusing_spots_a_routine_however_it_is_reached_and_restores_the_hook():
    hints, before = {"default": "no hint"}, sys.getprofile()
    forbidden = {DiTBlock.forward: "DiTBlock"}
    block, x, c = DiTBlock(8, 2), torch.randn(1, 3, 8), torch.randn(1, 8)
    out = call_refusing(lambda b, x, c: b.attn(x) + 1, (block, x, c), hints, forbidden, "refused {name}")
    assert torch.equal(out, block.attn(x) + 1)                         # an honest function's result comes back
    alias = DiTBlock.forward                                           # as if imported under another name
    for shortcut in (lambda b, x, c: b(x, c), lambda b, x, c: b.forward(x, c), lambda b, x, c: alias(b, x, c)):
        with pytest.raises(Problem, match="^refused DiTBlock$"):
            call_refusing(shortcut, (block, x, c), hints, forbidden, "refused {name}")
    with pytest.raises(Problem, match="^refused DiTBlock$"):           # the refusal wins over the error that followed
        call_refusing(lambda b, x, c: b(x, c) / None, (block, x, c), hints, forbidden, "refused {name}")
    with pytest.raises(Problem, match="TypeError"):                    # an honest error stays that error
        call_refusing(lambda b, x, c: x / None, (block, x, c), hints, forbidden, "refused {name}")
    assert sys.getprofile() is before


def _lesson_solution(lesson: str, name: str, *helpers: str):
    """The function `name` as the lesson's solution cell writes it (after the `helpers` it uses)."""
    source = (NOTEBOOKS / f"{lesson}.py").read_text()
    namespace = {"torch": torch, "np": np, "math": math, "mean_flat": mean_flat, "normal_kl": normal_kl,
                 "discretized_gaussian_log_likelihood": discretized_gaussian_log_likelihood}
    for function in (*helpers, name):
        cell = re.search(rf"^def {function}\(.*?### END SOLUTION\n", source, re.S | re.M)
        assert cell, f"no solution of {function} in notebooks/{lesson}.py"
        exec(cell.group(0), namespace)
    return namespace[name]


@pytest.mark.parametrize("lesson, name, check, helpers", [
    ("02_reparameterization", "sample_loss", "check_sample_loss", ()),
    ("03_reverse_process_and_loss", "posterior_mean_variance", "check_posterior_mean_variance", ()),
    ("03_reverse_process_and_loss", "hybrid_loss", "check_hybrid_loss", ("posterior_mean_variance",)),
    ("03_reverse_process_and_loss", "sample_loop", "check_ddpm_sampling_loop", ("posterior_mean_variance",)),
    ("04_latent_space", "scaled_latents", "check_scaled_latents", ()),
    ("05_vit_patchify", "patchify", "check_patchify", ()),
    ("05_vit_patchify", "multi_head_attention", "check_multi_head_attention", ()),
    ("05_vit_patchify", "sincos_1d", "check_sincos_1d", ()),
    ("06_conditioning_variants", "embed_timestep", "check_embed_timestep", ()),
    ("06_conditioning_variants", "adaln_zero_block_forward", "check_adaln_zero_block", ("modulate",)),
    ("06_conditioning_variants", "dit_forward", "check_dit_forward", ()),
    ("09_classifier_free_guidance", "forward_with_cfg", "check_forward_with_cfg", ()),
    ("11_full_scale", "max_batch_per_gpu", "check_max_batch_per_gpu", ()),
])
def test_the_lessons_own_solutions_pass_the_checks_that_refuse_shortcuts(lesson, name, check, helpers):
    # they use the library's parts (block.attn, block(x, c) in dit_forward, model(...)), not the routine itself
    fb = getattr(ex, check)(_lesson_solution(lesson, name, *helpers))
    assert fb.passed, fb.message


def test_adaln_zero_block_check_allows_ditlibs_modulate():
    from ditlib.models import modulate as ditlib_modulate

    def with_ditlib_modulate(block, x, c):
        shift1, scale1, gate1, shift2, scale2, gate2 = block.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate1.unsqueeze(1) * block.attn(ditlib_modulate(block.norm1(x), shift1, scale1))
        return x + gate2.unsqueeze(1) * block.mlp(ditlib_modulate(block.norm2(x), shift2, scale2))
    fb = ex.check_adaln_zero_block(with_ditlib_modulate)
    assert fb.passed, fb.message


def test_patchify_check_refuses_einops_and_unfold():
    pattern = "n c (h p) (w q) -> n (h w) (p q c)"
    _refused(ex.check_patchify, lambda x, p: einops.rearrange(x, pattern, p=p, q=p), "calls einops", "without einops",
             "reshape and permute")
    _refused(ex.check_patchify, lambda x, p: rearrange(x, pattern, p=p, q=p), "calls einops")   # the notebook's import
    _refused(ex.check_patchify, lambda x, p: einops.layers.torch.Rearrange(pattern, p=p, q=p)(x), "calls einops")
    _refused(ex.check_patchify, lambda x, p: torch.nn.functional.unfold(x, p, stride=p).transpose(1, 2),
             "torch.nn.functional.unfold")
    _refused(ex.check_patchify, lambda x, p: torch.nn.Unfold(p, stride=p)(x).transpose(1, 2), "torch.nn.functional.unfold")


def test_sincos_check_refuses_ditlibs_tables():
    _refused(ex.check_sincos_1d, lambda d, p: get_1d_sincos_pos_embed_from_grid(d, np.asarray(p, dtype=np.float64)),
             "ditlib's get_1d_sincos_pos_embed_from_grid", "sine-cosine table")
    _refused(ex.check_sincos_1d, lambda d, p: get_1d_sincos_pos_embed_from_grid(d, p),   # refused before its error
             "get_1d_sincos_pos_embed_from_grid")

    def via_timestep_embedding(d, p):                 # [cos, sin] with the same frequencies, halves swapped back
        emb = timestep_embedding(torch.as_tensor(p, dtype=torch.float64), d)
        return torch.cat([emb[:, d // 2:], emb[:, : d // 2]], dim=1)
    _refused(ex.check_sincos_1d, via_timestep_embedding, "timestep_embedding")


def test_adaln_zero_block_check_refuses_the_library_block():
    for shortcut in (lambda block, x, c: block(x, c), lambda block, x, c: block.forward(x, c),
                     lambda block, x, c: DiTBlock.forward(block, x, c)):
        _refused(ex.check_adaln_zero_block, shortcut, "calls ditlib's DiTBlock", "modulate", "block.attn", "block.mlp")


def test_posterior_check_refuses_gaussian_diffusion():
    def via_method(x_start, x_t, t, betas):
        mean, var, _ = GaussianDiffusion(betas.numpy()).q_posterior_mean_variance(x_start, x_t, t)
        return mean, var

    def via_coefficients(x_start, x_t, t, betas):
        d = GaussianDiffusion(betas.numpy())
        return (_coef(d.posterior_mean_coef1, t, x_start) * x_start + _coef(d.posterior_mean_coef2, t, x_t) * x_t,
                _coef(d.posterior_variance, t, x_t))
    _refused(ex.check_posterior_mean_variance, via_method, "GaussianDiffusion.q_posterior_mean_variance",
             "from betas")
    fb = _refused(ex.check_posterior_mean_variance, via_coefficients, "ditlib's GaussianDiffusion")
    assert "q_posterior_mean_variance" not in fb.message


# ----------------------------------------------------------------------------- lesson 10: extrapolate_fid
def _extrapolate_fid(ns, fids):
    slope, intercept = np.polyfit(1.0 / np.asarray(ns, dtype=float), np.asarray(fids, dtype=float), 1)
    return float(intercept), float(slope)


def test_extrapolate_fid_check_passes_the_least_squares_fit():
    assert ex.check_extrapolate_fid(_extrapolate_fid)


@pytest.mark.parametrize("wrong, phrase", [
    (lambda ns, fids: _extrapolate_fid(ns, fids)[::-1], "swapped"),
    (lambda ns, fids: tuple(np.polyfit(np.asarray(ns, float), fids, 1)[::-1]), "1 / n"),
    (lambda ns, fids: (float(np.min(fids)), 1.0), "smallest measured"),
    (lambda ns, fids: _extrapolate_fid(ns, fids)[0], "pair"),
])
def test_extrapolate_fid_check_names_the_mistake(wrong, phrase):
    feedback = ex.check_extrapolate_fid(wrong)
    assert not feedback and phrase in feedback.message


@pytest.mark.parametrize("check", [ex.check_extrapolate_fid, ex.check_max_batch_per_gpu])
def test_new_checks_report_not_implemented_without_a_traceback(check):
    def stub(*args):
        raise NotImplementedError()
    feedback = check(stub)
    assert not feedback and "not implemented yet" in feedback.message


# lesson 11: max_batch_per_gpu has its own file, test_exercises_memory.py
SOLUTIONS.update({"extrapolate_fid": _extrapolate_fid, "max_batch_per_gpu": memory_solutions.max_batch_per_gpu})
