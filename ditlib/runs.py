"""A training run's folder: what `ditlib.train` writes, and reading it back (lesson 07).

    out_dir/
      config.json                     the TrainConfig
      log.jsonl                       one row per logged step: loss, mse, vb, lr, img/s, elapsed_s
      checkpoints/step-0001000.*      model, EMA, AdamW and RNG state (the last KEEP_CHECKPOINTS kept): exact resume
      snapshots/step-0000750.*        EMA weights every `snapshot_every` steps (all kept)
      final.{safetensors,json}        EMA weights only, for sampling and shipping
      loss.png                        the logged loss

Every file goes through `ditlib.checkpoints` (safetensors + JSON, written atomically). `export_run`
ships a finished run with a manifest saying how it was made.
"""
from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure      # a bare Figure (no pyplot): no display needed, no backend changed
from tqdm.auto import tqdm

from . import checkpoints as ckpt
from .data import DATA_DIR
from .runtime import hardware_summary

CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "log.jsonl"
FINAL_WEIGHTS = "final"        # out_dir/final.{safetensors,json}: EMA weights only, for sampling and shipping
KEEP_CHECKPOINTS = 2
SNAPSHOT_DIR = "snapshots"     # out_dir/snapshots/step-{step}: EMA weights every config.snapshot_every steps, all kept


def list_checkpoints(out_dir) -> list[Path]:
    """Complete training checkpoints in `out_dir`, oldest first (stems)."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    return sorted(p.with_suffix("") for p in folder.glob("step-*.json"))


def rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    return tensors


def set_rng(tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


def write_training_checkpoint(out_dir, step: int, model_state: dict, ema_state: dict, optimizer_state: dict,
                               config, model_config: dict, device: torch.device, elapsed_s: float,
                               extra: dict | None = None) -> Path:
    opt_tensors, opt_meta = ckpt.optimizer_to_tensors(optimizer_state)
    tensors = {**ckpt.prefixed(model_state, "model"), **ckpt.prefixed(ema_state, "ema"),
               **opt_tensors, **rng_tensors(device)}
    meta = {"kind": "training", "step": step, "train_config": config.to_dict(), "model_config": model_config,
            "optimizer": opt_meta, "elapsed_s": elapsed_s, **(extra or {})}
    stem = ckpt.save_checkpoint(Path(out_dir) / CHECKPOINT_DIR / f"step-{step:07d}", tensors, meta)
    for old in list_checkpoints(out_dir)[:-KEEP_CHECKPOINTS]:
        for suffix in (".json", ".safetensors"):
            old.with_suffix(suffix).unlink(missing_ok=True)
    return stem


def write_final_weights(out_dir, step: int, ema_state: dict, model_config: dict, config,
                         elapsed_s: float, extra: dict | None = None, name: str = FINAL_WEIGHTS) -> Path:
    meta = {"kind": "weights", "step": step, "train_config": config.to_dict(), "model_config": model_config,
            "elapsed_s": elapsed_s, **(extra or {})}
    return ckpt.save_checkpoint(Path(out_dir) / name, ckpt.prefixed(ema_state, "ema"), meta)


def list_snapshots(out_dir) -> list[Path]:
    """The EMA snapshots of a run (config.snapshot_every), oldest first, as checkpoint stems."""
    return sorted(p.with_suffix("") for p in (Path(out_dir) / SNAPSHOT_DIR).glob("step-*.json"))


def read_log(out_dir) -> list[dict]:
    """The loss log of a run: one dict per logged step."""
    path = Path(out_dir) / LOG_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_log(out_dir, step: int) -> None:
    """On resume, drop log lines written after the checkpoint we resume from."""
    rows = [r for r in read_log(out_dir) if r["step"] <= step]
    (Path(out_dir) / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))


class LossLog:
    """Running means of the step statistics [loss, mse, vb] -> a row of log.jsonl every `write`, and a progress bar.

    Only the process that `writes` (the main one) opens the file; `rows` keeps what was written.
    """

    def __init__(self, out_dir, progress: bool, writes: bool, initial: int, total: int, desc: str, batch_size: int):
        self.batch_size, self.rows = batch_size, []
        self.file = open(Path(out_dir) / LOG_FILE, "a") if writes else None
        self.bar = tqdm(total=total, initial=initial, desc=desc, disable=not progress, dynamic_ncols=True)
        self._reset()

    def _reset(self) -> None:
        self.sums, self.count, self.images, self.window_start = [0.0, 0.0, 0.0], 0, 0, time.perf_counter()

    def add(self, stats: list[float]) -> None:
        self.sums = [a + b for a, b in zip(self.sums, stats)]
        self.count, self.images = self.count + 1, self.images + self.batch_size
        self.bar.update(1)

    def write(self, step: int, lr: float, elapsed_s: float) -> dict:
        now = time.perf_counter()
        row = {"step": step, **{k: v / self.count for k, v in zip(("loss", "mse", "vb"), self.sums)},
               "lr": lr, "img_per_s": self.images / max(now - self.window_start, 1e-9), "elapsed_s": elapsed_s}
        if self.file is not None:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        self.bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['img_per_s']:.0f}")
        self.rows.append(row)
        self._reset()
        return row

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()


def plot_loss(out_dir, path=None):
    """Draw the logged loss (and its mse / vb parts) against the step into out_dir/loss.png."""
    rows = read_log(out_dir)
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for key in ("loss", "mse", "vb"):
        ax.plot(steps, [r[key] for r in rows], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (per-step mean)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path or Path(out_dir) / "loss.png")
    fig.savefig(path, dpi=120)
    return path


def export_run(out_dir, dest, command: str | None = None) -> Path:
    """Ship a finished run: copy its EMA weights to `dest`.{safetensors,json} and write `dest`.manifest.json.

    The manifest says how the weights were made: the training command, config, steps, wall time,
    final loss, throughput, parameter count, software versions and the sha256 of the training data.
    """
    out_dir, dest = Path(out_dir), Path(dest)
    tensors, meta = ckpt.load_checkpoint(out_dir / FINAL_WEIGHTS)          # verifies the hash
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out_dir / f"{FINAL_WEIGHTS}.safetensors", dest.with_suffix(".safetensors"))
    (dest.with_suffix(".json")).write_text(json.dumps(dict(meta, weights_file=dest.name + ".safetensors"), indent=2))
    config = meta["train_config"]
    rows = read_log(out_dir)
    data_manifest = DATA_DIR / "fashion-mnist" / "MANIFEST.json"
    manifest = {
        "what": f"EMA weights of {config['model']} trained with the config {config['name']!r}",
        "command": command or f"python -m ditlib train --config {config['name']}",
        "steps": meta["step"],
        "batch_size": config["batch_size"],
        "images_seen": meta["step"] * config["batch_size"],
        "train_time_s": round(meta["elapsed_s"], 1),
        "final_loss": rows[-1]["loss"] if rows else None,
        "median_img_per_s": sorted(r["img_per_s"] for r in rows)[len(rows) // 2] if rows else None,
        "parameters": sum(v.numel() for v in ckpt.subdict(tensors, "ema").values()),
        "precision": meta.get("precision", {"used": config["precision"], "requested": config["precision"]}),
        "compiled": meta.get("compiled"),
        "train_config": config,
        "data_sha256": ({k: v["sha256"] for k, v in json.loads(data_manifest.read_text())["files"].items()}
                        if config["dataset"] == "fashion-mnist" and data_manifest.exists() else None),
        "software": {"torch": torch.__version__, "python": platform.python_version()},
        "machine": hardware_summary(),
    }
    dest.with_name(dest.name + ".manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest
