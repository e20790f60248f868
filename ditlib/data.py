"""Training data for the course: Fashion-MNIST read straight from its idx files, any
folder of class sub-folders of images (cropped the ADM/DiT way), and a reproducible
infinite batch stream that a resumed training run can re-enter at any step. Lesson 1
("Data") uses `load_fashion_mnist`, `preprocess` and `FashionMNIST`; the training lessons
use `build_dataset` and `infinite_batches`; the ImageNet-style lessons use `ImageFolder`
and `center_crop_arr`. Every image a model sees is float32 C×S×S scaled to [-1, 1]
(DiT §3: pixels, or VAE latents of them, are the diffusion data x_0).
"""

import functools
import gzip
import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .errors import DitlibError, ConfigError, MissingFileError


def _default_data_dir() -> Path:
    """`$DITLIB_DATA_DIR` if set, else `<repo>/data`."""
    override = os.environ.get("DITLIB_DATA_DIR")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parent.parent / "data"


DATA_DIR = _default_data_dir()

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# split -> (images file, labels file, number of examples)
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049  # idx3 (uint8, 3 dims) and idx1 (uint8, 1 dim)
_SIDE = 28  # Fashion-MNIST images are 28×28
_PADDED_SIDE = 32  # padded by 2 pixels of background on every side, so patch sizes 2, 4, 8 divide it

_FIX = ("Restore it with `git checkout -- data/fashion-mnist` (from the repository root), "
        "or install Debian's dataset-fashion-mnist and copy "
        "/usr/share/datasets/fashion-mnist/*.gz into {folder}.")


class DataError(DitlibError, ValueError):
    """A data file is present but unusable (bad checksum, bad gzip, bad header, wrong count)."""


# ---------------------------------------------------------------------------
# Fashion-MNIST from its idx files
# ---------------------------------------------------------------------------

def _fashion_mnist_dir(root) -> Path:
    return Path(root) if root is not None else DATA_DIR / "fashion-mnist"


def _require(path: Path) -> None:
    if not path.is_file():
        raise MissingFileError(f"Fashion-MNIST file missing: {path}. {_FIX.format(folder=path.parent)}")


def _corrupt(path: Path, problem: str) -> DataError:
    return DataError(f"Fashion-MNIST file is corrupt: {path}: {problem}. {_FIX.format(folder=path.parent)}")


_VERIFIED: set = set()  # (path, size, mtime_ns, sha256) already hashed by this process


def _verify_sha256(path: Path, manifest_path: Path) -> None:
    """Check `path` against the sha256 listed in MANIFEST.json; each file is hashed once per process."""
    _require(manifest_path)
    try:
        entry = json.loads(manifest_path.read_text())["files"][path.name]
        expected = entry["sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise _corrupt(manifest_path, f"no sha256 for {path.name} ({error!r})") from None
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected)
    if key in _VERIFIED:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise _corrupt(path, f"sha256 is {digest.hexdigest()}, MANIFEST.json expects {expected}")
    _VERIFIED.add(key)


