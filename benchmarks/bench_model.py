"""Speed of ditlib's DiT against diffusers' `DiTTransformer2DModel` of the same size, in one run.

Two measurements, each in float32 and in bfloat16 autocast (`torch.autocast("cpu", dtype=torch.bfloat16)`):

1. training throughput (img/s): forward + MSE against a fixed random target + backward + AdamW step;
2. sampling throughput (forward passes/s): one forward pass of a whole batch under `torch.no_grad()`,
   which is what every step of a DDPM/DDIM sampling loop costs.

Both models see the same random batch, the same threads and the same loss. All rows are warmed up
first; then each timed round runs every row once, the two models back to back in alternating order
(ditlib, diffusers, then diffusers, ditlib, ...), so that the noise of a shared machine hits both models
alike. Each row reports the median over rounds and the ratio ditlib/diffusers (> 1 means ditlib is
faster); `--max-seconds` ends the rounds early on a slow machine. This is a measurement, not a test: it prints ratios and asserts nothing.

    .venv/bin/python benchmarks/bench_model.py                    # DiT-T/4 on 32×32×1, batch 64
    .venv/bin/python benchmarks/bench_model.py --compile          # plus torch.compile sampling rows
    .venv/bin/python benchmarks/bench_model.py --quick            # smoke run, a few seconds
    .venv/bin/python benchmarks/bench_model.py --model DiT-S/4 --json runs/bench_model.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from ditlib.configs import DEFAULT_CONFIG, get_config  # noqa: E402
from ditlib.doctor import build_steps, matmul_peak_gflops, train_gflops_per_s  # noqa: E402
from ditlib.flops import gflops  # noqa: E402
from ditlib.interop import to_diffusers  # noqa: E402
from ditlib.models import DiT_models, build_model  # noqa: E402
from ditlib.runtime import cpu_bf16_probe, hardware_summary  # noqa: E402

COMPILE_LIMIT_S = 60.0
"""A compiled row is dropped when its first call (the compilation) takes longer than this."""


#################################################################################
#                        The two models, built the same size                    #
#################################################################################

def build_ditlib(name: str, input_size: int, in_channels: int, num_classes: int, learn_sigma: bool):
    torch.manual_seed(0)
    return build_model(name, input_size=input_size, in_channels=in_channels, num_classes=num_classes,
                       learn_sigma=learn_sigma)


def build_diffusers(model):
    """diffusers' `DiTTransformer2DModel` of the same size holding the same weights (`ditlib.interop.to_diffusers`)."""
    return to_diffusers(model)


def parameter_counts(ditlib_model, diffusers_model) -> dict:
    """Trainable parameters of both models, in total and without the (t, y) conditioning embedders.

    ditlib follows the official DiT: one timestep MLP and one label table shared by all blocks.
    diffusers gives every block its own copy (`transformer_blocks[i].norm1.emb`) and uses block 0's
    for the final layer, so it has (depth - 1) extra copies. Without the embedders the counts agree.
    """
    def trainable(named, skip):
        return sum(p.numel() for n, p in named if p.requires_grad and not any(s in n for s in skip))

    ours = list(ditlib_model.named_parameters())
    theirs = list(diffusers_model.named_parameters())
    return {
        "ditlib": trainable(ours, ()),
        "diffusers": trainable(theirs, ()),
        "ditlib_without_embedders": trainable(ours, ("t_embedder.", "y_embedder.")),
        "diffusers_without_embedders": trainable(theirs, (".norm1.emb.",)),
    }


def forward_fn(model):
    """A uniform `f(x, t, y) -> output tensor` for either model."""
    if hasattr(model, "forward_with_cfg"):                                     # ditlib
        return lambda x, t, y: model(x, t, y)
    return lambda x, t, y: model(x, timestep=t, class_labels=y, return_dict=False)[0]


#################################################################################
#                          One iteration of each workload                       #
#################################################################################

