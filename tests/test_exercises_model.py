"""Specification of ditlib.course.checks_model (lessons 06, 07, 09): each check passes a correct solution,
names each typical mistake in one sentence, turns a learner's exception, None or wrong shape into
friendly feedback, answers deterministically and leaves the global random state alone."""
import pytest
import torch

from ditlib.course.checks_model import check_dit_forward, check_forward_with_cfg, check_train_step
from ditlib.course.feedback import CHECKS, Feedback, require
from ditlib.train import update_ema
from exercise_helpers import fails_with


# ----------------------------------------------------------------------------- learner-style solutions
def dit_forward(model, x, t, y):
    x = model.x_embedder(x) + model.pos_embed                         # (N, T, D)
    t_emb = model.t_embedder(t)                                        # (N, D)
    y_emb = model.y_embedder(y, False)                                 # (N, D), no label dropout
    x, c = model.condition(x, t_emb, y_emb)
    for block in model.blocks:
        x = block(x, c)
    x = model.final_layer(x[:, :model.num_patches], c)                 # (N, T, p·p·C_out)
    return model.unpatchify(x)                                         # (N, C_out, I, I)


def train_step(model, ema, optimizer, diffusion, x, y, t, noise, drop, ema_decay):
    terms = diffusion.training_losses(model, x, t, model_kwargs={"y": y, "force_drop_ids": drop}, noise=noise)
    loss = terms["loss"].mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    update_ema(ema, model, ema_decay)
    return loss


def forward_with_cfg(model, x, t, y, cfg_scale, guided_channels=None):
    half = x[: len(x) // 2]
    model_out = model(torch.cat([half, half]), t, y)
    k = model.in_channels if guided_channels is None else guided_channels
    eps, rest = model_out[:, :k], model_out[:, k:]
    cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
    half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
    return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)


SOLUTIONS = {"dit_forward": (check_dit_forward, dit_forward), "train_step": (check_train_step, train_step),
             "forward_with_cfg": (check_forward_with_cfg, forward_with_cfg)}


_fails_with = fails_with


def not_implemented(*args):
    raise NotImplementedError()


# ----------------------------------------------------------------------------- the shared contract
def test_the_three_checks_are_registered_under_their_exercise_names():
    for name, (check, _) in SOLUTIONS.items():
        assert CHECKS[name] is check


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_a_correct_solution_passes_with_a_deterministic_message(name):
    check, solution = SOLUTIONS[name]
    first, second = check(solution), check(solution)
    assert first.passed, first.message
    assert first.message.startswith("✓ Correct:") and name in first.message and "test cases" in first.message
    assert first.message == second.message and first.exercise == name


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_the_placeholder_stub_is_reported_as_not_implemented(name):
    fb = _fails_with(SOLUTIONS[name][0], not_implemented, "not implemented yet", "raise NotImplementedError()")
    with pytest.raises(AssertionError, match="not implemented yet"):
        require(fb)


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_a_missing_return_is_reported(name):
    _fails_with(SOLUTIONS[name][0], lambda *args: None, "return", "None")


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_learner_exceptions_never_escape_and_are_named(name):
    _fails_with(SOLUTIONS[name][0], lambda *args: 1 / 0, "ZeroDivisionError", "division by zero")


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_odd_return_values_give_feedback_instead_of_exceptions(name):
    for value in ("oops", torch.zeros(2), (torch.zeros(1), torch.zeros(1)), torch.zeros(2).numpy(), [[0.0]],
                  float("nan"), torch.full((1, 1), float("nan"))):
        _fails_with(SOLUTIONS[name][0], lambda *args, value=value: value)


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_checks_leave_the_global_random_state_alone(name):
    check, solution = SOLUTIONS[name]
    state = torch.random.get_rng_state()
    check(solution)
    check(not_implemented)
    assert torch.equal(state, torch.random.get_rng_state())


def test_require_returns_a_passing_feedback():
    ok = check_forward_with_cfg(forward_with_cfg)
    assert require(ok) is ok


