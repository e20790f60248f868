"""Evaluation the way the paper does it, scaled down honestly: FID, KID, Inception Score, precision/recall.

DiT reports FID-50K (Table 4, §5) with ADM's TensorFlow suite: Inception-v3 features of 50,000 samples
against a reference batch, plus sFID, Inception Score and precision/recall. On a CPU with 32×32
grayscale Fashion-MNIST, Inception (trained on 299×299 ImageNet photos) is slow and a poor judge, so
the course measures the same statistics in the feature space of a small Fashion-MNIST classifier
trained by `ditlib` (the "FID-FMNIST"), and keeps Inception available through torch-fidelity for
anyone who has its weights. Numbers from the two extractors are not comparable with each other, and
neither is comparable with the paper's ImageNet numbers.

In this file, in order:

1. the feature extractor  – `FashionMNISTClassifier` (penultimate 128-d features for FID/KID/PR,
   logits for IS), `train_classifier`, `load_classifier`;
2. torch-fidelity         – registration as the extractor "fmnist-classifier", and the offline check
   for torch-fidelity's Inception weights (a clear error, never a download attempt);
3. metrics                – `extract_features`, `compute_metrics` (samples in [-1, 1] or ADM uint8 npz);
4. sampling for FID       – `sample_for_fid` (labels spread evenly over the classes), `save_adm_npz`;
5. the command line       – `python -m ditlib train-classifier` and `python -m ditlib fid`.

Only torch and numpy are imported at the top: the CLI imports this module on every call, and
torch-fidelity is imported where it is used.
"""
from __future__ import annotations

import functools
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SHIPPED_CLASSIFIER = "checkpoints/fmnist-classifier"
"""The shipped feature extractor, under `ditlib.data.DATA_DIR`: `.safetensors` + `.json` (+ `.manifest.json`)."""

EXTRACTOR_NAME = "fmnist-classifier"
"""Its name in torch-fidelity's registry (`feature_extractor=EXTRACTOR_NAME`)."""

INCEPTION_NAME = "inception-v3-compat"  # torch-fidelity's port of the TF Inception used by FID papers

# extractor -> torch-fidelity layer per metric (FID, KID and precision/recall share one feature space)
_LAYERS = {
    EXTRACTOR_NAME: {"fid": "features", "kid": "features", "prc": "features", "isc": "logits"},
    INCEPTION_NAME: {"fid": "2048", "kid": "2048", "prc": "2048", "isc": "logits_unbiased"},
}
_EXTRACTORS = {"fmnist": EXTRACTOR_NAME, "inception": INCEPTION_NAME}
REFERENCES = ("fmnist-test", "fmnist-train")


# ---------------------------------------------------------------------------
# 1. The Fashion-MNIST feature extractor
# ---------------------------------------------------------------------------

