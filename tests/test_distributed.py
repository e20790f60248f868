"""Distributed training and sampling through `accelerate launch`, on two CPU processes.

accelerate 1.x starts several CPU processes only through MPI (`--cpu --mpirun_hostfile`) or torchrun; the
tests use torchrun (`--multi_gpu`) with ACCELERATE_USE_CPU=true, which gives a gloo process group on the
CPU on any machine. Two processes with the global batch split between them must compute what one
process computes with the whole batch.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ditlib import checkpoints as ckpt
from ditlib.sample import load_model
from ditlib.configs import get_config
from ditlib.data import FashionMNIST, StepBatches
from ditlib.distributed import local_batch_size
from ditlib.evaluate import collect_fid_npz, sample_fid_images
from ditlib.evaluate import save_adm_npz
from ditlib.latents import LatentDataset
from ditlib.train import list_checkpoints, read_log, train

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args, processes=2):
    """`accelerate launch ... -m ditlib ARGS` on `processes` CPU processes."""
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "ditlib", *args]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process with the whole batch for 6 steps (checkpoints at 3 and 6); two processes for 3 steps,
    then resumed to 6."""
    root = tmp_path_factory.mktemp("distributed")
    # fp32 on every machine: bf16 sums depend on the thread count (1 per process here), so they would not match
    train(get_config("debug").replace(ckpt_every=3, precision="fp32"), root / "single", max_steps=6, progress=False)
    launch("train", "--config", "debug", "--max-steps", "3", "--out", str(root / "two"), "--precision", "fp32")
    first = ckpt.load_checkpoint(list_checkpoints(root / "two")[-1])
    resumed = launch("train", "--config", "debug", "--max-steps", "6", "--out", str(root / "two"), "--resume",
                     "--precision", "fp32")
    return root, first, resumed


def _assert_same_state(a, b, atol=1e-6):
    assert set(a) == set(b)                       # the same checkpoint layout
    for key in a:
        if not key.startswith("rng."):
            assert torch.allclose(a[key].float(), b[key].float(), atol=atol, rtol=0), key


def test_two_processes_train_the_weights_one_process_trains(runs):
    root, (tensors, meta), _ = runs
    single, single_meta = ckpt.load_checkpoint(list_checkpoints(root / "single")[0])
    assert meta["step"] == single_meta["step"] == 3
    _assert_same_state(tensors, single)


def test_a_distributed_run_resumes_where_it_stopped(runs):
    root, _, resumed = runs
    assert "resuming debug" in resumed.stdout
    tensors, meta = ckpt.load_checkpoint(list_checkpoints(root / "two")[-1])
    single, _ = ckpt.load_checkpoint(list_checkpoints(root / "single")[-1])
    assert meta["step"] == 6
    _assert_same_state(tensors, single)
    two, one = read_log(root / "two"), read_log(root / "single")
    assert [r["step"] for r in two] == [3, 5, 6] and [r["step"] for r in one] == [5, 6]
    # The logged loss is the mean over the global batch (reduced over processes), not a per-rank value.
    assert two[-1]["loss"] == pytest.approx(one[-1]["loss"], rel=1e-6)


def test_distributed_sampling_writes_each_index_once_whatever_the_process_count(runs):
    root, _, _ = runs
    out = root / "fid"
    reference = save_adm_npz(FashionMNIST("test").get_batch(torch.arange(20))[0], root / "reference.npz")
    launch("sample-fid", "--ckpt", str(root / "single" / "final"), "--num-samples", "10", "--num-sampling-steps", "3",
           "--cfg-scale", "1.5", "--batch-size", "3", "--reference", str(reference), "--out", str(out),
           "--precision", "fp32")
    written = [json.loads((out / f"written-rank{r}.json").read_text())["written"] for r in (0, 1)]
    assert not set(written[0]) & set(written[1]) and sorted(written[0] + written[1]) == list(range(10))
    assert sorted(p.name for p in (out / "samples").iterdir()) == [f"{i:06d}.png" for i in range(10)]
    images = np.load(out / "samples-10.npz")["arr_0"]
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
    assert len({image.tobytes() for image in images}) == 10            # ten distinct images
    assert np.isfinite(json.loads((out / "fid.json").read_text())["fid"])
    # One process, another batch size: the same images (each index has its own label and seed).
    model, _ = load_model(root / "single" / "final")
    sample_fid_images(model, root / "one", 10, cfg_scale=1.5, num_sampling_steps=3, batch_size=4, progress=False,
                      precision="fp32")
    alone = np.load(collect_fid_npz(root / "one", 10))["arr_0"]
    assert np.abs(alone.astype(int) - images.astype(int)).max() <= 1


def test_each_process_gets_its_rows_of_the_same_global_batch():
    x = torch.arange(24, dtype=torch.float32).reshape(24, 1, 1, 1).expand(24, 2, 2, 2).contiguous()
    images = torch.utils.data.TensorDataset(x, torch.arange(24))
    latents = LatentDataset(torch.randn(24, 2, 4, 2, 2), torch.rand(24, 2, 4, 2, 2), torch.arange(24), 0.5)
    for dataset in (images, latents):
        whole = StepBatches(dataset, 8, seed=3, hflip=True)[5]
        parts = [StepBatches(dataset, 8, seed=3, hflip=True, num_shards=4, shard=r)[5] for r in range(4)]
        assert torch.equal(torch.cat([p[0] for p in parts]), whole[0])
        assert torch.equal(torch.cat([p[1] for p in parts]), whole[1])


def test_a_global_batch_that_does_not_split_evenly_is_refused():
    assert local_batch_size(256, 8) == 32
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        local_batch_size(256, 3)

