"""Specification of ditlib.models: the DiT of §3 and its compatibility with the official checkpoints."""
import math

import numpy as np
import pytest
import torch
from einops import rearrange

from ditlib.models import (PAPER_CONFIGS, DiT, DiT_models, DiTBlock, build_model, get_1d_sincos_pos_embed_from_grid,
                           get_2d_sincos_pos_embed, timestep_embedding)

# Table 1 of the paper: (depth, hidden size, heads), typed in from the paper.
PAPER_TABLE_1 = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


def tiny(**kw):
    args = dict(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2,
                num_classes=5, class_dropout_prob=0.1, learn_sigma=True)
    args.update(kw)
    return DiT(**args)


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_have_table_1_dims_and_output_shape(name):
    size, patch = name[len("DiT-"):].split("/")
    with torch.device("meta"):
        model = build_model(name)
        x = torch.empty(2, 4, 32, 32)
        out = model(x, torch.empty(2, dtype=torch.long), torch.empty(2, dtype=torch.long))
    assert (model.depth, model.hidden_size, model.num_heads) == PAPER_TABLE_1[size]
    assert model.patch_size == int(patch)
    assert model.x_embedder.num_patches == (32 // int(patch)) ** 2
    assert out.shape == (2, 8, 32, 32)          # learn_sigma doubles the 4 latent channels


def test_dit_xl_2_has_675_129_632_parameters():
    with torch.device("meta"):
        model = build_model("DiT-XL/2")
    assert sum(p.numel() for p in model.parameters()) == 675_129_632


def test_small_paper_config_runs_for_real():
    torch.manual_seed(0)
    model = build_model("DiT-S/8", input_size=16, num_classes=10)
    out = model(torch.randn(3, 4, 16, 16), torch.tensor([0, 500, 999]), torch.tensor([0, 3, 10]))
    assert out.shape == (3, 8, 16, 16) and torch.isfinite(out).all()


def test_state_dict_uses_official_key_names_and_shapes():
    with torch.device("meta"):
        sd = build_model("DiT-XL/2").state_dict()
    # Key names and shapes of the official DiT-XL-2-256x256.pt (as listed by torch.load(...).items()).
    expected = {
        "pos_embed": (1, 256, 1152),
        "x_embedder.proj.weight": (1152, 4, 2, 2), "x_embedder.proj.bias": (1152,),
        "t_embedder.mlp.0.weight": (1152, 256), "t_embedder.mlp.0.bias": (1152,),
        "t_embedder.mlp.2.weight": (1152, 1152), "t_embedder.mlp.2.bias": (1152,),
        "y_embedder.embedding_table.weight": (1001, 1152),
        "blocks.0.attn.qkv.weight": (3456, 1152), "blocks.0.attn.qkv.bias": (3456,),
        "blocks.0.attn.proj.weight": (1152, 1152), "blocks.0.attn.proj.bias": (1152,),
        "blocks.0.mlp.fc1.weight": (4608, 1152), "blocks.0.mlp.fc1.bias": (4608,),
        "blocks.0.mlp.fc2.weight": (1152, 4608), "blocks.0.mlp.fc2.bias": (1152,),
        "blocks.0.adaLN_modulation.1.weight": (6912, 1152), "blocks.0.adaLN_modulation.1.bias": (6912,),
        "final_layer.linear.weight": (32, 1152), "final_layer.linear.bias": (32,),
        "final_layer.adaLN_modulation.1.weight": (2304, 1152), "final_layer.adaLN_modulation.1.bias": (2304,),
    }
    per_block = [k[len("blocks.0."):] for k in expected if k.startswith("blocks.0.")]
    all_expected = {k for k in expected if not k.startswith("blocks.")} | {f"blocks.{i}.{k}" for i in range(28) for k in per_block}
    assert set(sd) == all_expected
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key


def test_adaln_zero_block_is_identity_at_init():
    torch.manual_seed(0)
    model = tiny()
    x, c = torch.randn(4, 16, 32), torch.randn(4, 32)
    for block in model.blocks:
        assert torch.equal(block(x, c), x)


def test_adaln_zero_block_is_not_identity_once_modulation_is_nonzero():
    torch.manual_seed(0)
    block = DiTBlock(32, 2)
    torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.1)
    x, c = torch.randn(2, 5, 32), torch.randn(2, 32)
    assert not torch.allclose(block(x, c), x)


def test_model_outputs_zero_at_init():
    model = tiny()
    out = model(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]), torch.tensor([0, 4]))
    assert torch.count_nonzero(out) == 0