class Workload:
    """One model on one job (train or sample) in one precision; `step()` runs one iteration."""

    def __init__(self, model, job: str, bf16: bool, batch: dict, compile_: bool = False):
        self.model, self.job, self.bf16, self.batch = model, job, bf16, batch
        fn = forward_fn(model)
        self.forward = torch.compile(fn, dynamic=False) if compile_ else fn
        if job == "train":
            model.train()
            self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
        else:
            model.eval()

    def step(self) -> None:
        x, t, y = self.batch["x"], self.batch["t"], self.batch["y"]
        if self.job == "train":
            self.model.train()
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                out = self.forward(x, t, y)                                    # (N, C_out, I, I)
            loss = F.mse_loss(out.float(), self.batch["target"])
            loss.backward()
            self.optimizer.step()
        else:
            self.model.eval()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                self.forward(x, t, y)

    def timed(self, iterations: int) -> float:
        """Seconds for `iterations` steps."""
        start = time.perf_counter()
        for _ in range(iterations):
            self.step()
        return time.perf_counter() - start


#################################################################################
#                                  The benchmark                                #
#################################################################################

def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import diffusers
    return {"hardware": hardware_summary("cpu"), "bf16_probe": cpu_bf16_probe(), "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu": cpu,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def run(args) -> dict:
    ditlib_model = build_ditlib(args.model, args.input_size, args.in_channels, args.num_classes, args.learn_sigma)
    diffusers_model = build_diffusers(ditlib_model)
    models = {"ditlib": ditlib_model, "diffusers": diffusers_model}

    g = torch.Generator().manual_seed(0)
    n, c, i = args.batch, args.in_channels, args.input_size
    batch = {
        "x": torch.randn(n, c, i, i, generator=g),
        "t": torch.randint(0, 1000, (n,), generator=g),
        "y": torch.randint(0, args.num_classes, (n,), generator=g),
        "target": torch.randn(n, ditlib_model.out_channels, i, i, generator=g),
    }

    rows = []  # (label, job, bf16, compiled)
    for job in ("train", "sample"):
        for dtype in args.dtypes:
            rows.append((f"{job} {dtype}", job, dtype == "bf16", False))
    if args.compile:
        for dtype in args.dtypes:
            rows.append((f"sample {dtype} compiled", "sample", dtype == "bf16", True))

    # Warm up every (row, model) first: compile, allocate AdamW state, and pick an iteration count that
    # is the same for both models and long enough for the slower one to fill `--seconds`.
    prepared, skipped = [], {}
    for label, job, bf16, compiled in rows:
        print(f"[{label}] warming up ...", file=sys.stderr, flush=True)
        workloads, iterations = {}, 1
        for name, model in models.items():
            w = Workload(model, job, bf16, batch, compile_=compiled)
            first = w.timed(1)                                                 # compiles, allocates AdamW state
            if compiled and first > COMPILE_LIMIT_S:
                skipped[label] = f"{name} compile took {first:.0f} s > {COMPILE_LIMIT_S:.0f} s"
                break
            per_iter = w.timed(max(args.warmup, 1)) / max(args.warmup, 1)
            iterations = max(iterations, round(args.seconds / per_iter))
            workloads[name] = w
        if label not in skipped:
            prepared.append((label, job, workloads, iterations))

    # Timed rounds: every round times every row, both models back to back in alternating order, so a slow
    # moment of a shared machine hits both models (and all rows) alike. Stop early past the time budget.
    rates = {label: {name: [] for name in models} for label, *_ in prepared}
    started, rounds = time.perf_counter(), 0
    for r in range(args.repeats):
        for label, job, workloads, iterations in prepared:
            order = list(models) if r % 2 == 0 else list(models)[::-1]
            for name in order:
                per_second = iterations / workloads[name].timed(iterations)
                rates[label][name].append(per_second * args.batch if job == "train" else per_second)
        rounds += 1
        elapsed = time.perf_counter() - started
        print(f"round {rounds}/{args.repeats} done ({elapsed:.0f} s)", file=sys.stderr, flush=True)
        if elapsed > args.max_seconds and rounds < args.repeats:
            print(f"time budget of {args.max_seconds:.0f} s spent: stopping after {rounds} rounds", file=sys.stderr)
            break

    results = []
    for label, *_ in rows:
        if label in skipped:
            results.append({"row": label, "skipped": skipped[label]})
            continue
        job, iterations = next((j, it) for lab, j, _, it in prepared if lab == label)
        samples = rates[label]
        paired = [a / b for a, b in zip(samples["ditlib"], samples["diffusers"])]
        med = {name: statistics.median(v) for name, v in samples.items()}
        results.append({
            "row": label, "unit": "img/s" if job == "train" else "passes/s", "iterations": iterations,
            "ditlib": med["ditlib"], "diffusers": med["diffusers"], "ratio": med["ditlib"] / med["diffusers"],
            "paired_ratio_min": min(paired), "paired_ratio_max": max(paired), "samples": samples,
        })

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["benchmarks/bench_model.py"] + sys.argv[1:]),
            "machine": machine(), "config": vars(args), "rounds": rounds, "gflops_per_forward": gflops(ditlib_model), "params": parameter_counts(ditlib_model, diffusers_model),
            "results": results}


