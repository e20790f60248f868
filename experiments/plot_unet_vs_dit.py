"""The DiT-vs-U-Net figure from the run records alone (experiments/results/unet_vs_dit/*.json).

Three panels of FID-FMNIST at N = 1,000 without guidance (`ditlib.course.viz.unet_vs_dit_figure`, the figure
lesson 10 draws): final FID against model Gflops with a line FID = a + b·log10(Gflops) fitted per family,
and FID along training against training compute (Gflops × batch × steps × 3) and against CPU minutes.

    python experiments/plot_unet_vs_dit.py            # -> experiments/results/unet_vs_dit.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ditlib.course.viz import unet_vs_dit_figure


def plot(records: list[dict], path: Path) -> Path:
    fig = unet_vs_dit_figure(records)
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
