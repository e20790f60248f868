"""How much does the latent shape buy the small VAE? (groundwork for issue 13: a VAE close to the rFID floor)

Trains variants of `fmnist-vae-f4` with `ditlib.vae_train.train_vae` (same recipe, same steps) and records each one's
PSNR and rFID-FMNIST (10,000 test images; ditlib.evaluate's Fashion-MNIST extractor) with its training time
and the hardware, one JSON per variant in experiments/results/vae/. A finished variant is skipped, so the
script can be re-run after an interruption; run one variant with `--only NAME`.

    .venv/bin/python experiments/vae_variants.py                 # every variant, one after another
    .venv/bin/python experiments/vae_variants.py --only f4-c8    # one
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ditlib.runtime import hardware_summary, resolve_precision  # noqa: E402
from ditlib.vae_train import get_vae_config, train_vae  # noqa: E402

RESULTS = ROOT / "experiments" / "results" / "vae"

PRE_ISSUE13 = {"perceptual_weight": 0.0}

# name -> changes to fmnist-vae-f4 (32×32×1 -> 8×8×4, 1500 steps of batch 64)
VARIANTS = {
    "f4-c4": {},                                   # the shipped recipe, re-run here for a same-machine baseline
    "f4-c8": {"latent_channels": 8},               # 8×8×8: twice the numbers, still 16 tokens at patch 2
    "f4-c8-p1": {"latent_channels": 8, "perceptual_weight": 1.0},   # + feature matching on the FID classifier
    "f4-c4-p1": {"perceptual_weight": 1.0},                           # the same term at the shipped 8×8×4
    "f4-c4-p3": {"perceptual_weight": 3.0},                           # a heavier feature-matching weight
    # Half the channels at 32×32 and 16×16: ~1.9× the fp32 training rate, so twice the steps in the same time.
    "slim-c4-p1-3k": {"block_out_channels": (16, 32, 64), "norm_num_groups": 16, "perceptual_weight": 1.0,
                      "max_steps": 3000},
}


def run(name: str, changes: dict, max_steps: int | None, base: str = "fmnist-vae-f4", results: Path = RESULTS,
        work: Path = ROOT / "runs" / "vae-variants") -> dict:
    out_json = Path(results) / f"{name}.json"
    if out_json.exists():
        print(f"{name}: done already ({out_json})")
        return json.loads(out_json.read_text())
    # Each variant changes the recipe as it was before issue 13 (L1 + KL, no perceptual term), whatever the
    # config's default is now (fmnist-vae-f4 ships with w_P = 3, the variant f4-c4-p3).
    config = get_vae_config(base).replace(name=f"{base}-{name}", **{**PRE_ISSUE13, **changes})
    run_dir = Path(work) / name
    if (run_dir / "final.json").exists():
        raise FileExistsError(f"{run_dir} holds a finished run without its result JSON; remove the folder to redo it")
    if run_dir.exists():                                   # an interrupted run: train_vae has no resume
        import shutil
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    summary = train_vae(config, run_dir, max_steps=max_steps)   # None: the config's (1500 unless the variant says)
    result = {"variant": name, "changes": changes, "config": config.to_dict(), **summary,
              "wall_s": round(time.perf_counter() - start, 1), "hardware": hardware_summary("cpu"),
              "precision": resolve_precision(config.precision, "cpu", announce=False).to_dict(),
              "command": f".venv/bin/python experiments/vae_variants.py --only {name}"}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(VARIANTS), default=None)
    parser.add_argument("--max-steps", type=int, default=None, help="default: the config's (1500)")
    parser.add_argument("--base", default="fmnist-vae-f4", help="the VAE config the variants change (tests: vae-debug)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSONs go")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "vae-variants", help="run folders")
    args = parser.parse_args(argv)
    for name, changes in VARIANTS.items():
        if args.only in (None, name):
            run(name, changes, args.max_steps, args.base, args.out, args.work)


if __name__ == "__main__":
    main()
