"""Plots and widgets the lessons share: image grids, noising strips, schedule curves, patch grids, sliders.

Every function takes tensors in the course's conventions (images (N, C, H, W) in [-1, 1]) and returns
the matplotlib Figure (or the ipywidgets object) so a notebook cell stays one line. Nothing here
computes diffusion quantities itself: the numbers come from `ditlib.diffusion`, `ditlib.models` and
`ditlib.flops`, so a plot always shows what the library does.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..data import FASHION_MNIST_CLASSES


def as_numpy_images(images) -> np.ndarray:
    """(N, C, H, W) or (C, H, W) tensor/array in [-1, 1] -> (N, H, W, C) float in [0, 1]."""
    x = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W); got {x.shape}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"can only draw 1- or 3-channel images; got {x.shape[1]} channels "
                         "(decode latents with the VAE first, or pick channels to show)")
    return np.clip((x.transpose(0, 2, 3, 1) + 1) / 2, 0, 1)


def imshow(ax, image: np.ndarray) -> None:
    """Draw one (H, W, C) image in [0, 1] without axes."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def show_images(images, nrow: int | None = None, titles: Sequence[str] | None = None, title: str | None = None,
                size: float = 1.2):
    """A grid of images ((N, C, H, W) in [-1, 1]), `nrow` per row, optional per-image titles."""
    x = as_numpy_images(images)
    n = len(x)
    ncol = nrow or min(n, 10)
    rows = math.ceil(n / ncol)
    fig, axes = plt.subplots(rows, ncol, figsize=(size * ncol, size * rows + (0.3 if title else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            imshow(ax, x[i])
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
        else:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def class_titles(labels) -> list[str]:
    """Fashion-MNIST class names for integer labels (the null class shows as '∅')."""
    names = list(FASHION_MNIST_CLASSES)
    return [names[int(y)] if int(y) < len(names) else "∅" for y in labels]


def noising_strip(x_start: torch.Tensor, q_sample: Callable, timesteps: Sequence[int], noise: torch.Tensor | None = None,
                  seed: int = 0, size: float = 1.1):
    """Each row one image, each column x_t = q_sample(x_0, t, ε) for t in `timesteps` (one fixed ε per image).

    `q_sample(x_start, t, noise)` is e.g. `diffusion.q_sample`; t is passed as a (N,) long tensor.
    """
    if noise is None:
        noise = torch.randn(x_start.shape, generator=torch.Generator().manual_seed(seed))
    n, cols = len(x_start), len(timesteps)
    fig, axes = plt.subplots(n, cols, figsize=(size * cols, size * n + 0.3), squeeze=False)
    for j, t in enumerate(timesteps):
        x_t = q_sample(x_start, torch.full((n,), int(t), dtype=torch.long), noise)     # (N, C, H, W)
        for i, image in enumerate(as_numpy_images(x_t)):
            imshow(axes[i, j], image)
        axes[0, j].set_title(f"t = {int(t)}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_schedules(alphas_cumprod: Mapping[str, np.ndarray], log_snr: bool = True):
    """ᾱ_t and SNR(t) = ᾱ_t / (1 − ᾱ_t) for each named schedule, side by side."""
    fig, (ax_a, ax_s) = plt.subplots(1, 2, figsize=(10, 3.2))
    for name, abar in alphas_cumprod.items():
        abar = np.asarray(abar, dtype=np.float64)
        t = np.arange(len(abar))
        ax_a.plot(t, abar, label=name)
        snr = abar / (1 - abar)
        ax_s.plot(t, np.log10(snr) if log_snr else snr, label=name)
    ax_a.set(xlabel="t", ylabel="ᾱ_t", title="signal kept: ᾱ_t = ∏ (1 − β_s)")
    ax_s.set(xlabel="t", ylabel="log₁₀ SNR(t)" if log_snr else "SNR(t)", title="signal-to-noise ratio ᾱ_t / (1 − ᾱ_t)")
    ax_s.axhline(0, color="gray", lw=0.5)
    for ax in (ax_a, ax_s):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_curves(curves: Mapping[str, Sequence[float]], x=None, xlabel: str = "step", ylabel: str = "",
                title: str | None = None, logy: bool = False, ax=None):
    """Several named 1-D curves on one axis (losses, FID against steps, …). Returns the Figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
    else:
        fig = ax.figure
    for name, values in curves.items():
        values = np.asarray(values, dtype=np.float64)
        ax.plot(np.arange(len(values)) if x is None else x, values, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    if len(curves) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def show_patches(image: torch.Tensor, patch_size: int, ax=None, title: str | None = None):
    """One image (C, H, W) with its patch grid drawn over it and each patch numbered in token order."""
    x = as_numpy_images(image)[0]
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.2, 3.2))
    else:
        fig = ax.figure
    imshow(ax, x)
    h, w = x.shape[:2]
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}×{w} is not divisible by patch size {patch_size}")
    for k in range(0, w + 1, patch_size):
        ax.axvline(k - 0.5, color="tab:orange", lw=0.8)
    for k in range(0, h + 1, patch_size):
        ax.axhline(k - 0.5, color="tab:orange", lw=0.8)
    grid_w = w // patch_size
    if (h // patch_size) * grid_w <= 64:                                     # numbers stay legible
        for r in range(h // patch_size):
            for c in range(grid_w):
                ax.text(c * patch_size + patch_size / 2 - 0.5, r * patch_size + patch_size / 2 - 0.5, str(r * grid_w + c),
                        color="tab:orange", ha="center", va="center", fontsize=7)
    tokens = (h // patch_size) * (w // patch_size)
    ax.set_title(title or f"p = {patch_size}: T = ({h}/{patch_size})² = {tokens} tokens", fontsize=9)
    return fig


def show_pos_embed(table: np.ndarray, grid_size: int, token: int | None = None):
    """The 2-D sin-cos table (T, D) as an image, and the cosine similarity of one token to all others."""
    table = np.asarray(table, dtype=np.float64)
    token = grid_size * (grid_size // 2) + grid_size // 2 if token is None else token
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    similarity = (unit @ unit[token]).reshape(grid_size, grid_size)
    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [2.2, 1]})
    im = ax_t.imshow(table, aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
    ax_t.set(xlabel="embedding dimension (column half | row half)", ylabel="token index", title="pos_embed (T × D)")
    fig.colorbar(im, ax=ax_t, fraction=0.03)
    im = ax_s.imshow(similarity, cmap="viridis", interpolation="nearest")
    r, c = divmod(token, grid_size)
    ax_s.plot(c, r, "r+", ms=10)
    ax_s.set(title=f"cosine similarity to token {token}", xticks=[], yticks=[])
    fig.colorbar(im, ax=ax_s, fraction=0.046)
    fig.tight_layout()
    return fig


def timestep_slider(x_start: torch.Tensor, q_sample: Callable, alphas_cumprod: np.ndarray, seed: int = 0,
                    t: int = 250):
    """An interactive view of q(x_t | x_0): drag t and see x_t, ᾱ_t, the SNR and the pixel histogram.

    The noise ε is drawn once, so moving the slider shows the same images losing their signal.
    Returns an ipywidgets box (display it as a cell's last expression).
    """
    import ipywidgets as widgets
    from IPython.display import display

    num_steps = len(alphas_cumprod)
    noise = torch.randn(x_start.shape, generator=torch.Generator().manual_seed(seed))
    slider = widgets.IntSlider(value=t, min=0, max=num_steps - 1, step=1, description="t",
                               continuous_update=False, layout=widgets.Layout(width="60%"))
    out = widgets.Output()

    def draw(change=None):
        step = slider.value
        x_t = q_sample(x_start, torch.full((len(x_start),), step, dtype=torch.long), noise)
        abar = float(alphas_cumprod[step])
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, len(x_t) + 1, figsize=(1.3 * len(x_t) + 2.6, 1.6),
                                     gridspec_kw={"width_ratios": [1] * len(x_t) + [2]})
            for ax, image in zip(axes, as_numpy_images(x_t)):
                imshow(ax, image)
            axes[-1].hist(x_t.flatten().numpy(), bins=40, range=(-4, 4), color="tab:blue")
            axes[-1].set_yticks([])
            axes[-1].set_title("pixel values", fontsize=8)
            fig.suptitle(f"t = {step}:  √ᾱ_t = {math.sqrt(abar):.3f},  √(1−ᾱ_t) = {math.sqrt(1 - abar):.3f},  "
                         f"SNR = {abar / (1 - abar):.3g}", fontsize=9)
            fig.tight_layout()
            display(fig)
            plt.close(fig)                                   # one figure per redraw, none left behind

    slider.observe(draw, names="value")
    draw()
    return widgets.VBox([slider, out])


def choice_widget(options: Sequence, draw: Callable, description: str = "", value=None):
    """Toggle buttons over `options`; `draw(option)` renders into an output area on every change."""
    import ipywidgets as widgets

    buttons = widgets.ToggleButtons(options=list(options), value=value if value is not None else options[0],
                                    description=description)
    out = widgets.Output()

    def render(change=None):
        # The figure goes into the output area by value (append_display_data), not by capturing output inside
        # `with out:`: JupyterLab 4 may handle a button click's two comm messages concurrently, and a captured
        # image can then be labelled with the other message and dropped (seen in tests/test_browser.py).
        before = set(plt.get_fignums())
        draw(buttons.value)
        figures = [plt.figure(n) for n in plt.get_fignums() if n not in before] or [plt.gcf()]
        out.outputs = ()                  # replace the picture (state sync, like append_display_data)
        for fig in figures:
            out.append_display_data(fig)
            plt.close(fig)

    buttons.observe(render, names="value")
    render()
    return widgets.VBox([buttons, out])


# The four DiT block designs of §3.2 (Figure 3) as boxes, bottom to top. "+" is a residual add; a box
# named in `_CONDITIONED` receives the conditioning (t, y) or vectors regressed from it.
BLOCK_DIAGRAMS = {
    "in-context": ["tokens ‖ [t, y]", "LayerNorm", "self-attention", "+", "LayerNorm", "MLP", "+", "after last block: drop [t, y]"],
    "cross-attention": ["tokens", "LayerNorm", "self-attention", "+", "LayerNorm", "cross-attn ← [t, y]", "+",
                        "LayerNorm", "MLP", "+"],
    "adaLN": ["tokens", "LayerNorm", "scale γ₁, shift β₁", "self-attention", "+", "LayerNorm", "scale γ₂, shift β₂",
              "MLP", "+"],
    "adaLN-Zero": ["tokens", "LayerNorm", "scale γ₁, shift β₁", "self-attention", "gate α₁", "+", "LayerNorm",
                   "scale γ₂, shift β₂", "MLP", "gate α₂", "+"],
}
_CONDITIONED = ("[t, y]", "γ", "α")
# Where the conditioning comes from (a box at the left) and which boxes it feeds (an arrow into each).
_CONDITION_SOURCE = {
    "in-context": ("t_emb, y_emb\nappended as 2 tokens\n(N, T+2, D)", lambda i, label: i == 0),
    "cross-attention": ("context\n[t_emb, y_emb]\n(N, 2, D):\nkeys, values", lambda i, label: "cross-attn" in label),
    "adaLN": ("c = t_emb + y_emb\n→ MLP →\n(γ, β) × 2", lambda i, label: "γ" in label),
    "adaLN-Zero": ("c = t_emb + y_emb\n→ MLP →\n(γ, β, α) × 2", lambda i, label: "γ" in label or "α" in label),
}


def block_diagrams(designs: Sequence[str] = tuple(BLOCK_DIAGRAMS), height: float = 5.5):
    """Boxes-and-arrows drawings of the DiT block designs (§3.2, Figure 3), one column each.

    Boxes that take the conditioning are orange; residual adds are circles, each with its skip connection
    (a gray arrow, gid "skip", from the branch's input around the branch to the "+"). The conditioning enters
    from the left (orange arrows, gid "condition"): c = t_emb + y_emb through the adaLN MLP into the modulated
    boxes (adaLN, adaLN-Zero), the [t, y] context into the cross-attention, or the two extra tokens
    (in-context). Returns the Figure.
    """
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path

    X, X_SKIP = 0.62, 0.96                                       # the main stack and the skips' vertical lines
    fig, axes = plt.subplots(1, len(designs), figsize=(3.3 * len(designs), height), squeeze=False)
    for ax, design in zip(axes[0], designs):
        steps = BLOCK_DIAGRAMS[design]
        ys = np.linspace(0.04, 0.92, len(steps))
        boxes = []
        for i, (label, y) in enumerate(zip(steps, ys)):
            if i:
                ax.annotate("", xy=(X, y - 0.025), xytext=(X, ys[i - 1] + 0.025),
                            arrowprops=dict(arrowstyle="->", color="gray"))
            conditioned = any(mark in label for mark in _CONDITIONED)
            style = dict(boxstyle="circle" if label == "+" else "round", ec="black",
                         fc="#ffcc80" if conditioned else ("white" if label == "+" else "#bbdefb"))
            boxes.append(ax.text(X, y, label, ha="center", va="center", fontsize=8, bbox=style))
            if label == "+":                                     # skip: from before the branch's LayerNorm
                start = max(j for j in range(i) if steps[j] == "LayerNorm")
                y_in = (ys[start - 1] + ys[start]) / 2
                path = Path([(X, y_in), (X_SKIP, y_in), (X_SKIP, y), (X + 0.045, y)])
                ax.add_patch(FancyArrowPatch(path=path, arrowstyle="->", mutation_scale=10, color="dimgray",
                                             lw=1, gid="skip"))
        text, feeds = _CONDITION_SOURCE[design]
        targets = [box for i, (box, label) in enumerate(zip(boxes, steps)) if feeds(i, label)]
        y_source = float(np.mean([box.get_position()[1] for box in targets]))
        source = ax.text(0.0, y_source, text, ha="left", va="center", fontsize=7,
                         bbox=dict(boxstyle="round", ec="tab:orange", fc="#fff3e0"))
        for box in targets:
            ax.annotate("", xy=(0, 0.5), xycoords=box, xytext=(1, 0.5), textcoords=source, gid="condition",
                        arrowprops=dict(arrowstyle="->", color="tab:orange", shrinkA=4, shrinkB=4))
        ax.set_title(design, fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.axis("off")
    fig.tight_layout()
    return fig


#################################################################################
#                        DiT against the U-Net (lesson 10)                      #
#################################################################################

FAMILY_COLORS = {"DiT": "tab:blue", "U-Net": "tab:orange"}
SIZE_LINESTYLES = ["-", "--", ":", "-."]


def fit_log_gflops(records: list[dict], family: str) -> tuple[float, float] | None:
    """(a, b) of the least-squares line FID = a + b·log10(Gflops) over a family's complete runs (every seed is a
    point); None with fewer than two distinct model sizes. b is the change of FID per tenfold Gflops."""
    points = [(math.log10(r["gflops"]), r["fid_1k"]) for r in records if r["family"] == family and r.get("complete")]
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - b * mx, b


def training_gflops(record: dict, step: int) -> float:
    """Training compute after `step` steps, as in Figure 9: forward Gflops × batch × steps × 3 (backward = 2 forwards)."""
    return record["gflops"] * record["batch_size"] * step * 3


def unet_vs_dit_figure(records: list[dict]):
    """DiT against the U-Net from run records (experiments/results/runs/*.json), three panels of FID-FMNIST
    without guidance: final FID against model Gflops with a line FID = a + b·log10(Gflops) fitted per family
    (Figure 8's question); FID along training against training compute (Figure 9's axis) and against CPU minutes."""
    fig, (ax_size, ax_compute, ax_time) = plt.subplots(1, 3, figsize=(13.5, 4.2))
    done = [r for r in records if r.get("complete")]
    for family, color in FAMILY_COLORS.items():
        runs = [r for r in done if r["family"] == family]
        by_size: dict[float, list[dict]] = {}
        for r in runs:
            by_size.setdefault(r["gflops"], []).append(r)
        sizes = sorted(by_size)
        ax_size.plot([r["gflops"] for r in runs], [r["fid_1k"] for r in runs], "o", color=color, alpha=0.45, ms=5)
        ax_size.plot(sizes, [sum(r["fid_1k"] for r in by_size[g]) / len(by_size[g]) for g in sizes], "-", color=color,
                     lw=1.5, label=f"{family} (mean over seeds)")
        line = fit_log_gflops(done, family)
        if line is not None:
            a, b = line
            xs = [min(sizes) / 1.3, max(sizes) * 1.3]
            ax_size.plot(xs, [a + b * math.log10(x) for x in xs], ":", color=color, lw=1.2,
                         label=f"{family} fit: {b:+.1f} FID per 10× Gflops")
        for i, g in enumerate(sizes):
            for r in by_size[g]:
                label = f"{r['model']} seed {r['seed']}"
                steps = [s["step"] for s in r["snapshots"]]
                fids = [s["fid"] for s in r["snapshots"]]
                style = dict(color=color, ls=SIZE_LINESTYLES[i % len(SIZE_LINESTYLES)], marker=".", alpha=0.85)
                ax_compute.plot([training_gflops(r, s) for s in steps], fids, label=label, **style)
                ax_time.plot([s["train_s"] / 60 for s in r["snapshots"]], fids, label=label, **style)
    for model in dict.fromkeys(r["model"] for r in done):                  # one label per model, at its seeds' mean
        fids = [r["fid_1k"] for r in done if r["model"] == model]
        at = (next(r["gflops"] for r in done if r["model"] == model), sum(fids) / len(fids))
        ax_size.annotate(model, at, xytext=(6, -3), textcoords="offset points", fontsize=7)
    ax_size.set_xscale("log")
    gflops = [r["gflops"] for r in done] or [0.01, 0.1]
    ax_size.set_xlim(min(min(gflops) / 2, 0.008), max(max(gflops) * 2, 0.2))   # a decade at least: S to L
    ax_size.set_xlabel("model Gflops (one forward pass, one image)")
    ax_size.set_title(f"final FID after {done[0]['steps'] if done else '?'} steps", fontsize=10)
    ax_compute.set_xscale("log")
    ax_compute.set_xlabel("training compute (Gflops × batch × steps × 3)")
    ax_compute.set_title("FID along training, by compute", fontsize=10)
    ax_time.set_xlabel("CPU minutes of training")
    ax_time.set_title("FID along training, by CPU time", fontsize=10)
    from matplotlib.ticker import LogLocator, ScalarFormatter

    for ax in (ax_size, ax_compute, ax_time):
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_ylabel("FID-FMNIST, N = 1,000, no guidance")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    cpus = list(dict.fromkeys(r["cpu"].removeprefix("CPU ") for r in done))
    fig.suptitle(f"DiT vs U-Net (diffusers' UNet2DModel) at matched Gflops, latent Fashion-MNIST, the default's "
                 f"recipe, fp32; DDIM 50\ntrained on " + "; ".join(
                     f"{cpu} ({', '.join(dict.fromkeys(r['model'] for r in done if r['cpu'].removeprefix('CPU ') == cpu))})"
                     for cpu in cpus), fontsize=8)
    fig.tight_layout()
    return fig
