"""Looking inside a DiT: attention maps, adaLN-Zero gates, the training loss by t, sampler trajectories.

Each quantity is computed from the library's own modules (`ditlib.models`, `ditlib.diffusion`) without
changing them, and each has a plot that returns a matplotlib Figure:

* `attention_maps` / `plot_attention`: a block's self-attention over the patch grid (§3.2 "DiT block design",
  Figure 3) for one image at several noise levels t (lesson 06);
* `adaln_gates` / `plot_adaln_gates`: the gates α₁, α₂ that adaLN-Zero regresses from c = t_emb + y_emb,
  per block, as a function of t (§3.2 "adaLN-Zero block", lesson 06);
* `loss_by_t` / `plot_loss_by_t`: the two terms of the hybrid loss (L_simple and L_vlb, §2 and §4)
  averaged over bins of t (lesson 07);
* `trajectories` / `plot_trajectories`: the x̂_0 predictions along a DDPM and a DDIM chain started from
  the same x_T (§4 "sampling", lesson 08).

The interactive versions are in `ditlib.course.widgets`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

from ..diffusion import create_diffusion, randn
from ..errors import ConfigError
from ..models import DiT
from .viz import as_numpy_images, imshow


def _device(model: DiT) -> torch.device:
    return next(model.parameters()).device


def _per_image(value, n: int, device) -> torch.Tensor:
    """An int, a sequence or a tensor -> a (n,) long tensor (one timestep or label per image)."""
    value = torch.as_tensor(value, device=device)
    if value.dtype.is_floating_point:
        raise ConfigError("timesteps and labels must be integers")
    value = value.long().reshape(-1)
    if value.numel() == 1:
        value = value.expand(n)
    if value.shape != (n,):
        raise ConfigError(f"expected one value or {n} (one per image); got {value.numel()}")
    return value


def model_timestep(diffusion, t: int) -> int:
    """The timestep value the model sees for step `t` of a (possibly respaced) diffusion."""
    timestep_map = getattr(diffusion, "timestep_map", None)
    return int(timestep_map[t]) if timestep_map is not None else int(t)


#################################################################################
#                       Attention maps over the patch grid                      #
#################################################################################

class _Captured(Exception):
    """Raised by the hook once the block's attention input is captured: the rest of the forward is skipped."""


