"""Specification of the hardware-chosen precision (ditlib.runtime.resolve_precision) and `python -m ditlib doctor`.

The CPU probe is mocked both ways (bf16 emulated 500× slower, as on an AVX2-only AMD Zen 3; bf16 native and
fast, as with AVX512-BF16/AMX), so these tests mean the same on every machine."""
import json
import warnings

import numpy as np
import pytest
import torch

from ditlib import runtime
from ditlib.__main__ import main
from ditlib.configs import get_config
from ditlib.runtime import PrecisionWarning, resolve_precision

EMULATED = {"cpu": "AMD EPYC (mock)", "capability": "AVX2", "torch": torch.__version__, "threads": 2,
            "mkldnn_bf16": False, "fp32_gflops": 150.0, "bf16_gflops": 0.3, "speedup": 0.002, "native": False,
            "probe": "mock"}
NATIVE = dict(EMULATED, capability="AVX512", mkldnn_bf16=True, bf16_gflops=600.0, speedup=4.0, native=True)


@pytest.fixture()
def cpu_probe(monkeypatch, tmp_path):
    """Set what the CPU probe reports; also isolates the per-machine cache and the say-it-once memory."""
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "_announced", set())

    def use(probe):
        monkeypatch.setattr(runtime, "cpu_bf16_probe", lambda refresh=False: dict(probe))
    return use


def test_auto_picks_fp32_where_bf16_is_emulated(cpu_probe, capsys):
    cpu_probe(EMULATED)
    choice = resolve_precision("auto", "cpu")
    assert choice.precision == "fp32" and choice.requested == "auto"
    assert "no native bf16" in choice.reason and "AVX2" in choice.reason
    assert capsys.readouterr().err.strip() == "precision auto → fp32: this CPU (AVX2) has no native bf16"


def test_auto_picks_bf16_where_it_is_native_and_says_so_once(cpu_probe, capsys):
    cpu_probe(NATIVE)
    assert resolve_precision("auto", "cpu").precision == "bf16"
    assert resolve_precision("auto", "cpu").precision == "bf16"
    err = capsys.readouterr().err
    assert err.count("precision auto → bf16") == 1 and "4.0×" in err


def test_oneDNN_flag_alone_is_not_enough_the_probe_must_measure_a_speedup(monkeypatch, tmp_path):
    """A CPU that claims bf16 support but runs it slower than fp32 must not get bf16."""
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(runtime, "_probe_memo", {})
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(runtime, "_matmul_gflops", lambda dtype, **k: 150.0 if dtype == torch.float32 else 100.0)
    probe = runtime.cpu_bf16_probe()
    assert probe["mkldnn_bf16"] and not probe["native"] and probe["speedup"] == pytest.approx(100 / 150, abs=1e-3)


def test_the_probe_is_measured_once_per_machine_and_cached_on_disk(monkeypatch, tmp_path):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(runtime, "_probe_memo", {})
    calls = []
    monkeypatch.setattr(runtime, "_matmul_gflops", lambda dtype, **k: calls.append(dtype) or 200.0)
    first = runtime.cpu_bf16_probe()
    assert len(calls) == 2 and list(tmp_path.glob("cpu-bf16-*.json"))
    monkeypatch.setattr(runtime, "_probe_memo", {})                  # a new process: reads the file
    monkeypatch.setattr(runtime, "_matmul_gflops", lambda *a, **k: pytest.fail("measured again"))
    assert runtime.cpu_bf16_probe() == first
    stored = json.loads(next(tmp_path.glob("cpu-bf16-*.json")).read_text())
    assert stored["cpu"] == runtime.cpu_name() and stored["torch"] == torch.__version__


def test_the_real_probe_agrees_with_oneDNN_on_this_machine(monkeypatch, tmp_path):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path))
    probe = runtime.cpu_bf16_probe(refresh=True)
    assert probe["fp32_gflops"] > 0 and probe["bf16_gflops"] > 0
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert not probe["native"]


def test_explicit_bf16_on_an_emulating_cpu_runs_with_a_warning_giving_the_slowdown(cpu_probe):
    cpu_probe(EMULATED)
    with pytest.warns(PrecisionWarning, match=r"emulated \(measured 500× slower than fp32\)"):
        choice = resolve_precision("bf16", "cpu")
    assert choice.precision == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                # a native CPU: no warning
        cpu_probe(NATIVE)
        assert resolve_precision("bf16", "cpu").precision == "bf16"


