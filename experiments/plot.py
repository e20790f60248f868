"""The experiments' figures, drawn from their JSONs alone (no model is loaded, nothing is trained).

    python experiments/plot.py [--out experiments/results]

block_designs.png           Figure 5: FID against training steps, one curve per block design
scaling_fid_vs_steps.png    Figure 6: FID against steps; top row one panel per patch size (curves: model
                            sizes), bottom row one panel per model size (curves: patch sizes)
scaling_fid_vs_gflops.png   Figure 8: final FID against Gflops of one forward pass
scaling_fid_vs_compute.png  Figure 9: FID against training compute, Gflops × batch × steps × 3

Partial runs are drawn as far as they got; missing ones are left out (and said so in the title).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
SIZE_ORDER = ["debug", "XS", "T", "M", "S", "B", "L", "XL"]


def load(out, experiment: str) -> tuple[dict | None, dict[str, dict]]:
    """(manifest, {cell: run record}) of an experiment; records that do not exist yet are absent."""
    out = Path(out)
    path = out / f"{experiment}.json"
    if not path.exists():
        return None, {}
    manifest = json.loads(path.read_text())
    records = {}
    for cell, entry in manifest["cells"].items():
        run_path = out / entry["run"]
        if run_path.exists():
            records[cell] = json.loads(run_path.read_text())
    return manifest, records


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _fid_label(manifest: dict) -> str:
    s = manifest["settings"]
    return f"FID-FMNIST ({s['fid_samples']} samples, {s['sampler'].upper()} {s['sampling_steps']})"


def _missing(manifest: dict, records: dict) -> str:
    missing = [c for c in manifest["cells"] if c not in records or not records[c]["complete"]]
    return f"\n(not finished: {', '.join(missing)})" if missing else ""


def _curve(record: dict, x: str = "step"):
    return [e[x] for e in record["evals"]], [e["fid"] for e in record["evals"]]


def plot_block_designs(out) -> Path | None:
    manifest, records = load(out, "block_designs")
    if not records:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for cell, record in records.items():
        steps, fids = _curve(record)
        ax.plot(steps, fids, marker="o", label=f"{cell} ({record['gflops']:.3f} Gflops)")
    model = next(iter(records.values()))["model"]
    ax.set(xlabel="training steps", ylabel=_fid_label(manifest),
           title=f"Block designs, {model} on latent Fashion-MNIST (Fig. 5){_missing(manifest, records)}")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    path = Path(out) / "block_designs.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _grid_axes(records: dict) -> tuple[list[str], list[int]]:
    sizes = sorted({r["size"] for r in records.values()}, key=lambda s: SIZE_ORDER.index(s) if s in SIZE_ORDER else 99)
    patches = sorted({r["patch"] for r in records.values()})
    return sizes, patches


def plot_scaling_steps(out) -> Path | None:
    manifest, records = load(out, "scaling_grid")
    if not records:
        return None
    plt = _pyplot()
    sizes, patches = _grid_axes(records)
    columns = max(len(sizes), len(patches))
    fig, axes = plt.subplots(2, columns, figsize=(3.6 * columns, 6.4), sharey=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, patch in enumerate(patches):                # top row: fixed patch, the sizes compared
        ax = axes[0, j]
        for i, size in enumerate(sizes):
            for record in records.values():
                if record["size"] == size and record["patch"] == patch:
                    ax.plot(*_curve(record), marker="o", color=colors[i % len(colors)], label=f"DiT-{size}")
        ax.set_title(f"patch {patch} ({next(r['tokens'] for r in records.values() if r['patch'] == patch)} tokens)")
    for i, size in enumerate(sizes):                   # bottom row: fixed size, the patches compared
        ax = axes[1, i]
        for j, patch in enumerate(patches):
            for record in records.values():
                if record["size"] == size and record["patch"] == patch:
                    ax.plot(*_curve(record), marker="o", color=colors[(j + 3) % len(colors)], label=f"patch {patch}")
        ax.set_title(f"DiT-{size}")
    for ax in axes.flat:
        if ax.has_data():
            ax.set(xlabel="training steps")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        else:
            ax.set_visible(False)
    axes[0, 0].set_ylabel(_fid_label(manifest))
    axes[1, 0].set_ylabel(_fid_label(manifest))
    fig.suptitle(f"Scaling model size and patch size (Fig. 6){_missing(manifest, records)}")
    fig.tight_layout()
    path = Path(out) / "scaling_fid_vs_steps.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_final_against(out, x_of, xlabel: str, name: str, title: str, all_evals: bool) -> Path | None:
    manifest, records = load(out, "scaling_grid")
    if not records:
        return None
    plt = _pyplot()
    sizes, patches = _grid_axes(records)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = ["o", "s", "^", "D", "v"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for cell, record in records.items():
        color = colors[sizes.index(record["size"]) % len(colors)]
        marker = markers[patches.index(record["patch"]) % len(markers)]
        evals = record["evals"] if all_evals else record["evals"][-1:]
        xs, fids = [x_of(record, e) for e in evals], [e["fid"] for e in evals]
        ax.plot(xs, fids, marker=marker, color=color, linestyle="-" if all_evals else "none",
                label=f"{cell}" + ("" if record["complete"] else " (partial)"))
        if not all_evals:
            ax.annotate(cell.removeprefix("DiT-"), (xs[-1], fids[-1]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    steps = manifest["settings"]["steps"]
    ax.set(xscale="log", xlabel=xlabel, ylabel=_fid_label(manifest),
           title=f"{title}{_missing(manifest, records)}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2, title=None if all_evals else f"after {steps} steps", title_fontsize=8)
    fig.tight_layout()
    path = Path(out) / name
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_all(out=DEFAULT_OUT) -> list[Path]:
    """Every figure whose JSONs exist; returns the paths written."""
    paths = [
        plot_block_designs(out),
        plot_scaling_steps(out),
        _plot_final_against(out, lambda r, e: r["gflops"], "Gflops per forward pass (one image)",
                            "scaling_fid_vs_gflops.png", "Final FID against model Gflops (Fig. 8)", all_evals=False),
        _plot_final_against(out, lambda r, e: e["train_flops"] / 1e9, "training compute, Gflops (Gflops × batch × steps × 3)",
                            "scaling_fid_vs_compute.png", "FID against training compute (Fig. 9)", all_evals=True),
    ]
    return [p for p in paths if p is not None]


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(round(seconds % 60)):02d} s"


def tables(out=DEFAULT_OUT) -> str:
    """The results as Markdown tables (what experiments/README.md shows), from the JSONs."""
    lines = []
    manifest, records = load(out, "block_designs")
    if records:
        steps = sorted({e["step"] for r in records.values() for e in r["evals"]})
        lines += [f"Block designs ({next(iter(records.values()))['model']}), {_fid_label(manifest)} of the EMA weights:", "",
                  "| design | params | Gflops | " + " | ".join(f"FID @ {s}" for s in steps)
                  + " | final train loss | wall | CPU |",
                  "|---|---|---|" + "---|" * len(steps) + "---|---|---|"]
        for cell, r in records.items():
            fids = {e["step"]: e["fid"] for e in r["evals"]}
            last = r["evals"][-1]
            lines.append(f"| {cell} | {r['params'] / 1e6:.2f}M | {r['gflops']:.4f} | "
                         + " | ".join(f"{fids[s]:.2f}" if s in fids else "–" for s in steps)
                         + f" | {last['train_loss']:.4f} | {_minutes(last['wall_s'])} | {_minutes(last['cpu_s'])} |")
        lines.append("")
    manifest, records = load(out, "scaling_grid")
    if records:
        steps = sorted({e["step"] for r in records.values() for e in r["evals"]})
        lines += [f"Scaling grid (adaLN-Zero), {_fid_label(manifest)} of the EMA weights:", "",
                  "| model | depth × width | tokens | params | Gflops | " + " | ".join(f"FID @ {s}" for s in steps)
                  + " | training Gflops | wall | CPU |",
                  "|---|---|---|---|---|" + "---|" * len(steps) + "---|---|---|"]
        for cell, r in sorted(records.items(), key=lambda kv: kv[1]["gflops"]):
            fids = {e["step"]: e["fid"] for e in r["evals"]}
            last = r["evals"][-1]
            lines.append(f"| {cell} | {r['depth']} × {r['hidden_size']} | {r['tokens']} | {r['params'] / 1e6:.2f}M | "
                         f"{r['gflops']:.4f} | " + " | ".join(f"{fids[s]:.2f}" if s in fids else "–" for s in steps)
                         + f" | {last['train_flops'] / 1e9:.3g} | {_minutes(last['wall_s'])} | {_minutes(last['cpu_s'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="draw the experiments' figures from their JSONs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the experiments' results folder")
    parser.add_argument("--tables", action="store_true", help="also print the results as Markdown tables")
    args = parser.parse_args(argv)
    if args.tables:
        print(tables(args.out))
    paths = plot_all(args.out)
    for path in paths:
        print(path)
    if not paths:
        print(f"no experiment JSONs in {args.out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
