"""FSDP: the sharded model, its sharded EMA and its gathered checkpoints give what one process gives.

The launch goes through tests/fsdp_cpu_worker.py, which puts ditlib's trainer on its FSDP branch on two CPU
processes (accelerate enables FSDP only on GPUs; see the worker's docstring).
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from ditlib import checkpoints as ckpt
from ditlib.configs import get_config
from ditlib.train import list_checkpoints, train

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_fsdp(*args):
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), str(ROOT / "tests" / "fsdp_cpu_worker.py"), *args]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_fsdp_training_and_resume_match_one_process(tmp_path):
    train(get_config("debug").replace(grad_clip=1.0, ckpt_every=3, precision="fp32"), tmp_path / "single",
          max_steps=6, progress=False)
    launch_fsdp(str(tmp_path / "fsdp"), "3")
    launch_fsdp(str(tmp_path / "fsdp"), "6", "resume")
    for single_stem, fsdp_stem in zip(list_checkpoints(tmp_path / "single"), list_checkpoints(tmp_path / "fsdp")):
        single, single_meta = ckpt.load_checkpoint(single_stem)
        sharded, sharded_meta = ckpt.load_checkpoint(fsdp_stem)
        assert single_meta["step"] == sharded_meta["step"] and set(single) == set(sharded)
        for key in single:                        # model, EMA (kept as shards) and AdamW state (gathered)
            if not key.startswith("rng."):
                assert torch.allclose(single[key], sharded[key], atol=1e-6, rtol=0), key
    assert [ckpt.read_meta(s)["step"] for s in list_checkpoints(tmp_path / "fsdp")] == [3, 6]
