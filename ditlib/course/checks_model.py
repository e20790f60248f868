"""Checks of the model lessons 06, 07 and 09: the DiT forward pass assembled from its parts, one training
step (loss, AdamW, EMA) and classifier-free guidance on the batched model (`DiT.forward_with_cfg`).

Each check builds tiny DiTs (width 32, depth 2, 2 heads, 8×8 inputs) whose weights are all drawn from a
private generator — the adaLN-Zero zeros included, so that every part of the model matters — and runs
the learner's function with the global random state saved and restored around it. The functions checked:

* ``dit_forward(model, x, t, y) -> (N, C_out, I, I)``: ``model(x, t, y)`` in eval mode, from its parts;
* ``train_step(model, ema, optimizer, diffusion, x, y, t, noise, drop, ema_decay) -> loss``: t, noise and the
  label-dropout mask ``drop`` (bool (N,)) are given, so that the step is deterministic;
* ``forward_with_cfg(model, x, t, y, cfg_scale, guided_channels=None)``: as ``DiT.forward_with_cfg``, which
  (like its helper ``guided_output``) the function must not call.
"""
from __future__ import annotations

import copy
import math

import torch

from .feedback import (Problem, as_tensor, call, call_refusing, exercise, expect_finite, expect_shape, expect_values,
                       is_close, randn)

__all__ = ["check_dit_forward", "check_train_step", "check_forward_with_cfg"]

_NUM_CLASSES = 5