def _read_idx(path: Path, magic: int, count: int, item_shape: tuple) -> np.ndarray:
    """Parse one gzipped idx file: big-endian int32 magic, int32 sizes, then uint8 data."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
        raise _corrupt(path, f"cannot gunzip it ({error})") from None
    num_dims = 1 + len(item_shape)
    header_size = 4 * (1 + num_dims)
    if len(raw) < header_size:
        raise _corrupt(path, f"only {len(raw)} bytes, too short for an idx header")
    found_magic, *sizes = struct.unpack(f">{1 + num_dims}i", raw[:header_size])
    if found_magic != magic:
        raise _corrupt(path, f"magic number is {found_magic}, expected {magic}")
    if sizes[0] != count or tuple(sizes[1:]) != item_shape:
        raise _corrupt(path, f"header says {sizes}, expected {[count, *item_shape]}")
    payload = np.frombuffer(raw, dtype=np.uint8, offset=header_size)
    expected_bytes = count * int(np.prod(item_shape, dtype=np.int64))
    if payload.size != expected_bytes:
        raise _corrupt(path, f"holds {payload.size} data bytes, expected {expected_bytes}")
    return payload.reshape(count, *item_shape)


@functools.lru_cache(maxsize=8)
def _load_split(folder: str, split: str, verify: bool) -> tuple:
    images_name, labels_name, count = _FASHION_MNIST_FILES[split]
    folder = Path(folder)
    images_path, labels_path = folder / images_name, folder / labels_name
    for path in (images_path, labels_path):
        _require(path)
        if verify:
            _verify_sha256(path, folder / "MANIFEST.json")
    images = _read_idx(images_path, _IMAGES_MAGIC, count, (_SIDE, _SIDE))
    labels = _read_idx(labels_path, _LABELS_MAGIC, count, ())
    if labels.max() >= len(FASHION_MNIST_CLASSES):
        raise _corrupt(labels_path, f"label {labels.max()} is out of range 0..9")
    images = torch.from_numpy(images.copy())  # uint8 (N, 28, 28)
    labels = torch.from_numpy(labels.astype(np.int64))  # int64 (N,)
    return images, labels


def load_fashion_mnist(split: str = "train", root=None, verify: bool = True) -> tuple:
    """Fashion-MNIST as tensors: images uint8 (N, 28, 28) in 0..255, labels int64 (N,) in 0..9.

    N is 60000 for split="train" and 10000 for split="test". `root` is the folder holding
    the four idx `.gz` files and MANIFEST.json (default `DATA_DIR / "fashion-mnist"`).
    With `verify`, each file's sha256 is checked against the manifest (once per process).
    Parsed splits are cached in memory; every call returns fresh copies (about 47 MB for
    train), so callers may modify them. Raises FileNotFoundError for a missing file and
    DataError for a corrupt one, both naming the file and how to restore it.
    """
    if split not in _FASHION_MNIST_FILES:
        raise ConfigError(f"unknown Fashion-MNIST split {split!r}; valid splits: {sorted(_FASHION_MNIST_FILES)}")
    folder = _fashion_mnist_dir(root).expanduser().resolve()
    images, labels = _load_split(str(folder), split, bool(verify))
    return images.clone(), labels.clone()


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 in 0..255 -> float32 in [-1, 1] (0 -> -1, 255 -> +1)."""
    return images_uint8.to(torch.float32) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [−1, 1] -> (N, H, W, C) uint8 in [0, 255] (the ADM .npz layout)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def _pad_to_32(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> uint8 (N, 1, 32, 32), padded with 2 pixels of 0 (background) on each side."""
    if images_uint8.dtype != torch.uint8 or images_uint8.shape[-2:] != (_SIDE, _SIDE) or images_uint8.dim() != 3:
        raise ConfigError(f"expected uint8 images of shape (N, 28, 28), got {images_uint8.dtype} "
                          f"{tuple(images_uint8.shape)}")
    margin = (_PADDED_SIDE - _SIDE) // 2
    return torch.nn.functional.pad(images_uint8, (margin,) * 4).unsqueeze(1)  # (N, 1, 32, 32)


def preprocess(images_uint8: torch.Tensor) -> torch.Tensor:
    """Fashion-MNIST uint8 (N, 28, 28) -> float32 (N, 1, 32, 32) in [-1, 1].

    Pads 2 pixels of background on every side (they become exactly -1) and scales x/127.5 - 1.
    """
    return to_unit_range(_pad_to_32(images_uint8))


class FashionMNIST(Dataset):
    """Fashion-MNIST in memory, padded to 32×32: item i is (x float32 (1, 32, 32) in [-1, 1], y int64).

    `images` holds uint8 (N, 1, 32, 32) (61 MB for train) and `labels` int64 (N,); conversion
    to float happens per item or per batch (`get_batch`). With `hflip`, `__getitem__` mirrors
    left-right with probability 0.5 using torch's global RNG; for a reproducible stream build
    it with hflip=False and pass hflip=True to `infinite_batches` instead.
    """

    num_classes = len(FASHION_MNIST_CLASSES)
    in_channels = 1
    classes = FASHION_MNIST_CLASSES

    def __init__(self, split: str = "train", root=None, hflip: bool = False, image_size: int = 32):
        if image_size != _PADDED_SIDE:
            raise ConfigError(f"Fashion-MNIST images are 28×28 padded to {_PADDED_SIDE}×{_PADDED_SIDE}; "
                              f"image_size must be {_PADDED_SIDE}, got {image_size}")
        images, labels = load_fashion_mnist(split, root)
        self.split, self.hflip, self.image_size = split, hflip, image_size
        self.images = _pad_to_32(images)  # uint8 (N, 1, 32, 32)
        self.labels = labels  # int64 (N,)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple:
        x = to_unit_range(self.images[index])  # (1, 32, 32)
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, self.labels[index]

    def get_batch(self, indices: torch.Tensor) -> tuple:
        """Vectorised gather: int64 indices (B,) -> (x float32 (B, 1, 32, 32) in [-1, 1], y int64 (B,)).

        Never flips; batch-level flips are `infinite_batches`'s job.
        """
        return to_unit_range(self.images[indices]), self.labels[indices]

    def examples(self, per_class: int = 1, classes=None) -> tuple:
        """The first `per_class` images of each class (all classes by default), class by class.

        Deterministic, so lessons show the same pictures on every run. Returns (x (N, 1, 32, 32), y (N,)).
        """
        classes = range(self.num_classes) if classes is None else classes
        picks = [torch.nonzero(self.labels == c).flatten()[:per_class] for c in classes]
        return self.get_batch(torch.cat(picks))


# ---------------------------------------------------------------------------
# Folders of images (ImageNet-style), cropped as in ADM / DiT
# ---------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """The ADM centre crop used by DiT's data pipeline: PIL image -> uint8 array (S, S, C), S = image_size.

    While the shorter side is at least 2*S, halve the image with a BOX filter (cheap,
    alias-free); then resize with BICUBIC so the shorter side is S (the longer side rounded);
    then keep the central S×S square. A single-channel image gives C = 1.
    """
    image = pil_image
    while min(image.size) >= 2 * image_size:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.BOX)
    scale = image_size / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), resample=Image.BICUBIC)
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]  # (H, W) -> (H, W, 1)
    top = (pixels.shape[0] - image_size) // 2
    left = (pixels.shape[1] - image_size) // 2
    return pixels[top:top + image_size, left:left + image_size]


class ImageFolder(Dataset):
    """Images under `root/<class name>/**`, one sub-folder per class (sorted names -> 0, 1, ...).

    Item i is (x float32 (C, S, S) in [-1, 1], y int64) with S = image_size and C = channels
    (3: RGB, 1: grayscale), cropped by `center_crop_arr`. Files are found recursively in each
    class folder by extension (jpg, jpeg, png, bmp, webp; any case) and decoded on access.
    With `hflip`, items are mirrored with probability 0.5 (torch's global RNG).
    """

    def __init__(self, root, image_size: int, hflip: bool = False, channels: int = 3):
        root = Path(root).expanduser()
        if image_size < 1:
            raise ConfigError(f"image_size must be at least 1, got {image_size}")
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        if not root.is_dir():
            raise MissingFileError(f"image folder not found: {root}")
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise ConfigError(f"{root} has no class sub-folders; expected {root}/<class name>/<images>")
        self.samples = []  # (path, class index)
        for label, class_dir in enumerate(class_dirs):
            files = sorted(p for p in class_dir.rglob("*")
                           if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not files:
                raise ConfigError(f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            self.samples += [(path, label) for path in files]
        self.root, self.image_size, self.hflip = root, image_size, hflip
        self.classes = tuple(p.name for p in class_dirs)
        self.num_classes = len(self.classes)
        self.in_channels = channels
        self._mode = "RGB" if channels == 3 else "L"

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple:
        path, label = self.samples[index]
        with Image.open(path) as image:
            pixels = center_crop_arr(image.convert(self._mode), self.image_size)  # (S, S, C) uint8
        x = to_unit_range(torch.from_numpy(pixels.copy()).permute(2, 0, 1))  # (C, S, S)
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, torch.tensor(label, dtype=torch.int64)


def build_dataset(name: str, split: str = "train", image_size: int = 32, hflip: bool = False, root=None):
    """A dataset by name: "fashion-mnist" -> `FashionMNIST(split, root, hflip, image_size)`
    (image_size must be 32), or a path to an image folder -> `ImageFolder(name, image_size, hflip)`.

    An image folder has no splits: `split` and `root` apply to Fashion-MNIST only.
    """
    if name == "fashion-mnist":
        return FashionMNIST(split=split, root=root, hflip=hflip, image_size=image_size)
    if Path(name).expanduser().is_dir():
        return ImageFolder(name, image_size=image_size, hflip=hflip)
    raise ConfigError(f"unknown dataset {name!r}: valid choices are 'fashion-mnist' or the path of an "
                      "existing image folder (one sub-folder of images per class)")


def get_batch(dataset, indices: torch.Tensor) -> tuple:
    """(images float (B, C, S, S), labels int64 (B,)) of an image dataset at `indices`."""
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(indices)
    items = [dataset[i] for i in indices.tolist()]
    return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items], dtype=torch.int64)


# ---------------------------------------------------------------------------
# A reproducible, resumable stream of batches
# ---------------------------------------------------------------------------

def derived_seed(seed: int, purpose: str, counter: int) -> int:
    """A 63-bit seed for torch.Generator that depends on (seed, purpose, counter) and nothing else."""
    digest = hashlib.blake2b(f"{seed}/{purpose}/{counter}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class StepBatches(Dataset):
    """Batch number `step` of a reproducible stream, as a map-style dataset: `batches[step]` -> (x, y).

    The global batch `step` depends only on (seed, step): epoch e = step // batches_per_epoch visits every
    index once, in the order of a permutation drawn from a generator seeded by (seed, e); with `hflip`
    each example is mirrored left-right with probability 0.5 by a generator seeded by (seed, step).
    A distributed run splits each global batch of `batch_size` into `num_shards` equal parts and
    process `shard` gets rows [shard·b, (shard+1)·b), b = batch_size / num_shards: the ranks together
    see exactly the batch a single process would, whatever their number. Being indexable by step, it
    can feed a `torch.utils.data.DataLoader` with worker processes (`batch_size=None`, a sampler over
    steps) and stay exactly reproducible. The dataset itself must not flip (build it with hflip=False);
    datasets with a `get_batch(indices)` method (FashionMNIST) are gathered in one indexing operation,
    others item by item. With `drop_last`, the final partial batch of each epoch is skipped.
    """

    def __init__(self, dataset, batch_size: int, seed: int = 0, hflip: bool = False, drop_last: bool = True,
                 num_shards: int = 1, shard: int = 0):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if num_shards < 1 or not 0 <= shard < num_shards:
            raise ConfigError(f"shard must lie in [0, {num_shards}), got {shard}")
        if batch_size % num_shards:
            raise ConfigError(f"the global batch of {batch_size} cannot be split evenly over {num_shards} processes; "
                              f"choose a batch size divisible by {num_shards}")
        if getattr(dataset, "hflip", False):
            raise ConfigError("the dataset flips images itself (hflip=True), which would make the batch stream "
                              "irreproducible; build it with hflip=False and pass hflip=True to infinite_batches")
        size = len(dataset)
        self.batches_per_epoch = size // batch_size if drop_last else -(-size // batch_size)
        if self.batches_per_epoch == 0:
            raise ConfigError(f"dataset of {size} examples is smaller than batch_size={batch_size} (drop_last=True)")
        self.dataset, self.batch_size, self.seed, self.hflip = dataset, batch_size, seed, hflip
        self.local_batch_size = batch_size // num_shards
        self.rows = slice(shard * self.local_batch_size, (shard + 1) * self.local_batch_size)
        self._epoch, self._order = None, None

    def plan(self, step: int) -> tuple:
        """(indices (B,), mirror bool (B,) or None) of global batch `step`."""
        if step < 0:
            raise ConfigError(f"step must be >= 0, got {step}")
        epoch = step // self.batches_per_epoch
        if epoch != self._epoch:                   # one permutation per epoch, kept until the next
            generator = torch.Generator().manual_seed(derived_seed(self.seed, "epoch", epoch))
            self._epoch, self._order = epoch, torch.randperm(len(self.dataset), generator=generator)
        offset = (step % self.batches_per_epoch) * self.batch_size
        indices = self._order[offset:offset + self.batch_size]  # (B,)
        mirror = None
        if self.hflip:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, "hflip", step))
            mirror = torch.rand(indices.shape[0], generator=generator) < 0.5  # (B,)
        return indices, mirror

    def __getitem__(self, step: int) -> tuple:
        indices, mirror = self.plan(int(step))
        dataset = self.dataset
        if getattr(dataset, "selects_flips", False):
            # Latent datasets (ditlib.latents): a flip selects the posterior of the mirrored image, and
            # every draw is a fresh latent sample, seeded by (seed, step) for exact resume. The whole
            # global batch is drawn (cheap: cached latents) so that each row's sample is the same
            # whatever the number of shards.
            noise = torch.Generator().manual_seed(derived_seed(self.seed, "latent", step))
            x, y = dataset.get_batch(indices, flip_mask=mirror, generator=noise)
            return x[self.rows], y[self.rows]
        indices = indices[self.rows]
        mirror = None if mirror is None else mirror[self.rows]
        gather = getattr(dataset, "get_batch", None)
        if gather is not None:
            x, y = gather(indices)
        else:
            items = [dataset[i] for i in indices.tolist()]
            x = torch.stack([item[0] for item in items])
            y = torch.as_tensor([int(item[1]) for item in items], dtype=torch.int64)
        if mirror is not None:
            x = torch.where(mirror.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)
        return x, y


def infinite_batches(dataset, batch_size: int, seed: int = 0, start_step: int = 0, hflip: bool = False,
                     drop_last: bool = True, num_shards: int = 1, shard: int = 0):
    """Yield (x float (B, C, S, S), y int64 (B,)) batches forever; batch number `step` depends only on
    (seed, step), so a run resumed at step k calls `infinite_batches(..., start_step=k)` and sees the
    very batches the uninterrupted run would have seen.

    Epoch e (= step // batches_per_epoch) visits every index once, in the order of a permutation
    drawn from a generator seeded by (seed, e); jumping to `start_step` costs one permutation, not a
    replay. With `hflip`, each example is mirrored left-right with probability 0.5 by a generator
    seeded by (seed, step). The dataset itself must not flip (build it with hflip=False); datasets
    with a `get_batch(indices)` method (FashionMNIST) are gathered in one indexing operation, others
    item by item. With `drop_last`, the final partial batch of each epoch is skipped. With
    `num_shards` > 1 this process gets part `shard` of each global batch (`StepBatches`).
    """
    if start_step < 0:
        raise ConfigError(f"start_step must be >= 0, got {start_step}")
    batches = StepBatches(dataset, batch_size, seed=seed, hflip=hflip, drop_last=drop_last,
                          num_shards=num_shards, shard=shard)
    step = start_step
    while True:
        yield batches[step]
        step += 1
