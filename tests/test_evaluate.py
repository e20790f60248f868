"""Specification of evaluation (ditlib.evaluate): the shipped Fashion-MNIST feature extractor, FID / KID / IS /
precision-recall through torch-fidelity, the offline Inception check, sampling for FID and the ADM .npz layout.

Expected values never come from the code under test: accuracies are counted against the dataset's labels,
FID is recomputed from the features with an independent formula, and the metric tests compare real images
with images degraded by hand (noise, blur), whose ordering is known in advance.
"""
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ditlib import classifier, evaluate
from ditlib import metrics as metrics_lib
from ditlib.checkpoints import prefixed, save_checkpoint
from ditlib.data import FashionMNIST
from ditlib.models import build_model

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "data" / "checkpoints" / "fmnist-classifier"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


@pytest.fixture(scope="module")
def test_set():
    return FashionMNIST("test")


@pytest.fixture(scope="module")
def train_images():
    return FashionMNIST("train").images


def as_float(images_uint8):
    """uint8 (N, 1, 32, 32) -> float in [-1, 1], written out here rather than taken from ditlib."""
    return images_uint8.float() / 127.5 - 1.0


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ditlib", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)


# ---------------------------------------------------------------------------
# The shipped feature extractor
# ---------------------------------------------------------------------------

def test_shipped_classifier_is_at_least_90_percent_accurate_on_test_images(test_set):
    model, meta = classifier.load_classifier(SHIPPED)
    with torch.no_grad():
        logits = model(as_float(test_set.images[:2000]))  # (2000, 10)
    accuracy = (logits.argmax(1) == test_set.labels[:2000]).float().mean().item()
    assert accuracy >= 0.90
    assert meta["kind"] == "classifier"


def test_shipped_classifier_has_a_manifest_small_weights_and_the_datasets_hashes():
    manifest = json.loads(SHIPPED.with_name("fmnist-classifier.manifest.json").read_text())
    data_manifest = json.loads((ROOT / "data" / "fashion-mnist" / "MANIFEST.json").read_text())
    assert manifest["command"].startswith("python -m ditlib train-classifier")
    assert manifest["test_accuracy"] >= 0.90 and manifest["train_time_s"] > 0
    assert manifest["data_sha256"] == {name: entry["sha256"] for name, entry in data_manifest["files"].items()}
    assert SHIPPED.with_suffix(".safetensors").stat().st_size < 2 * 1024 * 1024


def test_features_are_the_penultimate_layer_and_logits_the_classifier_output(test_set):
    model, _ = classifier.load_classifier(SHIPPED)
    x = as_float(test_set.images[:16])
    features = evaluate.extract_features(test_set.images[:16].permute(0, 2, 3, 1), classifier_path=SHIPPED)
    with torch.no_grad():
        expected_logits = model(x)
        expected_features = model.neck(model.body(x).flatten(1))
    assert features["fid"].shape == (16, 128) and features["isc"].shape == (16, 10)
    torch.testing.assert_close(features["isc"], expected_logits)
    torch.testing.assert_close(features["fid"], expected_features)


def test_extractor_takes_rgb_and_28_pixel_inputs_like_torch_fidelity_feeds_them(test_set):
    gray = test_set.images[:8]                                   # (8, 1, 32, 32) uint8
    rgb = gray.expand(-1, 3, -1, -1)                             # what torch-fidelity makes of PNG folders
    unpadded = gray[:, :, 2:30, 2:30]                            # the raw 28×28 Fashion-MNIST
    inputs = [metrics_lib.uint8_to_classifier_input(x) for x in (gray, rgb, unpadded)]
    torch.testing.assert_close(inputs[0], as_float(gray))
    torch.testing.assert_close(inputs[1], inputs[0])
    torch.testing.assert_close(inputs[2], inputs[0])
    with pytest.raises(ValueError, match="32×32"):
        metrics_lib.uint8_to_classifier_input(torch.zeros(2, 1, 64, 64, dtype=torch.uint8))


def test_torch_fidelity_calculate_metrics_accepts_the_registered_extractor(test_set):
    import torch_fidelity

    metrics_lib.register_with_torch_fidelity()

    class Images(torch.utils.data.Dataset):
        def __init__(self, images):
            self.images = images

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.images[i]

    metrics = torch_fidelity.calculate_metrics(
        input1=Images(test_set.images[:300].expand(-1, 3, -1, -1)), input2=Images(test_set.images[300:600]),
        fid=True, kid=True, isc=True, prc=True, feature_extractor="fmnist-classifier",
        feature_layer_fid="features", kid_subset_size=100, cuda=False, cache=False, save_cpu_ram=True,
        verbose=False)
    assert metrics["frechet_inception_distance"] >= 0
    assert metrics["inception_score_mean"] > 3
    assert 0 <= metrics["precision"] <= 1 and 0 <= metrics["recall"] <= 1


