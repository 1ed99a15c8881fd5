"""The domain adaptation benchmarks (office31, office-home, visda2017, domainnet, digits), each read from a tiny
fixture written in the release's on-disk layout: a few images in class folders, image lists, MNIST's idx files,
USPS's bz2 libsvm files and SVHN's .mat files. Nothing is downloaded.

torchvision checks the md5 of SVHN's .mat files; the fixture's cannot be the release's, so the test pins the
class's checksum table to the fixture's own md5s and the integrity check still runs, on the fixture.
"""

from __future__ import annotations

import bz2
import hashlib
import struct

import numpy as np
import pytest
import torch
from PIL import Image

import vlmshield as vs
from vlmshield.api import DataError, DomainPair, ParameterError, UnreadableImageError, get_host

SIZE = 24  # the model input size the tests ask for


def image(path, size=(30, 20), fmt="JPEG"):
    """A gradient image, so that a decoded image is never constant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = Image.linear_gradient("L").resize(size)
    Image.merge("RGB", (grey, grey.transpose(Image.Transpose.FLIP_TOP_BOTTOM), grey)).save(path, fmt)


def lines(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{row}\n" for row in rows))


def pair(spec, root, **params) -> DomainPair:
    return vs.dataset(f"{spec}:{root}", split="train", image_size=SIZE, **params)


def labels(data):
    return [data[i][1] for i in range(len(data))]


def check_images(data):
    for i in range(len(data)):
        x = data[i][0]
        assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1 and x.max() > x.min()


# Fixtures: each writes one benchmark under root.

def write_office31(root):
    """amazon: back_pack x2, trash_can x1; webcam: bike x1, mug x2; dslr: ruler x1."""
    for domain, folders in {"amazon": {"back_pack": 2, "trash_can": 1}, "webcam": {"bike": 1, "mug": 2},
                            "dslr": {"ruler": 1}}.items():
        for folder, count in folders.items():
            for i in range(count):
                image(root / domain / "images" / folder / f"frame_{i:04d}.jpg")


def write_office_home(root):
    image(root / "Art" / "Alarm_Clock" / "00001.jpg")
    image(root / "Art" / "Drill" / "00001.jpg")
    image(root / "Clipart" / "Exit_Sign" / "00001.jpg")
    image(root / "Real_World" / "Marker" / "00001.jpg")


def write_visda(root):
    for part, rows in {"train": [("aeroplane/src_1.png", 0), ("truck/src_2.png", 11), ("bus/src_3.png", 2)],
                       "validation": [("car/val_1.jpg", 3), ("person/val_2.jpg", 7)]}.items():
        for name, _ in rows:
            image(root / part / name, fmt="PNG" if name.endswith("png") else "JPEG")
        lines(root / part / "image_list.txt", [f"{name} {label}" for name, label in rows])


def write_domainnet(root):
    files = {("real", "train"): [("aircraft_carrier/real_001.jpg", 0), ("zigzag/real_002.jpg", 344)],
             ("real", "test"): [("cello/real_003.jpg", 66)],
             ("clipart", "train"): [("The_Eiffel_Tower/clipart_001.jpg", 308), ("cat/clipart_002.jpg", 64),
                                    ("cello/clipart_003.jpg", 66)],
             ("clipart", "test"): [("t-shirt/clipart_004.jpg", 327)],
             ("painting", "train"): [("dog/painting_001.jpg", 91)]}
    for (domain, split), rows in files.items():
        for name, _ in rows:
            image(root / domain / name)
        lines(root / f"{domain}_{split}.txt", [f"{domain}/{name} {label}" for name, label in rows])


def idx(path, magic, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes())


def write_digits(root, monkeypatch):
    """MNIST: 3 train and 2 test images; USPS: 4 train, 1 test; SVHN: 2 train, 1 test. Labels known."""
    rng = np.random.default_rng(0)
    raw = root / "mnist" / "MNIST" / "raw"
    for stem, digits in {"train": [5, 0, 4], "t10k": [7, 2]}.items():
        idx(raw / f"{stem}-images-idx3-ubyte", 2051, rng.integers(0, 256, (len(digits), 28, 28), dtype=np.uint8))
        idx(raw / f"{stem}-labels-idx1-ubyte", 2049, np.array(digits, dtype=np.uint8))
    (root / "usps").mkdir(parents=True)
    for name, digits in {"usps.bz2": [1, 10, 3, 7], "usps.t.bz2": [9]}.items():  # libsvm: 1..10 for 0..9
        rows = [" ".join([str(d)] + [f"{j + 1}:{v:.4f}" for j, v in enumerate(rng.uniform(-1, 1, 256))])
                for d in digits]
        (root / "usps" / name).write_bytes(bz2.compress("\n".join(rows).encode() + b"\n"))
    from scipy.io import savemat
    from torchvision.datasets import SVHN

    (root / "svhn").mkdir(parents=True)
    for split, digits in {"train": [10, 3], "test": [6]}.items():  # SVHN writes 0 as 10
        savemat(root / "svhn" / f"{split}_32x32.mat",
                {"X": rng.integers(0, 256, (32, 32, 3, len(digits)), dtype=np.uint8),
                 "y": np.array(digits, dtype=np.uint8).reshape(-1, 1)})
    pinned = {split: [url, name, hashlib.md5((root / "svhn" / name).read_bytes()).hexdigest()]
              for split, (url, name, _) in SVHN.split_list.items() if split in ("train", "test")}
    monkeypatch.setattr(SVHN, "split_list", {**SVHN.split_list, **pinned})


# The entries.

@pytest.mark.parametrize("name, first, count", [
    ("office31", "amazon-to-webcam", 6), ("office-home", "art-to-clipart", 12), ("visda2017", "synthetic-to-real", 1),
    ("domainnet", "real-to-clipart", 30), ("digits", "svhn-to-mnist", 3),
])
def test_entries_list_every_ordered_pair_with_the_default_first(name, first, count):
    entry = get_host().get("dataset", name).obj
    assert entry.variants[0] == first and len(set(entry.variants)) == count
    assert all(len(v.split("-to-")) == 2 and v == v.lower() for v in entry.variants)
    assert (entry.needs_root, entry.provides, entry.splits) == (True, "domain-pair", ("train",))
    assert entry.homepage.startswith("http") and entry.description and "\n" not in entry.description


# Each adapter on its fixture.

def test_office31_walks_the_class_folders_transductively(tmp_path):
    write_office31(tmp_path)
    data = pair("office31", tmp_path)
    assert isinstance(data, DomainPair) and data.name == "office31/amazon-to-webcam"
    assert len(data.classnames) == 31 and data.classnames[0] == "back pack" and data.classnames[30] == "trash can"
    assert labels(data.source) == [0, 0, 30]
    assert labels(data.target_test) == [1, 17, 17]  # bike, mug, mug
    assert len(data.target) == 3 and all(len(data.target[i]) == 1 for i in range(3))
    assert torch.equal(data.target[1][0], data.target_test[1][0])  # the transductive protocol: the same images
    assert data.source.templates == ["a photo of a {}."] and data.target_test.classnames == data.classnames
    check_images(data.source)
    check_images(data.target)


def test_office31_other_variant(tmp_path):
    write_office31(tmp_path)
    data = pair("office31/dslr-to-amazon", tmp_path)
    assert data.name == "office31/dslr-to-amazon"
    assert labels(data.source) == [25] and labels(data.target_test) == [0, 0, 30]  # ruler; amazon


def test_image_lists_take_precedence_over_the_folders(tmp_path):
    write_office31(tmp_path)
    lines(tmp_path / "image_list" / "webcam.txt", ["webcam/images/mug/frame_0001.jpg 17",
                                                   "webcam/images/bike/frame_0000.jpg 1"])
    data = pair("office31", tmp_path)
    assert labels(data.target_test) == [17, 1] and len(data.target) == 2  # the list's order and labels
    assert labels(data.source) == [0, 0, 30]  # amazon has no list: walked


def test_office_home_labels_folders_in_tllib_order(tmp_path):
    write_office_home(tmp_path)
    data = pair("office-home", tmp_path)
    assert data.name == "office-home/art-to-clipart" and len(data.classnames) == 65
    assert data.classnames[33] == "Alarm Clock" and data.classnames[0] == "Drill"
    assert labels(data.source) == [33, 0] and labels(data.target_test) == [1]
    other = pair("office-home/clipart-to-real-world", tmp_path)
    assert labels(other.source) == [1] and labels(other.target_test) == [64]
    check_images(other.target_test)


def test_visda_reads_the_release_lists(tmp_path):
    write_visda(tmp_path)
    data = pair("visda2017", tmp_path)
    assert data.name == "visda2017/synthetic-to-real" and len(data.classnames) == 12
    assert data.classnames[0] == "aeroplane" and data.classnames[11] == "truck"
    assert labels(data.source) == [0, 11, 2] and labels(data.target_test) == [3, 7] and len(data.target) == 2
    check_images(data.source)


def test_domainnet_adapts_on_the_train_list_and_tests_on_the_test_list(tmp_path):
    write_domainnet(tmp_path)
    data = pair("domainnet", tmp_path)
    assert data.name == "domainnet/real-to-clipart" and len(data.classnames) == 345
    assert data.classnames[308] == "The Eiffel Tower" and data.classnames[327] == "t-shirt"
    assert data.classnames[64] == "cat" and data.classnames[344] == "zigzag"
    assert labels(data.source) == [0, 344]
    assert len(data.target) == 3 and data.target[0][0].shape == (3, SIZE, SIZE) and len(data.target[0]) == 1
    assert labels(data.target_test) == [327]
    other = pair("domainnet/painting-to-real", tmp_path)
    assert labels(other.source) == [91] and len(other.target) == 2 and labels(other.target_test) == [66]


def test_domainnet_reads_tllib_lists_when_the_release_lists_are_absent(tmp_path):
    write_domainnet(tmp_path)
    (tmp_path / "image_list").mkdir()
    for path in tmp_path.glob("*.txt"):
        path.rename(tmp_path / "image_list" / path.name)
    assert labels(pair("domainnet", tmp_path).target_test) == [327]


def test_digits_each_variant(tmp_path, monkeypatch):
    write_digits(tmp_path, monkeypatch)
    data = pair("digits", tmp_path)
    assert data.name == "digits/svhn-to-mnist" and data.classnames == [str(d) for d in range(10)]
    assert labels(data.source) == [0, 3]  # SVHN's 10 is 0
    assert len(data.target) == 3 and len(data.target[0]) == 1  # MNIST train, unlabelled
    assert labels(data.target_test) == [7, 2]  # MNIST test
    check_images(data.source)
    check_images(data.target_test)  # grey MNIST as three channels at the model's size
    usps = pair("digits/mnist-to-usps", tmp_path)
    assert labels(usps.source) == [5, 0, 4] and len(usps.target) == 4 and labels(usps.target_test) == [8]
    check_images(usps.target_test)
    back = pair("digits/usps-to-mnist", tmp_path)
    assert labels(back.source) == [0, 9, 2, 6] and labels(back.target_test) == [7, 2]


# Errors.

def test_an_unknown_variant_names_the_variants(tmp_path):
    write_office31(tmp_path)
    with pytest.raises(ParameterError, match="no variant 'amazon-to-art'.*amazon-to-webcam, amazon-to-dslr"):
        pair("office31/amazon-to-art", tmp_path)


@pytest.mark.parametrize("name, expected", [
    ("office31", "amazon/images"), ("office-home", "Art"), ("visda2017", "train/image_list.txt"),
    ("domainnet", "real_train.txt"), ("digits", "svhn"),
])
def test_missing_files_name_the_expected_path(tmp_path, name, expected):
    with pytest.raises(DataError) as error:
        pair(name, tmp_path)
    assert str(tmp_path / expected) in str(error.value)


def test_a_missing_listed_image_is_named(tmp_path):
    write_visda(tmp_path)
    (tmp_path / "train" / "aeroplane" / "src_1.png").unlink()
    with pytest.raises(DataError, match="src_1.png is missing"):
        pair("visda2017", tmp_path)


@pytest.mark.parametrize("row", ["webcam/images/mug/frame_0000.jpg", "webcam/images/mug/frame_0000.jpg 31",
                                 "webcam/images/mug/frame_0000.jpg -1", "webcam/images/mug/frame_0000.jpg mug"])
def test_a_bad_list_line_names_the_file_and_the_line(tmp_path, row):
    write_office31(tmp_path)
    listed = tmp_path / "image_list" / "webcam.txt"
    lines(listed, ["webcam/images/bike/frame_0000.jpg 1", "", row])
    with pytest.raises(DataError) as error:
        pair("office31", tmp_path)
    assert f"line 3 of {listed}" in str(error.value) and "label from 0 to 30" in str(error.value)


def test_a_folder_that_is_not_a_class_is_refused(tmp_path):
    write_office_home(tmp_path)
    image(tmp_path / "Art" / "Unicorn" / "1.jpg")
    with pytest.raises(DataError, match="Unicorn/ that is not one of the 65 class folders"):
        pair("office-home", tmp_path)


def test_images_are_read_when_an_item_is(tmp_path):
    write_office31(tmp_path)
    broken = tmp_path / "amazon" / "images" / "trash_can" / "frame_0000.jpg"
    broken.write_bytes(b"not an image")
    data = pair("office31", tmp_path)  # builds: only paths and labels are read
    data.source[0]
    with pytest.raises(UnreadableImageError, match="frame_0000.jpg"):
        data.source[2]
