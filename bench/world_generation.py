"""How fast does the world generate its data? Goal (issue 3): more than 5,000 images per second on one core.

Times, on one CPU thread and at 32x32 unless told otherwise, the median of --repeats runs of:

- render: drawing a chunk of 1,024 random scenes (sampling, shapes, textures, nuisances);
- labelled chunk: a chunk of a zero-shot task (scenes, images and labels), as the datasets make them;
- captioned chunk: a chunk of world-pretrain (grouped scenes, images and captions).

    python bench/world_generation.py [--resolution 32] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vlmshield.world import data, scene


def images_per_second(make, repeats: int) -> float:
    make(0)  # warm-up
    times = []
    for seed in range(1, repeats + 1):
        start = time.perf_counter()
        make(seed)
        times.append(time.perf_counter() - start)
    return data.CHUNK / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = args.resolution

    def render(seed):
        generator = torch.Generator().manual_seed(seed)
        return scene.render(data.sample_scenes(data.CHUNK, generator), generator, size)

    def labelled(seed):
        return data._labelled_chunk(data.TASKS[0])(data.CHUNK, torch.Generator().manual_seed(seed), size)

    def captioned(seed):
        return data._captioned_chunk(data.CHUNK, torch.Generator().manual_seed(seed), size)

    print(f"world generation, {args.threads} thread(s), {size}x{size}, chunks of {data.CHUNK}, "
          f"median of {args.repeats}")
    for name, make in (("render", render), ("labelled chunk", labelled), ("captioned chunk", captioned)):
        rate = images_per_second(make, args.repeats)
        print(f"  {name:16s} {rate:9.0f} images/s  (goal > 5000: {'met' if rate > 5000 else 'NOT met'})")


if __name__ == "__main__":
    main()
