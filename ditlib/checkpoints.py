"""Checkpoints: safetensors for tensors + a JSON sidecar for everything else; loading never runs code.

A checkpoint `STEM` is two files, `STEM.safetensors` and `STEM.json`. The JSON is written last and
records the sha256 of the tensor file, so a checkpoint is complete exactly when its JSON exists and
the hash matches; both files are written to temporary names and renamed (atomic on POSIX), so an
interrupted save never leaves a checkpoint that looks valid but is not.

Tensor keys: `model.*` (the trained weights), `ema.*` (the EMA weights), `optim.<i>.<name>` (AdamW
state), `rng.*` (random-number-generator states). A weights-only export holds just `ema.*`.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import DitlibError

FORMAT = "ditlib-checkpoint-v1"


class CheckpointError(DitlibError, ValueError):
    """A checkpoint is missing, incomplete, corrupt or of the wrong kind."""


def checkpoint_stem(path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write `path`.safetensors and `path`.json atomically; returns the stem."""
    stem = checkpoint_stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    st_path, js_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    tmp_st, tmp_js = st_path.with_name(st_path.name + ".tmp"), js_path.with_name(js_path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}, str(tmp_st))
    meta = dict(meta, format=FORMAT, weights_sha256=_sha256(tmp_st), weights_file=st_path.name)
    tmp_js.write_text(json.dumps(meta, indent=2, default=_json_default))
    if js_path.exists():        # the old JSON goes first: a crash in between leaves no half-valid pair
        js_path.unlink()
    os.chmod(tmp_st, 0o644)      # safetensors writes owner-only files; checkpoints are for sharing
    for tmp in (tmp_st, tmp_js):  # on disk before the renames: a power loss must not leave a renamed empty file
        fsync_path(tmp)
    fsync_path(stem.parent)
    os.replace(tmp_st, st_path)
    os.replace(tmp_js, js_path)
    fsync_path(stem.parent)      # the renames themselves
    return stem


def fsync_path(path) -> None:
    """Flush a file's (or a folder's entries') data to the disk; a no-op where the OS cannot open folders."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:                # e.g. folders on Windows
        return
    try:
        os.fsync(fd)
    except OSError:                # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _json_default(obj):
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint's JSON")


def read_meta(path) -> dict:
    """The JSON sidecar of a checkpoint, checked for format."""
    stem = checkpoint_stem(path)
    js_path = stem.with_suffix(".json")
    if not js_path.exists():
        if stem.with_suffix(".safetensors").exists():
            raise CheckpointError(f"{js_path} is missing: the checkpoint {stem} is incomplete (interrupted save?)")
        raise CheckpointError(f"no checkpoint at {stem} (expected {stem}.safetensors and {stem}.json)")
    try:
        meta = json.loads(js_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{js_path} is not valid JSON ({err}): the checkpoint is corrupt") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{js_path} is not a ditlib checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    return meta


def load_checkpoint(path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint: (tensors on CPU, meta). Raises CheckpointError if it is missing or corrupt."""
    stem = checkpoint_stem(path)
    meta = read_meta(stem)
    st_path = stem.with_suffix(".safetensors")
    if not st_path.exists():
        raise CheckpointError(f"{st_path} is missing (the JSON sidecar is there)")
    if verify and _sha256(st_path) != meta["weights_sha256"]:
        raise CheckpointError(f"{st_path} is corrupt: its sha256 does not match the one recorded in {stem}.json")
    try:
        tensors = load_file(str(st_path))
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{st_path} could not be read as safetensors: {err}") from None
    return tensors, meta


def subdict(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix.` with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def optimizer_to_tensors(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state_dict (or the state dict itself) into tensors (for safetensors) and
    JSON-able metadata."""
    sd = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_state_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The inverse of `optimizer_to_tensors`: a state dict for `optimizer.load_state_dict`."""
    state: dict[int, dict] = {}
    for key, value in subdict(tensors, "optim").items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    optimizer.load_state_dict(optimizer_state_from_tensors(tensors, meta))