def test_unpatchify_inverts_patch_order_of_the_token_grid():
    model = tiny(learn_sigma=False)
    x = torch.randn(2, 3, 16, 16)
    # Patch (row i, col j) becomes token i*(I/p)+j holding its p×p×C values as (p, q, c).
    tokens = rearrange(x, "n c (h p) (w q) -> n (h w) (p q c)", p=4, q=4)
    assert torch.equal(model.unpatchify(tokens), x)


def test_patch_embedding_is_a_linear_map_of_each_patch_in_row_major_order():
    torch.manual_seed(0)
    model = tiny()
    x = torch.randn(2, 3, 16, 16)
    conv = model.x_embedder.proj
    patches = rearrange(x, "n c (h p) (w q) -> n (h w) (c p q)", p=4, q=4)
    expected = patches @ conv.weight.reshape(conv.weight.shape[0], -1).T + conv.bias
    assert torch.allclose(model.x_embedder(x), expected, atol=1e-5)


def test_1d_sincos_embedding_matches_its_formula():
    pos = np.arange(7)
    emb = get_1d_sincos_pos_embed_from_grid(8, pos)
    omega = np.array([10000 ** (-k / 4) for k in range(4)])
    expected = np.concatenate([np.sin(np.outer(pos, omega)), np.cos(np.outer(pos, omega))], axis=1)
    assert emb.shape == (7, 8)
    assert np.allclose(emb, expected)


