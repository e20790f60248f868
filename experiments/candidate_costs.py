"""Cost of candidate default models (groundwork for issue 13): what each one costs to train and to sample here.

For each candidate (model, latent shape) and precision: eager training img/s of `ditlib.train`'s step at batch
64 (`ditlib.doctor.build_steps`) and the wall time of a 64-image grid with DDIM 50 steps and guidance 2
(`ditlib.sample.sample_images`, 128 forward passes a step; the VAE decode, ~0.1 s for 64 images, not included).
Weights are random: the cost does not depend on them. Results go to experiments/results/candidate_costs.json.

    .venv/bin/python experiments/candidate_costs.py
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ditlib.configs import get_config  # noqa: E402
from ditlib.doctor import build_steps, timed_rate  # noqa: E402
from ditlib.models import DiT, build_model  # noqa: E402
from ditlib.runtime import hardware_summary  # noqa: E402
from ditlib.sample import sample_images  # noqa: E402

CANDIDATES = [  # (model, side of the model's input, its channels)
    ("DiT-T/2", 8, 4), ("DiT-T/2", 8, 8), ("DiT-XS/2", 8, 4), ("DiT-M/2", 8, 4), ("DiT-T/1", 8, 4), ("DiT-T/4", 32, 1),
]


def grid_seconds(model, precision: str) -> float:
    labels = [i % 10 for i in range(64)]
    sample_images(model, labels[:8], num_sampling_steps=5, sampler="ddim", cfg_scale=2.0, progress=False,
                  precision=precision)                                             # warm-up
    start = time.perf_counter()
    sample_images(model, labels, num_sampling_steps=50, sampler="ddim", cfg_scale=2.0, progress=False,
                  precision=precision)
    return time.perf_counter() - start


def main() -> None:
    base = get_config("fmnist-latent-DiT-T/2")
    rows = []
    for name, side, channels in CANDIDATES:
        config = base.replace(model=name, image_size=side, in_channels=channels, vae=None)
        for precision in ("fp32", "bf16"):
            step, _, info = build_steps(config, precision, device="cpu")
            img_s = timed_rate(step, 3.0) * info["batch"]
            torch.manual_seed(0)
            model = DiT(config.dit_config())
            row = {"model": name, "input": f"{side}x{side}x{channels}", "precision": precision,
                   "gflops": round(info["gflops_per_forward"], 4), "train_img_s": round(img_s, 1),
                   "grid64_ddim50_cfg_s": round(grid_seconds(model, precision), 2)}
            print(row, flush=True)
            rows.append(row)
    out = ROOT / "experiments" / "results" / "candidate_costs.json"
    out.write_text(json.dumps({"hardware": hardware_summary("cpu"), "command": "experiments/candidate_costs.py",
                               "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
