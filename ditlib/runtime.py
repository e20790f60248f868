"""Where code runs: the device and the precision (each chosen once, from the hardware), seeding, and the course's quick mode.

Everything that depends on the machine rather than on the ideas of a lesson lives here, so that the
rest of `ditlib` never calls `.cuda()` and never reads an environment variable.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError

QUICK_ENV = "DITLIB_QUICK"
"""Set DITLIB_QUICK=1 to shrink training and sampling so every notebook runs in CI in seconds."""


def quick_mode() -> bool:
    """True when the environment asks for the course's quick mode (DITLIB_QUICK=1/true/yes)."""
    return os.environ.get(QUICK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def pick(full, quick):
    """`quick` in quick mode, else `full`: the one switch lessons use to shrink their work."""
    return quick if quick_mode() else full


def default_device(preferred: str | None = None) -> torch.device:
    """The device to run on: `preferred` if given ("cpu", "cuda", "cuda:1", "mps"), else CUDA, then MPS, then CPU.

    Set DITLIB_DEVICE to override. This is the only place ditlib chooses a device.
    """
    name = preferred or os.environ.get("DITLIB_DEVICE")
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was asked for but CUDA is not available on this machine; use 'cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#################################################################################
#              Precision: chosen once, from what the hardware computes fast     #
#################################################################################

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""The `precision=` values everywhere in ditlib. "auto" (the default) lets `resolve_precision` choose."""

CACHE_ENV = "DITLIB_CACHE_DIR"
"""Where per-machine measurements are cached (default: $XDG_CACHE_HOME/ditlib or ~/.cache/ditlib)."""

BF16_MIN_SPEEDUP = 1.1
"""bf16 counts as native on a CPU when its matmul runs at least this many times the fp32 rate."""

_PROBE_SIZE = 256          # matmul side of the micro-benchmark: ~0.1 s even where bf16 is emulated
_PROBE_SECONDS = 0.05      # time per dtype (after one untimed call)
_probe_memo: dict[tuple, dict] = {}
_announced: set[tuple] = set()


class PrecisionWarning(UserWarning):
    """An explicitly requested precision that this hardware computes slowly (e.g. emulated bf16)."""


@dataclass(frozen=True)
class PrecisionChoice:
    """What `resolve_precision` decided: the autocast precision to use, what was asked for, and why."""
    precision: str             # "fp32" | "bf16" | "fp16": what autocast gets
    requested: str             # what the caller asked for ("auto" or one of the above)
    reason: str                # one sentence for the user

    def to_dict(self) -> dict:
        return {"used": self.precision, "requested": self.requested, "reason": self.reason}


@functools.lru_cache(maxsize=None)
def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo (Linux) or platform names it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ditlib"
    return Path(root)


def _matmul_gflops(dtype: torch.dtype, n: int = _PROBE_SIZE, seconds: float = _PROBE_SECONDS) -> float:
    """GFLOP/s of an n×n @ n×n matmul in `dtype` on the CPU (2n³ flops per product)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    a @ b                                                                      # untimed: first-call costs
    calls, start = 0, time.perf_counter()
    while True:
        a @ b
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * n ** 3 * calls / elapsed / 1e9


def cpu_bf16_probe(refresh: bool = False) -> dict:
    """Does this CPU compute bf16 natively and fast? Measured once per machine and cached.

    Returns {"native": bool, "speedup": bf16 rate / fp32 rate, "fp32_gflops", "bf16_gflops",
    "capability", "mkldnn_bf16", "cpu", "torch", "threads"}. oneDNN's own flag
    (`torch.ops.mkldnn._is_mkldnn_bf16_supported()`, true with AVX512-BF16 or AMX) must be set *and* a
    short bf16 matmul must beat fp32 by `BF16_MIN_SPEEDUP`: on CPUs without bf16 units (e.g. AVX2-only
    AMD Zen 3) bf16 is emulated and runs 20–500× slower than fp32. The cache file is keyed by the CPU,
    its capability, the torch version and the thread count, so a different machine measures again.
    """
    memo_key = (torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())
    if not refresh and memo_key in _probe_memo:                 # cheap: called at every autocast("auto")
        return _probe_memo[memo_key]
    capability = memo_key[0]
    try:
        mkldnn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        mkldnn_bf16 = False
    identity = {"cpu": cpu_name(), "capability": capability, "torch": torch.__version__,
                "threads": torch.get_num_threads(), "mkldnn_bf16": mkldnn_bf16}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    path = _cache_dir() / f"cpu-bf16-{key}.json"
    result = None
    if not refresh:
        try:
            cached = json.loads(path.read_text())
            if {k: cached.get(k) for k in identity} == identity:
                result = cached
        except (OSError, ValueError):
            pass
    if result is None:
        fp32 = _matmul_gflops(torch.float32)
        bf16 = _matmul_gflops(torch.bfloat16)
        speedup = bf16 / fp32
        result = {**identity, "fp32_gflops": round(fp32, 2), "bf16_gflops": round(bf16, 2),
                  "speedup": round(speedup, 4), "native": mkldnn_bf16 and speedup >= BF16_MIN_SPEEDUP,
                  "probe": f"{_PROBE_SIZE}x{_PROBE_SIZE} matmul, {_PROBE_SECONDS} s per dtype"}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(result, indent=2))
            os.replace(tmp, path)
        except OSError:
            pass                                    # a read-only home: measure again next time
    _probe_memo[memo_key] = result
    return result


