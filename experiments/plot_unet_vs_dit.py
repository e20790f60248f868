"""The DiT-vs-U-Net figure from the run records alone (experiments/results/runs/*.json).

Three panels of FID-FMNIST at N = 1,000 without guidance (`ditlib.course.viz.unet_vs_dit_figure`, the figure
lesson 10 draws): final FID against model Gflops with a line FID = a + b·log10(Gflops) fitted per family,
and FID along training against training compute (Gflops × batch × steps × 3) and against CPU minutes.

    python experiments/plot_unet_vs_dit.py            # -> experiments/results/unet_vs_dit.png
    python experiments/plot_unet_vs_dit.py --table    # the table of experiments/README.md, from the records
"""
from __future__ import annotations

import sys
from pathlib import Path

from ditlib.course.viz import unet_vs_dit_figure
from ditlib.course.findings import short_cpu


def plot(records: list[dict], path: Path) -> Path:
    fig = unet_vs_dit_figure(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def table(records: list[dict]) -> str:
    """Markdown: one row per complete run, FID without guidance along training, final FID with guidance, time."""
    done = sorted((r for r in records if r.get("complete")), key=lambda r: (r["gflops"], r["family"], r["seed"]))
    steps = sorted({s["step"] for r in done for s in r["snapshots"]})
    lines = ["| family | config | params | Gflops | seed | " + " | ".join(f"FID @ {s}" for s in steps)
             + " | FID guided | precision / recall guided | training | CPU |",
             "|" + "---|" * (9 + len(steps))]
    for r in done:
        fid = {s["step"]: s["fid"] for s in r["snapshots"]}
        minutes, seconds = divmod(round(r["train_seconds"]), 60)
        lines.append(f"| {r['family']} | `{r['config']}` | {r['params'] / 1e6:.2f}M | {r['gflops']:.4f} | {r['seed']} | "
                     + " | ".join(f"{fid[s]:.2f}" if s in fid else "–" for s in steps)
                     + f" | {r['fid_1k_guided']:.2f} | {r['guided']['precision']:.2f} / {r['guided']['recall']:.2f} | "
                       f"{minutes} min {seconds:02d} s | {short_cpu(r['cpu'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(__file__).resolve().parent / "results"
    from unet_vs_dit import load_records

    records = load_records(out)
    if "--table" in argv:
        print(table(records))
        return 0
    print(plot(records, out / "unet_vs_dit.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
