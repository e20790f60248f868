"""Specification of the U-Net baseline (ditlib.unet): diffusers' UNet2DModel behind DiT's interface, counted in the
paper's Gflops, trained, resumed, saved, loaded and sampled by the same code as the DiTs."""
import json
import math

import pytest
import torch
import torch.nn as nn

from ditlib.cli import main as cli_main
from ditlib.configs import TRAIN_CONFIGS, build_backbone, get_config, model_config_from_dict
from ditlib.errors import ConfigError
from ditlib.flops import counted_gflops, gflops
from ditlib.models import DiT, DiTConfig
from ditlib.sample import Pretrained, load_model, sample_images
from ditlib.train import train
from ditlib.unet import UNET_MATCHED_DIT, UNet, UNetConfig, UNet_models

from test_train import SmallDataset


def tiny(**fields) -> UNet:
    """A U-Net small enough to train in a test: 16×16×1 inputs, width 8, two levels."""
    torch.manual_seed(0)
    return UNet(UNetConfig(**{**dict(input_size=16, in_channels=1, width=8, channel_mult=(1, 2),
                                     attention_levels=(False, True), layers_per_block=1, heads=2), **fields}))


def inputs(n=4, size=16, channels=1):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(n, channels, size, size, generator=g), torch.randint(0, 1000, (n,), generator=g),
            torch.randint(0, 10, (n,), generator=g))


def test_the_unet_maps_noise_and_labels_to_eps_and_sigma_channels():
    model = tiny().eval()
    x, t, y = inputs()
    out = model(x, t, y)
    assert out.shape == (4, 2, 16, 16)                          # ε and the Σ values: 2·C channels (learn_sigma)
    assert tiny(learn_sigma=False).eval()(x, t, y).shape == (4, 1, 16, 16)
    assert not torch.allclose(out, model(x, t, (y + 1) % 10))  # the class reaches the output
    assert not torch.allclose(out, model(x, (t + 500) % 1000, y))   # and so does the timestep


def test_the_unet_is_diffusers_unet2dmodel_with_a_null_class_row():
    from diffusers import UNet2DModel

    model = tiny()
    assert isinstance(model.unet, UNet2DModel)
    assert model.unet.class_embedding.num_embeddings == 11     # 10 classes + ∅ for guidance
    assert model.has_null_class and not tiny(class_dropout_prob=0.0).has_null_class
    assert model.unet.config.resnet_time_scale_shift == "scale_shift"   # ADM's AdaGN


def test_dropped_labels_are_the_null_class():
    model = tiny().eval()
    x, t, y = inputs()
    null = torch.full_like(y, 10)
    drop_all = torch.ones_like(y)
    assert torch.equal(model(x, t, y, force_drop_ids=drop_all), model(x, t, null))
    keep = torch.zeros_like(y)
    assert torch.equal(model(x, t, y, force_drop_ids=keep), model(x, t, y))
    model.train()
    model.class_dropout_prob = 1.0                              # in training, labels drop at random
    torch.manual_seed(0)
    dropped = model(x, t, y)
    model.eval()
    assert torch.allclose(dropped, model(x, t, null), atol=1e-6)


def test_guided_forward_mixes_the_two_halves_like_dit():
    model = tiny().eval()
    x, t, y = inputs(3)
    cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, 10))
    out = model.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, 10)]), 4.0)
    assert torch.allclose(out[:3, :1], uncond[:, :1] + 4.0 * (cond[:, :1] - uncond[:, :1]), atol=1e-5)
    assert torch.allclose(out[:3, 1:], cond[:, 1:], atol=1e-6)   # Σ passes through unguided
    with pytest.raises(ConfigError, match="even batch"):
        model.forward_with_cfg(x, t, y, 2.0)


@pytest.mark.parametrize("fields, message", [
    (dict(attention_levels=(False,)), "one per level"),
    (dict(input_size=10, channel_mult=(1, 2, 2), attention_levels=(False, True, True)), "divisible by 4"),
    (dict(width=10), "groups of 4"),
    (dict(num_classes=0), "at least 1"),
])
def test_bad_unet_configs_say_what_is_wrong(fields, message):
    with pytest.raises(ConfigError, match=message):
        UNetConfig(**{**dict(input_size=16, width=8, channel_mult=(1, 2), attention_levels=(False, True)), **fields})


def test_inputs_of_the_wrong_shape_or_labels_are_refused():
    model = tiny()
    x, t, y = inputs()
    with pytest.raises(ConfigError, match="shape"):
        model.check_inputs(torch.zeros(4, 3, 16, 16), t, y)
    with pytest.raises(ConfigError, match="class labels"):
        model.check_inputs(x, t, y + 20)


def independent_unet_flops(model: UNet) -> int:
    """Multiply-adds of one forward pass counted by module hooks, independently of FlopCounterMode: every Conv2d
    and Linear by its output size, every GroupNorm/LayerNorm by its input size, every attention layer by its two
    T×T×C matmuls."""
    total = [0]

    def hook(module, args, kwargs, out):
        x = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total[0] += out.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total[0] += out.numel() * module.in_features
        elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
            total[0] += x.numel()
        elif type(module).__name__ == "Attention":
            tokens = x.shape[-1] * x.shape[-2] if x.ndim == 4 else x.shape[1]
            channels = module.inner_dim
            total[0] += 2 * tokens * tokens * channels

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules()]
    x, t, y = inputs(1, model.input_size, model.in_channels)
    with torch.no_grad():
        model.eval()(x, t, y)
    for h in handles:
        h.remove()
    return total[0]


