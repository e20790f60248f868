#!/usr/bin/env bash
# GPU check for ditlib's DiT: training steps/s and peak memory (batch 32 and 128, bf16 autocast, gradient
# checkpointing off/on, cached latents) and guided 250-step DDPM sampling images/s (extrapolated from a few
# timed steps), for DiT-XL/2 and DiT-B/2 at ImageNet-256 latent size. See benchmarks/gpu_check.py.
#
# Run from anywhere, on a machine with a CUDA GPU:
#
#     bash benchmarks/gpu_check.sh                          # defaults, ends within 8 minutes
#     bash benchmarks/gpu_check.sh --models DiT-B/2 --steps 10
#     OUT=/some/dir bash benchmarks/gpu_check.sh            # JSON goes to $OUT/gpu_check.json
#
# It prints the GPU name, torch and CUDA versions and the exact command, a table (model, batch,
# grad-checkpointing, steps/s, img/s, peak memory GiB; then the sampling rows), and the published fast-DiT
# figure for DiT-XL/2 batch 128 beside the measured row, labelled as published. All results go to
# ${OUT:-runs}/gpu_check.json (a --json given on the command line wins). Extra arguments are passed on to
# gpu_check.py. The run is cut at 480 s (`timeout`); gpu_check.py's own budget (--max-seconds, default
# 420) skips rows before that, and the JSON is rewritten after every row.
#
# Without CUDA it exits 2, unless GPU_CHECK_ALLOW_CPU=1 (for the CPU smoke test, with --device cpu).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if [[ "${GPU_CHECK_ALLOW_CPU:-0}" != "1" ]]; then
        echo "gpu_check: CUDA is not available on this machine (torch.cuda.is_available() is False)." >&2
        echo "gpu_check: this check needs a CUDA GPU; set GPU_CHECK_ALLOW_CPU=1 and pass --device cpu for a smoke run." >&2
        exit 2
    fi
    echo "gpu_check: no CUDA; running anyway because GPU_CHECK_ALLOW_CPU=1" >&2
fi

OUT_DIR="${OUT:-runs}"
mkdir -p "$OUT_DIR"
GPU_CHECK_COMMAND="bash benchmarks/gpu_check.sh"
if [[ $# -gt 0 ]]; then
    GPU_CHECK_COMMAND+="$(printf ' %q' "$@")"
fi
export GPU_CHECK_COMMAND

rc=0
timeout -k 15 480 "$PY" benchmarks/gpu_check.py --json "$OUT_DIR/gpu_check.json" "$@" || rc=$?
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    echo "gpu_check: stopped by the 480 s timeout; finished rows are in the JSON file" >&2
fi
exit "$rc"
