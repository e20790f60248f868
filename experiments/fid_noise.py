"""How much of an FID difference is sampling noise: re-measure finished runs with other sampling seeds.

Every evaluation of the experiments samples with seed 0 (the same noise for every model and step). Here
the final EMA weights of the given runs are sampled again with seeds 1..K, everything else equal, and
the spread is written to <out>/fid_noise.json, with the real-vs-real floor at the same N (training
images against the same reference: the FID of a perfect model at this sample count).

    nice -n 10 python experiments/fid_noise.py --runs DiT-T-2_adaLN-Zero DiT-T-2_in-context --seeds 3
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import torch

from common import DEFAULT_OUT, DEFAULT_WORK, RUNS_DIR, FIDEvaluator, Settings, command_line, write_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run names, as in <out>/runs/<run>.json")
    parser.add_argument("--seeds", type=int, default=3, help="extra sampling seeds 1..K (default 3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ditlib.data import FashionMNIST

    result = {"command": command_line(), "torch": torch.__version__, "runs": {}}
    settings = None
    for run in args.runs:
        record = json.loads((args.out / RUNS_DIR / f"{run}.json").read_text())
        if not record["complete"]:
            raise SystemExit(f"{run} is not complete")
        run_settings = Settings(**record["settings"])
        if settings is None:
            settings = run_settings
            evaluator = FIDEvaluator(settings)
        elif run_settings != settings:
            raise SystemExit(f"{run} was measured with other settings than {args.runs[0]}")
        fids = [record["evals"][-1]["fid"]]
        for seed in range(1, args.seeds + 1):
            evaluator.settings = dataclasses.replace(settings, seed=seed)
            fids.append(evaluator(args.work / run / "final"))
            print(f"{run}: seed {seed}: FID {fids[-1]:.2f}", flush=True)
        result["runs"][run] = {"step": record["evals"][-1]["step"], "fid_by_seed": fids,
                               "mean": statistics.mean(fids), "std": statistics.stdev(fids)}
    evaluator.settings = settings
    train = FashionMNIST("train").images                                        # uint8 (N, 1, 32, 32)
    pick = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(0))[:settings.fid_samples]
    result["real_vs_real_floor"] = evaluator.fid(train[pick].permute(0, 2, 3, 1))
    result["settings"] = settings.to_dict()
    write_json(args.out / "fid_noise.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
