"""Specification of experiments/: each script runs one cell end to end on a debug-size DiT, writes a JSON
that survives interruption and is skipped when complete, and the figures come from the JSONs alone."""
import json
import sys
from pathlib import Path

import pytest

from ditlib.course.findings import short_cpu
import torch

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import block_designs  # noqa: E402
import common  # noqa: E402
import plot  # noqa: E402
import recipe_runs  # noqa: E402
import scaling_grid  # noqa: E402

TINY = ["--steps", "4", "--every", "2"]
GRID_CELL = "DiT-debug/4"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two designs of block_designs.py and one cell of scaling_grid.py, as a reviewer would re-run them, on the
    seconds-long `debug` recipe (DiT-debug/8 on pixels) with 40-sample FIDs of 3 DDIM steps (kept for the module's
    tests that run more)."""
    out, work = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("work")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipe_runs, "BASE_CONFIG", "debug")
        patch.setattr(recipe_runs, "FID_SAMPLES", 40)
        patch.setattr(recipe_runs, "SAMPLING_STEPS", 3)
        assert block_designs.main(["--model", "DiT-debug/8", "--designs", "adaLN,in-context", "--seeds", "0", *TINY,
                                   "--out", str(out), "--work", str(work)]) == 0
        assert scaling_grid.main(["--sizes", "debug", "--patches", "4,8", "--only", GRID_CELL, *TINY,
                                  "--out", str(out), "--work", str(work)]) == 0
        yield out, work


def test_cell_reuses_a_named_config_that_is_the_default_recipe_and_overrides_the_rest():
    base = "fmnist-latent-DiT-T/2"
    assert recipe_runs.cell("DiT-T/2", base=base) == (base, {})                          # the default itself
    assert recipe_runs.cell("DiT-XS/2", base=base) == ("fmnist-latent-DiT-XS/2", {})     # the U-Net pair's DiT
    assert recipe_runs.cell("DiT-M/2", base=base) == ("fmnist-latent-DiT-M/2", {})
    assert recipe_runs.cell("DiT-T/2", "in-context", base=base) == (base, {"block": "in-context"})
    assert recipe_runs.cell("DiT-T/1", base=base) == (base, {"model": "DiT-T/1"})
    assert recipe_runs.run_name("fmnist-latent-DiT-T/2", 1, 6000, block="in-context") == \
        "fmnist-latent-DiT-T-2_in-context_6000_seed1"
    assert recipe_runs.run_name("fmnist-latent-DiT-T/2", 0, 6000) == "fmnist-latent-DiT-T-2_6000_seed0"
    config = recipe_runs.run_config("fmnist-latent-DiT-T/2", 0, 6000, 1500, model="DiT-T/1", block="adaLN")
    assert (config.model, config.block, config.lr_schedule, config.precision) == ("DiT-T/1", "adaLN", "cosine", "fp32")
    with pytest.raises(ValueError, match="U-Net"):
        recipe_runs.run_config("fmnist-latent-UNet-M", 0, 6000, 1500, block="adaLN")


def test_each_run_writes_a_complete_record_and_the_summaries_list_the_finished_runs(results):
    out, _ = results
    record = json.loads((out / "runs" / "debug_in-context_4_seed0.json").read_text())
    assert record["complete"] and record["overrides"] == {"block": "in-context"} and record["block"] == "in-context"
    assert [s["step"] for s in record["snapshots"]] == [2, 4] and record["fid_1k"] == record["snapshots"][-1]["fid"]
    assert "block_designs.py" in record["command"] and record["train_config"]["precision"] == "fp32"
    designs = json.loads((out / "block_designs.json").read_text())
    assert [(e["block"], e["seed"]) for e in designs] == [("in-context", 0), ("adaLN", 0)]    # the paper's order
    assert all([s["step"] for s in e["snapshots"]] == [2, 4] and e["fid_1k"] > 0 for e in designs)
    grid = json.loads((out / "scaling_grid.json").read_text())
    assert [(e["model"], e["block"]) for e in grid] == [(GRID_CELL, "adaLN-Zero")]
    assert json.loads((out / "runs" / "debug_DiT-debug-4_4_seed0.json").read_text())["overrides"] == {"model": GRID_CELL}
    for name in ("block_designs.png", "scaling_fid_vs_steps.png", "scaling_fid_vs_gflops.png",
                 "scaling_fid_vs_compute.png"):
        assert (out / name).stat().st_size > 10_000


def test_a_complete_run_is_skipped_and_an_interrupted_one_keeps_its_fids(results, monkeypatch, capsys):
    out, work = results
    before = (out / "runs" / "debug_DiT-debug-4_4_seed0.json").read_text()
    measure = recipe_runs.readme_fid
    monkeypatch.setattr(recipe_runs, "readme_fid", lambda *a, **k: pytest.fail("measured again"))
    assert scaling_grid.main(["--sizes", "debug", "--patches", "4,8", "--only", GRID_CELL, *TINY,
                              "--out", str(out), "--work", str(work)]) == 0
    assert "skipped" in capsys.readouterr().out
    assert (out / "runs" / "debug_DiT-debug-4_4_seed0.json").read_text() == before

    calls = []

    def dies_on_second(*args, **kwargs):                        # Ctrl-C while measuring the step-4 snapshot
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return measure(*args, **kwargs)

    monkeypatch.setattr(recipe_runs, "readme_fid", dies_on_second)
    args = ["--designs", "adaLN-Zero", "--model", "DiT-debug/8", "--seeds", "1", *TINY, "--out", str(out),
            "--work", str(work)]
    with pytest.raises(KeyboardInterrupt):
        block_designs.main(args)
    path = out / "runs" / "debug_4_seed1.json"
    partial = json.loads(path.read_text())
    assert not partial["complete"] and [s["step"] for s in partial["snapshots"]] == [2]
    monkeypatch.setattr(recipe_runs, "readme_fid", measure)
    assert block_designs.main(args) == 0
    resumed = json.loads(path.read_text())
    assert resumed["complete"] and [s["step"] for s in resumed["snapshots"]] == [2, 4]
    assert resumed["snapshots"][0] == partial["snapshots"][0]                  # kept, not measured again


def test_a_record_made_with_another_config_is_refused(results):
    out, work = results
    path = out / "runs" / "debug_in-context_4_seed0.json"
    record, original = json.loads(path.read_text()), path.read_text()
    record["train_config"]["lr"] = 1.0                          # as if the recipe had changed since the run
    path.write_text(json.dumps(record))
    try:
        with pytest.raises(SystemExit, match="another config"):
            recipe_runs.run("debug", 0, 4, 2, out / "runs", work, block="in-context", log=lambda *_: None)
    finally:
        path.write_text(original)


def test_plot_redraws_every_figure_from_the_summaries(results):
    out, _ = results
    for name in ("block_designs.png", "scaling_fid_vs_steps.png", "scaling_fid_vs_gflops.png",
                 "scaling_fid_vs_compute.png"):
        (out / name).unlink()
    assert plot.main(["--out", str(out), "--tables"]) == 0
    for name in ("block_designs.png", "scaling_fid_vs_steps.png", "scaling_fid_vs_gflops.png",
                 "scaling_fid_vs_compute.png"):
        assert (out / name).stat().st_size > 10_000
    rows = plot.tables(out).splitlines()
    assert rows[0] == "Block designs (DiT-debug/8):" and rows[2].count("FID @") == 2
    assert any(r.startswith("| in-context | 0 |") for r in rows) and any(r.startswith(f"| {GRID_CELL} | 0 |") for r in rows)


def test_the_log_gflops_fit_and_the_papers_panel():
    from ditlib.course import findings
    from ditlib.flops import PAPER_FID_400K, PAPER_GFLOPS

    a, b, r = findings.fit_log10([0.01, 0.1, 1.0], [30.0, 20.0, 10.0])
    assert (a, b, r) == (pytest.approx(10.0), pytest.approx(-10.0), pytest.approx(-1.0))
    assert findings.fit_log10([0.1, 0.1], [3.0, 4.0]) is None
    assert findings.size_and_patch("DiT-XS/4") == ("XS", 4)
    assert findings.short_cpu("CPU AMD EPYC (AVX2, no native bf16: emulated, 85× slower than fp32), 2 cores") == \
        "AMD EPYC, AVX2, no native bf16"
    assert findings.short_cpu("CPU AMD EPYC (AVX512, native bf16, 1.7× fp32), 2 cores") == "AMD EPYC, AVX512, native bf16"
    assert findings.short_cpu("CPU Intel(R) Xeon(R) Processor (AVX512, native bf16, 2.8× fp32), 2 cores") == \
        "Intel Xeon Processor, AVX512, native bf16"                         # the (R) marks are not the details
    assert set(PAPER_FID_400K) == set(PAPER_GFLOPS)
    fig = findings.scaling_gflops_figure([])
    paper = fig.axes[1]
    assert len([l for l in paper.lines if l.get_marker() == "o"]) == 12 and "ImageNet" in paper.get_ylabel()
    _, _, r_paper = findings.fit_log10(list(PAPER_GFLOPS.values()), [PAPER_FID_400K[m] for m in PAPER_GFLOPS])
    assert r_paper < -0.9                                     # Figure 8: "strongly correlated" (-0.93 in the paper)


def test_a_record_written_before_a_config_field_existed_still_matches_its_config():
    config = recipe_runs.run_config("debug", 0, 4, 2, block="adaLN")
    recorded = json.loads(json.dumps(config.to_dict()))
    assert common.same_config(recorded, config)
    del recorded["sample_guidance_interval"]                   # a field added later, at its default: still the same
    assert common.same_config(recorded, config)
    assert not common.same_config({**recorded, "lr": 1.0}, config)
    assert not common.same_config({**recorded, "sample_guidance_interval": [0, 300]}, config)


def test_vae_variants_records_each_variant_once(tmp_path, monkeypatch):
    import vae_variants

    args = ["--base", "vae-debug", "--max-steps", "2", "--only", "f4-c8", "--out", str(tmp_path / "res"),
            "--work", str(tmp_path / "work")]
    vae_variants.main(args)
    result = json.loads((tmp_path / "res" / "f4-c8.json").read_text())
    assert result["config"]["latent_channels"] == 8 and result["latent_shape"] == [8, 8, 8]
    assert result["steps"] == 2 and result["psnr_db"] > 0 and "CPU" in result["hardware"]
    monkeypatch.setattr(vae_variants, "train_vae", lambda *a, **k: pytest.fail("trained a finished variant again"))
    vae_variants.main(args)


def test_latent_dit_on_vae_trains_on_the_vaes_latents_and_records_the_readme_fid(tmp_path, monkeypatch):
    import latent_dit_on_vae

    from ditlib import latents
    from ditlib.vae_train import get_vae_config, train_vae

    monkeypatch.setattr(latents, "DEFAULT_CACHE_DIR", tmp_path / "cache")      # keep the 60k-image cache out of runs/
    train_vae(get_vae_config("vae-debug"), tmp_path / "vae", max_steps=2, progress=False)
    args = ["--vae", str(tmp_path / "vae" / "final"), "--name", "tiny", "--max-steps", "2", "--fid-samples", "50",
            "--out", str(tmp_path / "res"), "--work", str(tmp_path / "work")]
    assert latent_dit_on_vae.main(args) == 0
    result = json.loads((tmp_path / "res" / "tiny.json").read_text())
    assert result["steps"] == 2 and result["latent_shape"] == [4, 8, 8] and result["n"] == 50
    assert result["fid"] > 0 and "--num-samples 50 --num-sampling-steps 50 --sampler ddim --cfg-scale 2" in result["fid_command"]
    assert result["train_config"]["vae"] == str(tmp_path / "vae" / "final")
    monkeypatch.setattr(latent_dit_on_vae, "train", lambda *a, **k: pytest.fail("trained a finished run again"))
    assert latent_dit_on_vae.main(args) == 0


def test_latent_dit_overrides_parse_json_values_and_refuse_bad_items():
    import latent_dit_on_vae

    assert latent_dit_on_vae.parse_overrides(["model=DiT-M/2", "min_snr_gamma=5", "lr_schedule=cosine",
                                              "grad_clip=null"]) == {
        "model": "DiT-M/2", "min_snr_gamma": 5, "lr_schedule": "cosine", "grad_clip": None}
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        latent_dit_on_vae.parse_overrides(["model"])


def test_quality_curve_measures_every_snapshot_once_and_plots_fid_against_time(tmp_path, monkeypatch):
    import quality_curve

    args = ["--config", "debug", "--every", "10", "--out", str(tmp_path / "run"), "--fid-samples", "40",
            "--sampling-steps", "4", "--json", str(tmp_path / "curve.json"), "--plot", str(tmp_path / "curve.png")]
    assert quality_curve.main(args) == 0
    record = json.loads((tmp_path / "curve.json").read_text())
    assert [p["step"] for p in record["points"]] == [10, 20]                  # debug: 20 steps
    assert 0 < record["points"][0]["elapsed_s"] <= record["points"][1]["elapsed_s"]
    assert all(p["fid"] > 0 and p["n"] == 40 for p in record["points"])
    assert "--num-samples 40 --num-sampling-steps 4 --sampler ddim --cfg-scale 1.5" in record["points"][0]["command"]
    assert record["sampling"] == {"cfg_scale": 1.5, "guidance_interval": None, "steps": 4, "sampler": "ddim"}
    assert record["train_config"]["snapshot_every"] == 10 and record["steps"] == 20
    assert (tmp_path / "curve.png").stat().st_size > 10_000
    fid_record = json.loads((tmp_path / "run" / "snapshots" / "step-0000010.fid40.json").read_text())
    assert fid_record["command"].startswith("python -m ditlib fid --ckpt ")        # main(argv), not this process's argv
    # A second run resumes: nothing is trained or measured twice.
    monkeypatch.setattr(quality_curve, "measure", lambda *a, **k: pytest.fail("measured a snapshot again"))
    assert quality_curve.main(args + ["--no-train"]) == 0
    assert "--no-train" not in json.loads((tmp_path / "curve.json").read_text())["command"]   # how it was made stays
    with pytest.raises(SystemExit):                                            # another config's curve is refused
        quality_curve.main(["--config", "fmnist-DiT-T/2", "--no-train"] + args[2:])
    with pytest.raises(SystemExit):                                            # so is other sampling
        quality_curve.main(args + ["--no-train", "--cfg-scale", "3", "--guidance-interval", "0", "300"])


def test_guidance_sweep_measures_each_setting_once_with_the_fid_command(tmp_path, monkeypatch):
    import guidance_sweep

    assert guidance_sweep.parse_interval("all") is None and guidance_sweep.parse_interval("0:300") == (0, 300)
    with pytest.raises(Exception, match="LO:HI"):
        guidance_sweep.parse_interval("300")
    ckpt = str(EXPERIMENTS.parent / "data" / "checkpoints" / "fmnist-latent-DiT-T-2")
    args = ["--ckpt", ckpt, "--scales", "3", "--intervals", "all", "0:300", "--num-samples", "40", "--steps", "4",
            "--out", str(tmp_path)]
    assert guidance_sweep.main(args) == 0
    rows = json.loads((tmp_path / "guidance_sweep.json").read_text())["rows"]
    assert [r["interval"] for r in rows] == [None, [0, 300]] and all(r["fid"] > 0 for r in rows)
    assert rows[1]["command"].endswith("--cfg-scale 3 --seed 0 --guidance-interval 0 300")
    assert "--guidance-interval" not in rows[0]["command"]
    assert "| 3 | 0 ≤ t ≤ 300 | 0 |" in (tmp_path / "guidance_sweep.md").read_text()
    monkeypatch.setattr(guidance_sweep, "readme_fid", lambda *a, **k: pytest.fail("measured a setting again"))
    assert guidance_sweep.main(args) == 0


def test_unet_vs_dit_trains_each_family_once_and_records_the_issues_table(tmp_path, monkeypatch):
    import recipe_runs
    import unet_vs_dit

    from ditlib.configs import TRAIN_CONFIGS
    from ditlib.course.viz import fit_log_gflops

    tiny_unet = TRAIN_CONFIGS["debug"].replace(name="test-UNet", model="UNet-S", image_size=32, in_channels=1)
    monkeypatch.setitem(TRAIN_CONFIGS, "test-UNet", tiny_unet)
    monkeypatch.setattr(unet_vs_dit, "PAIRS", {"T": ("debug", "test-UNet")})
    monkeypatch.setattr(recipe_runs, "FID_SAMPLES", 40)
    monkeypatch.setattr(recipe_runs, "SAMPLING_STEPS", 3)
    args = ["--pairs", "T", "--seeds", "0", "--steps", "8", "--every", "4", "--out", str(tmp_path / "results"),
            "--work", str(tmp_path / "work")]
    assert unet_vs_dit.main(args) == 0
    table = json.loads((tmp_path / "results" / "unet_vs_dit.json").read_text())
    assert [(r["family"], r["config"]) for r in table] == [("DiT", "debug"), ("U-Net", "test-UNet")]
    assert set(table[0]) == {"family", "config", "params", "gflops", "steps", "seed", "fid_1k", "fid_1k_guided",
                             "train_seconds", "cpu"}
    assert all(r["steps"] == 8 and r["fid_1k"] > 0 and r["fid_1k_guided"] > 0 and r["train_seconds"] > 0
               for r in table)
    record = json.loads((tmp_path / "results" / "runs" / "test-UNet_8_seed0.json").read_text())
    assert [s["step"] for s in record["snapshots"]] == [4, 8]                 # unguided FID along training
    assert record["train_config"]["precision"] == "fp32" and record["fid_1k"] == record["snapshots"][-1]["fid"]
    assert "--cfg-scale 1.5" in record["guided"]["command"] and "--cfg-scale 1 " in record["snapshots"][0]["command"]
    assert (tmp_path / "results" / "unet_vs_dit.png").stat().st_size > 10_000
    import plot_unet_vs_dit

    rows = plot_unet_vs_dit.table([record]).splitlines()
    assert rows[0].count("FID @") == 2 and f"| {record['fid_1k_guided']:.2f} |" in rows[2]
    assert rows[0].endswith("| training | CPU |") and rows[2].endswith(f"| {short_cpu(record['cpu'])} |")   # its hardware
    # A second command measures and trains nothing again.
    monkeypatch.setattr(recipe_runs, "readme_fid", lambda *a, **k: pytest.fail("measured again"))
    assert unet_vs_dit.main(args) == 0
    a, b = fit_log_gflops([{"family": "DiT", "gflops": 0.01, "fid_1k": 30.0, "complete": True},
                                            {"family": "DiT", "gflops": 0.1, "fid_1k": 20.0, "complete": True}], "DiT")
    assert b == pytest.approx(-10.0) and a + b * -2 == pytest.approx(30.0)   # -10 FID per tenfold Gflops
    assert fit_log_gflops([dict(r, complete=True) for r in table], "U-Net") is None   # one size: no line