class FashionMNISTClassifier(nn.Module):
    """A small CNN for 32×32×1 Fashion-MNIST in [-1, 1] (ditlib's preprocessing).

    Three stages of conv3×3-BN-ReLU-maxpool (32×32 -> 16 -> 8 -> 4), then the penultimate layer
    `features` = ReLU(BN(Linear(2048 -> feature_dim))), the role Inception's 2048-d pool3 plays in
    FID, and `logits` = Linear(feature_dim -> 10) after dropout, the role of Inception's logits in IS.
    """

    def __init__(self, widths: tuple = (32, 64, 128), feature_dim: int = 128, num_classes: int = 10,
                 dropout: float = 0.3):
        super().__init__()
        self.widths, self.feature_dim, self.num_classes, self.dropout = tuple(widths), feature_dim, num_classes, dropout
        layers, channels = [], 1
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.MaxPool2d(2)]
            channels = width
        self.body = nn.Sequential(*layers)
        side = 32 // 2 ** len(widths)
        self.neck = nn.Sequential(nn.Linear(channels * side * side, feature_dim, bias=False),
                                  nn.BatchNorm1d(feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def config(self) -> dict:
        return {"widths": list(self.widths), "feature_dim": self.feature_dim, "num_classes": self.num_classes,
                "dropout": self.dropout}

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """x: float (N, 1, 32, 32) in [-1, 1] -> logits (N, 10), or (features (N, D), logits) with return_features."""
        h = self.body(x)                     # (N, 128, 4, 4)
        features = self.neck(h.flatten(1))   # (N, D)
        logits = self.head(features)         # (N, 10)
        return (features, logits) if return_features else logits


@torch.no_grad()
def classifier_accuracy(model: FashionMNISTClassifier, images: torch.Tensor, labels: torch.Tensor,
                        batch_size: int = 1000) -> float:
    """Top-1 accuracy of `model` on uint8 images (N, 1, 32, 32) (as in `FashionMNIST.images`)."""
    from .data import _to_unit_range

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = _to_unit_range(images[start:start + batch_size]).to(device)
        correct += (model(x).argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(labels)


def _manifest_path(stem: Path) -> Path:
    return stem.with_name(stem.name + ".manifest.json")


def shipped_classifier_path() -> Path:
    """Where the shipped classifier lives: `data/checkpoints/fmnist-classifier` (like the shipped VAE)."""
    from .data import DATA_DIR

    return DATA_DIR / SHIPPED_CLASSIFIER


def train_classifier(out, epochs: int = 3, batch_size: int = 128, lr: float = 3e-3,
                     weight_decay: float = 5e-4, seed: int = 0, device=None, max_steps: int | None = None,
                     progress: bool = True, command: str | None = None) -> dict:
    """Train the feature extractor on the 60k training images; save weights (ditlib checkpoint) and a manifest.

    AdamW with a one-cycle learning rate, random horizontal flips (the same augmentation as the DiTs),
    `epochs` passes over the data (or `max_steps` steps). Writes `out`.safetensors/.json and
    `out`.manifest.json (command, epochs, time, test accuracy, data sha256s). Returns the manifest.
    """
    from tqdm.auto import tqdm

    from .checkpoints import prefixed, save_checkpoint
    from .data import DATA_DIR, FashionMNIST, infinite_batches
    from .runtime import default_device, seed_everything

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    device = default_device(str(device) if device is not None else None)
    seed_everything(seed)
    train_set, test_set = FashionMNIST("train"), FashionMNIST("test")
    steps = max_steps or epochs * math.ceil(len(train_set) / batch_size)
    model = FashionMNISTClassifier().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    batches = infinite_batches(train_set, batch_size, seed=seed, hflip=True)
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="train fmnist-classifier", disable=not progress, dynamic_ncols=True)
    for step in bar:
        x, y = next(batches)  # x float (B, 1, 32, 32) in [-1, 1], y (B,)
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    train_time = time.perf_counter() - start
    accuracy = classifier_accuracy(model, test_set.images, test_set.labels)

    out = Path(out)
    out = out.with_suffix("") if out.suffix in (".safetensors", ".json") else out
    parameters = sum(p.numel() for p in model.parameters())
    meta = {"kind": "classifier", "classifier_config": model.config(), "test_accuracy": accuracy,
            "epochs": steps / math.ceil(len(train_set) / batch_size), "steps": steps}
    stem = save_checkpoint(out, prefixed(model.state_dict(), "model"), meta)
    data_manifest = json.loads((DATA_DIR / "fashion-mnist" / "MANIFEST.json").read_text())
    manifest = {
        "command": command or f"python -m ditlib train-classifier --epochs {epochs} --out {out}",
        "what": "Fashion-MNIST feature extractor for FID/KID/IS/precision-recall (ditlib.evaluate)",
        "epochs": meta["epochs"], "steps": steps, "batch_size": batch_size, "lr": lr,
        "weight_decay": weight_decay, "seed": seed, "parameters": parameters,
        "train_time_s": round(train_time, 1), "device": str(device), "torch": torch.__version__,
        "test_accuracy": accuracy, "test_images": len(test_set),
        "data_sha256": {name: entry["sha256"] for name, entry in data_manifest["files"].items()},
        "weights": stem.with_suffix(".safetensors").name,
    }
    _manifest_path(stem).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_classifier(path=None, device="cpu") -> tuple[FashionMNISTClassifier, dict]:
    """The feature extractor stored at `path` (default: the shipped one), in eval mode: (model, meta)."""
    from .checkpoints import CheckpointError, load_checkpoint, subdict

    path = Path(path) if path is not None else shipped_classifier_path()
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    if not stem.with_suffix(".json").exists() and not stem.with_suffix(".safetensors").exists():
        raise FileNotFoundError(f"no Fashion-MNIST classifier at {stem}(.safetensors/.json); train one with "
                                f"`python -m ditlib train-classifier --out {stem}` (about 3 CPU minutes)")
    tensors, meta = load_checkpoint(stem)
    if meta.get("kind") != "classifier":
        raise CheckpointError(f"{stem} is a {meta.get('kind')!r} checkpoint, not a Fashion-MNIST classifier")
    model = FashionMNISTClassifier(**meta["classifier_config"])
    model.load_state_dict(subdict(tensors, "model"), strict=True)
    return model.to(device).eval(), meta


# ---------------------------------------------------------------------------
# 2. torch-fidelity: the classifier as a registered extractor; Inception only if its weights are here
# ---------------------------------------------------------------------------

def _uint8_to_classifier_input(x: torch.Tensor) -> torch.Tensor:
    """What torch-fidelity feeds (uint8 (N, C, H, W), C = 1 or 3, H = W = 32 or 28) -> float (N, 1, 32, 32) in [-1, 1].

    RGB is averaged to gray (exact for gray repeated to 3 channels); 28×28 is padded with 2 pixels of
    background on each side, as `ditlib.data` does.
    """
    from .data import _to_unit_range

    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, 1 or 3, H, W), got {x.dtype} {tuple(x.shape)}")
    if x.shape[-2:] not in ((32, 32), (28, 28)):
        raise ValueError(f"the Fashion-MNIST classifier takes 32×32 (or 28×28) images, got {tuple(x.shape[-2:])}")
    x = x.float().mean(1, keepdim=True) if x.shape[1] == 3 else x.float()
    if x.shape[-1] == 28:
        x = F.pad(x, (2, 2, 2, 2), value=0.0)
    return _to_unit_range(x)  # (N, 1, 32, 32)


@functools.cache
def register_with_torch_fidelity() -> type:
    """Register the classifier with torch-fidelity as "fmnist-classifier" (once); returns the extractor class.

    Afterwards `torch_fidelity.calculate_metrics(..., feature_extractor="fmnist-classifier",
    feature_layer_fid="features", feature_layer_isc="logits", cuda=False)` works offline. The
    weights come from `feature_extractor_weights_path` (a classifier checkpoint) or the shipped ones.
    """
    from torch_fidelity import register_feature_extractor
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    class FashionMNISTFeatureExtractor(FeatureExtractorBase):
        """torch-fidelity's view of `FashionMNISTClassifier`: uint8 (N, C, H, W) in, ("features", "logits") out."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.classifier, _ = load_classifier(feature_extractor_weights_path)
            self.requires_grad_(False)

        @staticmethod
        def get_provided_features_list():
            return ("features", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return _LAYERS[EXTRACTOR_NAME][metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 1, 32, 32, dtype=torch.uint8)

        def forward(self, x):
            features, logits = self.classifier(_uint8_to_classifier_input(x), return_features=True)
            out = {"features": features, "logits": logits}
            return tuple(out[name] for name in self.features_list)

    if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(EXTRACTOR_NAME, FashionMNISTFeatureExtractor)
    return FEATURE_EXTRACTORS_REGISTRY[EXTRACTOR_NAME]


def inception_weights_path(path=None) -> Path:
    """Where torch-fidelity's Inception-v3 weights are on this machine; FileNotFoundError if they are not.

    Without `path`, looks where torch-fidelity caches them: `torch.hub.get_dir()/checkpoints/<file>`
    (`~/.cache/torch/hub/checkpoints` unless $TORCH_HOME is set). Never touches the network.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    file_name = URL_INCEPTION_V3.rsplit("/", 1)[1]
    cache_path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    candidate = Path(path).expanduser() if path is not None else cache_path
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"FID with Inception needs torch-fidelity's Inception-v3 weights {file_name}, which are not on this "
        f"machine (looked for {candidate}), and ditlib never downloads them (the course runs offline): on a "
        f"machine with internet fetch {URL_INCEPTION_V3} and copy it to {cache_path} (or pass inception_weights=PATH / "
        f"--inception-weights PATH). The Fashion-MNIST extractor (extractor='fmnist') needs no download.")


