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

In this file: `make_accelerator` (and the device it implies), `local_batch_size`, the FSDP helpers
(`is_fsdp`, sharded EMA), and `sample_fid_images` with the `sample-fid` command.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import torch

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
        raise ValueError("ditlib's trainer supports FSDP version 1 (accelerate's default); drop --fsdp_version 2")
    return True


def run_device(accelerator, requested=None) -> torch.device:
    """The device this process computes on: `ditlib.runtime.default_device(requested)` for a plain process
    (so `--device cuda:1` and DITLIB_DEVICE keep working), accelerate's per-rank device under a launcher."""
    if not is_distributed(accelerator):
        return default_device(str(requested) if requested is not None else None)
    if requested is not None and torch.device(requested).type != accelerator.device.type:
        raise ValueError(f"--device {requested} was given, but this is a distributed run on {accelerator.device.type}: "
                         "accelerate chooses each process's device (use `accelerate launch --cpu` for CPUs)")
    return accelerator.device


def local_batch_size(global_batch: int, num_processes: int) -> int:
    """The rows of each global batch one process computes. The global batch must split evenly."""
    if global_batch % num_processes:
        raise ValueError(f"the global batch size {global_batch} is not divisible by the {num_processes} processes; "
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


#################################################################################
#                    Sampling for FID, split over processes                      #
#################################################################################

def fid_seed(seed: int, index: int) -> int:
    """The seed of global sample `index`: a function of (seed, index) only."""
    from .data import _derived_seed

    return _derived_seed(seed, "fid-sample", index)


def _png_path(out_dir: Path, index: int) -> Path:
    return out_dir / "samples" / f"{index:06d}.png"


def _save_png(image: np.ndarray, path: Path) -> None:
    """uint8 (H, W, C) -> PNG, written to a temporary name and renamed (an interrupted run leaves no half file)."""
    from PIL import Image

    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp, format="PNG")
    tmp.replace(path)


def sample_fid_images(model, out_dir, num_samples: int = 50_000, *, accelerator=None, cfg_scale: float = 1.0,
                      num_sampling_steps: int = 250, sampler: str = "ddpm", seed: int = 0, batch_size: int = 64,
                      decode=None, progress: bool = True, **sample_kwargs) -> dict:
    """Sample `num_samples` images for FID, split over the processes of `accelerator`, as PNGs.

    Global sample i has label i mod K (`ditlib.evaluate.uniform_labels`) and its own seed `fid_seed(seed, i)`;
    process r draws the indices i ≡ r (mod world size), so indices are disjoint and the images are the
    same for any number of processes or batch size. Each image goes to `out_dir/samples/{i:06d}.png`;
    indices whose PNG already exists are skipped, so an interrupted run continues where it stopped.
    `decode` maps model outputs to images (a VAE decoder for latent models); other keyword arguments go
    to `ditlib.sample.sample_images` (noise_schedule, diffusion_steps, guided_channels, clip_denoised, precision).
    Returns {"written": indices this process wrote, "skipped": indices it found done}.
    """
    from tqdm.auto import tqdm

    from .evaluate import uniform_labels
    from .sample import sample_images, to_uint8

    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be at least 1, got {num_samples} and {batch_size}")
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    out_dir = Path(out_dir)
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    labels = uniform_labels(num_samples, model.num_classes)
    mine = list(range(rank, num_samples, world))
    todo = [i for i in mine if not _png_path(out_dir, i).exists()]
    written = []
    with tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"sample for FID (rank {rank})", unit="img",
              disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            images = sample_images(model, labels[chunk], num_sampling_steps=num_sampling_steps, sampler=sampler,
                                   cfg_scale=cfg_scale, seed=[fid_seed(seed, i) for i in chunk], progress=False,
                                   **sample_kwargs)
            if decode is not None:
                images = decode(images)
            for i, image in zip(chunk, to_uint8(images)):
                _save_png(image, _png_path(out_dir, i))
            written += chunk
            bar.update(len(chunk))
    return {"written": written, "skipped": sorted(set(mine) - set(todo))}


def collect_fid_npz(out_dir, num_samples: int, path=None) -> Path:
    """Read `out_dir/samples/000000.png …` back in index order and save ADM's `.npz` (uint8 N×H×W×3 under
    `arr_0`, `ditlib.evaluate.save_adm_npz`). Raises if an index is missing."""
    from PIL import Image

    from .evaluate import save_adm_npz

    out_dir = Path(out_dir)
    missing = [i for i in range(num_samples) if not _png_path(out_dir, i).exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {num_samples} samples are missing in {out_dir / 'samples'} "
                                f"(first: {missing[:5]}); run sample-fid again to finish them")
    first = np.asarray(Image.open(_png_path(out_dir, 0)))
    pixels = np.empty((num_samples, *first.shape[:2], 1 if first.ndim == 2 else first.shape[2]), dtype=np.uint8)
    for i in range(num_samples):
        image = np.asarray(Image.open(_png_path(out_dir, i)))
        pixels[i] = image[..., None] if image.ndim == 2 else image
    return save_adm_npz(pixels, path or out_dir / f"samples-{num_samples}.npz")


