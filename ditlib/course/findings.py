"""The paper's findings as figures, drawn from the experiments' summaries alone (lessons 06 and 10, experiments/plot.py).

Each function takes the entries of `experiments/results/block_designs.json` or `scaling_grid.json` (one per
finished run: model, block, seed, gflops, batch_size, fid_1k and the FID without guidance at every snapshot) and
returns a matplotlib Figure. Beside ours, a second panel shows the paper's own numbers (Table 4: ImageNet
256×256, 400K steps, FID-50K) for the shape of the result, labelled as such: the two are not on one scale.

    block_design_figure(entries)    Figure 5: FID against steps per design; the paper's FIDs per design
    scaling_steps_figure(entries)   Figure 6: FID against steps, one panel per patch and one per size
    scaling_gflops_figure(entries)  Figure 8: final FID against Gflops with a log-Gflops fit; the paper's twelve
    scaling_compute_figure(entries) Figure 9: FID against training compute, Gflops × batch × steps × 3
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from ..flops import PAPER_BLOCK_FID_400K, PAPER_FID_400K, PAPER_GFLOPS
from ..models import BLOCK_DESIGNS
from .viz import training_gflops

DESIGN_COLORS = dict(zip(BLOCK_DESIGNS, ("tab:red", "tab:purple", "tab:green", "tab:blue")))
SIZE_COLORS = {"XS": "tab:blue", "T": "tab:orange", "M": "tab:green", "debug": "tab:gray",
               "S": "tab:blue", "B": "tab:orange", "L": "tab:green", "XL": "tab:red"}
PATCH_STYLES = {1: "-", 2: "--", 4: ":", 8: "-."}
SEED_STYLES = ["-", "--", ":", "-."]
PAPER_LABEL = "the paper: ImageNet 256×256, 400K steps × 256, FID-50K"


def size_and_patch(model: str) -> tuple[str, int]:
    """'DiT-T/2' -> ('T', 2)."""
    size, patch = model.removeprefix("DiT-").split("/")
    return size, int(patch)


def short_cpu(cpu: str) -> str:
    """'CPU AMD EPYC (AVX2, no native bf16: emulated, 85× slower than fp32), 2 cores, ...' -> 'AMD EPYC, AVX2, no
    native bf16'; 'CPU AMD EPYC (AVX512, native bf16, 1.7× fp32), ...' -> 'AMD EPYC, AVX512, native bf16';
    'CPU Intel(R) Xeon(R) Processor (AVX512, native bf16, …), ...' -> 'Intel Xeon Processor, AVX512, native bf16'."""
    cpu = cpu.removeprefix("CPU ").replace("(R)", "").replace("(TM)", "")     # 'Intel(R) Xeon(R) Processor (…'
    if " (" not in cpu:
        return cpu.split(",")[0]
    name, details = cpu.split(" (", 1)
    capability = details.split(",")[0].strip()
    bf16 = "no native bf16" if "no native bf16" in details else "native bf16" if "native bf16" in details else ""
    return ", ".join(part for part in (name.strip(), capability, bf16) if part)


def _fid_axis(ax, label: str = "FID-FMNIST, N = 1,000, no guidance") -> None:
    from matplotlib.ticker import LogLocator, ScalarFormatter

    ax.set_ylabel(label)
    if ax.get_yscale() == "log":
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(plt.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)


def _curve(entry: dict) -> tuple[list[int], list[float]]:
    return [s["step"] for s in entry["snapshots"]], [s["fid"] for s in entry["snapshots"]]


def _title(entries: list[dict]) -> str:
    steps = sorted({e["steps"] for e in entries})
    cpus = sorted({short_cpu(e["cpu"]) for e in entries})
    return (f"latent Fashion-MNIST, the default's recipe, {'/'.join(map(str, steps)) or '?'} steps × 64, fp32, "
            f"DDIM 50; trained on {'; '.join(cpus) or '?'}")


def block_design_figure(entries: list[dict]):
    """Left: our FID along training per block design (a line per seed); right: Table 4's FID of DiT-XL/2 per design."""
    fig, (ours, paper) = plt.subplots(1, 2, figsize=(11.5, 4), gridspec_kw={"width_ratios": [1.6, 1]})
    for design in BLOCK_DESIGNS:
        runs = [e for e in entries if e["block"] == design]
        for i, e in enumerate(sorted(runs, key=lambda e: e["seed"])):
            steps, fids = _curve(e)
            ours.plot(steps, fids, marker="o", ms=3, color=DESIGN_COLORS[design], ls=SEED_STYLES[i % 4],
                      label=f"{design}, seed {e['seed']}: {fids[-1]:.2f}")
    ours.set_yscale("log")
    ours.set(xlabel="training step", title=f"ours: {entries[0]['model'] if entries else 'DiT'}, FID along training")
    _fid_axis(ours)
    if entries:
        ours.legend(fontsize=7)
    heights = [PAPER_BLOCK_FID_400K[d] for d in BLOCK_DESIGNS]
    bars = paper.bar(range(len(BLOCK_DESIGNS)), heights, color=[DESIGN_COLORS[d] for d in BLOCK_DESIGNS])
    paper.bar_label(bars, fmt="%.2f", fontsize=8)
    paper.set_xticks(range(len(BLOCK_DESIGNS)), BLOCK_DESIGNS, fontsize=8)
    paper.set(title="the paper (Table 4): DiT-XL/2 after 400K steps", ylabel="FID-50K, ImageNet 256×256")
    paper.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Block designs (Figure 5). " + _title(entries), fontsize=9)
    fig.tight_layout()
    return fig


