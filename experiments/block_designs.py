"""Figure 5 of Peebles & Xie at CPU scale: the four DiT block designs of §3.2, FID against training steps.

The same model size (DiT-T/2: 6 blocks, width 192, 16 tokens of the 8×8×4 Fashion-MNIST latents), the
same data, optimiser and steps; only the way (t, y) enters the blocks changes: in-context tokens,
cross-attention, adaLN, adaLN-Zero. FID-FMNIST of the EMA weights every `--eval-every` steps.

    nice -n 10 python experiments/block_designs.py                     # all four designs (defaults below)
    python experiments/block_designs.py --only adaLN                   # one design, e.g. to re-check a number
    python experiments/plot.py                                         # redraw the figures from the JSONs

Writes experiments/results/block_designs.json, runs/<run>.json and block_designs.png (see common.py).
"""
from __future__ import annotations

import argparse
import sys

from common import add_arguments, command_line, run_experiment

from ditlib.models import BLOCK_DESIGNS, DiT_models

EXPERIMENT = "block_designs"


def cells(model: str) -> dict[str, tuple[str, str]]:
    """{design: (model, design)}, in the paper's order."""
    return {design: (model, design) for design in BLOCK_DESIGNS}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="DiT-T/2", choices=list(DiT_models), help="model size/patch (default DiT-T/2)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_experiment(EXPERIMENT, "Figure 5 (FID vs training steps per block design)", cells(args.model), args,
                          command_line(__file__, sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
