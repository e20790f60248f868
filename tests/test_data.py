"""Specifications for ditlib.data: Fashion-MNIST loading and checks, preprocessing, image
folders with the ADM centre crop, and the reproducible, resumable batch stream."""

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ditlib import data

TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="module")
def train():
    return data.load_fashion_mnist("train")


@pytest.fixture(scope="module")
def test_split():
    return data.load_fashion_mnist("test")


@pytest.fixture()
def test_split_copy(tmp_path):
    """A private copy of the test split's files and the manifest, safe to damage."""
    source = data.DATA_DIR / "fashion-mnist"
    for name in (*TEST_FILES, "MANIFEST.json"):
        shutil.copy(source / name, tmp_path / name)
    return tmp_path


# --- Fashion-MNIST -----------------------------------------------------------------------

def test_default_data_dir_is_repo_data_unless_env_var_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv("DITLIB_DATA_DIR", raising=False)
    assert data._default_data_dir() == Path(data.__file__).resolve().parent.parent / "data"
    monkeypatch.setenv("DITLIB_DATA_DIR", str(tmp_path))
    assert data._default_data_dir() == tmp_path


def test_train_split_has_60000_uint8_28x28_images_and_int64_labels(train):
    images, labels = train
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60000,) and labels.dtype == torch.int64


def test_test_split_has_10000_examples(test_split):
    images, labels = test_split
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)


def test_classes_are_balanced_with_labels_0_to_9(train, test_split):
    assert len(data.FASHION_MNIST_CLASSES) == 10
    assert data.FASHION_MNIST_CLASSES[0] == "T-shirt/top" and data.FASHION_MNIST_CLASSES[9] == "Ankle boot"
    assert int(train[1].min()) == 0 and int(train[1].max()) == 9
    assert torch.bincount(train[1], minlength=10).tolist() == [6000] * 10
    assert torch.bincount(test_split[1], minlength=10).tolist() == [1000] * 10


def test_repeated_loads_return_equal_but_independent_copies(train):
    images, _ = data.load_fashion_mnist("train")
    assert torch.equal(images, train[0])
    images[0] = 0
    assert not torch.equal(data.load_fashion_mnist("train")[0][0], images[0])


def test_unknown_split_is_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match="'test', 'train'"):
        data.load_fashion_mnist("validation")


def test_missing_file_raises_file_not_found_naming_it(test_split_copy):
    (test_split_copy / TEST_FILES[1]).unlink()
    with pytest.raises(FileNotFoundError) as error:
        data.load_fashion_mnist("test", root=test_split_copy)
    assert str(test_split_copy / TEST_FILES[1]) in str(error.value)
    assert "git checkout" in str(error.value)


def test_altered_file_fails_the_checksum_naming_it(test_split_copy):
    path = test_split_copy / TEST_FILES[0]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(data.DataError, match="sha256") as error:
        data.load_fashion_mnist("test", root=test_split_copy)
    assert str(path) in str(error.value) and "git checkout" in str(error.value)


def test_truncated_gzip_is_reported_even_without_checksum(test_split_copy):
    path = test_split_copy / TEST_FILES[0]
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(data.DataError, match="gunzip") as error:
        data.load_fashion_mnist("test", root=test_split_copy, verify=False)
    assert str(path) in str(error.value)


def _write_idx(path, magic, sizes, payload=b""):
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(f">{1 + len(sizes)}i", magic, *sizes) + payload)


def test_wrong_magic_number_is_a_data_error(test_split_copy):
    path = test_split_copy / TEST_FILES[1]
    _write_idx(path, 2051, [10000], bytes(10000))
    with pytest.raises(data.DataError, match="magic number is 2051, expected 2049") as error:
        data.load_fashion_mnist("test", root=test_split_copy, verify=False)
    assert str(path) in str(error.value)


def test_wrong_example_count_is_a_data_error(test_split_copy):
    path = test_split_copy / TEST_FILES[1]
    _write_idx(path, 2049, [9999], bytes(9999))
    with pytest.raises(data.DataError, match="expected \\[10000\\]") as error:
        data.load_fashion_mnist("test", root=test_split_copy, verify=False)
    assert str(path) in str(error.value)


def test_short_payload_is_a_data_error(test_split_copy):
    path = test_split_copy / TEST_FILES[1]
    _write_idx(path, 2049, [10000], bytes(5000))
    with pytest.raises(data.DataError, match="5000 data bytes"):
        data.load_fashion_mnist("test", root=test_split_copy, verify=False)


# --- preprocessing and the dataset -------------------------------------------------------

def test_preprocess_pads_to_32_and_scales_to_minus_one_one(test_split):
    images = test_split[0][:64]
    x = data.preprocess(images)
    assert x.shape == (64, 1, 32, 32) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert data.preprocess(torch.full((1, 28, 28), 255, dtype=torch.uint8))[0, 0, 2:30, 2:30].eq(1).all()
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert x[:, 0, border].eq(-1).all()
    assert torch.equal(x[:, 0, 2:30, 2:30], images.float() / 127.5 - 1)