def test_2d_pos_embedding_splits_width_between_column_and_row():
    D, G = 16, 4
    emb = get_2d_sincos_pos_embed(D, G)
    assert emb.shape == (G * G, D)
    grid = emb.reshape(G, G, D)                       # (row, col, D)
    # first half depends on the column only, second half on the row only
    assert np.allclose(grid[:, :, : D // 2], grid[:1, :, : D // 2])
    assert np.allclose(grid[:, :, D // 2:], grid[:, :1, D // 2:])
    # each (sin, cos) pair lies on the unit circle; the origin token is sin 0 = 0, cos 0 = 1
    quarter = D // 4
    for half in (0, D // 2):
        s, c = emb[:, half: half + quarter], emb[:, half + quarter: half + 2 * quarter]
        assert np.allclose(s ** 2 + c ** 2, 1.0)
    assert np.allclose(emb[0], np.r_[np.zeros(quarter), np.ones(quarter), np.zeros(quarter), np.ones(quarter)])
    assert len({tuple(np.round(r, 6)) for r in emb}) == G * G          # every token distinct


def test_pos_embedding_is_stored_but_not_trained():
    model = tiny()
    assert not model.pos_embed.requires_grad
    assert "pos_embed" in model.state_dict()
    assert np.allclose(model.pos_embed[0].numpy(), get_2d_sincos_pos_embed(32, 4))


def test_timestep_embedding_puts_cosines_first():
    emb = timestep_embedding(torch.tensor([0.0, 10.0]), 8)
    assert torch.allclose(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.tensor([10000 ** (-k / 4) for k in range(4)])
    assert torch.allclose(emb[1], torch.cat([torch.cos(10 * freqs), torch.sin(10 * freqs)]), atol=1e-6)


def test_label_dropout_replaces_labels_by_the_null_class_in_training_only():
    model = tiny(class_dropout_prob=1.0)
    labels = torch.tensor([0, 1, 2, 3])
    null = model.y_embedder.embedding_table.weight[5]
    assert torch.equal(model.y_embedder(labels, train=True), null.expand(4, -1))
    assert torch.equal(model.y_embedder(labels, train=False), model.y_embedder.embedding_table.weight[:4])


def test_null_class_comes_from_num_classes():
    model = tiny(num_classes=7)
    assert model.y_embedder.embedding_table.num_embeddings == 8
    assert tiny(num_classes=7, class_dropout_prob=0.0).y_embedder.embedding_table.num_embeddings == 7


def _trained_like(model):
    torch.manual_seed(1)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def test_forward_with_cfg_guides_all_channels_by_default():
    model = _trained_like(tiny(in_channels=4))
    x = torch.randn(2, 4, 16, 16)
    xx, t = torch.cat([x, x]), torch.tensor([3, 7, 3, 7])
    y = torch.tensor([1, 2, 5, 5])
    cond, uncond = model(xx, t, y).chunk(2)
    out = model.forward_with_cfg(xx, t, y, cfg_scale=4.0)
    guided = uncond[:, :4] + 4.0 * (cond[:, :4] - uncond[:, :4])
    assert torch.allclose(out[:2, :4], guided, atol=1e-5)
    assert torch.allclose(out[2:, :4], out[:2, :4])          # both halves carry the guided ε
    assert torch.allclose(out[:2, 4:], cond[:, 4:], atol=1e-6)      # Σ channels are not guided


def test_forward_with_cfg_three_guided_channels_like_the_official_eval():
    model = _trained_like(tiny(in_channels=4))
    x = torch.randn(1, 4, 16, 16)
    xx, t, y = torch.cat([x, x]), torch.tensor([5, 5]), torch.tensor([2, 5])
    cond, uncond = model(xx, t, y).chunk(2)
    out = model.forward_with_cfg(xx, t, y, cfg_scale=3.0, guided_channels=3)
    assert torch.allclose(out[:1, :3], uncond[:, :3] + 3.0 * (cond[:, :3] - uncond[:, :3]), atol=1e-5)
    assert torch.allclose(out[:1, 3], cond[:, 3], atol=1e-6)         # 4th ε channel: conditional, unguided


def test_cfg_scale_one_equals_the_conditional_model():
    model = _trained_like(tiny())
    x = torch.randn(2, 3, 16, 16)
    xx, t, y = torch.cat([x, x]), torch.tensor([1, 2, 1, 2]), torch.tensor([0, 1, 5, 5])
    assert torch.allclose(model.forward_with_cfg(xx, t, y, 1.0)[:2], model(xx, t, y)[:2], atol=1e-6)


def test_unknown_config_name_lists_valid_ones():
    with pytest.raises(KeyError, match="DiT-XL/2"):
        build_model("DiT-XXL/2")


def test_patch_size_not_dividing_input_is_refused():
    with pytest.raises(ValueError, match="patch_size=3 does not divide input_size=32"):
        DiT(input_size=32, patch_size=3, hidden_size=32, depth=1, num_heads=2)


# Input checks run at the entry points (sampling, the trainer's first batch), not in `forward`: reading
# the labels back would synchronise a GPU at every step.

def test_wrong_channel_count_is_refused():
    model = tiny(in_channels=3)
    with pytest.raises(ValueError, match="channel"):
        model.check_inputs(torch.randn(1, 1, 16, 16), torch.tensor([1]), torch.tensor([0]))


def test_wrong_spatial_size_is_refused():
    with pytest.raises(ValueError, match="built for 16×16"):
        tiny().check_inputs(torch.randn(1, 3, 32, 32), torch.tensor([1]), torch.tensor([0]))


@pytest.mark.parametrize("label", [-1, 6])
def test_label_out_of_range_is_refused(label):
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 4\]"):
        tiny(num_classes=5).check_inputs(torch.randn(1, 3, 16, 16), torch.tensor([1]), torch.tensor([label]))


def test_forward_reads_no_values_back(monkeypatch):
    """The hot path never calls .item()/int() on a tensor (a device sync per step on a GPU)."""
    model = tiny(num_classes=5).eval()
    def refuse(*args, **kwargs):
        raise AssertionError("forward read a tensor value back")
    monkeypatch.setattr(torch.Tensor, "item", refuse)
    monkeypatch.setattr(torch.Tensor, "__int__", refuse)
    monkeypatch.setattr(torch.Tensor, "tolist", refuse)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]), torch.tensor([0, 5]))
    assert out.shape == (2, 6, 16, 16)


def test_registry_holds_paper_and_course_configs():
    assert set(PAPER_CONFIGS) <= set(DiT_models)
    assert len(PAPER_CONFIGS) == 12
    assert {"DiT-T/4", "DiT-debug/8"} <= set(DiT_models)
    with pytest.raises(TypeError, match="fixed by the config name"):
        build_model("DiT-S/2", depth=3)


def test_course_default_model_has_about_4_million_parameters():
    model = build_model("DiT-T/4", input_size=32, in_channels=1, num_classes=10)
    n = sum(p.numel() for p in model.parameters())
    assert 4.0e6 < n < 4.4e6
    assert math.isclose(model.x_embedder.num_patches, 64)


def test_registry_constructors_accept_a_block_design_and_config_rebuilds_it():
    for design in ("in-context", "cross-attention", "adaLN", "adaLN-Zero"):
        model = build_model("DiT-debug/4", input_size=16, in_channels=1, num_classes=10, block=design)
        rebuilt = DiT(**model.config.to_dict())
        assert rebuilt.block == design
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
