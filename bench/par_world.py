"""Plant a backdoor in the world's clip-tinyvit4, then remove it with PAR (plugin vlmshield-par).

Poisoning: the contrastive trainer on the first 32,768 pairs of world-pretrain (held in memory; the world
draws its pairs a chunk at a time, so shuffled reads of the whole split would redraw a chunk per pair), a share
``--rate`` of them carrying the trigger and a caption naming ``star``. Cleaning: PAR on the next 32,768 pairs,
none of which the poisoning saw. Each model is measured by its mean clean zero-shot accuracy over the world's
five tasks and its attack success rate on world-shapes (triggered images whose label is not star, classified
star), ``--n`` images per task.

    python bench/par_world.py --trigger badnet-stripes
"""

from __future__ import annotations

import argparse
import time

import vlmshield as vs
from vlmshield.api import CaptionedImages, ContrastiveFineTuning, Stage, TrainConfig, temporary_host
from vlmshield.testing import make_plugin

PAIRS = 32768


class Poisoning(ContrastiveFineTuning):
    """CLIP's loss on the (poisoned) pairs: the poisoned model's training."""

    name = "poisoning"


def pairs(start: int) -> CaptionedImages:
    full = vs.dataset("world-pretrain", split="train")
    return CaptionedImages([full[i] for i in range(start, start + PAIRS)], name=f"world-pretrain-{start}")


def measure(vlm, trigger: str, n: int) -> str:
    clean = vs.evaluate(vlm, "world", n=n, progress=False)["average"]["clean_acc"]
    asr = vs.evaluate(vlm, "world-shapes", evaluator="asr", attack=trigger, attack_params={"target": "star"}, n=n,
                      progress=False)["average"]["asr"]
    return f"clean {100 * clean:.1f}, ASR {100 * asr:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trigger", default="badnet-stripes")
    parser.add_argument("--rate", type=float, default=0.03)
    parser.add_argument("--poison-lr", type=float, default=2e-4)
    parser.add_argument("--poison-steps", type=int, default=600)
    parser.add_argument("--tau", type=float, default=2.15)
    parser.add_argument("--par-lr", type=float, default=3e-5, help="the peak; the run starts at 10 times it")
    parser.add_argument("--par-steps", type=int, default=400)
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    from vlmshield_par import PAR, plugin

    with temporary_host(plugin, make_plugin("bench", register_defenses=lambda register: register(Poisoning))):
        vlm = vs.zoo.load("clip-tinyvit4")
        print(f"clip-tinyvit4: {measure(vlm, args.trigger, args.n)}")
        clock = time.perf_counter()
        config = TrainConfig(stages=(Stage("poison", steps=args.poison_steps, lr=args.poison_lr, warmup=20,
                                           weight_decay=0.1),), batch_size=128, checkpoint_every=10**6,
                             log_every=10**6, betas=(0.9, 0.98))
        Poisoning().fit(vlm, pairs(0), config, progress=False,
                        trainer_params={"trigger": args.trigger, "target": "star", "rate": args.rate})
        print(f"poisoned ({args.trigger}, rate {args.rate}, {time.perf_counter() - clock:.0f} s): "
              f"{measure(vlm, args.trigger, args.n)}")
        clock, half = time.perf_counter(), args.par_steps // 2
        config = TrainConfig(stages=(
            Stage("perturb", steps=half, lr=args.par_lr, lr_start=10 * args.par_lr, warmup=0, weight_decay=1e-4),
            Stage("recover", steps=args.par_steps - half, lr=args.par_lr, lr_end=args.par_lr / 1000, warmup=0,
                  weight_decay=1e-4)), batch_size=128, checkpoint_every=10**6, log_every=10**6, betas=(0.9, 0.98))
        PAR(tau=args.tau).fit(vlm, pairs(2 * PAIRS), config, progress=False)
        print(f"PAR (tau {args.tau}, {time.perf_counter() - clock:.0f} s): {measure(vlm, args.trigger, args.n)}")


if __name__ == "__main__":
    main()
