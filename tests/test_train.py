"""Specification of training, checkpoints, resume and sampling (ditlib.train, ditlib.checkpoints, ditlib.sample)."""
import json
from pathlib import Path

import pytest
import torch

from ditlib import checkpoints as ckpt
from ditlib.sample import load_model
from ditlib.configs import DEFAULT_CONFIG, TRAIN_CONFIGS, build_backbone, get_config
from ditlib.data import FashionMNIST
from ditlib.diffusion import create_diffusion
from ditlib.models import build_model
from ditlib.sample import sample_images, save_grid, save_npz, to_uint8
from ditlib.train import ema_decay_at, list_checkpoints, list_snapshots, lr_at, read_log, train, update_ema

ROOT = Path(__file__).resolve().parent.parent


class SmallDataset(torch.utils.data.Dataset):
    """The first 64 Fashion-MNIST test images, with the in-memory fast path of ditlib.data."""

    def __init__(self):
        full = FashionMNIST("test")
        self.images, self.labels = full.images[:64], full.labels[:64]
        self.num_classes, self.in_channels = 10, 1
        self._full = full

    def __len__(self):
        return len(self.labels)

    def get_batch(self, idx):
        x, y = self._full.get_batch(idx)
        return x, y

    def __getitem__(self, i):
        return self._full[i]


@pytest.fixture(scope="module")
def small_data():
    return SmallDataset()


@pytest.fixture()
def debug_config():
    return get_config("debug").replace(batch_size=8, ckpt_every=5, log_every=5, max_steps=10)


