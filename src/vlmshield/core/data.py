"""Datasets: what the evaluation engine and the training engine read.

A dataset is registered as a ``DatasetEntry``: a name and a ``build`` function. ``vs.dataset(spec)``
reads ``spec`` as ``name`` or ``name:/path/to/root``; a dataset that needs files and got no root looks
in ``$VLMSHIELD_DATA/<name>``. What it builds is a ``LabelledImages``: items are (image, label) with
the image a float tensor (3, H, W) in [0, 1], plus the class names and prompt templates that
zero-shot evaluation needs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from .errors import DataError, ParameterError
from .plugins import get_host

DATA_ENV = "VLMSHIELD_DATA"


class LabelledImages(Dataset):
    """(image in [0, 1], label) items with the class names and prompt templates of the task."""

    def __init__(self, data: Dataset, classnames: Sequence[str], templates: Sequence[str], name: str):
        self.data = data
        self.classnames = list(classnames)
        self.templates = list(templates)
        self.name = name

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data[index]

    def __repr__(self) -> str:
        return f"LabelledImages({self.name!r}, {len(self)} images, {len(self.classnames)} classes)"


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset. ``build(root, split, image_size, **params)`` returns LabelledImages.

    ``image_size`` is the model's input size, for datasets whose images vary in size and must be
    resized and centre-cropped to form a batch; datasets at a fixed native resolution ignore it.
    """

    name: str
    build: Callable[..., LabelledImages]
    description: str = ""
    needs_root: bool = False
    splits: tuple[str, ...] = ("test",)
    homepage: str = ""


def parse_dataset_spec(spec: str) -> tuple[str, Path | None]:
    """'name' or 'name:/root' -> (name, root)."""
    name, sep, root = spec.partition(":")
    if not name.strip():
        raise ParameterError(f"a dataset is written name or name:/path/to/root; got {spec!r}.")
    return name.strip(), (Path(root).expanduser() if sep and root else None)


def dataset(spec: str, split: str = "test", image_size: int = 224, **params) -> LabelledImages:
    """Build a registered dataset: ``dataset('cifar10:/data/cifar10')``, ``dataset('fakedata')``."""
    name, root = parse_dataset_spec(spec)
    registration = get_host().get("dataset", name)
    entry: DatasetEntry = registration.obj
    if split not in entry.splits:
        raise ParameterError(f"dataset {entry.name!r} has no split {split!r}; it has {', '.join(entry.splits)}.")
    if entry.needs_root:
        if root is None and os.environ.get(DATA_ENV):
            root = Path(os.environ[DATA_ENV]).expanduser() / entry.name
        if root is None:
            raise DataError(
                f"dataset {entry.name!r} needs its files: give the folder as {entry.name}:/path/to/data "
                f"or set {DATA_ENV} to a folder that holds {entry.name}/."
            )
        if not root.exists():
            raise DataError(f"dataset {entry.name!r}: the folder {root} does not exist.")
    data = entry.build(root=root, split=split, image_size=image_size, **params)
    if len(data) == 0:
        raise DataError(f"dataset {entry.name!r} ({split} split{f' in {root}' if root else ''}) has no images.")
    return data
