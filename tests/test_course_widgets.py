"""The lessons' model introspection (ditlib.course.inspect_model) and widgets (ditlib.course.widgets).

Tiny random DiTs only; where values matter the zero-initialised adaLN-Zero layers are perturbed, since a
fresh adaLN-Zero model has gates 0 and outputs 0.
"""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

from ditlib.course import inspect_model, viz, widgets  # noqa: E402
from ditlib.diffusion import create_diffusion  # noqa: E402
from ditlib.errors import ConfigError  # noqa: E402
from ditlib.models import DiT  # noqa: E402
from ditlib.sample import sample_images  # noqa: E402

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)


def _model(block="adaLN-Zero", perturb=True, seed=0):
    torch.manual_seed(seed)
    model = DiT(**TINY, block=block)
    if perturb:                                         # wake the zero-initialised layers up
        with torch.no_grad():
            for module in [b.adaLN_modulation[-1] for b in model.blocks if hasattr(b, "adaLN_modulation")] + \
                          [model.final_layer.linear]:
                module.weight.normal_(0, 0.2)
                module.bias.normal_(0, 0.2)
    return model.eval()


def _x(n=2, seed=1):
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model():
    return _model()


# ------------------------------------------------------------------ attention maps

def test_attention_rows_sum_to_one_with_one_row_per_token(model):
    probs = inspect_model.attention_maps(model, _x(), t=[10, 900], y=[1, 2], block=0)
    assert probs.shape == (2, 2, 16, 16)                          # (N, heads, T, T), T = (8/2)²
    assert torch.allclose(probs.sum(-1), torch.ones(2, 2, 16), atol=1e-5)
    row = inspect_model.attention_maps(model, _x(), t=10, y=[1, 7], block=0, query=5)    # one query's row
    assert row.shape == (2, 2, 16) and torch.allclose(row[0], probs[0, :, 5], atol=1e-6)


