"""Unsupervised domain adaptation benchmarks: each builds a ``DomainPair`` (labelled source, unlabelled target,
labelled target test) from the files as released.

A variant names the pair, ``SOURCE-to-TARGET`` in lowercase (``office31/amazon-to-webcam:/data/office31``); every
ordered pair of a benchmark's domains is a variant, the first listed the default. The root holds:

- ``office31``: the archive ``domain_adaptation_images.tar.gz`` extracted, ``ROOT/<domain>/images/<class>/*.jpg``
  (domains amazon, dslr, webcam);
- ``office-home``: ``ROOT/<Art|Clipart|Product|Real_World>/<class>/*.jpg``;
- ``visda2017``: the classification release, ``ROOT/train/`` (synthetic) and ``ROOT/validation/`` (real), each with
  its ``image_list.txt`` (``<class>/<file> <label>``);
- ``domainnet``: the cleaned release, ``ROOT/<domain>/<class>/*.jpg`` with ``ROOT/<domain>_train.txt`` and
  ``ROOT/<domain>_test.txt`` (``<domain>/<class>/<file> <label>``);
- ``digits``: ``ROOT/mnist/`` (``MNIST/raw/`` with the four idx files, unzipped), ``ROOT/usps/`` (``usps.bz2``,
  ``usps.t.bz2``) and ``ROOT/svhn/`` (``train_32x32.mat``, ``test_32x32.mat``), as torchvision's MNIST, USPS and
  SVHN classes read them and leave them after ``download=True`` (``--download``).

Transfer-Learning-Library's (tllib) image lists, ``ROOT/image_list/<domain>.txt`` (Office-31, Office-Home),
``ROOT/image_list/<train|validation>.txt`` (VisDA-2017) and ``ROOT/image_list/<domain>_<split>.txt`` (DomainNet),
lines ``<path relative to ROOT> <label>``, are read where the release's own lists are absent; where a benchmark has
no list at all (Office-31, Office-Home, VisDA-2017), its class folders are walked. Labels come from a list as
written; a walked folder is labelled by its place in the class list, so both ways label an image alike.

Protocols, as UDA papers report them: Office-31, Office-Home and VisDA-2017 are transductive, the target is the
whole target domain (VisDA-2017: its validation set), unlabelled to adapt on and labelled to test on; DomainNet
adapts on the target's train list and tests on its test list; digits adapt on the target's train split and test
on its test split. The source is the whole source domain (DomainNet, digits: its train split).

Class names are the class folders of each benchmark in tllib's label order (``CLASSES`` of its ``office31.py``,
``officehome.py``, ``visda2017.py`` and ``domainnet.py``), ``_`` read as a space; digits are "0" to "9". The prompt
is CLIP's "a photo of a {}." (digits: CLIP's MNIST prompt). Only paths and labels are read when a pair is built;
images are decoded when an item is read, resized (bicubic, shortest side) and centre-cropped to the model's input
size (digits too, grey ones as three channels); a protocol's ``preprocess`` rule replaces that.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from vlmshield.api import (
    DEFAULT_TEMPLATES,
    DataError,
    DatasetEntry,
    DomainPair,
    LabelledImages,
    UnlabelledImages,
    read_image,
)

from .prompts import single_templates
from .zeroshot import image_transform

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

OFFICE31_CLASSES = tuple("""
back_pack bike bike_helmet bookcase bottle calculator desk_chair desk_lamp desktop_computer file_cabinet headphones
keyboard laptop_computer letter_tray mobile_phone monitor mouse mug paper_notebook pen phone printer projector punchers
ring_binder ruler scissors speaker stapler tape_dispenser trash_can""".split())

OFFICE_HOME_CLASSES = tuple("""
Drill Exit_Sign Bottle Glasses Computer File_Cabinet Shelf Toys Sink Laptop Kettle Folder Keyboard Flipflops Pencil Bed
Hammer ToothBrush Couch Bike Postit_Notes Mug Webcam Desk_Lamp Telephone Helmet Mouse Pen Monitor Mop Sneakers Notebook
Backpack Alarm_Clock Push_Pin Paper_Clip Batteries Radio Fan Ruler Pan Screwdriver Trash_Can Printer Speaker Eraser
Bucket Chair Calendar Calculator Flowers Lamp_Shade Spoon Candles Clipboards Scissors TV Curtains Fork Soda Table Knives
Oven Refrigerator Marker""".split())

VISDA_CLASSES = tuple("aeroplane bicycle bus car horse knife motorcycle person plant skateboard train truck".split())

DOMAINNET_CLASSES = tuple("""
aircraft_carrier airplane alarm_clock ambulance angel animal_migration ant anvil apple arm asparagus axe backpack
banana bandage barn baseball baseball_bat basket basketball bat bathtub beach bear beard bed bee belt bench bicycle
binoculars bird birthday_cake blackberry blueberry book boomerang bottlecap bowtie bracelet brain bread bridge
broccoli broom bucket bulldozer bus bush butterfly cactus cake calculator calendar camel camera camouflage campfire
candle cannon canoe car carrot castle cat ceiling_fan cello cell_phone chair chandelier church circle clarinet clock
cloud coffee_cup compass computer cookie cooler couch cow crab crayon crocodile crown cruise_ship cup diamond
dishwasher diving_board dog dolphin donut door dragon dresser drill drums duck dumbbell ear elbow elephant envelope
eraser eye eyeglasses face fan feather fence finger fire_hydrant fireplace firetruck fish flamingo flashlight
flip_flops floor_lamp flower flying_saucer foot fork frog frying_pan garden garden_hose giraffe goatee golf_club
grapes grass guitar hamburger hammer hand harp hat headphones hedgehog helicopter helmet hexagon hockey_puck
hockey_stick horse hospital hot_air_balloon hot_dog hot_tub hourglass house house_plant hurricane ice_cream jacket
jail kangaroo key keyboard knee knife ladder lantern laptop leaf leg light_bulb lighter lighthouse lightning line
lion lipstick lobster lollipop mailbox map marker matches megaphone mermaid microphone microwave monkey moon
mosquito motorbike mountain mouse moustache mouth mug mushroom nail necklace nose ocean octagon octopus onion oven
owl paintbrush paint_can palm_tree panda pants paper_clip parachute parrot passport peanut pear peas pencil penguin
piano pickup_truck picture_frame pig pillow pineapple pizza pliers police_car pond pool popsicle postcard potato
power_outlet purse rabbit raccoon radio rain rainbow rake remote_control rhinoceros rifle river roller_coaster
rollerskates sailboat sandwich saw saxophone school_bus scissors scorpion screwdriver sea_turtle see_saw shark sheep
shoe shorts shovel sink skateboard skull skyscraper sleeping_bag smiley_face snail snake snorkel snowflake snowman
soccer_ball sock speedboat spider spoon spreadsheet square squiggle squirrel stairs star steak stereo stethoscope
stitches stop_sign stove strawberry streetlight string_bean submarine suitcase sun swan sweater swing_set sword
syringe table teapot teddy-bear telephone television tennis_racquet tent The_Eiffel_Tower The_Great_Wall_of_China
The_Mona_Lisa tiger toaster toe toilet tooth toothbrush toothpaste tornado tractor traffic_light train tree triangle
trombone truck trumpet t-shirt umbrella underwear van vase violin washing_machine watermelon waterslide whale wheel
windmill wine_bottle wine_glass wristwatch yoga zebra zigzag""".split())

#: CLIP's prompt for MNIST (its ``data/prompts.md``), used for every digit domain.
DIGIT_TEMPLATES = ('a photo of the number: "{}".',)


class ListedImages(Dataset):
    """(image in [0, 1], label) items of (image path, label) pairs, each image read when its item is."""

    def __init__(self, items: list[tuple[Path, int]], transform: Callable, what: str):
        self.items, self.transform, self.what = items, transform, what

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        return self.transform(read_image(path, self.what)), label


def read_list(path: Path, base: Path, classes: int, what: str) -> list[tuple[Path, int]]:
    """(image path, label) of each line ``<path relative to base> <label>`` of the image list at ``path``."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.rsplit(None, 1)
        if len(fields) != 2 or not fields[1].isdecimal() or int(fields[1]) >= classes:
            raise DataError(f"{what}: line {number} of {path} is not '<image path> <label>' with a label from 0 to "
                            f"{classes - 1}: {line.strip()!r}.")
        items.append((base / fields[0].strip(), int(fields[1])))
    return items