def _random_dit(g: torch.Generator, dtype=torch.float32, **fields):
    """A tiny DiT with every weight drawn from `g` (none zero), except the fixed sin-cos `pos_embed`."""
    from ..models import DiT

    config = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, mlp_ratio=2.0,
                  num_classes=_NUM_CLASSES, class_dropout_prob=0.1)
    with torch.random.fork_rng(devices=[]):            # the layers' own init must not touch the global RNG
        model = DiT(**{**config, **fields})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                continue
            if p.ndim == 1:                             # LayerNorm weights near 1, biases near 0
                p.copy_(randn(g, p.shape) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
            else:
                p.copy_(randn(g, p.shape) * (0.7 / math.sqrt(p[0].numel())))
    return model.to(dtype).eval()


def _quietly(fn, args, hints, seed: int = 0, refuse=None):
    """call(fn, args) with the global RNG seeded inside and restored afterwards; `refuse` = (forbidden,
    refusal) refuses those library routines (`call_refusing`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return call(fn, args, hints) if refuse is None else call_refusing(fn, args, hints, *refuse)


def _inputs(g: torch.Generator, n: int, model, dtype):
    x = randn(g, (n, model.in_channels, model.input_size, model.input_size), dtype)
    return x, torch.randint(0, 1000, (n,), generator=g), torch.randint(0, _NUM_CLASSES, (n,), generator=g)

#################################################################################
#            Lesson 06: the DiT forward pass from the model's parts              #
#################################################################################

_FWD_HINTS = {"broadcast": "check the shapes on the way: x_embedder gives (N, T, D), t_embedder and y_embedder "
                           "(N, D), final_layer (N, T, p·p·C_out) for model.unpatchify",
              "AttributeError": "use the model's parts x_embedder, pos_embed, t_embedder, y_embedder, condition, "
                                "blocks, final_layer and unpatchify",
              "TypeError": "check the signature dit_forward(model, x, t, y) and the calls model.y_embedder(y, False), "
                           "block(x, c) and model.final_layer(x, c)",
              "default": "patchify, add pos_embed, embed t and y, get (x, c) from model.condition, run every block, "
                         "then final_layer(x, c) and unpatchify"}
_CROSS_HINT = ("this case uses the cross-attention design, whose c is the sequence [t_emb, y_emb]: take "
               "x, c = model.condition(x, t_emb, y_emb) instead of building c yourself, so it works for every design")
_FWD_REFUSAL = ("You called the model itself, model(x, t, y): this exercise rebuilds that forward pass from its parts "
                "(x_embedder, pos_embed, t_embedder, y_embedder, condition, blocks, final_layer, unpatchify).")


def _dit_parts(model, x, t, y, pos=True, emb="both", blocks="chain", final="layer", unpatch="unpatchify"):
    """The DiT forward pass from its parts, optionally with one of the typical mistakes."""
    h = model.x_embedder(x)
    h = h + model.pos_embed.to(h.dtype) if pos else h
    t_emb, y_emb = model.t_embedder(t), model.y_embedder(y, False)
    t_emb, y_emb = {"both": (t_emb, y_emb), "t": (t_emb, 0 * y_emb), "y": (0 * t_emb, y_emb)}[emb]
    h, c = model.condition(h, t_emb, y_emb)
    h0 = h
    for block in ([] if blocks == "none" else model.blocks):
        h = block(h0 if blocks == "parallel" else h, c)
    h, fl = h[:, :model.num_patches], model.final_layer
    h = fl(h, c) if final == "layer" else fl.linear(fl.norm_final(h))
    shape = (len(x), model.out_channels, model.input_size, model.input_size)
    if unpatch == "reshape":
        return h.reshape(shape)
    if unpatch == "transpose":
        return h.transpose(1, 2).reshape(shape)
    return model.unpatchify(h)


@exercise("dit_forward")
def check_dit_forward(fn) -> str:
    from ..models import DiT

    refuse = ({DiT.forward: "DiT.forward"}, _FWD_REFUSAL)      # model(x, t, y), model.forward or DiT.forward
    cases = [(dict(), 3, torch.float64, "3 float64 latents of 4×8×8 with adaLN-Zero blocks"),
             (dict(in_channels=1, patch_size=4, learn_sigma=False), 1, torch.float32,
              "a single 1-channel image with patch size 4 and adaLN-Zero blocks"),
             (dict(block="cross-attention"), 2, torch.float32, "the cross-attention block design (§3.2)")]
    g = torch.Generator().manual_seed(61)
    for fields, n, dtype, case in cases:
        # class_dropout_prob = 1: a forward pass that drops labels (train=True) drops all of them, deterministically
        model = _random_dit(g, dtype, class_dropout_prob=1.0, **fields)
        x, t, y = _inputs(g, n, model, dtype)
        hints = _FWD_HINTS if "block" not in fields else {**_FWD_HINTS, "broadcast": _CROSS_HINT, "default": _CROSS_HINT}
        with torch.no_grad():
            ref = model(x, t, y)
            args = (model, x.clone(), t.clone(), y.clone())
            out = as_tensor(_quietly(fn, args, hints, refuse=refuse))
            I, p, C = model.input_size, model.patch_size, model.out_channels
            expect_shape(out, (n, C, I, I), hint=" = (N, C_out, I, I)", known=[
                ((n, (I // p) ** 2, p * p * C), "Your output is still a sequence of tokens: turn it back into an "
                                                "image with model.unpatchify(x) after the final layer.")])
            expect_finite(out)
            parts = lambda **mistake: _dit_parts(model, x, t, y, **mistake)  # noqa: E731
            unpatch_msg = ("Your pixels are scrambled: turn the tokens back into an image with model.unpatchify(x), "
                           "which undoes the patch order — a plain reshape does not.")
            variants = [
                (parts(pos=False), "You forgot the positional embedding: add model.pos_embed to the tokens right "
                                   "after model.x_embedder(x), otherwise the model cannot tell the patches apart."),
                (parts(emb="t"), "Your conditioning uses the timestep only: c must carry both embeddings, "
                                 "x, c = model.condition(x, t_emb, y_emb) (c = t_emb + y_emb for adaLN-Zero)."),
                (parts(emb="y"), "Your conditioning uses the class label only: c must carry both embeddings, "
                                 "x, c = model.condition(x, t_emb, y_emb) (c = t_emb + y_emb for adaLN-Zero)."),
                (_dit_parts(model, x, t, torch.full_like(y, model.num_classes)),
                 "Your labels were dropped to the null class: call model.y_embedder(y, False) — label dropout "
                 "(train=True) belongs to training, a forward pass at evaluation keeps every label."),
                (parts(blocks="none"), "You skipped the transformer blocks: run x = block(x, c) for every block "
                                       "in model.blocks before the final layer."),
                (parts(blocks="parallel"), "Each block must take the previous block's output: x = block(x, c) in a "
                                           "loop, not every block on the same input tokens."),
                (parts(final="plain"), "Your final layer ignores c: call model.final_layer(x, c), whose LayerNorm is "
                                       "modulated by c like the blocks' (adaLN)."),
                (parts(unpatch="reshape"), unpatch_msg),
                (parts(unpatch="transpose"), unpatch_msg),
            ]
            expect_values(out, ref, variants, atol=1e-4, rtol=1e-4, case=case,
                          formula="model(x, t, y) in eval mode",
                          rerun=lambda: as_tensor(_quietly(fn, args, hints, seed=1, refuse=refuse)),
                          random_msg="Your output changes from one call to the next: at evaluation the forward pass "
                                     "has no randomness — call model.y_embedder(y, False), so that no labels are dropped.")
    return (f"dit_forward matches model(x, t, y) with random weights, adaLN-Zero and cross-attention blocks, "
            f"on {len(cases)} test cases.")

#################################################################################
#             Lesson 07: one training step — loss, AdamW, then the EMA           #
#################################################################################

_STEP_HINTS = {"TypeError": "check the signature train_step(model, ema, optimizer, diffusion, x, y, t, noise, drop, "
                            "ema_decay) and pass model_kwargs={'y': y, 'force_drop_ids': drop} to training_losses",
               "AttributeError": "diffusion.training_losses returns a dict of per-sample terms: take ['loss'].mean()",
               "default": "compute loss = diffusion.training_losses(model, x, t, model_kwargs={'y': y, "
                          "'force_drop_ids': drop}, noise=noise)['loss'].mean(), then zero_grad, backward, step and "
                          "update the EMA"}
_STEP_MSGS = {
    "no_drop": "Your step ignores the label dropout: pass model_kwargs={'y': y, 'force_drop_ids': drop}, so that the "
               "labels where drop is True become the null class (that trains the unconditional model for guidance).",
    "sum": "Your loss is summed over the batch: average the per-sample losses, training_losses(...)['loss'].mean().",
    "mse": "Your loss is only the MSE term: DiT trains the hybrid loss training_losses(...)['loss'] = mse + vb, "
           "which also trains Σ.",
    "no_zero_grad": "The stale gradients of an earlier step were added to this step's: call optimizer.zero_grad() "
                    "before loss.backward().",
    "no_step": "The model's weights did not change: call optimizer.step() after loss.backward().",
    "ema_first": "You updated the EMA before the optimiser step: update it last, so that it averages in the new "
                 "weights.",
    "swapped": "Your EMA decay is the wrong way round: θ_ema ← d·θ_ema + (1 − d)·θ keeps most of the old average "
               "(d = 0.9999 in the paper), e.g. ditlib.train.update_ema(ema, model, ema_decay).",
    "no_ema": "The EMA weights did not change: after the optimiser step update them, θ_ema ← d·θ_ema + (1 − d)·θ "
              "(ditlib.train.update_ema(ema, model, ema_decay)).",
}
_STAGE_OF = {"no_drop": 0, "sum": 0, "mse": 0, "no_zero_grad": 1, "no_step": 1, "ema_first": 2, "swapped": 2,
             "no_ema": 2}


def _train_setup(seed: int, fields: dict):
    """(model, ema, optimizer) after an earlier step: Adam's moments are set and its gradients are still there."""
    g = torch.Generator().manual_seed(seed)
    model = _random_dit(g, **fields).train()
    model.y_embedder.dropout_prob = 0.0                 # the only label dropout is the one `drop` asks for
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    with torch.no_grad():
        for p in ema.parameters():                      # the average lags behind the model
            p.add_(randn(g, p.shape) * 0.05)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = randn(g, p.shape) * 0.1
    optimizer.step()
    return model, ema, optimizer


def _reference_step(model, ema, optimizer, diffusion, x, y, t, noise, drop, decay, mistake=None):
    from ..train import update_ema

    kwargs = {"y": y} if mistake == "no_drop" else {"y": y, "force_drop_ids": drop}
    terms = diffusion.training_losses(model, x, t, model_kwargs=kwargs, noise=noise)
    loss = {"sum": lambda: terms["loss"].sum(), "mse": lambda: terms["mse"].mean()}.get(mistake, terms["loss"].mean)()
    if mistake == "ema_first":
        update_ema(ema, model, decay)
    if mistake != "no_zero_grad":
        optimizer.zero_grad()
    loss.backward()
    if mistake != "no_step":
        optimizer.step()
    if mistake not in ("ema_first", "no_ema"):
        update_ema(ema, model, 1 - decay if mistake == "swapped" else decay)
    return loss.detach()


def _flat(module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def _loss_value(out) -> torch.Tensor:
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        return torch.tensor(float(out), dtype=torch.float64)
    out = as_tensor(out, "loss")
    if out.numel() != 1:
        raise Problem(f"Return the loss as a single number; yours has shape {tuple(out.shape)} — average the "
                      f"per-sample losses with training_losses(...)['loss'].mean().")
    if not bool(torch.isfinite(out.detach()).all()):
        raise Problem("Your loss is NaN or infinite — return the mean of training_losses(...)['loss'].")
    return out.detach().reshape(())


@exercise("train_step")
def check_train_step(fn) -> str:
    from ..diffusion import create_diffusion

    cases = [(dict(), [True, False, False, True], 0.9, "4 latents with learned Σ (the hybrid loss) and decay 0.9"),
             (dict(in_channels=1, learn_sigma=False), [False, True, False], 0.99,
              "3 one-channel images with fixed Σ and decay 0.99")]
    for i, (fields, drop, decay, case) in enumerate(cases):
        seed, g = 700 + i, torch.Generator().manual_seed(710 + i)
        diffusion = create_diffusion("", learn_sigma=fields.get("learn_sigma", True))
        n = len(drop)
        model, ema, optimizer = _train_setup(seed, fields)
        x, t, y = _inputs(g, n, model, torch.float32)
        data = (x, y, t, randn(g, x.shape), torch.tensor(drop))

        def outcome(mistake=None):
            m, e, o = _train_setup(seed, fields)
            loss = _reference_step(m, e, o, diffusion, *(v.clone() for v in data), decay, mistake)
            return loss, _flat(m), _flat(e)

        out = _quietly(fn, (model, ema, optimizer, diffusion, *(v.clone() for v in data), decay), _STEP_HINTS)
        got = (_loss_value(out), _flat(model), _flat(ema))
        ref = outcome()
        same = [is_close(got[0], ref[0], 1e-5, 1e-5)] + [is_close(a, b, 1e-5, 1e-5) for a, b in zip(got[1:], ref[1:])]
        if all(same):
            continue
        stage = same.index(False)
        for mistake, message in _STEP_MSGS.items():
            if _STAGE_OF[mistake] == stage:
                wrong = outcome(mistake)
                if all(is_close(got[k], wrong[k], 1e-5, 1e-5) for k in range(stage + 1)):
                    raise Problem(message)
        raise Problem([
            f"On {case} your loss is {got[0].item():.6g} but should be {ref[0].item():.6g}: the mean of "
            f"diffusion.training_losses(model, x, t, model_kwargs={{'y': y, 'force_drop_ids': drop}}, "
            f"noise=noise)['loss'] with the given t and noise.",
            f"On {case} your loss is right but the model's weights after the step are not: "
            f"optimizer.zero_grad(), loss.backward(), then optimizer.step().",
            f"On {case} the loss and the model are right but the EMA weights are not θ_ema ← d·θ_ema + (1 − d)·θ "
            f"with d = ema_decay, applied after the optimiser step.",
        ][stage])
    return (f"train_step matches the reference step (hybrid loss with label dropout, AdamW, then the EMA) "
            f"on {len(cases)} test cases.")

#################################################################################
#        Lesson 09: classifier-free guidance on the batched model (§4)          #
#################################################################################

_WCFG_HINTS = {"broadcast": "split the model's output along the batch into the conditional and unconditional halves "
                            "(torch.split(eps, len(eps) // 2)) and along the channels into ε[:, :k] and the rest",
               "TypeError": "check the signature forward_with_cfg(model, x, t, y, cfg_scale, guided_channels=None); "
                            "guided_channels=None means all in_channels ε channels",
               "default": "run the model on [half; half] with half = x[:len(x)//2], guide the first k channels with "
                          "ε_u + s·(ε_c − ε_u) and concatenate the rest unchanged"}
_WCFG_REFUSAL = ("Your function calls ditlib's {name}: this exercise asks you to write the guided forward pass "
                 "yourself — run model(...) once on torch.cat([half, half]) and guide its ε channels with "
                 "ε_u + s·(ε_c − ε_u).")


def _cfg_parts(model, x, t, y, s, k, sigma=False, swap=False, split_x=False, all_eps=False):
    """DiT.forward_with_cfg, optionally with one of the typical mistakes."""
    half = x[: len(x) // 2]
    out = model(x if split_x else torch.cat([half, half]), t, y)
    k = out.shape[1] if sigma else model.in_channels if (k is None or all_eps) else k
    eps, rest = out[:, :k], out[:, k:]
    cond, uncond = torch.split(eps, len(eps) // 2, dim=0)
    cond, uncond = (uncond, cond) if swap else (cond, uncond)
    guided = uncond + s * (cond - uncond)
    return torch.cat([torch.cat([guided, guided]), rest], dim=1)


@exercise("forward_with_cfg")
def check_forward_with_cfg(fn) -> str:
    from ..layers import guided_output
    from ..models import DiT

    shortcuts = ({DiT.forward_with_cfg: "DiT.forward_with_cfg (model.forward_with_cfg)",
                  guided_output: "guided_output (the guidance step of DiT.forward_with_cfg)"}, _WCFG_REFUSAL)
    cases = [(dict(), 4, 4.0, None, torch.float32, "4 rows with learned Σ and cfg_scale 4"),
             (dict(), 2, 1.5, 3, torch.float32, "guided_channels=3 of 4 (how the official checkpoints are evaluated)"),
             (dict(learn_sigma=False), 6, 2.5, None, torch.float64, "6 float64 rows with fixed Σ and cfg_scale 2.5")]
    g = torch.Generator().manual_seed(91)
    for fields, n, s, k, dtype, case in cases:
        model = _random_dit(g, dtype, **fields)
        x, t, y = _inputs(g, n, model, dtype)
        t = torch.cat([t[: n // 2], t[: n // 2]])                  # both halves at the same timestep
        y = torch.cat([y[: n // 2], torch.full((n // 2,), model.num_classes)])   # [labels; null class]
        with torch.no_grad():
            ref = model.forward_with_cfg(x, t, y, s, k)
            out = as_tensor(_quietly(fn, (model, x.clone(), t.clone(), y.clone(), s, k), _WCFG_HINTS,
                                     refuse=shortcuts))
            I, C_out = model.input_size, model.out_channels
            expect_shape(out, (n, C_out, I, I), hint=" (that of model(x, t, y))", known=[
                ((n // 2, C_out, I, I), "You returned only the guided half: duplicate it to fill the batch, "
                                        "torch.cat([half_eps, half_eps]), so that the output has as many rows as x."),
                ((n, model.in_channels, I, I), "You dropped the Σ channels: concatenate the unguided rest of the "
                                               "model's output, model_out[:, k:], after the guided ε channels.")])
            expect_finite(out)
            parts = lambda **mistake: _cfg_parts(model, x, t, y, s, k, **mistake)  # noqa: E731
            variants = [
                (parts(sigma=True) if model.learn_sigma else None,
                 "You guided the Σ channels too: guide only the first guided_channels ε channels and pass the last "
                 "in_channels channels (Σ) through as the model returned them."),
                (parts(swap=True), "Conditional and unconditional are swapped: the first half of the batch (real "
                                   "labels) gives ε_c, the second (null class) ε_u, and ε̂ = ε_u + s·(ε_c − ε_u)."),
                (parts(all_eps=True) if k is not None else None,
                 f"You guided all {model.in_channels} ε channels, but guided_channels={k} asks for the first {k} "
                 f"only: the other channels pass through unguided, as in DiT.forward_with_cfg."),
                (parts(split_x=True), "Both halves must see the same input: run the model on torch.cat([half, half]) "
                                      "with half = x[:len(x) // 2], not on x's two different halves."),
            ]
            expect_values(out, ref, variants, atol=1e-4, rtol=1e-4, case=case,
                          formula="DiT.forward_with_cfg: ε_u + s·(ε_c − ε_u) on the first guided_channels "
                                  "channels of the model's output on [half; half], the rest unchanged")
    return (f"forward_with_cfg matches DiT.forward_with_cfg, guided_channels and Σ included, "
            f"on {len(cases)} test cases.")
