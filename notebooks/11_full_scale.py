# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11 · Full scale: from the course to the paper
#
# Everything so far ran on a laptop: 32×32 clothes, models of a few million parameters, minutes of
# training. The paper's models use the same code paths at a scale millions of times larger in compute.
# This lesson walks that distance with `ditlib`: the ImageNet configurations, the Stable Diffusion VAE,
# launching one training script on many GPUs or a TPU pod, and loading the official checkpoints. Each part
# ends in something that runs here, on a CPU, in seconds.
#
# **Learning objectives.** After this lesson you can
# 1. read the paper's training recipe from `ditlib`'s registered `imagenet256-*` configs and compute their
#    sizes;
# 2. say what the SD VAE does at 256×256 (8× downsampling, scale 0.18215) and how the lesson finds its weights;
# 3. launch the training entry point on 8 GPUs, several nodes or a TPU pod with `accelerate`, and know what
#    each flag does;
# 4. load an official `DiT-XL-2-256x256.pt` safely and see which config it implies;
# 5. estimate what a full run costs from published figures, and run the same code path in miniature;
# 6. measure the activation memory of one training image and work out whether the paper's batch fits a GPU.
#
# **Paper.** DiT §3.1 *Latent diffusion* (the SD VAE, 256×256×3 → 32×32×4), §4 *Experimental setup*
# (training recipe, "Compute": JAX on TPU v3-256 pods), Table 4 (Gflops), Table 2 (the final FID).
# Commands and published figures: `docs/full-scale.md`.
#
# *Quick mode* (`DITLIB_QUICK=1`) does not start the two-process run; everything else is the same.

# %%
import math
import os
import sys
import tempfile
from pathlib import Path

import torch

from ditlib.checkpoints import CheckpointError, load_checkpoint
from ditlib.configs import TRAIN_CONFIGS, get_config
from ditlib.course import exercises, widgets
from ditlib.diffusion import create_diffusion
from ditlib.flops import PAPER_GFLOPS, gflops, num_params
from ditlib.models import DiT, DiT_models
from ditlib.runtime import pick
from ditlib.sample import infer_dit_config, load_official_dit
from ditlib.train import read_log, train
from ditlib.vae import SD_VAE_SCALE_FACTOR, VAEWeightsNotFound, load_sd_vae

