"""Time of a 64-image grid of the default model: guidance on every step against guidance in an interval.

Issue 12 asks for a 64-image grid of the default model (DDIM 50 steps, classifier-free guidance) in ≤ 5 s of
sampling on a 2-core CPU. Guidance doubles the batch of every step it is applied to (the null-class half,
paper §4); the default model guides only the steps t ≤ 300 (`sample_guidance_interval`, Kynkäänniemi et al.
2024), so fewer rows go through the model. This script samples the same grid both ways, in each precision
the machine computes fast (fp32 always, bf16 where it is native), alternating the rows in every round so
that a noisy machine hits both alike, and prints the median time of each and their ratio, with the rows the
model saw (the cost the interval saves by construction). The VAE decode is included (as in a real grid).
A measurement, not a test: it asserts nothing.

    .venv/bin/python benchmarks/bench_sampling.py                       # the shipped default, 64 images
    .venv/bin/python benchmarks/bench_sampling.py --json docs/results/bench-sampling.json
    .venv/bin/python benchmarks/bench_sampling.py --ckpt PATH --images 8 --rounds 1   # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from ditlib.runtime import cpu_bf16_probe, hardware_summary  # noqa: E402
from ditlib.sample import SHIPPED_MODELS, Pretrained, sampling_guidance  # noqa: E402


def time_grid(pretrained: Pretrained, labels, steps: int, scale: float, interval, precision: str) -> tuple[float, int]:
    """Seconds for one grid, and the rows the model was called on (all steps together)."""
    rows = 0
    forward = pretrained.model.forward

    def counting(x, t, y):
        nonlocal rows
        rows += len(x)
        return forward(x, t, y)

    pretrained.model.forward = counting
    try:
        start = time.perf_counter()
        pretrained.sample(labels, num_sampling_steps=steps, sampler="ddim", cfg_scale=scale,
                          guidance_interval=interval, seed=0, progress=False, precision=precision)
        return time.perf_counter() - start, rows
    finally:
        pretrained.model.forward = forward


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=SHIPPED_MODELS[0], help="a shipped name or a checkpoint path")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    pretrained = Pretrained.load(args.ckpt, device="cpu")
    cfg = pretrained.train_config
    scale, interval = sampling_guidance(None, None, cfg)
    if scale <= 1.0 or interval is None:
        raise SystemExit(f"{args.ckpt} stores no guidance interval (cfg {scale}, interval {interval}): nothing to compare")
    labels = torch.arange(args.images) % pretrained.model.num_classes
    probe = cpu_bf16_probe()
    precisions = ["fp32"] + (["bf16"] if probe["native"] else [])
    variants = [(p, name, iv) for p in precisions for name, iv in (("every step", None), ("interval", interval))]
    for p, _, iv in variants:                                       # warm-up: first calls pay allocation and caches
        time_grid(pretrained, labels[:8], 2, scale, iv, p)
    times = {v[:2]: [] for v in variants}
    rows = {}
    for r in range(args.rounds):
        for p, name, iv in (variants if r % 2 == 0 else variants[::-1]):
            seconds, rows[p, name] = time_grid(pretrained, labels, args.steps, scale, iv, p)
            times[p, name].append(seconds)
    report = {"ckpt": str(args.ckpt), "hardware": hardware_summary(), "images": args.images, "steps": args.steps,
              "cfg_scale": scale, "interval": list(interval), "rounds": args.rounds, "rows": []}
    print(f"{args.images} images of {args.ckpt}, DDIM {args.steps}, guidance {scale:g}; {report['hardware']}")
    print(f"{'precision':<10}{'guidance':<22}{'median s':>10}{'model rows':>12}")
    for p in precisions:
        med = {name: statistics.median(times[p, name]) for name in ("every step", "interval")}
        for name in ("every step", "interval"):
            where = "every step" if name == "every step" else f"{interval[0]} <= t <= {interval[1]}"
            print(f"{p:<10}{where:<22}{med[name]:>10.2f}{rows[p, name]:>12}")
            report["rows"].append({"precision": p, "guidance": where, "median_s": round(med[name], 6),
                                   "all_s": [round(s, 6) for s in times[p, name]], "model_rows": rows[p, name]})
        print(f"{p:<10}{'interval / every step':<22}{med['interval'] / med['every step']:>10.2f}"
              f"{rows[p, 'interval'] / rows[p, 'every step']:>12.2f}")
        report[f"ratio_{p}"] = round(med["interval"] / med["every step"], 4)
    if args.json:
        with open(args.json, "w") as f:
            f.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
