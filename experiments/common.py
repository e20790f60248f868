"""What the two experiments share: a *run* is one DiT trained on latent Fashion-MNIST, stopped every
`eval_every` steps to measure the FID-FMNIST of its EMA weights (the paper's Figures 5, 6, 8 and 9).

A run is the config `fmnist-latent-DiT-T/2` (the shipped VAE's 8×8×4 latents, AdamW, EMA, precision auto) with
its `model` (size and patch, `ditlib.models.DiT_models`) and `block` (§3.2 design) replaced. It is
trained with `ditlib.train.train` in segments that end at the evaluation steps; each segment resumes
exactly from the previous one's checkpoint, so the curve is the one of an uninterrupted run.

Files (all JSON is written atomically):

    <out>/<experiment>.json     which cells the experiment has and its settings (written first)
    <out>/runs/<run>.json       one per run, rewritten after every evaluation: config, Gflops, params,
                                the evaluations {step, fid, train_loss, wall_s, cpu_s, ...}, command,
                                torch version, date; "complete": true once the last one is in
    <work>/<run>/               the training folder (checkpoints, log.jsonl, final EMA weights)

A run whose JSON is complete is skipped; a partial one continues from its last checkpoint. Two
experiments that ask for the same (model, block) with the same settings share the run: DiT-T/2 with
adaLN-Zero blocks is both a block design and a grid cell.

FID here is the FID-FMNIST of `ditlib.evaluate` (the shipped classifier's 128-d features, torch-fidelity's
formulas) against the 10k test images, computed from the reference statistics once per process
(`FIDEvaluator`; equal to `ditlib.evaluate.compute_metrics`'s FID, see tests/test_experiments.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch

from ditlib.configs import TrainConfig, get_config
from ditlib.models import DiT, build_model

BASE_CONFIG = "fmnist-latent-DiT-T/2"
# The grids (results/) were run with the course recipe before issue 13: constant lr after warm-up and every t
# weighted equally. Pinned here so that re-running a cell reproduces its JSON; the default's cosine decay
# and min-SNR weighting are measured in results/latent_dit/ instead.
BASE_OPTIMISATION = {"lr_schedule": "constant", "min_snr_gamma": None}
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "experiments" / "results"
DEFAULT_WORK = REPO / "runs" / "experiments"        # runs/ is not committed: checkpoints stay out of git
RUNS_DIR = "runs"


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long every run of an experiment trains and how its FID is measured (the same for all cells)."""
    steps: int = 600                 # training steps, batch `batch_size`
    eval_every: int = 150            # FID of the EMA weights after every this many steps (and at the end)
    fid_samples: int = 500           # samples per FID (labels spread evenly over the 10 classes)
    sampling_steps: int = 20         # DDIM steps per sample
    sampler: str = "ddim"
    cfg_scale: float = 1.0           # no guidance: the paper's Figures 5-9 report FID without it
    sample_precision: str = "auto"
    batch_size: int = 64
    seed: int = 0
    reference: str = "fmnist-test"

    def __post_init__(self):
        if self.steps < 1 or self.eval_every < 1 or self.fid_samples < 10:
            raise ValueError(f"need steps >= 1, eval_every >= 1 and fid_samples >= 10; got {self}")

    def eval_steps(self) -> list[int]:
        """The steps at which FID is measured: every `eval_every`, and always the last step."""
        steps = list(range(self.eval_every, self.steps + 1, self.eval_every))
        return steps if steps and steps[-1] == self.steps else steps + [self.steps]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_name(model: str, block: str) -> str:
    """File-system name of a run: 'DiT-T/2', 'adaLN-Zero' -> 'DiT-T-2_adaLN-Zero'."""
    return f"{model.replace('/', '-')}_{block}"


def run_config(model: str, block: str, settings: Settings) -> TrainConfig:
    """The base latent config with the model, block, length and batch of this run."""
    return get_config(BASE_CONFIG).replace(
        **BASE_OPTIMISATION,
        name=f"experiments/{run_name(model, block)}", model=model, block=block, max_steps=settings.steps,
        batch_size=settings.batch_size, seed=settings.seed, ckpt_every=settings.eval_every,
        log_every=min(50, settings.eval_every), sample_steps=settings.sampling_steps,
        sample_cfg_scale=settings.cfg_scale, sample_guidance_interval=None,     # the grids guide every step
        notes=f"{model} with {block} blocks on fmnist-vae latents ({BASE_CONFIG} otherwise)")


