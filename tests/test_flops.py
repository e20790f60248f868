"""Gflops by the paper's convention (§4, Table 4) and agreement with torch's flop counter."""
import pytest
import torch

from ditlib.flops import (PAPER_BLOCK_GFLOPS, PAPER_GFLOPS, block_design_table, counted_gflops, flop_breakdown,
                          gflops, gflops_table, measured_gflops, num_params)
from ditlib.models import BLOCK_DESIGNS, PAPER_CONFIGS, build_model

# Table 4 of Peebles & Xie, typed in from the paper (one forward pass, 256×256, batch 1).
TABLE_4_GFLOPS = {
    "DiT-S/2": 6.06, "DiT-S/4": 1.41, "DiT-S/8": 0.36,
    "DiT-B/2": 23.01, "DiT-B/4": 5.56, "DiT-B/8": 1.42,
    "DiT-L/2": 80.71, "DiT-L/4": 19.70, "DiT-L/8": 5.01,
    "DiT-XL/2": 118.64, "DiT-XL/4": 29.05, "DiT-XL/8": 7.39,
}


@pytest.mark.parametrize("name", list(TABLE_4_GFLOPS))
def test_gflops_reproduce_paper_table_4(name):
    assert abs(gflops(name) - TABLE_4_GFLOPS[name]) <= 0.02


def test_paper_gflops_constant_covers_the_twelve_paper_configs():
    assert set(PAPER_GFLOPS) == set(PAPER_CONFIGS) == set(TABLE_4_GFLOPS)
    assert PAPER_GFLOPS == TABLE_4_GFLOPS


@pytest.mark.parametrize("name, kwargs", [
    ("DiT-debug/2", dict(input_size=16, in_channels=1, num_classes=10)),
    ("DiT-debug/4", dict(input_size=32, in_channels=4, num_classes=10, learn_sigma=False)),
    ("DiT-T/4", dict(input_size=32, in_channels=1, num_classes=10)),
])
def test_analytic_matmul_count_equals_torch_flop_counter(name, kwargs):
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    # Integers divided by 1e9 on both sides: equal up to float rounding, i.e. exactly the same count.
    assert gflops(model, include_norms=False) == pytest.approx(measured_gflops(model), rel=1e-12, abs=0)


@pytest.mark.parametrize("name", ["DiT-XL/2", "DiT-S/8", "DiT-T/2", "DiT-M/1"])
@pytest.mark.parametrize("block", BLOCK_DESIGNS)
def test_the_counter_of_both_families_equals_the_papers_analytic_count_on_dits(name, block):
    # counted_gflops is the one method the U-Net baseline is counted by; on DiTs (meta device: shapes only)
    # it must give exactly the analytic Table-4 count, LayerNorm term included.
    with torch.device("meta"):
        model = build_model(name, block=block, input_size=8 if "T/" in name or "M/" in name else 32, num_classes=10)
    assert counted_gflops(model) == pytest.approx(gflops(model), rel=1e-12, abs=0)


