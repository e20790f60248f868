"""ditlib.autoencoder.AutoencoderKL against diffusers' AutoencoderKL: same keys, shapes and numbers."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from safetensors.torch import load_file

from ditlib.autoencoder import AutoencoderKL
from ditlib.checkpoints import subdict
from ditlib.vae import LatentCodec, autoencoder_config
from ditlib.vae_train import vae_loss

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "checkpoints" / "fmnist-vae"
SHIPPED_CONFIG = json.loads(SHIPPED.with_suffix(".json").read_text())["vae_config"]

TINY_SD = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16, 16),
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
               layers_per_block=2, norm_num_groups=8, sample_size=32, mid_block_add_attention=True)
NO_ATTENTION = dict(in_channels=2, out_channels=3, latent_channels=3, block_out_channels=(8, 16, 32),
                    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                    layers_per_block=1, norm_num_groups=4, sample_size=16, mid_block_add_attention=False,
                    use_quant_conv=False, use_post_quant_conv=True)
CONFIGS = {"shipped": SHIPPED_CONFIG, "tiny-sd": TINY_SD, "no-attention": NO_ATTENTION}
TIGHT = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one intra-op thread is ~100× faster than two when another process holds a
    core (OpenMP threads wait on each other), and both implementations run under the same setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair(config: dict, seed: int = 0):
    """(diffusers model, ditlib model) with the diffusers model's random weights, both in eval mode."""
    torch.manual_seed(seed)
    theirs = DiffusersAutoencoderKL(**config).eval()
    ours = AutoencoderKL(**config).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


