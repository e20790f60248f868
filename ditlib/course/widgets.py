"""Interactive views for the lessons, each with a static counterpart that reads on a rendered page.

| widget                  | static counterpart                    | lesson | paper                      |
|-------------------------|---------------------------------------|--------|----------------------------|
| `attention_widget`      | `inspect_model.plot_attention`        | 06     | §3.2, Figure 3             |
| `trajectory_scrubber`   | `inspect_model.plot_trajectories`     | 08     | §4 (sampling)              |
| `block_design_picker`   | `plot_block_designs`                  | 06     | §3.2 "DiT block design", Figure 5 |

Every widget returns an ipywidgets box (display it as a cell's last expression). ipywidgets is imported
inside the functions, so `ditlib.course.widgets` imports without it. Each box counts its redraws in
`box.redraws` and keeps the last figure it drew (closed, so none pile up) in `box.figure`.
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
    (Figure 5's comparison; `ditlib.flops.block_design_table`). The static counterpart of `block_design_picker`."""
    costs = _design_costs(name, input_size, in_channels, model_kwargs)
    fig = block_diagrams(BLOCK_DESIGNS)
    for ax, design in zip(fig.axes, BLOCK_DESIGNS):
        ax.set_title(_cost_line(design, *costs[design]), fontsize=9)
    fig.suptitle(f"The four DiT block designs of §3.2 for {name}", fontsize=11)
    fig.tight_layout()
    return fig


def block_design_picker(name: str = "DiT-XL/2", input_size: int | None = None, in_channels: int | None = None,
                        value: str = "adaLN-Zero", **model_kwargs):
    """Toggle buttons over the four block designs (§3.2): the chosen design's diagram, and its parameter
    count and Gflops next to the others' for config `name` (`ditlib.flops.block_design_table`, Figure 5).
    Static counterpart: `plot_block_designs(name)`.
    """
    import ipywidgets as widgets

    costs = _design_costs(name, input_size, in_channels, model_kwargs)
    buttons = widgets.ToggleButtons(options=list(BLOCK_DESIGNS), value=value, description="block")

    def render():
        design = buttons.value
        fig = block_diagrams([design], height=5.0)
        diagram = fig.axes[0]
        diagram.set_title(_cost_line(design, *costs[design]), fontsize=9)
        fig.set_size_inches(7.5, 5.0)
        diagram.set_position([0.02, 0.05, 0.5, 0.85])
        bars = fig.add_axes([0.68, 0.15, 0.3, 0.65])                             # Gflops of every design
        gflops = np.array([costs[d][1] for d in BLOCK_DESIGNS])
        bars.barh(range(len(BLOCK_DESIGNS)), gflops,
                  color=["tab:orange" if d == design else "lightgray" for d in BLOCK_DESIGNS])
        bars.set_yticks(range(len(BLOCK_DESIGNS)), BLOCK_DESIGNS, fontsize=8)
        bars.invert_yaxis()                                                     # the paper's order, top down
        bars.set_xlim(0, gflops.max() * 1.6)
        for i, d in enumerate(BLOCK_DESIGNS):
            bars.text(gflops[i], i, f" {gflops[i]:.4g}\n {costs[d][0] / 1e6:.2f} M", va="center", fontsize=7)
        bars.set(xlabel="Gflops (one forward, batch 1)")
        bars.set_title(f"{name}: Gflops and params", fontsize=9)
        return fig

    return _redrawing_box([buttons], render)
