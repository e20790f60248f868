"""Command line: `python -m ditlib {train,sample,configs,export,train-vae,encode-latents,train-classifier,fid,sample-fid,student-release,autograde,grade-capstone,doctor} ...`
(run with -h for each command's options). `train` and `sample-fid` also run under `accelerate launch -m ditlib ...`."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


def _cmd_configs(args) -> int:
    from .configs import TRAIN_CONFIGS
    from .flops import PAPER_BLOCK_GFLOPS, block_design_table, gflops
    from .models import DiT_models, PAPER_CONFIGS, build_model

    def params_and_gflops(name, **kwargs):
        import torch
        with torch.device("meta"):
            model = build_model(name, **kwargs)
        return sum(p.numel() for p in model.parameters()), gflops(model)

    print("Training configs (python -m ditlib train --config NAME)")
    print(f"  {'name':<20} {'model':<14} {'tokens':>6} {'params':>10} {'Gflops':>8}  notes")
    for name, cfg in TRAIN_CONFIGS.items():
        params, gf = params_and_gflops(cfg.model, **cfg.model_kwargs())
        tokens = (cfg.image_size // int(cfg.model.rsplit("/", 1)[1])) ** 2
        notes = cfg.notes if cfg.block == "adaLN-Zero" else f"[{cfg.block} blocks] {cfg.notes}"
        print(f"  {name:<20} {cfg.model:<14} {tokens:>6} {params / 1e6:>9.2f}M {gf:>8.3f}  {notes}")
    print("\nModel registry (ditlib.models.DiT_models), paper configs at ImageNet 256 (32×32×4 latents, 1000 classes)")
    print(f"  {'name':<14} {'params':>10} {'Gflops':>8}")
    for name in DiT_models:
        if name in PAPER_CONFIGS:
            params, gf = params_and_gflops(name)
            print(f"  {name:<14} {params / 1e6:>9.2f}M {gf:>8.2f}")
    print("\nCourse model sizes (Fashion-MNIST 32×32×1, 10 classes)")
    for name in DiT_models:
        if name not in PAPER_CONFIGS:
            params, gf = params_and_gflops(name, input_size=32, in_channels=1, num_classes=10)
            print(f"  {name:<14} {params / 1e6:>9.2f}M {gf:>8.3f}")
    print("\nBlock designs (§3.2, Figure 5; DiT(block=...)): DiT-XL/2 at ImageNet 256, and DiT-T/4 on Fashion-MNIST")
    print(f"  {'block':<16} {'XL/2 params':>11} {'Gflops':>8} {'(paper)':>8}   {'T/4 params':>10} {'Gflops':>8}")
    course = block_design_table("DiT-T/4", input_size=32, in_channels=1, num_classes=10)
    for (design, params, gf), (_, t_params, t_gf) in zip(block_design_table("DiT-XL/2"), course):
        print(f"  {design:<16} {params / 1e6:>10.2f}M {gf:>8.2f} {PAPER_BLOCK_GFLOPS[design]:>8.1f}   "
              f"{t_params / 1e6:>9.2f}M {t_gf:>8.3f}")
    return 0


def _cmd_train(args) -> int:
    import os

    from .configs import get_config
    from .train import train

    config = get_config(args.config)
    launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if args.precision is None and launcher_precision in ("bf16", "fp16"):
        args.precision = launcher_precision          # `accelerate launch --mixed_precision bf16` means the same
    overrides = {k: v for k, v in {"batch_size": args.batch_size, "precision": args.precision, "seed": args.seed,
                                   "lr": args.lr, "dataset": args.data_path, "tf32": args.tf32,
                                   "grad_checkpointing": args.grad_checkpointing, "compile": args.compile,
                                   "fused_adamw": args.fused_adamw,
                                   "num_workers": args.num_workers}.items() if v is not None}
    if overrides:
        config = config.replace(**overrides)
    dataset = None
    if args.latents:
        from .latents import load_latent_cache
        dataset = load_latent_cache(args.latents)
    out = Path(args.out or Path("runs") / config.name.replace("/", "-"))
    summary = train(config, out, max_steps=args.max_steps, resume=args.resume, device=args.device, dataset=dataset)
    from accelerate.state import PartialState
    if PartialState().is_main_process:
        print(json.dumps(summary, indent=2))
        print(f"sample with: python -m ditlib sample --ckpt {summary['final_weights']} --out {out / 'samples.png'}")
    return 0


def _cmd_sample(args) -> int:
    import torch

    from .runtime import default_device
    from .sample import Pretrained, sampling_steps, save_grid, save_npz

    pretrained = Pretrained.load(args.ckpt, device=default_device(args.device), which=args.weights)
    model, train_cfg = pretrained.model, pretrained.train_config
    classes = args.classes if args.classes else list(range(model.num_classes))
    labels = torch.tensor([c for c in classes for _ in range(args.per_class)])
    steps = sampling_steps(args.num_sampling_steps, train_cfg)          # checked before any sampling work
    cfg_scale = args.cfg_scale if args.cfg_scale is not None else train_cfg.get("sample_cfg_scale", 1.0)
    start = time.perf_counter()
    # A latent model samples latents, then the VAE decodes them (§3.1); pixels are clipped at each step.
    images = pretrained.sample(labels, num_sampling_steps=steps, sampler=args.sampler, cfg_scale=cfg_scale,
                               seed=args.seed, guided_channels=args.guided_channels,
                               clip_denoised=pretrained.codec is None and not args.no_clip, precision=args.precision)
    elapsed = time.perf_counter() - start
    out = Path(args.out)
    if out.suffix == ".npz":
        save_npz(images, labels, out)
        written = [out]
    else:
        nrow = args.per_class if len(classes) > 1 and args.per_class > 1 else min(len(labels), 10)
        written = [save_grid(images, out, nrow=nrow, scale=args.scale), save_npz(images, labels, out.with_suffix(".npz"))]
    print(f"{len(labels)} samples ({args.sampler}, {steps} steps, cfg {cfg_scale}, seed {args.seed}) "
          f"in {elapsed:.1f}s -> {', '.join(map(str, written))}")
    return 0


def _cmd_export(args) -> int:
    from .train import export_run

    dest = export_run(args.run, args.out, command=args.command)
    print(f"wrote {dest}.safetensors, {dest}.json and {dest}.manifest.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None,
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
    p.add_argument("--cfg-scale", type=float, default=None, help="guidance scale, 1 = none (default: the checkpoint's)")
    p.add_argument("--guided-channels", type=int, default=None, help="guide only the first K channels (3 = official eval)")
    p.add_argument("--num-sampling-steps", type=int, default=None, help="respaced steps (default: the checkpoint's, 250)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast precision (default auto: bf16 only where the hardware computes it natively)")
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

    # Commands of the latent-diffusion and evaluation lessons register themselves.
    import importlib
    for module in ("ditlib.vae", "ditlib.evaluate", "ditlib.distributed", "ditlib.classroom", "ditlib.doctor"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        mod.add_cli(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv=None) -> int:
    import warnings

    warnings.formatwarning = _one_line_warning      # a user at a terminal gets one line per warning
    args = build_parser().parse_args(argv)
    # What the user typed, for the records commands write (also right when main() is called from a script).
    args.invocation = "python -m ditlib " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if getattr(args, "config", "x") is None:
        from .configs import DEFAULT_CONFIG
        args.config = DEFAULT_CONFIG
    try:
        return args.func(args)
    except (KeyError, ValueError, FileExistsError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