# ----------------------------------------------------------------------------- lesson 06: dit_forward
def _forward(pos=True, emb="both", train_labels=False, blocks="chain", final="layer", unpatch="unpatchify"):
    """The learner's forward pass with one mistake."""
    def fn(model, x, t, y):
        h = model.x_embedder(x) + (model.pos_embed if pos else 0)
        t_emb, y_emb = model.t_embedder(t), model.y_embedder(y, train_labels)
        c = {"both": t_emb + y_emb, "t": t_emb, "y": y_emb}[emb]
        h0 = h
        for block in ([] if blocks == "none" else model.blocks):
            h = block(h0 if blocks == "parallel" else h, c)
        fl = model.final_layer
        h = fl(h, c) if final == "layer" else fl.linear(fl.norm_final(h))
        shape = (len(x), model.out_channels, model.input_size, model.input_size)
        return {"unpatchify": lambda: model.unpatchify(h), "reshape": lambda: h.reshape(shape),
                "tokens": lambda: h}[unpatch]()
    return fn


def test_dit_forward_check_names_the_forgotten_positional_embedding():
    _fails_with(check_dit_forward, _forward(pos=False), "forgot the positional embedding", "model.pos_embed")


def test_dit_forward_check_names_conditioning_on_the_timestep_or_the_label_only():
    _fails_with(check_dit_forward, _forward(emb="t"), "timestep only", "model.condition")
    _fails_with(check_dit_forward, _forward(emb="y"), "class label only")


def test_dit_forward_check_names_label_dropout_at_evaluation():
    _fails_with(check_dit_forward, _forward(train_labels=True), "model.y_embedder(y, False)", "label dropout")


def test_dit_forward_check_names_random_outputs():
    def noisy(model, x, t, y):
        return dit_forward(model, x, t, y) + 0.1 * torch.randn(1)
    _fails_with(check_dit_forward, noisy, "changes from one call to the next")


def test_dit_forward_check_names_an_unconditioned_final_layer_and_scrambled_unpatchify():
    _fails_with(check_dit_forward, _forward(final="plain"), "final layer ignores c", "model.final_layer(x, c)")
    _fails_with(check_dit_forward, _forward(unpatch="reshape"), "scrambled", "model.unpatchify")
    _fails_with(check_dit_forward, _forward(unpatch="tokens"), "still a sequence of tokens")


def test_dit_forward_check_names_skipped_or_unchained_blocks():
    _fails_with(check_dit_forward, _forward(blocks="none"), "skipped the transformer blocks")
    _fails_with(check_dit_forward, _forward(blocks="parallel"), "previous block's output")


def test_dit_forward_check_asks_for_model_condition_when_c_is_built_by_hand():
    # c = t_emb + y_emb is right for adaLN-Zero but not for the cross-attention design
    _fails_with(check_dit_forward, _forward(), "cross-attention", "model.condition(x, t_emb, y_emb)")


def test_dit_forward_check_refuses_calling_the_model_itself():
    from ditlib.models import DiT
    for shortcut in (lambda model, x, t, y: model(x, t, y), lambda model, x, t, y: model.forward(x, t, y),
                     lambda model, x, t, y: DiT.forward(model, x, t, y)):
        _fails_with(check_dit_forward, shortcut, "called the model itself", "from its parts")


# ----------------------------------------------------------------------------- lesson 07: train_step
def _step(mistake):
    """The learner's training step with one mistake."""
    def fn(model, ema, optimizer, diffusion, x, y, t, noise, drop, ema_decay):
        kwargs = {"y": y} if mistake == "no_drop" else {"y": y, "force_drop_ids": drop}
        terms = diffusion.training_losses(model, x, t, model_kwargs=kwargs, noise=noise)
        loss = terms["loss"].sum() if mistake == "sum" else terms["loss"].mean()
        if mistake == "ema_first":
            update_ema(ema, model, ema_decay)
        if mistake != "no_zero_grad":
            optimizer.zero_grad()
        loss.backward()
        if mistake != "no_step":
            optimizer.step()
        if mistake == "swapped":
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.copy_((1 - ema_decay) * e + ema_decay * p)
        elif mistake not in ("ema_first", "no_ema"):
            update_ema(ema, model, ema_decay)
        return terms["loss"] if mistake == "per_sample" else loss
    return fn


@pytest.mark.parametrize("mistake, phrases", [
    ("no_drop", ["ignores the label dropout", "force_drop_ids"]),
    ("ema_first", ["EMA before the optimiser step"]),
    ("swapped", ["wrong way round", "d·θ_ema + (1 − d)·θ"]),
    ("no_zero_grad", ["stale gradients", "optimizer.zero_grad()"]),
    ("sum", ["summed over the batch", ".mean()"]),
    ("per_sample", ["single number", ".mean()"]),
    ("no_step", ["did not change", "optimizer.step()"]),
    ("no_ema", ["EMA weights did not change"]),
])
def test_train_step_check_names_the_mistake(mistake, phrases):
    _fails_with(check_train_step, _step(mistake), *phrases)


