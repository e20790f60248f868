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

FORMAT = "ditlib-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, corrupt or of the wrong kind."""


def _stem(path) -> Path:
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
    stem = _stem(path)
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
    stem = _stem(path)
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
    stem = _stem(path)
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


def load_model(path, which: str = "ema", device: torch.device | str = "cpu"):
    """Build the DiT stored in a ditlib checkpoint and load its `which` ("ema" or "model") weights.

    Returns (model in eval mode, meta). Weights-only exports have only "ema".
    """
    from .models import DiT

    tensors, meta = load_checkpoint(path)
    state = subdict(tensors, which)
    if not state:
        kinds = sorted({k.split(".", 1)[0] for k in tensors} & {"model", "ema"})
        raise CheckpointError(f"{_stem(path)} holds no {which!r} weights (it has: {kinds or 'none'})")
    if "model_config" not in meta:
        raise CheckpointError(f"{_stem(path)}.json has no model_config: cannot rebuild the model")
    model = DiT(**meta["model_config"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"the weights in {_stem(path)} do not fit its model_config: {err}") from None
    return model.to(device).eval(), meta


#################################################################################
#                 The official DiT checkpoints (facebookresearch/DiT)            #
#################################################################################

def _read_pickled_state_dict(path) -> dict:
    """torch.load with weights_only=True: tensors, containers and numbers only, so a checkpoint cannot run
    code while it is read. argparse.Namespace (the "args" of official training checkpoints) is allowed too."""
    import argparse
    import pickle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[0] if lines else
                      type(err).__name__)
        raise CheckpointError(f"{path} was refused: it holds more than tensors and plain containers, and reading it "
                              f"could run code ({reason}). Never unpickle it fully unless you trust its source") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a state dict")
    for key in ("ema", "model"):        # a training checkpoint {"model", "ema", "opt", "args"}: sample with the EMA
        if isinstance(data.get(key), dict):
            return data[key]
    return data


def infer_dit_config(state: dict, model_name: str | None = None) -> dict:
    """`DiT(**config)` arguments that fit an adaLN-Zero state dict in the official layout.

    From the shapes: depth (number of blocks), hidden size, patch size and input channels
    (x_embedder.proj.weight, D×C×p×p), input size (√(pos_embed length)·p), classes (label-table rows − 1,
    the last row being the null class), learn_sigma (final linear outputs 2·p²·C rather than p²·C) and
    the MLP ratio. The head count is not visible in any shape: it comes from `model_name`, else from the
    registry size with this depth and width (`ditlib.models.PAPER_SIZES`, `COURSE_SIZES`).
    """
    import math

    from .models import COURSE_SIZES, DiT_models, PAPER_SIZES

    needed = ("x_embedder.proj.weight", "pos_embed", "y_embedder.embedding_table.weight", "final_layer.linear.weight",
              "blocks.0.adaLN_modulation.1.weight", "blocks.0.mlp.fc1.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(f"not an adaLN-Zero DiT state dict in the official layout: missing {missing}")
    hidden, in_channels, patch, _ = state["x_embedder.proj.weight"].shape
    tokens = state["pos_embed"].shape[1]
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise CheckpointError(f"pos_embed has {tokens} positions, not a square grid")
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    out_features = state["final_layer.linear.weight"].shape[0]
    config = dict(input_size=grid * patch, patch_size=patch, in_channels=in_channels, hidden_size=hidden, depth=depth,
                  mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / hidden, class_dropout_prob=0.1,
                  num_classes=state["y_embedder.embedding_table.weight"].shape[0] - 1,
                  learn_sigma=out_features == 2 * patch * patch * in_channels, block="adaLN-Zero")
    if model_name is not None:
        if model_name not in DiT_models:
            raise KeyError(f"unknown model config {model_name!r}; choose one of: {', '.join(DiT_models)}")
        size, named_patch = model_name[len("DiT-"):].split("/")
        named_depth, named_hidden, heads = {**PAPER_SIZES, **COURSE_SIZES}[size]
        if (named_depth, named_hidden, int(named_patch)) != (depth, hidden, patch):
            raise CheckpointError(f"the weights are depth {depth}, width {hidden}, patch {patch}, not {model_name} "
                                  f"(depth {named_depth}, width {named_hidden}, patch {named_patch})")
    else:
        matches = [h for d, w, h in {**PAPER_SIZES, **COURSE_SIZES}.values() if (d, w) == (depth, hidden)]
        if not matches:
            raise CheckpointError(f"depth {depth} and width {hidden} match no registered size, so the number of "
                                  "heads is unknown: pass model_name (or build DiT(...) yourself)")
        heads = matches[0]
    return dict(config, num_heads=heads)


def load_official_dit(path, model_name: str | None = None, device: torch.device | str = "cpu"):
    """A ready `DiT` (eval mode) from an official checkpoint such as `DiT-XL-2-256x256.pt` or `-512x512.pt`.

    The file is read with `torch.load(weights_only=True)`, never a full unpickle: anything but tensors
    and plain containers is refused with a `CheckpointError` before any of it runs. A plain state dict
    (the released files) or a training checkpoint (`{"model", "ema", "opt", "args"}`; the EMA weights are
    used) is accepted. The config is inferred from the shapes (`infer_dit_config`) unless `model_name`
    (e.g. "DiT-XL/2") is given, and the weights load with strict=True.
    """
    from .models import DiT

    state = _read_pickled_state_dict(path)
    if not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors")
    model = DiT(**infer_dit_config(state, model_name))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"the weights in {path} do not fit {model_name or 'the inferred config'}: {err}") from None
    return model.to(device).eval()
