"""Specification of ditlib.vae: the SD VAE of the paper (loaded, or a clear message offline), the small
Fashion-MNIST VAE (shapes, training command, shipped weights), and the latent scale factor."""
import json
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from ditlib import vae as vae_lib
from ditlib.data import FashionMNIST
from ditlib.vae import (SD_VAE_SCALE_FACTOR, LatentCodec, VAEWeightsNotFound, estimate_scale_factor, load_sd_vae,
                        load_vae, reconstruction_psnr, save_vae)
from ditlib.vae_train import build_vae, get_vae_config, train_vae

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "data" / "checkpoints" / "fmnist-vae"


@pytest.fixture(scope="module")
def test_images():
    return FashionMNIST("test").get_batch(torch.arange(2048))[0]       # (2048, 1, 32, 32) in [-1, 1]


@pytest.fixture()
def tiny_codec():
    return LatentCodec(build_vae("vae-debug", seed=0), scale_factor=2.0, image_size=32)


# --- the small VAE's shapes --------------------------------------------------------------

def test_fmnist_vae_compresses_32x32x1_images_4x_into_8x8x4_latents(test_images):
    vae = build_vae(get_vae_config("fmnist-vae-f4"), seed=0)
    codec = LatentCodec(vae, 1.0, image_size=32)
    q = codec.encode(test_images[:2])
    assert q.mean.shape == q.std.shape == (2, 4, 8, 8) == (2, *codec.latent_shape)
    assert codec.latent_shape[0] * codec.latent_shape[1] * codec.latent_shape[2] * 4 == 32 * 32
    assert codec.decode(q.mean).shape == (2, 1, 32, 32)
    assert sum(p.numel() for p in vae.parameters()) < 1.25e6            # < 5 MB of float32


def test_encode_sample_is_scale_times_a_posterior_sample_and_decode_undoes_the_scale(tiny_codec, test_images):
    x = test_images[:4]
    q = tiny_codec.encode(x)
    assert (q.std > 0).all()
    z = tiny_codec.encode_sample(x, torch.Generator().manual_seed(3))
    eps = torch.randn(q.mean.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(z, 2.0 * (q.mean + q.std * eps))
    with torch.no_grad():
        expected = tiny_codec.vae.decode(q.mean).sample.clamp(-1, 1)
    torch.testing.assert_close(tiny_codec.decode(2.0 * q.mean), expected)
    assert tiny_codec.decode(z).abs().max() <= 1.0


def test_estimated_scale_factor_gives_unit_variance_latents(tiny_codec):
    images = FashionMNIST("test")
    tiny_codec.scale_factor = estimate_scale_factor(tiny_codec, images, num_images=512, seed=1)
    z = tiny_codec.encode_sample(images.get_batch(torch.arange(512, 1024))[0], torch.Generator().manual_seed(0))
    assert abs(z.var().item() - 1.0) < 0.1


def test_saved_vae_loads_with_its_scale_factor_and_weights_hash(tiny_codec, tmp_path, test_images):
    meta = {"vae_config": vae_lib.autoencoder_config(tiny_codec.vae), "scale_factor": 2.0, "image_size": 32}
    stem = save_vae(tmp_path / "vae", tiny_codec.vae, meta)
    loaded = load_vae(stem.with_suffix(".json"))
    assert loaded.scale_factor == 2.0 and loaded.latent_shape == (4, 8, 8)
    assert loaded.fingerprint == json.loads(stem.with_suffix(".json").read_text())["weights_sha256"]
    torch.testing.assert_close(loaded.encode(test_images[:2]).mean, tiny_codec.encode(test_images[:2]).mean)


def test_train_vae_command_writes_weights_scale_and_manifest(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ditlib", "train-vae", "--config", "vae-debug", "--max-steps", "3",
                          "--out", str(tmp_path / "run"), "--export", str(tmp_path / "shipped")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "shipped.manifest.json").read_text())
    assert manifest["steps"] == 3 and "train-vae --config vae-debug" in manifest["command"]
    codec = load_vae(tmp_path / "shipped")
    assert codec.scale_factor == pytest.approx(manifest["scale_factor"]) and codec.fingerprint == manifest["weights_sha256"]


# --- the shipped Fashion-MNIST VAE --------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    return load_vae("fmnist-vae")


def test_shipped_vae_scale_factor_gives_unit_variance_on_unseen_images(shipped, test_images):
    z = shipped.encode_sample(test_images, torch.Generator().manual_seed(0))   # 2048 test images, (B, 4, 8, 8)
    assert abs(z.var().item() - 1.0) < 0.1
    manifest = json.loads(SHIPPED.with_suffix(".manifest.json").read_text())
    assert shipped.scale_factor == pytest.approx(manifest["scale_factor"])
    assert shipped.scale_factor != SD_VAE_SCALE_FACTOR                            # measured, not borrowed


