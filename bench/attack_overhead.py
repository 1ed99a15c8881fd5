"""What does vlmshield's PGD cost beyond the model itself, and how does it compare with torchattacks?

Setting: open_clip ViT-B-32 with random weights, a 10-class zero-shot head, a batch of 8 images at
224 px, on the CPU (or --device). Three timings, each the median of --repeats runs after a warm-up:

- bare: ten forward passes of the image encoder and ten backward passes to the input (parameters
  frozen), i.e. the least work any 10-step gradient attack has to do;
- vlmshield: ``vs.attack("pgd", steps=10)`` on the zero-shot classifier;
- torchattacks: ``torchattacks.PGD(classifier, eps, alpha, steps=10)`` on the same classifier and inputs.

Goals (issue 2): vlmshield / bare <= 1.10, and vlmshield no slower than torchattacks.

    python bench/attack_overhead.py [--device cpu] [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import vlmshield as vs


def timed(function, repeats: int, device: torch.device) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    vlm = vs.VLM.from_open_clip(args.arch, device=device).eval()
    classifier = vlm.zero_shot([f"class {i}" for i in range(10)])
    size = vlm.image_size
    x = torch.rand(args.batch, 3, *size, device=device)
    with torch.no_grad():
        y = classifier(x).argmax(dim=1)
    eps, alpha = 4 / 255, 1 / 255
    for p in vlm.parameters():
        p.requires_grad_(False)
    encoder = vlm.model.visual

    def bare():
        for _ in range(args.steps):
            inputs = x.detach().requires_grad_(True)
            features = encoder((inputs - vlm.pixel_mean) / vlm.pixel_std)
            torch.autograd.grad(features.sum(), inputs)

    ours = vs.attack("pgd", eps=eps, alpha=alpha, steps=args.steps)
    results = {"bare": timed(bare, args.repeats, device),
               "vlmshield": timed(lambda: ours(classifier, x, y), args.repeats, device)}
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    if torchattacks is not None:
        theirs = torchattacks.PGD(classifier, eps=eps, alpha=alpha, steps=args.steps, random_start=True)
        results["torchattacks"] = timed(lambda: theirs(x, y), args.repeats, device)

    print(f"{args.arch}, random weights, batch {args.batch} at {size[0]} px, {args.steps} steps, "
          f"device {device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, seconds in results.items():
        print(f"  {name:<13} {seconds:8.3f} s")
    print(f"vlmshield PGD / bare forward+backward: {results['vlmshield'] / results['bare']:.3f}  (goal <= 1.10)")
    if "torchattacks" in results:
        ratio = results["vlmshield"] / results["torchattacks"]
        print(f"vlmshield PGD / torchattacks PGD:      {ratio:.3f}  (goal <= 1.00)")
    else:
        print("torchattacks is not installed (pip install torchattacks, or the bench extra)")


if __name__ == "__main__":
    main()
