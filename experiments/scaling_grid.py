"""Figures 6, 8 and 9 of Peebles & Xie on today's recipe: DiT model size × patch size on latent Fashion-MNIST.

Three course sizes (XS: 4 blocks × 128, T: 6 × 192, M: 8 × 256) times three patch sizes on the 8×8×4 latents of
the shipped VAE (patch 1, 2, 4 -> 64, 16, 4 tokens), all adaLN-Zero, all with the default's recipe
(`fmnist-latent-DiT-T/2`: cosine lr, min-SNR-5, batch 64, EMA 0.999) for 6,000 steps in fp32, the model replaced.
Each cell is a long run of `recipe_runs.py`: EMA snapshots every 1,500 steps, FID-FMNIST at N = 1,000 (DDIM 50,
no guidance, as the paper's Figures) on each. That gives FID against steps (Figure 6), the final FID against the
model's Gflops per forward pass (Figure 8) and FID against training compute, Gflops × batch × steps × 3 (Figure 9).

Cells run cheapest first (fewest Gflops), so that an interrupted grid is missing its most expensive cells, not
steps. DiT-XS/2, DiT-T/2 and DiT-M/2 are the named configs `fmnist-latent-DiT-{XS,T,M}/2`, the same runs as the
DiTs of `unet_vs_dit.py` (reused, not trained twice).

    python experiments/scaling_grid.py                                  # the whole grid, cheapest cell first
    python experiments/scaling_grid.py --skip DiT-M/1                   # without the most expensive cell
    python experiments/scaling_grid.py --only DiT-T/4                   # one cell
    python experiments/scaling_grid.py --plot-only                      # rewrite scaling_grid.json and the figures

Writes experiments/results/runs/<run>.json per run, experiments/results/scaling_grid.json (one entry per finished
cell, with its FID at every snapshot) and scaling_fid_vs_{steps,gflops,compute}.png.
"""
from __future__ import annotations

import argparse
import sys

from common import command_line, write_json
import recipe_runs
from recipe_runs import (RUNS, add_run_arguments, cell, check_run_arguments, load_records, run, run_name,
                         summary_entry)

from ditlib.configs import get_config
from ditlib.flops import counted_gflops
from ditlib.models import COURSE_SIZES, DiT_models

BLOCK = "adaLN-Zero"


def cells(sizes: list[str], patches: list[int]) -> list[str]:
    """["DiT-XS/4", ...]: every size × patch, cheapest (fewest Gflops on the 8×8×4 latents) first."""
    names = [f"DiT-{size}/{patch}" for size in sizes for patch in patches]
    missing = [n for n in names if n not in DiT_models]
    if missing:
        raise SystemExit(f"not in ditlib.models.DiT_models: {missing}")
    base = get_config(recipe_runs.BASE_CONFIG)
    return sorted(names, key=lambda n: counted_gflops(base.replace(model=n).model_config()))


def summary(records: list[dict], models: list[str], steps: int, seeds=range(10)) -> list[dict]:
    """One entry per complete cell run (any seed) at `steps`, cheapest cell first, then seed."""
    names = {run_name(config, seed, steps, **overrides): model for model in models for seed in seeds
             for config, overrides in [cell(model, BLOCK)]}
    done = [r for r in records if r.get("complete") and r["run"] in names]
    done.sort(key=lambda r: (models.index(names[r["run"]]), r["seed"]))
    return [summary_entry(r) for r in done]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="XS,T,M", help=f"comma-separated sizes from {list(COURSE_SIZES)} (default XS,T,M)")
    parser.add_argument("--patches", default="1,2,4", help="comma-separated patch sizes (default 1,2,4)")
    parser.add_argument("--only", default=None, help="comma-separated cells to run, e.g. DiT-T/4")
    parser.add_argument("--skip", default=None, help="comma-separated cells not to run, e.g. DiT-M/1")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    add_run_arguments(parser, "the summary and the figures")
    args = parser.parse_args(argv)
    check_run_arguments(parser, args)
    grid = cells(args.sizes.split(","), [int(p) for p in args.patches.split(",")])
    chosen = grid
    for option, keep in ((args.only, True), (args.skip, False)):
        if option:
            named = [c.strip() for c in option.split(",") if c.strip()]
            unknown = [c for c in named if c not in grid]
            if unknown:
                parser.error(f"cell(s) {unknown} not in the grid {grid}")
            chosen = [c for c in chosen if (c in named) == keep]
    seeds = [int(s) for s in args.seeds.split(",")]
    command = command_line(__file__, sys.argv[1:] if argv is None else argv)
    folder = args.out / RUNS
    if not args.plot_only:
        for seed in seeds:
            for model in chosen:
                config, overrides = cell(model, BLOCK)
                run(config, seed, args.steps, args.every, folder, args.work, command, **overrides)
                write_json(args.out / "scaling_grid.json", summary(load_records(folder), grid, args.steps))
    entries = summary(load_records(folder), grid, args.steps)
    write_json(args.out / "scaling_grid.json", entries)
    from plot import plot_scaling
    for path in plot_scaling(entries, args.out):
        print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