def test_recomputed_attention_reproduces_the_blocks_attention_output(model):
    block = model.blocks[-1]
    seen = {}
    handle = block.attn.register_forward_hook(lambda m, args, out: seen.update(input=args[0], output=out))
    with torch.no_grad():
        model(_x(), torch.tensor([3, 700]), torch.tensor([4, 5]))
    handle.remove()
    probs = inspect_model.attention_maps(model, _x(), [3, 700], [4, 5], block=-1)     # (N, heads, T, T)
    B, T, D = seen["input"].shape
    v = block.attn.qkv(seen["input"]).reshape(B, T, 3, 2, D // 2).permute(2, 0, 3, 1, 4)[2]  # (N, heads, T, d)
    out = block.attn.proj((probs @ v).transpose(1, 2).reshape(B, T, D))
    assert torch.allclose(out, seen["output"], atol=1e-5)
    assert model.training is False and not block.attn._forward_pre_hooks       # nothing left behind


def test_in_context_attention_has_the_two_conditioning_tokens_and_still_plots():
    model = _model("in-context")
    probs = inspect_model.attention_maps(model, _x(1), 5, 3)
    assert probs.shape == (1, 2, 18, 18)                          # T + 2: t_emb and y_emb are tokens
    fig = inspect_model.plot_attention(model, _x(1)[0], [0, 999], 3)
    assert "[t, y] tokens" in fig.axes[1].get_title()
    with pytest.raises(ConfigError, match="image patch"):
        inspect_model.plot_attention(model, _x(1)[0], [0], 3, query=16)


def test_plot_attention_has_three_panels_per_timestep_on_the_patch_grid(model):
    fig = inspect_model.plot_attention(model, _x(1)[0], [0, 500, 999], 2, block=0)
    assert len(fig.axes) == 9
    assert fig.axes[1].images[0].get_array().shape == (4, 4)      # the (I/p × I/p) grid
    assert [fig.axes[3 * r].get_ylabel() for r in range(3)] == ["t = 0", "t = 500", "t = 999"]
    decoded = inspect_model.plot_attention(model, _x(1), [10], 2, decode=lambda z: z[:, :1].repeat(1, 1, 2, 2))
    assert decoded.axes[0].images[0].get_array().shape[:2] == (16, 16)


# ------------------------------------------------------------------ adaLN-Zero gates

def test_gates_are_zero_at_initialisation_and_move_once_perturbed(model):
    fresh = inspect_model.adaln_gates(_model(perturb=False), [0, 250, 999], y=[1, 2])
    assert fresh["attn"].shape == fresh["mlp"].shape == (2, 3)     # (depth, K)
    assert np.all(fresh["attn"] == 0) and np.all(fresh["mlp"] == 0)
    gates = inspect_model.adaln_gates(model, [0, 250, 999], y=3)
    assert np.all(gates["attn"] > 0) and np.all(gates["mlp"] > 0)
    assert not np.allclose(gates["attn"][:, 0], gates["attn"][:, -1])     # they depend on t
    fig = inspect_model.plot_adaln_gates(gates)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2


def test_gates_refuse_designs_without_gates():
    with pytest.raises(ConfigError, match="no gates"):
        inspect_model.adaln_gates(_model("adaLN"), [0, 10], 1)


# ------------------------------------------------------------------ loss by t

def test_loss_by_t_gives_finite_terms_per_bin_and_is_reproducible(model):
    diffusion = create_diffusion("")
    result = inspect_model.loss_by_t(model, diffusion, _x(3), [0, 1, 2], num_bins=4, samples_per_bin=3)
    for key in ("mse", "vb", "loss"):
        assert result[key].shape == (4,) and np.all(np.isfinite(result[key]))
    assert result["t_samples"].min() == 0 and result["t_samples"].max() == 999
    assert np.allclose(result["loss"], result["mse"] + result["vb"], rtol=1e-5)
    again = inspect_model.loss_by_t(model, diffusion, _x(3), [0, 1, 2], num_bins=4, samples_per_bin=3)
    assert np.array_equal(again["mse"], result["mse"])
    fig = inspect_model.plot_loss_by_t(result)
    assert len(fig.axes) == 1 and fig.axes[0].get_yscale() == "log" and len(fig.axes[0].lines) == 2


# ------------------------------------------------------------------ trajectories

def test_trajectories_start_from_one_x_T_and_end_where_sample_images_does(model):
    traj = inspect_model.trajectories(model, create_diffusion("10"), create_diffusion("ddim10"), [1, 7], seed=3)
    assert list(traj) == ["DDPM", "DDIM"] and len(traj["DDPM"]) == len(traj["DDIM"]) == 10
    assert traj["DDIM"][0].shape == (2, 4, 8, 8)
    # "10" starts at t = 999, "ddim10" at t = 900; on the same timesteps the first calls see the same x_T
    same_steps = inspect_model.trajectories(model, create_diffusion("ddim10"), create_diffusion("ddim10"), [1, 7], seed=3)
    assert torch.equal(same_steps["DDPM"][0], same_steps["DDIM"][0])
    assert not torch.allclose(same_steps["DDPM"][-1], same_steps["DDIM"][-1])  # then DDPM's fresh noise parts them
    for sampler, chain in (("ddim", traj["DDIM"]), ("ddpm", traj["DDPM"])):
        final = sample_images(model, [1, 7], num_sampling_steps=10, sampler=sampler, seed=3, progress=False,
                              precision="fp32")
        assert torch.allclose(chain[-1], final, atol=1e-5), sampler  # at t = 0 the sample is x̂_0 (DDPM: its mean)
    sparse = inspect_model.trajectories(model, create_diffusion("10"), create_diffusion("ddim10"), [1], every=4,
                                        decode=lambda z: z[:, :1])
    assert [len(c) for c in sparse.values()] == [4, 4] and sparse["DDIM"][0].shape == (1, 1, 8, 8)


def test_plot_trajectories_lays_out_samplers_times_images_by_progress(model):
    traj = inspect_model.trajectories(model, create_diffusion("5"), create_diffusion("ddim5"), [1, 2],
                                      decode=lambda z: z[:, :1])
    fig = inspect_model.plot_trajectories(traj, num_columns=3)
    assert len(fig.axes) == 2 * 2 * 3
    assert [fig.axes[j].get_title() for j in range(3)] == ["0%", "50%", "100%"]


# ------------------------------------------------------------------ widgets

def test_attention_widget_redraws_for_t_block_and_query(model):
    box = widgets.attention_widget(model, _x(1)[0], 4, create_diffusion(""), t=100)
    t_slider, (block_menu, query_slider) = box.children[0], box.children[1].children
    assert box.redraws == 1 and "t = 100" in box.figure.texts[0].get_text()
    t_slider.value = 800
    assert box.redraws == 2 and "t = 800" in box.figure.texts[0].get_text()
    block_menu.value = 0
    query_slider.value = 3
    assert box.redraws == 4 and "block 0" in box.figure.texts[0].get_text()


def test_trajectory_scrubber_shows_every_chain_at_the_same_fraction(model):
    traj = inspect_model.trajectories(model, create_diffusion("5"), create_diffusion("ddim5"), [1, 2],
                                      decode=lambda z: z[:, :1])
    box = widgets.trajectory_scrubber(traj, value=0.0)
    slider = box.children[0]
    assert box.redraws == 1 and len(box.figure.axes) == 4                     # 2 samplers × 2 images
    assert box.figure.axes[0].get_ylabel().endswith("entry 1/5")
    slider.value = 1.0
    assert box.redraws == 2 and box.figure.axes[2].get_ylabel() == "DDIM\nentry 5/5"


def test_plot_block_designs_titles_each_design_with_its_cost():
    static = widgets.plot_block_designs("DiT-XL/2")
    assert len(static.axes) == 4 and "137.6 Gflops" in static.axes[1].get_title()
    assert [ax.get_title().split("\n")[0] for ax in static.axes] == list(widgets.BLOCK_DESIGNS)


def _fake_by_t(num_bins=4, per_bin=3, steps=1000):
    """The structure of `inspect_model.loss_by_t`, with made-up errors falling with t and a vb term at t = 0."""
    edges = np.linspace(0, steps, num_bins + 1).round().astype(int)
    t = np.stack([np.linspace(lo, hi - 1, per_bin).round().astype(np.int64) for lo, hi in zip(edges[:-1], edges[1:])])
    mse = 2.0 / (1.0 + t)
    vb = np.where(t == 0, 0.5, 0.0)
    return {"bin_edges": edges, "t_centers": (edges[:-1] + edges[1:] - 1) / 2, "mse": mse.mean(1), "vb": vb.mean(1),
            "loss": (mse + vb).mean(1), "t_samples": t, "mse_samples": mse, "vb_samples": vb}


def _snr_of(diffusion):
    abar = diffusion.alphas_cumprod.numpy().astype(np.float64)
    return abar / (1 - abar)


def _by_gid(artists, gid):
    found = [a for a in artists if a.get_gid() == gid]
    assert found, f"nothing drawn with gid {gid!r}"
    return found


def _shares(by_t, snr, gamma):
    """Each bin's share of w_t·mse + vb, computed here from the definition."""
    w = np.ones_like(by_t["mse_samples"]) if gamma is None else \
        np.minimum(snr[by_t["t_samples"]], gamma) / snr[by_t["t_samples"]]
    per_bin = (w * by_t["mse_samples"] + by_t["vb_samples"]).mean(1) * np.diff(by_t["bin_edges"])
    return per_bin / per_bin.sum()


def test_min_snr_explorer_weights_shares_and_lr_follow_the_controls():
    diffusion, by_t = create_diffusion(""), _fake_by_t()
    snr = _snr_of(diffusion)
    box = widgets.min_snr_explorer(by_t, diffusion, steps=300, warmup_steps=50, lr=1e-3, final_lr_ratio=0.1)
    gamma_buttons, (schedule_menu, warmup_slider) = box.children[0], box.children[1].children
    assert box.redraws == 1 and gamma_buttons.value == "5" and len(box.figure.axes) == 3
    for redraws, gamma in enumerate(("1", "20", "2"), start=2):
        gamma_buttons.value = gamma
        assert box.redraws == redraws
        weights, shares = box.figure.axes[:2]
        g = float(gamma)
        eps, = _by_gid(weights.lines, f"eps:{gamma}")
        x0, = _by_gid(weights.lines, f"x0:{gamma}")
        for t in (0, 50, 300, 999):
            assert eps.get_ydata()[t] == pytest.approx(min(snr[t], g) / snr[t], rel=1e-5), (gamma, t)
            assert x0.get_ydata()[t] == pytest.approx(min(snr[t], g), rel=1e-5), (gamma, t)
        reference, = _by_gid(weights.lines, "x0:off")                    # unweighted: SNR_t itself
        assert reference.get_ydata()[0] == pytest.approx(snr[0], rel=1e-9)
        share, = _by_gid(shares.patches, f"share:{gamma}")
        assert np.allclose(share.get_data().values, 100 * _shares(by_t, snr, g))
        unweighted, = _by_gid(shares.patches, "share:off")
        assert np.allclose(unweighted.get_data().values, 100 * _shares(by_t, snr, None))
        assert share.get_data().values[0] < unweighted.get_data().values[0]   # the low-noise bin loses weight
    gamma_buttons.value = "off"
    assert box.redraws == 5 and not _by_gid(box.figure.axes[0].lines, "eps:off")[0].get_ydata().std()
    assert not [p for p in box.figure.axes[1].patches if p.get_gid() == "share:2"]

    lr_line, = _by_gid(box.figure.axes[2].lines, "lr")                  # cosine, 50 warm-up steps
    rates = lr_line.get_ydata()
    assert len(rates) == 300 and rates[0] == pytest.approx(1e-3 / 50) and rates[49] == pytest.approx(1e-3)
    floor = 1e-4
    assert rates[175] == pytest.approx(floor + (1e-3 - floor) * 0.5 * (1 + np.cos(np.pi * 125 / 250)))
    schedule_menu.value = "constant"
    warmup_slider.value = 0
    assert box.redraws == 7
    assert np.allclose(_by_gid(box.figure.axes[2].lines, "lr")[0].get_ydata(), 1e-3)


def test_plot_min_snr_draws_every_gamma():
    diffusion, by_t = create_diffusion(""), _fake_by_t()
    snr = _snr_of(diffusion)
    fig = widgets.plot_min_snr(by_t, diffusion, gammas=(None, 5, 1))
    weights, shares = fig.axes
    assert len(weights.lines) == 6 and len(shares.patches) == 3 and weights.get_yscale() == "log"
    assert _by_gid(weights.lines, "eps:5")[0].get_ydata()[10] == pytest.approx(min(snr[10], 5) / snr[10], rel=1e-5)
    for gamma in (None, 5, 1):
        values = _by_gid(shares.patches, f"share:{'off' if gamma is None else gamma}")[0].get_data().values
        assert np.allclose(values, 100 * _shares(by_t, snr, gamma)) and values.sum() == pytest.approx(100)


PARAMS, FULL, CKPT, GFLOPS = 1_000_000_000, 500_000_000, 40_000_000, 100.0     # 20 GB static, 0.5 / 0.04 GB per image


def _heights(ax, gid):
    return [p.get_height() for p in _by_gid(ax.patches, gid)]


def test_memory_explorer_bars_follow_batch_sharding_precision_and_checkpointing():
    box = widgets.memory_explorer(PARAMS, FULL, CKPT, GFLOPS, gpu_gb=80, batch=32, num_gpus=8)
    (batch_slider, gpus), (sharding, precision), (checkpointing, peak) = (row.children for row in box.children[:3])
    mem, comp = box.figure.axes[:2]
    assert box.redraws == 1
    assert _heights(mem, "static") == pytest.approx([20 * PARAMS / 1e9])          # DDP: all of it on every GPU
    assert _heights(mem, "activations") == pytest.approx([32 * FULL / 1e9])
    assert _by_gid(mem.patches, "activations")[0].get_y() == pytest.approx(20.0)    # stacked on the static part
    sharding.value = "FSDP"                                                        # 8 GPUs: static ÷ 8 only
    mem = box.figure.axes[0]
    assert box.redraws == 2 and _heights(mem, "static") == pytest.approx([20 * PARAMS / 8 / 1e9])
    assert _heights(mem, "activations") == pytest.approx([32 * FULL / 1e9])
    gpus.value = 64
    assert _heights(box.figure.axes[0], "static") == pytest.approx([20 * PARAMS / 64 / 1e9])
    checkpointing.value = True                                                     # the checkpointed bytes
    assert _heights(box.figure.axes[0], "activations") == pytest.approx([32 * CKPT / 1e9])
    precision.value = "bf16"
    batch_slider.value = 256
    mem, comp = box.figure.axes[:2]
    assert box.redraws == 6 and _heights(mem, "activations") == pytest.approx([256 * CKPT / 2 / 1e9])
    step_tflops = GFLOPS * 256 * 4 / 1e3                                           # 3 passes + 1 recomputed forward
    assert sum(p.get_height() for p in comp.patches) == pytest.approx(step_tflops)
    assert _heights(comp, "recompute") == pytest.approx([GFLOPS * 256 / 1e3])
    assert comp.get_xlabel().startswith("type a sustained Tflop/s")                # no speed until a peak is typed
    assert "sustained (" not in comp.get_xlabel()
    peak.value = "400"
    comp = box.figure.axes[1]
    assert box.redraws == 7 and f"{400 / (2 * step_tflops):.3g} steps/s" in comp.get_xlabel()
    assert "not a measurement" in comp.get_xlabel()
    checkpointing.value = False
    assert not [p for p in box.figure.axes[1].patches if p.get_gid() == "recompute"]
    assert sum(p.get_height() for p in box.figure.axes[1].patches) == pytest.approx(GFLOPS * 256 * 3 / 1e3)
    title = box.figure.texts[0].get_text()                                       # 0.3125 + 256 × 0.25 GB
    assert "global batch 16384: 64.3 GB per GPU, fits in 80 GB" in title
    batch_slider.value = 512                                                       # 0.3125 + 512 × 0.25 GB
    assert box.redraws == 9 and "128.3 GB per GPU, does not fit" in box.figure.texts[0].get_text()


def test_plot_memory_draws_one_stacked_bar_per_setting():
    settings = [dict(batch=32, num_gpus=8), dict(batch=32, num_gpus=8, fsdp=True), dict(batch=256, checkpointing=True)]
    fig = widgets.plot_memory(PARAMS, FULL, CKPT, GFLOPS, settings=settings, gpu_gb=80)
    mem, comp = fig.axes
    assert _heights(mem, "static") == pytest.approx([20, 20 / 8, 20])
    assert _heights(mem, "activations") == pytest.approx([32 * 0.5, 32 * 0.5, 256 * 0.04])
    assert _heights(comp, "forward") == pytest.approx([3.2, 3.2, 25.6])
    assert _heights(comp, "recompute") == pytest.approx([0, 0, 25.6])
    assert [t.get_text() for t in mem.get_xticklabels()][1] == "32/GPU × 8\nFSDP, fp32"
    assert len(widgets.plot_memory(PARAMS, FULL, CKPT, GFLOPS).axes[0].patches) == 2 * len(widgets.MEMORY_SETTINGS)


# ------------------------------------------------------------------ block diagrams

def test_block_diagrams_draw_a_skip_per_residual_add_and_the_conditioning_path():
    fig = viz.block_diagrams()
    for ax, design in zip(fig.axes, viz.BLOCK_DIAGRAMS):
        adds = viz.BLOCK_DIAGRAMS[design].count("+")
        skips = [p for p in ax.patches if p.get_gid() == "skip"]
        conditioning = [a for a in ax.texts if isinstance(a, Annotation) and a.get_gid() == "condition"]
        assert len(skips) == adds >= 2, design
        assert conditioning, design
    texts = {design: " ".join(t.get_text() for t in ax.texts) for ax, design in zip(fig.axes, viz.BLOCK_DIAGRAMS)}
    assert "c = t_emb + y_emb" in texts["adaLN-Zero"] and "α" in texts["adaLN-Zero"]
    assert "c = t_emb + y_emb" in texts["adaLN"] and "[t_emb, y_emb]" in texts["cross-attention"]
    zero = [a for a in fig.axes[3].texts if isinstance(a, Annotation) and a.get_gid() == "condition"]
    assert len(zero) == 4                                       # into (γ₁, β₁), α₁, (γ₂, β₂), α₂
    fig.canvas.draw()                                           # the artist-anchored arrows resolve
