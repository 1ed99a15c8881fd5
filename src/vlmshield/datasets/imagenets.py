"""The ImageNet family as released on disk: folders named by WordNet id, labelled by a fixed wnid list.

ImageNet's validation set (sorted into its 1000 wnid folders, as torchvision's ImageNet and RobustBench
expect), ImageNet-R and ImageNet-Sketch are ImageFolder trees; TinyImageNet keeps its own release layout
(``wnids.txt``, ``train/<wnid>/images/``, ``val/images/`` with ``val/val_annotations.txt``). Labels come
from the wnid lists in ``metadata/wnids.json`` (ImageNet's standard sorted index; ImageNet-R's and
TinyImageNet's 200 wnids in sorted order), not from the folders present, so a partial copy is still
labelled right. A missing folder or file raises FileNotFoundError, which the adapter turns into its
one-sentence DataError.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torch.utils.data import Dataset
from torchvision import datasets

from vlmshield.api import DataError, read_image


def subfolder(root: Path, name: str) -> Path:
    """``root/name`` when the release's top folder is there, else ``root`` itself (it is that folder)."""
    return root / name if (root / name).is_dir() else root


class WnidFolder(datasets.ImageFolder):
    """An ImageFolder of WordNet-id folders whose label is the wnid's position in ``wnids``."""

    def __init__(self, root: Path, wnids: Sequence[str], transform: Callable):
        self.wnid_index = {wnid: i for i, wnid in enumerate(wnids)}
        super().__init__(str(root), transform=transform)
        self.classes, self.class_to_idx = list(wnids), dict(self.wnid_index)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """The wnid folders present, each mapped to its label in the full list."""
        present = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())  # FileNotFoundError
        if not present:
            raise FileNotFoundError(directory)
        unknown = [name for name in present if name not in self.wnid_index]
        if unknown:
            raise DataError(f"{directory} should hold only WordNet-id folders of this dataset (such as "
                            f"{next(iter(self.wnid_index))}/), but it has {', '.join(unknown[:3])}.")
        return present, {wnid: self.wnid_index[wnid] for wnid in present}


class TinyImageNet(Dataset):
    """TinyImageNet (64x64, 200 classes) in its release layout; "test" is the labelled val split."""

    def __init__(self, root: Path, split: str, wnids: Sequence[str], transform: Callable):
        folder = subfolder(root, "tiny-imagenet-200")
        listed = (folder / "wnids.txt").read_text().split()
        if set(listed) != set(wnids):
            raise DataError(f"{folder / 'wnids.txt'} does not list TinyImageNet's 200 classes; is it another dataset?")
        index = {wnid: i for i, wnid in enumerate(wnids)}
        pairs = _val_pairs(folder / "val") if split == "test" else _train_pairs(folder / "train")
        self.samples = [(path, index[wnid]) for path, wnid in pairs]
        self.classes = list(wnids)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(read_image(path, "tinyimagenet")), label


def _val_pairs(val: Path) -> list[tuple[Path, str]]:
    """(image, wnid) of the val split, from val_annotations.txt (file, wnid, box, tab-separated)."""
    lines = (val / "val_annotations.txt").read_text().splitlines()
    return [(val / "images" / line.split("\t")[0], line.split("\t")[1]) for line in lines if line.strip()]


def _train_pairs(train: Path) -> list[tuple[Path, str]]:
    """(image, wnid) of the train split: train/<wnid>/images/*.JPEG."""
    if not train.is_dir():
        raise FileNotFoundError(train)
    return [(path, folder.name) for folder in sorted(train.iterdir()) if folder.is_dir()
            for path in sorted((folder / "images").glob("*.JPEG"))]