def _shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _images(config: dict, batch: int = 2, seed: int = 1) -> torch.Tensor:
    side = config.get("sample_size", 32)
    return torch.rand(batch, config["in_channels"], side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _latents(config: dict, batch: int = 2, seed: int = 2) -> torch.Tensor:
    side = config.get("sample_size", 32) // 2 ** (len(config["block_out_channels"]) - 1)
    return torch.randn(batch, config["latent_channels"], side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_state_dict_keys_and_shapes(name):
    config = CONFIGS[name]
    torch.manual_seed(0)
    ours, theirs = _shapes(AutoencoderKL(**config)), _shapes(DiffusersAutoencoderKL(**config))
    assert list(ours.items()) == list(theirs.items())          # same names, shapes and order


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_seed_same_initial_weights(name):
    """Modules are created in diffusers' order, so `build_vae(seed=...)` does not depend on the class."""
    torch.manual_seed(7)
    theirs = DiffusersAutoencoderKL(**CONFIGS[name]).state_dict()
    torch.manual_seed(7)
    ours = AutoencoderKL(**CONFIGS[name]).state_dict()
    for key, tensor in theirs.items():
        assert torch.equal(ours[key], tensor), key


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_encode_and_decode_match_diffusers(name):
    config = CONFIGS[name]
    theirs, ours = _pair(config)
    x = _images(config)
    q_theirs, q_ours = theirs.encode(x).latent_dist, ours.encode(x).latent_dist
    c, f = config["latent_channels"], 2 ** (len(config["block_out_channels"]) - 1)
    assert q_ours.parameters.shape == (2, 2 * c, x.shape[-1] // f, x.shape[-1] // f)
    torch.testing.assert_close(q_ours.parameters, q_theirs.parameters, **TIGHT)
    torch.testing.assert_close(q_ours.mean, q_theirs.mean, **TIGHT)
    torch.testing.assert_close(q_ours.std, q_theirs.std, **TIGHT)
    torch.testing.assert_close(q_ours.sample(torch.Generator().manual_seed(3)),
                               q_theirs.sample(torch.Generator().manual_seed(3)), **TIGHT)
    z = _latents(config)
    out = ours.decode(z).sample
    assert out.shape == (2, config["out_channels"], z.shape[-1] * f, z.shape[-1] * f)
    torch.testing.assert_close(out, theirs.decode(z).sample, **TIGHT)
    torch.testing.assert_close(ours(x).sample, theirs(x).sample, **TIGHT)


def test_shipped_weights_decode_like_diffusers():
    state = subdict(load_file(str(SHIPPED.with_suffix(".safetensors"))), "vae")
    assert state, "the shipped checkpoint stores its tensors under 'vae.'"
    theirs = DiffusersAutoencoderKL(**SHIPPED_CONFIG).eval()
    ours = AutoencoderKL(**SHIPPED_CONFIG).eval()
    theirs.load_state_dict(state, strict=True)
    ours.load_state_dict(state, strict=True)
    z = _latents(SHIPPED_CONFIG, batch=4)
    x = _images(SHIPPED_CONFIG, batch=4)
    with torch.no_grad():
        decoded = ours.decode(z).sample
        assert decoded.abs().max() > 0.1                  # real weights, not a degenerate output
        torch.testing.assert_close(decoded, theirs.decode(z).sample, **TIGHT)
        torch.testing.assert_close(ours.encode(x).latent_dist.parameters,
                                   theirs.encode(x).latent_dist.parameters, **TIGHT)
    # and through ditlib's codec, as `python -m ditlib sample` decodes
    scale = json.loads(SHIPPED.with_suffix(".json").read_text())["scale_factor"]
    codec_ours, codec_theirs = LatentCodec(ours, scale, 32), LatentCodec(theirs, scale, 32)
    assert codec_ours.latent_shape == codec_theirs.latent_shape == (4, 8, 8)
    torch.testing.assert_close(codec_ours.decode(z), codec_theirs.decode(z), **TIGHT)


def test_training_loss_and_gradients_match_diffusers():
    theirs, ours = _pair(TINY_SD)
    x = _images(TINY_SD)
    torch.manual_seed(5)
    loss_theirs = vae_loss(theirs.train(), x, kl_weight=1e-4)
    torch.manual_seed(5)
    loss_ours = vae_loss(ours.train(), x, kl_weight=1e-4)
    for key in ("loss", "rec", "kl", "l1"):
        torch.testing.assert_close(loss_ours[key], loss_theirs[key], atol=1e-4, rtol=1e-5)
    loss_theirs["loss"].backward()
    loss_ours["loss"].backward()
    grads_theirs = {name: p.grad for name, p in theirs.named_parameters()}
    # some gradients are ~0 in exact arithmetic (biases right before a GroupNorm), so float error is
    # measured against the largest gradient, not each tensor's own
    scale = max(g.abs().max().item() for g in grads_theirs.values())
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, grads_theirs[name], atol=1e-5 * scale, rtol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_config_serialises_like_diffusers():
    theirs, ours = _pair(SHIPPED_CONFIG)
    assert autoencoder_config(ours) == autoencoder_config(theirs) == SHIPPED_CONFIG
    assert json.dumps(autoencoder_config(ours)) == json.dumps(autoencoder_config(theirs))
    assert ours.config.to_dict() == SHIPPED_CONFIG
    assert ours.config.in_channels == 1 and ours.config.latent_channels == 4
    assert ours.config.block_out_channels == (32, 64, 64)
    ours.register_to_config(scaling_factor=0.25)
    theirs.register_to_config(scaling_factor=0.25)
    assert ours.config.scaling_factor == 0.25 and ours.config["scaling_factor"] == 0.25
    assert autoencoder_config(ours) == autoencoder_config(theirs)
    with pytest.raises(AttributeError):
        ours.config.scaling_factor = 1.0
    with pytest.raises(ValueError, match="latent_channels"):
        ours.register_to_config(latent_channels=8)
    with pytest.raises(TypeError, match="bogus"):
        ours.register_to_config(bogus=1)
    # from_config takes a checkpoint's vae_config, a model's config or a diffusers config.json's contents
    for source in (SHIPPED_CONFIG, ours.config, {"_class_name": "AutoencoderKL", **dict(theirs.config)}):
        assert _shapes(AutoencoderKL.from_config(source)) == _shapes(theirs)


def test_unsupported_block_types_and_unknown_keys_are_refused():
    with pytest.raises(ValueError, match="AttnDownEncoderBlock2D"):
        AutoencoderKL(**dict(TINY_SD, down_block_types=("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",)))
    with pytest.raises(ValueError, match="AttnUpDecoderBlock2D"):
        AutoencoderKL(**dict(TINY_SD, up_block_types=("AttnUpDecoderBlock2D",) * 4))
    with pytest.raises(ValueError, match="act_fn"):
        AutoencoderKL(**dict(TINY_SD, act_fn="gelu"))
    with pytest.raises(ValueError, match="entries"):
        AutoencoderKL(**dict(TINY_SD, block_out_channels=(8, 16)))
    with pytest.raises(TypeError, match="norm_type.*spatial|spatial.*norm_type") as err:
        AutoencoderKL(**dict(TINY_SD, norm_type="group", spatial=True))
    assert "norm_type" in str(err.value) and "spatial" in str(err.value)
    with pytest.raises(TypeError, match="not_a_key"):
        AutoencoderKL.from_config({**SHIPPED_CONFIG, "not_a_key": 1})


def test_no_diffusers_or_dynamo_import():
    code = (
        "import sys, json, torch, ditlib.autoencoder as a\n"
        "torch.set_num_threads(1)\n"
        "from safetensors.torch import load_file\n"
        f"meta = json.load(open({str(SHIPPED.with_suffix('.json'))!r}))\n"
        "vae = a.AutoencoderKL.from_config(meta['vae_config']).eval()\n"
        f"state = load_file({str(SHIPPED.with_suffix('.safetensors'))!r})\n"
        "vae.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith('vae.')}, strict=True)\n"
        "with torch.no_grad():\n"
        "    x = vae.decode(torch.randn(2, 4, 8, 8)).sample\n"
        "    q = vae.encode(x).latent_dist\n"
        "assert x.shape == (2, 1, 32, 32) and q.parameters.shape == (2, 8, 8, 8)\n"
        "print('diffusers' in sys.modules, 'torch._dynamo' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"], result.stdout


def test_posterior_clamps_the_log_variance_like_diffusers():
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution as Theirs

    from ditlib.autoencoder import DiagonalGaussianDistribution as Ours

    moments = torch.cat([torch.randn(2, 4, 3, 3), torch.linspace(-60, 60, 72).reshape(2, 4, 3, 3)], dim=1)
    ours, theirs = Ours(moments), Theirs(moments)
    assert ours.parameters is moments
    for name in ("mean", "logvar", "std", "var"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), rtol=1e-6, atol=0, msg=name)
    assert ours.logvar.min() == -30.0 and ours.logvar.max() == 20.0
    torch.testing.assert_close(ours.kl(), theirs.kl(), rtol=1e-6, atol=0)