def test_preprocess_rejects_float_input():
    with pytest.raises(ValueError, match="uint8"):
        data.preprocess(torch.zeros(2, 28, 28))


def test_fashion_mnist_dataset_items_are_preprocessed_images_and_labels(test_split):
    dataset = data.FashionMNIST("test")
    x, y = dataset[7]
    assert len(dataset) == 10000 and dataset.num_classes == 10 and dataset.in_channels == 1
    assert dataset.classes == data.FASHION_MNIST_CLASSES
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, data.preprocess(test_split[0][7:8])[0]) and y == test_split[1][7]
    batch_x, batch_y = dataset.get_batch(torch.tensor([7, 3]))
    assert torch.equal(batch_x[0], x) and torch.equal(batch_y, test_split[1][[7, 3]])


def test_fashion_mnist_hflip_mirrors_about_half_the_items():
    flipping, plain = data.FashionMNIST("test", hflip=True), data.FashionMNIST("test")
    torch.manual_seed(0)
    pairs = [(flipping[i][0], plain[i][0]) for i in range(200)]
    assert all(torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in pairs)
    assert 60 < sum(not torch.equal(a, b) for a, b in pairs) < 140


def test_build_dataset_rejects_unknown_names_and_other_sizes_for_fashion_mnist(tmp_path):
    with pytest.raises(ValueError, match="fashion-mnist"):
        data.build_dataset("cifar-10")
    with pytest.raises(ValueError, match="padded to 32"):
        data.build_dataset("fashion-mnist", image_size=28)
    assert isinstance(data.build_dataset("fashion-mnist", split="test"), data.FashionMNIST)


# --- image folders and the ADM centre crop ----------------------------------------------

def _random_image(width, height, mode="RGB", seed=0):
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


@pytest.fixture()
def image_folder(tmp_path):
    """Three classes, deliberately created out of alphabetical order, with mixed sizes and formats."""
    layout = {"cat": [("a.png", 40, 20), ("b.JPG", 17, 33)],
              "ant": [("c.jpeg", 64, 64)],
              "bee": [("nested/d.bmp", 20, 50), ("e.webp", 33, 33), ("f.PNG", 9, 12)]}
    for class_name, files in layout.items():
        for seed, (name, width, height) in enumerate(files):
            path = tmp_path / class_name / name
            path.parent.mkdir(parents=True, exist_ok=True)
            _random_image(width, height, seed=seed).save(path)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_labels_follow_sorted_folder_names(image_folder):
    dataset = data.ImageFolder(image_folder, image_size=16)
    assert dataset.classes == ("ant", "bee", "cat") and dataset.num_classes == 3 and dataset.in_channels == 3
    assert len(dataset) == 6
    labels = [int(dataset[i][1]) for i in range(len(dataset))]
    assert labels == [0, 1, 1, 1, 2, 2]
    for i in range(len(dataset)):
        x, y = dataset[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.min() >= -1 and x.max() <= 1


def test_image_folder_grayscale_gives_one_channel(image_folder):
    dataset = data.build_dataset(str(image_folder), image_size=8)
    assert isinstance(dataset, data.ImageFolder)
    x, _ = data.ImageFolder(image_folder, image_size=8, channels=1)[0]
    assert x.shape == (1, 8, 8)


def test_image_folder_errors_name_what_is_wrong(image_folder, tmp_path):
    (image_folder / "dog").mkdir()
    with pytest.raises(ValueError, match="dog"):
        data.ImageFolder(image_folder, image_size=8)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.ImageFolder(tmp_path / "nowhere", image_size=8)
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        data.ImageFolder(tmp_path / "flat", image_size=8)
    with pytest.raises(ValueError, match="image_size"):
        data.ImageFolder(image_folder, image_size=0)


@pytest.mark.parametrize("wide", [True, False])
def test_center_crop_keeps_the_centre_of_a_non_square_image(wide):
    pixels = np.zeros((30, 90, 3), dtype=np.uint8)  # black, with a white 30×30 centre square
    pixels[:, 30:60] = 255
    if not wide:
        pixels = pixels.transpose(1, 0, 2).copy()  # 90 tall, 30 wide
    crop = data.center_crop_arr(Image.fromarray(pixels), 15)
    assert crop.shape == (15, 15, 3) and crop.dtype == np.uint8
    inner = crop[:, 1:-1] if wide else crop[1:-1, :]
    assert inner.min() > 230  # white throughout, up to bicubic ringing at the edges


def test_center_crop_halves_with_box_filter_while_the_short_side_is_at_least_twice_the_size():
    image = _random_image(64, 32)
    expected = np.asarray(image.resize((32, 16), resample=Image.BOX))[:, 8:24]
    assert np.array_equal(data.center_crop_arr(image, 16), expected)


def test_center_crop_resizes_short_side_bicubically_and_keeps_a_channel_axis_for_grayscale():
    image = _random_image(30, 20, mode="L")
    expected = np.asarray(image.resize((24, 16), resample=Image.BICUBIC))[:, 4:20, None]
    assert np.array_equal(data.center_crop_arr(image, 16), expected)


# --- the reproducible batch stream --------------------------------------------------------

class IndexDataset(torch.utils.data.Dataset):
    """Item i is (a 1×2×2 image whose left column holds i and right column -1, label i)."""

    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return torch.tensor([[[index, -1.0], [index, -1.0]]]), index


def _take(stream, count):
    return [next(stream) for _ in range(count)]


def _indices(x):
    """Recover item indices and flip flags from an IndexDataset batch."""
    flipped = x[:, 0, 0, 0] == -1
    return torch.where(flipped, x[:, 0, 0, 1], x[:, 0, 0, 0]).long(), flipped


def test_stream_is_deterministic_for_a_seed_and_differs_across_seeds():
    dataset = IndexDataset(20)
    first = _take(data.infinite_batches(dataset, 4, seed=3, hflip=True), 6)
    again = _take(data.infinite_batches(dataset, 4, seed=3, hflip=True), 6)
    other = _take(data.infinite_batches(dataset, 4, seed=4, hflip=True), 6)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))