def scaling_steps_figure(entries: list[dict]):
    """Figure 6: FID against steps; top row one panel per patch (a curve per size), bottom one per size."""
    runs = [(e, *size_and_patch(e["model"])) for e in entries]
    patches = sorted({p for _, _, p in runs}) or [2]
    sizes = list(dict.fromkeys(s for s in SIZE_COLORS if any(s == size for _, size, _ in runs))) or ["T"]
    cols = max(len(patches), len(sizes))
    fig, axes = plt.subplots(2, cols, figsize=(4 * cols, 6.6), sharey=True, squeeze=False)
    for row, (groups, key, other) in enumerate(((patches, 2, 1), (sizes, 1, 2))):
        for col in range(cols):
            ax = axes[row][col]
            if col >= len(groups):
                ax.set_visible(False)
                continue
            for e, size, patch in runs:
                if (size, patch)[key - 1] != groups[col]:
                    continue
                steps, fids = _curve(e)
                ax.plot(steps, fids, marker="o", ms=3, color=SIZE_COLORS.get(size, "k"),
                        ls=PATCH_STYLES.get(patch, "-"), label=f"{e['model']} seed {e['seed']}")
            ax.set(title=f"{'patch' if row == 0 else 'size'} {groups[col]}", xlabel="training step", yscale="log")
            _fid_axis(ax)
            ax.legend(fontsize=7)
    fig.suptitle("FID against training steps (cf. Figure 6). " + _title(entries), fontsize=9)
    fig.tight_layout()
    return fig


def fit_log10(xs, ys) -> tuple[float, float, float] | None:
    """(a, b, r) of the least-squares line y = a + b·log10(x) and the correlation r of log10(x) with y; None for
    fewer than two distinct x."""
    if len(set(xs)) < 2:
        return None
    lx = np.log10(np.asarray(xs, dtype=float))
    b, a = np.polyfit(lx, np.asarray(ys, dtype=float), 1)
    return float(a), float(b), float(np.corrcoef(lx, ys)[0, 1])


def _gflops_panel(ax, points: dict[str, tuple[float, float]], title: str, ylabel: str) -> None:
    for model, (g, fid) in points.items():
        size, patch = size_and_patch(model)
        ax.plot(g, fid, "o", color=SIZE_COLORS.get(size, "k"), ms=6)
        ax.annotate(model.removeprefix("DiT-"), (g, fid), xytext=(4, 3), textcoords="offset points", fontsize=7)
    fit = fit_log10([g for g, _ in points.values()], [f for _, f in points.values()])
    if fit is not None:
        a, b, r = fit
        xs = [min(g for g, _ in points.values()) / 1.3, max(g for g, _ in points.values()) * 1.3]
        ax.plot(xs, [a + b * math.log10(x) for x in xs], "k:", lw=1,
                label=f"fit: {b:+.1f} FID per 10× Gflops; r = {r:+.2f}")
        ax.legend(fontsize=7)
    ax.set(xscale="log", xlabel="Gflops per forward pass (one image)", title=title)
    _fid_axis(ax, ylabel)


def scaling_gflops_figure(entries: list[dict]):
    """Figure 8: our final FID against Gflops (mean over seeds) beside Table 4's twelve models."""
    fig, (ours, paper) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    by_model: dict[str, list[dict]] = {}
    for e in entries:
        by_model.setdefault(e["model"], []).append(e)
    points = {m: (es[0]["gflops"], sum(e["fid_1k"] for e in es) / len(es)) for m, es in by_model.items()}
    _gflops_panel(ours, points, "ours: FID after the last step (mean over seeds)", "FID-FMNIST, N = 1,000, no guidance")
    _gflops_panel(paper, {m: (PAPER_GFLOPS[m], PAPER_FID_400K[m]) for m in PAPER_FID_400K},
                  "the paper (Table 4)", "FID-50K, ImageNet 256×256, 400K steps")
    fig.suptitle("Final FID against forward Gflops (cf. Figure 8); colour = model size. " + _title(entries), fontsize=9)
    fig.tight_layout()
    return fig


def scaling_compute_figure(entries: list[dict]):
    """Figure 9: FID along training against training compute; colour = model size, line style = patch."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for e in entries:
        size, patch = size_and_patch(e["model"])
        steps, fids = _curve(e)
        ax.plot([training_gflops(e, s) for s in steps], fids, marker="o", ms=3, color=SIZE_COLORS.get(size, "k"),
                ls=PATCH_STYLES.get(patch, "-"), label=f"{e['model']} seed {e['seed']}")
    ax.set(xscale="log", yscale="log", xlabel="training compute (Gflops × batch × steps × 3)",
           title="FID against training compute (cf. Figure 9)")
    _fid_axis(ax)
    if entries:
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(_title(entries), fontsize=8)
    fig.tight_layout()
    return fig
