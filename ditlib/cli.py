"""The command line, in one place: `python -m ditlib COMMAND ...` (`-h` after a command lists its options).

    configs            every config with parameter count and Gflops          (lessons 06, 10, 11)
    train              train a DiT; also under `accelerate launch -m ditlib`  (lesson 07)
    sample             a grid of samples from a checkpoint                    (lesson 08)
    export             ship a finished run's EMA weights with a manifest
    train-vae          train a small VAE                                      (lesson 04)
    encode-latents     encode a dataset once into the latent cache            (lesson 04)
    train-classifier   train the Fashion-MNIST feature extractor of FID-FMNIST (lesson 10)
    fid                FID / KID / IS / precision-recall of a checkpoint       (lesson 10)
    sample-fid         sample N images for FID over all processes, then FID   (lesson 11)
    doctor             this machine, the precision `auto` picks, and its speed

The course adds `student-release`, `autograde` and `grade-capstone` (`ditlib.course.cli`) through the
entry-point group "ditlib.commands", so the core never imports the course package. Errors meant for the
user (`ditlib.errors.DitlibError`) print as one line and exit with status 2; anything else is a bug and
shows its traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import torch

from .classifier import train_classifier
from .configs import DEFAULT_CONFIG, TRAIN_CONFIGS, get_config
from .data import FashionMNIST
from .distributed import make_accelerator, run_device
from .doctor import run_doctor
from .errors import ConfigError, DitlibError
from .evaluate import collect_fid_npz, load_for_sampling, sample_fid_images, sample_for_fid
from .flops import PAPER_BLOCK_GFLOPS, block_design_table, params_and_gflops, unet_dit_table
from .latents import build_latent_dataset, load_latent_cache
from .metrics import EXTRACTORS, compute_metrics, format_metrics, inception_weights_path, save_adm_npz
from .models import PAPER_CONFIGS, DiT_models, DiTConfig
from .runtime import default_device, resolve_precision
from .sample import Pretrained, guidance_text, sampling_guidance, sampling_steps, save_grid, save_npz
from .runs import export_run
from .train import train
from .vae_train import VAE_CONFIGS, get_vae_config, train_vae

PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
PRECISION_HELP = "autocast precision (default auto: bf16 only where the hardware computes it natively)"


def command_line(args) -> str:
    """The command as typed (`main` records it), or this process's arguments: what records keep."""
    return getattr(args, "invocation", None) or "python -m ditlib " + " ".join(shlex.quote(a) for a in sys.argv[1:])


#################################################################################
#                          Training and sampling DiTs                           #
#################################################################################

