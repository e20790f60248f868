"""Interactive views for the lessons, each with a static counterpart that reads on a rendered page.

| widget                  | static counterpart                    | lesson | paper                      |
|-------------------------|---------------------------------------|--------|----------------------------|
| `attention_widget`      | `inspect_model.plot_attention`        | 06     | §3.2, Figure 3             |
| `trajectory_scrubber`   | `inspect_model.plot_trajectories`     | 08     | §4 (sampling)              |
| `min_snr_explorer`      | `plot_min_snr`                        | 07     | beyond the paper (Hang et al. 2023); §4 |
| `memory_explorer`       | `plot_memory`                         | 11     | §4 "Compute", Table 4      |

Every widget returns an ipywidgets box (display it as a cell's last expression). ipywidgets is imported
inside the functions, so `ditlib.course.widgets` imports without it. Each box counts its redraws in
`box.redraws` and keeps the last figure it drew (closed, so none pile up) in `box.figure`.

`plot_block_designs` (lesson 06) is a static figure with no widget: a picker over the four designs showed
nothing it does not.
"""
from __future__ import annotations

from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..flops import block_design_table
from ..models import BLOCK_DESIGNS, DiT
from . import inspect_model
from .viz import as_numpy_images, imshow, block_diagrams


def _redrawing_box(controls: Sequence, render: Callable, rows: Sequence | None = None):
    """VBox([*rows, output]) (rows default to the controls); on every change of a control's value the output
    shows `render()`, a new Figure."""
    import ipywidgets as widgets

    out = widgets.Output()
    box = widgets.VBox([*(controls if rows is None else rows), out])
    box.redraws, box.figure = 0, None

    def redraw(change=None):
        fig = render()
        out.outputs = ()                  # replace the picture (state sync, like append_display_data)
        out.append_display_data(fig)      # by value, not captured: see `viz.choice_widget`
        plt.close(fig)                    # one figure per redraw, none left behind
        box.redraws += 1
        box.figure = fig

    for control in controls:
        control.observe(redraw, names="value")
    redraw()
    return box


#################################################################################
#                    Attention over the patch grid, against t                   #
#################################################################################

