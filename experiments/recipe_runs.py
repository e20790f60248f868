"""One *long run* on today's recipe: a named training config trained once, straight through, with EMA snapshots,
then FID-FMNIST of every snapshot (the paper's Figures 5-9 and the DiT-vs-U-Net comparison).

A run is a training config of `ditlib.configs` (the default's recipe: cosine lr, min-SNR-5, batch 64, EMA 0.999,
on the shipped VAE's 8×8×4 latents) with its seed and length, in **fp32** (what `precision="auto"` trains in on an
AVX2-only CPU, and what the shipped default was trained in). It runs exactly as `python -m ditlib train --config
NAME --precision fp32 --seed S` would, with `snapshot_every` set so that the EMA weights are kept along the way.

FID is measured as the table of docs/results.md measures it (`python -m ditlib fid`: N = 1,000, DDIM 50, sampling seed 0):
on every snapshot **without guidance** (as the paper's Figures), and on the final weights also **with the
config's guidance** (for the default: 3 on the steps t <= 300).

Files:

    <out>/<run>.json            the run's record, rewritten after every FID (nothing measured is lost):
                                config, seed, params, Gflops, the snapshots {step, train_s, fid}, the
                                final {fid_1k, fid_1k_guided, ...}, training seconds, hardware, command
    <work>/<run>/               the training folder (checkpoints, snapshots/, log.jsonl, final weights)

Running the same command again resumes: the training from its last checkpoint, the FIDs from the record.
A record made with another config or sampling is refused (delete it, or pass another --out).
"""
from __future__ import annotations

import datetime
import json
import platform
import time
from pathlib import Path

import torch

from common import REPO, readme_fid, same_config, write_json

from ditlib import checkpoints as ckpt
from ditlib.configs import DEFAULT_CONFIG, TRAIN_CONFIGS, build_backbone, get_config
from ditlib.flops import counted_gflops, num_params
from ditlib.runtime import hardware_summary
from ditlib.sample import sampling_guidance

DEFAULT_WORK = REPO / "runs" / "experiments" / "recipe"     # not committed: checkpoints stay out of git
RUNS = "runs"                   # <results>/runs/<run>.json: the records of every long run, whichever script made it
BASE_CONFIG = DEFAULT_CONFIG    # the recipe whose model or block the block-design and scaling runs replace
PRECISION = "fp32"
FID_SAMPLES = 1000
SAMPLING_STEPS = 50


def family(config) -> str:
    """ "DiT" or "U-Net", from the training config's model name."""
    return "U-Net" if config.model.startswith("UNet-") else "DiT"


def run_name(config_name: str, seed: int, steps: int, model: str | None = None, block: str | None = None) -> str:
    """'fmnist-latent-DiT-T/2', 0, 6000 -> 'fmnist-latent-DiT-T-2_6000_seed0'; with a model or block override,
    e.g. block='in-context': 'fmnist-latent-DiT-T-2_in-context_6000_seed0'."""
    parts = [config_name] + [o for o in (model, block) if o is not None] + [str(steps), f"seed{seed}"]
    return "_".join(parts).replace("/", "-")


def run_config(config_name: str, seed: int, steps: int, snapshot_every: int, model: str | None = None,
               block: str | None = None):
    """The named config with this run's seed, length, snapshots and fp32, and optionally another DiT `model` or
    `block` design (its recipe otherwise untouched)."""
    config = get_config(config_name)
    overrides = {k: v for k, v in (("model", model), ("block", block)) if v is not None}
    if overrides and family(config) != "DiT":
        raise ValueError(f"{config_name} is a U-Net config: model/block overrides are for DiT configs")
    return config.replace(seed=seed, max_steps=steps, snapshot_every=snapshot_every, precision=PRECISION,
                          **overrides)


def cell(model: str, block: str = "adaLN-Zero", base: str | None = None) -> tuple[str, dict]:
    """The (config name, overrides) that train `model` with `block` on the default's recipe: the registered
    config `fmnist-latent-<model>` when it is exactly that (so that the runs of unet_vs_dit.py are reused), else
    the default config with the model and/or block replaced."""
    base = base or BASE_CONFIG
    named = f"fmnist-latent-{model}"
    if block == "adaLN-Zero" and named in TRAIN_CONFIGS:
        mine, theirs = TRAIN_CONFIGS[named].to_dict(), TRAIN_CONFIGS[base].replace(model=model).to_dict()
        if {**mine, "name": None, "notes": None} == {**theirs, "name": None, "notes": None}:
            return named, {}
    base_config = TRAIN_CONFIGS[base]
    overrides = {}
    if model != base_config.model:
        overrides["model"] = model
    if block != base_config.block:
        overrides["block"] = block
    return base, overrides


STEPS, EVERY = 6000, 1500     # the default's training length; an EMA snapshot measured every 1,500 steps


