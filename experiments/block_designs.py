"""Figure 5 of Peebles & Xie on today's recipe: the four DiT block designs of §3.2, FID against training steps.

One model size (DiT-T/2: 6 blocks, width 192, 16 tokens of the 8×8×4 latents of the shipped VAE), the default's
recipe (`fmnist-latent-DiT-T/2`: cosine lr, min-SNR-5, batch 64, EMA 0.999, learned Σ) for 6,000 steps in fp32;
only the way (t, y) enters the blocks changes: in-context tokens, cross-attention, adaLN, adaLN-Zero. Each run is
a long run of `recipe_runs.py`: EMA snapshots every 1,500 steps, FID-FMNIST at N = 1,000 (DDIM 50, no guidance, as
the paper's Figure 5) on each, and with the default's guidance on the last.

The paper's own claim is that adaLN-Zero beats in-context "at all stages of training"; to say "A beats B" beyond
the training noise, those two designs get two training seeds (0 and 1), the others one. The adaLN-Zero runs are the
default config itself, the same runs as the DiT of `unet_vs_dit.py --pairs M` (reused, not trained twice).

    python experiments/block_designs.py                        # every run below, in this order, resumable
    python experiments/block_designs.py --designs in-context    # only one design (its seeds below)
    python experiments/block_designs.py --plot-only            # rewrite block_designs.json and the figure

Writes experiments/results/runs/<run>.json per run, experiments/results/block_designs.json (one entry per run,
with its FID at every snapshot) and block_designs.png (ours beside the paper's Table 4, labelled ImageNet).
"""
from __future__ import annotations

import argparse
import sys

from common import command_line, write_json
from recipe_runs import (RUNS, add_run_arguments, cell, check_run_arguments, load_records, run, run_name,
                         summary_entry)

from ditlib.models import BLOCK_DESIGNS, DiT_models

MODEL = "DiT-T/2"
# (design, seed) in the order they are trained: the two-seed comparison of the paper's claim first
RUN_ORDER = [("adaLN-Zero", 0), ("adaLN-Zero", 1), ("in-context", 0), ("in-context", 1), ("adaLN", 0),
             ("cross-attention", 0)]


def plan(model: str, designs: list[str], seeds: list[int] | None) -> list[tuple[str, str, int, dict]]:
    """[(design, config name, seed, overrides)] for the chosen designs, in RUN_ORDER (or every seed given)."""
    pairs = [(d, s) for d, s in RUN_ORDER if d in designs] if seeds is None else \
        [(d, s) for d in BLOCK_DESIGNS if d in designs for s in seeds]
    runs = []
    for design, seed in pairs:
        config, overrides = cell(model, design)
        runs.append((design, config, seed, overrides))
    return runs


def summary(records: list[dict], model: str, steps: int) -> list[dict]:
    """One entry per complete block-design run of `model` at `steps`, in the paper's design order, then seed."""
    names = {run_name(config, seed, steps, **overrides): design
             for design in BLOCK_DESIGNS for seed in range(10) for config, overrides in [cell(model, design)]}
    done = [r for r in records if r.get("complete") and r["run"] in names]
    done.sort(key=lambda r: (BLOCK_DESIGNS.index(names[r["run"]]), r["seed"]))
    return [summary_entry(r) for r in done]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL, choices=list(DiT_models), help=f"model size/patch (default {MODEL})")
    parser.add_argument("--designs", default=",".join(BLOCK_DESIGNS), help="comma-separated designs (default all four)")
    parser.add_argument("--seeds", default=None, help="comma-separated training seeds for every design chosen "
                                                        "(default: 0,1 for in-context and adaLN-Zero, 0 for the others)")
    add_run_arguments(parser, "the summary and the figure")
    args = parser.parse_args(argv)
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    unknown = [d for d in designs if d not in BLOCK_DESIGNS]
    if unknown:
        parser.error(f"unknown design(s) {unknown}; choose among {list(BLOCK_DESIGNS)}")
    check_run_arguments(parser, args)
    seeds = None if args.seeds is None else [int(s) for s in args.seeds.split(",")]
    command = command_line(__file__, sys.argv[1:] if argv is None else argv)
    folder = args.out / RUNS
    if not args.plot_only:
        for design, config, seed, overrides in plan(args.model, designs, seeds):
            run(config, seed, args.steps, args.every, folder, args.work, command, **overrides)
            write_json(args.out / "block_designs.json", summary(load_records(folder), args.model, args.steps))
    entries = summary(load_records(folder), args.model, args.steps)
    write_json(args.out / "block_designs.json", entries)
    from plot import plot_block_designs
    print(f"figure: {plot_block_designs(entries, args.out / 'block_designs.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