def same_config(recorded: dict, config: TrainConfig) -> bool:
    """Whether a run's recorded train_config is `config`; a field added to TrainConfig since the record was
    written (absent from it) counts as its default, so older records stay valid."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    as_stored = lambda d: json.loads(json.dumps(d))  # noqa: E731  (tuples become lists, as in the JSON)
    return as_stored({**defaults, **recorded}) == as_stored(config.to_dict())


def model_facts(config: TrainConfig) -> dict:
    """Size and cost of a config's model: params, Gflops of one forward pass of one image (the paper's count), tokens."""
    from ditlib.flops import gflops

    with torch.device("meta"):
        model = DiT(config.dit_config())
    size, patch = config.model.removeprefix("DiT-").split("/")
    return {"size": size, "patch": int(patch), "depth": model.depth, "hidden_size": model.hidden_size,
            "num_heads": model.num_heads, "tokens": model.x_embedder.num_patches,
            "params": sum(p.numel() for p in model.parameters()), "gflops": gflops(model)}


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (a reader never sees half a file, an interruption never leaves one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def command_line(script=None, argv=None) -> str:
    """The command that runs `script` with `argv` (default: this process's), as typed from the repository root."""
    script = Path(sys.argv[0] if script is None else script).resolve()
    try:
        script = script.relative_to(REPO)
    except ValueError:
        pass
    argv = sys.argv[1:] if argv is None else argv
    return " ".join(["python", shlex.quote(str(script))] + [shlex.quote(str(a)) for a in argv])


def readme_fid(checkpoint, num_samples: int = 1000, cfg_scale: float = 2.0, sampling_steps: int = 50,
               seed: int = 0, json_path=None, guidance_interval=None) -> dict:
    """FID-FMNIST (with KID, IS, precision/recall) of a checkpoint exactly as the README's results table measures
    it: `python -m ditlib fid` with DDIM, guidance `cfg_scale` (on the steps of `guidance_interval` only, if given),
    `seed`. Returns the command's JSON plus "command" (as typed, without the JSON path) and "eval_wall_s"."""
    from ditlib.__main__ import main as ditlib_main

    checkpoint = Path(checkpoint)
    json_path = Path(json_path or checkpoint.with_name(f"{checkpoint.name}.fid{num_samples}.json"))
    fid_args = ["fid", "--ckpt", str(checkpoint), "--num-samples", str(num_samples), "--num-sampling-steps",
                str(sampling_steps), "--sampler", "ddim", "--cfg-scale", f"{cfg_scale:g}", "--seed", str(seed)]
    if guidance_interval is not None:
        fid_args += ["--guidance-interval", *map(str, guidance_interval)]
    start = time.perf_counter()
    ditlib_main(fid_args + ["--json", str(json_path)])
    result = json.loads(json_path.read_text())
    return {**result, "command": "python -m ditlib " + " ".join(fid_args),
            "eval_wall_s": round(time.perf_counter() - start, 1)}


#################################################################################
#                  FID-FMNIST of a checkpoint, reference statistics once          #
#################################################################################

class FIDEvaluator:
    """FID-FMNIST of a latent DiT checkpoint's EMA weights: sample latents, decode with the VAE, compare.

    The reference features (10k test images through the shipped classifier) are extracted once, here,
    instead of on every call as `compute_metrics` does (it also computes KID and IS, ~12 s per call on
    one core); the Fréchet distance uses torch-fidelity's own functions, so the number is the same.
    """

    def __init__(self, settings: Settings, vae: str = "fmnist-vae", reference=None):
        self.settings = settings
        self.codec = _load_vae(vae)
        if reference is None:
            self.reference_stats, self.num_reference = _reference_statistics(settings.reference)
        else:
            self.reference_stats, self.num_reference = _statistics_of(reference)

    def __call__(self, checkpoint) -> float:
        """FID of `settings.fid_samples` samples from the EMA weights at `checkpoint` (a ditlib checkpoint stem)."""
        return self.fid(self.sample(checkpoint))

    def sample(self, checkpoint) -> torch.Tensor:
        """`settings.fid_samples` decoded samples of the checkpoint's EMA weights: (N, 1, 32, 32) in [-1, 1]."""
        from ditlib.sample import load_model
        from ditlib.evaluate import sample_for_fid

        s = self.settings
        model, meta = load_model(checkpoint, which="ema")
        train_config = meta.get("train_config", {})
        return sample_for_fid(model, s.fid_samples, cfg_scale=s.cfg_scale, num_sampling_steps=s.sampling_steps,
                              sampler=s.sampler, seed=s.seed, batch_size=min(s.fid_samples, 500), progress=False,
                              decode=self.codec.decode, clip_denoised=False, precision=s.sample_precision,
                              noise_schedule=train_config.get("noise_schedule", "linear"),
                              diffusion_steps=train_config.get("diffusion_steps", 1000))

    def fid(self, images) -> float:
        """FID-FMNIST of images (any layout `ditlib.evaluate.as_uint8_images` takes) against the reference."""
        from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

        from ditlib.evaluate import extract_features

        features = extract_features(images)["fid"]                                               # (N, 128)
        return fid_statistics_to_metric(fid_features_to_statistics(features), self.reference_stats,
                                        verbose=False)[KEY_METRIC_FID]


@functools.cache
def _load_vae(vae: str):
    from ditlib.vae import load_vae

    return load_vae(vae, device="cpu")


def _statistics_of(reference) -> tuple[dict, int]:
    """torch-fidelity's FID statistics (μ, Σ) of reference images (a name or images, as `reference_images` takes)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    from ditlib.evaluate import extract_features, reference_images

    images = reference_images(reference)                                       # uint8 (N, C, H, W)
    features = extract_features(images.permute(0, 2, 3, 1))["fid"]            # (N, 128)
    return fid_features_to_statistics(features), features.shape[0]


@functools.cache
def _reference_statistics(reference: str) -> tuple[dict, int]:
    return _statistics_of(reference)


@functools.cache
def latent_dataset():
    """The training latents of the base config (cached posteriors; built once per process)."""
    from ditlib.latents import build_latent_dataset

    config = get_config(BASE_CONFIG)
    return build_latent_dataset(config.vae, config.dataset, "train", progress=False)


#################################################################################
#                    One run: train in segments, FID after each                  #
#################################################################################

def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def run_one(model: str, block: str, settings: Settings, out: Path, work: Path, evaluator: FIDEvaluator,
            log=print, command: str | None = None) -> dict:
    """Train (model, block) for `settings.steps`, measuring FID at `settings.eval_steps()`; returns the run record.

    The record is rewritten to <out>/runs/<run>.json after each evaluation. A complete record is
    returned untouched; a partial one continues from the last checkpoint in <work>/<run>.
    `command` is recorded as the command that made the run (default: this process's command line).
    """
    from ditlib.train import CHECKPOINT_DIR, FINAL_WEIGHTS, list_checkpoints, read_log, train

    name = run_name(model, block)
    config = run_config(model, block, settings)
    path, run_dir = out / RUNS_DIR / f"{name}.json", work / name
    record = json.loads(path.read_text()) if path.exists() else None
    if record is not None:
        if record["settings"] != settings.to_dict() or not same_config(record["train_config"], config):
            raise ValueError(f"{path} was made with other settings ({record['settings']}); delete it (and "
                             f"{run_dir}) to redo the run, or pass another --out and --work")
        if record["complete"]:
            log(f"{name}: complete in {path}, skipped")
            return record
    checkpoints = list_checkpoints(run_dir)
    resume_step = int(checkpoints[-1].name.removeprefix("step-")) if checkpoints else 0
    if record is None or (record["evals"] and resume_step < record["evals"][-1]["step"]):
        if run_dir.exists():            # training without its record (or a record ahead of it): start over
            shutil.rmtree(run_dir)
        record = {
            "run": name, "model": model, "block": block, **model_facts(config),
            "settings": settings.to_dict(), "train_config": config.to_dict(),
            "fid": f"FID-FMNIST, {settings.fid_samples} EMA samples ({settings.sampler} {settings.sampling_steps} steps, "
                   f"guidance {settings.cfg_scale}) vs {evaluator.num_reference} {settings.reference} images",
            "train_flops_per_step": None, "evals": [], "complete": False,
            "command": command or command_line(), "torch": torch.__version__, "python": platform.python_version(),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        # Training compute as in Figure 9: Gflops × batch × steps × 3 (the backward pass costs twice the forward).
        record["train_flops_per_step"] = record["gflops"] * 1e9 * settings.batch_size * 3
    elif record["evals"]:
        log(f"{name}: resuming after step {record['evals'][-1]['step']} (checkpoint at {resume_step})")

    done = {e["step"] for e in record["evals"]}
    wall = record["evals"][-1]["wall_s"] if record["evals"] else 0.0
    cpu = record["evals"][-1]["cpu_s"] if record["evals"] else 0.0
    previous = max(done, default=0)
    for step in settings.eval_steps():
        if step in done:
            continue
        wall0, cpu0 = _clock()
        summary = train(config, run_dir, max_steps=step, resume=True, progress=False, dataset=latent_dataset())
        wall1, cpu1 = _clock()
        fid = evaluator(run_dir / FINAL_WEIGHTS)
        wall2, cpu2 = _clock()
        wall, cpu = wall + wall2 - wall0, cpu + cpu2 - cpu0
        segment = [r["loss"] for r in read_log(run_dir) if previous < r["step"] <= step]
        record["evals"].append({
            "step": step, "fid": fid,
            "train_loss": sum(segment) / len(segment) if segment else math.nan,   # mean hybrid loss since the last eval
            "images_seen": step * settings.batch_size,
            "train_flops": record["train_flops_per_step"] * step,
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),                       # cumulative: training + evaluations
            "train_wall_s": round(summary["elapsed_s"], 1),                          # cumulative training only
            "segment_train_wall_s": round(wall1 - wall0, 1), "segment_train_cpu_s": round(cpu1 - cpu0, 1),
            "eval_wall_s": round(wall2 - wall1, 1), "eval_cpu_s": round(cpu2 - cpu1, 1),
        })
        record["complete"] = step == settings.steps
        if record["complete"]:
            record["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        write_json(path, record)
        log(f"{name}: step {step}/{settings.steps}  FID {fid:.2f}  loss {record['evals'][-1]['train_loss']:.4f}  "
            f"train {wall1 - wall0:.0f}s  eval {wall2 - wall1:.0f}s  total {wall:.0f}s wall / {cpu:.0f}s CPU")
        previous = step
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)   # done: keep log.jsonl and the final EMA weights
    return record


#################################################################################
#                      The command line both experiments share                   #
#################################################################################

def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Settings()
    parser.add_argument("--steps", type=int, default=d.steps, help=f"training steps per run (default {d.steps})")
    parser.add_argument("--eval-every", type=int, default=d.eval_every,
                        help=f"measure FID every this many steps (default {d.eval_every})")
    parser.add_argument("--fid-samples", type=int, default=d.fid_samples,
                        help=f"samples per FID measurement (default {d.fid_samples})")
    parser.add_argument("--sampling-steps", type=int, default=d.sampling_steps,
                        help=f"DDIM steps per sample (default {d.sampling_steps})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"training batch (default {d.batch_size})")
    parser.add_argument("--only", action="append", default=None, metavar="CELL",
                        help="run only this cell (repeatable); the others are listed by --list")
    parser.add_argument("--list", action="store_true", help="print the cells and exit")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSONs and figures go (default experiments/results)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="training folders (default runs/experiments)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: leave the other cores alone)")


def settings_from(args) -> Settings:
    return Settings(steps=args.steps, eval_every=args.eval_every, fid_samples=args.fid_samples,
                    sampling_steps=args.sampling_steps, batch_size=args.batch_size)


def run_experiment(experiment: str, figures: str, cells: dict[str, tuple[str, str]], args, command: str) -> int:
    """Run the selected `cells` ({cell: (model, block)}) of `experiment`, then redraw its figures.

    Writes <out>/<experiment>.json (the cells and settings) before the first run. Returns an exit
    status: 0 if every selected run is complete, 1 if one failed (the others still run).
    """
    torch.set_num_threads(args.threads)
    settings = settings_from(args)
    if args.list:
        for cell, (model, block) in cells.items():
            print(f"{cell:<18} {model} {block}")
        return 0
    selected = list(cells) if not args.only else args.only
    unknown = [c for c in selected if c not in cells]
    if unknown:
        raise SystemExit(f"unknown cell(s) {unknown}; choose among: {', '.join(cells)}")
    out = Path(args.out)
    manifest_path = out / f"{experiment}.json"
    manifest = {"experiment": experiment, "figures": figures, "settings": settings.to_dict(),
                "cells": {cell: {"model": m, "block": b, "run": f"{RUNS_DIR}/{run_name(m, b)}.json"}
                          for cell, (m, b) in cells.items()}}
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old["settings"] != manifest["settings"] or old["cells"] != manifest["cells"]:
            raise SystemExit(f"{manifest_path} describes other settings or cells; pass another --out or delete it")
    write_json(manifest_path, manifest)

    evaluator = FIDEvaluator(settings)
    failed = []
    for cell in selected:
        model, block = cells[cell]
        try:
            run_one(model, block, settings, out, Path(args.work), evaluator, log=lambda m: print(m, flush=True),
                    command=command)
        except Exception:            # one diverging cell must not cost the others
            traceback.print_exc()
            failed.append(cell)
    from plot import plot_all
    for figure in plot_all(out):
        print(f"figure: {figure}")
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0
