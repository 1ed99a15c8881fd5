"""The zero-shot evaluation suite of the seed papers: one adapter per dataset, and the two collections.

Each dataset is read from its files as released (``name:/path`` or ``$VLMSHIELD_DATA/<name>``), with
torchvision's dataset class where torchvision has one (so ``download=True``, ``--download`` on the command
line, fetches what torchvision can) and with ``imagenets.py`` for the ImageNet family. The test split is
what the papers evaluate on: the official test split where there is one (ImageNet and TinyImageNet: their
val split; DTD: partition 1), the whole dataset for Caltech-101, Caltech-256, SUN397 and EuroSAT, which
have none (as TTC evaluates them). Class names and templates are data (``prompts.py``): CLIP's
ensembles by default, TTC's single prompts in ``template_sets["single"]``.

Resolution, and so the threat model: by default, images whose size varies are resized (bicubic, shortest
side to the model's ``image_size``) and centre-cropped, as CLIP's preprocessing does, and eps is measured
on those pixels. Fixed-size low-resolution sets (CIFAR-10/100 32 px, STL-10 96 px, PCAM 96 px, EuroSAT
64 px, TinyImageNet 64 px) keep their native resolution by default: the model upsamples inside its forward
pass, and eps is measured on the dataset's own pixels (RobustBench's convention, and RobustVLM's for
CIFAR-10/100 and STL-10; RobustVLM resizes PCAM and EuroSAT to 224 before the attack). ``upsample=True``
resizes them like the others. ``preprocess={"resize": R, "crop": C, "interpolation": ...}`` replaces
both: every image's shortest side is resized to R pixels, then centre-cropped to C (the named protocols
use it: ``tecoa`` applies TTC's Resize 256 (bilinear) and CenterCrop 224 to every dataset, ``robustvlm``
resizes PCAM and EuroSAT to 224, bicubic, as RobustVLM does).

Collections: ``zs-suite`` is TTC's 16 datasets in TTC's order (``code/utils.py: DATASETS``; TeCoA's and
PMG-AFT's list, without TinyImageNet, the fine-tuning set), ``robustvlm-13`` RobustVLM's 13 in the order of
its ``CLIP_benchmark/benchmark/datasets.txt``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from vlmshield.api import DataError, DatasetEntry, LabelledImages, UnreadableImageError, error_summary, read_image

from .prompts import classnames, single_templates, templates_for, wnids


def _rgb(image: Image.Image) -> Image.Image:
    """Grey-scale and palette images (Caltech, some ImageNet files) as three channels."""
    return image.convert("RGB")


def _datasets():
    """torchvision's dataset classes, imported when a dataset is read (registering the suite needs none)."""
    from torchvision import datasets

    return datasets


def image_transform(image_size: int | None, preprocess: dict | None = None):
    """PIL image -> float tensor (3, H, W) in [0, 1].

    With ``preprocess`` (``{"resize": R, "crop": C, "interpolation": "bilinear" | "bicubic"}``): the
    shortest side resized to R pixels with that interpolation, then a centre crop of C. Without it:
    resized (bicubic) and centre-cropped to ``image_size``, or left as it is when that is None.
    """
    from torchvision import transforms

    if preprocess is not None:
        resize = [transforms.Resize(preprocess["resize"],
                                    interpolation=transforms.InterpolationMode(preprocess["interpolation"])),
                  transforms.CenterCrop(preprocess["crop"])]
    else:
        resize = [] if image_size is None else [
            transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size),
        ]
    return transforms.Compose([transforms.Lambda(_rgb), *resize, transforms.ToTensor()])


#: What PIL (and h5py) raise on a damaged file: OSError for most damage, SyntaxError from some decoders.
READ_ERRORS = (OSError, SyntaxError, Image.DecompressionBombError)


class ImageFiles(Dataset):
    """The items of a dataset read from files, with a damaged file as one DataError sentence.

    A dataset that reads each image through a ``loader`` (torchvision's ImageFolder, and its datasets that take
    ``loader=``) reads it with ``read_image``, which names the file; for one that opens its files itself, the
    error names the item and the folder."""

    def __init__(self, data: Dataset, name: str, root):
        if callable(getattr(data, "loader", None)):
            data.loader = partial(read_image, what=name)
        self.data, self.name, self.root = data, name, root

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        try:
            return self.data[index]
        except READ_ERRORS as error:
            raise UnreadableImageError(f"{self.name}: cannot read item {index} in {self.root} "
                                       f"({error_summary(error)}): replace or remove its file.") from error


