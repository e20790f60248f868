"""The paper's configs and their data path: ImageNet asked for by name, VAE encoding batch by batch, loader workers."""
import numpy as np
import pytest
import torch

from ditlib.checkpoints import load_checkpoint
from ditlib.configs import TRAIN_CONFIGS, get_config
from ditlib.data import FashionMNIST, StepBatches, infinite_batches
from ditlib.train import train


def test_paper_configs_hold_the_papers_hyperparameters():
    for size in ("S", "B", "L", "XL"):
        for patch in (2, 4, 8):
            for resolution in (256, 512):
                c = get_config(f"imagenet{resolution}-DiT-{size}/{patch}")
                assert (c.model, c.image_size, c.in_channels, c.num_classes) == (f"DiT-{size}/{patch}", resolution // 8, 4, 1000)
                assert (c.batch_size, c.lr, c.weight_decay, c.ema_decay, c.class_dropout_prob, c.hflip) == \
                    (256, 1e-4, 0.0, 0.9999, 0.1, True)
                assert c.vae == "stabilityai/sd-vae-ft-ema" and c.learn_sigma and c.noise_schedule == "linear"
    assert sum(name.startswith("imagenet") for name in TRAIN_CONFIGS) == 24


def test_worker_processes_load_the_very_batches_of_the_main_process():
    dataset = torch.utils.data.TensorDataset(torch.randn(40, 1, 4, 4), torch.arange(40))
    loader = torch.utils.data.DataLoader(StepBatches(dataset, 8, seed=1, hflip=True), batch_size=None,
                                         sampler=range(3, 9), num_workers=2)
    stream = infinite_batches(dataset, 8, seed=1, start_step=3, hflip=True)
    for x, y in loader:
        x0, y0 = next(stream)
        assert torch.equal(x, x0) and torch.equal(y, y0)


def test_paper_configs_ask_for_imagenet_and_latent_configs_can_encode_every_batch(tmp_path):
    with pytest.raises(ValueError, match="--data-path"):
        train(get_config("imagenet256-DiT-XL/2"), tmp_path / "xl", max_steps=1, progress=False)
    # The paper's data path at small scale: images encoded by the VAE batch by batch (cache_latents=False).
    config = get_config("fmnist-latent-DiT-T/2").replace(model="DiT-debug/2", cache_latents=False, batch_size=8)
    summary = train(config, tmp_path / "online", max_steps=2, progress=False, dataset=FashionMNIST("test"))
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])


def test_checkpointing_and_loader_workers_change_speed_and_memory_not_results(tmp_path):
    data = FashionMNIST("test")
    config = get_config("debug").replace(ckpt_every=100)
    variants = {"plain": {}, "checkpointed": {"grad_checkpointing": True}, "workers": {"num_workers": 2}}
    for name, changes in variants.items():
        train(config.replace(**changes), tmp_path / name, max_steps=3, progress=False, dataset=data)
    plain, _ = load_checkpoint(tmp_path / "plain" / "final")
    for name in ("checkpointed", "workers"):
        other, _ = load_checkpoint(tmp_path / name / "final")
        assert all(torch.allclose(plain[k], other[k], atol=1e-6) for k in plain), name
