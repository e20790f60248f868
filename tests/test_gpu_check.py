"""benchmarks/gpu_check.sh and gpu_check.py, run on a CPU with the tiny DiT-debug/8 (a few seconds).

The real check needs a CUDA GPU; here the wrapper runs with GPU_CHECK_ALLOW_CPU=1 and `--device cpu`, so
what is tested is the plumbing: rows, JSON, the printed reference, OOM handling, the time budget and
the refusal to run without CUDA.
"""
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
TINY = ["--device", "cpu", "--models", "DiT-debug/8", "--batches", "2", "--steps", "1", "--sample-steps", "1",
        "--precision", "fp32"]
REFERENCE = "fast-DiT (chuanqi/fast-DiT README): 0.84 steps/s, DiT-XL/2, batch 128, one A100 80GB"


def run_wrapper(args, tmp_path, allow_cpu: bool):
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    env.pop("GPU_CHECK_ALLOW_CPU", None)
    if allow_cpu:
        env["GPU_CHECK_ALLOW_CPU"] = "1"
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_run_writes_training_and_sampling_rows(tmp_path):
    json_path = tmp_path / "result.json"
    out = run_wrapper([*TINY, "--json", str(json_path)], tmp_path, allow_cpu=True)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(json_path.read_text())

    train = [r for r in report["rows"] if r["kind"] == "train"]
    assert sorted(r["grad_checkpointing"] for r in train) == [False, True]
    for row in train:
        assert row["status"] == "ok" and row["model"] == "DiT-debug/8" and row["batch"] == 2
        assert row["steps_per_s"] > 0 and row["img_per_s"] == pytest.approx(2 * row["steps_per_s"])
        assert row["peak_mem_gib"] is None                       # not tracked on a CPU
        assert row["timed_steps"] == 1

    sample = [r for r in report["rows"] if r["kind"] == "sample"]
    assert len(sample) == 1 and sample[0]["status"] == "ok"
    assert sample[0]["img_per_s"] > 0 and sample[0]["extrapolated"] is True
    assert sample[0]["chain_steps"] == 250 and sample[0]["forward_batch"] == 4
    # img/s is one batch per 250 steps at the timed rate
    assert sample[0]["img_per_s"] == pytest.approx(2 * sample[0]["steps_per_s"] / 250)

    assert REFERENCE in out.stdout
    assert "extrapolated" in out.stdout and "n/a" in out.stdout
    assert "torch " + torch.__version__ in out.stdout
    assert report["wrapper_command"].startswith("bash benchmarks/gpu_check.sh --device cpu")
    assert not (tmp_path / "out" / "gpu_check.json").exists()    # the --json given wins over $OUT's default


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so the wrapper would run")
def test_wrapper_refuses_to_run_without_cuda(tmp_path):
    out = run_wrapper(TINY, tmp_path, allow_cpu=False)
    assert out.returncode == 2
    assert "CUDA" in out.stderr
    assert not (tmp_path / "out" / "gpu_check.json").exists()


def test_out_of_memory_in_one_row_does_not_end_the_run(tmp_path, monkeypatch, capsys):
    gpu_check = load_script()
    real_train_row = gpu_check.train_row

    def train_row_oom_with_checkpointing_off(*args, grad_checkpointing, **kwargs):
        if not grad_checkpointing:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_train_row(*args, grad_checkpointing=grad_checkpointing, **kwargs)

    monkeypatch.setattr(gpu_check, "train_row", train_row_oom_with_checkpointing_off)
    json_path = tmp_path / "oom.json"
    with torch.random.fork_rng():                               # main() seeds torch; keep other tests' RNG
        assert gpu_check.main([*TINY, "--warmup", "0", "--json", str(json_path)]) == 0
    rows = json.loads(json_path.read_text())["rows"]
    status = {(r["kind"], r["grad_checkpointing"]): r["status"] for r in rows}
    assert status == {("train", False): "oom", ("train", True): "ok", ("sample", None): "ok"}
    assert "OOM" in capsys.readouterr().out


def test_rows_beyond_the_time_budget_are_skipped(tmp_path, capsys):
    gpu_check = load_script()
    json_path = tmp_path / "budget.json"
    with torch.random.fork_rng():
        assert gpu_check.main([*TINY, "--max-seconds", "0", "--json", str(json_path)]) == 0
    rows = json.loads(json_path.read_text())["rows"]
    assert len(rows) == 3 and all(r["status"] == "skipped" for r in rows)
    out = capsys.readouterr().out
    assert "skipped (time budget)" in out and REFERENCE in out