@dataclass(frozen=True)
class Adapter:
    """How one dataset of the suite is read; calling it builds the dataset (a DatasetEntry's ``build``).

    ``load(root, split, transform, download)`` returns the torch dataset; a missing file surfaces as
    torchvision's RuntimeError "Dataset not found..." or as FileNotFoundError, and becomes one DataError
    that says where it looked, what it expected (``layout``, relative to the root) and how to get it. An image
    file that cannot be read is a DataError when its item is read (``ImageFiles``).
    """

    name: str
    load: Callable[[Path, str, Callable, bool], Dataset]
    layout: str
    homepage: str
    description: str
    splits: tuple[str, ...] = ("test",)
    #: Fixed low resolution: kept native unless ``upsample=True``.
    native: bool = False
    #: Whether torchvision can download it.
    downloadable: bool = True
    #: Python packages torchvision needs to read it.
    needs: tuple[str, ...] = ()

    def __call__(self, root, split: str = "test", image_size: int = 224, download: bool = False,
                 upsample: bool = False, preprocess: dict | None = None) -> LabelledImages:
        """The dataset's split; ``preprocess`` (a resize-and-crop rule, see ``image_transform``) replaces
        the default resolution handling (``image_size``, ``native``, ``upsample``)."""
        self._check_packages()
        transform = image_transform(None if self.native and not upsample else image_size, preprocess)
        try:
            data = self.load(Path(root), split, transform, download and self.downloadable)
        except (FileNotFoundError, NotADirectoryError):
            raise DataError(self._missing(root)) from None
        except RuntimeError as error:
            if "not found" not in str(error):
                raise
            raise DataError(self._missing(root)) from None
        names = classnames(self.name)
        self._check_classes(data, names, root)
        return LabelledImages(ImageFiles(data, self.name, root), names, templates_for(self.name, "ensemble"),
                              name=self.name, template_sets={"single": single_templates(self.name)})

    def entry(self) -> DatasetEntry:
        return DatasetEntry(name=self.name, build=self, description=self.description, needs_root=True,
                            splits=self.splits, homepage=self.homepage, can_download=self.downloadable)

    def _missing(self, root) -> str:
        how = ("rerun with --download (download=True) to fetch it" if self.downloadable
               else f"torchvision cannot download it, get it from {self.homepage}")
        return f"{self.name}: no complete copy in {root} (expected {self.layout}); {how}."

    def _check_packages(self) -> None:
        missing = [package for package in self.needs if importlib.util.find_spec(package) is None]
        if missing:
            raise DataError(f"{self.name} needs the Python package {' and '.join(missing)} to read its files: "
                            f"pip install 'vlmshield[data]'.")

    def _check_classes(self, data: Dataset, names: list[str], root) -> None:
        """A copy with fewer classes than the dataset would shift torchvision's labels: refuse it."""
        found = getattr(data, "classes", None) or getattr(data, "categories", None)
        if found is not None and len(found) != len(names):
            raise DataError(f"{self.name}: {root} has {len(found)} classes where the dataset has {len(names)}; "
                            f"the copy is incomplete or another dataset.")


def _cifar10(root, split, transform, download):
    return _datasets().CIFAR10(root, train=split == "train", transform=transform, download=download)


def _cifar100(root, split, transform, download):
    return _datasets().CIFAR100(root, train=split == "train", transform=transform, download=download)


def _stl10(root, split, transform, download):
    return _datasets().STL10(root, split=split, transform=transform, download=download)


def _caltech101(root, split, transform, download):
    return _datasets().Caltech101(root, target_type="category", transform=transform, download=download)


def _caltech256(root, split, transform, download):
    return _datasets().Caltech256(root, transform=transform, download=download)


def _oxford_pets(root, split, transform, download):
    split = {"train": "trainval"}.get(split, split)
    return _datasets().OxfordIIITPet(root, split=split, target_types="category", transform=transform, download=download)


def _flowers102(root, split, transform, download):
    return _datasets().Flowers102(root, split=split, transform=transform, download=download)


