"""Train the packaged world model ``jpeg-convnet-shapes`` and export it into the package's ``weights/`` folder.

A ``jpeg-convnet`` learns the ten shapes of ``world-shapes`` from the world's labelled source scenes
(``world-da``'s source: 16,384 scenes drawn as world-shapes' own, from another stream), with JPEG augmentation:
in every batch, three images in four go through the real codec at a quality drawn from 40 to 95, so that the
``jpeg`` defense (quality 75) costs the model little clean accuracy (with one in two it cost 5.3 points, with
three in four 2.7). Random horizontal flips; SGD with Nesterov momentum, a one-cycle learning rate, label
smoothing. Deterministic for a seed and a thread count. About 3 minutes on one CPU thread:

    OMP_NUM_THREADS=1 python examples/vlmshield-jpeg/train_world_model.py

It then measures clean accuracy on world-shapes' 1,000 test images, undefended and behind ``jpeg``, and writes
``jpeg-convnet-shapes.safetensors`` (float16) and its card ``jpeg-convnet-shapes.json`` with ``export_packaged``.
It needs vlmshield installed; the plugin is imported from ``src/`` beside this script and registered for the run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))

from vlmshield_jpeg import plugin  # noqa: E402
from vlmshield_jpeg.codec import jpeg  # noqa: E402
from vlmshield_jpeg.network import convnet_classifier  # noqa: E402

from vlmshield.api import dataset, export_packaged, get_host, temporary_host  # noqa: E402

NAME = "jpeg-convnet-shapes"
TRAINING_DATA = "world-da (source scenes, labelled by shape)"
#: The qualities JPEG augmentation draws from (one per batch), and the share of each batch it compresses.
QUALITIES = (40, 95)
JPEG_SHARE = 0.75


def source_scenes() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The world's labelled source scenes (the shapes of world-shapes, drawn apart from its test set)."""
    source = dataset("world-da", split="train").source
    images, labels = zip(*(source[i] for i in range(len(source))), strict=True)
    return torch.stack(images), torch.as_tensor(labels), list(source.classnames)


def augment(images: torch.Tensor, generator: torch.Generator, share: float = JPEG_SHARE) -> torch.Tensor:
    """Random horizontal flips, then JPEG at one random quality on the first ``share`` of the batch."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    quality = int(torch.randint(QUALITIES[0], QUALITIES[1] + 1, (1,), generator=generator))
    cut = round(len(images) * share)
    return torch.cat([jpeg(images[:cut], quality), images[cut:]])


def learning_rate(step: int, steps: int, peak: float) -> float:
    """One cycle: linear warm-up over the first 15% of the steps, then a cosine to zero."""
    warmup = max(1, int(0.15 * steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    return sum((model(images[i:i + 500]).argmax(1) == labels[i:i + 500]).sum().item()
               for i in range(0, len(images), 500)) / len(images)


def train(steps: int, batch_size: int, lr: float, width: int, seed: int, share: float = JPEG_SHARE, log=print):
    """The trained classifier, in eval mode."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels, classnames = source_scenes()
    classifier = convnet_classifier(classnames, width=width, name=NAME)
    parameters = [p for p in classifier.parameters() if p.requires_grad]
    decay = [p for p in parameters if p.ndim > 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                                 {"params": [p for p in parameters if p.ndim <= 1], "weight_decay": 0.0}],
                                lr=lr, momentum=0.9, nesterov=True)
    classifier.train()
    order = torch.randperm(len(images), generator=generator)
    position = 0
    for step in range(steps):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(images), generator=generator), 0
        batch = order[position:position + batch_size]
        position += batch_size
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr)
        logits = classifier(augment(images[batch], generator, share))
        loss = F.cross_entropy(logits, labels[batch], label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step:5d}  loss {loss.item():.4f}  lr {optimizer.param_groups[0]['lr']:.4f}")
    return classifier.eval()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--jpeg-share", type=float, default=JPEG_SHARE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "src" / "vlmshield_jpeg" / "weights")
    args = parser.parse_args(argv)

    with temporary_host(plugin):  # the architecture must be registered to export a classifier naming it
        start = time.perf_counter()
        classifier = train(args.steps, args.batch_size, args.lr, args.width, args.seed, args.jpeg_share)
        train_time = time.perf_counter() - start
        test = dataset("world-shapes")
        images, labels = (torch.stack(part) for part in zip(*(test[i] for i in range(len(test))), strict=True))
        half = classifier.half().float()  # measured as shipped: float16 weights
        clean = accuracy(half, images, labels)
        defended = accuracy(get_host().create("defense", "jpeg").wrap(half), images, labels)
        print(f"world-shapes, {len(images)} images: clean {100 * clean:.1f}%, behind jpeg (quality 75) "
              f"{100 * defended:.1f}%; trained in {train_time:.0f} s")
        command = (f"OMP_NUM_THREADS=1 python examples/vlmshield-jpeg/train_world_model.py --steps {args.steps} "
                   f"--batch-size {args.batch_size} --lr {args.lr} --width {args.width} --jpeg-share {args.jpeg_share} "
                   f"--seed {args.seed}")
        card = export_packaged(classifier, NAME, args.out, {
            "arch": "jpeg-convnet",
            "method": "none",
            "paper": "Guo et al., Countering Adversarial Images using Input Transformations (ICLR 2018)",
            "description": (f"A small CNN for world-shapes, trained with JPEG augmentation so that the jpeg defense "
                            f"costs it little: {100 * clean:.1f}% clean, {100 * defended:.1f}% behind jpeg at "
                            f"quality 75 (1,000 test images). Not adversarially trained."),
            "threat_model": {},
            "training_data": TRAINING_DATA,
            "command": command,
            "training": {
                "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "width": args.width,
                "seed": args.seed, "optimizer": "sgd, nesterov momentum 0.9, weight decay 5e-4 (not on biases, norms)",
                "schedule": "15% linear warm-up, then cosine to 0", "label_smoothing": 0.1,
                "augmentation": f"horizontal flips; JPEG at one quality from {QUALITIES[0]} to {QUALITIES[1]} "
                                f"on {args.jpeg_share:.0%} of each batch"},
            "train_time_s": round(train_time, 1),
            "world_shapes_accuracy": {"clean": clean, "jpeg-75": defended, "n": len(images)},
        })
        print(f"wrote {args.out / card['file']} ({(args.out / card['file']).stat().st_size:,} bytes, sha256 "
              f"{card['sha256'][:12]}...) and {card['name']}.json")


if __name__ == "__main__":
    main()
