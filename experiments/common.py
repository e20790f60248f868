"""What the experiments share: JSON written atomically, the command line of a run as typed, a record's config
checked against the one asked for, and FID-FMNIST of a checkpoint measured exactly as docs/results.md's table measures
it (`python -m ditlib fid`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

from ditlib.configs import TrainConfig

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "experiments" / "results"


def same_config(recorded: dict, config: TrainConfig) -> bool:
    """Whether a run's recorded train_config is `config`; a field added to TrainConfig since the record was
    written (absent from it) counts as its default, so older records stay valid."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    as_stored = lambda d: json.loads(json.dumps(d))  # noqa: E731  (tuples become lists, as in the JSON)
    return as_stored({**defaults, **recorded}) == as_stored(config.to_dict())


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
    """FID-FMNIST (with KID, IS, precision/recall) of a checkpoint exactly as the table of docs/results.md measures
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