def test_explicit_choices_and_bad_input(cpu_probe):
    cpu_probe(EMULATED)
    assert resolve_precision("fp32", "cpu").precision == "fp32"
    with pytest.raises(ValueError, match="fp16 autocast is for GPUs"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("float32", "cpu")


def test_autocast_auto_follows_the_choice(cpu_probe):
    cpu_probe(NATIVE)
    with runtime.autocast(torch.device("cpu"), "auto"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    cpu_probe(EMULATED)
    with runtime.autocast(torch.device("cpu"), "auto"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32


def test_every_training_config_defaults_to_auto():
    from ditlib.configs import TRAIN_CONFIGS
    from ditlib.vae_train import VAE_CONFIGS

    assert {c.precision for c in TRAIN_CONFIGS.values()} == {"auto"}
    assert {c.precision for c in VAE_CONFIGS.values()} == {"auto"}


@pytest.mark.parametrize("probe, used", [(EMULATED, "fp32"), (NATIVE, "bf16")])
def test_the_choice_is_recorded_in_the_checkpoint_json(cpu_probe, tmp_path, probe, used):
    from ditlib.train import train

    cpu_probe(probe)
    summary = train(get_config("debug"), tmp_path / "run", max_steps=2, progress=False)
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["precision"]["used"] == used and final["precision"]["requested"] == "auto"
    assert final["train_config"]["precision"] == "auto" and summary["precision"]["used"] == used
    checkpoint = json.loads(next((tmp_path / "run" / "checkpoints").glob("step-*.json")).read_text())
    assert checkpoint["precision"]["used"] == used and checkpoint["compiled"] is False


def test_cli_bf16_on_an_emulating_cpu_warns_in_one_line(cpu_probe, tmp_path, monkeypatch):
    cpu_probe(EMULATED)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)      # main() sets its one-line format
    with pytest.warns(PrecisionWarning) as record:
        assert main(["train", "--config", "debug", "--max-steps", "1", "--precision", "bf16",
                     "--out", str(tmp_path / "run")]) == 0
    assert len(record) == 1
    w = record[0]
    shown = warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
    assert shown.count("\n") == 1 and shown.startswith("warning: precision bf16: this CPU (AVX2) has no native bf16")
    assert json.loads((tmp_path / "run" / "final.json").read_text())["precision"]["used"] == "bf16"


def test_doctor_prints_the_machine_the_choice_and_the_speeds(cpu_probe, tmp_path, capsys):
    cpu_probe(EMULATED)
    assert main(["doctor", "--config", "debug", "--seconds", "0.05", "--json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    for field in ("CPU", "capability", "torch threads", "precision auto → fp32: this CPU (AVX2) has no native bf16",
                  "fp32 matmul peak", "train img/s", "sample passes/s", "bf16 emulated: small batch"):
        assert field in out, field
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["auto_precision"]["used"] == "fp32"
    rows = {r["precision"]: r for r in report["rows"]}
    assert rows["fp32"]["train_img_per_s"] > 0 and rows["fp32"]["sample_passes_per_s"] > 0
    assert rows["bf16"]["emulated"] and rows["bf16"]["batch"] == 8


def test_compile_auto_compiles_long_single_process_fp32_runs_only():
    from ditlib.train import COMPILE_MIN_STEPS, resolve_compile

    config = get_config("debug").replace(compile="auto")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_compile(config, cpu, "fp32", COMPILE_MIN_STEPS, distributed=False)
    assert not resolve_compile(config, cpu, "fp32", COMPILE_MIN_STEPS - 1, distributed=False)
    assert not resolve_compile(config, cpu, "bf16", COMPILE_MIN_STEPS, distributed=False)   # measured slower
    assert not resolve_compile(config, cpu, "fp32", COMPILE_MIN_STEPS, distributed=True)
    assert resolve_compile(config, cuda, "bf16", COMPILE_MIN_STEPS, distributed=False)
    assert resolve_compile(config.replace(compile=True), cpu, "bf16", 1, distributed=True)
    with pytest.raises(ValueError, match="compile must be"):
        resolve_compile(config.replace(compile="yes"), cpu, "fp32", 1, distributed=False)


def test_a_compiler_that_fails_falls_back_to_eager_without_losing_the_run(cpu_probe, tmp_path, monkeypatch, capsys):
    cpu_probe(EMULATED)

    def broken_compile(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("inductor: no C++ compiler found")
        return call
    monkeypatch.setattr(torch, "compile", broken_compile)
    from ditlib.train import train

    summary = train(get_config("debug").replace(compile=True), tmp_path / "run", max_steps=3, progress=False)
    assert summary["steps"] == 3 and summary["compiled"] is False
    assert "torch.compile failed (RuntimeError: inductor: no C++ compiler found); training without it" in capsys.readouterr().err


def test_a_compiled_run_trains_like_an_eager_one(cpu_probe, tmp_path):
    """The compiled model + loss is the same function: a few steps from the same seed end at nearly the same weights."""
    from ditlib.checkpoints import load_checkpoint
    from ditlib.train import train

    cpu_probe(EMULATED)                                                   # fp32
    eager = train(get_config("debug").replace(compile=False), tmp_path / "eager", max_steps=3, progress=False)
    compiled = train(get_config("debug").replace(compile=True), tmp_path / "compiled", max_steps=3, progress=False)
    assert compiled["compiled"] is True and eager["compiled"] is False
    a, _ = load_checkpoint(tmp_path / "eager" / "final")
    b, _ = load_checkpoint(tmp_path / "compiled" / "final")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-3)


def test_saving_a_grid_matches_torchvisions_layout(tmp_path):
    """ditlib.sample.save_grid tiles without torchvision (start-up), in make_grid's layout and rounding."""
    from PIL import Image
    from torchvision.utils import make_grid

    from ditlib.sample import save_grid

    images = torch.rand(11, 1, 6, 5) * 2 - 1                                  # (N, C, H, W) in [-1, 1]
    ours = np.asarray(Image.open(save_grid(images, tmp_path / "g.png", nrow=4, padding=2)))
    theirs = make_grid((images + 1) / 2, nrow=4, padding=2, pad_value=1.0)[0]   # (H', W')
    assert ours.shape == tuple(theirs.shape)
    assert np.abs(ours.astype(int) - (theirs.numpy() * 255).round().astype(int)).max() <= 1
