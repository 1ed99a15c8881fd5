"""The zero-shot suite's adapters, each read from a tiny fixture written in the dataset's real on-disk format.

Every fixture is the release's extracted layout (or what torchvision's ``download=True`` leaves on disk)
with a handful of images; nothing is downloaded. Where torchvision checks the md5 of extracted files
(CIFAR, STL-10, Flowers-102), the fixture's files cannot have the release's checksums, so the test pins the
class's checksum table to the fixture's own md5s (``pin_md5``): torchvision's integrity check still runs,
on the fixture. Where the release has a metadata file listing every class (CIFAR's meta, SUN397's
ClassName.txt, ...), the fixture lists them all too, because the adapters refuse a copy with fewer classes.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets as tv

import vlmshield.api as vs
from vlmshield.api import DataError, ParameterError
from vlmshield.datasets import prompts, zeroshot
from vlmshield.datasets.prompts import SINGLE_TEMPLATE, templates_for

SIZE = 48  # the model input size the tests ask for: resized datasets come out SIZE x SIZE

CLASS_COUNTS = {
    "cifar10": 10, "cifar100": 100, "stl10": 10, "imagenet": 1000, "caltech101": 101, "caltech256": 257,
    "oxford-pets": 37, "flowers102": 102, "fgvc-aircraft": 100, "stanford-cars": 196, "sun397": 397, "food101": 101,
    "eurosat": 10, "dtd": 47, "pcam": 2, "country211": 211, "imagenet-r": 200, "imagenet-sketch": 1000,
    "tinyimagenet": 200,
}
#: Ensemble sizes as RobustVLM's notes count them (CLIP_benchmark's templates; 80 ImageNet ones as fallback).
ENSEMBLE_SIZES = {
    "cifar10": 18, "cifar100": 18, "stl10": 2, "imagenet": 80, "caltech101": 34, "caltech256": 80, "oxford-pets": 1,
    "flowers102": 1, "fgvc-aircraft": 2, "stanford-cars": 8, "sun397": 2, "food101": 1, "eurosat": 3, "dtd": 8,
    "pcam": 2, "country211": 5, "imagenet-r": 80, "imagenet-sketch": 80, "tinyimagenet": 80,
}
NATIVE = {"cifar10": 32, "cifar100": 32, "stl10": 96, "pcam": 96, "eurosat": 64, "tinyimagenet": 64}


def jpeg(path, size=(40, 30), mode="RGB"):
    """A gradient image (grey-scale with mode "L"), so that a decoded image is never constant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = Image.linear_gradient("L").resize(size)
    image = grey if mode == "L" else Image.merge("RGB", (grey, grey.transpose(Image.Transpose.FLIP_TOP_BOTTOM), grey))
    image.save(path, "JPEG")


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def pickle_to(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def pin_md5(monkeypatch, cls, attribute, folder):
    """Point a torchvision checksum list ([file, md5], ...) at the fixture's files; drop files it lacks."""
    pinned = [[name, md5(folder / name)] for name, _ in getattr(cls, attribute) if (folder / name).exists()]
    monkeypatch.setattr(cls, attribute, pinned)


def cifar_batch(labels, key):
    pixels = np.random.default_rng(0).integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
    return {"data": pixels, key: list(labels)}


# Each writer lays out one dataset under ``root`` and returns the labels of its items, in item order.

def write_cifar10(root, monkeypatch):
    folder = root / "cifar-10-batches-py"
    pickle_to(folder / "test_batch", cifar_batch([3, 9, 0], "labels"))
    pickle_to(folder / "data_batch_1", cifar_batch([1], "labels"))
    pickle_to(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    for attribute in ("train_list", "test_list"):
        pin_md5(monkeypatch, tv.CIFAR10, attribute, folder)
    monkeypatch.setattr(tv.CIFAR10, "meta", {**tv.CIFAR10.meta, "md5": md5(folder / "batches.meta")})
    return [3, 9, 0]


def write_cifar100(root, monkeypatch):
    folder = root / "cifar-100-python"
    pickle_to(folder / "test", {**cifar_batch([42, 99], "fine_labels"), "coarse_labels": [0, 1]})
    pickle_to(folder / "train", {**cifar_batch([7], "fine_labels"), "coarse_labels": [0]})
    pickle_to(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)]})
    for attribute in ("train_list", "test_list"):
        pin_md5(monkeypatch, tv.CIFAR100, attribute, folder)
    monkeypatch.setattr(tv.CIFAR100, "meta", {**tv.CIFAR100.meta, "md5": md5(folder / "meta")})
    return [42, 99]