@pytest.mark.parametrize("name", list(UNet_models))
def test_unet_gflops_are_counted_by_the_papers_convention(name):
    model = UNet_models[name]()
    assert counted_gflops(model) * 1e9 == pytest.approx(independent_unet_flops(model), rel=1e-9)
    assert gflops(name) == pytest.approx(counted_gflops(model))


@pytest.mark.parametrize("unet, dit", list(UNET_MATCHED_DIT.items()))
def test_each_unet_config_is_matched_within_15_percent_to_its_dit(unet, dit):
    u = counted_gflops(get_config(f"fmnist-latent-{unet}").model_config())
    with torch.device("meta"):
        d = gflops(DiT(get_config(f"fmnist-latent-{dit}").dit_config()))   # the analytic count of Table 4
    assert abs(u / d - 1) <= 0.15, f"{unet}: {u:.4f} Gflops against {dit}: {d:.4f}"


def test_unet_training_configs_use_the_defaults_recipe():
    default = get_config("fmnist-latent-DiT-T/2")
    for name in UNet_models:
        config = TRAIN_CONFIGS[f"fmnist-latent-{name}"]
        assert config.family == "U-Net" and isinstance(config.model_config(), UNetConfig)
        assert config.replace(name=default.name, model=default.model, notes=default.notes) == default


def test_model_configs_round_trip_through_a_checkpoint_dict():
    unet_config = get_config("fmnist-latent-UNet-M").model_config()
    stored = json.loads(json.dumps(unet_config.to_dict()))
    assert stored["family"] == "U-Net" and model_config_from_dict(stored) == unet_config
    dit_config = get_config("fmnist-latent-DiT-T/2").model_config()
    assert isinstance(model_config_from_dict(json.loads(json.dumps(dit_config.to_dict()))), DiTConfig)
    assert isinstance(build_backbone(DiTConfig(input_size=8, depth=1, hidden_size=32, num_heads=2)), DiT)


@pytest.fixture(scope="module")
def unet_config():
    """A pixel-space U-Net config that trains in seconds (the latent one would first encode the data set)."""
    return get_config("fmnist-latent-UNet-S").replace(
        name="test-unet", vae=None, image_size=32, in_channels=1, batch_size=8, max_steps=6, ckpt_every=3,
        log_every=3, precision="fp32", compile=False, warmup_steps=2, sample_steps=5)


def test_a_unet_trains_and_resumes_bit_exactly(tmp_path, unet_config):
    data = SmallDataset()
    train(unet_config, tmp_path / "straight", progress=False, dataset=data)
    train(unet_config, tmp_path / "split", max_steps=3, progress=False, dataset=data)
    train(unet_config, tmp_path / "split", resume=True, progress=False, dataset=data)
    a, _ = load_model(tmp_path / "straight" / "final")
    b, meta = load_model(tmp_path / "split" / "final")
    assert isinstance(a, UNet) and meta["model_config"]["family"] == "U-Net"
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), f"{name} differs after resuming"
    rows = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows)


def test_a_trained_unet_samples_and_loads_like_a_dit(tmp_path, unet_config, capsys):
    train(unet_config, tmp_path / "run", progress=False, dataset=SmallDataset())
    pretrained = Pretrained.load(str(tmp_path / "run" / "final"))
    images = pretrained.sample([0, 1, 2], num_sampling_steps=4, sampler="ddim", progress=False)
    assert images.shape == (3, 1, 32, 32) and images.abs().max() <= 1
    assert pretrained.train_config["sample_cfg_scale"] == 3.0        # the default's guidance, stored with it
    unguided = pretrained.sample([0, 1, 2], num_sampling_steps=4, sampler="ddim", cfg_scale=1.0, progress=False)
    assert not torch.allclose(unguided, images)
    by_hand = sample_images(pretrained.model, [0, 1, 2], num_sampling_steps=4, sampler="ddim", cfg_scale=3.0,
                            guidance_interval=(0, 300), clip_denoised=True, progress=False)
    assert torch.allclose(by_hand.clamp(-1, 1), images, atol=1e-5)
    out = tmp_path / "grid.png"
    assert cli_main(["sample", "--ckpt", str(tmp_path / "run" / "final"), "--num-sampling-steps", "3",
                     "--sampler", "ddim", "--classes", "0", "1", "--per-class", "1", "--out", str(out)]) == 0
    assert out.exists()


def test_configs_lists_the_unets_beside_their_dits(capsys):
    assert cli_main(["configs"]) == 0
    text = capsys.readouterr().out
    for unet, dit in UNET_MATCHED_DIT.items():
        assert f"fmnist-latent-{unet}" in text
        row = next(line for line in text.splitlines() if line.strip().startswith(unet + " "))
        assert dit in row
