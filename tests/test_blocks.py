"""Specification of the four conditioning block designs of §3.2 (Figure 3): in-context, cross-attention,
adaLN and adaLN-Zero, chosen by `DiT(block=...)`."""
import inspect

import pytest
import torch

from ditlib import checkpoints as ckpt
from ditlib.sample import load_model
from ditlib.configs import get_config
from ditlib.models import (BLOCK_DESIGNS, AdaLNBlock, CrossAttentionBlock, DiT, DiTBlock, DiTConfig, InContextBlock,
                           build_model)
from ditlib.train import train

BLOCK_CLASSES = {"in-context": InContextBlock, "cross-attention": CrossAttentionBlock,
                 "adaLN": AdaLNBlock, "adaLN-Zero": DiTBlock}


def tiny(block, **kw):
    """A 2-block, width-32 DiT on 16×16×3 inputs (16 tokens of patch 4), 5 classes."""
    args = dict(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2,
                num_classes=5, class_dropout_prob=0.1, learn_sigma=True, block=block)
    args.update(kw)
    return DiT(**args)


def record_input_shape(module, shapes, key):
    """Store the shape of `module`'s first input under `shapes[key]` on each call."""
    def hook(_module, args):
        shapes[key] = tuple(args[0].shape)
    module.register_forward_pre_hook(hook)


def inputs(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 1000, (n,), generator=g)


def test_the_four_designs_in_the_papers_order_with_adaln_zero_as_default():
    assert BLOCK_DESIGNS == ("in-context", "cross-attention", "adaLN", "adaLN-Zero")
    assert DiTConfig().block == "adaLN-Zero" and DiT(depth=1, hidden_size=32, num_heads=2).block == "adaLN-Zero"
    for design, cls in BLOCK_CLASSES.items():
        model = tiny(design)
        assert model.block == design and model.config.to_dict()["block"] == design
        assert all(type(b) is cls for b in model.blocks)


def test_unknown_block_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="unknown block design 'adaLN-One'.*in-context, cross-attention, adaLN, adaLN-Zero"):
        tiny("adaLN-One")
    with pytest.raises(ValueError, match="unknown block design"):
        build_model("DiT-debug/4", block="film")


@pytest.mark.parametrize("learn_sigma", [True, False])
@pytest.mark.parametrize("design", BLOCK_DESIGNS)
def test_every_design_maps_the_input_to_eps_and_sigma_channels(design, learn_sigma):
    torch.manual_seed(0)
    model = tiny(design, learn_sigma=learn_sigma)
    x, t = inputs()
    out = model(x, t, torch.tensor([0, 1, 4, 5]))
    assert out.shape == (4, 6 if learn_sigma else 3, 16, 16)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("design", BLOCK_DESIGNS)