# ---------------------------------------------------------------------------
# 3. Metrics
# ---------------------------------------------------------------------------

def as_uint8_images(images) -> torch.Tensor:
    """Images in any layout `compute_metrics` accepts -> uint8 (N, C, H, W), the layout torch-fidelity feeds.

    - float tensor or array (N, C, H, W) in [-1, 1] (what `sample_images` returns), rounded like `to_uint8`;
    - uint8 array or tensor (N, H, W, C) with C = 1 or 3 (the ADM .npz layout, `arr_0`), or (N, H, W);
    - a path to an .npz file holding `arr_0` in that layout.
    """
    from .sample import to_uint8

    if isinstance(images, (str, Path)):
        with np.load(images) as npz:
            if "arr_0" not in npz:
                raise ValueError(f"{images} has no 'arr_0' (keys: {list(npz.keys())}); expected the ADM layout")
            images = npz["arr_0"]
    images = torch.as_tensor(images)
    if images.dtype == torch.uint8:
        if images.dim() == 3:
            images = images.unsqueeze(-1)  # (N, H, W) -> (N, H, W, 1)
        if images.dim() != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"uint8 images must be N×H×W×C with C = 1 or 3 (the ADM layout), got {tuple(images.shape)}; "
                             "for N×C×H×W use images.permute(0, 2, 3, 1)")
        return images.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    if not images.is_floating_point() or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"float images must be N×C×H×W in [-1, 1] with C = 1 or 3, got {images.dtype} {tuple(images.shape)}")
    return torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def reference_images(reference="fmnist-test") -> torch.Tensor:
    """uint8 (N, C, H, W) reference images: "fmnist-test" (10k), "fmnist-train" (60k), or any `as_uint8_images` input."""
    from .data import FashionMNIST

    if isinstance(reference, str) and reference in REFERENCES:
        return FashionMNIST(reference.removeprefix("fmnist-")).images  # (N, 1, 32, 32)
    if isinstance(reference, str) and not reference.endswith(".npz"):
        raise ValueError(f"unknown reference {reference!r}: use one of {REFERENCES}, an .npz path, or images")
    return as_uint8_images(reference)


