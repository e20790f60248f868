"""Many processes, one result: the `accelerate` setup shared by training and by sampling for FID.

The same code runs as one plain process (`python -m ditlib train`, a laptop) and under
`accelerate launch` (DDP on one or many GPUs and nodes, FSDP, TPUs through torch_xla). Two rules make
a distributed run equal to a single-process one with the same global batch:

* **Global draws, local slices.** Every process seeds torch identically and draws every random tensor of
  a training step (the batch order and flips, t, ε, the label dropout, latent samples) for the whole
  global batch; process r keeps rows [r·b, (r+1)·b), b = global batch / number of processes. So the
  ranks see disjoint parts of exactly the batch one process would see, with distinct noise, and a run
  does not depend on how many processes share it. (The official DiT script instead seeds each rank
  with `seed·world_size + rank`, which ties the result to the rank count.) Gradients are averaged by
  DDP/FSDP, so with equal slices the update is that of the global-batch mean.
* **Per-index seeds.** Sampling for FID gives global sample i its own label (i mod K) and its own
  generator seeded by (seed, i); ranks take disjoint indices, so the images do not depend on the rank
  count or the batch size.

In this file: `make_accelerator` (and the device it implies), `local_batch_size`, `rank_rows` and the
FSDP helpers (`is_fsdp`, sharded EMA, full state dicts). Sampling for FID over processes, with its
per-index seeds, is `ditlib.evaluate.sample_fid_images`.
"""
from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError
from .runtime import default_device

DEFAULT_FSDP_WRAP = ("DiTBlock",)


#################################################################################
#                          The accelerator and the device                        #
#################################################################################

def _fsdp_plugin(wrap_classes):
    """FSDP settings: whatever `accelerate launch --use_fsdp ...` set, plus `use_orig_params=True` (DiT's
    frozen `pos_embed` sits next to trained weights, and the EMA works parameter by parameter), no
    `sync_module_states` (nor its CPU-RAM-efficient loading), and, unless a wrap policy was given, one FSDP
    unit per DiT block."""
    import os

    from accelerate import FullyShardedDataParallelPlugin

    # Every process builds the same initial weights from the same seed (or loads the same checkpoint), so
    # there is nothing to broadcast at wrapping time (sync_module_states=False also lets FSDP run on CPUs).
    kwargs = {"use_orig_params": True, "sync_module_states": False, "cpu_ram_efficient_loading": False}
    if not os.environ.get("FSDP_AUTO_WRAP_POLICY"):
        kwargs.update(auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=list(wrap_classes))
    return FullyShardedDataParallelPlugin(**kwargs)


def make_accelerator(device=None, fsdp_wrap=DEFAULT_FSDP_WRAP):
    """An `accelerate.Accelerator` for this process: one plain process unless started by `accelerate launch`.

    Mixed precision stays ditlib's switch (`TrainConfig.precision`, applied with `ditlib.runtime.autocast`),
    so the Accelerator is created with mixed_precision="no" and the same code computes the same numbers
    with and without a launcher. `device="cpu"` keeps a single process on the CPU.
    """
    import os

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import is_torch_xla_available

    # Processes started by `accelerate launch --multi_gpu` (torchrun) on a machine without GPUs join a
    # CPU process group (gloo) only when accelerate is told "cpu"; a GPU or TPU machine needs no hint.
    no_accelerator = not torch.cuda.is_available() and not is_torch_xla_available()
    cpu = (device is not None and torch.device(device).type == "cpu") or no_accelerator
    kwargs = {"cpu": cpu, "mixed_precision": "no"}
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        kwargs["fsdp_plugin"] = _fsdp_plugin(fsdp_wrap)
    try:
        accelerator = Accelerator(**kwargs)
    except ValueError:
        # A plain process that already made an Accelerator with other settings (a notebook that trained
        # on the GPU, then asks for the CPU): its state may be rebuilt. A launched process may not.
        if PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        accelerator = Accelerator(**kwargs)
    launched = int(os.environ.get("WORLD_SIZE", accelerator.num_processes))    # torchrun's count (absent on TPUs)
    if launched != accelerator.num_processes:         # never let N processes each train the whole batch
        raise RuntimeError(f"{launched} processes were launched but accelerate sees {accelerator.num_processes}; "
                           "start them with `accelerate launch` (see docs/full-scale.md)")
    return accelerator


def is_distributed(accelerator) -> bool:
    """True under a launcher (several processes, or a TPU): then accelerate chooses the device."""
    from accelerate.utils import DistributedType

    return accelerator.num_processes > 1 or accelerator.distributed_type != DistributedType.NO