def _fgvc_aircraft(root, split, transform, download):
    return _datasets().FGVCAircraft(root, split=split, annotation_level="variant", transform=transform,
                                 download=download)


def _stanford_cars(root, split, transform, download):
    return _datasets().StanfordCars(root, split=split, transform=transform)


def _sun397(root, split, transform, download):
    return _datasets().SUN397(root, transform=transform, download=download)


def _food101(root, split, transform, download):
    return _datasets().Food101(root, split=split, transform=transform, download=download)


def _eurosat(root, split, transform, download):
    return _datasets().EuroSAT(root, transform=transform, download=download)


def _dtd(root, split, transform, download):
    return _datasets().DTD(root, split=split, partition=1, transform=transform, download=download)


def _pcam(root, split, transform, download):
    return _datasets().PCAM(root, split=split, transform=transform, download=download)


def _country211(root, split, transform, download):
    split = {"val": "valid"}.get(split, split)
    return _datasets().Country211(root, split=split, transform=transform, download=download)


def _imagenet(root, split, transform, download):
    from . import imagenets

    folder = imagenets.subfolder(root, "val" if split == "test" else "train")
    return imagenets.WnidFolder(folder, wnids("imagenet"), transform)


def _imagenet_r(root, split, transform, download):
    from . import imagenets

    return imagenets.WnidFolder(imagenets.subfolder(root, "imagenet-r"), wnids("imagenet-r"), transform)


def _imagenet_sketch(root, split, transform, download):
    from . import imagenets

    return imagenets.WnidFolder(imagenets.subfolder(root, "sketch"), wnids("imagenet"), transform)


def _tinyimagenet(root, split, transform, download):
    from . import imagenets

    return imagenets.TinyImageNet(root, split, wnids("tinyimagenet"), transform)


