"""Guidance scale and guidance interval of a trained checkpoint, measured as docs/results.md measures FID.

Classifier-free guidance (paper §4) is applied at every sampling step in the paper. Kynkäänniemi et al. (2024,
"Applying guidance in a limited interval improves sample and distribution quality in diffusion models") guide
only a middle range of noise levels: at high noise, guidance pulls every sample of a class toward the same
layout (less variety, worse FID); at low noise, it changes little. Steps outside the interval also cost half
as much (no null-class half). This script measures FID-FMNIST (N, DDIM, seed as `python -m ditlib fid`) for
each (scale, interval) and writes a JSON and a Markdown table:

    python experiments/guidance_sweep.py --ckpt data/checkpoints/fmnist-latent-DiT-T-2 \
        --scales 2 3 --intervals all 0:600 100:600 --out experiments/results/guidance
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import command_line, readme_fid, write_json


def parse_interval(text: str):
    """"all" -> None (every step); "LO:HI" -> (LO, HI) in training timesteps."""
    if text == "all":
        return None
    lo, _, hi = text.partition(":")
    try:
        return int(lo), int(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an interval is 'all' or LO:HI (timesteps), got {text!r}") from None


def label(interval) -> str:
    return "every step" if interval is None else f"{interval[0]} ≤ t ≤ {interval[1]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--scales", type=float, nargs="+", default=[2.0])
    parser.add_argument("--intervals", type=parse_interval, nargs="+", default=[None])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/results/guidance"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "guidance_sweep.json"
    done = json.loads(path.read_text()) if path.exists() else {"rows": []}   # resumable: measured rows stay
    key = lambda r: (r["ckpt"], r["cfg_scale"], str(r["interval"]), r["num_samples"], r["steps"], r["seed"])  # noqa: E731
    seen = {key(r) for r in done["rows"]}
    for scale in args.scales:
        for interval in args.intervals:
            for seed in args.seeds:
                row = {"ckpt": args.ckpt, "cfg_scale": scale, "interval": list(interval) if interval else None,
                       "num_samples": args.num_samples, "steps": args.steps, "seed": seed}
                if key(row) in seen:
                    continue
                result = readme_fid(args.ckpt, args.num_samples, scale, args.steps, seed,
                                    json_path=args.out / "last-fid.json", guidance_interval=interval)
                row.update({k: result[k] for k in ("fid", "kid_mean", "isc_mean", "precision", "recall", "command",
                                                   "time_s") if k in result})
                done["rows"].append(row)
                print(f"cfg {scale:g}, {label(interval)}, seed {seed}: FID {row['fid']:.2f} ({row['time_s']} s)",
                      flush=True)
                done["command"] = command_line()
                write_json(path, done)
    lines = ["| guidance | interval | seed | FID | precision / recall | sampling+FID time |", "|---|---|---|---|---|---|"]
    for r in done["rows"]:
        interval = tuple(r["interval"]) if r["interval"] else None
        lines.append(f"| {r['cfg_scale']:g} | {label(interval)} | {r['seed']} | {r['fid']:.2f} | "
                     f"{r.get('precision', float('nan')):.2f} / {r.get('recall', float('nan')):.2f} | {r['time_s']} s |")
    (args.out / "guidance_sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
