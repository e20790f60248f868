"""Specification of ditlib.latents: posteriors are cached once per (VAE, dataset), and every draw from the
cache is a fresh latent sample of the requested orientation. Uses a tiny untrained VAE, so it runs in seconds."""
import pytest
import torch

from ditlib import latents
from ditlib.data import FashionMNIST, infinite_batches
from ditlib.latents import LatentDataset, dataset_identity, load_or_encode
from ditlib.vae import LatentCodec
from ditlib.vae_train import build_vae


def small_images(count=48, start=0):
    """The first `count` Fashion-MNIST test images (from `start`), as an in-memory FashionMNIST."""
    images = FashionMNIST("test")
    images.images, images.labels = images.images[start:start + count], images.labels[start:start + count]
    return images


def tiny_codec(seed=0, scale_factor=1.5):
    return LatentCodec(build_vae("vae-debug", seed=seed), scale_factor=scale_factor, image_size=32)


@pytest.fixture()
def cached(tmp_path):
    codec, images = tiny_codec(), small_images()
    return codec, images, load_or_encode(codec, images, cache_dir=tmp_path, progress=False, precision="fp32")


def test_latent_dataset_describes_what_the_dit_sees(cached):
    codec, images, dataset = cached
    assert len(dataset) == 48 and dataset.num_classes == 10
    assert dataset.in_channels == 4 and dataset.image_size == 8 and dataset.latent_shape == codec.latent_shape
    assert dataset.mean.shape == (48, 2, 4, 8, 8) and dataset.mean.dtype == torch.float16
    z, y = dataset.get_batch(torch.tensor([0, 5]))
    assert z.shape == (2, 4, 8, 8) and z.dtype == torch.float32 and torch.equal(y, images.labels[[0, 5]])


def test_each_draw_is_a_fresh_sample_around_the_same_posterior_mean(cached):
    codec, images, dataset = cached
    index = torch.tensor([3])
    first, _ = dataset.get_batch(index)
    second, _ = dataset.get_batch(index)
    assert not torch.allclose(first, second)                  # a new ε every epoch, not one frozen sample
    draws, _ = dataset.get_batch(index.repeat(4000))           # (4000, 4, 8, 8)
    q = codec.encode(images.get_batch(index)[0])
    torch.testing.assert_close(draws.mean(0), 1.5 * q.mean[0], atol=0.1 * 1.5 * q.std.max().item(), rtol=0)
    torch.testing.assert_close(draws.std(0), 1.5 * q.std[0], atol=0.01, rtol=0.05)


def test_a_generator_makes_draws_reproducible(cached):
    _, _, dataset = cached
    a, _ = dataset.get_batch(torch.arange(8), generator=torch.Generator().manual_seed(7))
    b, _ = dataset.get_batch(torch.arange(8), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_flip_mask_selects_the_posterior_of_the_mirrored_image_not_a_mirrored_latent(cached):
    codec, images, dataset = cached
    x = images.get_batch(torch.arange(4))[0]
    flip = torch.tensor([True, False, True, False])
    expected = torch.where(flip.view(-1, 1, 1, 1), codec.encode(x.flip(-1)).mean, codec.encode(x).mean) * 1.5
    torch.testing.assert_close(dataset.posterior_mean(torch.arange(4), flip), expected, atol=0.01, rtol=0.005)
    mirrored_latents = dataset.posterior_mean(torch.arange(4)).flip(-1)
    assert not torch.allclose(dataset.posterior_mean(torch.arange(4), flip)[0], mirrored_latents[0], atol=0.05)


def test_the_same_vae_and_dataset_reuse_the_cache_without_encoding(cached, tmp_path, monkeypatch):
    codec, images, dataset = cached
    monkeypatch.setattr(latents, "encode_dataset", lambda *a, **k: pytest.fail("re-encoded a valid cache"))
    again = load_or_encode(tiny_codec(), small_images(), cache_dir=tmp_path, progress=False, precision="fp32")
    assert again.path == dataset.path and torch.equal(again.mean, dataset.mean)


def test_a_vae_with_different_weights_rebuilds_the_cache(cached, tmp_path):
    codec, images, dataset = cached
    other = load_or_encode(tiny_codec(seed=1), images, cache_dir=tmp_path, progress=False, precision="fp32")
    assert other.path != dataset.path
    assert not torch.allclose(other.mean.float(), dataset.mean.float())
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_a_changed_dataset_rebuilds_the_cache(cached, tmp_path):
    codec, images, dataset = cached
    assert dataset_identity(small_images(start=1)) != dataset_identity(images)
    other = load_or_encode(codec, small_images(start=1), cache_dir=tmp_path, progress=False, precision="fp32")
    assert other.path != dataset.path
    torch.testing.assert_close(other.mean[0], dataset.mean[1])


def test_a_corrupt_cache_file_is_rebuilt(cached, tmp_path):
    codec, images, dataset = cached
    weights = dataset.path.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:-64] + bytes(64))
    rebuilt = load_or_encode(codec, images, cache_dir=tmp_path, progress=False, precision="fp32")
    assert torch.equal(rebuilt.mean, dataset.mean)