ADAPTERS = (
    Adapter("cifar10", _cifar10, "cifar-10-batches-py/ with the python version's batches and batches.meta",
            "https://www.cs.toronto.edu/~kriz/cifar.html", "CIFAR-10: 10 classes, 10,000 test images at 32 px.",
            splits=("test", "train"), native=True),
    Adapter("cifar100", _cifar100, "cifar-100-python/ with train, test and meta",
            "https://www.cs.toronto.edu/~kriz/cifar.html", "CIFAR-100: 100 classes, 10,000 test images at 32 px.",
            splits=("test", "train"), native=True),
    Adapter("stl10", _stl10, "stl10_binary/ with the test_X.bin, test_y.bin and train binaries",
            "https://cs.stanford.edu/~acoates/stl10/", "STL-10: 10 classes, 8,000 test images at 96 px.",
            splits=("test", "train"), native=True),
    Adapter("imagenet", _imagenet, "val/<wnid>/*.JPEG, the validation images sorted into their WordNet-id folders",
            "https://image-net.org/", "ImageNet-1k: 1,000 classes, the 50,000 validation images.",
            splits=("test", "train"), downloadable=False),
    Adapter("caltech101", _caltech101, "caltech101/101_ObjectCategories/<category>/image_NNNN.jpg",
            "https://data.caltech.edu/records/mzrjq-6wc02",
            "Caltech-101: 101 object categories (no background class), all 8,677 images.", needs=("scipy",)),
    Adapter("caltech256", _caltech256, "caltech256/256_ObjectCategories/NNN.<category>/NNN_NNNN.jpg",
            "https://data.caltech.edu/records/nyy15-4j048",
            "Caltech-256: 257 categories (clutter included), all 30,607 images."),
    Adapter("oxford-pets", _oxford_pets, "oxford-iiit-pet/ with images/ and annotations/<split>.txt",
            "https://www.robots.ox.ac.uk/~vgg/data/pets/", "Oxford-IIIT Pets: 37 breeds, 3,669 test images.",
            splits=("test", "train")),
    Adapter("flowers102", _flowers102, "flowers-102/ with jpg/, imagelabels.mat and setid.mat",
            "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
            "Oxford Flowers-102: 102 species, 6,149 test images.", splits=("test", "train", "val"), needs=("scipy",)),
    Adapter("fgvc-aircraft", _fgvc_aircraft,
            "fgvc-aircraft-2013b/data/ with images/, variants.txt and images_variant_<split>.txt",
            "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
            "FGVC-Aircraft: 100 variants, 3,333 test images.", splits=("test", "train", "val")),
    Adapter("stanford-cars", _stanford_cars,
            "stanford_cars/ with devkit/ (cars_meta.mat), cars_test/ and cars_test_annos_withlabels.mat",
            "https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
            "Stanford Cars: 196 models, 8,041 test images.", splits=("test", "train"), downloadable=False,
            needs=("scipy",)),
    Adapter("sun397", _sun397, "SUN397/ with ClassName.txt and <letter>/<scene>/sun_*.jpg",
            "https://vision.princeton.edu/projects/2010/SUN/", "SUN397: 397 scene categories, all 108,754 images."),
    Adapter("food101", _food101, "food-101/ with images/<dish>/*.jpg and meta/<split>.json",
            "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
            "Food-101: 101 dishes, 25,250 test images.", splits=("test", "train")),
    Adapter("eurosat", _eurosat, "eurosat/2750/<land-use class>/*.jpg", "https://github.com/phelber/EuroSAT",
            "EuroSAT RGB: 10 land-use classes, all 27,000 satellite images at 64 px.", native=True),
    Adapter("dtd", _dtd, "dtd/dtd/ with images/<texture>/*.jpg and labels/<split>1.txt",
            "https://www.robots.ox.ac.uk/~vgg/data/dtd/",
            "Describable Textures: 47 textures, the 1,880 test images of partition 1.",
            splits=("test", "train", "val")),
    Adapter("pcam", _pcam, "pcam/ with camelyonpatch_level_2_split_<split>_x.h5 and _y.h5",
            "https://github.com/basveeling/pcam",
            "PatchCamelyon: lymph-node patches with or without metastatic tissue, 32,768 test images at 96 px.",
            splits=("test", "train", "val"), native=True, needs=("h5py",)),
    Adapter("country211", _country211, "country211/<split>/<country code>/*.jpg",
            "https://github.com/openai/CLIP/blob/main/data/country211.md",
            "Country211: geolocation into 211 countries, 21,100 test images.", splits=("test", "train", "val")),
    Adapter("imagenet-r", _imagenet_r, "imagenet-r/<wnid>/*.jpg, the release's 200 WordNet-id folders",
            "https://github.com/hendrycks/imagenet-r",
            "ImageNet-R: renditions (art, cartoons, sketches, ...) of 200 ImageNet classes, 30,000 images.",
            downloadable=False),
    Adapter("imagenet-sketch", _imagenet_sketch, "sketch/<wnid>/*.JPEG, the release's 1,000 WordNet-id folders",
            "https://github.com/HaohanWang/ImageNet-Sketch",
            "ImageNet-Sketch: sketches of the 1,000 ImageNet classes, 50,889 images.", downloadable=False),
    Adapter("tinyimagenet", _tinyimagenet,
            "tiny-imagenet-200/ with wnids.txt, val/images/ with val/val_annotations.txt, and train/<wnid>/images/",
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            "TinyImageNet: 200 ImageNet classes at 64 px; test is its 10,000 labelled val images.",
            splits=("test", "train"), native=True, downloadable=False),
)

ZS_SUITE = ("cifar10", "cifar100", "stl10", "imagenet", "caltech101", "caltech256", "oxford-pets", "flowers102",
            "fgvc-aircraft", "stanford-cars", "sun397", "country211", "food101", "eurosat", "dtd", "pcam")
ROBUSTVLM_13 = ("cifar10", "stl10", "cifar100", "stanford-cars", "caltech101", "oxford-pets", "flowers102", "dtd",
                "eurosat", "fgvc-aircraft", "pcam", "imagenet-r", "imagenet-sketch")

COLLECTIONS = (
    DatasetEntry("zs-suite", members=ZS_SUITE, homepage="https://github.com/Sxing2/CLIP-Test-time-Counterattacks",
                 description="The 16 zero-shot datasets of TeCoA, PMG-AFT and TTC, in TTC's order."),
    DatasetEntry("robustvlm-13", members=ROBUSTVLM_13, homepage="https://github.com/chs20/RobustVLM",
                 description="The 13 zero-shot datasets of RobustVLM's (FARE's) table, in its order."),
)

ENTRIES = tuple(adapter.entry() for adapter in ADAPTERS) + COLLECTIONS
