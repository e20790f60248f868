"""Run by tests/test_fsdp.py under `accelerate launch`: ditlib's trainer through its FSDP branch on CPU processes.

accelerate turns FSDP on only for GPU process groups, and torch's FSDP on CPUs needs device_id="cpu" with a
single FSDP unit, so this worker switches the Accelerator to FSDP and wraps the model itself; everything
after the wrapping (sharded EMA, gathered checkpoints, optimizer state, clipping, resume) is ditlib's own path.
Usage: fsdp_cpu_worker.py OUT MAX_STEPS [resume]
"""
import sys

import torch
from accelerate.utils import DistributedType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

import ditlib.distributed as distributed
from ditlib.configs import get_config
from ditlib.train import train

_make_accelerator = distributed.make_accelerator


def make_fsdp_accelerator(device=None, fsdp_wrap=distributed.DEFAULT_FSDP_WRAP):
    accelerator = _make_accelerator(device, fsdp_wrap)
    accelerator.state.fsdp_plugin = distributed._fsdp_plugin(fsdp_wrap)
    accelerator.state.distributed_type = DistributedType.FSDP

    def prepare_model(model, device_placement=None, evaluation_mode=False):
        wrapped = FSDP(model, use_orig_params=True, device_id=torch.device("cpu"))
        accelerator._models.append(wrapped)
        return wrapped

    accelerator.prepare_model = prepare_model
    return accelerator


if __name__ == "__main__":
    distributed.make_accelerator = make_fsdp_accelerator
    out, max_steps = sys.argv[1], int(sys.argv[2])
    train(get_config("debug").replace(grad_clip=1.0, precision="fp32"), out, max_steps=max_steps,
          resume="resume" in sys.argv[3:], progress=False)
