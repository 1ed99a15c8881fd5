"""``world-da``: the world's domain pairs, for unsupervised domain adaptation. The label space is the
ten shapes of ``world-shapes``; the source is the world drawn as always, and each variant a target domain
drawn in another style (``scene.Style``):

- ``palette``: every color faded 65% of the way to grey;
- ``texture``: shapes filled with fine stripes that mix their color 40% with its complement;
- ``clutter``: two strokes in the world's colors across every background;
- ``outline``: shapes drawn as a 1.5-pixel contour, the sketch domain's analogue.

Each pair is a ``DomainPair``: ``SOURCE_SIZE`` labelled source scenes (the same stream for every pair),
``TARGET_SIZE`` unlabelled target scenes to adapt on, and ``TEST_SIZE`` labelled target scenes, drawn apart
from them, to evaluate on. Each part is generated when first read, once per process, and kept in memory, so
evaluating on the target test set alone renders only its 1,000 scenes.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch.utils.data import Dataset

from vlmshield.api import DatasetEntry, DomainPair, LabelledImages, UnlabelledImages

from .data import CHUNK, RESOLUTION, TASKS, TEST_SIZE, WorldSplit, check_resolution, sample_scenes
from .scene import PLAIN, Style, render

NAME = "world-da"
#: Colors faded 65% of the way to their grey (Rec. 601 luma), as one matrix.
FADED = tuple(tuple(0.35 * (i == j) + 0.65 * luma for j, luma in enumerate((0.299, 0.587, 0.114))) for i in range(3))
SHIFTS = {"palette": Style(palette=FADED), "texture": Style(fill_stripes=0.4), "clutter": Style(clutter=2),
          "outline": Style(outline=1.5)}
SOURCE_SIZE = TARGET_SIZE = 2 ** 14
SHAPES = next(task for task in TASKS if task.name == "world-shapes")


def _shape_chunk(style: Style):
    def make(count: int, generator: torch.Generator, resolution: int):
        scenes = sample_scenes(count, generator)
        return render(scenes, generator, resolution, style), scenes.shape
    return make


@lru_cache(maxsize=16)
def _drawn(stream: str, split: str, size: int, style: Style, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = WorldSplit(stream, split, size, _shape_chunk(style), resolution)
    chunks = [data.chunk(i) for i in range((size + CHUNK - 1) // CHUNK)]
    return torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])


class _Drawn(Dataset):
    """The scenes of one stream and split (``_drawn``'s arguments), rendered when first read: items are
    (image, label), or (image,) when ``labelled`` is false."""

    def __init__(self, key: tuple, labelled: bool):
        self.key, self.labelled = key, labelled

    def __len__(self) -> int:
        return self.key[2]

    def __getitem__(self, index: int):
        images, labels = _drawn(*self.key)
        return (images[index], labels[index]) if self.labelled else (images[index],)


def _labelled(key: tuple, name: str) -> LabelledImages:
    return LabelledImages(_Drawn(key, labelled=True), SHAPES.classnames, SHAPES.templates, name=name)


def build(root=None, split: str = "train", image_size: int = RESOLUTION, variant: str = "palette",
          resolution: int = RESOLUTION) -> DomainPair:
    resolution, style = check_resolution(resolution), SHIFTS[variant]
    source = _labelled((f"{NAME}-source", "train", SOURCE_SIZE, PLAIN, resolution), f"{NAME}-source")
    target = UnlabelledImages(_Drawn((f"{NAME}/{variant}", "train", TARGET_SIZE, style, resolution), labelled=False),
                              f"{NAME}/{variant}-target")
    test = _labelled((f"{NAME}/{variant}", "test", TEST_SIZE, style, resolution), f"{NAME}/{variant}-test")
    return DomainPair(source, target, test, f"{NAME}/{variant}")


ENTRY = DatasetEntry(NAME, build, splits=("train",), provides="domain-pair", variants=tuple(SHIFTS),
                     description="The world's domain pairs (10 shapes): the world as drawn, and a target domain "
                                 "of faded colors, striped fills, cluttered backgrounds or outlines.")