def test_train_step_check_names_the_mse_only_loss():
    def mse_only(model, ema, optimizer, diffusion, x, y, t, noise, drop, ema_decay):
        loss = diffusion.training_losses(model, x, t, {"y": y, "force_drop_ids": drop}, noise)["mse"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        update_ema(ema, model, ema_decay)
        return loss
    _fails_with(check_train_step, mse_only, "only the MSE term")


def test_train_step_check_accepts_a_float_loss_and_a_hand_written_ema():
    def by_hand(model, ema, optimizer, diffusion, x, y, t, noise, drop, ema_decay):
        loss = train_step(model, ema, optimizer, diffusion, x, y, t, noise, drop, 1.0)   # no EMA change
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.mul_(ema_decay).add_(p, alpha=1 - ema_decay)
        return loss.item()
    assert check_train_step(by_hand)


def test_train_step_check_names_fresh_noise_as_a_wrong_loss():
    def own_noise(model, ema, optimizer, diffusion, x, y, t, noise, drop, ema_decay):
        return train_step(model, ema, optimizer, diffusion, x, y, t, torch.randn_like(noise), drop, ema_decay)
    _fails_with(check_train_step, own_noise, "with the given t and noise")


# ----------------------------------------------------------------------------- lesson 09: forward_with_cfg
def test_forward_with_cfg_check_refuses_ditlibs_own_method_and_its_guidance_helper():
    from ditlib.layers import guided_output
    from ditlib.models import DiT

    def via_helper(model, x, t, y, cfg_scale, guided_channels=None):
        half = x[: len(x) // 2]
        return guided_output(model(torch.cat([half, half]), t, y), model.in_channels, cfg_scale, guided_channels)
    assert check_forward_with_cfg(forward_with_cfg)                    # the lesson's solution: model(...) is allowed
    for shortcut, name in ((lambda m, *a, **k: m.forward_with_cfg(*a, **k), "DiT.forward_with_cfg"),
                           (lambda m, *a, **k: DiT.forward_with_cfg(m, *a, **k), "DiT.forward_with_cfg"),
                           (via_helper, "guided_output")):
        fb = _fails_with(check_forward_with_cfg, shortcut, f"Your function calls ditlib's {name}", "yourself",
                         "torch.cat([half, half])")
        assert fb.exercise == "forward_with_cfg"


def _cfg(sigma=False, swap=False, split_x=False, all_eps=False, half_only=False):
    """The learner's guided forward pass with one mistake."""
    def fn(model, x, t, y, cfg_scale, guided_channels=None):
        half = x[: len(x) // 2]
        out = model(x if split_x else torch.cat([half, half]), t, y)
        k = out.shape[1] if sigma else model.in_channels if guided_channels is None or all_eps else guided_channels
        cond, uncond = torch.split(out[:, :k], len(out) // 2)
        if swap:
            cond, uncond = uncond, cond
        guided = uncond + cfg_scale * (cond - uncond)
        if half_only:
            return torch.cat([guided, out[: len(out) // 2, k:]], dim=1)
        return torch.cat([torch.cat([guided, guided]), out[:, k:]], dim=1)
    return fn


@pytest.mark.parametrize("mistakes, phrases", [
    (dict(sigma=True), ["guided the Σ channels too"]),
    (dict(swap=True), ["swapped", "ε_u + s·(ε_c − ε_u)"]),
    (dict(all_eps=True), ["guided_channels=3", "first 3"]),
    (dict(split_x=True), ["same input", "torch.cat([half, half])"]),
    (dict(half_only=True), ["only the guided half"]),
])
def test_forward_with_cfg_check_names_the_mistake(mistakes, phrases):
    _fails_with(check_forward_with_cfg, _cfg(**mistakes), *phrases)


def test_forward_with_cfg_check_passes_guided_channels_positionally_and_none_means_all():
    seen = []

    def spy(model, x, t, y, cfg_scale, guided_channels):
        seen.append(guided_channels)
        return forward_with_cfg(model, x, t, y, cfg_scale, guided_channels)
    assert check_forward_with_cfg(spy)
    assert seen == [None, 3, None]
