"""The Fashion-MNIST feature extractor behind FID-FMNIST (the course's stand-in for Inception-v3, DiT §5).

`FashionMNISTClassifier` is a small CNN trained by `train_classifier` on the 60k training images
(`python -m ditlib train-classifier`); its 128-d penultimate layer is the feature space of FID, KID and
precision/recall, its logits that of the Inception Score (`ditlib.metrics`). The shipped one is
`data/checkpoints/fmnist-classifier` (`load_classifier()`).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoints import CheckpointError, load_checkpoint, prefixed, save_checkpoint, subdict
from .data import DATA_DIR, FashionMNIST, infinite_batches, to_unit_range
from .errors import ConfigError, MissingFileError
from .runtime import default_device, seed_everything

SHIPPED_CLASSIFIER = "checkpoints/fmnist-classifier"
"""The shipped feature extractor, under `ditlib.data.DATA_DIR`: `.safetensors` + `.json` (+ `.manifest.json`)."""


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
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = to_unit_range(images[start:start + batch_size]).to(device)
        correct += (model(x).argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(labels)


def _manifest_path(stem: Path) -> Path:
    return stem.with_name(stem.name + ".manifest.json")


def shipped_classifier_path() -> Path:
    """Where the shipped classifier lives: `data/checkpoints/fmnist-classifier` (like the shipped VAE)."""
    return DATA_DIR / SHIPPED_CLASSIFIER


def train_classifier(out, epochs: int = 3, batch_size: int = 128, lr: float = 3e-3,
                     weight_decay: float = 5e-4, seed: int = 0, device=None, max_steps: int | None = None,
                     progress: bool = True, command: str | None = None) -> dict:
    """Train the feature extractor on the 60k training images; save weights (ditlib checkpoint) and a manifest.

    AdamW with a one-cycle learning rate, random horizontal flips (the same augmentation as the DiTs),
    `epochs` passes over the data (or `max_steps` steps). Writes `out`.safetensors/.json and
    `out`.manifest.json (command, epochs, time, test accuracy, data sha256s). Returns the manifest.
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
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
    path = Path(path) if path is not None else shipped_classifier_path()
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    if not stem.with_suffix(".json").exists() and not stem.with_suffix(".safetensors").exists():
        raise MissingFileError(f"no Fashion-MNIST classifier at {stem}(.safetensors/.json); train one with "
                               f"`python -m ditlib train-classifier --out {stem}` (about 3 CPU minutes)")
    tensors, meta = load_checkpoint(stem)
    if meta.get("kind") != "classifier":
        raise CheckpointError(f"{stem} is a {meta.get('kind')!r} checkpoint, not a Fashion-MNIST classifier")
    model = FashionMNISTClassifier(**meta["classifier_config"])
    model.load_state_dict(subdict(tensors, "model"), strict=True)
    return model.to(device).eval(), meta