def _cmd_configs(args) -> int:
    print("Training configs (python -m ditlib train --config NAME)\n"
          f"  {'name':<20} {'model':<14} {'tokens':>6} {'params':>10} {'Gflops':>8}  notes")
    for name, cfg in TRAIN_CONFIGS.items():
        params, gf = params_and_gflops(cfg.model_config())
        tokens = (cfg.image_size // int(cfg.model.rsplit("/", 1)[1])) ** 2 if cfg.family == "DiT" else "-"
        notes = cfg.notes if cfg.block == "adaLN-Zero" or cfg.family != "DiT" else f"[{cfg.block} blocks] {cfg.notes}"
        print(f"  {name:<20} {cfg.model:<14} {tokens:>6} {params / 1e6:>9.2f}M {gf:>8.3f}  {notes}")
    print("\nU-Net baseline (ditlib.unet: diffusers' UNet2DModel) against its DiT, 8×8×4 latents, counted alike\n"
          f"  {'U-Net':<8} {'params':>10} {'Gflops':>8}   {'DiT':<9} {'params':>10} {'Gflops':>8}  ratio")
    for u, u_params, u_gf, d, d_params, d_gf in unet_dit_table():
        print(f"  {u:<8} {u_params / 1e6:>9.2f}M {u_gf:>8.4f}   {d:<9} {d_params / 1e6:>9.2f}M {d_gf:>8.4f}  "
              f"{u_gf / d_gf:5.2f}")
    print("\nModel registry (ditlib.models.DiT_models), paper configs at ImageNet 256 (32×32×4 latents, 1000 classes)\n"
          f"  {'name':<14} {'params':>10} {'Gflops':>8}")
    for name in PAPER_CONFIGS:
        params, gf = params_and_gflops(DiTConfig.from_name(name))
        print(f"  {name:<14} {params / 1e6:>9.2f}M {gf:>8.2f}")
    print("\nCourse model sizes (Fashion-MNIST 32×32×1, 10 classes)")
    for name in (n for n in DiT_models if n not in PAPER_CONFIGS):
        params, gf = params_and_gflops(DiTConfig.from_name(name, input_size=32, in_channels=1, num_classes=10))
        print(f"  {name:<14} {params / 1e6:>9.2f}M {gf:>8.3f}")
    print("\nBlock designs (§3.2, Figure 5; DiT(block=...)): DiT-XL/2 at ImageNet 256, and DiT-T/4 on Fashion-MNIST\n"
          f"  {'block':<16} {'XL/2 params':>11} {'Gflops':>8} {'(paper)':>8}   {'T/4 params':>10} {'Gflops':>8}")
    course = block_design_table("DiT-T/4", input_size=32, in_channels=1, num_classes=10)
    for (design, params, gf), (_, t_params, t_gf) in zip(block_design_table("DiT-XL/2"), course):
        print(f"  {design:<16} {params / 1e6:>10.2f}M {gf:>8.2f} {PAPER_BLOCK_GFLOPS[design]:>8.1f}   "
              f"{t_params / 1e6:>9.2f}M {t_gf:>8.3f}")
    return 0


def _cmd_train(args) -> int:
    config = get_config(args.config)
    launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if args.precision is None and launcher_precision in ("bf16", "fp16"):
        args.precision = launcher_precision          # `accelerate launch --mixed_precision bf16` means the same
    overrides = {k: v for k, v in {"batch_size": args.batch_size, "precision": args.precision, "seed": args.seed,
                                   "lr": args.lr, "dataset": args.data_path, "tf32": args.tf32,
                                   "grad_checkpointing": args.grad_checkpointing, "compile": args.compile,
                                   "fused_adamw": args.fused_adamw, "num_workers": args.num_workers}.items()
                 if v is not None}
    if overrides:
        config = config.replace(**overrides)
    dataset = load_latent_cache(args.latents) if args.latents else None
    out = Path(args.out or Path("runs") / config.name.replace("/", "-"))
    summary = train(config, out, max_steps=args.max_steps, resume=args.resume, device=args.device, dataset=dataset)
    from accelerate.state import PartialState
    if PartialState().is_main_process:
        print(json.dumps(summary, indent=2))
        print(f"sample with: python -m ditlib sample --ckpt {summary['final_weights']} --out {out / 'samples.png'}")
    return 0


def _cmd_sample(args) -> int:
    pretrained = Pretrained.load(args.ckpt, device=default_device(args.device), which=args.weights)
    model, train_cfg = pretrained.model, pretrained.train_config
    classes = args.classes if args.classes else list(range(model.num_classes))
    labels = torch.tensor([c for c in classes for _ in range(args.per_class)])
    steps = sampling_steps(args.num_sampling_steps, train_cfg)          # checked before any sampling work
    cfg_scale, interval = sampling_guidance(args.cfg_scale, args.guidance_interval, train_cfg)
    start = time.perf_counter()
    # A latent model samples latents, then the VAE decodes them (§3.1); pixels are clipped at each step.
    images = pretrained.sample(labels, num_sampling_steps=steps, sampler=args.sampler, cfg_scale=cfg_scale,
                               seed=args.seed, guided_channels=args.guided_channels, guidance_interval=interval,
                               clip_denoised=pretrained.codec is None and not args.no_clip, precision=args.precision)
    elapsed = time.perf_counter() - start
    out = Path(args.out)
    if out.suffix == ".npz":
        written = [save_npz(images, labels, out)]
    else:
        nrow = args.per_class if len(classes) > 1 and args.per_class > 1 else min(len(labels), 10)
        written = [save_grid(images, out, nrow=nrow, scale=args.scale), save_npz(images, labels, out.with_suffix(".npz"))]
    print(f"{len(labels)} samples ({args.sampler}, {steps} steps, {guidance_text(cfg_scale, interval)}, "
          f"seed {args.seed}) in {elapsed:.1f}s -> {', '.join(map(str, written))}")
    return 0


def _cmd_export(args) -> int:
    dest = export_run(args.run, args.out, command=args.command)
    print(f"wrote {dest}.safetensors, {dest}.json and {dest}.manifest.json")
    return 0


#################################################################################
#                          The VAE and the latent cache                         #
#################################################################################

def _cmd_train_vae(args) -> int:
    config = get_vae_config(args.config)
    overrides = {k: v for k, v in {"batch_size": args.batch_size, "lr": args.lr, "kl_weight": args.kl_weight,
                                   "precision": args.precision, "seed": args.seed}.items() if v is not None}
    if overrides:
        config = config.replace(**overrides)
    out = Path(args.out or Path("runs") / config.name)
    summary = train_vae(config, out, max_steps=args.max_steps, device=args.device, export=args.export,
                        command=command_line(args))
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_encode_latents(args) -> int:
    dataset = build_latent_dataset(args.vae, args.dataset, args.split, image_size=args.image_size,
                                   cache_dir=args.cache_dir, device=args.device, precision=args.precision)
    print(f"{len(dataset)} latents {dataset.latent_shape} (and their flips) in {dataset.path}")
    return 0


#################################################################################
#                                  Evaluation                                   #
#################################################################################

def _cmd_train_classifier(args) -> int:
    manifest = train_classifier(args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                seed=args.seed, device=args.device, max_steps=args.max_steps,
                                command=command_line(args))
    print(json.dumps(manifest, indent=2))
    return 0


def _cmd_fid(args) -> int:
    start = time.perf_counter()
    if args.extractor == "inception":
        inception_weights_path(args.inception_weights)  # fail in a second, before any sampling
    num_samples = args.num_samples or (None if args.samples else 10000)
    sample_precision = None
    if args.real_vs_real:
        train_images = FashionMNIST("train").images  # (60000, 1, 32, 32)
        if num_samples > train_images.shape[0]:
            raise ConfigError(f"--num-samples {num_samples} exceeds the {train_images.shape[0]} training images")
        pick = torch.randperm(train_images.shape[0], generator=torch.Generator().manual_seed(args.seed))
        samples = train_images[pick[:num_samples]].permute(0, 2, 3, 1)  # (N, 32, 32, 1) uint8
        what = "real vs real (Fashion-MNIST train subset vs reference): the floor"
    elif args.samples:
        samples, what = args.samples, f"samples {args.samples}"
    else:
        device = default_device(args.device)
        model, train_cfg, codec = load_for_sampling(args.ckpt, args.weights, device, args.vae, None)
        if codec is None and model.in_channels not in (1, 3):
            raise ConfigError(f"{args.ckpt} samples {model.in_channels}-channel latents: pass --vae NAME_OR_PATH "
                              "(e.g. fmnist-vae) to decode them to images")
        steps = sampling_steps(args.num_sampling_steps, train_cfg)          # checked before any sampling work
        cfg_scale, interval = sampling_guidance(args.cfg_scale, args.guidance_interval, train_cfg)
        # A latent DiT (§3.1): each batch is decoded; the official latent sampler does not clip.
        samples = sample_for_fid(model, num_samples, cfg_scale=cfg_scale, guidance_interval=interval,
                                 num_sampling_steps=steps, sampler=args.sampler, seed=args.seed,
                                 batch_size=args.batch_size, noise_schedule=train_cfg.get("noise_schedule", "linear"),
                                 diffusion_steps=train_cfg.get("diffusion_steps", 1000), precision=args.precision,
                                 decode=codec.decode if codec is not None else None, clip_denoised=codec is None)
        sample_precision = resolve_precision(args.precision, device, announce=False).precision
        what = f"{args.ckpt} ({args.sampler}, {steps} steps, {guidance_text(cfg_scale, interval)}, {sample_precision})"
    if args.npz:
        print(f"samples -> {save_adm_npz(samples, args.npz)} (ADM layout)")
    result = compute_metrics(samples, reference=args.reference, extractor=args.extractor,
                             num_samples=num_samples if args.samples else None,
                             seed=args.seed, kid_subset_size=args.kid_subset_size, device=args.device,
                             classifier_path=args.classifier, inception_weights=args.inception_weights)
    elapsed = time.perf_counter() - start
    print(f"{what}: {format_metrics(result)}\n  time       {elapsed:.1f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "command": command_line(args), "time_s": round(elapsed, 1),
                                               "sample_precision": sample_precision}, indent=2) + "\n")
    return 0


