"""The command line as a user types it, and the shipped default checkpoint."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ditlib.sample import load_model
from ditlib.data import FashionMNIST
from ditlib.sample import sample_images

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "data" / "checkpoints" / "fmnist-DiT-T-4"


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "ditlib", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_configs_lists_paper_and_course_configs_with_gflops():
    out = run("configs")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip().startswith("DiT-") or line.strip().startswith("fmnist")}
    assert "118.6" in lines["DiT-XL/2"] and "675.13M" in lines["DiT-XL/2"]
    assert "fmnist-DiT-T/4" in lines and "debug" in out.stdout


def test_train_then_sample_from_the_command_line(tmp_path):
    out = run("train", "--config", "debug", "--max-steps", "4", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout[: out.stdout.rindex("}") + 1])["steps"] == 4
    out = run("train", "--config", "debug", "--max-steps", "6", "--out", str(tmp_path / "run"), "--resume")
    assert out.returncode == 0, out.stderr
    assert "resuming debug" in out.stdout
    grid = tmp_path / "grid.png"
    out = run("sample", "--ckpt", str(tmp_path / "run" / "final"), "--classes", "1", "7", "--per-class", "2",
              "--num-sampling-steps", "5", "--cfg-scale", "2", "--seed", "1", "--out", str(grid))
    assert out.returncode == 0, out.stderr
    assert grid.exists()
    arr = np.load(grid.with_suffix(".npz"))
    assert arr["arr_0"].shape == (4, 32, 32, 1) and arr["labels"].tolist() == [1, 1, 7, 7]


@pytest.mark.parametrize("args,message", [
    (("train", "--config", "nope"), "unknown training config 'nope'"),
    (("sample", "--ckpt", "no/such/checkpoint"), "no checkpoint at no/such/checkpoint"),
    (("sample", "--ckpt", str(SHIPPED), "--num-sampling-steps", "0"), "sampling steps must be a whole number from 1 to 1000"),
    (("fid", "--ckpt", str(SHIPPED), "--num-sampling-steps", "1001"), "got 1001"),
    (("sample", "--ckpt", str(SHIPPED), "--guidance-interval", "400", "300"), "guidance_interval must satisfy 0 <= lo <= hi < 1000"),
])
def test_bad_input_gives_a_one_line_error_not_a_traceback(args, message):
    out = run(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_the_checkpoints_guidance_interval_goes_with_its_guidance_scale(tmp_path):
    from ditlib.sample import sampling_guidance

    cfg = {"sample_cfg_scale": 3.0, "sample_guidance_interval": [0, 300]}
    assert sampling_guidance(None, None, cfg) == (3.0, (0, 300))
    assert sampling_guidance(4.0, None, cfg) == (4.0, None)                 # a scale of your own: every step
    assert sampling_guidance(4.0, [10, 20], cfg) == (4.0, (10, 20))
    assert sampling_guidance(None, None, {"sample_cfg_scale": 2.0}) == (2.0, None)
    assert sampling_guidance(None, None, {}) == (1.0, None)
    latent = str(ROOT / "data" / "checkpoints" / "fmnist-latent-DiT-T-2")          # stores guidance 3 on t <= 300
    out = run("sample", "--ckpt", latent, "--classes", "5", "--per-class", "1", "--num-sampling-steps", "2",
              "--out", str(tmp_path / "a.png"))
    assert out.returncode == 0, out.stderr
    assert "cfg 3 for 0 <= t <= 300" in out.stdout
    out = run("sample", "--ckpt", latent, "--classes", "5", "--per-class", "1", "--num-sampling-steps", "2",
              "--cfg-scale", "2", "--out", str(tmp_path / "b.png"))
    assert out.returncode == 0, out.stderr
    assert "cfg 2," in out.stdout and "<= t <=" not in out.stdout
    from ditlib.sample import Pretrained
    pretrained, rows = Pretrained.load(latent), []
    forward = pretrained.model.forward
    pretrained.model.forward = lambda x, t, y: rows.append(len(x)) or forward(x, t, y)
    pretrained.sample([5], num_sampling_steps=2, sampler="ddim", progress=False)       # DDIM 2: t = 500, then 0
    pretrained.sample([5], num_sampling_steps=2, sampler="ddim", cfg_scale=3.0, progress=False)
    assert rows == [1, 2, 2, 2]          # the stored interval guides only t = 0; a scale of your own, every step


def test_shipped_checkpoint_has_a_manifest_and_loads():
    manifest = json.loads((SHIPPED.parent / "fmnist-DiT-T-4.manifest.json").read_text())
    assert manifest["command"].startswith("python -m ditlib train")
    model, meta = load_model(SHIPPED)
    assert meta["step"] == manifest["steps"]
    assert sum(p.numel() for p in model.parameters()) == manifest["parameters"]


def test_shipped_checkpoint_draws_the_class_it_is_asked_for():
    """Nearest-class-mean classification of samples: far above the 10% of chance if conditioning works."""
    model, _ = load_model(SHIPPED)
    test = FashionMNIST("test")
    x, y = test.get_batch(torch.arange(len(test)))
    centroids = torch.stack([x[y == c].mean(0).flatten() for c in range(10)])           # (10, 1024)
    labels = torch.arange(10).repeat_interleave(3)
    samples = sample_images(model, labels, num_sampling_steps=50, sampler="ddim", cfg_scale=2.0, seed=0, progress=False)
    predicted = torch.cdist(samples.flatten(1), centroids).argmin(dim=1)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy >= 0.5, f"only {accuracy:.0%} of samples are nearest to their class's mean image"
