"""How long does the world's pretraining recipe take? Goal (issue 3): about ten minutes per model on 2 cores.

For each architecture, runs the first steps of its shipped recipe (the same batches, rates and model as
``vlmshield world pretrain ARCH``) and prints the seconds per step, measured between step --warmup and
step --warmup + --steps, and the whole recipe's time at that rate. Run it alone: another CPU-bound job
beside it slows it down.

    python bench/world_pretrain.py [--archs tinyvit8,tinyvit4,tinyrn] [--steps 30] [--warmup 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from vlmshield.world.models import ARCHS
from vlmshield.world.pretrain import pretrain, recipe_for


def seconds_per_step(arch: str, steps: int, warmup: int) -> float:
    def run(count: int) -> float:
        start = time.perf_counter()
        pretrain(arch, stop_after=count, progress=False)
        return time.perf_counter() - start

    return (run(warmup + steps) - run(warmup)) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"world pretraining recipe, {args.threads} thread(s), {args.steps} timed steps after {args.warmup}")
    print("| model | s per step | recipe steps | recipe time (min) |")
    print("|---|---|---|---|")
    for arch in args.archs.split(","):
        recipe = recipe_for(arch)
        rate = seconds_per_step(arch, args.steps, args.warmup)
        print(f"| clip-{arch} | {rate:.3f} | {recipe.steps} | {rate * recipe.steps / 60:.1f} |", flush=True)


if __name__ == "__main__":
    main()
