"""The world's splits: image-caption pairs for pretraining, a labelled fine-tuning split, and the
zero-shot evaluation suite.

- ``world-pretrain``: 2^20 captioned scenes (the web-data analogue). Nine color-shape compositions
  (``HELD_OUT``: red, green or purple stars, hearts and bars) never occur in it.
- ``world-finetune``: scenes labelled with one of 426 classes, each a composition of a color, a shape
  and a background texture ("red square on a striped background"), none of them a held-out
  color-shape pair (the ImageNet analogue: ImageNet's 1,000 classes span objects, textures and
  scenes, so supervised fine-tuning on it keeps more than object shape). 2^15 for training, 2,000 for
  testing. Fine-tuning reads it in a random order, so the whole split is generated once per process
  and kept (400 MB at 32 px), like the test sets.
- the zero-shot suite (the CIFAR/DTD/... analogue), 1,000 test images each: ``world-shapes``,
  ``world-colors``, ``world-textures``, ``world-positions``, and ``world-compositions``, whose nine
  classes are exactly the held-out compositions, so that only a model that composes what it learnt
  about colors and shapes separately can name them. ``world`` is the whole suite.
- ``world-captions``: 2^15 captioned scenes drawn as world-pretrain's are, but from their own stream and
  kept in memory (shuffled reads of world-pretrain would redraw a chunk per pair): the CC3M subset of
  backdoor poisoning and cleaning. Its ``test`` split, 1,000 pairs, is for image-text retrieval.
- ``world-captions-fresh``: 2^15 more, from another stream: pairs that no model of ``world-captions`` saw
  (the analogue of cleaning on synthetic data).

Every split is generated in chunks of 1,024 items, each from a seed derived from the world's seed, the
split and the chunk index: the same item is the same image in every process, and splits never share a
stream of random numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.utils.data import Dataset

from vlmshield.api import CaptionedImages, DatasetEntry, LabelledImages, ParameterError, derive_seed

from .scene import COLORS, FACTORS, SHAPES, TEXTURES, Scenes, render
from .text import captions

WORLD_SEED = 2026
TEST_SIZE = 1000
CHUNK = 1024
RESOLUTION = 32
#: How often a variant in a pretraining group changes each factor (relative weights). The shape, the
#: factor hardest to see, changes in three variants out of seven: with equal weights the ViTs learnt it
#: last and slowest.
VARIANT_WEIGHTS = {"shape": 3.0, "color": 1.0, "texture": 1.0, "size": 1.0, "position": 1.0}
HELD_OUT = tuple((color, shape) for color in ("red", "green", "purple") for shape in ("star", "heart", "bar"))
_COLOR_INDEX = {name: i for i, name in enumerate(COLORS)}
_SHAPE_INDEX = {name: i for i, name in enumerate(SHAPES)}


def _held_out_mask(color: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros_like(color, dtype=torch.bool)
    for c, s in HELD_OUT:
        mask |= (color == _COLOR_INDEX[c]) & (shape == _SHAPE_INDEX[s])
    return mask


def _exclude_held_out(factors: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    redraw = _held_out_mask(factors["color"], factors["shape"])
    while redraw.any():
        count = int(redraw.sum())
        factors["color"][redraw] = torch.randint(len(COLORS), (count,), generator=generator)
        factors["shape"][redraw] = torch.randint(len(SHAPES), (count,), generator=generator)
        redraw = _held_out_mask(factors["color"], factors["shape"])


def sample_scenes(n: int, generator: torch.Generator, held_out: str = "include") -> Scenes:
    """``n`` random scenes; ``held_out`` is 'include', 'exclude' (redrawn until none is left) or 'only'."""
    factors = {name: torch.randint(len(values), (n,), generator=generator) for name, values in FACTORS.items()}
    if held_out == "only":
        pair = torch.randint(len(HELD_OUT), (n,), generator=generator)
        factors["color"] = torch.tensor([_COLOR_INDEX[c] for c, _ in HELD_OUT])[pair]
        factors["shape"] = torch.tensor([_SHAPE_INDEX[s] for _, s in HELD_OUT])[pair]
    elif held_out == "exclude":
        _exclude_held_out(factors, generator)
    return Scenes(**factors)


def sample_scene_groups(n: int, generator: torch.Generator, group: int = 4) -> Scenes:
    """Scenes in consecutive groups of ``group``: a scene, then variants that each change one factor.

    Pretraining batches are read in order, so every batch holds these near-duplicates: the hard
    negatives that keep each factor worth learning (without them a model that knows four factors
    already tells a batch apart, and contrastive learning drops the fifth). No held-out composition.
    """
    base = sample_scenes((n + group - 1) // group, generator, "include")
    factors = {name: getattr(base, name).repeat_interleave(group)[:n].clone() for name in FACTORS}
    names = tuple(FACTORS)
    variant = torch.arange(n) % group != 0
    weights = torch.tensor([VARIANT_WEIGHTS[name] for name in names], dtype=torch.float)
    changed = torch.multinomial(weights, n, replacement=True, generator=generator)
    for index, name in enumerate(names):
        chosen = variant & (changed == index)
        shift = torch.randint(1, len(FACTORS[name]), (int(chosen.sum()),), generator=generator)
        factors[name][chosen] = (factors[name][chosen] + shift) % len(FACTORS[name])
    _exclude_held_out(factors, generator)
    return Scenes(**factors)


@dataclass(frozen=True)
class Task:
    """A zero-shot task of the world: which scenes it draws, and which class each one is."""

    name: str
    description: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    label: Callable[[Scenes], torch.Tensor]
    held_out: str = "include"


def _factor_task(name: str, factor: str, templates: tuple[str, ...], description: str) -> Task:
    return Task(name, description, FACTORS[factor], templates, lambda scenes: getattr(scenes, factor))


def _composition_label(scenes: Scenes) -> torch.Tensor:
    pairs = {(_COLOR_INDEX[c], _SHAPE_INDEX[s]): i for i, (c, s) in enumerate(HELD_OUT)}
    return torch.tensor([pairs[(c, s)] for c, s in zip(scenes.color.tolist(), scenes.shape.tolist(), strict=True)])


TASKS = (
    _factor_task("world-shapes", "shape", ("a photo of a {}.", "a {}.", "an image of a {}."),
                 "Which of 10 shapes (the object-recognition analogue)."),
    _factor_task("world-colors", "color", ("a photo of a {} shape.", "a {} object.", "there is a {} shape."),
                 "Which of 8 colors the shape is."),
    _factor_task("world-textures", "texture",
                 ("a photo of a shape on a {} background.", "a shape with a {} background."),
                 "Which of 6 background textures (the DTD analogue)."),
    _factor_task("world-positions", "position", ("a shape in the {}.", "an object at the {}."),
                 "Where the shape is: 4 corners or the center."),
    Task("world-compositions", "Which of the 9 color-shape compositions held out of world-pretrain.",
         tuple(f"{c} {s}" for c, s in HELD_OUT), ("a photo of a {}.", "a {}."), _composition_label,
         held_out="only"),
)
FINETUNE_CLASSES = tuple((color, shape, texture) for color in COLORS for shape in SHAPES
                         if (color, shape) not in HELD_OUT for texture in TEXTURES)


def _finetune_label(scenes: Scenes) -> torch.Tensor:
    index = {(_COLOR_INDEX[c], _SHAPE_INDEX[s], TEXTURES.index(t)): i for i, (c, s, t) in enumerate(FINETUNE_CLASSES)}
    return torch.tensor([index[key] for key in zip(scenes.color.tolist(), scenes.shape.tolist(),
                                                    scenes.texture.tolist(), strict=True)])


FINETUNE = Task("world-finetune", f"Scenes labelled with one of {len(FINETUNE_CLASSES)} color-shape-texture "
                "compositions (none held out of world-pretrain), for (adversarial) fine-tuning: the ImageNet "
                "analogue.", tuple(f"{c} {s} on a {t} background" for c, s, t in FINETUNE_CLASSES),
                ("a photo of a {}.",), _finetune_label, held_out="exclude")
SIZES = {"world-finetune": {"train": 2 ** 15, "test": 2000}, "world-pretrain": {"train": 2 ** 20},
         "world-captions": {"train": 2 ** 15, "test": TEST_SIZE}, "world-captions-fresh": {"train": 2 ** 15}}


class WorldSplit(Dataset):
    """Items of one split, generated a chunk of 1,024 at a time (the last chunk is kept)."""

    def __init__(self, name: str, split: str, size: int, make_chunk: Callable, resolution: int = RESOLUTION):
        self.name, self.split, self.size, self.resolution = name, split, size, resolution
        self.make_chunk = make_chunk
        self._cached: tuple[int, tuple] | None = None

    def __len__(self) -> int:
        return self.size

    def chunk(self, index: int) -> tuple[torch.Tensor, list | torch.Tensor]:
        """Images and targets of chunk ``index``: the same in every process."""
        if self._cached is None or self._cached[0] != index:
            count = min(CHUNK, self.size - index * CHUNK)
            generator = torch.Generator().manual_seed(derive_seed(WORLD_SEED, self.name, self.split, index))
            self._cached = (index, self.make_chunk(count, generator, self.resolution))
        return self._cached[1]

    def __getitem__(self, index: int):
        if not 0 <= index < self.size:
            raise IndexError(f"{self.name} {self.split} has {self.size} items; asked for {index}")
        images, targets = self.chunk(index // CHUNK)
        return images[index % CHUNK], targets[index % CHUNK]


def _labelled_chunk(task: Task) -> Callable:
    def make(count: int, generator: torch.Generator, resolution: int):
        scenes = sample_scenes(count, generator, task.held_out)
        return render(scenes, generator, resolution), task.label(scenes)
    return make


def _captioned_chunk(count: int, generator: torch.Generator, resolution: int):
    scenes = sample_scene_groups(count, generator)
    return render(scenes, generator, resolution), captions(scenes, generator)


@lru_cache(maxsize=32)
def _fixed_set(task_name: str, split: str, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    task = next(t for t in (*TASKS, FINETUNE) if t.name == task_name)
    size = SIZES.get(task_name, {}).get(split, TEST_SIZE)
    data = WorldSplit(task_name, split, size, _labelled_chunk(task), resolution)
    chunks = [data.chunk(i) for i in range((size + CHUNK - 1) // CHUNK)]
    return torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])


def check_resolution(resolution: int) -> int:
    """``resolution`` if it is a whole number of pixels from 8 to 512, else a ParameterError."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 8 <= resolution <= 512:
        raise ParameterError(f"the world's resolution must be a whole number of pixels from 8 to 512; "
                             f"got {resolution!r}.")
    return resolution