# ---------------------------------------------------------------------------
# The metrics behave as metrics should
# ---------------------------------------------------------------------------

def blur(images_uint8, passes=2):
    """A 3×3 box blur applied `passes` times, by hand."""
    x = images_uint8.float()
    kernel = torch.full((1, 1, 3, 3), 1 / 9)
    for _ in range(passes):
        x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
    return x.round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def real_metrics(test_set, train_images):
    """FID of 1500 train images vs 1500 test images, next to real-vs-noise and real-vs-blurred."""
    reference = test_set.images[:1500].permute(0, 2, 3, 1)  # uint8 (N, 32, 32, 1), the ADM layout
    generator = torch.Generator().manual_seed(0)
    real = as_float(train_images[torch.randperm(60000, generator=generator)[:1500]])
    noise = torch.rand(1500, 1, 32, 32, generator=generator) * 2 - 1
    blurred = as_float(blur(test_set.images[1500:3000]))
    start = time.perf_counter()
    results = {name: evaluate.compute_metrics(images, reference=reference, classifier_path=SHIPPED)
               for name, images in (("real", real), ("noise", noise), ("blurred", blurred))}
    results["seconds"] = time.perf_counter() - start
    return results


def test_fid_of_real_vs_real_is_far_below_noise_and_blur(real_metrics):
    real, noise, blurred = real_metrics["real"], real_metrics["noise"], real_metrics["blurred"]
    assert real["fid"] < 0.1 * blurred["fid"]
    assert blurred["fid"] < noise["fid"]
    assert real["kid_mean"] < 0.1 * blurred["kid_mean"]
    assert real["precision"] > 0.6 and real["recall"] > 0.6
    assert noise["precision"] < 0.1
    assert real_metrics["seconds"] < 60


def test_inception_score_of_real_images_is_high_and_of_noise_near_one(real_metrics):
    assert real_metrics["real"]["isc_mean"] > 6      # 10 classes, predicted confidently and evenly
    assert real_metrics["noise"]["isc_mean"] < 2     # one class for everything, or no confidence


def test_fid_matches_the_frechet_distance_computed_by_hand(test_set, train_images):
    samples, reference = as_float(train_images[:800]), test_set.images[:800].permute(0, 2, 3, 1)
    result = evaluate.compute_metrics(samples, reference=reference, classifier_path=SHIPPED, precision_recall=False)
    f1 = evaluate.extract_features(samples, classifier_path=SHIPPED)["fid"].double().numpy()
    f2 = evaluate.extract_features(reference, classifier_path=SHIPPED)["fid"].double().numpy()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    sigma1, sigma2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    # Tr sqrt(Σ1 Σ2) = Tr sqrt(S Σ2 S) with S = Σ1^½, a symmetric PSD matrix: eigh only, no sqrtm.
    w, v = np.linalg.eigh(sigma1)
    root = (v * np.sqrt(w.clip(0))) @ v.T
    trace_sqrt = np.sqrt(np.linalg.eigvalsh(root @ sigma2 @ root).clip(0)).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    assert result["fid"] == pytest.approx(expected, rel=1e-3, abs=1e-3)


def test_compute_metrics_gives_the_same_numbers_for_tensors_and_adm_npz(test_set, tmp_path):
    samples = as_float(test_set.images[:400])
    path = evaluate.save_adm_npz(samples, tmp_path / "samples.npz")
    with np.load(path) as npz:
        adm = npz["arr_0"]
    reference = test_set.images[400:800].permute(0, 2, 3, 1)
    from_tensor = evaluate.compute_metrics(samples, reference=reference, classifier_path=SHIPPED)
    from_array = evaluate.compute_metrics(adm, reference=reference, classifier_path=SHIPPED)
    from_file = evaluate.compute_metrics(path, reference=reference, classifier_path=SHIPPED)
    for key in ("fid", "kid_mean", "isc_mean", "precision", "recall"):
        assert from_tensor[key] == pytest.approx(from_array[key], abs=1e-6)
        assert from_tensor[key] == pytest.approx(from_file[key], abs=1e-6)
    assert from_tensor["n"] == 400


