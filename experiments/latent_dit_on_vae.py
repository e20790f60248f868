"""Does a better VAE make a better latent DiT? (groundwork for issue 13)

Trains the course's latent recipe (`fmnist-latent-DiT-T/2`: AdamW lr 7e-4 with warm-up, EMA 0.999, batch 64,
3500 steps) on the latents of a VAE checkpoint from `experiments/vae_variants.py`, then measures FID-FMNIST of
the EMA weights exactly as the table of docs/results.md does (`python -m ditlib fid`, N = 1,000, DDIM 50 steps,
guidance 2, seed 0). The run resumes if interrupted; the result is one JSON in experiments/results/latent_dit/.

    .venv/bin/python experiments/latent_dit_on_vae.py --vae runs/vae-variants/f4-c8-p1/final --name c8-p1
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
from ditlib.configs import get_config  # noqa: E402
from ditlib.runtime import hardware_summary  # noqa: E402
from ditlib.train import train  # noqa: E402
from ditlib.vae import load_vae  # noqa: E402

RESULTS = ROOT / "experiments" / "results" / "latent_dit"


def parse_overrides(items: list[str]) -> dict:
    """["model=DiT-M/2", "min_snr_gamma=5"] -> {"model": "DiT-M/2", "min_snr_gamma": 5}."""
    changes = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise SystemExit(f"--set wants FIELD=VALUE, got {item!r}")
        try:
            changes[field] = json.loads(value)
        except json.JSONDecodeError:
            changes[field] = value
    return changes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae", required=True, help="a VAE checkpoint stem (or shipped name)")
    parser.add_argument("--name", required=True, help="names the run folder and the result JSON")
    parser.add_argument("--config", default="fmnist-latent-DiT-T/2", help="the latent training config to reuse")
    parser.add_argument("--max-steps", type=int, default=None, help="default: the config's (3500)")
    parser.add_argument("--fid-samples", type=int, default=1000)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a field of the training config (repeatable), e.g. --set model=DiT-M/2 "
                             "--set lr_schedule=cosine --set min_snr_gamma=5; VALUE is read as JSON, else as text")
    parser.add_argument("--cfg-scale", type=float, default=2.0, help="guidance of the FID samples (default 2, on every step)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "latent-dit")
    args = parser.parse_args(argv)

    result_path = args.out / f"{args.name}.json"
    if result_path.exists():
        print(f"{args.name}: done already ({result_path})")
        return 0
    codec = load_vae(args.vae, device="cpu")
    config = get_config(args.config).replace(name=f"{args.config}-on-{args.name}", vae=str(args.vae),
                                             in_channels=codec.latent_channels, image_size=codec.latent_shape[1],
                                             **parse_overrides(args.set))
    if args.max_steps is not None:                 # the run's length is the config's (a cosine lr ends there)
        config = config.replace(max_steps=args.max_steps)
    run_dir = args.work / args.name
    start = time.perf_counter()
    summary = train(config, run_dir, max_steps=args.max_steps, resume=True)
    train_wall = time.perf_counter() - start
    fid = readme_fid(run_dir / "final", args.fid_samples, args.cfg_scale, json_path=run_dir / "fid.json")
    result = {"name": args.name, "vae": str(args.vae), "latent_shape": list(codec.latent_shape),
              "train_config": config.to_dict(), "steps": summary["steps"], "train_s": round(summary["elapsed_s"], 1),
              "train_wall_s": round(train_wall, 1), "fid_wall_s": fid["eval_wall_s"],
              "precision": summary.get("precision"), "compiled": summary.get("compiled"),
              "fid": fid["fid"], "kid": fid.get("kid_mean"), "isc": fid.get("isc_mean"),
              "precision_recall": [fid.get("precision"), fid.get("recall")], "n": fid.get("n"),
              "fid_command": fid["command"], "hardware": hardware_summary("cpu"), "command": command_line(__file__, argv)}
    args.out.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