# %% [markdown]
# ## 1. The paper's configurations
#
# The paper trains 12 models: four sizes (S, B, L, XL: depth × width 12 × 384, 12 × 768, 24 × 1024,
# 28 × 1152) times three patch sizes (8, 4, 2), on ImageNet at 256×256 (and XL/2 also at 512×512). `ditlib`
# registers each as a training config with the recipe of §4: AdamW at a constant lr of 10⁻⁴, no weight decay,
# global batch 256, EMA 0.9999, horizontal flips, class dropout 0.1, learned Σ, 1000 classes, SD-VAE latents.

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'config':22s} {'tokens':>6s} {'params':>9s} {'Gflops':>8s} {'(paper)':>8s}")
for name, config in TRAIN_CONFIGS.items():
    if name.startswith("imagenet256-"):
        with torch.device("meta"):                                     # input 32×32×4, 1000 classes
            model = DiT(config.dit_config())
        tokens = (config.image_size // int(config.model.rsplit("/", 1)[1])) ** 2
        print(f"{name:22s} {tokens:6d} {num_params(model) / 1e6:8.1f}M "
              f"{gflops(model):8.2f} {PAPER_GFLOPS[config.model]:8.2f}")

# %% [markdown]
# These are built on PyTorch's meta device, so even DiT-XL/2 (675 M parameters) costs no memory to count.
# The Gflops match the paper's Table 4 (lesson 05 explains the counting convention). The shared recipe, and
# the few fields that differ from the course's small configs:

# %%
# NBVAL_CHECK_OUTPUT
xl2 = get_config("imagenet256-DiT-XL/2")
small = get_config("fmnist-latent-DiT-T/2")
for field in ("model", "vae", "image_size", "in_channels", "num_classes", "batch_size", "lr", "warmup_steps",
              "lr_schedule", "grad_clip", "min_snr_gamma", "ema_decay", "precision", "tf32", "max_steps", "sample_steps",
              "sample_cfg_scale", "sample_guidance_interval"):
    print(f"{field:24s} {str(getattr(xl2, field)):28s} {str(getattr(small, field))}")
assert xl2.lr == 1e-4 and xl2.batch_size == 256 and xl2.ema_decay == 0.9999 and xl2.class_dropout_prob == 0.1

# %% [markdown]
# The course's runs use a larger learning rate with warm-up and a cosine decay, gradient clipping, min-SNR
# weighting of the loss and a shorter EMA: a few thousand steps on a CPU need them (lesson 07 and `docs/results.md`
# give the measured effect of each). The paper's 400K-step runs use none of these. The small model also samples
# with guidance only on the steps t ≤ 300 (lesson 09, section 5); the paper guides every step (None).
#
# ## 2. The Stable Diffusion VAE
#
# DiT never sees pixels (§3.1): a 256×256×3 image is encoded by the SD VAE (`stabilityai/sd-vae-ft-ema`)
# to a 32×32×4 latent (8× downsampling in each direction), which is multiplied by 0.18215 so the diffusion
# sees data of roughly unit variance (lesson 04). At 512×512 the latent is 64×64×4.

# %%
# NBVAL_CHECK_OUTPUT
for resolution in (256, 512):
    config = get_config(f"imagenet{resolution}-DiT-XL/2")
    assert config.image_size == resolution // 8 and config.in_channels == 4
    values = 3 * resolution ** 2, config.in_channels * config.image_size ** 2
    print(f"{resolution}×{resolution}×3 image ({values[0]:,} values) -> {config.image_size}×{config.image_size}×4 "
          f"latent ({values[1]:,} values, {values[0] / values[1]:.0f}× fewer), × {SD_VAE_SCALE_FACTOR}")

# %% [markdown]
# The VAE's weights (335 MB) come from the Hugging Face Hub. `load_sd_vae` looks in the local cache first
# and never waits long for a network it cannot reach. This cell stays offline unless you opt in:

# %%
ALLOW_DOWNLOAD = False                                       # True: fetch the SD VAE (335 MB) if it is not cached
if not ALLOW_DOWNLOAD:
    os.environ["HF_HUB_OFFLINE"] = "1"                       # cache only, in this kernel
try:
    sd_vae = load_sd_vae("stabilityai/sd-vae-ft-ema")
    assert sd_vae.scale_factor == SD_VAE_SCALE_FACTOR
    print(sd_vae)
except VAEWeightsNotFound as err:
    print(f"{type(err).__name__}: {err}")

# %% [markdown]
# ## 3. One training script, many processes: `accelerate`
#
# `ditlib/train.py` is one loop. Run as a plain process it trains on one device; started by
# `accelerate launch`, every process runs the same loop on its share of the batch and the gradients are
# averaged (DDP), or the weights themselves are sharded (FSDP). The global batch stays 256 whatever the
# number of processes: each process draws the random numbers of the whole batch from the shared seed and
# keeps its rows, so 1, 8 or 64 processes train the same model up to float rounding. The commands, from
# `docs/full-scale.md`:
#
# **Eight GPUs, one machine** (DDP; 256 / 8 = 32 images per GPU):
#
# ```bash
# accelerate launch --multi_gpu --num_processes 8 -m ditlib train --config imagenet256-DiT-XL/2 \
#     --data-path /data/imagenet/train --out runs/imagenet256-DiT-XL-2
# ```
#
# `--multi_gpu` selects DDP, `--num_processes 8` starts one process per GPU, `-m ditlib train …` is the
# same command you would run without the launcher. `--data-path` is an ImageNet train folder (one sub-folder
# per class); each batch is VAE-encoded as it is drawn, as in the official script.
#
# **Several nodes** (4 × 8 GPUs); run on every node with its own `--machine_rank`:
#
# ```bash
# accelerate launch --multi_gpu --num_machines 4 --num_processes 32 --machine_rank $NODE_RANK \
#     --main_process_ip $NODE0_ADDRESS --main_process_port 29500 \
#     -m ditlib train --config imagenet256-DiT-XL/2 --data-path /data/imagenet/train --out /shared/runs/xl2-256
# ```
#
# `--num_processes` counts all GPUs of all nodes; node 0's address and port is where the processes meet.
# `--out` must be on a shared filesystem so any node can resume from the newest checkpoint.
#
# **FSDP** (shards weights, gradients, AdamW state and EMA; for bigger models or bigger per-GPU batches):
#
# ```bash
# accelerate launch --use_fsdp --num_processes 8 --fsdp_sharding_strategy FULL_SHARD \
#     -m ditlib train --config imagenet512-DiT-XL/2 --data-path /data/imagenet/train --out runs/xl2-512-fsdp
# ```
#
# **A TPU pod** (the paper's hardware: JAX on TPU v3-256; here PyTorch/XLA). Install ditlib on every host,
# then start the same command on all workers:
#
# ```bash
# gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE --worker=all --command \
#   "cd ~/ditlib && accelerate launch --tpu --main_training_function main -m ditlib.__main__ \
#      train --config imagenet256-DiT-XL/2 --data-path /data/imagenet/train --out /shared/runs/xl2-256-pod"
# ```
#
# `--tpu` selects torch_xla, `--main_training_function main` names the function accelerate's TPU launcher
# calls. None of these was run for this course (no GPUs here); what was run is two CPU processes (below,
# and `tests/test_distributed.py`), which must reproduce a one-process run.
#
# ## 4. The same code in miniature
#
# The `debug` config is a 2-block DiT on Fashion-MNIST pixels. Train a few steps through `train()`, the
# function `python -m ditlib train` calls, in this process. We fix the precision to fp32 so that the two runs
# below can be compared to float rounding: with `precision="auto"` a CPU with native bf16 trains in bf16,
# whose sums come out differently with one thread per process than with two.

# %%
# NBVAL_CHECK_OUTPUT
debug = get_config("debug").replace(precision="fp32")
print(f"debug: {debug.model}, batch {debug.batch_size}, {num_params(DiT(debug.dit_config())):,} params, "
      f"{debug.image_size}×{debug.image_size}×{debug.in_channels} pixels")

# %%
work = Path(tempfile.mkdtemp(prefix="ditlib-lesson11-"))
summary = train(debug, work / "one-process", max_steps=4, progress=False)
losses = [round(entry["loss"], 4) for entry in read_log(work / "one-process")]
assert summary["steps"] == 4 and (work / "one-process" / "final.json").is_file()
print(f"{summary['steps']} steps, final loss {summary['final_loss']:.4f}; logged losses {losses}")
print("written:", sorted(p.name for p in (work / "one-process").iterdir()))

# %% [markdown]
# And the same through the launcher with two CPU processes (gloo instead of NCCL; accelerate 1.x starts
# several CPU processes through torchrun, hence `ACCELERATE_USE_CPU=true` with `--multi_gpu`). Each process
# gets 4 of the 8 images per step, and the result must be the model trained above in one process. This takes
# about 25 s on a busy 2-core machine, so quick mode only prints the command:

# %%
launch = (f"ACCELERATE_USE_CPU=true OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 "
          f"--num_machines 1 --mixed_precision no --dynamo_backend no --main_process_port 29517 "
          f"-m ditlib train --config debug --precision fp32 --max-steps 4 --out {work / 'two-processes'}")
print(launch)
runnable = launch.replace("accelerate launch", f"{sys.executable} -m accelerate.commands.launch")   # this kernel's Python
run_launcher = pick(True, False)                             # quick mode: show the command only
if run_launcher:
    get_ipython().system(f'cd .. && {runnable} 2>&1 | grep -v "it/s" | tail -n 8')   # = `!cd .. && {runnable} ...`
    one, two = (load_checkpoint(work / run / "final")[0] for run in ("one-process", "two-processes"))
    assert all(torch.allclose(one[k], two[k], atol=1e-5) for k in one)
    print(f"1 process and 2 processes give the same weights ({len(one)} tensors, atol 1e-5)")

# %% [markdown]
# ## 5. Loading an official checkpoint
#
# The authors released `DiT-XL-2-256x256.pt` and `DiT-XL-2-512x512.pt` (from the links in the official
# repository's README). They are pickled PyTorch state dicts. `load_official_dit` reads them with
# `torch.load(weights_only=True)`, which accepts tensors and plain containers and refuses anything that
# could run code, infers the config from the tensor shapes, and loads the weights with `strict=True`.
#
# We cannot download 2.7 GB here, so build a file in the same layout: the official key names are
# `ditlib`'s own, so any `DiT`'s `state_dict()` has them. Use DiT-S/8 at 256×256 (33 M parameters):

# %%
official_like = DiT_models["DiT-S/8"](input_size=32, in_channels=4, num_classes=1000)     # random weights
checkpoint = work / "DiT-S-8-256x256.pt"
torch.save(official_like.state_dict(), checkpoint)
state = torch.load(checkpoint, weights_only=True)
print(f"{checkpoint.name}: {len(state)} tensors, e.g.", ", ".join(list(state)[:4]))

# %%
# NBVAL_CHECK_OUTPUT
config = infer_dit_config(state)
print(config)
model = load_official_dit(checkpoint)
assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
print(f"loaded: depth {model.depth}, width {model.hidden_size}, patch {model.patch_size}, "
      f"{model.num_classes} classes + ∅, learn_sigma={model.learn_sigma}")

# %% [markdown]
# Every number came from a shape: the patch size and channels from `x_embedder.proj.weight` (D × C × p × p),
# the input size from the length of `pos_embed`, the classes from the label table (1001 rows: 1000 + the
# null class of lesson 09), learn_sigma from the final layer's 2·p²·C outputs. Only the number of heads has
# no shape; it comes from the registry entry with this depth and width.
#
# A file that holds more than tensors is refused before any of it runs:

# %%
class Payload:                                               # stands in for any object a pickle could build
    pass


torch.save({"weights": torch.zeros(1), "surprise": Payload()}, work / "suspicious.pt")
try:
    load_official_dit(work / "suspicious.pt")
except CheckpointError as err:
    print(f"CheckpointError: {str(err)[:160]}…")

# %% [markdown]
# With the real file, e.g. saved as `checkpoints/DiT-XL-2-256x256.pt`:
#
# ```python
# model = load_official_dit("checkpoints/DiT-XL-2-256x256.pt")          # DiT-XL/2, 675 M parameters
# latents = sample_images(model, labels, num_sampling_steps=250, cfg_scale=4.0, guided_channels=3,
#                         clip_denoised=False)                          # (N, 4, 32, 32)
# images = load_sd_vae("stabilityai/sd-vae-ft-ema").decode(latents)     # (N, 3, 256, 256)
# ```
#
# and for the paper's evaluation, 50,000 samples at scale 1.5 on 8 GPUs:
# `accelerate launch --multi_gpu --num_processes 8 -m ditlib sample-fid --ckpt DiT-XL-2-256x256.pt
# --num-samples 50000 --cfg-scale 1.5 --guided-channels 3 …` (`docs/full-scale.md`). The same weights also
# convert to diffusers' `DiTTransformer2DModel` with `ditlib.interop.to_diffusers`.
#
# ## 6. What it costs (published figures)
#
# None of these was measured here; each is labelled with its source (`docs/full-scale.md`).
#
# | what | setting | figure | source |
# |---|---|---|---|
# | DiT-XL/2 training, 256×256 | TPU v3-256 pod, JAX, batch 256 | ~5.7 iterations/s | paper §4 "Compute" |
# | DiT-XL/2 training, batch 128, one A100 | gradient checkpointing | 0.43 steps/s, 44.0 GB | fast-DiT README |
# | 〃 | + mixed precision + pre-extracted latents | 0.84 steps/s, 27.5 GB | fast-DiT README |
# | DiT-XL/2 forward pass | 256×256 / 512×512 | 118.6 / 524.6 Gflops | paper Table 4 / §5 (512×512 results) |
# | DiT-XL/2, 7M steps, cfg 1.5, 250 DDPM steps | 256×256 | FID-50K 2.27 | paper Table 2 |
#
# What those imply (our arithmetic on the published figures):

# %%
# NBVAL_CHECK_OUTPUT
pod_steps_per_s = 5.7                                        # published: paper §4, TPU v3-256
for steps in (400_000, 7_000_000):
    print(f"{steps:>9,} steps at {pod_steps_per_s} it/s: {steps / pod_steps_per_s / 86_400:5.1f} days of a TPU v3-256 pod")
a100_steps_per_s = 0.84                                      # published: fast-DiT, batch 128, one A100, all speed-ups
print(f"  400,000 steps of batch 256 on one A100 at {a100_steps_per_s} steps/s of batch 128: "
      f"{400_000 * 2 / a100_steps_per_s / 86_400:5.1f} days")

# %% [markdown]
# Two weeks of a pod for the final model; eleven days of a single A100 even for one 400K-step comparison run. That is
# why the paper's scaling study (lesson 10) is out of reach for a course, and why the course's grid uses
# models 100 times smaller on images 64 times smaller.
#
# ## 7. Exercise: will it fit?
#
# The paper trains DiT-XL/2 with a global batch of 256 (§4). What must a GPU hold for that? Two kinds of memory:
#
# - **Static memory**, whatever the batch: for every parameter the fp32 weight, its gradient, AdamW's two moments
#   and the EMA copy, 5 × 4 = 20 bytes; 13.5 GB for XL/2's 675 M parameters. DDP keeps all of it on every GPU;
#   FSDP shards it, so each of N GPUs holds 1/N of it.
# - **Activations**: the intermediate tensors of the forward pass that autograd keeps for the backward pass (the
#   inputs of the linear layers and LayerNorms, q, k and v, the MLP's hidden layer, …). They grow with the number
#   of images a GPU processes, its *per-GPU* batch, and FSDP does not shard them: each GPU keeps the activations
#   of its own images.
#
# **Gradient checkpointing** (`model.gradient_checkpointing = True`, the config field `grad_checkpointing`)
# trades compute for activation memory: each block keeps only its input, and its activations are recomputed
# during the backward pass, one block at a time, at the cost of about one more forward pass.
#
# How many bytes of activations does one training image cost? Measure it: inside
# `torch.autograd.graph.saved_tensors_hooks(pack, unpack)`, autograd calls `pack` on every tensor it saves for
# backward. Count each storage once (views of one tensor share it), leave out the weights (the static memory
# has them) and add up the bytes of one forward pass of the training loss of DiT-XL/2 at 256×256 (a 32×32×4
# latent, 256 tokens), on the CPU.

# %%
def activation_bytes(model, diffusion, batch):
    """Bytes of the tensors autograd saves for backward in one forward pass of the training loss, weights excluded."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}                                                # storage address -> bytes: each storage counted once

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor                                         # autograd keeps the tensor itself, as without the hook

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, model.in_channels, model.input_size, model.input_size, generator=g)    # latents
    t, y = torch.randint(0, 1000, (2, batch), generator=g)    # timesteps and class labels
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        losses = diffusion.training_losses(model, x, t, model_kwargs={"y": y}, noise=torch.randn(x.shape, generator=g))
    assert losses["loss"].requires_grad                       # the graph (and all it saved) is alive while we count
    return sum(saved.values())


# %% [markdown]
# The model is the real one, 675 M parameters, 2.7 GB of memory in fp32; the cell takes 10–30 s on a laptop CPU,
# in quick mode too (the rest of the section needs its number, and a smaller model would give a different one).

# %%
xl2_model = DiT(xl2.dit_config()).train()                     # DiT-XL/2 at 256×256, as imagenet256-DiT-XL/2 trains it
diffusion = create_diffusion("", learn_sigma=xl2.learn_sigma)
per_image, two_images = (activation_bytes(xl2_model, diffusion, batch) for batch in (1, 2))
assert abs(two_images / (2 * per_image) - 1) < 0.02, "activations grow in proportion to the batch"
xl2_model.gradient_checkpointing = True                       # each block keeps only its input
checkpointed = activation_bytes(xl2_model, diffusion, 1)
tokens, width, depth = xl2_model.num_patches, xl2_model.hidden_size, xl2_model.depth
del xl2_model                                                 # give the 2.7 GB back
print(f"DiT-XL/2, 256×256, fp32: {per_image / 1e6:.0f} MB of saved activations per image, "
      f"{two_images / 1e6:.0f} MB for two")
print(f"  = {per_image / (depth * tokens * width * 4):.1f} fp32 vectors of width {width} per token in each of "
      f"{depth} blocks")
print(f"with gradient checkpointing: {checkpointed / 1e6:.0f} MB per image ({per_image / checkpointed:.0f}× less; "
      f"the {depth} block inputs alone are {depth * tokens * width * 4 / 1e6:.0f} MB)")

# %% [markdown]
# About 670 MB per image: some 20 vectors of width 1152 per token in each block (the inputs of the LayerNorms and
# the linear layers, q, k and v, the attention output, the 4608-wide MLP hidden layer before and after the GELU).
# PyTorch's fused attention, like FlashAttention on a GPU, keeps no 256 × 256 attention matrix. Two images cost
# exactly twice one: activations are per image. This figure is for fp32 activations; mixed precision (bf16)
# stores most of them in 2 bytes and roughly halves it. Checkpointing cuts it to about 37 MB, little more than the
# 28 block inputs; during the backward pass one block at a time is recomputed, which adds that block's
# activations (670 / 28 ≈ 24 MB per image) at the peak. A GPU holds more than what autograd saves (the gradients
# flowing backward, temporary buffers, the CUDA context, the allocator's cache), so the count is a lower bound.
#
# Write `max_batch_per_gpu(num_params, activation_bytes_per_image, gpu_gb, num_gpus, fsdp)`: the largest
# per-GPU batch b, an int ≥ 0, with static + b · activation_bytes_per_image ≤ gpu_gb · 10⁹ bytes, where static
# is 20 · num_params bytes under DDP and 20 · num_params / num_gpus under FSDP; 0 when even the static memory
# does not fit.

# %% nbgrader={"grade": false, "grade_id": "max_batch_per_gpu", "locked": false, "schema_version": 3, "solution": true, "task": false}
def max_batch_per_gpu(num_params, activation_bytes_per_image, gpu_gb, num_gpus, fsdp):
    ### BEGIN SOLUTION
    static = num_params * 5 * 4 / (num_gpus if fsdp else 1)   # weights, grads, 2 AdamW moments, EMA; fp32
    free = gpu_gb * 1e9 - static                               # bytes left for the activations
    return max(0, math.floor(free / activation_bytes_per_image))   # activations are per GPU, never sharded
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_max_batch_per_gpu", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# NBVAL_CHECK_OUTPUT
feedback = exercises.check_max_batch_per_gpu(max_batch_per_gpu)
display(feedback)
### BEGIN HIDDEN TESTS
exercises.require(feedback)
assert (max_batch_per_gpu(1_200_000_000, 300_000_000, 24, 4, fsdp=True),
        max_batch_per_gpu(1_200_000_000, 300_000_000, 24, 4, fsdp=False)) == (60, 0), \
    "6 GB static under FSDP leaves 18 GB = 60 images of 0.3 GB; under DDP the 24 GB static fill the GPU"
### END HIDDEN TESTS

# %% [markdown]
# Now the question of this section, with the activations just measured, on 80 GB A100s: does the paper's
# global batch of 256 fit, as 8 GPUs × 32 images or as 256 images on one GPU?

# %%
a100_gb, global_batch = 80, 256
xl2_params = num_params("DiT-XL/2")
print(f"DiT-XL/2 ({xl2_params / 1e6:.0f}M params), {per_image / 1e6:.0f} MB of fp32 activations per image "
      f"({checkpointed / 1e6:.0f} MB checkpointed), {a100_gb} GB GPUs")
print(f"{'GPUs':>4s} {'':4s} {'static/GPU':>10s} {'max batch/GPU':>13s} {'checkpointed':>12s} "
      f"{'256 needs':>9s}  fits?")
for num_gpus in (1, 8):
    for fsdp in (False, True):
        static_gb = 20 * xl2_params / (num_gpus if fsdp else 1) / 1e9
        most = max_batch_per_gpu(xl2_params, per_image, a100_gb, num_gpus, fsdp)
        most_checkpointed = max_batch_per_gpu(xl2_params, checkpointed, a100_gb, num_gpus, fsdp)
        needed = global_batch // num_gpus
        print(f"{num_gpus:4d} {'FSDP' if fsdp else 'DDP':4s} {static_gb:7.1f} GB {most:13d} {most_checkpointed:12d} "
              f"{needed:9d}  {'yes' if most >= needed else 'no'}"
              f"{' (yes checkpointed)' if most < needed <= most_checkpointed else ''}")

# %% [markdown]
# What the table shows: the official setup, 8 GPUs × 32 images under plain DDP, fits with room to spare (about
# 100 images per GPU would). On one GPU the 256 images would need 13.5 + 256 × 0.67 ≈ 184 GB: no, not without
# checkpointing. FSDP buys little here: it shrinks the 13.5 GB static part to 1.7 GB on 8 GPUs (about 18 more
# images per GPU) and nothing on one GPU, because for XL/2 at batch 32 or more the activations, which FSDP does
# not shard, are most of the memory. FSDP pays off for models whose static memory fills the GPU, such as a
# 3-billion-parameter model (60 GB before the first image).
#
# Compare with the published fast-DiT figure of section 6: batch 128 on one A100 at 44.0 GB. That figure is
# *with* gradient checkpointing, measured on a GPU (its peak, with the VAE encoding every batch), so it is not
# directly comparable with our count: it is well above our lower bound (13.5 + 128 × 0.037 ≈ 18 GB), which leaves
# out everything autograd does not save. What our count does say is why fast-DiT needs checkpointing there:
# without it, batch 128 would need at least 13.5 + 128 × 0.67 ≈ 99 GB, more than the GPU has.

# %% [markdown]
# **Try other settings.** The figure below draws a few of the cases above and the widget after it any other. In
# each bar the grey part is the static memory, the blue part the activations (batch × the bytes measured above),
# the red line the GPU's 80 GB; the right panel is one GPU's compute for one step, the forward pass's Gflops ×
# batch × 3 (forward and a backward of about two forwards), × 4 with checkpointing (its recomputed forward). What
# to try: with 1 GPU and batch 256, find which settings bring the bar under the line: bf16 activations alone
# (taken as half the fp32 bytes, the rule of thumb above), checkpointing alone, or both. Under FSDP, compare
# 8 GPUs with 64: only the grey part shrinks, to 1/N of the 13.5 GB, while the blue part stays where it was, so
# the more of the bar the activations are, the less FSDP changes. Checkpointing buys its memory with a third more
# compute per step. Type a sustained Tflop/s into the widget's box to turn the compute into steps per second: that
# is arithmetic (2 flops per multiply-add, nothing for communication, data loading or the VAE), not a measured
# speed; section 6 has measured ones.

# %%
xl2_gflops = gflops("DiT-XL/2")                               # one forward pass of one 256×256 image (Table 4)
widgets.plot_memory(xl2_params, per_image, checkpointed, xl2_gflops, gpu_gb=a100_gb);

# %%
widgets.memory_explorer(xl2_params, per_image, checkpointed, xl2_gflops, gpu_gb=a100_gb, batch=32, num_gpus=8)

# %% [markdown]
# ## Summary
#
# - The paper's models are registered configs: `imagenet256-DiT-{S,B,L,XL}/{2,4,8}` with the §4 recipe;
#   their Gflops reproduce Table 4 and XL/2 has 675 M parameters.
# - The SD VAE maps 256×256×3 to 32×32×4 (48× fewer values), scaled by 0.18215; `load_sd_vae` uses the
#   cache and fails fast offline.
# - `accelerate launch` runs the same training function on 8 GPUs, many nodes, FSDP or a TPU pod; the
#   global batch, and the result, do not depend on the number of processes.
# - Official `.pt` checkpoints load safely (`weights_only`), with the config read from tensor shapes.
# - Published figures put DiT-XL/2's 7M steps at about two weeks of a TPU v3-256 pod.
# - Training memory per GPU = static (20 bytes per parameter, 13.5 GB for XL/2; FSDP shards it) + activations
#   (measured with `saved_tensors_hooks`: about 670 MB per 256×256 image in fp32, per GPU, never sharded). The
#   paper's 8 × 32 fits 80 GB A100s under plain DDP; 256 on one GPU does not fit without gradient
#   checkpointing (37 MB per image), which trades a second forward pass of each block for memory.
#
# **What to read next.** The paper itself (Peebles & Xie, arXiv 2212.09748), now that every section has a
# lesson; the official repository's `train.py` and `sample_ddp.py`, and fast-DiT, for the engineering; and
# Ho & Salimans (classifier-free guidance), Nichol & Dhariwal (learned Σ) and Rombach et al. (latent
# diffusion) for the parts DiT builds on. `docs/full-scale.md` has every command of this lesson with its
# options.
#
# **Next:** back to the [course README](../README.md) for the commands and the capstone, and to
# [docs/results.md](../docs/results.md) for every measured result; the [lesson index](README.md) lists all lessons.
