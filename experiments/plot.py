"""The block-design and scaling figures, drawn from their summaries alone (no model is loaded, nothing is trained).

    python experiments/plot.py [--out experiments/results] [--tables]

block_designs.png           Figure 5: FID against training steps per block design; the paper's FIDs per design
scaling_fid_vs_steps.png    Figure 6: FID against steps; top row one panel per patch size (curves: model
                            sizes), bottom row one panel per model size (curves: patch sizes)
scaling_fid_vs_gflops.png   Figure 8: final FID against Gflops of one forward pass; the paper's twelve models
scaling_fid_vs_compute.png  Figure 9: FID against training compute, Gflops × batch × steps × 3

The figures themselves are `ditlib.course.findings` (lessons 06 and 10 draw the same ones); the summaries are
block_designs.json and scaling_grid.json, written by block_designs.py and scaling_grid.py: one entry per finished
run. `--tables` prints the Markdown tables of experiments/README.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def load(out, experiment: str) -> list[dict]:
    """The entries of <out>/<experiment>.json (empty when it does not exist yet)."""
    path = Path(out) / f"{experiment}.json"
    return json.loads(path.read_text()) if path.exists() else []


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_block_designs(entries: list[dict], path: Path) -> Path:
    from ditlib.course.findings import block_design_figure

    return _save(block_design_figure(entries), Path(path))


def plot_scaling(entries: list[dict], out) -> list[Path]:
    from ditlib.course.findings import scaling_compute_figure, scaling_gflops_figure, scaling_steps_figure

    out = Path(out)
    return [_save(scaling_steps_figure(entries), out / "scaling_fid_vs_steps.png"),
            _save(scaling_gflops_figure(entries), out / "scaling_fid_vs_gflops.png"),
            _save(scaling_compute_figure(entries), out / "scaling_fid_vs_compute.png")]


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(round(seconds % 60)):02d} s"


def _table(entries: list[dict], first: str, name) -> list[str]:
    from ditlib.course.findings import short_cpu

    steps = sorted({s["step"] for e in entries for s in e["snapshots"]})
    lines = [f"| {first} | seed | params | Gflops | " + " | ".join(f"FID @ {s}" for s in steps)
             + " | FID guided | training compute (Gflops) | training | CPU |",
             "|---|---|---|---|" + "---|" * len(steps) + "---|---|---|---|"]
    for e in entries:
        fid = {s["step"]: s["fid"] for s in e["snapshots"]}
        lines.append(f"| {name(e)} | {e['seed']} | {e['params'] / 1e6:.2f}M | {e['gflops']:.4f} | "
                     + " | ".join(f"{fid[s]:.2f}" if s in fid else "–" for s in steps)
                     + f" | {e['fid_1k_guided']:.2f} | {e['gflops'] * e['batch_size'] * e['steps'] * 3:.3g} | "
                       f"{_minutes(e['train_seconds'])} | {short_cpu(e['cpu'])} |")
    return lines


def tables(out=DEFAULT_OUT) -> str:
    """The results as Markdown tables (what experiments/README.md shows), from the summaries."""
    lines = []
    designs = load(out, "block_designs")
    if designs:
        lines += [f"Block designs ({designs[0]['model']}):", "", *_table(designs, "design", lambda e: e["block"]), ""]
    grid = load(out, "scaling_grid")
    if grid:
        lines += ["Scaling grid (adaLN-Zero):", "", *_table(grid, "model", lambda e: e["model"])]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="draw the experiments' figures from their JSONs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the experiments' results folder")
    parser.add_argument("--tables", action="store_true", help="also print the results as Markdown tables")
    args = parser.parse_args(argv)
    if args.tables:
        print(tables(args.out))
    designs, grid = load(args.out, "block_designs"), load(args.out, "scaling_grid")
    if not designs and not grid:
        print(f"no block_designs.json or scaling_grid.json in {args.out}", file=sys.stderr)
        return 1
    paths = ([plot_block_designs(designs, args.out / "block_designs.png")] if designs else []) \
        + (plot_scaling(grid, args.out) if grid else [])
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