def test_layer_norm_term_is_one_flop_per_normalised_element():
    model = build_model("DiT-debug/4", input_size=16, in_channels=1, num_classes=10)
    tokens, width, depth = (16 // 4) ** 2, 32, 2
    with_norms, without = gflops(model), gflops(model, include_norms=False)
    assert (with_norms - without) * 1e9 == pytest.approx((2 * depth + 1) * tokens * width)


def test_measured_gflops_leaves_the_training_flag_as_it_was():
    model = build_model("DiT-debug/8", input_size=16, in_channels=1, num_classes=10).train()
    measured_gflops(model)
    assert model.training


@pytest.mark.parametrize("size", ["L", "XL"])
@pytest.mark.parametrize("coarse, fine", [(8, 4), (4, 2)])
def test_gflops_scale_about_4x_when_patch_size_halves(size, coarse, fine):
    ratio = gflops(f"DiT-{size}/{fine}") / gflops(f"DiT-{size}/{coarse}")
    assert ratio == pytest.approx(4.0, rel=0.05)   # T quadruples; attention (T²) pushes it a bit above


def test_model_instance_and_name_give_the_same_gflops():
    kwargs = dict(input_size=16, in_channels=1, num_classes=10)
    model = build_model("DiT-T/4", **kwargs)
    assert gflops(model) == gflops("DiT-T/4", **kwargs)
    assert flop_breakdown(model) == flop_breakdown("DiT-T/4", **kwargs)


def test_names_use_paper_defaults_latent_32x32x4():
    assert gflops("DiT-XL/2") == gflops("DiT-XL/2", input_size=32, in_channels=4, learn_sigma=True)
    assert gflops("DiT-XL/2", input_size=64) > 4 * gflops("DiT-XL/2")    # 512×512: 4× tokens


def test_unknown_name_raises_key_error_listing_valid_names():
    with pytest.raises(KeyError) as excinfo:
        gflops("DiT-XXL/2")
    assert "DiT-XL/2" in str(excinfo.value) and "DiT-S/8" in str(excinfo.value)


def test_instance_with_conflicting_input_size_is_rejected():
    model = build_model("DiT-debug/4", input_size=16, in_channels=1, num_classes=10)
    with pytest.raises(ValueError, match="input_size=16"):
        gflops(model, input_size=32)


def test_num_params_equals_sum_of_real_parameters():
    kwargs = dict(input_size=32, in_channels=1, num_classes=10)
    model = build_model("DiT-T/4", **kwargs)
    assert num_params("DiT-T/4", **kwargs) == sum(p.numel() for p in model.parameters())


def test_gflops_table_lists_every_config_with_params_and_gflops():
    rows = gflops_table()
    by_name = {name: (params, flops) for name, params, flops in rows}
    assert set(PAPER_CONFIGS) <= set(by_name)
    assert by_name["DiT-XL/2"][1] == pytest.approx(118.64, abs=0.02)
    assert by_name["DiT-XL/2"][0] == 675_129_632          # the paper's "675M"
    assert by_name["DiT-S/2"][0] < by_name["DiT-B/2"][0] < by_name["DiT-L/2"][0] < by_name["DiT-XL/2"][0]


# Table 4 of the paper: DiT-XL/2 Gflops per block design (see PAPER_BLOCK_GFLOPS for provenance).
FIGURE_5_GFLOPS = {"in-context": 119.37, "cross-attention": 137.62, "adaLN": 118.56, "adaLN-Zero": 118.64}


@pytest.mark.parametrize("design", BLOCK_DESIGNS)
def test_gflops_of_each_block_design_reproduce_the_paper(design):
    assert gflops("DiT-XL/2", block=design) == pytest.approx(FIGURE_5_GFLOPS[design], abs=0.01)


def test_paper_block_gflops_constant_covers_the_four_designs():
    assert tuple(PAPER_BLOCK_GFLOPS) == BLOCK_DESIGNS
    assert PAPER_BLOCK_GFLOPS == FIGURE_5_GFLOPS


def test_cross_attention_costs_about_15_percent_more_and_adaln_the_least():
    by_design = {design: flops for design, _, flops in block_design_table("DiT-XL/2")}
    assert by_design["cross-attention"] / by_design["adaLN-Zero"] == pytest.approx(1.15, abs=0.02)
    assert min(by_design, key=by_design.get) == "adaLN"


@pytest.mark.parametrize("design", BLOCK_DESIGNS)
@pytest.mark.parametrize("name, kwargs", [
    ("DiT-debug/2", dict(input_size=16, in_channels=1, num_classes=10)),
    ("DiT-debug/4", dict(input_size=32, in_channels=4, num_classes=10, learn_sigma=False)),
])
def test_analytic_matmul_count_equals_torch_flop_counter_for_every_design(design, name, kwargs):
    torch.manual_seed(0)
    model = build_model(name, block=design, **kwargs)
    assert gflops(model, include_norms=False) == pytest.approx(measured_gflops(model), rel=1e-12, abs=0)


def test_layer_norm_terms_follow_each_designs_token_and_norm_counts():
    tokens, width, depth = (16 // 4) ** 2, 32, 2
    expected = {                                             # blocks' norms, then the final norm on T tokens
        "in-context": (2 * depth * (tokens + 2) + tokens) * width,
        "cross-attention": (3 * depth * tokens + tokens) * width,
        "adaLN": (2 * depth * tokens + tokens) * width,
        "adaLN-Zero": (2 * depth * tokens + tokens) * width,
    }
    for design in BLOCK_DESIGNS:
        counts = flop_breakdown("DiT-debug/4", input_size=16, in_channels=1, num_classes=10, block=design)
        assert counts["layer_norms"] == expected[design], design


def test_every_design_has_the_same_breakdown_parts_and_a_model_is_counted_with_its_own_design():
    kwargs = dict(input_size=16, in_channels=1, num_classes=10)
    parts = {design: flop_breakdown("DiT-debug/4", block=design, **kwargs) for design in BLOCK_DESIGNS}
    assert len({tuple(counts) for counts in parts.values()}) == 1
    assert [d for d in BLOCK_DESIGNS if parts[d]["cross_attention"]] == ["cross-attention"]
    assert [d for d in BLOCK_DESIGNS if parts[d]["adaLN_modulation"]] == ["adaLN", "adaLN-Zero"]
    model = build_model("DiT-debug/4", block="in-context", **kwargs)
    assert flop_breakdown(model) == parts["in-context"]


def test_block_design_table_lists_params_and_gflops_of_each_design():
    rows = block_design_table("DiT-XL/2")
    assert [design for design, _, _ in rows] == list(BLOCK_DESIGNS)
    params = {design: n for design, n, _ in rows}
    assert params["adaLN-Zero"] == 675_129_632
    assert params["in-context"] < params["cross-attention"] < params["adaLN"] < params["adaLN-Zero"]
