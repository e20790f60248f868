"""benchmarks/bench_model.py runs (smoke version, tiny model) and reports what it promises: ditlib's training
step in each variant against the fp32 matmul peak measured in the same run, and ditlib against diffusers.
Its numbers are not checked here (a shared 2-core machine is too noisy): only that they exist and add up."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_model_smoke_run_reports_peak_steps_and_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_model.py", "--quick", "--model", "DiT-debug/8", "--batch", "4",
         "--dtypes", "fp32", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    steps = report["steps"]
    assert steps["fp32_matmul_peak_gflops"] > 1
    rows = {r["row"]: r for r in steps["rows"]}
    assert set(rows) == {"step eager, foreach AdamW, fp32", "step eager, fused AdamW, fp32",
                         "step compiled, fused AdamW, fp32"}
    for r in rows.values():
        assert r["img_per_s"] > 0
        # GFLOP/s by the paper's count (Gflops × 2 × 3 per image) and its share of the measured peak
        assert abs(r["gflops_per_s"] - r["img_per_s"] * steps["gflops_per_forward"] * 6) < 1e-6 * r["gflops_per_s"] + 1e-9
        assert abs(r["pct_of_fp32_peak"] - 100 * r["gflops_per_s"] / steps["fp32_matmul_peak_gflops"]) < 1e-6
    compare = {r["row"]: r for r in report["results"]}
    assert set(compare) == {"train fp32", "sample fp32"}
    assert all(r["ditlib"] > 0 and r["diffusers"] > 0 and abs(r["ratio"] - r["ditlib"] / r["diffusers"]) < 1e-9
               for r in compare.values())
    assert "native bf16" in report["machine"]["hardware"] or "no native bf16" in report["machine"]["hardware"]
    assert "% of peak" in proc.stdout and "ditlib/diffusers" in proc.stdout


def test_bench_sampling_smoke_run_compares_every_step_with_the_interval(tmp_path):
    """benchmarks/bench_sampling.py on the shipped default (4 images, 4 steps): both guidance rows in fp32, and the
    model rows the interval saves, counted (DDIM 4 visits t = 0, 250, 500, 750: two of them lie in [0, 300])."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_sampling.py", "--images", "4", "--steps", "4",
                           "--rounds", "1", "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {(r["precision"], r["guidance"]): r for r in report["rows"]}
    lo, hi = report["interval"]
    every, interval = rows["fp32", "every step"], rows["fp32", f"{lo} <= t <= {hi}"]
    from ditlib.diffusion import create_diffusion
    timesteps = create_diffusion("ddim4").timestep_map.tolist()
    guided = sum(lo <= t <= hi for t in timesteps)
    assert every["model_rows"] == 2 * 4 * 4                                  # every step: [conditional; null] halves
    assert interval["model_rows"] == 4 * (len(timesteps) + guided) < every["model_rows"]
    assert every["median_s"] > 0 and interval["median_s"] > 0
    assert abs(report["ratio_fp32"] - interval["median_s"] / every["median_s"]) < 0.01
    assert "interval / every step" in proc.stdout
