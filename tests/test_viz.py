"""The lessons' plotting helpers: they draw what the library computes and reject what they cannot draw."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ditlib.course import viz  # noqa: E402
from ditlib.diffusion import create_diffusion  # noqa: E402
from ditlib.models import get_2d_sincos_pos_embed  # noqa: E402


def _images(n=3, channels=1, size=8):
    return torch.linspace(-1, 1, n * channels * size * size).reshape(n, channels, size, size)


def test_show_images_lays_out_rows_and_maps_minus_one_to_black():
    fig = viz.show_images(_images(5), nrow=2, titles=["a", "b", "c", "d", "e"])
    axes = fig.axes
    assert len(axes) == 6                                       # 3 rows × 2 columns, the last one blank
    shown = axes[0].images[0].get_array()
    assert shown.min() == pytest.approx(0.0) and shown.max() <= 1.0
    assert [ax.get_title() for ax in axes[:5]] == ["a", "b", "c", "d", "e"]


def test_show_images_refuses_latents_with_a_hint():
    with pytest.raises(ValueError, match="decode latents"):
        viz.show_images(torch.zeros(2, 4, 8, 8))


def test_noising_strip_uses_the_given_q_sample_and_one_noise_per_image():
    diffusion = create_diffusion("")
    calls = []

    def q_sample(x, t, noise):
        calls.append((t.clone(), noise))
        return diffusion.q_sample(x, t, noise)

    fig = viz.noising_strip(_images(2), q_sample, timesteps=[0, 500, 999])
    assert len(fig.axes) == 6
    assert [int(t[0]) for t, _ in calls] == [0, 500, 999]
    assert all(noise is calls[0][1] for _, noise in calls)


def test_plot_schedules_draws_alpha_bar_and_log_snr():
    abar = create_diffusion("").alphas_cumprod.numpy()
    fig = viz.plot_schedules({"linear": abar})
    line_abar, line_snr = fig.axes[0].lines[0], fig.axes[1].lines[0]
    assert np.allclose(line_abar.get_ydata(), abar)
    assert np.allclose(line_snr.get_ydata(), np.log10(abar / (1 - abar)))


def test_show_patches_numbers_tokens_and_rejects_bad_patch_sizes():
    fig = viz.show_patches(_images(1, size=8)[0], patch_size=4)
    labels = sorted(int(t.get_text()) for t in fig.axes[0].texts)
    assert labels == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="not divisible"):
        viz.show_patches(_images(1, size=8)[0], patch_size=3)


def test_show_pos_embed_similarity_peaks_at_the_chosen_token():
    grid = 4
    fig = viz.show_pos_embed(get_2d_sincos_pos_embed(16, grid), grid, token=5)
    similarity = fig.axes[1].images[0].get_array()             # the right panel
    assert similarity.shape == (grid, grid)
    assert np.unravel_index(np.argmax(similarity), similarity.shape) == divmod(5, grid)


def test_timestep_slider_redraws_when_t_changes():
    diffusion = create_diffusion("")
    seen = []

    def q_sample(x, t, noise):
        seen.append(int(t[0]))
        return diffusion.q_sample(x, t, noise)

    box = viz.timestep_slider(_images(2), q_sample, diffusion.alphas_cumprod.numpy(), t=100)
    slider = box.children[0]
    slider.value = 900
    assert seen == [100, 900]
    assert (slider.min, slider.max) == (0, 999)