def _load_for_sampling(ckpt: str, weights: str, device, vae: str | None, model_name: str | None):
    """(model, train-config dict, codec or None) from a ditlib checkpoint or an official DiT .pt file."""
    from .checkpoints import load_model, load_official_dit

    if Path(ckpt).suffix in (".pt", ".pth"):
        model = load_official_dit(ckpt, model_name=model_name).to(device)
        train_cfg = {"sample_steps": 250, "sample_cfg_scale": 1.5}
        vae = vae or "stabilityai/sd-vae-ft-ema"
    else:
        model, meta = load_model(ckpt, which=weights, device=device)
        train_cfg = meta.get("train_config", {})
        vae = vae or train_cfg.get("vae")
    codec = None
    if vae:                      # decoding works at any latent size, so the codec's nominal image size does not matter
        from .vae import load_vae

        codec = load_vae(vae, device=device)
    return model, train_cfg, codec


def _cmd_sample_fid(args) -> int:
    accelerator = make_accelerator(args.device)
    device = run_device(accelerator, args.device)
    model, train_cfg, codec = _load_for_sampling(args.ckpt, args.weights, device, args.vae, args.model)
    from .sample import sampling_steps

    steps = sampling_steps(args.num_sampling_steps, train_cfg)          # checked before any sampling work
    cfg_scale = args.cfg_scale if args.cfg_scale is not None else train_cfg.get("sample_cfg_scale", 1.0)
    out = Path(args.out)
    start = time.perf_counter()
    result = sample_fid_images(
        model, out, args.num_samples, accelerator=accelerator, cfg_scale=cfg_scale, num_sampling_steps=steps,
        sampler=args.sampler, seed=args.seed, batch_size=args.batch_size,
        decode=codec.decode if codec is not None else None, progress=accelerator.is_main_process,
        noise_schedule=train_cfg.get("noise_schedule", "linear"), diffusion_steps=train_cfg.get("diffusion_steps", 1000),
        guided_channels=args.guided_channels, clip_denoised=codec is None, precision=args.precision)
    (out / f"written-rank{accelerator.process_index}.json").write_text(json.dumps(result) + "\n")
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return 0
    npz = collect_fid_npz(out, args.num_samples)
    elapsed = time.perf_counter() - start
    print(f"{args.num_samples} samples ({args.sampler}, {steps} steps, cfg {cfg_scale}, seed {args.seed}) on "
          f"{accelerator.num_processes} process(es) in {elapsed:.0f}s -> {out / 'samples'} and {npz}")
    summary = {"ckpt": str(args.ckpt), "num_samples": args.num_samples, "sampler": args.sampler, "steps": steps,
               "cfg_scale": cfg_scale, "guided_channels": args.guided_channels, "seed": args.seed,
               "processes": accelerator.num_processes, "sampling_time_s": round(elapsed, 1), "npz": str(npz),
               "written_by_rank0": len(result["written"])}
    if not args.no_fid:
        from .evaluate import compute_metrics

        summary.update(compute_metrics(npz, reference=args.reference, extractor=args.extractor, seed=args.seed,
                                       device=device, inception_weights=args.inception_weights))
        print(f"FID {summary['fid']:.3f} against {args.reference} ({summary['extractor']})")
    (out / "fid.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def add_cli(subparsers) -> None:
    """Register `sample-fid` with `python -m ditlib` (run it under `accelerate launch` for many processes)."""
    p = subparsers.add_parser("sample-fid", help="sample N images for FID over all processes (PNGs + ADM .npz), then FID")
    p.add_argument("--ckpt", required=True, help="a ditlib checkpoint, or an official DiT-XL-2-*.pt file")
    p.add_argument("--num-samples", type=int, default=50_000)
    p.add_argument("--out", required=True, help="folder: samples/{i:06d}.png, samples-N.npz, fid.json, "
                                               "written-rank{r}.json (the indices each process wrote)")
    p.add_argument("--cfg-scale", type=float, default=None, help="guidance scale (default: the checkpoint's; 1.5 for official files)")
    p.add_argument("--guided-channels", type=int, default=None, help="guide only the first K channels (3 = the official evaluation)")
    p.add_argument("--num-sampling-steps", type=int, default=None, help="default: the checkpoint's (250)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass on each process")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast precision (default auto: bf16 only where the hardware computes it natively)")
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--vae", default=None, help="VAE for latent models (default: the checkpoint's; sd-vae-ft-ema for .pt files)")
    p.add_argument("--model", default=None, help="for official .pt files: the config name, e.g. DiT-XL/2 (default: inferred)")
    p.add_argument("--reference", default="fmnist-test", help="FID reference: fmnist-test, or an .npz such as "
                                                             "ADM's VIRTUAL_imagenet256_labeled.npz")
    p.add_argument("--extractor", choices=["fmnist", "inception"], default="fmnist")
    p.add_argument("--inception-weights", default=None, help="path of torch-fidelity's Inception weights")
    p.add_argument("--no-fid", action="store_true", help="only sample (e.g. to score the .npz with ADM's suite)")
    p.add_argument("--device", default=None, help="a single process only: cpu, cuda, cuda:1, mps")
    p.set_defaults(func=_cmd_sample_fid)
