"""Where code runs: the device (chosen once), seeding, precision, and the course's quick mode.

Everything that depends on the machine rather than on the ideas of a lesson lives here, so that the
rest of `ditlib` never calls `.cuda()` and never reads an environment variable.
"""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

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


PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(device: torch.device, precision: str):
    """A context for mixed precision: "fp32" (off), "bf16" (CPU and GPU) or "fp16" (GPU only)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 autocast is for GPUs; on a CPU use precision='bf16'")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