def add_run_arguments(parser, what: str = "the summary and the figure") -> None:
    """The options every long-run experiment shares: --steps, --every, --out, --work, --plot-only."""
    from common import DEFAULT_OUT

    parser.add_argument("--steps", type=int, default=STEPS, help=f"training steps per run (default {STEPS})")
    parser.add_argument("--every", type=int, default=EVERY, help=f"steps between EMA snapshots (default {EVERY})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder (default experiments/results)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="training folders (default runs/experiments/recipe)")
    parser.add_argument("--plot-only", action="store_true", help=f"only rewrite {what}")


def check_run_arguments(parser, args) -> None:
    if args.steps % args.every:
        parser.error(f"--every {args.every} must divide --steps {args.steps}")


def load_records(folder: Path) -> list[dict]:
    """Every run record in a folder (finished or not), by run name."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


SUMMARY_FIELDS = ("run", "family", "config", "model", "block", "seed", "steps", "batch_size", "params", "gflops",
                  "fid_1k", "fid_1k_guided", "train_seconds", "cpu")


def summary_entry(record: dict) -> dict:
    """What a figure or a lesson needs of a complete run: its facts, its final FIDs and the FID (no guidance) and
    training seconds at every snapshot."""
    entry = {key: record[key] for key in SUMMARY_FIELDS}
    entry["snapshots"] = [{"step": s["step"], "fid": s["fid"], "train_s": s["train_s"]} for s in record["snapshots"]]
    return entry


def measure(checkpoint: Path, cfg_scale: float, interval) -> dict:
    """FID-FMNIST (KID, IS, precision/recall too) of a checkpoint at N = 1,000, DDIM 50, seed 0."""
    result = readme_fid(checkpoint, FID_SAMPLES, cfg_scale, SAMPLING_STEPS, seed=0, guidance_interval=interval)
    return {"fid": result["fid"], "kid": result.get("kid_mean"), "precision": result.get("precision"),
            "recall": result.get("recall"), "eval_wall_s": result["eval_wall_s"], "command": result["command"]}


def run(config_name: str, seed: int, steps: int, snapshot_every: int, out: Path, work: Path = DEFAULT_WORK,
        command: str = "", log=print, model: str | None = None, block: str | None = None) -> dict:
    """Train (or resume) one run and measure its FIDs; returns the complete record (also in <out>/<run>.json).
    `model` and `block` replace the DiT config's model or block design (see `cell`)."""
    from ditlib.train import FINAL_WEIGHTS, list_snapshots, train

    name = run_name(config_name, seed, steps, model, block)
    config = run_config(config_name, seed, steps, snapshot_every, model, block)
    path, run_dir = Path(out) / f"{name}.json", Path(work) / name
    guided_scale, guided_interval = sampling_guidance(None, None, config.to_dict())
    sampling = {"num_samples": FID_SAMPLES, "sampler": "ddim", "steps": SAMPLING_STEPS, "seed": 0,
                "guided": {"cfg_scale": guided_scale,
                           "guidance_interval": list(guided_interval) if guided_interval else None}}
    record = json.loads(path.read_text()) if path.exists() else None
    if record is not None and (not same_config(record["train_config"], config) or record["sampling"] != sampling):
        raise SystemExit(f"{path} was made with another config or sampling; delete it (and {run_dir}) or pass --out")
    if record is not None and record.get("complete"):
        log(f"{name}: complete in {path}, skipped")
        return record
    if record is None:
        with torch.device("meta"):
            params = num_params(build_backbone(config.model_config()))
        record = {"run": name, "family": family(config), "config": config_name, "model": config.model,
                  "overrides": {k: v for k, v in (("model", model), ("block", block)) if v is not None},
                  "block": config.block if family(config) == "DiT" else None, "seed": seed, "steps": steps,
                  "batch_size": config.batch_size, "params": params, "gflops": counted_gflops(config.model_config()),
                  "train_config": config.to_dict(), "sampling": sampling, "snapshots": [], "complete": False,
                  "command": command, "torch": torch.__version__, "python": platform.python_version(),
                  "cpu": hardware_summary("cpu"),
                  "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        write_json(path, record)

    final = run_dir / FINAL_WEIGHTS
    if not (final.with_suffix(".json").exists() and ckpt.read_meta(final)["step"] == steps):
        start = time.perf_counter()
        summary = train(config, run_dir, resume=(run_dir / "checkpoints").exists(), progress=True)
        record.update({"train_seconds": round(summary["elapsed_s"], 1), "precision": summary["precision"],
                       "compiled": summary["compiled"], "last_call_wall_s": round(time.perf_counter() - start, 1)})
        write_json(path, record)
    record.setdefault("train_seconds", round(ckpt.read_meta(final)["elapsed_s"], 1))

    done = {s["step"] for s in record["snapshots"]}
    for snapshot in list_snapshots(run_dir):
        meta = ckpt.read_meta(snapshot)
        if meta["step"] in done:
            continue
        result = measure(snapshot, 1.0, None)
        record["snapshots"].append({"step": meta["step"], "train_s": round(meta["elapsed_s"], 1), **result})
        record["snapshots"].sort(key=lambda s: s["step"])
        write_json(path, record)
        log(f"{name}: step {meta['step']}  FID (no guidance) {result['fid']:.2f}")
    last = record["snapshots"][-1] if record["snapshots"] else None
    if last is None or last["step"] != steps:
        raise SystemExit(f"{run_dir}: no snapshot at step {steps}; snapshot_every must divide the steps")
    record["fid_1k"] = last["fid"]
    if "fid_1k_guided" not in record:
        guided = measure(final, guided_scale, guided_interval)
        record.update({"fid_1k_guided": guided["fid"], "guided": guided})
        log(f"{name}: FID with guidance {guided['fid']:.2f}")
    record.update({"complete": True,
                   "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    write_json(path, record)
    return record