def test_every_index_appears_once_per_epoch_in_a_new_order():
    dataset = IndexDataset(10)
    batches = _take(data.infinite_batches(dataset, 3, seed=0), 6)  # 3 batches per epoch, 1 item dropped
    epochs = [torch.cat([b[1] for b in batches[:3]]), torch.cat([b[1] for b in batches[3:]])]
    for labels in epochs:
        assert len(set(labels.tolist())) == 9
    assert not torch.equal(epochs[0], epochs[1])
    full = torch.cat([b[1] for b in _take(data.infinite_batches(dataset, 3, seed=0, drop_last=False), 4)])
    assert sorted(full.tolist()) == list(range(10))


def test_resuming_at_step_k_reproduces_the_kth_batch_across_epoch_boundaries_with_flips():
    dataset = IndexDataset(10)
    fresh = _take(data.infinite_batches(dataset, 3, seed=7, hflip=True), 10)
    for start in (1, 2, 3, 4, 8):
        resumed = _take(data.infinite_batches(dataset, 3, seed=7, start_step=start, hflip=True), 2)
        for offset, (x, y) in enumerate(resumed):
            assert torch.equal(x, fresh[start + offset][0]) and torch.equal(y, fresh[start + offset][1])


def test_flips_mirror_about_half_the_images_and_keep_labels_aligned():
    dataset = IndexDataset(100)
    x, y = next(data.infinite_batches(dataset, 100, seed=1, hflip=True))
    indices, flipped = _indices(x)
    assert torch.equal(indices, y)
    assert 30 < int(flipped.sum()) < 70
    x, _ = next(data.infinite_batches(dataset, 100, seed=1))
    assert not _indices(x)[1].any()


def test_flip_pattern_changes_from_step_to_step():
    dataset = IndexDataset(64)
    masks = [_indices(x)[1] for x, _ in _take(data.infinite_batches(dataset, 64, seed=2, hflip=True), 3)]
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])


def test_fashion_mnist_fast_path_matches_item_by_item_gathering():
    dataset = data.FashionMNIST("test")
    x, y = next(data.infinite_batches(dataset, 32, seed=0, hflip=True))
    assert x.shape == (32, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    generator = torch.Generator().manual_seed(data.derived_seed(0, "epoch", 0))
    indices = torch.randperm(len(dataset), generator=generator)[:32]
    items = torch.stack([dataset[i][0] for i in indices.tolist()])
    assert torch.equal(y, dataset.labels[indices])
    assert all(torch.equal(x[i], items[i]) or torch.equal(x[i], items[i].flip(-1)) for i in range(32))


def test_stream_refuses_a_dataset_that_flips_by_itself_and_tiny_datasets():
    with pytest.raises(ValueError, match="hflip=False"):
        next(data.infinite_batches(data.FashionMNIST("test", hflip=True), 8))
    with pytest.raises(ValueError, match="smaller than batch_size"):
        next(data.infinite_batches(IndexDataset(3), 4))


def test_examples_returns_the_first_images_of_each_requested_class():
    from ditlib.data import FashionMNIST

    ds = FashionMNIST("test")
    x, y = ds.examples(per_class=2, classes=[3, 7])
    assert x.shape == (4, 1, 32, 32) and y.tolist() == [3, 3, 7, 7]
    first_sevens = torch.nonzero(ds.labels == 7).flatten()[:2]
    assert torch.equal(x[2:], ds.get_batch(first_sevens)[0])