def test_shipped_vae_reconstructs_test_images_well(shipped):
    assert reconstruction_psnr(shipped, 500) > 24.0                  # dB; the manifest records all 10000


def test_shipped_vae_reconstructions_are_close_to_the_fid_floor(shipped):
    """Issue 13's bar: rFID-FMNIST <= 1.5 on the first 1,000 test images (the train-vs-test floor there is 0.63)."""
    assert vae_lib.reconstruction_fid(shipped, n=1000) < 1.5


def test_shipped_vae_is_small_and_its_manifest_matches_its_weights():
    manifest = json.loads(SHIPPED.with_suffix(".manifest.json").read_text())
    meta = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert SHIPPED.with_suffix(".safetensors").stat().st_size < 5e6
    assert manifest["weights_sha256"] == meta["weights_sha256"]
    data = json.loads((ROOT / "data" / "fashion-mnist" / "MANIFEST.json").read_text())["files"]
    assert manifest["data"]["sha256"]["train-images-idx3-ubyte.gz"] == data["train-images-idx3-ubyte.gz"]["sha256"]


# --- the Stable Diffusion VAE of the paper -------------------------------------------------

def test_sd_vae_offline_error_says_how_to_get_the_weights_and_is_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(VAEWeightsNotFound) as err:
        load_sd_vae("stabilityai/sd-vae-ft-ema", cache_dir=tmp_path)
    assert time.perf_counter() - start < 5.0
    message = str(err.value)
    assert "HF_HUB_OFFLINE" in message
    assert "hf download stabilityai/sd-vae-ft-ema --local-dir sd-vae-ft-ema" in message
    assert "AutoencoderKL.from_pretrained('stabilityai/sd-vae-ft-ema').save_pretrained('sd-vae-ft-ema')" in message
    assert "load_vae('path/to/sd-vae-ft-ema')" in message


def test_sd_vae_without_a_connection_fails_fast_with_the_same_advice(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(vae_lib, "_hub_reachable", lambda timeout_s: False)
    with pytest.raises(VAEWeightsNotFound, match="did not answer within 3 s") as err:
        load_sd_vae("stabilityai/sd-vae-ft-mse", cache_dir=tmp_path)
    assert "hf download stabilityai/sd-vae-ft-mse" in str(err.value)


def test_a_missing_local_vae_folder_is_named(tmp_path):
    with pytest.raises(VAEWeightsNotFound, match="no VAE folder at"):
        load_vae(tmp_path / "no" / "such-vae")


def test_sd_vae_architecture_from_a_local_folder_gives_32x32x4_latents_at_scale_0_18215(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)     # the SD VAE's layout (4 blocks: f = 8, 4 latent channels) at a tiny width
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), norm_num_groups=8,
                  latent_channels=4, layers_per_block=1).save_pretrained(tmp_path / "sd-vae")
    codec = load_vae(tmp_path / "sd-vae")
    assert codec.scale_factor == SD_VAE_SCALE_FACTOR and codec.latent_shape == (4, 32, 32)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    z = codec.encode_sample(x)
    assert z.shape == (1, 4, 32, 32) and codec.decode(z).shape == (1, 3, 256, 256)


def test_the_perceptual_term_matches_features_and_is_off_by_default(test_images):
    """L gains w_P·‖φ(x) − φ(x̂)‖² only when asked; its gradient reaches the decoder, never φ."""
    from ditlib.vae_train import vae_loss

    torch.manual_seed(0)
    vae = build_vae("vae-debug", seed=0)
    phi = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 16)).requires_grad_(False)
    x = test_images[:4]
    torch.manual_seed(1)
    plain = vae_loss(vae, x, 1e-4)
    torch.manual_seed(1)
    with_p = vae_loss(vae, x, 1e-4, features=phi, perceptual_weight=2.0)
    assert plain["perceptual"].item() == 0.0 and with_p["perceptual"].item() > 0
    torch.testing.assert_close(with_p["loss"], plain["loss"] + 2.0 * with_p["perceptual"])
    with_p["loss"].backward()
    assert vae.decoder.conv_out.weight.grad.abs().sum() > 0 and all(p.grad is None for p in phi.parameters())
    with pytest.raises(ValueError, match="needs `features`"):
        vae_loss(vae, x, 1e-4, perceptual_weight=1.0)


def test_train_vae_with_the_perceptual_term_runs(tmp_path):
    summary = train_vae(get_vae_config("vae-debug").replace(perceptual_weight=1.0), tmp_path / "p", max_steps=2,
                        progress=False)
    rows = [json.loads(line) for line in (tmp_path / "p" / "log.jsonl").read_text().splitlines()]
    assert summary["steps"] == 2 and rows and rows[-1]["perceptual"] > 0
