"""The DiT-vs-U-Net figure from the run records alone (experiments/results/unet_vs_dit/*.json).

Three panels, FID-FMNIST at N = 1,000 without guidance (lower is better), DiT in blue, U-Net in orange:

1. final FID against the model's forward Gflops (log axis), one point per run, the seeds' mean joined, and a
   line FID = a + b·log10(Gflops) fitted per family (Figure 8's question: does the family improve with compute,
   and how fast?);
2. FID along training against training compute, Gflops × batch × steps × 3 (Figure 9's axis);
3. FID along training against CPU minutes of training (what a learner pays).

    python experiments/plot_unet_vs_dit.py            # -> experiments/results/unet_vs_dit.png
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

COLORS = {"DiT": "tab:blue", "U-Net": "tab:orange"}
LINESTYLES = ["-", "--", ":", "-."]


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


def plot(records: list[dict], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.5, 4.2))
    ax_size, ax_compute, ax_time = fig.subplots(1, 3)
    done = [r for r in records if r.get("complete")]
    for family, color in COLORS.items():
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
                style = dict(color=color, ls=LINESTYLES[i % len(LINESTYLES)], marker=".", alpha=0.85)
                ax_compute.plot([training_gflops(r, s) for s in steps], fids, label=label, **style)
                ax_time.plot([s["train_s"] / 60 for s in r["snapshots"]], fids, label=label, **style)
    ax_size.set_xscale("log")
    ax_size.set_xlabel("model Gflops (one forward pass, one image)")
    ax_size.set_title(f"final FID after {done[0]['steps'] if done else '?'} steps", fontsize=10)
    ax_compute.set_xscale("log")
    ax_compute.set_xlabel("training compute (Gflops × batch × steps × 3)")
    ax_compute.set_title("FID along training, by compute", fontsize=10)
    ax_time.set_xlabel("CPU minutes of training")
    ax_time.set_title("FID along training, by CPU time", fontsize=10)
    for ax in (ax_size, ax_compute, ax_time):
        ax.set_yscale("log")
        ax.set_ylabel("FID-FMNIST, N = 1,000, no guidance")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    cpu = done[0]["cpu"] if done else ""
    fig.suptitle(f"DiT vs U-Net (diffusers' UNet2DModel) at matched Gflops, latent Fashion-MNIST, the default's "
                 f"recipe, fp32; DDIM 50\n{cpu}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main() -> int:
    out = Path(__file__).resolve().parent / "results"
    records = [json.loads(p.read_text()) for p in sorted((out / "unet_vs_dit").glob("*.json"))]
    print(plot(records, out / "unet_vs_dit.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