def test_num_samples_uses_the_first_samples_and_rejects_too_many(test_set):
    samples = as_float(test_set.images[:300])
    reference = test_set.images[300:600].permute(0, 2, 3, 1)
    assert evaluate.compute_metrics(samples, reference, num_samples=100, classifier_path=SHIPPED)["n"] == 100
    with pytest.raises(ValueError, match="only 300 samples"):
        evaluate.compute_metrics(samples, reference, num_samples=301, classifier_path=SHIPPED)


def test_image_layouts_that_would_be_misread_are_refused():
    with pytest.raises(ValueError, match="N×H×W×C"):
        evaluate.as_uint8_images(np.zeros((4, 1, 32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="N×C×H×W"):
        evaluate.as_uint8_images(torch.zeros(4, 32, 32, 1))


def test_adm_npz_is_uint8_nhw3_under_arr_0_with_gray_repeated(tmp_path):
    images = torch.tensor([-1.0, 0.0, 1.0, 0.5]).view(1, 1, 2, 2).repeat(3, 1, 1, 1)  # (3, 1, 2, 2)
    with np.load(evaluate.save_adm_npz(images, tmp_path / "adm.npz")) as npz:
        assert list(npz.keys()) == ["arr_0"]
        arr = npz["arr_0"]
    assert arr.shape == (3, 2, 2, 3) and arr.dtype == np.uint8
    # (x + 1) * 127.5 rounded: -1 -> 0, 0 -> 127.5 -> 128 (round half to even), 1 -> 255, 0.5 -> 191.25 -> 191
    assert arr[0, :, :, 0].tolist() == [[0, 128], [255, 191]]
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()


# ---------------------------------------------------------------------------
# Inception: used when its weights are on disk, a clear error when they are not
# ---------------------------------------------------------------------------

@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to open a network connection")
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_missing_inception_weights_raise_a_clear_error_at_once(tmp_path, monkeypatch, no_network, test_set):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected_place = tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_FILE
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        evaluate.compute_metrics(as_float(test_set.images[:20]), extractor="inception")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert INCEPTION_FILE in message and str(expected_place) in message
    assert "https://github.com/toshas/torch-fidelity/releases/download/" in message
    assert "offline" in message and "extractor='fmnist'" in message
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "elsewhere.pth")):
        evaluate.inception_weights_path(tmp_path / "elsewhere.pth")


def test_inception_weights_found_in_the_torch_hub_cache_are_used_without_download(tmp_path, monkeypatch, no_network,
                                                                                    test_set):
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_FILE
    weights.parent.mkdir(parents=True)
    torch.save({}, weights)  # stands in for the real file; its loading is recorded, not checked
    loaded = []
    monkeypatch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict",
                        lambda self, state, strict=True: loaded.append(state))
    assert evaluate.inception_weights_path() == weights
    result = evaluate.compute_metrics(as_float(test_set.images[:10]), reference=test_set.images[10:20].permute(0, 2, 3, 1),
                                      extractor="inception", precision_recall=False)
    assert loaded == [{}]
    assert result["extractor"] == "inception-v3-compat" and np.isfinite(result["fid"])


def test_fid_command_with_inception_but_no_weights_is_a_one_line_error(tmp_path):
    import os

    env = dict(os.environ, TORCH_HOME=str(tmp_path))
    out = run_cli("fid", "--real-vs-real", "--num-samples", "50", "--extractor", "inception", env=env)
    assert out.returncode == 2
    assert INCEPTION_FILE in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------------------
# Sampling for FID and the command line
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dit_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("DiT-debug/8", input_size=32, in_channels=1, num_classes=10)
    stem = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(stem, prefixed(model.state_dict(), "ema"),
                    {"kind": "weights", "model_config": model.config.to_dict(), "train_config": {"sample_steps": 3}})
    return model.eval(), stem


def test_sample_for_fid_spreads_labels_evenly_and_is_reproducible(tiny_dit_checkpoint, monkeypatch):
    model, _ = tiny_dit_checkpoint
    seen = []
    import ditlib.sample

    original = ditlib.sample.sample_images

    def recording(model, labels, **kwargs):
        seen.append(torch.as_tensor(labels).clone())
        return original(model, labels, **kwargs)

    monkeypatch.setattr(ditlib.evaluate, "sample_images", recording)
    images = evaluate.sample_for_fid(model, 25, num_sampling_steps=2, seed=3, batch_size=10, progress=False)
    labels = torch.cat(seen)
    assert [len(b) for b in seen] == [10, 10, 5]
    assert torch.bincount(labels, minlength=10).tolist() == [3] * 5 + [2] * 5
    assert images.shape == (25, 1, 32, 32) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    again = evaluate.sample_for_fid(model, 25, num_sampling_steps=2, seed=3, batch_size=10, progress=False)
    other = evaluate.sample_for_fid(model, 25, num_sampling_steps=2, seed=4, batch_size=10, progress=False)
    assert torch.equal(images, again) and not torch.equal(images, other)