def test_training_drives_the_loss_down_on_a_tiny_batch():
    torch.manual_seed(0)
    x0 = FashionMNIST("test").get_batch(torch.arange(8))[0]
    y = torch.arange(8) % 10
    model = build_model("DiT-debug/8", input_size=32, in_channels=1, num_classes=10)
    diffusion = create_diffusion("")
    t_eval = torch.tensor([50, 150, 300, 450, 600, 750, 850, 950])
    noise_eval = torch.randn_like(x0)

    def eval_loss():
        model.eval()
        with torch.no_grad():
            return diffusion.training_losses(model, x0, t_eval, {"y": y}, noise=noise_eval)["mse"].mean().item()

    before = eval_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        t = torch.randint(0, 1000, (8,))
        loss = diffusion.training_losses(model, x0, t, {"y": y})["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert before > 0.9                 # an untrained (zero-output) model predicts ε = 0: mse ≈ E[ε²] = 1
    assert after < 0.75 * before, f"loss {before:.3f} -> {after:.3f}"


def test_ema_update_moves_towards_the_model():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.detach().clone()
    update_ema(a, b, decay=0.75)
    assert torch.allclose(a.weight, 0.75 * before + 0.25 * b.weight)


def test_ema_warmup_starts_fast_and_reaches_the_configured_decay():
    cfg = get_config(DEFAULT_CONFIG)
    assert ema_decay_at(cfg, 0) == pytest.approx(0.1)
    assert ema_decay_at(cfg, 100_000) == cfg.ema_decay
    assert ema_decay_at(cfg.replace(ema_warmup=False), 0) == cfg.ema_decay


def test_lr_schedules_warm_up_then_hold_or_follow_a_cosine():
    cfg = get_config("debug").replace(lr=1e-3, warmup_steps=10, max_steps=110, final_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(1e-4)                     # warm-up: (step + 1) / warmup_steps
    assert lr_at(cfg, 9) == pytest.approx(1e-3)
    assert lr_at(cfg, 100) == pytest.approx(1e-3)                   # constant: the paper's
    cos = cfg.replace(lr_schedule="cosine")
    assert lr_at(cos, 10) == pytest.approx(1e-3)                    # the cosine starts where warm-up ended,
    assert lr_at(cos, 60) == pytest.approx(1e-4 + 0.9e-3 * 0.5)     # is half-way down at mid-run
    assert lr_at(cos, 110) == pytest.approx(1e-4)                   # and ends at lr · final_lr_ratio
    assert lr_at(cos, 500) == pytest.approx(1e-4)
    assert all(lr_at(cos, k) >= lr_at(cos, k + 1) for k in range(10, 110))
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_at(cfg.replace(lr_schedule="step"), 20)


def test_resuming_an_interrupted_run_gives_the_same_weights(tmp_path, small_data, debug_config):
    train(debug_config, tmp_path / "straight", max_steps=10, progress=False, dataset=small_data)
    train(debug_config, tmp_path / "split", max_steps=5, progress=False, dataset=small_data)
    train(debug_config, tmp_path / "split", max_steps=10, resume=True, progress=False, dataset=small_data)
    a, meta_a = ckpt.load_checkpoint(list_checkpoints(tmp_path / "straight")[-1])
    b, meta_b = ckpt.load_checkpoint(list_checkpoints(tmp_path / "split")[-1])
    assert meta_a["step"] == meta_b["step"] == 10
    assert set(a) == set(b)
    for key in a:
        if not key.startswith("rng."):
            assert torch.equal(a[key], b[key]), key
    assert torch.equal(a["rng.torch"], b["rng.torch"])
    assert [r["step"] for r in read_log(tmp_path / "split")] == [5, 10]
    assert [r["loss"] for r in read_log(tmp_path / "split")] == [r["loss"] for r in read_log(tmp_path / "straight")]


def test_snapshots_keep_the_ema_weights_of_every_interval_with_their_time(tmp_path, small_data, debug_config):
    cfg = debug_config.replace(snapshot_every=4, max_steps=12)
    train(cfg, tmp_path, progress=False, dataset=small_data)
    snaps = list_snapshots(tmp_path)
    assert [p.name for p in snaps] == ["step-0000004", "step-0000008", "step-0000012"]
    metas = [ckpt.load_checkpoint(p)[1] for p in snaps]
    assert [m["step"] for m in metas] == [4, 8, 12]
    assert 0 < metas[0]["elapsed_s"] < metas[1]["elapsed_s"] < metas[2]["elapsed_s"]
    last, final = ckpt.load_checkpoint(snaps[-1])[0], ckpt.load_checkpoint(tmp_path / "final")[0]
    assert set(last) == set(final) and all(torch.equal(last[k], final[k]) for k in final)   # step 12 = the end
    first = ckpt.load_checkpoint(snaps[0])[0]
    assert any(not torch.equal(first[k], final[k]) for k in final)                         # not one tensor saved thrice
    assert list_snapshots(tmp_path / "nothing-here") == []


def test_a_run_folder_with_checkpoints_is_not_overwritten(tmp_path, small_data, debug_config):
    train(debug_config, tmp_path, max_steps=5, progress=False, dataset=small_data)
    with pytest.raises(FileExistsError, match="--resume"):
        train(debug_config, tmp_path, max_steps=5, progress=False, dataset=small_data)


def test_training_writes_log_checkpoints_final_weights_and_plot(tmp_path, small_data, debug_config):
    summary = train(debug_config, tmp_path, max_steps=10, progress=False, dataset=small_data)
    assert summary["steps"] == 10
    rows = read_log(tmp_path)
    assert [r["step"] for r in rows] == [5, 10]
    assert {"loss", "mse", "vb", "lr", "img_per_s"} <= set(rows[0])
    assert (tmp_path / "loss.png").stat().st_size > 1000
    model, meta = load_model(tmp_path / "final")
    assert meta["kind"] == "weights" and meta["step"] == 10
    assert json.loads((tmp_path / "config.json").read_text())["name"] == "debug"
    assert len(list_checkpoints(tmp_path)) == 2


def test_corrupt_checkpoint_is_refused_with_its_name(tmp_path, small_data, debug_config):
    train(debug_config, tmp_path, max_steps=5, progress=False, dataset=small_data)
    path = tmp_path / "final.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="final.safetensors is corrupt"):
        load_model(tmp_path / "final")


def test_incomplete_or_foreign_checkpoints_are_refused(tmp_path):
    ckpt.save_checkpoint(tmp_path / "a", {"ema.w": torch.zeros(2)}, {"kind": "weights"})
    (tmp_path / "a.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match="incomplete"):
        ckpt.load_checkpoint(tmp_path / "a")
    (tmp_path / "b.json").write_text('{"format": "something-else"}')
    with pytest.raises(ckpt.CheckpointError, match="not a ditlib checkpoint"):
        ckpt.load_checkpoint(tmp_path / "b")
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing")


def test_optimizer_state_round_trips_through_a_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = ckpt.optimizer_to_tensors(opt)
    ckpt.save_checkpoint(tmp_path / "o", tensors, {"optimizer": meta})
    loaded, loaded_meta = ckpt.load_checkpoint(tmp_path / "o")
    opt2 = torch.optim.AdamW(model.parameters(), lr=5.0)
    ckpt.optimizer_from_tensors(opt2, loaded, loaded_meta["optimizer"])
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 1e-3
    for i in s1["state"]:
        for k in s1["state"][i]:
            assert torch.equal(torch.as_tensor(s1["state"][i][k]), torch.as_tensor(s2["state"][i][k]))


def _random_model():
    torch.manual_seed(0)
    model = build_model("DiT-debug/8", input_size=32, in_channels=1, num_classes=10)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    return model.eval()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_is_deterministic_for_a_seed(sampler):
    model = _random_model()
    kw = dict(num_sampling_steps=8, sampler=sampler, cfg_scale=2.0, progress=False)
    a = sample_images(model, [0, 1, 2], seed=3, **kw)
    b = sample_images(model, [0, 1, 2], seed=3, **kw)
    c = sample_images(model, [0, 1, 2], seed=4, **kw)
    assert a.shape == (3, 1, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sampling_refuses_a_step_count_outside_one_to_t():
    model = build_model("DiT-debug/8", input_size=32, in_channels=1, num_classes=10)
    for bad in (0, -3, 1001, 2.5, True):
        with pytest.raises(ValueError, match="whole number from 1 to 1000"):
            sample_images(model, [1], num_sampling_steps=bad, progress=False)
    assert sample_images(model, [1], num_sampling_steps=1, progress=False).shape == (1, 1, 32, 32)


def test_sampling_refuses_bad_labels_and_scales():
    model = _random_model()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        sample_images(model, [10], num_sampling_steps=2, progress=False)
    with pytest.raises(ValueError, match="cfg_scale"):
        sample_images(model, [1], num_sampling_steps=2, cfg_scale=0.5, progress=False)
    with pytest.raises(ValueError, match="sampler"):
        sample_images(model, [1], num_sampling_steps=2, sampler="euler", progress=False)


def test_guidance_interval_guides_only_the_steps_inside_it():
    model = _random_model()
    kw = dict(num_sampling_steps=8, sampler="ddim", progress=False, seed=5)   # DDIM 8: t = 0, 125, ..., 875
    calls = []
    forward = model.forward
    model.forward = lambda x, t, y: calls.append((int(t[0]), len(x), int(y.max()))) or forward(x, t, y)
    guided = sample_images(model, [0, 1, 2], cfg_scale=3.0, guidance_interval=(200, 700), **kw)
    assert [c[0] for c in calls] == [875, 750, 625, 500, 375, 250, 125, 0]
    for t, rows, top_label in calls:                  # inside: [conditional; null class]; outside: 3 rows only
        assert (rows, top_label == model.num_classes) == ((6, True) if 200 <= t <= 700 else (3, False)), t
    model.forward = forward
    every = sample_images(model, [0, 1, 2], cfg_scale=3.0, **kw)
    assert torch.equal(sample_images(model, [0, 1, 2], cfg_scale=3.0, guidance_interval=(0, 999), **kw), every)
    unguided = sample_images(model, [0, 1, 2], cfg_scale=1.0, **kw)
    assert torch.allclose(sample_images(model, [0, 1, 2], cfg_scale=3.0, guidance_interval=(1, 100), **kw),
                          unguided, atol=1e-6)        # no step of DDIM 8 lies in [1, 100]
    assert not torch.allclose(guided, every, atol=1e-4) and not torch.allclose(guided, unguided, atol=1e-4)
    for bad in [(700, 200), (-1, 10), (0, 1000), (5,), "ab"]:
        with pytest.raises(ValueError, match="guidance_interval"):
            sample_images(model, [1], cfg_scale=2.0, guidance_interval=bad, **kw)


def test_saved_grid_and_npz_have_the_expected_layout(tmp_path):
    images = torch.linspace(-1, 1, 6 * 32 * 32).reshape(6, 1, 32, 32)
    arr = to_uint8(images)
    assert arr.dtype.name == "uint8" and arr.shape == (6, 32, 32, 1)
    assert arr.min() == 0 and arr.max() == 255
    from PIL import Image
    grid = Image.open(save_grid(images, tmp_path / "g.png", nrow=3, scale=2))
    assert grid.size == (2 * (3 * 34 + 2), 2 * (2 * 34 + 2))
    import numpy as np
    data = np.load(save_npz(images, [0, 1, 2, 3, 4, 5], tmp_path / "s.npz"))
    assert data["arr_0"].shape == (6, 32, 32, 1) and data["labels"].tolist() == [0, 1, 2, 3, 4, 5]


def test_the_default_config_is_the_shipped_default_model():
    """One default: the config `python -m ditlib train` runs is the one the shipped latent model was trained with
    (up to how it was run: the precision asked for and the EMA snapshots), and `Pretrained.load()` loads it."""
    from ditlib.sample import SHIPPED_MODELS

    stem = ROOT / "data" / "checkpoints" / SHIPPED_MODELS[0]
    assert SHIPPED_MODELS[0] == DEFAULT_CONFIG.replace("/", "-")
    manifest = json.loads(stem.with_suffix(".manifest.json").read_text())
    config = json.loads(json.dumps(get_config(DEFAULT_CONFIG).to_dict()))      # as stored: tuples become lists
    differ = {k for k in config if manifest["train_config"].get(k) != config[k]}
    assert differ <= {"precision", "snapshot_every"}, differ
    assert manifest["steps"] == config["max_steps"] and manifest["command"].startswith("python -m ditlib train")
    _, meta = ckpt.load_checkpoint(stem)
    assert meta["step"] == manifest["steps"]
    for key in ("sample_cfg_scale", "sample_guidance_interval"):      # the sampling the README's FID is measured with
        assert meta["train_config"].get(key) == manifest["train_config"][key] == config[key], key


def test_the_paper_recipe_differs_from_the_default_only_in_its_optimisation():
    default, paper = get_config(DEFAULT_CONFIG).to_dict(), get_config("fmnist-latent-DiT-T/2-paper").to_dict()
    differ = {k for k in default if default[k] != paper[k]}
    assert differ == {"name", "notes", "batch_size", "lr", "warmup_steps", "grad_clip", "lr_schedule", "min_snr_gamma",
                      "ema_decay", "ema_warmup", "max_steps", "ckpt_every",
                      "sample_cfg_scale", "sample_guidance_interval"}    # and the paper guides every step
    assert paper["sample_guidance_interval"] is None
    assert (paper["lr"], paper["batch_size"], paper["ema_decay"], paper["lr_schedule"]) == (1e-4, 256, 0.9999, "constant")
    assert paper["batch_size"] * paper["max_steps"] == default["batch_size"] * default["max_steps"]   # equal images


def test_unknown_training_config_is_refused_with_the_list():
    with pytest.raises(KeyError, match="debug"):
        get_config("fmnist-DiT-Z/4")


def test_every_training_config_builds_its_model():
    for cfg in TRAIN_CONFIGS.values():
        with torch.device("meta"):
            model = build_backbone(cfg.model_config())                 # a DiT, or the U-Net baseline
        assert model.in_channels == cfg.in_channels and model.num_classes == cfg.num_classes
        assert type(model).__name__ == ("UNet" if cfg.family == "U-Net" else "DiT")


def test_checkpoint_files_reach_the_disk_before_and_after_they_are_renamed(tmp_path, monkeypatch):
    """Each temporary file is fsynced before its rename, and the folder before and after, so a power loss
    cannot leave a renamed but empty checkpoint."""
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(ckpt.os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                       real_fsync(fd))[1])
    monkeypatch.setattr(ckpt.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
    stem = ckpt.save_checkpoint(tmp_path / "run" / "w", {"a": torch.ones(3)}, {"kind": "weights"})
    folder = str((tmp_path / "run").resolve())
    kinds = [(kind, Path(p).name) for kind, p in events]
    assert kinds[:3] == [("fsync", "w.safetensors.tmp"), ("fsync", "w.json.tmp"), ("fsync", "run")]
    assert kinds[3:5] == [("replace", "w.safetensors"), ("replace", "w.json")]
    assert events[5] == ("fsync", folder) and len(events) == 6
    assert torch.equal(ckpt.load_checkpoint(stem)[0]["a"], torch.ones(3))