def test_every_design_runs_with_cfg_and_under_bf16_autocast(design):
    torch.manual_seed(0)
    model = tiny(design).eval()
    for p in model.parameters():                  # non-zero everywhere, so adaLN-Zero is not trivially 0
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    x, t = inputs(2)
    xx, tt, y = torch.cat([x, x]), torch.cat([t, t]), torch.tensor([1, 2, 5, 5])
    reference = model.forward_with_cfg(xx, tt, y, cfg_scale=2.0)
    assert reference.shape == (4, 6, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.forward_with_cfg(xx, tt, y, cfg_scale=2.0)
    assert torch.isfinite(out).all()
    assert (out.float() - reference).norm() < 0.1 * reference.norm()


def test_adaln_zero_blocks_are_identity_at_init_and_adaln_blocks_are_not():
    torch.manual_seed(0)
    x, c = torch.randn(4, 16, 32), torch.randn(4, 32)
    for block in tiny("adaLN-Zero").blocks:
        assert torch.equal(block(x, c), x)
    for block in tiny("adaLN").blocks:
        assert not torch.allclose(block(x, c), x, atol=1e-3)


def test_only_adaln_zero_starts_with_a_zero_output():
    x, t = inputs()
    y = torch.tensor([0, 1, 2, 3])
    for design in BLOCK_DESIGNS:
        torch.manual_seed(0)
        out = tiny(design)(x, t, y)
        assert (torch.count_nonzero(out) == 0) == (design == "adaLN-Zero"), design


def test_in_context_appends_two_tokens_and_removes_them_before_the_final_layer():
    model = tiny("in-context")
    shapes = {}
    record_input_shape(model.blocks[0], shapes, "block")
    record_input_shape(model.final_layer, shapes, "final")
    x, t = inputs(3)
    model(x, t, torch.tensor([0, 1, 2]))
    assert shapes["block"] == (3, 16 + 2, 32)       # T image tokens + t and y tokens
    assert shapes["final"] == (3, 16, 32)           # only the image tokens are decoded


def test_cross_attention_attends_to_a_length_two_sequence_of_t_and_y():
    model = tiny("cross-attention")
    shapes = {}
    record_input_shape(model.blocks[1].cross_attn.kv, shapes, "kv")
    record_input_shape(model.blocks[1].cross_attn.q, shapes, "q")
    x, t = inputs(3)
    model(x, t, torch.tensor([0, 1, 2]))
    assert shapes["kv"] == (3, 2, 32) and shapes["q"] == (3, 16, 32)


def test_only_the_adaptive_designs_have_an_adaptive_final_layer():
    for design in BLOCK_DESIGNS:
        final = tiny(design).final_layer
        adaptive = design in ("adaLN", "adaLN-Zero")
        assert final.adaptive == adaptive
        assert hasattr(final, "adaLN_modulation") == adaptive
        assert final.norm_final.elementwise_affine == (not adaptive)   # a standard LayerNorm otherwise


@pytest.mark.parametrize("design", BLOCK_DESIGNS)
def test_every_design_uses_the_class_label_once_trained(design):
    """50 AdamW steps (~0.3 s) towards the target y (a constant image per class): afterwards the
    output follows the label, so the design really routes y into the tokens."""
    torch.manual_seed(0)
    model = tiny(design, class_dropout_prob=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(50):
        x, t = inputs(8, seed=step)
        y = torch.arange(8) % 5
        target = y.float().view(-1, 1, 1, 1).expand(-1, 6, 16, 16)
        loss = torch.nn.functional.mse_loss(model(x, t, y), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, t = inputs(2, seed=99)
    with torch.no_grad():
        out_0, out_4 = model(x, t, torch.tensor([0, 0])), model(x, t, torch.tensor([4, 4]))
    assert (out_4 - out_0).mean() > 2.0             # targets 0 and 4: at least half the gap is learned


def test_a_non_default_design_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = tiny("cross-attention").eval()
    ckpt.save_checkpoint(tmp_path / "w", ckpt.prefixed(model.state_dict(), "ema"),
                         {"kind": "weights", "model_config": model.config.to_dict()})
    loaded, _ = load_model(tmp_path / "w")
    assert loaded.block == "cross-attention"
    x, t = inputs(2)
    y = torch.tensor([1, 3])
    assert torch.equal(loaded(x, t, y), model(x, t, y))


def test_a_checkpoint_without_a_block_field_loads_as_adaln_zero(tmp_path):
    model = tiny("adaLN-Zero")
    config = {k: v for k, v in model.config.to_dict().items() if k != "block"}     # checkpoints written before `block`
    ckpt.save_checkpoint(tmp_path / "old", ckpt.prefixed(model.state_dict(), "ema"),
                         {"kind": "weights", "model_config": config})
    assert load_model(tmp_path / "old")[0].block == "adaLN-Zero"


class RandomImages(torch.utils.data.Dataset):
    """16 random 32×32×1 'images' with labels 0-9, enough for a couple of training steps."""
    in_channels, num_classes = 1, 10

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(16, 1, 32, 32, generator=g) * 2 - 1, torch.arange(16) % 10

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_training_a_non_default_design_saves_and_reloads_it(tmp_path):
    config = get_config("debug").replace(block="in-context", batch_size=4, ckpt_every=2, log_every=2)
    train(config, tmp_path, max_steps=2, progress=False, dataset=RandomImages(), device="cpu")
    model, meta = load_model(tmp_path / "final")
    assert meta["train_config"]["block"] == meta["model_config"]["block"] == "in-context"
    assert isinstance(model.blocks[0], InContextBlock)