def attention_widget(model: DiT, x0: torch.Tensor, y, diffusion, block: int = -1, query: int | None = None,
                     t: int | None = None, seed: int = 0, decode: Callable | None = None):
    """Drag t (and pick a block and a query patch): x_t, where the patch attends, and the overlay (§3.2, Figure 3).

    x0: one clean image (C, I, I) or (1, C, I, I), noised to x_t = q_sample(x_0, t, ε) by `diffusion` with one
    ε fixed by `seed`, so only the noise level changes as t moves. `decode` (e.g. `codec.decode`) shows
    latents as pixels. Static counterpart: `inspect_model.plot_attention(model, x0, [t1, t2, ...], y)`.
    """
    import ipywidgets as widgets

    device = next(model.parameters()).device
    x0 = (x0[None] if x0.ndim == 3 else x0[:1]).to(device)                    # (1, C, I, I)
    y = torch.as_tensor(y, dtype=torch.long).reshape(-1)[:1]                   # (1,)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    grid = model.x_embedder.grid_size
    steps = diffusion.num_timesteps
    t_slider = widgets.IntSlider(value=steps // 2 if t is None else t, min=0, max=steps - 1, description="t",
                                 continuous_update=False, layout=widgets.Layout(width="60%"))
    block_menu = widgets.Dropdown(options=list(range(len(model.blocks))), value=block % len(model.blocks),
                                  description="block")
    query_slider = widgets.IntSlider(value=(grid // 2) * grid + grid // 2 if query is None else query, min=0,
                                     max=grid * grid - 1, description="query patch", continuous_update=False)

    def render():
        step = t_slider.value
        x_t = diffusion.q_sample(x0, torch.full((1,), step, dtype=torch.long, device=device), noise)   # (1, C, I, I)
        fig, axes = plt.subplots(1, 3, figsize=(8.4, 2.8))
        inspect_model.draw_attention_row(axes, model, x_t, inspect_model.model_timestep(diffusion, step), y,
                                         block_menu.value, query_slider.value, decode)
        fig.suptitle(f"block {block_menu.value} self-attention of patch {query_slider.value} at t = {step}", fontsize=10)
        fig.tight_layout()
        return fig

    return _redrawing_box([t_slider, block_menu, query_slider], render,
                          rows=[t_slider, widgets.HBox([block_menu, query_slider])])


#################################################################################
#                      DDPM vs DDIM: x̂_0 along the chain                       #
#################################################################################

def trajectory_scrubber(traj: dict, value: float = 1.0, what: str = "x̂_0"):
    """One slider over the progress fraction 0 … 1: every chain's x̂_0 at that point, side by side (§4).

    `what` names the images in the title (e.g. "x_t" for the states of a chain rather than its x̂_0 guesses).

    `traj` is `inspect_model.trajectories(...)`; a chain of length L is shown at entry round(f · (L − 1)),
    so chains of different lengths (250 DDPM vs 50 DDIM steps) line up by progress.
    Static counterpart: `inspect_model.plot_trajectories(traj)`.
    """
    import ipywidgets as widgets

    names = list(traj)
    longest = max(len(chain) for chain in traj.values())
    slider = widgets.FloatSlider(value=value, min=0.0, max=1.0, step=1 / max(longest - 1, 1), description="progress",
                                 readout_format=".0%", continuous_update=False, layout=widgets.Layout(width="60%"))

    def render():
        f = slider.value
        n = len(traj[names[0]][0])
        fig, axes = plt.subplots(len(names), n, figsize=(1.4 * n + 0.8, 1.5 * len(names) + 0.4), squeeze=False)
        for row, name in enumerate(names):
            chain = traj[name]
            k = round(f * (len(chain) - 1))
            for ax, image in zip(axes[row], as_numpy_images(chain[k])):          # chain[k]: (N, C, H, W)
                imshow(ax, image)
            axes[row, 0].set_ylabel(f"{name}\nentry {k + 1}/{len(chain)}", fontsize=8)
        fig.suptitle(f"{what} at {100 * f:.0f}% of each chain (same x_T)", fontsize=9)
        fig.tight_layout()
        return fig

    return _redrawing_box([slider], render)


#################################################################################
#                    The four block designs, with their costs                   #
#################################################################################

def _design_costs(name: str, input_size, in_channels, model_kwargs) -> dict:
    """{design: (params, gflops)} from `ditlib.flops.block_design_table`."""
    return {design: (params, gflops) for design, params, gflops
            in block_design_table(name, input_size, in_channels, **model_kwargs)}


def _cost_line(design: str, params: int, gflops: float) -> str:
    return f"{design}\n{params / 1e6:.2f} M params, {gflops:.4g} Gflops"


def plot_block_designs(name: str = "DiT-XL/2", input_size: int | None = None, in_channels: int | None = None,
                       **model_kwargs):
    """The four block diagrams of §3.2 (Figure 3), each titled with its params and Gflops for config `name`
    (Figure 5's comparison; `ditlib.flops.block_design_table`)."""
    costs = _design_costs(name, input_size, in_channels, model_kwargs)
    fig = block_diagrams(BLOCK_DESIGNS)
    for ax, design in zip(fig.axes, BLOCK_DESIGNS):
        ax.set_title(_cost_line(design, *costs[design]), fontsize=9)
    fig.suptitle(f"The four DiT block designs of §3.2 for {name}", fontsize=11)
    fig.tight_layout()
    return fig


#################################################################################
#              Min-SNR-γ weighting and the learning-rate schedule               #
#################################################################################

MIN_SNR_GAMMAS = ("off", "1", "2", "5", "10", "20")


def _gamma_label(gamma) -> str:
    return "off" if gamma is None else f"{gamma:g}"


def _snr(diffusion) -> np.ndarray:
    """SNR_t = ᾱ_t / (1 − ᾱ_t) for t = 0 … T − 1, from the diffusion's alphas_cumprod."""
    abar = torch.as_tensor(diffusion.alphas_cumprod, dtype=torch.float64).cpu().numpy()
    return abar / (1.0 - abar)


def _eps_weight(diffusion, t: np.ndarray, gamma) -> np.ndarray:
    """w_t on ‖ε − ε̂‖²: 1 without min-SNR (gamma None), else min(SNR_t, γ)/SNR_t (`diffusion.min_snr_weight`)."""
    t = np.asarray(t)
    if gamma is None:
        return np.ones(t.shape)
    flat = diffusion.min_snr_weight(torch.as_tensor(t.ravel(), dtype=torch.long), gamma)
    return flat.double().numpy().reshape(t.shape)


def loss_shares(by_t: dict, diffusion, gamma) -> np.ndarray:
    """Each t-bin's share of the training loss w_t·mse + vb (as `training_losses` forms it, t ~ U{0 … T − 1}),
    from the per-sample terms of `inspect_model.loss_by_t`, for min-SNR `gamma` (None: w_t = 1). Sums to 1."""
    w = _eps_weight(diffusion, by_t["t_samples"], gamma)                        # (bins, samples)
    per_bin = (w * by_t["mse_samples"] + by_t["vb_samples"]).mean(1) * np.diff(by_t["bin_edges"])
    return per_bin / per_bin.sum()


def _draw_weights(ax, diffusion, gammas) -> None:
    snr = _snr(diffusion)
    t = np.arange(len(snr))
    for i, gamma in enumerate(gammas):
        label, color = _gamma_label(gamma), "gray" if gamma is None else f"C{i}"
        name = "unweighted" if gamma is None else f"γ = {label}"
        w = _eps_weight(diffusion, t, gamma)
        ax.plot(t, w, color=color, lw=1.8, gid=f"eps:{label}", label=f"{name}: w_t on ‖ε − ε̂‖²")
        ax.plot(t, w * snr, color=color, lw=1.2, ls="--", gid=f"x0:{label}",
                label=f"{name}: w_t·SNR_t on ‖x₀ − x̂₀‖²")
    ax.set_yscale("log")
    ax.set(xlabel="timestep t", ylabel="weight (log scale)", title="The weight of each t in the loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")


def _draw_shares(ax, by_t: dict, diffusion, gammas) -> None:
    edges = by_t["bin_edges"]
    for i, gamma in enumerate(gammas):
        label, color = _gamma_label(gamma), "gray" if gamma is None else f"C{i}"
        share = loss_shares(by_t, diffusion, gamma)
        name = "unweighted" if gamma is None else f"γ = {label}"
        ax.stairs(100 * share, edges, color=color, lw=1.8, gid=f"share:{label}",
                  label=f"{name}: t < {edges[1]} gives {share[0]:.0%}")
    ax.set(xlabel="timestep t (the bins of loss_by_t)", ylabel="% of the training loss",
           title="Each t's share of w_t·mse + vb (this model's errors)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def plot_min_snr(by_t: dict, diffusion, gammas: Sequence = (None, 5)):
    """Min-SNR-γ weighting for a few γ (None: the paper's w_t = 1), two panels: the weight min(SNR_t, γ)/SNR_t on
    the ε error and the resulting weight min(SNR_t, γ) on the x̂₀ error against t (log scale); and each t-bin's
    share of the training loss w_t·mse + vb with the errors measured by `inspect_model.loss_by_t` (`by_t`).
    SNR_t from `diffusion.alphas_cumprod`, w_t from `diffusion.min_snr_weight`. Static counterpart of
    `min_snr_explorer`."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    _draw_weights(axes[0], diffusion, gammas)
    _draw_shares(axes[1], by_t, diffusion, gammas)
    fig.tight_layout()
    return fig


def lr_schedule(steps: int, warmup_steps: int, lr: float, final_lr_ratio: float, schedule: str) -> np.ndarray:
    """`ditlib.train.lr_at` at every step 0 … steps − 1 of a run of `steps` steps."""
    from ..configs import TrainConfig
    from ..train import lr_at

    config = TrainConfig(name="lr schedule", model="DiT-T/2", lr=lr, warmup_steps=warmup_steps,
                         lr_schedule=schedule, final_lr_ratio=final_lr_ratio, max_steps=steps)
    return np.array([lr_at(config, step) for step in range(steps)])


def min_snr_explorer(by_t: dict, diffusion, steps: int = 6000, warmup_steps: int = 200, lr: float = 7e-4,
                     final_lr_ratio: float = 0.1, gamma: float | None = 5.0, schedule: str = "cosine"):
    """Pick min-SNR γ (off, 1, 2, 5, 10, 20), the lr schedule and its warm-up: the weights per t, each t-bin's
    share of the training loss for this γ (the unweighted case for reference), and the learning rate per step.

    `by_t` is `inspect_model.loss_by_t(...)`: its measured errors are reweighted, the model held fixed (a model
    trained with another γ would have its own errors). The learning rate is `ditlib.train.lr_at` for a run of
    `steps` steps from `lr`, cosine down to lr·final_lr_ratio. Static counterpart: `plot_min_snr(by_t, diffusion)`.
    """
    import ipywidgets as widgets
    from ..train import LR_SCHEDULES

    gamma_buttons = widgets.ToggleButtons(options=list(MIN_SNR_GAMMAS), value=_gamma_label(gamma),
                                          description="min-SNR γ")
    schedule_menu = widgets.Dropdown(options=list(LR_SCHEDULES), value=schedule, description="lr schedule")
    warmup_slider = widgets.IntSlider(value=warmup_steps, min=0, max=1000, step=10, description="warm-up",
                                      continuous_update=False)

    def render():
        chosen = None if gamma_buttons.value == "off" else float(gamma_buttons.value)
        gammas = (None,) if chosen is None else (None, chosen)
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
        _draw_weights(axes[0], diffusion, gammas)
        _draw_shares(axes[1], by_t, diffusion, gammas)
        warmup = warmup_slider.value
        axes[2].plot(np.arange(steps), lr_schedule(steps, warmup, lr, final_lr_ratio, schedule_menu.value), gid="lr")
        if warmup:
            axes[2].axvline(warmup, color="gray", ls=":", lw=1)
        axes[2].set(xlabel="optimiser step", ylabel="learning rate", ylim=(0, lr * 1.08),
                    title=f"{schedule_menu.value} lr, {warmup} warm-up steps (ditlib.train.lr_at)")
        axes[2].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        axes[2].grid(alpha=0.3)
        fig.tight_layout()
        return fig

    return _redrawing_box([gamma_buttons, schedule_menu, warmup_slider], render,
                          rows=[gamma_buttons, widgets.HBox([schedule_menu, warmup_slider])])


#################################################################################
#            Memory and compute per GPU: batch, precision, checkpointing        #
#################################################################################

STATIC_BYTES_PER_PARAM = 20     # fp32 weight, gradient, AdamW's two moments and the EMA copy (lesson 11, §7)
BATCH_CHOICES = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
GPU_CHOICES = (1, 8, 64, 256)
MEMORY_SETTINGS = (             # plot_memory's default bars: the cases lesson 11 discusses
    dict(batch=32, num_gpus=8), dict(batch=32, num_gpus=8, fsdp=True), dict(batch=256),
    dict(batch=256, bf16=True), dict(batch=256, checkpointing=True), dict(batch=256, checkpointing=True, bf16=True))


def memory_per_gpu(num_params: int, activation_bytes_fp32: float, activation_bytes_checkpointed: float, batch: int,
                   num_gpus: int = 1, fsdp: bool = False, bf16: bool = False, checkpointing: bool = False):
    """(static, activation) bytes on one GPU: 20 bytes per parameter, 1/num_gpus of it under FSDP; batch × the
    bytes of one image (the checkpointed figure with checkpointing), halved for bf16 activations (the rule of
    thumb of lesson 11: bf16 stores most of them in 2 bytes). Activations are per GPU, never sharded."""
    static = STATIC_BYTES_PER_PARAM * num_params / (num_gpus if fsdp else 1)
    per_image = activation_bytes_checkpointed if checkpointing else activation_bytes_fp32
    return static, batch * per_image / (2 if bf16 else 1)


def step_compute(gflops_per_image: float, batch: int, checkpointing: bool = False) -> dict:
    """Tflops (the paper's convention: 10¹² multiply-adds) of one training step on one GPU, by pass: the forward,
    the backward (≈ 2 forwards) and, with checkpointing, the recomputed forward."""
    forward = gflops_per_image * batch / 1e3
    return {"forward": forward, "backward": 2 * forward, "recompute": forward if checkpointing else 0.0}


def _setting_label(batch, num_gpus=1, fsdp=False, bf16=False, checkpointing=False) -> str:
    return (f"{batch}/GPU × {num_gpus}\n{'FSDP' if fsdp else 'DDP'}, {'bf16' if bf16 else 'fp32'}"
            + (", ckpt" if checkpointing else ""))


def _draw_memory(ax, settings, memory, gpu_gb: float) -> None:
    """Stacked bars (GB) of static and activation memory per GPU, one per setting, against the GPU's capacity."""
    x = np.arange(len(settings))
    static, acts = (np.array([m[i] for m in memory]) / 1e9 for i in (0, 1))
    ax.bar(x, static, color="tab:gray", gid="static", label="static: 20 B/param (FSDP: ÷ GPUs)")
    ax.bar(x, acts, bottom=static, color="tab:blue", gid="activations", label="activations: batch × bytes/image")
    ax.axhline(gpu_gb, color="tab:red", ls="--", lw=1.2, label=f"GPU: {gpu_gb:g} GB")
    for xi, total in zip(x, static + acts):
        ax.text(xi, total, f"{total:.1f} GB" + ("" if total <= gpu_gb else "\ndoes not fit"), ha="center",
                va="bottom", fontsize=7)
    ax.set_xticks(x, [_setting_label(**s) for s in settings], fontsize=7)
    ax.set_ylim(0, max(gpu_gb, (static + acts).max()) * 1.2)
    ax.set(ylabel="GB per GPU (a lower bound)", title="Memory per GPU")
    ax.legend(fontsize=7, loc="upper left")


def _draw_compute(ax, settings, computes) -> None:
    x, bottom = np.arange(len(settings)), np.zeros(len(settings))
    for part, color in (("forward", "tab:green"), ("backward", "tab:olive"), ("recompute", "tab:purple")):
        heights = np.array([c[part] for c in computes])
        if not heights.any():                                   # no checkpointing: no recomputed forward
            continue
        ax.bar(x, heights, bottom=bottom, color=color, gid=part, label=part)
        bottom += heights
    ax.set_xticks(x, [_setting_label(**s) for s in settings], fontsize=7)
    ax.set(ylabel="Tflops per GPU per step (multiply-adds)",
           title="Compute per step: forward × batch × 3 (4 checkpointed)")
    ax.legend(fontsize=7, loc="upper left")


def plot_memory(num_params: int, activation_bytes_fp32: float, activation_bytes_checkpointed: float,
                gflops_per_image: float, settings: Sequence[dict] = MEMORY_SETTINGS, gpu_gb: float = 80):
    """Memory (`memory_per_gpu`) and compute (`step_compute`) per GPU for a few settings, each a dict of
    `memory_per_gpu`'s keywords (batch, num_gpus, fsdp, bf16, checkpointing). Static counterpart of
    `memory_explorer`."""
    settings = [dict(s) for s in settings]
    fig, (mem, comp) = plt.subplots(1, 2, figsize=(12, 4.2))
    _draw_memory(mem, settings, [memory_per_gpu(num_params, activation_bytes_fp32, activation_bytes_checkpointed,
                                                **s) for s in settings], gpu_gb)
    _draw_compute(comp, settings, [step_compute(gflops_per_image, s["batch"], s.get("checkpointing", False))
                                   for s in settings])
    fig.tight_layout()
    return fig


def _speed_text(tflops_per_step: float, peak: str) -> str:
    try:
        sustained = float(peak)
    except ValueError:
        sustained = 0.0
    if not sustained > 0:
        return "type a sustained Tflop/s above for the steps/s arithmetic" if not peak.strip() else \
            f"{peak!r} is not a positive number of Tflop/s"
    steps = sustained / (2 * tflops_per_step)                   # a GPU's Tflop/s count 2 flops per multiply-add
    return (f"at {sustained:g} Tflop/s sustained (2 flops per multiply-add): {steps:.3g} steps/s\n"
            "arithmetic, not a measurement: communication, data loading and the VAE left out")


def memory_explorer(num_params: int, activation_bytes_fp32: float, activation_bytes_checkpointed: float,
                    gflops_per_image: float, gpu_gb: float = 80, batch: int = 32, num_gpus: int = 8):
    """Per-GPU batch, GPUs, DDP/FSDP, fp32/bf16 activations and gradient checkpointing: a GPU's memory (static
    + activations, `memory_per_gpu`) against its capacity, and its compute per training step (`step_compute`).

    Type a sustained Tflop/s to see the steps per second it would give: arithmetic on the Gflops, not a measured
    speed. Static counterpart: `plot_memory(...)` (same arguments).
    """
    import ipywidgets as widgets

    batch_slider = widgets.SelectionSlider(options=sorted({*BATCH_CHOICES, batch}), value=batch,
                                           description="batch/GPU", continuous_update=False)
    gpus = widgets.ToggleButtons(options=list(GPU_CHOICES), value=num_gpus, description="GPUs")
    sharding = widgets.ToggleButtons(options=["DDP", "FSDP"], value="DDP", description="sharding")
    precision = widgets.ToggleButtons(options=["fp32", "bf16"], value="fp32", description="activations",
                                      tooltips=["4 bytes each", "bf16: about half (the lesson's rule of thumb)"])
    checkpointing = widgets.Checkbox(value=False, description="gradient checkpointing")
    peak = widgets.Text(value="", placeholder="e.g. your GPU's", description="Tflop/s", continuous_update=False)

    def render():
        setting = dict(batch=batch_slider.value, num_gpus=gpus.value, fsdp=sharding.value == "FSDP",
                       bf16=precision.value == "bf16", checkpointing=checkpointing.value)
        memory = memory_per_gpu(num_params, activation_bytes_fp32, activation_bytes_checkpointed, **setting)
        compute = step_compute(gflops_per_image, setting["batch"], setting["checkpointing"])
        fig, (mem, comp) = plt.subplots(1, 2, figsize=(10, 4.2))
        _draw_memory(mem, [setting], [memory], gpu_gb)
        _draw_compute(comp, [setting], [compute])
        comp.set_xlabel(_speed_text(sum(compute.values()), peak.value), fontsize=8)
        total = sum(memory) / 1e9
        fig.suptitle(f"global batch {setting['batch'] * setting['num_gpus']}: {total:.1f} GB per GPU, "
                     + ("fits" if total <= gpu_gb else "does not fit") + f" in {gpu_gb:g} GB", fontsize=10)
        fig.tight_layout()
        return fig

    return _redrawing_box([batch_slider, gpus, sharding, precision, checkpointing, peak], render,
                          rows=[widgets.HBox([batch_slider, gpus]), widgets.HBox([sharding, precision]),
                                widgets.HBox([checkpointing, peak])])
