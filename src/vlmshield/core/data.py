"""Datasets: what the evaluation engine and the training engine read.

A dataset is registered as a ``DatasetEntry``: a name and a ``build`` function. ``vs.dataset(spec)``
reads ``spec`` as ``name`` or ``name:/path/to/root``; a dataset that needs files and got no root looks
in ``$VLMSHIELD_DATA/<name>``. An entry with ``members`` is a collection (a benchmark suite):
``datasets(spec)`` expands it into its members.

What an entry builds is typed, and the entry declares which type (``provides``, a key of
``DATA_TYPES``); images are float tensors (3, H, W) in [0, 1]:

- ``labelled``: ``LabelledImages``, items (image, label), with the class names and prompt templates that
  zero-shot evaluation needs;
- ``captioned``: ``CaptionedImages``, items (image, caption): contrastive training, backdoor poisoning;
- ``unlabelled``: ``UnlabelledImages``, items (image,): distillation, a target domain;
- ``domain-pair``: ``DomainPair``, a labelled source, an unlabelled target (training) and a labelled
  target test set of the same classes: unsupervised domain adaptation.

Trainers and evaluators declare the type they take (``takes``); ``check_takes`` accepts what fits
(unlabelled images can be read from labelled or captioned ones, by dropping the labels or captions)
and says the mismatch in one sentence otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from torch.utils.data import Dataset

from .errors import DataError, ParameterError, PluginError, error_summary
from .plugins import get_host

DATA_ENV = "VLMSHIELD_DATA"


class UnreadableImageError(DataError):
    """An image file that cannot be read: not an image, truncated, or more pixels than PIL decodes."""


def read_image(path: str | os.PathLike, what: str = "dataset"):
    """The image file at ``path``, decoded whole, as an RGB PIL image (a ``loader`` for torchvision's datasets);
    a file that cannot be decoded is an UnreadableImageError that names ``what`` reads it, the file and why."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as error:  # whatever PIL raises on this file (OSError for most damage, SyntaxError, ...)
        raise UnreadableImageError(f"{what}: cannot read {path} ({error_summary(error)}): replace or remove "
                                   f"the file.") from error


class _WrappedDataset(Dataset):
    """Items of ``data``, under a name."""

    def __init__(self, data: Dataset, name: str):
        self.data = data
        self.name = name

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data[index]


class LabelledImages(_WrappedDataset):
    """(image in [0, 1], label) items with the class names and prompt templates of the task.

    ``templates`` are the prompts zero-shot evaluation uses by default; ``template_sets`` holds the
    other conventions the dataset knows (``{"single": ["This is a photo of a {}."]}``)."""

    def __init__(self, data: Dataset, classnames: Sequence[str], templates: Sequence[str], name: str,
                 template_sets: dict[str, Sequence[str]] | None = None):
        super().__init__(data, name)
        self.classnames = list(classnames)
        self.templates = list(templates)
        #: Other prompt conventions a protocol may ask for, by name ("single": TeCoA/TTC's one prompt).
        self.template_sets = {k: list(v) for k, v in (template_sets or {}).items()}

    def __repr__(self) -> str:
        return f"LabelledImages({self.name!r}, {len(self)} images, {len(self.classnames)} classes)"


class CaptionedImages(_WrappedDataset):
    """(image in [0, 1], caption) items: the image-text pairs of contrastive training."""

    def __repr__(self) -> str:
        return f"CaptionedImages({self.name!r}, {len(self)} pairs)"


class UnlabelledImages(_WrappedDataset):
    """(image in [0, 1],) items: images without labels (a target domain, distillation data).

    Built on labelled or captioned data, it reads their images and drops the rest."""

    def __getitem__(self, index: int):
        item = self.data[index]
        return (item[0],) if isinstance(item, (tuple, list)) else (item,)

    def __repr__(self) -> str:
        return f"UnlabelledImages({self.name!r}, {len(self)} images)"


class DomainPair:
    """Unsupervised domain adaptation data: a labelled ``source``, unlabelled ``target`` images to adapt
    on, and a labelled ``target_test`` set (used only to evaluate) of the source's classes."""

    def __init__(self, source: LabelledImages, target: UnlabelledImages, target_test: LabelledImages, name: str):
        if list(source.classnames) != list(target_test.classnames):
            raise DataError(f"domain pair {name!r}: the source and the target test set have different classes.")
        self.source, self.target, self.target_test, self.name = source, target, target_test, name

    @property
    def classnames(self) -> list[str]:
        return self.source.classnames

    def __len__(self) -> int:
        return len(self.target)

    def __repr__(self) -> str:
        return (f"DomainPair({self.name!r}: source {len(self.source)} labelled, target {len(self.target)} unlabelled, "
                f"target test {len(self.target_test)} labelled, {len(self.classnames)} classes)")


#: The data types, by the name entries declare (``provides``) and trainers and evaluators take (``takes``).
DATA_TYPES = {"labelled": LabelledImages, "captioned": CaptionedImages, "unlabelled": UnlabelledImages,
              "domain-pair": DomainPair}
_DESCRIBED = {"labelled": "labelled images", "captioned": "image-caption pairs", "unlabelled": "unlabelled images",
              "domain-pair": "a domain pair (labelled source, unlabelled target, labelled target test)"}


def type_of(data) -> str | None:
    """The ``DATA_TYPES`` name of ``data``, or None."""
    return next((name for name, cls in DATA_TYPES.items() if isinstance(data, cls)), None)


def check_takes(data, takes: str, who: str):
    """``data`` as ``who`` takes it (``takes``, a ``DATA_TYPES`` name), or ParameterError in one sentence.

    Labelled images and image-caption pairs are read as unlabelled images where those are taken, and a
    domain pair as its unlabelled target."""
    if takes not in DATA_TYPES:
        raise PluginError(f"{who} takes {takes!r}, which is not a data type ({', '.join(DATA_TYPES)}).")
    have = type_of(data)
    if have == takes:
        return data
    if takes == "unlabelled" and have in ("labelled", "captioned"):
        return UnlabelledImages(data, data.name)
    if takes == "unlabelled" and have == "domain-pair":
        return data.target
    name = getattr(data, "name", type(data).__name__)
    raise ParameterError(f"{who} takes {_DESCRIBED[takes]}; {name} is "
                         f"{_DESCRIBED.get(have, 'of type ' + type(data).__name__)}.")


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset. ``build(root, split, image_size, **params)`` returns the data type it
    ``provides`` (LabelledImages by default).

    ``image_size`` is the model's input size, for datasets whose images vary in size and must be
    resized and centre-cropped to form a batch; datasets at a fixed native resolution ignore it.
    """

    name: str
    build: Callable[..., LabelledImages | CaptionedImages] | None = None
    description: str = ""
    needs_root: bool = False
    splits: tuple[str, ...] = ("test",)
    homepage: str = ""
    #: Whether ``build`` takes ``download=True`` and fetches missing files (torchvision's datasets).
    can_download: bool = False
    #: For a collection: the names of its member datasets (and no ``build``).
    members: tuple[str, ...] = ()
    #: What ``build`` returns: a key of ``DATA_TYPES``.
    provides: str = "labelled"
    #: Named variants of the dataset (a domain pair's source and target, say), the first the default; a spec
    #: picks one as ``NAME/VARIANT`` and ``build`` is given it as ``variant=...``.
    variants: tuple[str, ...] = ()

    def __post_init__(self):
        if (self.build is None) == (not self.members):
            raise PluginError(f"dataset {self.name!r} needs either a build function or members, not both")
        if self.provides not in DATA_TYPES:
            raise PluginError(f"dataset {self.name!r} provides {self.provides!r}; expected one of "
                              f"{', '.join(DATA_TYPES)}")


class DatasetSpec(NamedTuple):
    name: str
    variant: str | None
    root: Path | None


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """'name', 'name/variant', 'name:/root' or 'name/variant:/root' -> (name, variant, root)."""
    head, sep, root = spec.partition(":")
    name, slash, variant = head.partition("/")
    if not name.strip() or (slash and not variant.strip()):
        raise ParameterError(f"a dataset is written name, name/variant, name:/path/to/root or "
                             f"name/variant:/path/to/root; got {spec!r}.")
    return DatasetSpec(name.strip(), variant.strip() if slash else None,
                       Path(root).expanduser() if sep and root else None)


def dataset(spec: str, split: str | None = None, image_size: int = 224, download: bool = False,
            **params):
    """Build a registered dataset: ``dataset('cifar10:/data/cifar10')``, ``dataset('fakedata')``, or one of its
    variants: ``dataset('office31/amazon-to-webcam:/data/office31')``. ``split`` defaults to ``test``, or to
    the dataset's first split when it has no test split (a domain pair's ``train``).

    ``download=True`` lets a dataset that can (``can_download``) fetch its missing files into its root.
    """
    name, variant, root = parse_dataset_spec(spec)
    registration = get_host().get("dataset", name)
    entry: DatasetEntry = registration.obj
    if variant is not None and variant not in entry.variants:
        raise ParameterError(f"dataset {entry.name!r} has no variant {variant!r}; "
                             + (f"it has {', '.join(entry.variants)}." if entry.variants else "it has none."))
    if entry.variants:
        params["variant"] = variant or entry.variants[0]
    if entry.members:
        raise ParameterError(f"{entry.name!r} is a collection of {len(entry.members)} datasets "
                             f"({', '.join(entry.members)}); use datasets({entry.name!r}) to build them all.")
    if split is None:
        split = "test" if "test" in entry.splits else entry.splits[0]
    if split not in entry.splits:
        raise ParameterError(f"dataset {entry.name!r} has no split {split!r}; it has {', '.join(entry.splits)}.")
    if root is not None and not entry.needs_root:
        raise ParameterError(f"dataset {entry.name!r} reads no files, so it takes no folder: write {entry.name}, "
                             f"not {spec}.")
    if entry.needs_root:
        if root is None and os.environ.get(DATA_ENV):
            root = Path(os.environ[DATA_ENV]).expanduser() / entry.name
        if root is None:
            raise DataError(
                f"dataset {entry.name!r} needs its files: give the folder as {entry.name}:/path/to/data "
                f"or set {DATA_ENV} to a folder that holds {entry.name}/."
            )
        if download and entry.can_download:
            root.mkdir(parents=True, exist_ok=True)
            params["download"] = True
        if not root.exists():
            raise DataError(f"dataset {entry.name!r}: the folder {root} does not exist.")
    data = entry.build(root=root, split=split, image_size=image_size, **params)
    data.provider = registration.provenance
    if not isinstance(data, DATA_TYPES[entry.provides]):
        raise PluginError(f"dataset {entry.name!r} declares {entry.provides} data but built a {type(data).__name__}.")
    if len(data) == 0:
        raise DataError(f"dataset {entry.name!r} ({split} split{f' in {root}' if root else ''}) has no images.")
    return data


def expand_specs(specs: str | Sequence | Dataset) -> list:
    """'a,b:/root,c', a list of specs or built datasets, a dataset: one item (a spec or a built dataset) per
    dataset, collections expanded into their members."""
    if isinstance(specs, Dataset):
        return [specs]
    if isinstance(specs, str):
        specs = [s.strip() for s in specs.split(",") if s.strip()]
    items = []
    for spec in specs if isinstance(specs, Iterable) else [specs]:
        if isinstance(spec, str):
            entry: DatasetEntry = get_host().get("dataset", parse_dataset_spec(spec)[0]).obj
            if entry.members:
                items.extend(expand_specs(list(entry.members)))
                continue
        items.append(spec)
    return items


def check_distinct(built: list) -> list:
    """``built``, unless it is empty or names a dataset twice (ParameterError)."""
    if not built:
        raise ParameterError("no dataset given.")
    names = [d.name for d in built]
    if len(set(names)) != len(names):
        raise ParameterError(f"a dataset is listed twice: {', '.join(names)}.")
    return built


def datasets(specs: str | Sequence, split: str | None = None, image_size: int = 224, download: bool = False) -> list:
    """Build several datasets: 'a,b:/root,c', a list of specs or built datasets; collections expand."""
    return check_distinct([dataset(item, split=split, image_size=image_size, download=download)
                           if isinstance(item, str) else item for item in expand_specs(specs)])
