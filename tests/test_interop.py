"""Checkpoints that move: official DiT files (read without running code) and diffusers' DiT, both ways."""
import argparse
import math
import os

import pytest
import torch

import ditlib.layers as layers
from ditlib.checkpoints import CheckpointError
from ditlib.sample import infer_dit_config, load_official_dit
from ditlib.interop import diffusers_scheduler, from_diffusers, to_diffusers, to_diffusers_pipeline
from ditlib.models import build_model


def _random_dit(num_classes=10, **kwargs):
    """A small adaLN-Zero DiT with every weight random (std 0.02), so no branch is zero."""
    torch.manual_seed(0)
    model = build_model("DiT-debug/4", input_size=16, in_channels=4, num_classes=num_classes, **kwargs)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    return model.eval()


def _inputs(n=8, num_classes=10):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(n, 4, 16, 16, generator=g), torch.linspace(0, 999, n).long(),
            torch.arange(n) % num_classes)


# ----------------------------------------------------------------- official checkpoints

def test_official_layout_state_dict_builds_the_right_config(tmp_path):
    model = _random_dit(num_classes=1000)
    torch.save(model.state_dict(), tmp_path / "DiT-debug-4.pt")
    loaded = load_official_dit(tmp_path / "DiT-debug-4.pt")
    assert loaded.config.to_dict() == model.config.to_dict() and not loaded.training
    x, t, y = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))


def test_training_checkpoint_uses_the_ema_weights_and_may_name_its_config(tmp_path):
    model, ema = _random_dit(), _random_dit(learn_sigma=False)
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": {"state": {}},
                "args": argparse.Namespace(model="DiT-debug/4", global_seed=0)}, tmp_path / "0400000.pt")
    loaded = load_official_dit(tmp_path / "0400000.pt", model_name="DiT-debug/4")
    assert loaded.config.to_dict() == ema.config.to_dict() and loaded.learn_sigma is False
    with pytest.raises(CheckpointError, match="not DiT-XL/2"):
        load_official_dit(tmp_path / "0400000.pt", model_name="DiT-XL/2")


@pytest.mark.parametrize("name,input_size", [("DiT-XL/2", 32), ("DiT-XL/2", 64), ("DiT-B/4", 32), ("DiT-S/8", 32)])
def test_paper_configs_are_inferred_from_shapes_alone(name, input_size):
    with torch.device("meta"):
        model = build_model(name, input_size=input_size)
    assert infer_dit_config(model.state_dict()) == model.config


class _Payload:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_a_pickle_with_a_code_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    state = {k: v for k, v in _random_dit(num_classes=1000).state_dict().items()}
    state["y_embedder.extra"] = _Payload(marker)
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_official_dit(tmp_path / "evil.pt")
    assert not marker.exists()
    # The payload is real: a full unpickle (what load_official_dit never does) runs it.
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


# ----------------------------------------------------------------- diffusers

def test_ditlib_to_diffusers_and_back_is_exact():
    for model in (_random_dit(), _random_dit(learn_sigma=False)):
        back = from_diffusers(to_diffusers(model))
        assert back.config.to_dict() == model.config.to_dict()
        ours, theirs = model.state_dict(), back.state_dict()
        assert set(ours) == set(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def _diffusers_timestep_embedding(t, dim, max_period=10000.0):
    """diffusers' Timesteps(flip_sin_to_cos=True, downscale_freq_shift=1): frequencies over (half − 1)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1))
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def test_diffusers_output_agrees_up_to_the_documented_timestep_features(monkeypatch):
    model = _random_dit()
    transformer = to_diffusers(model)
    x, t, y = _inputs()
    with torch.no_grad():
        theirs = transformer(x, timestep=t, class_labels=y).sample
        ours = model(x, t, y)
        # The only difference left is diffusers' timestep frequencies: small, nonzero, and gone when swapped in.
        assert 0 < (ours - theirs).abs().max() < 0.02 * ours.abs().max()
        monkeypatch.setattr(layers, "timestep_embedding", _diffusers_timestep_embedding)
        assert (model(x, t, y) - theirs).abs().max() < 1e-5


def test_per_block_embedders_that_differ_are_refused():
    transformer = to_diffusers(_random_dit())
    with torch.no_grad():
        transformer.transformer_blocks[1].norm1.emb.class_embedder.embedding_table.weight.add_(1.0)
    with pytest.raises(ValueError, match="per-block embedders"):
        from_diffusers(transformer)


def test_pipeline_samples_with_the_paper_schedule():
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=4, sample_size=32)
    model = _random_dit(num_classes=1000)     # DiTPipeline's guidance hard-codes the null class 1000
    for scheduler in ("ddim", "dpm"):
        pipe = to_diffusers_pipeline(model, vae, scheduler=scheduler)
        out = pipe(class_labels=[1, 2], guidance_scale=1.5, num_inference_steps=2, output_type="np",
                   generator=torch.Generator().manual_seed(0)).images
        assert out.shape == (2, 32, 32, 3)
    betas = diffusers_scheduler("ddim").betas
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02) and len(betas) == 1000