def test_scale_factor_comes_from_the_codec_not_the_cache(cached, tmp_path):
    codec, images, dataset = cached
    rescaled = load_or_encode(tiny_codec(scale_factor=3.0), images, cache_dir=tmp_path, progress=False, precision="fp32")
    assert rescaled.path == dataset.path
    torch.testing.assert_close(rescaled.posterior_mean([0]), 2.0 * dataset.posterior_mean([0]))


def test_infinite_batches_can_stream_a_latent_dataset(cached):
    _, _, dataset = cached
    x, y = next(infinite_batches(dataset, batch_size=16, seed=0))
    assert x.shape == (16, 4, 8, 8) and y.shape == (16,)


def test_malformed_posteriors_are_rejected():
    with pytest.raises(ValueError, match=r"\(N, 2, C, h, w\)"):
        LatentDataset(torch.zeros(4, 4, 8, 8), torch.zeros(4, 4, 8, 8), torch.zeros(4, dtype=torch.long), 1.0)


def test_a_latent_run_resumes_exactly(cached, tmp_path):
    from ditlib.checkpoints import load_checkpoint
    from ditlib.configs import get_config
    from ditlib.train import list_checkpoints, train

    _, _, dataset = cached
    cfg = get_config("debug").replace(model="DiT-debug/2", image_size=8, in_channels=4, vae="unused-in-this-test",
                                      batch_size=8, ckpt_every=3, log_every=3, hflip=True)
    train(cfg, tmp_path / "a", max_steps=6, progress=False, dataset=dataset)
    train(cfg, tmp_path / "b", max_steps=3, progress=False, dataset=dataset)
    train(cfg, tmp_path / "b", max_steps=6, resume=True, progress=False, dataset=dataset)
    a, _ = load_checkpoint(list_checkpoints(tmp_path / "a")[-1])
    b, _ = load_checkpoint(list_checkpoints(tmp_path / "b")[-1])
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "ema.")))


def test_the_encoders_precision_is_part_of_the_cache_key(cached, tmp_path):
    """A cache encoded under bf16 autocast is not the fp32 one: each precision gets its own entry."""
    codec, images, fp32 = cached
    bf16 = load_or_encode(codec, images, cache_dir=tmp_path, progress=False, precision="bf16")
    assert bf16.path != fp32.path
    assert latents.cache_key(codec, dataset_identity(images), "fp32") != latents.cache_key(codec, dataset_identity(images), "bf16")
    torch.testing.assert_close(bf16.posterior_mean(torch.arange(4)), fp32.posterior_mean(torch.arange(4)), atol=0.1, rtol=0.1)


def test_encoding_in_small_channels_last_batches_gives_each_images_own_posterior():
    """encode_dataset's layout and batch size are a speed choice only: every image's stored posterior is what
    the encoder gives that image alone in the default layout (up to the cache's float16), and the VAE is left as
    it was found."""
    codec, images = tiny_codec(), small_images(count=10)
    out = latents.encode_dataset(codec, images, batch_size=4, progress=False)       # batches of 4, 4, 2
    for i in (0, 5, 9):
        x = images.get_batch(torch.tensor([i]))[0]
        for side, view in enumerate((x, x.flip(-1))):
            q = codec.encode(view)
            torch.testing.assert_close(out["mean"][i, side].float(), q.mean[0], atol=2e-3, rtol=2e-3)
            torch.testing.assert_close(out["std"][i, side].float(), q.std[0], atol=2e-3, rtol=2e-3)
    assert out["labels"].tolist() == images.labels[:10].tolist()
    assert all(p.is_contiguous() for p in codec.vae.parameters())