def walk(folder: Path, classes: tuple[str, ...], what: str) -> list[tuple[Path, int]]:
    """(image path, label) of the images in the class folders of ``folder``, labelled by their place in ``classes``."""
    index = {name: label for label, name in enumerate(classes)}
    items = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in index:
            raise DataError(f"{what}: {folder} has a folder {sub.name}/ that is not one of the {len(classes)} class "
                            f"folders (such as {classes[0]}/); is it another dataset?")
        items += [(p, index[sub.name]) for p in sorted(sub.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return items


@dataclass(frozen=True, eq=False)
class Benchmark:
    """A UDA benchmark read from image lists or class folders; calling it builds a variant's DomainPair (a
    DatasetEntry's ``build``).

    ``domains`` maps a domain's variant name to its name on disk; ``locate(root, domain, split)`` gives the image
    lists that may hold that domain's split, as (list file, folder its paths are relative to), the first found
    read, and the class folder to walk when none is there (or None); ``splits`` is the split adapted on (the source's
    and the target's) and the target's split tested on (None: the whole domain, the transductive protocol)."""

    name: str
    classes: tuple[str, ...]
    domains: dict[str, str]
    locate: Callable[[Path, str, str | None], tuple[list[tuple[Path, Path]], Path | None]]
    layout: str
    homepage: str
    description: str
    variants: tuple[str, ...]
    splits: tuple[str | None, str | None] = (None, None)

    def __call__(self, root, split: str = "train", image_size: int = 224, variant: str | None = None,
                 preprocess: dict | None = None) -> DomainPair:
        source, target = (variant or self.variants[0]).split("-to-")
        transform = image_transform(image_size, preprocess)
        classnames = [name.replace("_", " ") for name in self.classes]

        def labelled(domain: str, part: str | None) -> LabelledImages:
            what = f"{self.name}/{domain}" + (f"-{part}" if part else "")
            images = ListedImages(self.items(Path(root), self.domains[domain], part), transform, what)
            return LabelledImages(images, classnames, DEFAULT_TEMPLATES, what,
                                  template_sets={"single": single_templates(self.name)})

        train, test = self.splits
        source_train, target_train = labelled(source, train), labelled(target, train)
        target_test = target_train if test == train else labelled(target, test)
        return DomainPair(source_train, UnlabelledImages(target_train.data, target_train.name), target_test,
                          f"{self.name}/{source}-to-{target}")

    def items(self, root: Path, domain: str, split: str | None) -> list[tuple[Path, int]]:
        """(image path, label) of a domain's split: from its first image list found, else from its class folders."""
        lists, folder = self.locate(root, domain, split)
        listed = next(((path, base) for path, base in lists if path.is_file()), None)
        if listed is not None:
            items = read_list(*listed, len(self.classes), self.name)
        elif folder is not None and folder.is_dir():
            items = walk(folder, self.classes, self.name)
        else:
            expected = " or ".join(str(path) for path, _ in lists) + (f" or a folder {folder}" if folder else "")
            raise DataError(f"{self.name}: no {expected} (expected {self.layout}); get it from {self.homepage}.")
        if not items:
            raise DataError(f"{self.name}: {listed[0] if listed else folder} has no image (expected {self.layout}).")
        if not items[0][0].is_file():
            raise DataError(f"{self.name}: the image {items[0][0]} is missing (expected {self.layout}); get it from "
                            f"{self.homepage}.")
        return items

    def entry(self) -> DatasetEntry:
        return DatasetEntry(name=self.name, build=self, description=self.description, needs_root=True,
                            splits=("train",), homepage=self.homepage, provides="domain-pair", variants=self.variants)


def pairs(domains, first: str) -> tuple[str, ...]:
    """Every ordered pair of ``domains`` as 'source-to-target', ``first`` first."""
    every = [f"{s}-to-{t}" for s in domains for t in domains if s != t]
    return (first, *(v for v in every if v != first))


def _office31(root, domain, split):
    return [(root / "image_list" / f"{domain}.txt", root)], root / domain / "images"


def _office_home(root, domain, split):
    return [(root / "image_list" / f"{domain}.txt", root)], root / domain


def _visda(root, domain, split):
    lists = [(root / domain / "image_list.txt", root / domain), (root / "image_list" / f"{domain}.txt", root)]
    return lists, root / domain


def _domainnet(root, domain, split):
    return [(root / f"{domain}_{split}.txt", root), (root / "image_list" / f"{domain}_{split}.txt", root)], None


OFFICE_HOME_DOMAINS = {"art": "Art", "clipart": "Clipart", "product": "Product", "real-world": "Real_World"}
DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")

BENCHMARKS = (
    Benchmark("office31", OFFICE31_CLASSES, {d: d for d in ("amazon", "dslr", "webcam")}, _office31,
              "<domain>/images/<class>/*.jpg for amazon, dslr and webcam, from domain_adaptation_images.tar.gz, "
              "or tllib's image_list/<domain>.txt", "https://faculty.cc.gatech.edu/~judy/domainadapt/",
              "Office-31: 31 office objects in 3 domains (amazon, dslr, webcam), 4,110 images; transductive UDA.",
              pairs(("amazon", "dslr", "webcam"), "amazon-to-webcam")),
    Benchmark("office-home", OFFICE_HOME_CLASSES, OFFICE_HOME_DOMAINS, _office_home,
              "<Art|Clipart|Product|Real_World>/<class>/*.jpg, or tllib's image_list/<domain>.txt",
              "https://www.hemanthdv.org/officeHomeDataset.html",
              "Office-Home: 65 classes in 4 domains (art, clipart, product, real-world), 15,588 images; transductive "
              "UDA.", pairs(OFFICE_HOME_DOMAINS, "art-to-clipart")),
    Benchmark("visda2017", VISDA_CLASSES, {"synthetic": "train", "real": "validation"}, _visda,
              "train/ and validation/, each with its image_list.txt and <class>/ folders, from the classification "
              "release", "https://ai.bu.edu/visda-2017/",
              "VisDA-2017 classification: 12 classes, 152,397 synthetic renderings to 55,388 real photos (its "
              "validation set, labelled to test).", ("synthetic-to-real",)),
    Benchmark("domainnet", DOMAINNET_CLASSES, {d: d for d in DOMAINNET_DOMAINS}, _domainnet,
              "<domain>_train.txt and <domain>_test.txt with the images at <domain>/<class>/*.jpg, from the cleaned "
              "release", "https://ai.bu.edu/M3SDA/",
              "DomainNet (cleaned): 345 classes in 6 domains, ~586,000 images; adapt on the target's train list, "
              "test on its test list.", pairs(DOMAINNET_DOMAINS, "real-to-clipart"), ("train", "test")),
)

DIGITS = "digits"
DIGITS_LAYOUT = ("mnist/MNIST/raw/ with the idx files (train- and t10k-, images and labels, unzipped), usps/ with "
                 "usps.bz2 and usps.t.bz2, svhn/ with train_32x32.mat and test_32x32.mat")


def _digit_split(root: Path, domain: str, train: bool, transform: Callable, download: bool) -> Dataset:
    """torchvision's dataset of ``domain``'s train or test split, in ``root/<domain>/``."""
    from torchvision import datasets

    if domain == "svhn" and importlib.util.find_spec("scipy") is None:
        raise DataError(f"{DIGITS}: svhn needs the Python package scipy to read its files: "
                        f"pip install 'vlmshield[data]'.")
    folder = root / domain
    try:
        if domain == "mnist":
            return datasets.MNIST(folder, train=train, transform=transform, download=download)
        if domain == "usps":
            return datasets.USPS(folder, train=train, transform=transform, download=download)
        return datasets.SVHN(folder, split="train" if train else "test", transform=transform, download=download)
    except (FileNotFoundError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and "not found" not in str(error):
            raise
        raise DataError(f"{DIGITS}: no complete copy of {domain} in {folder} (expected {DIGITS_LAYOUT}); rerun with "
                        f"--download (download=True) to fetch it.") from None


def build_digits(root, split: str = "train", image_size: int = 224, variant: str = "svhn-to-mnist",
                 download: bool = False, preprocess: dict | None = None) -> DomainPair:
    source, target = variant.split("-to-")
    transform, classnames = image_transform(image_size, preprocess), [str(digit) for digit in range(10)]

    def labelled(domain, train):
        name = f"{DIGITS}/{domain}-{'train' if train else 'test'}"
        return LabelledImages(_digit_split(Path(root), domain, train, transform, download), classnames,
                              DIGIT_TEMPLATES, name, template_sets={"single": single_templates(DIGITS)})

    source_train, target_train = labelled(source, True), labelled(target, True)
    return DomainPair(source_train, UnlabelledImages(target_train.data, target_train.name), labelled(target, False),
                      f"{DIGITS}/{variant}")


DIGITS_ENTRY = DatasetEntry(
    name=DIGITS, build=build_digits, needs_root=True, splits=("train",), provides="domain-pair", can_download=True,
    homepage="http://ufldl.stanford.edu/housenumbers/", variants=("svhn-to-mnist", "mnist-to-usps", "usps-to-mnist"),
    description="Digits: SVHN, MNIST and USPS (10 classes) read by torchvision; adapt on the target's train split, "
                "test on its test split.",
)

ENTRIES = tuple(benchmark.entry() for benchmark in BENCHMARKS) + (DIGITS_ENTRY,)
