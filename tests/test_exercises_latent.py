"""Specification of the check of lesson 04's `scaled_latents`: a written-out solution passes, each typical mistake
is named, the library's routines that build the training latents are refused, and the global RNG is left alone."""
import sys

import torch

from ditlib.course.checks_latent import check_scaled_latents
from ditlib.course.feedback import CHECKS, Feedback
from ditlib.latents import encode_dataset
from ditlib.vae import LatentCodec, estimate_scale_factor
from exercise_helpers import fails_with


def scaled_latents(codec, images, generator):
    q = codec.encode(images)                                       # q(z|x): mean, std, each (N, C, h, w)
    eps = torch.randn(q.mean.shape, generator=generator)           # ε ~ N(0, I), (N, C, h, w)
    z = q.mean + q.std * eps                                       # unscaled posterior samples
    s = 1.0 / z.std().item()                                       # one number over all elements
    return z * s, s


def _variant(what):
    """scaled_latents with one typical mistake."""
    def fn(codec, images, generator):
        q = codec.encode(images)
        eps = torch.randn(q.mean.shape, generator=generator)
        sample = q.mean + q.std * eps
        if what == "mean":
            s = 1.0 / q.mean.std().item()
            return q.mean * s, s
        if what == "per_channel":
            s = 1.0 / sample.std(dim=(0, 2, 3), keepdim=True)
            return sample * s, s
        if what == "per_channel_z":
            return sample / sample.std(dim=(0, 2, 3), keepdim=True), 1.0 / sample.std().item()
        if what == "scale_on_means":
            s = 1.0 / q.mean.std().item()
            return sample * s, s
        if what == "std_divided":
            s = sample.std().item()
            return sample / s, s
        if what == "std_multiplied":
            s = sample.std().item()
            return sample * s, s
        if what == "unscaled":
            return sample, 1.0 / sample.std().item()
        if what == "divided_by_s":
            s = 1.0 / sample.std().item()
            return sample / s, s
        if what == "global_rng":
            z = q.mean + q.std * torch.randn_like(q.mean)
            return z / z.std(), 1.0 / z.std().item()
        if what == "two_draws":
            s = 1.0 / q.sample(generator).std().item()
            return q.sample(generator) * s, s
        if what == "variance":
            z = q.mean + q.std.square() * eps
            return z / z.std(), 1.0 / z.std().item()
        if what == "stored_factor":
            return sample * codec.scale_factor, codec.scale_factor
        if what == "rms":
            s = 1.0 / sample.square().mean().sqrt().item()
            return sample * s, s
        if what == "tensor_s":
            s = 1.0 / sample.std()
            return sample * s, s
        if what == "z_only":
            return sample / sample.std()
        raise ValueError(what)
    fn.__name__ = what
    return fn


def _fails_with(fn, *phrases):
    return fails_with(check_scaled_latents, fn, *phrases)


def test_the_written_out_solution_passes_and_matches_the_posterior_sample():
    assert CHECKS["scaled_latents"] is check_scaled_latents
    fb = check_scaled_latents(scaled_latents)
    assert fb.passed, fb.message
    assert "scaled_latents" in fb.message and "3 test cases" in fb.message


def test_posterior_sample_biased_std_and_float64_are_accepted():
    def with_sample(codec, images, generator):                    # the posterior's own .sample is allowed
        z = codec.encode(images).sample(generator)
        s = float(1 / z.double().std(correction=0))
        return z * s, s
    assert check_scaled_latents(with_sample).passed


def test_the_check_codec_has_a_posterior_std_that_tells_mean_from_sample():
    from ditlib.course.checks_latent import _test_codec
    codec = _test_codec(torch.Generator().manual_seed(40))
    assert isinstance(codec, LatentCodec)
    q = codec.encode(torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert q.std.median() > 0.3 * q.mean.std()                     # σ is a good fraction of the spread of μ
    assert abs(1 / (q.mean + q.std * torch.randn(q.mean.shape)).std() - codec.scale_factor) > 0.2


def test_sample_mistakes_are_named():
    _fails_with(_variant("mean"), "posterior mean, not a sample", "DiT trains on posterior samples")
    _fails_with(_variant("global_rng"), "another ε", "torch.randn(mean.shape, generator=generator) once")
    _fails_with(_variant("two_draws"), "another ε", "once")
    _fails_with(_variant("variance"), "exp(logvar / 2)")


def test_scale_mistakes_are_named():
    _fails_with(_variant("per_channel"), "one per channel", "z.std(dim=(0, 2, 3))")
    _fails_with(_variant("per_channel_z"), "each channel by its own std")
    _fails_with(_variant("scale_on_means"), "posterior means instead of the samples")
    _fails_with(_variant("std_divided"), "z is right", "standard deviation itself", "1 / std")
    _fails_with(_variant("std_multiplied"), "standard deviation itself", "reciprocal")
    _fails_with(_variant("unscaled"), "forgot to scale", "z·s")
    _fails_with(_variant("divided_by_s"), "divided the samples by s")
    _fails_with(_variant("stored_factor"), "codec.scale_factor")
    _fails_with(_variant("rms"), "subtract the mean")


def test_wrong_return_types_are_named():
    _fails_with(_variant("tensor_s"), "0-d tensor", "Python float")
    _fails_with(_variant("z_only"), "single array", "pair (z, s)")
    _fails_with(lambda c, x, g: [scaled_latents(c, x, g)[0]], "list of length 1", "pair (z, s)")
    _fails_with(lambda c, x, g: (scaled_latents(c, x, g)[0], "1.0"), "Your s is a str")
    _fails_with(lambda c, x, g: (scaled_latents(c, x, g)[0].numpy(), 1.0), "NumPy")
    _fails_with(lambda c, x, g: (scaled_latents(c, x, g)[0][:, :1], 1.0), "shape", "(N, C, h, w)")
    _fails_with(lambda c, x, g: torch.randn(x.shape, generator=g) + c.encode(x).mean, "RuntimeError", "q.mean.shape")


def _refused(fn, *phrases):
    before = sys.getprofile()
    fb = _fails_with(fn, "Your function calls", "yourself", *phrases)
    assert sys.getprofile() is before
    return fb


def test_the_library_shortcuts_are_refused():
    class Images(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i], 0

    def via_estimate(codec, images, generator):
        s = estimate_scale_factor(codec, Images(images), num_images=len(images))
        return codec.encode(images).sample(generator) * s, s

    def via_encode_dataset(codec, images, generator):
        cache = encode_dataset(codec, Images(images), progress=False)
        z = cache["mean"][:, 0].float() + cache["std"][:, 0].float() * torch.randn(cache["mean"][:, 0].shape,
                                                                                   generator=generator)
        return z / z.std(), 1.0 / z.std().item()

    def via_encode_sample(codec, images, generator):
        z = codec.encode_sample(images, generator) / codec.scale_factor
        return z / z.std(), 1.0 / z.std().item()

    _refused(via_estimate, "estimate_scale_factor")
    _refused(via_encode_dataset, "encode_dataset")
    _refused(via_encode_sample, "codec.encode_sample")


def test_the_check_leaves_the_global_random_state_alone():
    for fn in (scaled_latents, _variant("global_rng")):
        state = torch.random.get_rng_state()
        check_scaled_latents(fn)
        assert torch.equal(state, torch.random.get_rng_state()), fn.__name__