def test_sampling_a_latent_dit_for_fid_without_its_decoder_is_refused():
    latent = build_model("DiT-debug/8", input_size=8, in_channels=4, num_classes=10).eval()
    with pytest.raises(ValueError, match="decode=codec.decode"):
        evaluate.sample_for_fid(latent, 4, num_sampling_steps=2, progress=False)
    with pytest.raises(ValueError, match="decode=codec.decode"):
        evaluate.sample_fid_images(latent, "unused", 4, num_sampling_steps=2, progress=False)


def test_latents_are_decoded_before_they_are_clamped():
    """Lesson 08's bug: clamping scaled latents to [−1, 1] before decoding moves the decoded images."""
    latent = build_model("DiT-debug/8", input_size=8, in_channels=4, num_classes=10).eval()
    seen = []

    def decode(z):                        # a stand-in decoder that sees whether it was given clamped latents
        seen.append(z.abs().max().item())
        return z[:, :1].repeat_interleave(4, -1).repeat_interleave(4, -2) / 4     # (N, 1, 32, 32)

    images = evaluate.sample_for_fid(latent, 6, num_sampling_steps=3, seed=0, batch_size=6, progress=False,
                                     decode=decode, clip_denoised=False)
    raw = evaluate.sample_images(latent, evaluate.uniform_labels(6, 10), num_sampling_steps=3,
                                 seed=evaluate.derived_seed(0, "fid", 0), progress=False, clip_denoised=False)
    assert seen[0] == raw.abs().max().item() > 1           # the decoder saw the latents as sampled, unclamped
    assert torch.equal(images, decode(raw).clamp(-1, 1))


def test_a_pretrained_model_brings_its_decoder_to_fid_sampling():
    from ditlib.sample import Pretrained

    pretrained = Pretrained.load("fmnist-latent-DiT-T-2", device="cpu")
    images = evaluate.sample_for_fid(pretrained, 2, num_sampling_steps=2, seed=0, progress=False, clip_denoised=False)
    assert images.shape == (2, 1, 32, 32)


def test_fid_command_samples_a_checkpoint_and_writes_adm_npz(tiny_dit_checkpoint, tmp_path, test_set):
    _, stem = tiny_dit_checkpoint
    npz, report, reference = tmp_path / "samples.npz", tmp_path / "fid.json", tmp_path / "reference.npz"
    np.savez(reference, arr_0=test_set.images[:200].permute(0, 2, 3, 1).numpy())  # a small ADM reference batch
    out = run_cli("fid", "--ckpt", str(stem), "--num-samples", "20", "--num-sampling-steps", "2", "--batch-size", "10",
                  "--seed", "5", "--npz", str(npz), "--json", str(report), "--reference", str(reference))
    assert out.returncode == 0, out.stderr
    assert "FID" in out.stdout and "IS" in out.stdout and "seed 5" in out.stdout and "20 images" in out.stdout
    with np.load(npz) as data:
        assert data["arr_0"].shape == (20, 32, 32, 3) and data["arr_0"].dtype == np.uint8
    result = json.loads(report.read_text())
    assert result["n"] == 20 and result["seed"] == 5 and result["n_reference"] == 200
    out = run_cli("fid", "--samples", str(npz), "--num-samples", "20", "--seed", "5", "--reference", str(reference))
    assert out.returncode == 0, out.stderr
    assert f"{result['fid']:.4f}" in out.stdout  # the saved samples give the same FID


def test_fid_command_real_vs_real_prints_the_floor():
    out = run_cli("fid", "--real-vs-real", "--num-samples", "500")
    assert out.returncode == 0, out.stderr
    assert "real vs real" in out.stdout and "500 images vs 10000 reference images" in out.stdout
    fid = float(next(line for line in out.stdout.splitlines() if line.strip().startswith("FID")).split()[1])
    assert 0 <= fid < 5


def test_train_classifier_command_writes_weights_and_manifest(tmp_path):
    out = run_cli("train-classifier", "--max-steps", "3", "--out", str(tmp_path / "clf"))
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "clf.manifest.json").read_text())
    assert manifest["steps"] == 3 and "--max-steps 3" in manifest["command"]
    model, meta = classifier.load_classifier(tmp_path / "clf")
    assert meta["test_accuracy"] == manifest["test_accuracy"]


def test_a_missing_classifier_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m ditlib train-classifier"):
        classifier.load_classifier(tmp_path / "nothing")