class _UInt8Images(torch.utils.data.Dataset):
    """uint8 (N, C, H, W) as a Dataset of (C, H, W) items; gray is repeated to 3 channels if `channels` is 3."""

    def __init__(self, images: torch.Tensor, channels: int):
        self.images, self.channels = images, channels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        x = self.images[index]
        return x.expand(3, -1, -1) if x.shape[0] == 1 and self.channels == 3 else x


def _extractor_settings(extractor: str, classifier_path, inception_weights) -> tuple[str, int, str]:
    """(torch-fidelity extractor name, input channels, weights path) for "fmnist" or "inception"."""
    if extractor not in _EXTRACTORS:
        raise ValueError(f"extractor must be one of {sorted(_EXTRACTORS)}, got {extractor!r}")
    if extractor == "inception":
        return INCEPTION_NAME, 3, str(inception_weights_path(inception_weights))  # checked before torch-fidelity runs
    register_with_torch_fidelity()
    path = Path(classifier_path) if classifier_path is not None else shipped_classifier_path()
    load_classifier(path)  # a missing or corrupt classifier fails here, with ditlib's message
    return EXTRACTOR_NAME, 1, str(path)


def extract_features(images, extractor: str = "fmnist", batch_size: int = 500, classifier_path=None,
                     inception_weights=None) -> dict[str, torch.Tensor]:
    """The feature vectors the metrics compare: {"fid": (N, D), "isc": (N, K)} (float32, CPU).

    For "fmnist", "fid" is the classifier's 128-d penultimate layer and "isc" its 10 logits; for
    "inception", the 2048-d pool features and 1008 logits. Lessons use it to compute FID by hand.
    """
    name, channels, weights = _extractor_settings(extractor, classifier_path, inception_weights)
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    layers = [_LAYERS[name]["fid"], _LAYERS[name]["isc"]]
    model = FEATURE_EXTRACTORS_REGISTRY[name](name, layers, feature_extractor_weights_path=weights,
                                              verbose=False).eval()
    images = as_uint8_images(images)
    outputs = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size]
            batch = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 and channels == 3 else batch
            outputs.append(model(batch))
    return {"fid": torch.cat([o[0] for o in outputs]), "isc": torch.cat([o[1] for o in outputs])}