#################################################################################
#        ditlib's own training step, its speed-ups, and the machine's peak      #
#################################################################################

STEP_VARIANTS = (  # (label, compile, fused AdamW): what `python -m ditlib train` can run
    ("step eager, foreach AdamW", False, False),
    ("step eager, fused AdamW", False, True),
    ("step compiled, fused AdamW", True, True),           # the default for runs of >= 1000 steps
)


def run_step_variants(args) -> dict:
    """ditlib's real training step (hybrid loss, AdamW, EMA) in each variant and precision, and the fp32
    matmul peak, measured in interleaved rounds; GFLOP/s by the paper's count (×2 multiply-adds, ×3 fwd+bwd)."""
    config = get_config(DEFAULT_CONFIG).replace(
        model=args.model, image_size=args.input_size, in_channels=args.in_channels, num_classes=args.num_classes,
        learn_sigma=args.learn_sigma, batch_size=args.batch)
    variants = [(label, compiled, fused) for label, compiled, fused in STEP_VARIANTS
                if args.compile_step or not compiled]
    prepared = []
    for dtype in args.dtypes:
        for label, compiled, fused in variants:
            name = f"{label}, {dtype}"
            print(f"[{name}] warming up ...", file=sys.stderr, flush=True)
            step, _, info = build_steps(config, dtype, device="cpu", compile=compiled, fused_adamw=fused)
            start = time.perf_counter()
            step()                                                             # compiles, allocates AdamW state
            first = time.perf_counter() - start
            for _ in range(max(args.warmup, 1)):
                step()
            per_iter = (time.perf_counter() - start - first) / max(args.warmup, 1)
            prepared.append((name, step, max(1, round(args.seconds / per_iter)), first, info))
    peaks, rates = [], {name: [] for name, *_ in prepared}
    started = time.perf_counter()
    for r in range(args.repeats):
        peaks.append(matmul_peak_gflops(torch.float32, seconds=max(0.2, args.seconds / 2)))
        for name, step, iterations, *_ in (prepared if r % 2 == 0 else prepared[::-1]):
            begin = time.perf_counter()
            for _ in range(iterations):
                step()
            rates[name].append(iterations * args.batch / (time.perf_counter() - begin))
        if time.perf_counter() - started > args.max_seconds:
            break
    peak = statistics.median(peaks)
    rows = []
    for name, _, iterations, first, info in prepared:
        img_s = statistics.median(rates[name])
        achieved = train_gflops_per_s(img_s, info["gflops_per_forward"])
        rows.append({"row": name, "img_per_s": img_s, "gflops_per_s": achieved, "pct_of_fp32_peak": 100 * achieved / peak,
                     "first_call_s": first, "iterations": iterations, "samples": rates[name]})
    return {"fp32_matmul_peak_gflops": peak, "peak_samples": peaks, "gflops_per_forward": prepared[0][4]["gflops_per_forward"]
            if prepared else None, "rows": rows}


def print_steps(steps: dict, batch: int) -> None:
    print(f"\nditlib's training step (hybrid loss + backward + AdamW + EMA, batch {batch}); fp32 matmul peak "
          f"{steps['fp32_matmul_peak_gflops']:.0f} GFLOP/s (2048² matmul, median of the rounds); "
          f"{steps['gflops_per_forward']:.4f} Gflops/forward × 2 × 3 per image")
    header = f"{'row':<34} {'img/s':>8} {'GFLOP/s':>8} {'% of peak':>9} {'first call':>10}"
    print(header)
    print("-" * len(header))
    base = steps["rows"][0]["img_per_s"] if steps["rows"] else 1.0
    for r in steps["rows"]:
        print(f"{r['row']:<34} {r['img_per_s']:>8.1f} {r['gflops_per_s']:>8.0f} {r['pct_of_fp32_peak']:>8.0f}% "
              f"{r['first_call_s']:>9.1f}s   ×{r['img_per_s'] / base:.2f}")


