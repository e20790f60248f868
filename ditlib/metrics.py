"""The metrics of DiT §5, scaled down honestly: FID, KID, Inception Score, precision/recall.

DiT reports FID-50K (Table 4, §5) with ADM's TensorFlow suite: Inception-v3 features of 50,000 samples
against a reference batch, plus sFID, Inception Score and precision/recall. On a CPU with 32×32
grayscale Fashion-MNIST, Inception (trained on 299×299 ImageNet photos) is slow and a poor judge, so
the course measures the same statistics in the feature space of a small Fashion-MNIST classifier
(`ditlib.classifier`, the "FID-FMNIST"), and keeps Inception available through torch-fidelity for
anyone who has its weights. Numbers from the two extractors are not comparable with each other, and
neither is comparable with the paper's ImageNet numbers.

In this file, in order: the classifier registered with torch-fidelity as the extractor
"fmnist-classifier", and the offline check for torch-fidelity's Inception weights (a clear error,
never a download attempt); `extract_features` and `compute_metrics` (samples in [-1, 1] or ADM uint8
npz); `save_adm_npz`, the layout ADM's evaluation suite reads. torch-fidelity is imported where it
is used.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .classifier import load_classifier, shipped_classifier_path
from .data import FashionMNIST, to_uint8, to_unit_range
from .errors import ConfigError, MissingFileError
from .runtime import default_device

EXTRACTOR_NAME = "fmnist-classifier"
"""Its name in torch-fidelity's registry (`feature_extractor=EXTRACTOR_NAME`)."""

INCEPTION_NAME = "inception-v3-compat"  # torch-fidelity's port of the TF Inception used by FID papers

# extractor -> torch-fidelity layer per metric (FID, KID and precision/recall share one feature space)
_LAYERS = {
    EXTRACTOR_NAME: {"fid": "features", "kid": "features", "prc": "features", "isc": "logits"},
    INCEPTION_NAME: {"fid": "2048", "kid": "2048", "prc": "2048", "isc": "logits_unbiased"},
}
EXTRACTORS = {"fmnist": EXTRACTOR_NAME, "inception": INCEPTION_NAME}
REFERENCES = ("fmnist-test", "fmnist-train")


# ---------------------------------------------------------------------------
# 2. torch-fidelity: the classifier as a registered extractor; Inception only if its weights are here
# ---------------------------------------------------------------------------

def uint8_to_classifier_input(x: torch.Tensor) -> torch.Tensor:
    """What torch-fidelity feeds (uint8 (N, C, H, W), C = 1 or 3, H = W = 32 or 28) -> float (N, 1, 32, 32) in [-1, 1].

    RGB is averaged to gray (exact for gray repeated to 3 channels); 28×28 is padded with 2 pixels of
    background on each side, as `ditlib.data` does.
    """
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ConfigError(f"expected uint8 images (N, 1 or 3, H, W), got {x.dtype} {tuple(x.shape)}")
    if x.shape[-2:] not in ((32, 32), (28, 28)):
        raise ConfigError(f"the Fashion-MNIST classifier takes 32×32 (or 28×28) images, got {tuple(x.shape[-2:])}")
    x = x.float().mean(1, keepdim=True) if x.shape[1] == 3 else x.float()
    if x.shape[-1] == 28:
        x = F.pad(x, (2, 2, 2, 2), value=0.0)
    return to_unit_range(x)  # (N, 1, 32, 32)


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
            features, logits = self.classifier(uint8_to_classifier_input(x), return_features=True)
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
    raise MissingFileError(
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
    if isinstance(images, (str, Path)):
        with np.load(images) as npz:
            if "arr_0" not in npz:
                raise ConfigError(f"{images} has no 'arr_0' (keys: {list(npz.keys())}); expected the ADM layout")
            images = npz["arr_0"]
    images = torch.as_tensor(images)
    if images.dtype == torch.uint8:
        if images.dim() == 3:
            images = images.unsqueeze(-1)  # (N, H, W) -> (N, H, W, 1)
        if images.dim() != 4 or images.shape[-1] not in (1, 3):
            raise ConfigError(f"uint8 images must be N×H×W×C with C = 1 or 3 (the ADM layout), got {tuple(images.shape)}; "
                              "for N×C×H×W use images.permute(0, 2, 3, 1)")
        return images.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    if not images.is_floating_point() or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"float images must be N×C×H×W in [-1, 1] with C = 1 or 3, got {images.dtype} {tuple(images.shape)}")
    return torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def reference_images(reference="fmnist-test") -> torch.Tensor:
    """uint8 (N, C, H, W) reference images: "fmnist-test" (10k), "fmnist-train" (60k), or any `as_uint8_images` input."""
    if isinstance(reference, str) and reference in REFERENCES:
        return FashionMNIST(reference.removeprefix("fmnist-")).images  # (N, 1, 32, 32)
    if isinstance(reference, str) and not reference.endswith(".npz"):
        raise ConfigError(f"unknown reference {reference!r}: use one of {REFERENCES}, an .npz path, or images")
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
    if extractor not in EXTRACTORS:
        raise ConfigError(f"extractor must be one of {sorted(EXTRACTORS)}, got {extractor!r}")
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

    name, channels, weights = _extractor_settings(extractor, classifier_path, inception_weights)
    samples = as_uint8_images(samples)
    if num_samples is not None:
        if num_samples > samples.shape[0]:
            raise ConfigError(f"num_samples={num_samples} but only {samples.shape[0]} samples were given")
        samples = samples[:num_samples]
    reference = reference_images(reference)
    n, n_reference = samples.shape[0], reference.shape[0]
    if min(n, n_reference) < 10:
        raise ConfigError(f"need at least 10 samples and 10 reference images, got {n} and {n_reference}")
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


def format_metrics(result: dict) -> str:
    """`compute_metrics`' result as the lines `python -m ditlib fid` prints."""
    precision = "n/a" if result["precision"] is None else f"{result['precision']:.4f}"
    recall = "n/a" if result["recall"] is None else f"{result['recall']:.4f}"
    return (f"{result['n']} images vs {result['n_reference']} reference images, seed {result['seed']}, "
            f"extractor {result['extractor']}\n"
            f"  FID        {result['fid']:.4f}\n"
            f"  KID        {result['kid_mean']:.6f} ± {result['kid_std']:.6f}  (subsets of {result['kid_subset_size']})\n"
            f"  IS         {result['isc_mean']:.4f} ± {result['isc_std']:.4f}\n"
            f"  precision  {precision}   recall {recall}")


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