def build_task(task: Task):
    def build(root=None, split: str = "test", image_size: int = RESOLUTION, resolution: int = RESOLUTION):
        resolution = check_resolution(resolution)
        images, labels = _fixed_set(task.name, split, resolution)  # generated once per process
        data = torch.utils.data.TensorDataset(images, labels)
        return LabelledImages(data, task.classnames, task.templates, name=task.name)
    return build


def build_pretrain(root=None, split: str = "train", image_size: int = RESOLUTION, resolution: int = RESOLUTION):
    data = WorldSplit("world-pretrain", split, SIZES["world-pretrain"][split], _captioned_chunk,
                      check_resolution(resolution))
    return CaptionedImages(data, name="world-pretrain")


@lru_cache(maxsize=8)
def _fixed_captions(name: str, split: str, resolution: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    data = WorldSplit(name, split, SIZES[name][split], _captioned_chunk, resolution)
    chunks = [data.chunk(i) for i in range((len(data) + CHUNK - 1) // CHUNK)]
    return torch.cat([c[0] for c in chunks]), tuple(caption for c in chunks for caption in c[1])


class _Pairs(Dataset):
    def __init__(self, images: torch.Tensor, captions: tuple[str, ...]):
        self.images, self.captions = images, captions

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int):
        return self.images[index], self.captions[index]


def build_captions(name: str):
    def build(root=None, split: str = "train", image_size: int = RESOLUTION, resolution: int = RESOLUTION):
        images, captions = _fixed_captions(name, split, check_resolution(resolution))  # once per process
        return CaptionedImages(_Pairs(images, captions), name=name)
    return build


ENTRIES = (
    DatasetEntry("world-pretrain", build_pretrain, splits=("train",), provides="captioned",
                 description="2^20 captioned scenes of the world, without the held-out compositions "
                             "(web-data analogue)."),
    DatasetEntry("world-captions", build_captions("world-captions"), splits=("train", "test"), provides="captioned",
                 description="2^15 captioned scenes drawn as world-pretrain's, kept in memory (poisoning and "
                             "cleaning backdoors), and 1,000 test pairs for retrieval."),
    DatasetEntry("world-captions-fresh", build_captions("world-captions-fresh"), splits=("train",),
                 provides="captioned", description="2^15 more captioned scenes, none of them in world-captions "
                                                   "(cleaning on data the poisoned model never saw)."),
    DatasetEntry("world-finetune", build_task(FINETUNE), splits=("train", "test"), description=FINETUNE.description),
    *(DatasetEntry(task.name, build_task(task), description=task.description) for task in TASKS),
    DatasetEntry("world", members=tuple(task.name for task in TASKS),
                 description="The world's zero-shot suite: " + ", ".join(task.name for task in TASKS) + "."),
)