def compute_metrics(samples, reference="fmnist-test", extractor: str = "fmnist", num_samples: int | None = None,
                    seed: int = 0, kid_subset_size: int | None = None, *, precision_recall: bool = True,
                    batch_size: int = 500, device=None, classifier_path=None, inception_weights=None,
                    verbose: bool = False) -> dict:
    """FID, KID, Inception Score and precision/recall of `samples` against `reference`, through torch-fidelity.

    samples: float (N, C, H, W) in [-1, 1], or uint8 N×H×W×C (ADM `arr_0`), or an .npz path.
    reference: "fmnist-test" (the 10k test images), "fmnist-train", or images/.npz as for samples.
    extractor: "fmnist" (the shipped classifier; offline, fast) or "inception" (torch-fidelity's
    Inception-v3; needs its weights on disk, see `inception_weights_path`).
    num_samples: use the first `num_samples` samples (default: all). seed: torch-fidelity's rng_seed
    (KID subsets, IS splits). kid_subset_size: default min(1000, N, N_ref).
    Returns {fid, kid_mean, kid_std, isc_mean, isc_std, precision, recall, n, n_reference, extractor, seed};
    IS is computed on the samples only; precision is the share of samples inside the reference manifold.
    """
    import torch_fidelity

    from .runtime import default_device

    name, channels, weights = _extractor_settings(extractor, classifier_path, inception_weights)
    samples = as_uint8_images(samples)
    if num_samples is not None:
        if num_samples > samples.shape[0]:
            raise ValueError(f"num_samples={num_samples} but only {samples.shape[0]} samples were given")
        samples = samples[:num_samples]
    reference = reference_images(reference)
    n, n_reference = samples.shape[0], reference.shape[0]
    if min(n, n_reference) < 10:
        raise ValueError(f"need at least 10 samples and 10 reference images, got {n} and {n_reference}")
    kid_subset_size = kid_subset_size or min(1000, n, n_reference)
    device = default_device(str(device) if device is not None else None)
    layers = _LAYERS[name]
    metrics = torch_fidelity.calculate_metrics(
        input1=_UInt8Images(samples, channels), input2=_UInt8Images(reference, channels),
        fid=True, kid=True, isc=True, prc=precision_recall,
        feature_extractor=name, feature_layer_fid=layers["fid"], feature_layer_kid=layers["kid"],
        feature_layer_prc=layers["prc"], feature_layer_isc=layers["isc"], feature_extractor_weights_path=weights,
        cuda=device.type == "cuda", batch_size=batch_size, kid_subset_size=kid_subset_size,
        isc_splits=min(10, n), rng_seed=seed, cache=False,
        save_cpu_ram=True,   # no DataLoader worker processes (pure overhead for tensors in memory); PR in chunks
        prc_batch_size=2000, verbose=verbose)
    return {
        "fid": metrics["frechet_inception_distance"],
        "kid_mean": metrics["kernel_inception_distance_mean"], "kid_std": metrics["kernel_inception_distance_std"],
        "isc_mean": metrics["inception_score_mean"], "isc_std": metrics["inception_score_std"],
        "precision": metrics.get("precision"), "recall": metrics.get("recall"),
        "n": n, "n_reference": n_reference, "kid_subset_size": kid_subset_size, "extractor": name, "seed": seed,
    }


# ---------------------------------------------------------------------------
# 4. Sampling for FID, and the ADM .npz layout
# ---------------------------------------------------------------------------

def uniform_labels(num_samples: int, num_classes: int) -> torch.Tensor:
    """0, 1, …, K−1, 0, 1, … : every class gets num_samples/K samples (±1), as for class-conditional FID."""
    return torch.arange(num_samples) % num_classes