def print_report(report: dict) -> None:
    m, cfg, p = report["machine"], report["config"], report["params"]
    print(f"\nhardware: {m['hardware']}")
    print(f"machine: {m['cpu']} ({m['cpu_count']} cores, capability {m['cpu_capability']}); "
          f"torch {m['torch']}, {m['threads']} threads; diffusers {m['diffusers']}")
    print(f"model:   {cfg['model']}, input {cfg['input_size']}×{cfg['input_size']}×{cfg['in_channels']}, "
          f"{cfg['num_classes']} classes, learn_sigma={cfg['learn_sigma']}; batch {cfg['batch']}, "
          f"{report['rounds']} interleaved rounds (median)")
    extra = p["diffusers"] - p["ditlib"]
    print(f"params:  ditlib {p['ditlib']:,}, diffusers {p['diffusers']:,} (diffusers +{extra:,}: a timestep MLP "
          f"and label table per block instead of one shared); without those embedders "
          f"{p['ditlib_without_embedders']:,} vs {p['diffusers_without_embedders']:,}\n")
    peak = report.get("steps", {}).get("fp32_matmul_peak_gflops")
    header = (f"{'row':<22} {'unit':<9} {'ditlib':>9} {'diffusers':>10} {'ditlib/diffusers':>17} {'paired range':>14}"
              f" {'ditlib % fp32 peak':>19}")
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        if "skipped" in r:
            print(f"{r['row']:<22} skipped: {r['skipped']}")
            continue
        spread = f"{r['paired_ratio_min']:.2f}–{r['paired_ratio_max']:.2f}"
        pct = (f"{100 * train_gflops_per_s(r['ditlib'], report['gflops_per_forward']) / peak:>18.0f}%"
               if peak and r["unit"] == "img/s" else f"{'':>19}")
        print(f"{r['row']:<22} {r['unit']:<9} {r['ditlib']:>9.2f} {r['diffusers']:>10.2f} {r['ratio']:>17.2f} {spread:>14} {pct}")
    print("(train rows here: forward + MSE against a fixed target + backward + AdamW, the same workload for both models)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="DiT-T/4", choices=list(DiT_models), help="registry key of the ditlib config")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--no-learn-sigma", dest="learn_sigma", action="store_false")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timed rounds over all rows (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per model and row")
    parser.add_argument("--seconds", type=float, default=1.5, help="target length of one timed repeat")
    parser.add_argument("--max-seconds", type=float, default=240.0,
                        help="stop the timed rounds early once they have taken this long (warm-up not counted)")
    parser.add_argument("--dtypes", default="auto",
                        help="comma-separated subset of fp32,bf16; 'auto' (default): fp32, plus bf16 where it is native")
    parser.add_argument("--no-compile-step", dest="compile_step", action="store_false",
                        help="leave out the compiled training-step row (compiling takes 20–30 s the first time)")
    parser.add_argument("--no-compare", dest="compare", action="store_false",
                        help="only ditlib's training-step rows, not the comparison with diffusers")
    parser.add_argument("--compile", action="store_true",
                        help=f"add torch.compile sampling rows (dropped if compiling takes > {COMPILE_LIMIT_S:.0f} s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 1 warmup, ~1 iteration")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.dtypes == "auto":
        args.dtypes = "fp32,bf16" if cpu_bf16_probe()["native"] else "fp32"
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not set(args.dtypes) <= {"fp32", "bf16"} or not args.dtypes:
        parser.error("--dtypes must be a comma-separated subset of fp32,bf16")
    if args.quick:
        args.repeats, args.warmup, args.seconds = 1, 1, 0.0
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    report = run(args) if args.compare else {"machine": machine(), "command": " ".join(["benchmarks/bench_model.py"] + sys.argv[1:])}
    report["steps"] = run_step_variants(args)
    if args.compare:
        print_report(report)
    else:
        print(f"\nhardware: {report['machine']['hardware']}")
    print_steps(report["steps"], args.batch)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
