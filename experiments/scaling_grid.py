"""Figures 6, 8 and 9 of Peebles & Xie at CPU scale: DiT model size × patch size on latent Fashion-MNIST.

Three course sizes (XS: 4 blocks × 128, T: 6 × 192, M: 8 × 256) times three patch sizes on the 8×8×4
latents of the shipped VAE (patch 1, 2, 4 -> 64, 16, 4 tokens), all with adaLN-Zero blocks and the same
data, optimiser and steps. FID-FMNIST of the EMA weights every `--eval-every` steps gives FID against
steps (Figure 6); the last one against the model's Gflops per forward pass (Figure 8) and against the
training compute Gflops × batch × steps × 3 (Figure 9).

    nice -n 10 python experiments/scaling_grid.py                      # the whole grid, cheapest cell first
    python experiments/scaling_grid.py --only DiT-M/1                  # one cell
    python experiments/plot.py                                         # redraw the figures from the JSONs

Writes experiments/results/scaling_grid.json, runs/<run>.json and scaling_fid_vs_{steps,gflops,compute}.png.
DiT-T/2 is the same run as the adaLN-Zero cell of block_designs.py when the settings agree.
"""
from __future__ import annotations

import argparse
import sys

from common import add_arguments, command_line, run_experiment

from ditlib.flops import gflops
from ditlib.models import COURSE_SIZES, DiT_models

EXPERIMENT = "scaling_grid"
BLOCK = "adaLN-Zero"


def cells(sizes: list[str], patches: list[int]) -> dict[str, tuple[str, str]]:
    """{"DiT-XS/1": ("DiT-XS/1", "adaLN-Zero"), ...}, cheapest (fewest Gflops) first."""
    names = [f"DiT-{size}/{patch}" for size in sizes for patch in patches]
    missing = [n for n in names if n not in DiT_models]
    if missing:
        raise SystemExit(f"not in ditlib.models.DiT_models: {missing}")
    names.sort(key=lambda n: gflops(n, input_size=8, in_channels=4, num_classes=10))
    return {name: (name, BLOCK) for name in names}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="XS,T,M", help=f"comma-separated sizes from {list(COURSE_SIZES)} (default XS,T,M)")
    parser.add_argument("--patches", default="1,2,4", help="comma-separated patch sizes (default 1,2,4)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    grid = cells(args.sizes.split(","), [int(p) for p in args.patches.split(",")])
    return run_experiment(EXPERIMENT, "Figures 6, 8, 9 (FID vs steps, vs Gflops, vs training compute)", grid, args,
                          command_line(__file__, sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