def sample_for_fid(model, num_samples: int, cfg_scale: float = 1.0, num_sampling_steps: int = 250,
                   sampler: str = "ddpm", seed: int = 0, batch_size: int = 256, progress: bool = True,
                   decode=None, **sample_kwargs) -> torch.Tensor:
    """`num_samples` images from a DiT for FID: float (N, C, H, W) in [-1, 1] on the CPU.

    Labels are spread evenly over the classes (`uniform_labels`). Batches of `batch_size` are
    sampled with `ditlib.sample.sample_images`, batch i with a seed derived from (seed, i), so the
    same (seed, batch_size) always gives the same samples. `decode` (e.g. a VAE decoder) maps each
    batch of model outputs to images before it is kept; other keyword arguments go to `sample_images`
    (noise_schedule, diffusion_steps, precision, guided_channels, clip_denoised).
    """
    from tqdm.auto import tqdm

    from .data import _derived_seed
    from .sample import sample_images

    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be at least 1, got {num_samples} and {batch_size}")
    labels = uniform_labels(num_samples, model.num_classes)
    out = None
    with tqdm(total=num_samples, desc="sample for FID", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for index, start in enumerate(range(0, num_samples, batch_size)):
            batch_labels = labels[start:start + batch_size]
            images = sample_images(model, batch_labels, num_sampling_steps=num_sampling_steps, sampler=sampler,
                                   cfg_scale=cfg_scale, seed=_derived_seed(seed, "fid", index), progress=False,
                                   **sample_kwargs)
            if decode is not None:
                images = decode(images)
            images = images.float().cpu().clamp(-1, 1)
            if out is None:
                out = torch.empty(num_samples, *images.shape[1:])  # filled batch by batch: no list of copies
            out[start:start + len(batch_labels)] = images
            bar.update(len(batch_labels))
    return out


def save_adm_npz(images, path) -> Path:
    """Save images as ADM's evaluation suite reads them: uint8 N×H×W×3 under `arr_0` (gray repeated to RGB).

    `images`: float (N, C, H, W) in [-1, 1] or any layout `as_uint8_images` accepts.
    """
    pixels = as_uint8_images(images).permute(0, 2, 3, 1)  # (N, H, W, C)
    if pixels.shape[-1] == 1:
        pixels = pixels.expand(-1, -1, -1, 3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, arr_0=np.ascontiguousarray(pixels.numpy()))
    return path


# ---------------------------------------------------------------------------
# 5. Command line
# ---------------------------------------------------------------------------

def _command_line(args) -> str:
    """The command as typed (`ditlib.__main__.main` records it), or this process's arguments."""
    return getattr(args, "invocation", None) or "python -m ditlib " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _cmd_train_classifier(args) -> int:
    manifest = train_classifier(args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                seed=args.seed, device=args.device, max_steps=args.max_steps,
                                command=_command_line(args))
    print(json.dumps(manifest, indent=2))
    return 0


def _print_metrics(result: dict, what: str, elapsed: float) -> None:
    precision = "n/a" if result["precision"] is None else f"{result['precision']:.4f}"
    recall = "n/a" if result["recall"] is None else f"{result['recall']:.4f}"
    print(f"{what}: {result['n']} images vs {result['n_reference']} reference images, seed {result['seed']}, "
          f"extractor {result['extractor']}")
    print(f"  FID        {result['fid']:.4f}")
    print(f"  KID        {result['kid_mean']:.6f} ± {result['kid_std']:.6f}  (subsets of {result['kid_subset_size']})")
    print(f"  IS         {result['isc_mean']:.4f} ± {result['isc_std']:.4f}")
    print(f"  precision  {precision}   recall {recall}")
    print(f"  time       {elapsed:.1f}s")


def _cmd_fid(args) -> int:
    from .data import FashionMNIST

    start = time.perf_counter()
    if args.extractor == "inception":
        inception_weights_path(args.inception_weights)  # fail in a second, before any sampling
    num_samples = args.num_samples or (None if args.samples else 10000)
    sample_precision = None
    if args.real_vs_real:
        train_images = FashionMNIST("train").images  # (60000, 1, 32, 32)
        if num_samples > train_images.shape[0]:
            raise ValueError(f"--num-samples {num_samples} exceeds the {train_images.shape[0]} training images")
        pick = torch.randperm(train_images.shape[0], generator=torch.Generator().manual_seed(args.seed))
        samples = train_images[pick[:num_samples]].permute(0, 2, 3, 1)  # (N, 32, 32, 1) uint8
        what = "real vs real (Fashion-MNIST train subset vs reference): the floor"
    elif args.samples:
        samples, what = args.samples, f"samples {args.samples}"
    else:
        from .checkpoints import load_model
        from .runtime import default_device

        model, meta = load_model(args.ckpt, which=args.weights, device=default_device(args.device))
        train_cfg = meta.get("train_config", {})
        vae_name = args.vae or train_cfg.get("vae")
        decode, clip_denoised = None, True
        if vae_name:              # a latent DiT (§3.1): decode each batch; the official latent sampler does not clip
            from .vae import load_vae

            decode, clip_denoised = load_vae(vae_name, device=args.device).decode, False
        elif model.in_channels not in (1, 3):
            raise ValueError(f"{args.ckpt} samples {model.in_channels}-channel latents: pass --vae NAME_OR_PATH "
                             "(e.g. fmnist-vae) to decode them to images")
        from .sample import sampling_steps

        steps = sampling_steps(args.num_sampling_steps, train_cfg)          # checked before any sampling work
        cfg_scale = args.cfg_scale if args.cfg_scale is not None else train_cfg.get("sample_cfg_scale", 1.0)
        samples = sample_for_fid(model, num_samples, cfg_scale=cfg_scale, num_sampling_steps=steps,
                                 sampler=args.sampler, seed=args.seed, batch_size=args.batch_size,
                                 noise_schedule=train_cfg.get("noise_schedule", "linear"),
                                 diffusion_steps=train_cfg.get("diffusion_steps", 1000), precision=args.precision,
                                 decode=decode, clip_denoised=clip_denoised)
        from .runtime import resolve_precision

        sample_precision = resolve_precision(args.precision, next(model.parameters()).device, announce=False).precision
        what = f"{args.ckpt} ({args.sampler}, {steps} steps, cfg {cfg_scale}, {sample_precision})"
    if args.npz:
        print(f"samples -> {save_adm_npz(samples, args.npz)} (ADM layout)")
    result = compute_metrics(samples, reference=args.reference, extractor=args.extractor,
                             num_samples=num_samples if args.samples else None,
                             seed=args.seed, kid_subset_size=args.kid_subset_size, device=args.device,
                             classifier_path=args.classifier, inception_weights=args.inception_weights)
    elapsed = time.perf_counter() - start
    _print_metrics(result, what, elapsed)
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "command": _command_line(args), "time_s": round(elapsed, 1),
                                               "sample_precision": sample_precision},
                                              indent=2) + "\n")
    return 0