def _bf16_verdict(device: torch.device) -> tuple[bool, str, dict]:
    """(native, reason, probe) for bf16 on `device`."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return True, f"this GPU ({name}, compute capability {major}.{minor}) has bf16 tensor cores", {}
        return False, f"this GPU ({name}, compute capability {major}.{minor}) has no native bf16", {}
    if device.type == "cpu":
        probe = cpu_bf16_probe()
        capability = probe["capability"]
        if probe["native"]:
            return True, (f"this CPU ({capability}) computes bf16 natively: bf16 matmul measured "
                          f"{probe['speedup']:.1f}× the fp32 rate"), probe
        if not probe["mkldnn_bf16"]:
            return False, f"this CPU ({capability}) has no native bf16", probe
        return False, (f"bf16 on this CPU ({capability}) measured only {probe['speedup']:.2f}× the fp32 rate"), probe
    return False, f"precision 'auto' uses fp32 on {device.type} devices", {}


def resolve_precision(precision: str = "auto", device: torch.device | str | None = None,
                      announce: bool = True) -> PrecisionChoice:
    """The one place ditlib decides the autocast precision.

    "auto": bf16 where `device` computes it natively and fast (a CUDA GPU of compute capability ≥ 8, or a
    CPU whose bf16 matmul beats fp32, see `cpu_bf16_probe`), else fp32. The choice is said once per
    process ("precision auto → fp32: this CPU (AVX2) has no native bf16"). An explicit "bf16" is honoured
    even where it is emulated, with a `PrecisionWarning` that gives the measured slowdown; "fp16" is for
    GPUs only.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device) if device is not None else default_device()
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 autocast is for GPUs; on a CPU use precision='auto', 'fp32' or 'bf16'")
    if precision == "fp32":
        return PrecisionChoice("fp32", "fp32", "asked for fp32")
    if precision == "fp16":
        return PrecisionChoice("fp16", "fp16", "asked for fp16")
    native, why, probe = _bf16_verdict(device)
    if precision == "bf16":
        choice = PrecisionChoice("bf16", "bf16", "asked for bf16" + ("" if native else f"; {why}"))
        if not native and announce and ("warn", device.type) not in _announced:
            _announced.add(("warn", device.type))
            slowdown = (f"measured {1 / probe['speedup']:.0f}× slower than fp32" if probe.get("speedup")
                        else "slower than fp32 here")
            warnings.warn(f"precision bf16: {why}, so bf16 is emulated ({slowdown}); "
                          f"use precision 'auto' or 'fp32'", PrecisionWarning, stacklevel=2)
        return choice
    choice = PrecisionChoice("bf16" if native else "fp32", "auto", why)
    if announce and (device.type, choice.precision) not in _announced:
        _announced.add((device.type, choice.precision))
        print(f"precision auto → {choice.precision}: {why}", file=sys.stderr)
    return choice


def hardware_summary(device: torch.device | str | None = None) -> str:
    """One line naming the hardware a figure was measured on, e.g.
    "CPU AMD EPYC (AVX2, no native bf16), 2 torch threads" or "GPU NVIDIA A100-SXM4-80GB (bf16)"."""
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        native, _, _ = _bf16_verdict(device)
        return f"GPU {torch.cuda.get_device_name(device)} ({'bf16' if native else 'no bf16'})"
    if device.type != "cpu":
        return f"{device.type} device"
    probe = cpu_bf16_probe()
    bf16 = (f"native bf16, {probe['speedup']:.1f}× fp32" if probe["native"]
            else f"no native bf16: emulated, {1 / probe['speedup']:.0f}× slower than fp32")
    return f"CPU {probe['cpu']} ({probe['capability']}, {bf16}), {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def autocast(device: torch.device, precision: str = "auto"):
    """A context for mixed precision: "auto" (see `resolve_precision`), "fp32" (off), "bf16" (CPU and GPU)
    or "fp16" (GPU only)."""
    # Callers resolve (and warn) once where the run starts; a concrete precision here is taken as decided.
    used = resolve_precision(precision, device, announce=precision == "auto").precision
    if used == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if used == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
