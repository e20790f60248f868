"""Quality per CPU-minute: FID-FMNIST of a training run's EMA snapshots against its training time (issue 13).

Trains a config exactly as `python -m ditlib train --config NAME` does, with `snapshot_every` set so that the
EMA weights are kept every few minutes (`out/snapshots/step-*`), then measures FID-FMNIST of every snapshot as
the table of docs/results.md does (`python -m ditlib fid`: N = 1,000, DDIM 50 steps, seed 0, the config's guidance: for the
default, 3 on the steps t ≤ 300; `--cfg-scale`/`--guidance-interval` choose another) and plots FID
against the training time recorded in each snapshot. A second run of the command resumes: the training from its
last checkpoint, the FIDs from the JSON (a snapshot already measured is not measured again).

    .venv/bin/python experiments/quality_curve.py --config fmnist-latent-DiT-T/2 --every 500 --precision fp32 \\
        --out runs/quality-curve --json docs/results/quality-curve.json --plot docs/quality-curve.png

The time on the x-axis is the training's own (`elapsed_s` of each snapshot: steps, checkpoints, logging), not the
FID evaluations; the latent cache's one-off encoding is measured and reported separately.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import command_line, readme_fid  # noqa: E402
from ditlib import checkpoints as ckpt  # noqa: E402
from ditlib.configs import DEFAULT_CONFIG, get_config  # noqa: E402
from ditlib.runtime import hardware_summary  # noqa: E402
from ditlib.sample import guidance_text, sampling_guidance  # noqa: E402
from ditlib.train import list_snapshots, train  # noqa: E402


def measure(snapshot: Path, num_samples: int, cfg_scale: float, steps: int, seed: int = 0, interval=None) -> dict:
    """FID-FMNIST (and KID, IS, precision/recall) of one snapshot as docs/results.md measures it."""
    result = readme_fid(snapshot, num_samples, cfg_scale, steps, seed, guidance_interval=interval)
    return {"fid": result["fid"], "kid": result.get("kid_mean"), "isc": result.get("isc_mean"),
            "precision": result.get("precision"), "recall": result.get("recall"), "n": result.get("n", num_samples),
            "eval_wall_s": result["eval_wall_s"], "command": result["command"]}


def plot(points: list[dict], path: Path, title: str, floor: float | None = None, target: float | None = None) -> Path:
    """FID against training minutes (log scale), steps on the top axis, the floor and the target as lines."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    minutes = [p["elapsed_s"] / 60 for p in points]
    ax.plot(minutes, [p["fid"] for p in points], "o-", label="FID-FMNIST, N = 1,000")
    for p, m in zip(points, minutes):
        if "fid_10k" in p:
            ax.plot([m], [p["fid_10k"]], "s", color="tab:green", label="the same weights, N = 10,000")
    if target is not None:
        ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"goal ≤ {target:g}")
    if floor is not None:
        ax.axhline(floor, color="grey", ls=":", lw=1, label=f"floor (train vs test) {floor:g}")
    ax.set_yscale("log")
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("FID-FMNIST (lower is better)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    top = ax.secondary_xaxis("top", functions=(lambda m: m, lambda m: m))
    top.set_xticks(minutes[1::2] if len(minutes) > 6 else minutes)
    top.set_xticklabels([str(p["step"]) for p in (points[1::2] if len(points) > 6 else points)], fontsize=7)
    top.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"a training config (default {DEFAULT_CONFIG})")
    parser.add_argument("--every", type=int, default=500, help="steps between snapshots (default 500)")
    parser.add_argument("--precision", default=None, help="override the config's precision (fp32 = what an AVX2 CPU runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "quality-curve", help="the run folder")
    parser.add_argument("--fid-samples", type=int, default=1000)
    parser.add_argument("--final-fid-samples", type=int, default=0, help="also measure the last snapshot at this N (e.g. 10000)")
    parser.add_argument("--cfg-scale", type=float, default=None, help="default: the config's sample_cfg_scale")
    parser.add_argument("--guidance-interval", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                        help="default: the config's sample_guidance_interval when --cfg-scale is not given")
    parser.add_argument("--sampling-steps", type=int, default=50)
    parser.add_argument("--floor", type=float, default=0.63, help="FID floor drawn on the plot (docs/results.md: 0.63 at N = 1,000)")
    parser.add_argument("--target", type=float, default=4.0, help="goal line on the plot (issue 13: 4.0)")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "quality-curve.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "quality-curve.png")
    parser.add_argument("--no-train", action="store_true", help="only measure the snapshots already in --out")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error("--every must be at least 1")

    config = get_config(args.config).replace(snapshot_every=args.every)
    if args.precision:
        config = config.replace(precision=args.precision)
    record = json.loads(args.json.read_text()) if args.json.exists() else {}
    if record and record.get("config") != config.name:
        parser.error(f"{args.json} holds the curve of {record.get('config')!r}; pass another --json")
    cfg_scale, interval = sampling_guidance(args.cfg_scale, args.guidance_interval, config.to_dict())
    sampling = {"cfg_scale": cfg_scale, "guidance_interval": list(interval) if interval else None,
                "steps": args.sampling_steps, "sampler": "ddim"}
    if record and record.get("sampling", sampling) != sampling:
        parser.error(f"{args.json} was measured with {record['sampling']}, not {sampling}; pass another --json")
    record.update({"config": config.name, "train_config": config.to_dict(), "sampling": sampling})
    if not args.no_train or "command" not in record:      # --no-train only re-measures and re-plots: keep how it was made
        record.update({"hardware": hardware_summary("cpu"),
                       "command": command_line(__file__, argv)})

    if not args.no_train:
        resume = (args.out / "checkpoints").exists()
        start = time.perf_counter()
        summary = train(config, args.out, resume=resume)
        wall = time.perf_counter() - start
        if not resume:     # the first call also built the latent cache (if any) and compiled: its wall minus training
            record["setup_s"] = round(wall - summary["elapsed_s"], 1)
        record.update({"steps": summary["steps"], "train_s": round(summary["elapsed_s"], 1),
                       "precision": summary.get("precision"), "compiled": summary.get("compiled")})

    done = {p["step"]: p for p in record.get("points", [])}
    snapshots = list_snapshots(args.out)
    if not snapshots:
        raise SystemExit(f"no snapshots in {args.out}/snapshots: train first (without --no-train)")
    for snap in snapshots:
        meta = ckpt.read_meta(snap)
        if meta["step"] not in done:
            done[meta["step"]] = {"step": meta["step"], "elapsed_s": round(meta["elapsed_s"], 1),
                                  **measure(snap, args.fid_samples, cfg_scale, args.sampling_steps,
                                            interval=interval)}
            print(f"step {meta['step']}: {meta['elapsed_s'] / 60:.1f} min, FID {done[meta['step']]['fid']:.2f}", flush=True)
        record["points"] = [done[k] for k in sorted(done)]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")       # after every point: nothing lost
    last = record["points"][-1]
    if args.final_fid_samples and "fid_10k" not in last:
        big = measure(snapshots[-1], args.final_fid_samples, cfg_scale, args.sampling_steps, interval=interval)
        last.update({"fid_10k": big["fid"], "fid_10k_n": big["n"], "fid_10k_command": big["command"]})
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    precision = (record.get("precision") or {}).get("used", config.precision)
    title = (f"{config.name} ({config.model}), {precision}, batch {config.batch_size}; DDIM {args.sampling_steps}, "
             f"{guidance_text(cfg_scale, interval)}\n{record['hardware']}")
    plot(record["points"], args.plot, title, args.floor, args.target)
    print(f"{args.json}\n{args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