@torch.no_grad()
def attention_maps(model: DiT, x: torch.Tensor, t, y, block: int = -1, query: int | None = None) -> torch.Tensor:
    """The self-attention probabilities softmax(q·kᵀ/√d) of one DiT block (§3.2, Figure 3), per head.

    x: (N, C, I, I) the model's input x_t; t, y: one int or (N,) timesteps (the model's values) and labels.
    Returns (N, heads, T', T') with T' = T = (I/p)² tokens (T + 2 for in-context blocks, whose last two tokens
    are t_emb and y_emb); with `query` only that query's row, (N, heads, T'). Each row sums to 1.
    The block's `attn` input is captured by a forward pre-hook and the scores are recomputed from `attn.qkv`,
    exactly as `Attention.forward` does inside `scaled_dot_product_attention`. The model is not changed.
    """
    attn = model.blocks[block].attn
    device = _device(model)
    x = x.to(device)
    t, y = _per_image(t, len(x), device), _per_image(y, len(x), device)
    captured = {}

    def hook(module, args):
        captured["input"] = args[0]                                           # (N, T', D) after norm1/modulate
        raise _Captured

    handle = attn.register_forward_pre_hook(hook)
    was_training = model.training
    model.eval()                                                              # no label dropout
    try:
        model(x, t, y)
    except _Captured:
        pass
    finally:
        handle.remove()
        model.train(was_training)
    inp = captured["input"].float()
    B, T, D = inp.shape
    heads = attn.num_heads
    qkv = F.linear(inp, attn.qkv.weight.float(), attn.qkv.bias.float()).reshape(B, T, 3, heads, D // heads)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)                            # each (N, heads, T', d)
    probs = torch.softmax(q @ k.transpose(-2, -1) * (D // heads) ** -0.5, dim=-1)   # (N, heads, T', T')
    return probs if query is None else probs[:, :, query]


def _display(x: torch.Tensor, decode: Callable | None) -> np.ndarray:
    """(1, C, H, W) model input -> (H', W', 1|3) in [0, 1]: decoded when `decode` is given, else channel 0
    of a latent (4 channels cannot be drawn as one image)."""
    if decode is not None:
        with torch.no_grad():
            x = decode(x).clamp(-1, 1)
    elif x.shape[1] not in (1, 3):
        x = x[:, :1]
    return as_numpy_images(x.detach().float().cpu())[0]


def draw_attention_row(axes, model: DiT, x_t: torch.Tensor, model_t: int, y, block: int = -1,
                       query: int | None = None, decode: Callable | None = None) -> None:
    """Draw one row of `plot_attention` on three axes: x_t, the head-averaged attention of the query patch
    on the (I/p × I/p) grid, and the two overlaid. x_t: (1, C, I, I); `model_t` the model's timestep."""
    grid = model.x_embedder.grid_size
    T = grid * grid
    query = (grid // 2) * grid + grid // 2 if query is None else query      # default: the centre patch
    if not 0 <= query < T:
        raise ConfigError(f"query must be an image patch in [0, {T - 1}]; got {query}")
    probs = attention_maps(model, x_t, model_t, y, block=block, query=query)[0].mean(0)   # (T',) over heads
    att = probs[:T].reshape(grid, grid).cpu().numpy()                          # (I/p, I/p)
    extra = "" if probs.numel() == T else f", to [t, y] tokens: {float(probs[T:].sum()):.2f}"
    image = _display(x_t, decode)                                             # (H, W, 1|3)
    size = image.shape[0] / grid                                              # one patch in displayed pixels
    r, c = divmod(query, grid)
    extent = (-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5)
    imshow(axes[0], image)
    axes[1].imshow(att, cmap="viridis", vmin=0, interpolation="nearest")
    axes[1].set(xticks=[], yticks=[])
    imshow(axes[2], image)
    axes[2].imshow(att, cmap="inferno", alpha=0.6, extent=extent, interpolation="nearest")
    for ax, s in ((axes[0], size), (axes[1], 1), (axes[2], size)):
        ax.add_patch(Rectangle((c * s - 0.5, r * s - 0.5), s, s, fill=False, ec="red", lw=1.5))
    axes[0].set_ylabel(f"t = {model_t}", fontsize=9)
    axes[0].set_title(f"x_t (query patch {query} in red)", fontsize=8)
    axes[1].set_title(f"attention, max {att.max():.2f} (uniform {1 / probs.numel():.2f}){extra}", fontsize=8)
    axes[2].set_title("overlay on x_t", fontsize=8)


def plot_attention(model: DiT, x: torch.Tensor, t_values: Sequence[int], y, block: int = -1,
                   query: int | None = None, diffusion=None, seed: int = 0, decode: Callable | None = None):
    """Rows = timesteps t; columns = x_t, where the query patch looks (heads averaged), the overlay (§3.2).

    x: the clean x_0 of one image, (C, I, I) or (1, C, I, I) (only the first of a batch is used); it is noised
    to x_t = q_sample(x_0, t, ε) with one fixed ε (`seed`) by `diffusion` (default: the 1000-step training
    process; `t_values` index its steps). `query` defaults to the centre patch; `decode` turns latents into
    pixels for display (e.g. `codec.decode`). Returns the Figure (3 axes per t).
    """
    x0 = (x[None] if x.ndim == 3 else x[:1]).to(_device(model))                # (1, C, I, I)
    y = torch.as_tensor(y, dtype=torch.long).reshape(-1)[:1]                  # (1,)
    diffusion = create_diffusion("") if diffusion is None else diffusion
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0.device)
    fig, axes = plt.subplots(len(t_values), 3, figsize=(8.4, 2.6 * len(t_values)), squeeze=False)
    for row, step in enumerate(t_values):
        x_t = diffusion.q_sample(x0, torch.full((1,), int(step), dtype=torch.long, device=x0.device), noise)
        draw_attention_row(axes[row], model, x_t, model_timestep(diffusion, int(step)), y, block, query, decode)
    index = block % len(model.blocks)
    fig.suptitle(f"self-attention of block {index} ({model.block}) from one patch, as the noise level t grows",
                 fontsize=10)
    fig.tight_layout()
    return fig


#################################################################################
#                          adaLN-Zero gates against t                           #
#################################################################################

@torch.no_grad()
def adaln_gates(model: DiT, t_values: Sequence[int], y) -> dict:
    """Mean |α₁| (attention gate) and |α₂| (MLP gate) of every adaLN-Zero block for each t (§3.2).

    c = t_emb(t) + y_emb(y) (what `model.condition` builds) goes through each block's `adaLN_modulation`;
    the gates are its 3rd and 6th chunks of D. y: one label or several (the gates are then averaged over them).
    Returns {"t": (K,), "attn": (depth, K), "mlp": (depth, K)} numpy arrays of mean |α| over the D channels.
    A freshly initialised adaLN-Zero model has all gates 0: every block starts as the identity.
    """
    if model.block != "adaLN-Zero":
        raise ConfigError(f"this model uses {model.block!r} blocks, which have no gates α: only adaLN-Zero "
                          "regresses them (§3.2); build the model with block='adaLN-Zero'")
    device = _device(model)
    t = torch.as_tensor(list(t_values), dtype=torch.long, device=device)        # (K,)
    y = torch.as_tensor(y, dtype=torch.long, device=device).reshape(-1)         # (B,)
    t_emb = model.t_embedder(t)                                                # (K, D)
    y_emb = model.y_embedder(y, False)                                         # (B, D)
    c = (t_emb[:, None] + y_emb[None]).reshape(len(t) * len(y), -1)             # (K·B, D)
    attn, mlp = [], []
    for block in model.blocks:
        chunks = block.adaLN_modulation(c.to(block.adaLN_modulation[-1].weight.dtype)).chunk(6, dim=1)  # 6 × (K·B, D)
        for store, gate in ((attn, chunks[2]), (mlp, chunks[5])):
            store.append(gate.float().abs().mean(1).reshape(len(t), len(y)).mean(1).cpu().numpy())   # (K,)
    return {"t": t.cpu().numpy(), "attn": np.stack(attn), "mlp": np.stack(mlp)}


def plot_adaln_gates(gates: dict):
    """Two panels against t, one line per block: mean |α₁| (attention branch) and |α₂| (MLP branch) (§3.2)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    depth = len(gates["attn"])
    colors = plt.cm.viridis(np.linspace(0, 0.9, depth))
    for ax, key, name in ((axes[0], "attn", "α₁, attention branch"), (axes[1], "mlp", "α₂, MLP branch")):
        for i in range(depth):
            ax.plot(gates["t"], gates[key][i], color=colors[i], marker=".", label=f"block {i}")
        ax.set(xlabel="timestep t")
        ax.set_title(f"gate {name}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean |α|")
    if depth <= 12:
        axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("adaLN-Zero gates regressed from c = t_emb + y_emb: mean |α| over the D channels, per block",
                 fontsize=10)
    fig.tight_layout()
    return fig


#################################################################################
#                         The training loss binned by t                         #
#################################################################################

@torch.no_grad()
def loss_by_t(model: DiT, diffusion, x_start: torch.Tensor, y, num_bins: int = 10, samples_per_bin: int = 16,
              seed: int = 0) -> dict:
    """The hybrid loss's terms (mse = L_simple, vb = L_vlb; §2, §4) of `diffusion.training_losses`, per t-bin.

    The T steps are cut into `num_bins` equal bins; each bin gets `samples_per_bin` timesteps spread evenly
    over it, applied to the same (x_0, y, ε) pairs (x_start rows in turn, ε from a private generator seeded
    with `seed`), so the bins differ only in t. Model in eval mode (no label dropout), no gradients.
    Returns numpy arrays: "bin_edges" (num_bins + 1,), "t_centers", "mse", "vb", "loss" (num_bins,) and the
    per-sample "t_samples", "mse_samples", "vb_samples" (num_bins, samples_per_bin).
    """
    if num_bins < 1 or samples_per_bin < 1:
        raise ConfigError("num_bins and samples_per_bin must be at least 1")
    device = _device(model)
    steps = diffusion.num_timesteps
    if num_bins > steps:
        raise ConfigError(f"{num_bins} bins for {steps} timesteps: use at most {steps}")
    rows = torch.arange(samples_per_bin) % len(x_start)
    x = x_start[rows].to(device)                                               # (S, C, H, W)
    labels = _per_image(y, len(x_start), "cpu")[rows].to(device)               # (S,)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    edges = np.linspace(0, steps, num_bins + 1).round().astype(int)
    t_all, mse, vb = [], [], []
    was_training = model.training
    model.eval()
    try:
        for lo, hi in zip(edges[:-1], edges[1:]):
            t = torch.from_numpy(np.linspace(lo, hi - 1, samples_per_bin).round().astype(np.int64)).to(device)  # (S,)
            terms = diffusion.training_losses(model, x, t, model_kwargs={"y": labels}, noise=noise)
            t_all.append(t.cpu().numpy())
            mse.append(terms["mse"].float().cpu().numpy())
            vb.append(terms["vb"].float().cpu().numpy() if "vb" in terms else np.zeros(samples_per_bin))
    finally:
        model.train(was_training)
    mse, vb = np.stack(mse), np.stack(vb)                                       # (num_bins, S)
    return {"bin_edges": edges, "t_centers": (edges[:-1] + edges[1:] - 1) / 2, "mse": mse.mean(1),
            "vb": vb.mean(1), "loss": (mse + vb).mean(1), "t_samples": np.stack(t_all),
            "mse_samples": mse, "vb_samples": vb}


def plot_loss_by_t(result: dict):
    """The mean mse (L_simple) and vb (L_vlb) terms per t-bin on a log scale, each sample as a faint dot (§2, §4)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for key, color, name in (("mse", "tab:blue", "mse = ‖ε − ε_θ‖²  (L_simple)"),
                             ("vb", "tab:orange", "vb = L_vlb term (trains Σ only)")):
        if not np.any(result[key] > 0):                                      # fixed Σ: no vb term
            continue
        samples = result[f"{key}_samples"]
        ax.scatter(result["t_samples"].ravel(), np.maximum(samples.ravel(), 1e-12), s=4, color=color, alpha=0.25)
        ax.plot(result["t_centers"], result[key], marker="o", color=color, label=name)
    ax.set_yscale("log")
    ax.set(xlabel="timestep t (bin centres; dots: single samples)", ylabel="loss term (mean over the bin)",
           title="Where the training loss comes from: its terms by timestep t")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


#################################################################################
#                        DDPM and DDIM x̂_0 trajectories                        #
#################################################################################

def _ddim_progressive(diffusion, model_fn, noise, clip_denoised, model_kwargs, eta, generator):
    """`ddim_sample_loop` one step at a time: yields `ddim_sample`'s dict (with "t") for t = K−1 … 0."""
    img = noise
    for i in reversed(range(diffusion.num_timesteps)):
        t = torch.full((len(img),), i, device=img.device, dtype=torch.long)
        out = diffusion.ddim_sample(model_fn, img, t, clip_denoised, None, model_kwargs, eta, generator)
        img = out["sample"]
        yield {**out, "t": i}


@torch.no_grad()
def trajectories(model: DiT, diffusion_ddpm, diffusion_ddim, labels, seed: int = 0, every: int = 1,
                 decode: Callable | None = None, clip_denoised: bool | None = None, cfg_scale: float = 1.0,
                 eta: float = 0.0) -> dict:
    """x̂_0 along a DDPM and a DDIM chain from the same x_T: {"DDPM": [...], "DDIM": [...]} of (N, C, H, W).

    Each chain draws x_T and its step noise from a fresh `torch.Generator` seeded with `seed`, as
    `ditlib.sample.sample_images` does, so both start from the same x_T and the last DDIM x̂_0 equals
    `sample_images(model, labels, sampler="ddim", seed=seed, ...)` (at t = 0 DDIM returns x̂_0 itself).
    Entry i is the prediction made at the i-th model call (kept when i % every == 0, and always the last),
    so position j of a list is at progress j / (len − 1). The diffusions come from `create_diffusion("50")`
    and `create_diffusion("ddim50")`. `decode` (latent models, e.g. `codec.decode`) is applied to every kept
    x̂_0 and the result clamped to [−1, 1]; `clip_denoised` defaults to True for pixels, False with `decode`.
    """
    device = _device(model)
    labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    n = len(labels)
    shape = (n, model.in_channels, model.input_size, model.input_size)
    clip = (decode is None) if clip_denoised is None else clip_denoised
    forward, kwargs = model.forward, {"y": labels}
    if cfg_scale > 1.0:                                      # [conditional; null class] halves, as sample_images
        kwargs = {"y": torch.cat([labels, torch.full_like(labels, model.num_classes)])}
        forward = lambda x, t, y: model.forward_with_cfg(x, t, y, cfg_scale)  # noqa: E731
    was_training = model.training
    model.eval()
    result = {}
    try:
        for name, diffusion in (("DDPM", diffusion_ddpm), ("DDIM", diffusion_ddim)):
            generator = torch.Generator(device=device).manual_seed(seed)
            z = randn(shape, generator=generator, device=device)             # x_T, (N, C, I, I)
            z = torch.cat([z, z]) if cfg_scale > 1.0 else z
            if name == "DDPM":
                chain = diffusion.p_sample_loop_progressive(forward, z.shape, noise=z, clip_denoised=clip,
                                                            model_kwargs=kwargs, device=device, generator=generator)
            else:
                chain = _ddim_progressive(diffusion, forward, z, clip, kwargs, eta, generator)
            steps, preds = diffusion.num_timesteps, []
            for i, out in enumerate(chain):
                if i % every == 0 or i == steps - 1:
                    x0 = out["pred_xstart"][:n]                               # (N, C, I, I)
                    preds.append((decode(x0).clamp(-1, 1) if decode is not None else x0).float().cpu())
            result[name] = preds
    finally:
        model.train(was_training)
    return result


def plot_trajectories(traj: dict, num_columns: int = 6):
    """Rows = samplers × images, columns = progress 0 … 100 %: how x̂_0 sharpens along each chain (§4)."""
    names = list(traj)
    n = len(traj[names[0]][0])
    fractions = np.linspace(0, 1, num_columns)
    fig, axes = plt.subplots(len(names) * n, num_columns, figsize=(1.3 * num_columns + 0.6, 1.3 * len(names) * n + 0.5),
                             squeeze=False)
    for s, name in enumerate(names):
        chain = traj[name]
        for j, f in enumerate(fractions):
            k = round(f * (len(chain) - 1))
            for i, image in enumerate(as_numpy_images(chain[k])):
                ax = axes[s * n + i, j]
                imshow(ax, image)
                if j == 0:
                    ax.set_ylabel(f"{name} #{i}", fontsize=8)
                if s * n + i == 0:
                    ax.set_title(f"{100 * f:.0f}%", fontsize=8)
    fig.suptitle("x̂_0 along each sampler's chain from the same x_T\n(left: first step, right: last)", fontsize=9)
    fig.tight_layout()
    return fig
