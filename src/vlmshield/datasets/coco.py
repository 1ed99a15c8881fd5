"""coco-karpathy: MS-COCO's images with their captions, in Karpathy's test (or val) split, for image-text retrieval.

Read from the files as released, in either of two layouts under the root (``coco-karpathy:/data/coco`` or
``$VLMSHIELD_DATA/coco-karpathy``):

- Karpathy's split file (``caption_datasets.zip``): ``ROOT/dataset_coco.json``, ``{"images": [{"filepath":
  "val2014", "filename": "COCO_val2014_....jpg", "split": "test" | "val" | "train" | "restval",
  "sentences": [{"raw": "..."}, ...]}, ...]}``, the images at ``ROOT/<filepath>/<filename>``;
- CLIP_benchmark's annotations (its ``mscoco_captions``, which open_clip's evaluations use):
  ``ROOT/coco_test_karpathy.json`` (``coco_val_karpathy.json`` for val) in COCO's captions format,
  ``{"images": [{"id": ..., "file_name": ...}], "annotations": [{"image_id": ..., "caption": ...}]}``, the
  images at ``ROOT/val2014/<file_name>``.

The first is read when both are there. One item per image, in the file's order: (image, its captions as a
tuple of strings), the first ``captions_per_image`` of them (5 by default: the test split is then 5,000
images and 25,000 captions, as retrieval papers count it; a few images have 6 or 7, ``None`` keeps them all).
``data.captions`` lists every item's captions, so an evaluator reads them without decoding an image. Images
are resized (bicubic, shortest side) and centre-cropped to the model's input size, as CLIP's preprocessing
and the zero-shot suite's adapters do (a protocol's ``preprocess`` rule replaces that). The splits are
``test`` and ``val`` (5,000 images each); the training images are not read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

from vlmshield.api import CaptionedImages, DataError, DatasetEntry, read_image

from .zeroshot import image_transform

NAME = "coco-karpathy"
KARPATHY_FILE = "dataset_coco.json"
#: CLIP_benchmark's annotation file of a split, and the folder its images are in.
BENCHMARK_FILE, BENCHMARK_IMAGES = "coco_{split}_karpathy.json", "val2014"
HOMEPAGE = "https://cs.stanford.edu/people/karpathy/deepimagesent/"
LAYOUT = (f"{KARPATHY_FILE} with the images at <filepath>/<filename> (Karpathy's split file and COCO's val2014/), "
          f"or CLIP_benchmark's coco_test_karpathy.json with the images in val2014/")


class KarpathyImages(Dataset):
    """(image in [0, 1], captions) items of (image path, captions) pairs."""

    def __init__(self, items: list[tuple[Path, tuple[str, ...]]], transform: Callable):
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, captions = self.items[index]
        return self.transform(read_image(path, NAME)), captions


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{NAME}: cannot read {path} ({type(error).__name__}: {error}).") from None


def karpathy_items(path: Path, split: str) -> list[tuple[Path, tuple[str, ...]]]:
    """(image path, captions) of ``split`` in Karpathy's ``dataset_coco.json``, in the file's order."""
    try:
        return [(path.parent / image["filepath"] / image["filename"],
                 tuple(sentence["raw"].strip() for sentence in image["sentences"]))
                for image in _read_json(path)["images"] if image["split"] == split]
    except (KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{NAME}: {path} is not Karpathy's split file (no {error} where an image's filepath, "
                        f"filename, split and sentences should be).") from None


def benchmark_items(path: Path) -> list[tuple[Path, tuple[str, ...]]]:
    """(image path, captions) of CLIP_benchmark's COCO-format annotations, images in the file's order and each
    one's captions in theirs."""
    try:
        content = _read_json(path)
        captions = {image["id"]: [] for image in content["images"]}
        for annotation in content["annotations"]:
            if annotation["image_id"] in captions:
                captions[annotation["image_id"]].append(annotation["caption"].strip())
        return [(path.parent / BENCHMARK_IMAGES / image["file_name"], tuple(captions[image["id"]]))
                for image in content["images"]]
    except (KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{NAME}: {path} is not COCO-format caption annotations (no {error} where the images' "
                        f"id and file_name and the annotations' image_id and caption should be).") from None


def build(root, split: str = "test", image_size: int = 224, captions_per_image: int | None = 5,
          preprocess: dict | None = None) -> CaptionedImages:
    root = Path(root)
    karpathy, benchmark = root / KARPATHY_FILE, root / BENCHMARK_FILE.format(split=split)
    if karpathy.is_file():
        items = karpathy_items(karpathy, split)
    elif benchmark.is_file():
        items = benchmark_items(benchmark)
    else:
        raise DataError(f"{NAME}: no {KARPATHY_FILE} or {benchmark.name} in {root} (expected {LAYOUT}); get them "
                        f"from {HOMEPAGE} and https://cocodataset.org.")
    if not items:
        raise DataError(f"{NAME}: the annotations in {root} list no {split} image.")
    uncaptioned = [path.name for path, captions in items if not captions]
    if uncaptioned:
        raise DataError(f"{NAME}: {len(uncaptioned)} {split} images have no caption in {root}, e.g. {uncaptioned[0]}.")
    missing = [path for path, _ in items if not path.is_file()]
    if missing:
        raise DataError(f"{NAME}: {len(missing):,} of the {len(items):,} {split} images are missing, e.g. "
                        f"{missing[0]} (expected {LAYOUT}).")
    if captions_per_image is not None:
        items = [(path, captions[:captions_per_image]) for path, captions in items]
    data = CaptionedImages(KarpathyImages(items, image_transform(image_size, preprocess)), NAME)
    data.captions = [captions for _, captions in items]
    return data


ENTRY = DatasetEntry(
    name=NAME, build=build, needs_root=True, splits=("test", "val"), provides="captioned", homepage=HOMEPAGE,
    description="MS-COCO in Karpathy's split (test: 5,000 images, 25,000 captions), images with their captions "
                "for image-text retrieval; dataset_coco.json and the images, or CLIP_benchmark's annotations.",
)