def write_stl10(root, monkeypatch):
    """STL-10's binaries: uint8 images (N, 3, 96, 96) column-major, labels 1-10; only the test files here."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    np.random.default_rng(0).integers(0, 256, (2, 3, 96, 96), dtype=np.uint8).tofile(folder / "test_X.bin")
    np.array([10, 1], dtype=np.uint8).tofile(folder / "test_y.bin")
    write_lines(folder / "class_names.txt", [f"class{i}" for i in range(10)])
    for attribute in ("train_list", "test_list"):
        pin_md5(monkeypatch, tv.STL10, attribute, folder)
    return [9, 0]


def write_pcam(root, monkeypatch):
    """PCAM's HDF5 pair, as torchvision's download leaves it (no checksum is checked on the .h5 files)."""
    h5py = pytest.importorskip("h5py")
    folder = root / "pcam"
    folder.mkdir(parents=True)
    with h5py.File(folder / "camelyonpatch_level_2_split_test_x.h5", "w") as f:
        f["x"] = np.random.default_rng(0).integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    with h5py.File(folder / "camelyonpatch_level_2_split_test_y.h5", "w") as f:
        f["y"] = np.array([1, 0, 1], dtype=np.uint8).reshape(3, 1, 1, 1)
    return [1, 0, 1]


def write_caltech101(root, monkeypatch):
    """101_ObjectCategories with all 101 folders and BACKGROUND_Google (which torchvision drops)."""
    folder = root / "caltech101" / "101_ObjectCategories"
    names = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "Motorbikes"] + [f"cat{i:03d}" for i in range(97)]
    for name in names:
        (folder / name).mkdir(parents=True)
    jpeg(folder / "Leopards" / "image_0001.jpg")
    jpeg(folder / "Leopards" / "image_0002.jpg")
    jpeg(folder / "cat000" / "image_0001.jpg", mode="L")  # Caltech has grey-scale images
    return [2, 2, 4]


def write_caltech256(root, monkeypatch):
    folder = root / "caltech256" / "256_ObjectCategories"
    for i in range(1, 258):
        (folder / f"{i:03d}.category{i}").mkdir(parents=True)
    jpeg(folder / "001.category1" / "001_0001.jpg")
    jpeg(folder / "257.category257" / "257_0001.jpg", mode="L")
    jpeg(folder / "257.category257" / "257_0002.jpg")
    return [0, 256, 256]


def write_oxford_pets(root, monkeypatch):
    """images/ and annotations/test.txt ("<image id> <class 1-37> <species> <breed id>"), one image per breed."""
    base = root / "oxford-iiit-pet"
    lines = [f"breed{i:02d}_1 {i} 1 {i}" for i in range(1, 38)]
    write_lines(base / "annotations" / "test.txt", lines)
    for i in range(1, 38):
        jpeg(base / "images" / f"breed{i:02d}_1.jpg")
    return list(range(37))


def write_flowers102(root, monkeypatch):
    sio = pytest.importorskip("scipy.io")
    base = root / "flowers-102"
    for i in (1, 2, 3):
        jpeg(base / "jpg" / f"image_{i:05d}.jpg")
    sio.savemat(base / "imagelabels.mat", {"labels": np.array([102, 5, 1])})
    sio.savemat(base / "setid.mat", {"tstid": np.array([2, 1]), "trnid": np.array([3]), "valid": np.array([3])})
    monkeypatch.setattr(tv.Flowers102, "_file_dict", {
        "image": tv.Flowers102._file_dict["image"],  # the archive: checked only when downloading
        "label": ("imagelabels.mat", md5(base / "imagelabels.mat")),
        "setid": ("setid.mat", md5(base / "setid.mat")),
    })
    return [4, 101]


def write_fgvc_aircraft(root, monkeypatch):
    data = root / "fgvc-aircraft-2013b" / "data"
    write_lines(data / "variants.txt", [f"variant-{i:03d}" for i in range(100)])
    write_lines(data / "images_variant_test.txt", ["0034309 variant-099", "1514522 variant-007"])
    jpeg(data / "images" / "0034309.jpg")
    jpeg(data / "images" / "1514522.jpg")
    return [99, 7]


def write_stanford_cars(root, monkeypatch):
    sio = pytest.importorskip("scipy.io")
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    sio.savemat(base / "devkit" / "cars_meta.mat",
                {"class_names": np.array([f"Car {i} Sedan 2012" for i in range(196)], dtype=object)})
    annotations = np.array([("00001.jpg", 196), ("00002.jpg", 1)], dtype=[("fname", object), ("class", object)])
    sio.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": annotations})
    jpeg(base / "cars_test" / "00001.jpg")
    jpeg(base / "cars_test" / "00002.jpg")
    return [195, 0]


def write_sun397(root, monkeypatch):
    """ClassName.txt lists all 397 "/<letter>/<scene>" paths; the images are <letter>/<scene>/sun_*.jpg."""
    base = root / "SUN397"
    write_lines(base / "ClassName.txt", [f"/s/scene_{i:03d}" for i in range(397)])
    jpeg(base / "s" / "scene_396" / "sun_aaa.jpg")
    jpeg(base / "s" / "scene_396" / "sun_aab.jpg")
    return [396, 396]


def write_food101(root, monkeypatch):
    base = root / "food-101"
    meta = {f"dish_{i:03d}": [] for i in range(101)}
    meta["dish_100"] = ["dish_100/1001"]
    meta["dish_000"] = ["dish_000/7"]
    write_lines(base / "meta" / "test.json", [json.dumps(meta)])
    jpeg(base / "images" / "dish_100" / "1001.jpg")
    jpeg(base / "images" / "dish_000" / "7.jpg")
    return [0, 100]


def write_eurosat(root, monkeypatch):
    classes = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
               "Residential", "River", "SeaLake"]
    for name in classes:
        jpeg(root / "eurosat" / "2750" / name / f"{name}_1.jpg", size=(64, 64))
    return list(range(10))


def write_dtd(root, monkeypatch):
    """dtd/dtd/images/<texture>/ and labels/test1.txt (partition 1), one image of each of the 47 textures."""
    data = root / "dtd" / "dtd"
    lines = [f"texture{i:02d}/texture{i:02d}_0001.jpg" for i in reversed(range(47))]
    write_lines(data / "labels" / "test1.txt", lines)
    for line in lines:
        jpeg(data / "images" / line)
    return list(reversed(range(47)))


def write_country211(root, monkeypatch):
    for i in range(211):
        jpeg(root / "country211" / "test" / f"C{i:03d}" / "1.jpg", size=(12, 10))
    return list(range(211))


def write_imagenet(root, monkeypatch):
    """ImageNet val sorted into wnid folders; two of the 1000 are enough, labels follow the standard index."""
    jpeg(root / "val" / "n01440764" / "ILSVRC2012_val_00000293.JPEG")
    jpeg(root / "val" / "n15075141" / "ILSVRC2012_val_00000001.JPEG", mode="L")
    return [0, 999]


def write_imagenet_r(root, monkeypatch):
    jpeg(root / "imagenet-r" / "n01443537" / "art_0.jpg")
    jpeg(root / "imagenet-r" / "n12267677" / "cartoon_3.jpg")
    return [0, 199]


def write_imagenet_sketch(root, monkeypatch):
    jpeg(root / "sketch" / "n01443537" / "sketch_1.JPEG", mode="L")
    return [1]


def write_tinyimagenet(root, monkeypatch):
    """tiny-imagenet-200/ as released: wnids.txt (unsorted), words.txt, val/images + val_annotations.txt."""
    base = root / "tiny-imagenet-200"
    wnids = prompts.wnids("tinyimagenet")
    write_lines(base / "wnids.txt", reversed(wnids))
    write_lines(base / "words.txt", [f"{wnid}\tsomething" for wnid in wnids])
    write_lines(base / "val" / "val_annotations.txt",
                [f"val_0.JPEG\t{wnids[-1]}\t0\t0\t63\t63", f"val_1.JPEG\t{wnids[0]}\t4\t4\t60\t60"])
    jpeg(base / "val" / "images" / "val_0.JPEG", size=(64, 64))
    jpeg(base / "val" / "images" / "val_1.JPEG", size=(64, 64))
    return [199, 0]


WRITERS = {
    "cifar10": write_cifar10, "cifar100": write_cifar100, "stl10": write_stl10, "imagenet": write_imagenet,
    "caltech101": write_caltech101, "caltech256": write_caltech256, "oxford-pets": write_oxford_pets,
    "flowers102": write_flowers102, "fgvc-aircraft": write_fgvc_aircraft, "stanford-cars": write_stanford_cars,
    "sun397": write_sun397, "food101": write_food101, "eurosat": write_eurosat, "dtd": write_dtd, "pcam": write_pcam,
    "country211": write_country211, "imagenet-r": write_imagenet_r, "imagenet-sketch": write_imagenet_sketch,
    "tinyimagenet": write_tinyimagenet,
}
ADAPTER_NAMES = sorted(adapter.name for adapter in zeroshot.ADAPTERS)


def test_every_adapter_has_a_fixture_and_the_issues_names():
    assert sorted(WRITERS) == ADAPTER_NAMES == sorted(CLASS_COUNTS)


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_adapter_reads_the_release_layout(name, tmp_path, monkeypatch):
    labels = WRITERS[name](tmp_path, monkeypatch)
    data = vs.dataset(f"{name}:{tmp_path}", image_size=SIZE)
    assert data.name == name and len(data) == len(labels)
    assert [int(data[i][1]) for i in range(len(data))] == labels
    image = data[0][0]
    side = NATIVE.get(name, SIZE)
    assert image.shape == (3, side, side) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1 and image.max() > image.min()
    assert len(data.classnames) == CLASS_COUNTS[name]
    assert data.templates == templates_for(name, "ensemble") and len(data.templates) == ENSEMBLE_SIZES[name]
    assert data.template_sets == {"single": templates_for(name, "single")}


def test_low_resolution_sets_upsample_on_request(tmp_path, monkeypatch):
    write_cifar10(tmp_path, monkeypatch)
    assert vs.dataset(f"cifar10:{tmp_path}", image_size=SIZE, upsample=True)[0][0].shape == (3, SIZE, SIZE)


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_missing_files_are_one_sentence_that_names_the_folder(name, tmp_path):
    with pytest.raises(DataError) as caught:
        vs.dataset(f"{name}:{tmp_path}")
    message = str(caught.value)
    assert message.startswith(f"{name}: no complete copy in {tmp_path} (expected ")
    assert message.endswith(".") and ". " not in message
    adapter = next(a for a in zeroshot.ADAPTERS if a.name == name)
    assert ("--download" in message) == adapter.downloadable
    assert adapter.downloadable or adapter.homepage in message


def test_torchvision_not_found_error_becomes_the_data_error(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()  # extracted folder present, batches missing
    with pytest.raises(DataError, match=r"cifar-10-batches-py/ .*rerun with --download"):
        vs.dataset(f"cifar10:{tmp_path}")


def test_download_goes_to_torchvision_where_it_can(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tv.CIFAR10, "download", lambda self: calls.append(Path(self.root)))
    with pytest.raises(DataError):  # the stub fetched nothing
        vs.dataset(f"cifar10:{tmp_path}", download=True)
    assert calls == [tmp_path]
    with pytest.raises(DataError, match="torchvision cannot download it"):  # its own download raises ValueError
        vs.dataset(f"stanford-cars:{tmp_path}", download=True)


def test_tinyimagenet_train_split(tmp_path, monkeypatch):
    write_tinyimagenet(tmp_path, monkeypatch)
    wnids = prompts.wnids("tinyimagenet")
    jpeg(tmp_path / "tiny-imagenet-200" / "train" / wnids[5] / "images" / f"{wnids[5]}_0.JPEG", size=(64, 64))
    data = vs.dataset(f"tinyimagenet:{tmp_path}", split="train")
    assert len(data) == 1 and data[0][1] == 5 and data[0][0].shape == (3, 64, 64)


def test_a_copy_with_fewer_classes_is_refused(tmp_path):
    data = tmp_path / "dtd" / "dtd"
    write_lines(data / "labels" / "test1.txt", ["banded/banded_0001.jpg", "woven/woven_0001.jpg"])
    with pytest.raises(DataError, match="has 2 classes where the dataset has 47"):
        vs.dataset(f"dtd:{tmp_path}")


def test_imagenet_folders_must_be_wordnet_ids(tmp_path):
    jpeg(tmp_path / "val" / "goldfish" / "1.JPEG")
    with pytest.raises(DataError, match="only WordNet-id folders .* goldfish"):
        vs.dataset(f"imagenet:{tmp_path}")


def test_tinyimagenet_checks_its_class_list(tmp_path):
    write_lines(tmp_path / "wnids.txt", ["n01443537", "n01629819"])
    with pytest.raises(DataError, match="does not list TinyImageNet's 200 classes"):
        vs.dataset(f"tinyimagenet:{tmp_path}")


def test_a_missing_package_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(zeroshot.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pcam needs the Python package h5py .*vlmshield\[data\]"):
        vs.dataset(f"pcam:{tmp_path}")


def test_the_data_root_comes_from_the_environment(tmp_path, monkeypatch):
    write_imagenet_r(tmp_path / "imagenet-r", monkeypatch)
    monkeypatch.setenv(vs.DATA_ENV, str(tmp_path))
    assert len(vs.dataset("imagenet-r")) == 2


def test_collections_are_ttcs_16_and_robustvlms_13():
    assert zeroshot.ZS_SUITE == ("cifar10", "cifar100", "stl10", "imagenet", "caltech101", "caltech256",
                                 "oxford-pets", "flowers102", "fgvc-aircraft", "stanford-cars", "sun397",
                                 "country211", "food101", "eurosat", "dtd", "pcam")
    assert len(zeroshot.ROBUSTVLM_13) == 13 and set(zeroshot.ROBUSTVLM_13) <= set(ADAPTER_NAMES)
    assert {"imagenet-r", "imagenet-sketch"} <= set(zeroshot.ROBUSTVLM_13)


@pytest.mark.parametrize("collection, first", [("zs-suite", "cifar10"), ("robustvlm-13", "cifar10")])
def test_a_collection_expands_and_stops_at_its_first_missing_member(collection, first, tmp_path, monkeypatch):
    monkeypatch.setenv(vs.DATA_ENV, str(tmp_path))
    with pytest.raises(DataError, match=re.escape(f"dataset '{first}': the folder {tmp_path / first} does not exist")):
        vs.datasets(collection)
    (tmp_path / first).mkdir()
    with pytest.raises(DataError, match=re.escape(f"{first}: no complete copy in {tmp_path / first} ")):
        vs.datasets(collection)


def test_a_collection_builds_every_member(tmp_path, monkeypatch):
    for name in zeroshot.ROBUSTVLM_13:
        WRITERS[name](tmp_path / name, monkeypatch)
    monkeypatch.setenv(vs.DATA_ENV, str(tmp_path))
    assert [d.name for d in vs.datasets("robustvlm-13", image_size=SIZE)] == list(zeroshot.ROBUSTVLM_13)


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_metadata_has_names_and_both_prompt_conventions(name):
    names = prompts.classnames(name)
    assert len(names) == CLASS_COUNTS[name] and all(isinstance(n, str) and n.strip() for n in names)
    for convention in ("ensemble", "single"):
        templates = templates_for(name, convention)
        assert templates and all("{}" in t for t in templates)
    assert len(templates_for(name, "single")) == 1


def test_single_templates_are_ttcs():
    assert SINGLE_TEMPLATE == "This is a photo of a {}"
    assert templates_for("cifar10", "single") == ["This is a photo of a {}."]
    assert templates_for("dtd", "single") == ["A surface with a {} texture."]
    assert templates_for("oxford-pets", "single") == ["A photo of a {}, a type of pet."]
    assert prompts.single_templates("world-shapes") == [SINGLE_TEMPLATE]


def test_labels_follow_the_standard_orders():
    assert prompts.classnames("imagenet")[:2] == ["tench", "goldfish"]
    assert prompts.wnids("imagenet") == sorted(prompts.wnids("imagenet"))
    assert prompts.classnames("oxford-pets")[:2] == ["Abyssinian", "American Bulldog"]  # torchvision's order
    assert prompts.classnames("eurosat")[0] == "annual crop land"  # AnnualCrop sorts first
    assert prompts.classnames("caltech101")[:2] == ["off-center face", "centered face"]  # Faces, Faces_easy
    imagenet = dict(zip(prompts.wnids("imagenet"), prompts.classnames("imagenet"), strict=True))
    for name in ("imagenet-r", "tinyimagenet"):
        assert prompts.classnames(name) == [imagenet[w] for w in prompts.wnids(name)]


def test_an_unknown_convention_or_dataset_is_a_parameter_error():
    with pytest.raises(ParameterError, match="ensemble, single"):
        templates_for("cifar10", "dataset")
    with pytest.raises(ParameterError, match="no templates for dataset 'mnist'"):
        templates_for("mnist")


# ----------------------------------------------------------------------------- protocol preprocessing
TTC_RULE = {"resize": 256, "crop": 224, "interpolation": "bilinear"}


def test_a_resize_rule_is_torchvisions_resize_and_centre_crop(tmp_path, monkeypatch):
    from torchvision import transforms

    write_cifar10(tmp_path, monkeypatch)
    data = vs.dataset(f"cifar10:{tmp_path}", preprocess=TTC_RULE)
    raw = tv.CIFAR10(tmp_path, train=False)[0][0]  # the PIL image
    ttc = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    assert data[0][0].shape == (3, 224, 224) and torch.equal(data[0][0], ttc(raw))
    jpeg(tmp_path / "folder" / "cat" / "a.jpg", size=(300, 260))
    jpeg(tmp_path / "folder" / "dog" / "b.jpg")
    assert vs.dataset(f"imagefolder:{tmp_path / 'folder'}", preprocess=TTC_RULE)[0][0].shape == (3, 224, 224)


@pytest.fixture
def seen(monkeypatch):
    """dataset name -> the image sizes its zero-shot classifier was called on (clean and adversarial)."""
    from vlmshield.evaluators import ZeroShot

    sizes: dict[str, set] = {}
    build = ZeroShot.classifier

    class Spy(torch.nn.Module):
        def __init__(self, inner, name):
            super().__init__()
            self.inner, self.name = inner, name

        def forward(self, x):
            sizes.setdefault(self.name, set()).add(tuple(x.shape[-2:]))
            return self.inner(x)

    monkeypatch.setattr(ZeroShot, "classifier", lambda self, model, data: Spy(build(self, model, data), data.name))
    return sizes


def test_tecoa_feeds_the_classifier_ttcs_224_pixel_crops(tmp_path, monkeypatch, seen):
    from vlmshield.api import run_protocol
    from vlmshield.testing import tiny_vlm

    write_cifar10(tmp_path, monkeypatch)
    run = run_protocol(tiny_vlm(), "tecoa", f"cifar10:{tmp_path}", n=2, batch_size=2, progress=False)
    assert seen == {"cifar10": {(224, 224)}}  # the 32-px images, attacked and classified at 224
    assert run["protocol"]["preprocess"] == {"default": TTC_RULE} and run["preprocess"] == {"cifar10": TTC_RULE}
    assert run["protocol"]["counting"] == run["counting"] == "all"
    record = json.loads(json.dumps(run))  # the record is JSON as written
    assert record["preprocess"]["cifar10"]["interpolation"] == "bilinear"


def test_robustvlm_resizes_pcam_and_eurosat_and_keeps_cifar_native(tmp_path, monkeypatch, seen):
    import dataclasses

    from vlmshield.api import get_protocol, run_protocol
    from vlmshield.testing import tiny_vlm

    for name in ("cifar10", "eurosat", "pcam"):
        WRITERS[name](tmp_path / name, monkeypatch)
    # robustvlm's preprocessing with one PGD step in place of its 1,400 APGD iterations per image
    protocol = dataclasses.replace(get_protocol("robustvlm"), attack="pgd", eps=("1/255",), steps=1, attack_params={})
    spec = ",".join(f"{name}:{tmp_path / name}" for name in ("cifar10", "eurosat", "pcam"))
    run = run_protocol(tiny_vlm(), protocol, spec, n=2, batch_size=2, progress=False)
    assert seen == {"cifar10": {(32, 32)}, "eurosat": {(224, 224)}, "pcam": {(224, 224)}}
    resize = {"resize": 224, "crop": 224, "interpolation": "bicubic"}
    assert run["preprocess"] == {"cifar10": "native", "eurosat": resize, "pcam": resize}
    assert run["protocol"]["preprocess"] == {"default": "native", "pcam": resize, "eurosat": resize}
    assert run["counting"] == "clean-correct"


def test_plain_evaluation_keeps_native_resolution(tmp_path, monkeypatch, seen):
    from vlmshield.api import evaluate
    from vlmshield.testing import tiny_vlm

    write_eurosat(tmp_path, monkeypatch)
    record = evaluate(tiny_vlm(), f"eurosat:{tmp_path}", n=2, progress=False)
    assert seen == {"eurosat": {(64, 64)}} and "preprocess" not in record


# ----------------------------------------------------------------------------- unreadable image files
def damaged_folder(root):
    """An imagefolder with a good image, a truncated JPEG (its first half) and text saved as a .jpg, in that
    item order."""
    jpeg(root / "cat" / "0.jpg")
    jpeg(root / "cat" / "1.jpg")
    whole = (root / "cat" / "1.jpg").read_bytes()
    (root / "cat" / "1.jpg").write_bytes(whole[:len(whole) // 2])
    (root / "dog").mkdir()
    (root / "dog" / "2.jpg").write_text("these are not the pixels you are looking for\n")
    return root, root / "cat" / "1.jpg", root / "dog" / "2.jpg"


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.endswith(".") and ". " not in message.replace("..", "")


def test_an_unreadable_image_is_a_data_error_that_names_the_file(tmp_path):
    root, truncated, text = damaged_folder(tmp_path / "pets")
    data = vs.dataset(f"imagefolder:{root}", image_size=SIZE)
    assert data[0][0].shape == (3, SIZE, SIZE)
    for index, path, reason in ((1, truncated, "OSError"), (2, text, "UnidentifiedImageError")):
        with pytest.raises(DataError) as caught:
            data[index]
        message = str(caught.value)
        assert message.startswith(f"imagefolder {root}: cannot read {path} ({reason}: ")
        assert message.endswith("replace or remove the file.") and "\n" not in message


def test_an_unreadable_image_in_a_data_loader_worker_is_still_one_data_error(tmp_path):
    from torch.utils.data import DataLoader

    root, _, text = damaged_folder(tmp_path / "pets")
    data = vs.dataset(f"imagefolder:{root}", image_size=SIZE)
    for workers in (0, 1):
        with pytest.raises(DataError) as caught:
            list(DataLoader(data, batch_size=1, sampler=[0, 2], num_workers=workers))
        assert str(caught.value).startswith(f"imagefolder {root}: cannot read {text} (")
        assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)


def test_the_cli_says_which_image_it_cannot_read_in_one_line(tmp_path, capsys):
    from vlmshield.cli import main

    root, truncated, _ = damaged_folder(tmp_path / "pets")
    code = main(["eval", "--model", "clip-tinyvit4", "--dataset", f"imagefolder:{root}", "--n", "4",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"vlmshield: error: imagefolder {root}: cannot read ") and str(root) in err


IMAGE_FILE_ADAPTERS = [name for name in ADAPTER_NAMES if name not in ("cifar10", "cifar100", "stl10", "pcam")]


@pytest.mark.parametrize("name", IMAGE_FILE_ADAPTERS)
def test_every_adapter_that_reads_image_files_names_an_unreadable_one(name, tmp_path, monkeypatch):
    WRITERS[name](tmp_path, monkeypatch)
    images = sorted(p for p in tmp_path.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    for path in images:
        whole = path.read_bytes()
        path.write_bytes(whole[:len(whole) // 2])  # every image truncated: item 0 is one of them
    data = vs.dataset(f"{name}:{tmp_path}", image_size=SIZE)
    with pytest.raises(DataError) as caught:
        data[0]
    message = str(caught.value)
    assert message.startswith(f"{name}: cannot read ") and one_sentence(message)
    # torchvision's datasets that take a loader read with vlmshield's, which names the file; the others open their
    # files themselves, and the error names the item and the folder
    assert any(str(path) in message for path in images) or message.startswith(f"{name}: cannot read item 0 in "
                                                                                f"{tmp_path} (")


def test_a_vlmshield_error_rebuilt_by_a_data_loader_worker_keeps_its_one_sentence():
    from vlmshield.api import DataError, ParameterError

    rebuilt = ("Caught ParameterError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in <module>\nvlmshield.core.errors.ParameterError: n must be 1 or more.\n')
    assert str(ParameterError(rebuilt)) == "n must be 1 or more."
    assert str(DataError("a sentence of its own.")) == "a sentence of its own."


def test_captions_csv_reads_image_rows_in_order_relative_to_the_file(tmp_path):
    for name, colour in (("a.png", (255, 0, 0)), ("b.jpg", (0, 0, 255))):
        Image.new("RGB", (40, 30), colour).save(tmp_path / name)
    (tmp_path / "pairs.csv").write_text("filepath,title\na.png,a red square\nnotes.txt,skipped\n"
                                        f"{tmp_path / 'b.jpg'},\"a blue, wide square\"\n")
    pairs = vs.dataset(f"captions-csv:{tmp_path / 'pairs.csv'}", split="train", image_size=16)
    assert isinstance(pairs, vs.CaptionedImages) and len(pairs) == 2
    (red, caption), (blue, second) = pairs[0], pairs[1]
    assert caption == "a red square" and second == "a blue, wide square" and red.shape == (3, 16, 16)
    assert red[0].mean() > 0.9 and blue[2].mean() > 0.9
    from vlmshield.datasets import captions

    assert len(captions.build(tmp_path / "pairs.csv", samples=1)) == 1
    with pytest.raises(vs.DataError, match="takes the CSV file itself"):
        vs.dataset(f"captions-csv:{tmp_path}", split="train")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(vs.DataError, match="b.jpg"):
        pairs[1]


def test_a_spec_picks_a_variant_and_the_first_is_the_default():
    from vlmshield.api import DatasetEntry, temporary_host
    from vlmshield.testing import make_plugin, tensor_dataset

    seen = []

    def build(root=None, split="test", image_size=224, variant=None):
        seen.append(variant)
        return tensor_dataset(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]), ["a", "b"], name=f"pairs/{variant}")

    entry = DatasetEntry("pairs", build, variants=("a-to-b", "b-to-a"))
    with temporary_host(make_plugin("variants", register_datasets=lambda register: register(entry))):
        assert vs.dataset("pairs").name == "pairs/a-to-b" and vs.dataset("pairs/b-to-a").name == "pairs/b-to-a"
        assert seen == ["a-to-b", "b-to-a"]
        with pytest.raises(ParameterError, match=r"no variant 'c-to-d'; it has a-to-b, b-to-a\.$"):
            vs.dataset("pairs/c-to-d")
        with pytest.raises(ParameterError, match="name/variant"):
            vs.dataset("pairs/")
        with pytest.raises(ParameterError, match="'fakedata' has no variant 'x'; it has none."):
            vs.dataset("fakedata/x")