def _cmd_sample_fid(args) -> int:
    accelerator = make_accelerator(args.device)
    device = run_device(accelerator, args.device)
    model, train_cfg, codec = load_for_sampling(args.ckpt, args.weights, device, args.vae, args.model)
    steps = sampling_steps(args.num_sampling_steps, train_cfg)          # checked before any sampling work
    cfg_scale, interval = sampling_guidance(args.cfg_scale, args.guidance_interval, train_cfg)
    out = Path(args.out)
    start = time.perf_counter()
    result = sample_fid_images(
        model, out, args.num_samples, accelerator=accelerator, cfg_scale=cfg_scale, num_sampling_steps=steps,
        sampler=args.sampler, seed=args.seed, batch_size=args.batch_size, guidance_interval=interval,
        decode=codec.decode if codec is not None else None, progress=accelerator.is_main_process,
        noise_schedule=train_cfg.get("noise_schedule", "linear"), diffusion_steps=train_cfg.get("diffusion_steps", 1000),
        guided_channels=args.guided_channels, clip_denoised=codec is None, precision=args.precision)
    (out / f"written-rank{accelerator.process_index}.json").write_text(json.dumps(result) + "\n")
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return 0
    npz = collect_fid_npz(out, args.num_samples)
    elapsed = time.perf_counter() - start
    print(f"{args.num_samples} samples ({args.sampler}, {steps} steps, {guidance_text(cfg_scale, interval)}, "
          f"seed {args.seed}) on {accelerator.num_processes} process(es) in {elapsed:.0f}s -> {out / 'samples'} and {npz}")
    summary = {"ckpt": str(args.ckpt), "num_samples": args.num_samples, "sampler": args.sampler, "steps": steps,
               "cfg_scale": cfg_scale, "guidance_interval": interval, "guided_channels": args.guided_channels,
               "seed": args.seed, "processes": accelerator.num_processes, "sampling_time_s": round(elapsed, 1),
               "npz": str(npz), "written_by_rank0": len(result["written"])}
    if not args.no_fid:
        summary.update(compute_metrics(npz, reference=args.reference, extractor=args.extractor, seed=args.seed,
                                       device=device, inception_weights=args.inception_weights))
        print(f"FID {summary['fid']:.3f} against {args.reference} ({summary['extractor']})")
    (out / "fid.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def _cmd_doctor(args) -> int:
    start = time.perf_counter()
    report = run_doctor(args.config, seconds=args.seconds, device=args.device)
    report["time_s"] = round(time.perf_counter() - start, 1)
    print(f"\n(measured in {report['time_s']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


#################################################################################
#                           The parser and the entry                            #
#################################################################################

def _sampling_flags(p, cfg_help: str, steps_help: str) -> None:
    """The flags of every command that samples a checkpoint: guidance, steps, sampler, seed, weights, precision."""
    p.add_argument("--cfg-scale", type=float, default=None, help=cfg_help)
    p.add_argument("--num-sampling-steps", type=int, default=None, help=steps_help)
    p.add_argument("--guidance-interval", type=int, nargs=2, metavar=("LO", "HI"), default=None, help="guide only "
                   "steps with LO <= t <= HI (default: every step; the checkpoint's interval without --cfg-scale)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)


def build_parser() -> argparse.ArgumentParser:
    """Every command with its flags; the course's commands come from the "ditlib.commands" entry points."""
    parser = argparse.ArgumentParser(prog="python -m ditlib", description="Diffusion Transformers from scratch")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("configs", help="list every config with parameter count and Gflops")
    p.set_defaults(func=_cmd_configs)

    p = sub.add_parser("train", help="train a DiT")
    p.add_argument("--config", default=None, help="a training config name (see `configs`); default: the course's small model")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many steps (default: the config's max_steps, where a cosine lr schedule ends)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config>)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--batch-size", type=int, default=None, help="the global batch, split over processes")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="autocast precision (default: the config's, 'auto' = bf16 only where the hardware computes "
                        "it natively; or accelerate launch's --mixed_precision)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available; "
                                                  "under `accelerate launch` accelerate chooses)")
    p.add_argument("--data-path", default=None, help="an image folder (one sub-folder per class), e.g. ImageNet's train/")
    p.add_argument("--latents", default=None, help="train on a latent cache from `encode-latents` (a STEM)")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=None, help="TF32 matmuls on CUDA")
    p.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="recompute activations in backward (less memory, more time)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model and loss (default: the config's 'auto' = runs of ≥ 1000 steps in "
                        "one process; --no-compile for eager)")
    p.add_argument("--fused-adamw", action=argparse.BooleanOptionalAction, default=None,
                   help="AdamW's fused kernel on CPU/CUDA (default on; --no-fused-adamw: the foreach kernel)")
    p.add_argument("--num-workers", type=int, default=None, help="data-loading processes per rank")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="sample a grid from a checkpoint")
    p.add_argument("--ckpt", required=True, help="a ditlib checkpoint (STEM, STEM.safetensors or STEM.json)")
    p.add_argument("--classes", type=int, nargs="*", default=None, help="class indices (default: all)")
    p.add_argument("--per-class", type=int, default=8, help="samples per class (default 8)")
    _sampling_flags(p, "guidance scale, 1 = none (default: the checkpoint's)",
                    "respaced steps (default: the checkpoint's, 250)")
    p.add_argument("--guided-channels", type=int, default=None, help="guide only the first K channels (3 = official eval)")
    p.add_argument("--no-clip", action="store_true", help="do not clip x̂_0 to [-1, 1] at each step")
    p.add_argument("--scale", type=int, default=2, help="enlarge the PNG's pixels this many times")
    p.add_argument("--out", default="samples.png", help="a .png grid (a .npz is written beside it) or a .npz")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("export", help="copy a finished run's EMA weights and write a manifest (for shipping)")
    p.add_argument("--run", required=True, help="the run folder (holding final.safetensors/json and log.jsonl)")
    p.add_argument("--out", required=True, help="destination stem, e.g. data/checkpoints/fmnist-DiT-T-4")
    p.add_argument("--command", default=None, help="the exact training command to record (default: derived)")
    p.set_defaults(func=_cmd_export)

    # The VAE and the latent cache
    p = sub.add_parser("train-vae", help="train a small VAE (latent diffusion, DiT §3.1)")
    p.add_argument("--config", default="fmnist-vae-f4", help=f"one of: {', '.join(VAE_CONFIGS)} (default fmnist-vae-f4)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (default: the config's)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config>)")
    p.add_argument("--export", default=None, help="also write the weights to this stem with a manifest "
                                                  "(e.g. data/checkpoints/fmnist-vae)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--kl-weight", type=float, default=None)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                   help="autocast precision (default: the config's, auto = bf16 only where the hardware has it natively)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.set_defaults(func=_cmd_train_vae)

    p = sub.add_parser("encode-latents", help="encode a dataset (and its flips) once into the latent cache")
    p.add_argument("--vae", default="fmnist-vae", help="shipped name, VAE checkpoint, Hub id or diffusers folder")
    p.add_argument("--dataset", default="fashion-mnist", help="'fashion-mnist' or an image folder")
    p.add_argument("--split", default="train")
    p.add_argument("--image-size", type=int, default=None, help="pixel size (default: the VAE's)")
    p.add_argument("--cache-dir", default=None, help="default: runs/cache/latents")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="the encoder's autocast precision (default auto: bf16 only where the hardware has it natively)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_encode_latents)

    # Evaluation
    p = sub.add_parser("train-classifier", help="train the Fashion-MNIST feature extractor used for FID")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default=str(Path("runs") / "fmnist-classifier"),
                   help="checkpoint stem (default runs/fmnist-classifier; the shipped one is data/checkpoints/fmnist-classifier)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_train_classifier)

    p = sub.add_parser("fid", help="FID / KID / IS / precision-recall of a checkpoint's samples, or the real-vs-real floor")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a DiT checkpoint to sample from")
    source.add_argument("--samples", help="an .npz of samples (arr_0: uint8 N×H×W×C), e.g. from `sample` or ADM")
    source.add_argument("--real-vs-real", "--reference-only", dest="real_vs_real", action="store_true",
                        help="the floor: N random training images vs the reference")
    p.add_argument("--num-samples", type=int, default=None,
                   help="number of samples (default 10000; with --samples, all in the file)")
    p.add_argument("--reference", default="fmnist-test", help="fmnist-test (default), fmnist-train, or an .npz")
    _sampling_flags(p, "guidance scale (default: the checkpoint's)", "respaced steps (default: the checkpoint's)")
    p.add_argument("--extractor", choices=sorted(EXTRACTORS), default="fmnist")
    p.add_argument("--batch-size", type=int, default=256, help="sampling batch size")
    p.add_argument("--kid-subset-size", type=int, default=None)
    p.add_argument("--npz", default=None, help="also save the samples in ADM layout (uint8 N×H×W×3, arr_0)")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--vae", default=None, help="decode latent samples with this VAE (default: the checkpoint's, if any)")
    p.add_argument("--classifier", default=None, help="feature extractor checkpoint (default: the shipped one)")
    p.add_argument("--inception-weights", default=None, help="path of torch-fidelity's Inception weights")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_fid)

    # Many processes
    p = sub.add_parser("sample-fid", help="sample N images for FID over all processes (PNGs + ADM .npz), then FID")
    p.add_argument("--ckpt", required=True, help="a ditlib checkpoint, or an official DiT-XL-2-*.pt file")
    p.add_argument("--num-samples", type=int, default=50_000)
    p.add_argument("--out", required=True, help="folder: samples/{i:06d}.png, samples-N.npz, fid.json, "
                                               "written-rank{r}.json (the indices each process wrote)")
    _sampling_flags(p, "guidance scale (default: the checkpoint's; 1.5 for official files)",
                    "default: the checkpoint's (250)")
    p.add_argument("--guided-channels", type=int, default=None, help="guide only the first K channels (3 = the official evaluation)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass on each process")
    p.add_argument("--vae", default=None, help="VAE for latent models (default: the checkpoint's; sd-vae-ft-ema for .pt files)")
    p.add_argument("--model", default=None, help="for official .pt files: the config name, e.g. DiT-XL/2 (default: inferred)")
    p.add_argument("--reference", default="fmnist-test", help="FID reference: fmnist-test, or an .npz such as "
                                                             "ADM's VIRTUAL_imagenet256_labeled.npz")
    p.add_argument("--extractor", choices=["fmnist", "inception"], default="fmnist")
    p.add_argument("--inception-weights", default=None, help="path of torch-fidelity's Inception weights")
    p.add_argument("--no-fid", action="store_true", help="only sample (e.g. to score the .npz with ADM's suite)")
    p.add_argument("--device", default=None, help="a single process only: cpu, cuda, cuda:1, mps")
    p.set_defaults(func=_cmd_sample_fid)

    # This machine
    p = sub.add_parser("doctor", help="this machine, the precision 'auto' picks and why, and the default "
                                      "model's training and sampling speed here")
    p.add_argument("--config", default=None, help="training config to measure (default: the course's default)")
    p.add_argument("--seconds", type=float, default=2.0, help="time per measurement (default 2)")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="also write the report as JSON")
    p.set_defaults(func=_cmd_doctor)

    for plugin in entry_points(group="ditlib.commands"):      # the course package (ditlib.course.cli), if installed
        plugin.load()(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv=None) -> int:
    warnings.formatwarning = _one_line_warning      # a user at a terminal gets one line per warning
    args = build_parser().parse_args(argv)
    # What the user typed, for the records commands write (also right when main() is called from a script).
    args.invocation = "python -m ditlib " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if getattr(args, "config", "x") is None:
        args.config = DEFAULT_CONFIG
    try:
        return args.func(args)
    except DitlibError as err:                      # meant for the user: one line; anything else is a bug
        print(f"error: {err}", file=sys.stderr)
        return 2
