"""Specification of experiments/: each script runs one cell end to end on a debug-size DiT, writes a JSON
that survives interruption and is skipped when complete, and the figures come from the JSONs alone."""
import json
import sys
from pathlib import Path

import pytest
import torch

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import block_designs  # noqa: E402
import common  # noqa: E402
import plot  # noqa: E402
import scaling_grid  # noqa: E402

TINY = ["--steps", "4", "--eval-every", "2", "--fid-samples", "32", "--sampling-steps", "2", "--threads", "1"]
GRID_CELL = "DiT-debug/4"
GRID_RUN = "DiT-debug-4_adaLN-Zero"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """One design of block_designs.py and one cell of scaling_grid.py, as a reviewer would re-run them."""
    out, work = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("work")
    threads = torch.get_num_threads()
    try:
        assert block_designs.main(["--model", "DiT-debug/2", "--only", "adaLN", *TINY,
                                   "--out", str(out), "--work", str(work)]) == 0
        assert scaling_grid.main(["--sizes", "debug", "--patches", "2,4", "--only", GRID_CELL, *TINY,
                                  "--out", str(out), "--work", str(work)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out, work


def tiny_settings():
    return common.Settings(steps=4, eval_every=2, fid_samples=32, sampling_steps=2)


def test_each_run_writes_a_complete_json_with_its_evaluations(results):
    out, _ = results
    record = json.loads((out / "runs" / f"{GRID_RUN}.json").read_text())
    assert record["complete"] and record["model"] == GRID_CELL and record["block"] == "adaLN-Zero"
    assert (record["size"], record["patch"], record["tokens"]) == ("debug", 4, 4)
    assert record["gflops"] > 0 and record["params"] > 0
    assert "scaling_grid.py" in record["command"] and "--only" in record["command"]
    assert record["torch"] == torch.__version__ and record["started"] and record["finished"]
    assert record["settings"] == tiny_settings().to_dict()
    assert [e["step"] for e in record["evals"]] == [2, 4]
    for entry in record["evals"]:
        assert {"step", "fid", "train_loss", "wall_s", "cpu_s", "train_flops"} <= set(entry)
        assert entry["fid"] > 0 and entry["train_loss"] > 0 and entry["wall_s"] > 0 and entry["cpu_s"] > 0
    assert record["evals"][-1]["train_flops"] == pytest.approx(record["gflops"] * 1e9 * 64 * 3 * 4)
    design = json.loads((out / "runs" / "DiT-debug-2_adaLN.json").read_text())
    assert design["complete"] and design["block"] == "adaLN"


def test_the_manifests_list_every_cell_even_when_one_is_run(results):
    out, _ = results
    designs = json.loads((out / "block_designs.json").read_text())
    assert list(designs["cells"]) == ["in-context", "cross-attention", "adaLN", "adaLN-Zero"]
    grid = json.loads((out / "scaling_grid.json").read_text())
    assert set(grid["cells"]) == {"DiT-debug/2", "DiT-debug/4"}
    assert grid["cells"][GRID_CELL]["run"] == f"runs/{GRID_RUN}.json"


def test_a_complete_run_is_skipped(results, capsys):
    out, work = results
    before = (out / "runs" / f"{GRID_RUN}.json").read_text()
    assert scaling_grid.main(["--sizes", "debug", "--patches", "2,4", "--only", GRID_CELL, *TINY,
                              "--out", str(out), "--work", str(work)]) == 0
    assert "skipped" in capsys.readouterr().out
    assert (out / "runs" / f"{GRID_RUN}.json").read_text() == before


def test_an_interrupted_run_keeps_its_evaluations_and_resumes_to_the_same_numbers(results, tmp_path):
    out, _ = results
    uninterrupted = json.loads((out / "runs" / f"{GRID_RUN}.json").read_text())
    settings = tiny_settings()
    evaluator = common.FIDEvaluator(settings)

    class DiesOnSecondEval:                                     # Ctrl-C while measuring FID at step 4
        num_reference, calls = evaluator.num_reference, 0

        def __call__(self, checkpoint):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return evaluator(checkpoint)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                    # as in the fixture: the same arithmetic
    try:
        with pytest.raises(KeyboardInterrupt):
            common.run_one(GRID_CELL, "adaLN-Zero", settings, tmp_path / "out", tmp_path / "work", DiesOnSecondEval())
        partial = json.loads((tmp_path / "out" / "runs" / f"{GRID_RUN}.json").read_text())
        assert not partial["complete"] and [e["step"] for e in partial["evals"]] == [2]
        resumed = common.run_one(GRID_CELL, "adaLN-Zero", settings, tmp_path / "out", tmp_path / "work", evaluator)
    finally:
        torch.set_num_threads(threads)
    assert resumed["complete"] and [e["step"] for e in resumed["evals"]] == [2, 4]
    for got, want in zip(resumed["evals"], uninterrupted["evals"]):
        assert got["fid"] == pytest.approx(want["fid"], rel=1e-6)
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-6)


def test_a_run_with_other_settings_is_refused(results):
    out, work = results
    other = common.Settings(steps=6, eval_every=2, fid_samples=32, sampling_steps=2)
    with pytest.raises(ValueError, match="other settings"):
        common.run_one(GRID_CELL, "adaLN-Zero", other, out, work, evaluator=None)


def test_fid_helper_equals_ditlib_compute_metrics():
    from ditlib.data import FashionMNIST
    from ditlib.evaluate import compute_metrics

    train = FashionMNIST("train").images                        # uint8 (N, 1, 32, 32)
    reference, images = train[:300].permute(0, 2, 3, 1), train[300:400].permute(0, 2, 3, 1)
    evaluator = common.FIDEvaluator(tiny_settings(), reference=reference)
    expected = compute_metrics(images, reference=reference, precision_recall=False)["fid"]
    assert evaluator.fid(images) == pytest.approx(expected, rel=1e-6)


def test_plot_draws_every_figure_from_the_jsons(results):
    out, _ = results
    for name in ("block_designs.png", "scaling_fid_vs_steps.png", "scaling_fid_vs_gflops.png"):
        (out / name).unlink(missing_ok=True)
    assert plot.main(["--out", str(out)]) == 0
    for name in ("block_designs.png", "scaling_fid_vs_steps.png", "scaling_fid_vs_gflops.png",
                 "scaling_fid_vs_compute.png"):
        assert (out / name).stat().st_size > 1000


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


def test_a_record_written_before_a_config_field_existed_still_matches_its_config():
    settings = common.Settings(steps=4, eval_every=2, fid_samples=32, sampling_steps=2)
    config = common.run_config(GRID_CELL, "adaLN-Zero", settings)
    recorded = json.loads(json.dumps(config.to_dict()))
    assert common.same_config(recorded, config)
    del recorded["sample_guidance_interval"]                   # a field added later, at its default: still the same
    assert common.same_config(recorded, config)
    assert not common.same_config({**recorded, "lr": 1.0}, config)
    assert not common.same_config({**recorded, "sample_guidance_interval": [0, 300]}, config)


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
    record = json.loads((tmp_path / "results" / "unet_vs_dit" / "test-UNet_8_seed0.json").read_text())
    assert [s["step"] for s in record["snapshots"]] == [4, 8]                 # unguided FID along training
    assert record["train_config"]["precision"] == "fp32" and record["fid_1k"] == record["snapshots"][-1]["fid"]
    assert "--cfg-scale 1.5" in record["guided"]["command"] and "--cfg-scale 1 " in record["snapshots"][0]["command"]
    assert (tmp_path / "results" / "unet_vs_dit.png").stat().st_size > 10_000
    import plot_unet_vs_dit

    rows = plot_unet_vs_dit.table([record]).splitlines()
    assert rows[0].count("FID @") == 2 and f"| {record['fid_1k_guided']:.2f} |" in rows[2]
    # A second command measures and trains nothing again.
    monkeypatch.setattr(recipe_runs, "readme_fid", lambda *a, **k: pytest.fail("measured again"))
    assert unet_vs_dit.main(args) == 0
    a, b = fit_log_gflops([{"family": "DiT", "gflops": 0.01, "fid_1k": 30.0, "complete": True},
                                            {"family": "DiT", "gflops": 0.1, "fid_1k": 20.0, "complete": True}], "DiT")
    assert b == pytest.approx(-10.0) and a + b * -2 == pytest.approx(30.0)   # -10 FID per tenfold Gflops
    assert fit_log_gflops([dict(r, complete=True) for r in table], "U-Net") is None   # one size: no line
