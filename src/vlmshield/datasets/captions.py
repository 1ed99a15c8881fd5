"""captions-csv: image-caption pairs listed in a CSV file (CC3M-style web data), for contrastive fine-tuning.

The file has a header row and two columns, the image path and its caption (``path,caption``; the header's
names are not read). Rows whose path is not a ``.png``, ``.jpg`` or ``.jpeg`` file are skipped, as PAR's
loader does, and only the first ``samples`` rows are kept when given, in the file's order. A relative path
is read from the CSV's folder. Images are resized (bicubic, shortest side) and centre-cropped to the model's
input size, as CLIP's preprocessing does.
"""

from __future__ import annotations

import csv
from pathlib import Path

from torch.utils.data import Dataset

from vlmshield.api import CaptionedImages, DataError, DatasetEntry, read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class _CaptionRows(Dataset):
    def __init__(self, rows: list[tuple[Path, str]], transform, what: str):
        self.rows, self.transform, self.what = rows, transform, what

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        path, caption = self.rows[index]
        return self.transform(read_image(path, self.what)), caption


def read_rows(csv_path: Path, samples: int | None = None) -> list[tuple[Path, str]]:
    """The (image path, caption) rows of ``csv_path`` whose path is an image file, the first ``samples`` of them."""
    try:
        with open(csv_path, newline="") as handle:
            reader = csv.reader(handle)
            next(reader, None)  # the header
            rows = [(Path(row[0].strip()), row[1]) for row in reader
                    if len(row) >= 2 and row[0].strip().lower().endswith(IMAGE_SUFFIXES)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"captions-csv {csv_path}: cannot read it ({type(error).__name__}: {error}).") from None
    rows = [(path if path.is_absolute() else csv_path.parent / path, caption) for path, caption in rows]
    return rows[:samples] if samples is not None else rows


def build(root, split: str = "train", image_size: int = 224, samples: int | None = None) -> CaptionedImages:
    from torchvision import transforms

    root = Path(root)
    if root.is_dir():
        raise DataError(f"captions-csv takes the CSV file itself (captions-csv:/path/pairs.csv); {root} is a folder.")
    transform = transforms.Compose([
        transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
    ])
    rows = read_rows(root, samples)
    return CaptionedImages(_CaptionRows(rows, transform, f"captions-csv {root}"), f"captions-csv-{root.stem}".lower())


ENTRY = DatasetEntry(
    name="captions-csv", build=build, needs_root=True, splits=("train",), provides="captioned",
    description="Image-caption pairs listed in a CSV file (header, then path,caption rows; CC3M-style); give it as "
                "captions-csv:/path/pairs.csv.",
)
