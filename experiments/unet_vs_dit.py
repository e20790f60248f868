"""Are U-Nets out? DiT against diffusers' U-Net at matched Gflops, on the default's data and recipe.

The paper's headline (§1, §5.1, Table 2): DiT-XL/2 at 119 Gflops beats LDM's U-Net at 104 Gflops (FID-50K 9.62 vs
10.56 without guidance, DiT-XL/2 after 7M steps), and DiTs get better as their Gflops grow (§5, Figure 8). Here each pair of a DiT and a U-Net
(`ditlib.unet`, diffusers' `UNet2DModel`) of nearly the same forward Gflops is trained with the same recipe,
data, steps and seeds, and measured by the same FID:

    pair  DiT                          U-Net
    S     fmnist-latent-DiT-XS/2       fmnist-latent-UNet-S
    M     fmnist-latent-DiT-T/2        fmnist-latent-UNet-M        (the default and its match)
    L     fmnist-latent-DiT-M/2        fmnist-latent-UNet-L

Every run: 6,000 steps of batch 64 in fp32, EMA snapshots every 1,500 steps, FID-FMNIST at N = 1,000 (DDIM 50)
without guidance on each snapshot and with the default's guidance on the last (`recipe_runs.py`).

    python experiments/unet_vs_dit.py --pairs M --seeds 0,1       # the default and its U-Net, two seeds each
    python experiments/unet_vs_dit.py --pairs S,L --seeds 0       # the other sizes, one seed
    python experiments/unet_vs_dit.py --plot-only                 # redraw from the JSONs

Runs go one after another (one heavy job on two cores); each writes its record when it finishes a step of work,
so an interrupted command loses nothing: run it again. Writes experiments/results/runs/<run>.json,
experiments/results/unet_vs_dit.json (one line per finished run) and unet_vs_dit.png.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import command_line, write_json
from recipe_runs import RUNS, add_run_arguments, check_run_arguments, run

PAIRS = {"S": ("fmnist-latent-DiT-XS/2", "fmnist-latent-UNet-S"),
         "M": ("fmnist-latent-DiT-T/2", "fmnist-latent-UNet-M"),
         "L": ("fmnist-latent-DiT-M/2", "fmnist-latent-UNet-L")}
SUMMARY_KEYS = ("family", "config", "params", "gflops", "steps", "seed", "fid_1k", "fid_1k_guided", "train_seconds",
                "cpu")


def summary(records: list[dict]) -> list[dict]:
    """The summary table: one {family, config, params, gflops, steps, seed, fid_1k, fid_1k_guided, train_seconds,
    cpu} per complete run, in pair order, DiT before U-Net, seeds in order."""
    order = {config: i for i, config in enumerate(c for pair in PAIRS.values() for c in pair)}
    done = [r for r in records if r.get("complete")]
    done.sort(key=lambda r: (order.get(r["config"], len(order)), r["steps"], r["seed"]))
    return [{key: r[key] for key in SUMMARY_KEYS} for r in done]


def load_records(out: Path) -> list[dict]:
    """The records of the pairs' runs (no model or block override) among <out>/runs/*.json."""
    configs = {c for pair in PAIRS.values() for c in pair}
    records = [json.loads(p.read_text()) for p in sorted((out / RUNS).glob("*.json"))]
    return [r for r in records if r["config"] in configs and not r.get("overrides")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="M", help=f"comma-separated pairs from {list(PAIRS)} (default M)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default 0,1)")
    parser.add_argument("--family", choices=["both", "DiT", "U-Net"], default="both", help="train only one family")
    add_run_arguments(parser, "the summary and the figure")
    args = parser.parse_args(argv)
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown:
        parser.error(f"unknown pair(s) {unknown}; choose among {list(PAIRS)}")
    check_run_arguments(parser, args)
    seeds = [int(s) for s in args.seeds.split(",")]
    command = command_line(__file__, sys.argv[1:] if argv is None else argv)
    if not args.plot_only:
        for seed in seeds:
            for pair in pairs:
                for index, config in enumerate(PAIRS[pair]):
                    if args.family in ("both", ("DiT", "U-Net")[index]):
                        run(config, seed, args.steps, args.every, args.out / RUNS, args.work, command)
                        write_json(args.out / "unet_vs_dit.json", summary(load_records(args.out)))
    records = load_records(args.out)
    write_json(args.out / "unet_vs_dit.json", summary(records))
    from plot_unet_vs_dit import plot
    print(f"figure: {plot(records, args.out / 'unet_vs_dit.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