def is_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        return False
    if accelerator.is_fsdp2:
        raise ConfigError("ditlib's trainer supports FSDP version 1 (accelerate's default); drop --fsdp_version 2")
    return True


def run_device(accelerator, requested=None) -> torch.device:
    """The device this process computes on: `ditlib.runtime.default_device(requested)` for a plain process
    (so `--device cuda:1` and DITLIB_DEVICE keep working), accelerate's per-rank device under a launcher."""
    if not is_distributed(accelerator):
        return default_device(str(requested) if requested is not None else None)
    if requested is not None and torch.device(requested).type != accelerator.device.type:
        raise ConfigError(f"--device {requested} was given, but this is a distributed run on {accelerator.device.type}: "
                          "accelerate chooses each process's device (use `accelerate launch --cpu` for CPUs)")
    return accelerator.device


def local_batch_size(global_batch: int, num_processes: int) -> int:
    """The rows of each global batch one process computes. The global batch must split evenly."""
    if global_batch % num_processes:
        raise ConfigError(f"the global batch size {global_batch} is not divisible by the {num_processes} processes; "
                          f"choose a batch size that is a multiple of {num_processes}")
    return global_batch // num_processes


def rank_rows(accelerator, global_batch: int) -> slice:
    """This process's rows of a global batch: [r·b, (r+1)·b)."""
    b = local_batch_size(global_batch, accelerator.num_processes)
    return slice(accelerator.process_index * b, (accelerator.process_index + 1) * b)


#################################################################################
#                 FSDP: full state dicts and a sharded EMA                       #
#################################################################################

def _offload(model) -> bool:
    """Gather to the CPU of rank 0 only (GPU runs). On CPU processes torch's offload would copy nothing and the
    gathered tensors can share one buffer, so there every rank gathers and the result is cloned."""
    return next(model.parameters()).device.type != "cpu"


def _cloned(tree):
    if torch.is_tensor(tree):
        return tree.detach().clone()
    if isinstance(tree, dict):
        return {k: _cloned(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_cloned(v) for v in tree]
    return tree


def full_state_dict(model) -> dict:
    """The whole state dict of an FSDP-wrapped model, gathered (a collective: every rank calls it; on GPUs
    only rank 0 receives it, on CPU in memory, the others get {})."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    offload = _offload(model)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=offload))
    return state if offload else _cloned(state)


def load_full_state_dict(model, state: dict) -> None:
    """Load a whole (unsharded) state dict, present on every rank, into an FSDP-wrapped model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))


@contextlib.contextmanager
def weights_swapped(model, tensors):
    """Temporarily put `tensors` (one per parameter, same local shapes) into `model`'s parameters.

    With FSDP the EMA is kept as a list of local shards (`sharded_ema`); swapping it into the sharded
    model lets FSDP gather or load the EMA as a whole state dict without a second wrapped model.
    """
    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, t in zip(params, tensors):
            p.copy_(t)
    try:
        yield model
    finally:
        with torch.no_grad():
            for p, t in zip(params, saved):
                p.copy_(t)


def sharded_ema(model) -> list:
    """A copy of this rank's shard of every parameter: the EMA under FSDP (1/N of the model per rank)."""
    return [p.detach().clone() for p in model.parameters()]


def optimizer_state_full(model, optimizer, names: list) -> dict:
    """The AdamW state of an FSDP model gathered as a plain `optimizer.state_dict()` (parameter indices in
    the order of `names`, the unwrapped model's parameter names): the layout of a single-process checkpoint."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    offload = _offload(model)
    osd = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=offload))
    if not osd:
        return {}
    osd = osd if offload else _cloned(osd)
    index = {name: i for i, name in enumerate(names)}
    groups = [dict(g, params=[index[n] for n in g["params"]]) for g in osd["param_groups"]]
    return {"state": {index[n]: s for n, s in osd["state"].items()}, "param_groups": groups}


def load_optimizer_state_full(model, optimizer, state_dict: dict, names: list) -> None:
    """Load a plain (index-keyed) AdamW state dict into the optimizer of an FSDP model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    osd = {"state": {names[i]: s for i, s in state_dict["state"].items()},
           "param_groups": [dict(g, params=[names[i] for i in g["params"]]) for g in state_dict["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, osd, options=StateDictOptions(full_state_dict=True))


def mark_step(device: torch.device) -> None:
    """End of a step on a TPU: cut the lazy XLA graph here (a no-op elsewhere)."""
    if device.type == "xla":
        import torch_xla.core.xla_model as xm

        xm.mark_step()