def add_cli(subparsers) -> None:
    """Register `train-classifier` and `fid` with `python -m ditlib`."""
    p = subparsers.add_parser("train-classifier", help="train the Fashion-MNIST feature extractor used for FID")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default=str(Path("runs") / "fmnist-classifier"),
                   help="checkpoint stem (default runs/fmnist-classifier; the shipped one is data/checkpoints/fmnist-classifier)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_train_classifier)

    p = subparsers.add_parser("fid", help="FID / KID / IS / precision-recall of a checkpoint's samples, or the real-vs-real floor")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a DiT checkpoint to sample from")
    source.add_argument("--samples", help="an .npz of samples (arr_0: uint8 N×H×W×C), e.g. from `sample` or ADM")
    source.add_argument("--real-vs-real", "--reference-only", dest="real_vs_real", action="store_true",
                        help="the floor: N random training images vs the reference")
    p.add_argument("--num-samples", type=int, default=None,
                   help="number of samples (default 10000; with --samples, all in the file)")
    p.add_argument("--reference", default="fmnist-test", help="fmnist-test (default), fmnist-train, or an .npz")
    p.add_argument("--cfg-scale", type=float, default=None, help="guidance scale (default: the checkpoint's)")
    p.add_argument("--num-sampling-steps", type=int, default=None, help="respaced steps (default: the checkpoint's)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    p.add_argument("--extractor", choices=sorted(_EXTRACTORS), default="fmnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256, help="sampling batch size")
    p.add_argument("--kid-subset-size", type=int, default=None)
    p.add_argument("--npz", default=None, help="also save the samples in ADM layout (uint8 N×H×W×3, arr_0)")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--vae", default=None, help="decode latent samples with this VAE (default: the checkpoint's, if any)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast precision (default auto: bf16 only where the hardware computes it natively)")
    p.add_argument("--classifier", default=None, help="feature extractor checkpoint (default: the shipped one)")
    p.add_argument("--inception-weights", default=None, help="path of torch-fidelity's Inception weights")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_fid)
