"""The jpeg defense is real JPEG, diff-jpeg's approximation follows the codec and breaks the defense, and the
packaged world model loads with its checked weights. Runs on the installed plugin, offline, on a CPU."""

import io
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from vlmshield_jpeg import JPEG, DiffJPEG, differentiable_jpeg, jpeg
from vlmshield_jpeg.plugin import WEIGHTS

from vlmshield.api import (
    ImageClassifier,
    ParameterError,
    WeightsError,
    dataset,
    get_host,
    packaged_cards,
    sha256_file,
    zoo,
)
from vlmshield.testing import toy_classifier

MODEL = "jpeg-convnet-shapes"


@pytest.fixture(scope="module")
def shapes():
    """The first 128 images of world-shapes and their labels."""
    data = dataset("world-shapes")
    images, labels = zip(*(data[i] for i in range(128)), strict=True)
    return torch.stack(images), torch.as_tensor(labels)


def pillow_jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image through Pillow's JPEG encoder and decoder, by way of the encoded bytes."""
    out = []
    for image in images:
        buffer = io.BytesIO()
        pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels).save(buffer, "jpeg", quality=quality, subsampling="4:2:0")
        out.append(torch.from_numpy(np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))))
    return torch.stack(out).permute(0, 3, 1, 2).float() / 255


def torchvision_jpeg(images: torch.Tensor, quality: int) -> torch.Tensor | None:
    """The same through torchvision's own libjpeg (deprecated there, so None where it is gone)."""
    try:
        from torchvision.io import decode_jpeg, encode_jpeg
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pixels = [(image * 255).round().to(torch.uint8) for image in images]
        return torch.stack(decode_jpeg(encode_jpeg(pixels, quality=quality))).float() / 255


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_the_registrations_come_from_the_installed_distribution():
    host = get_host()
    for kind, name in (("defense", "jpeg"), ("attack", "diff-jpeg"), ("architecture", "jpeg-convnet"),
                       ("model", MODEL)):
        assert host.get(kind, name).distribution == "vlmshield-jpeg"
    assert JPEG.adaptive_attacks == ("diff-jpeg", "bpda-eot") and not JPEG.randomized


@pytest.mark.parametrize("quality", [75, 20])
def test_the_purifier_is_real_jpeg(shapes, quality):
    x = shapes[0][:16]
    model, _, _ = toy_classifier()
    purified = get_host().create("defense", "jpeg", quality=quality).wrap(model).purify(x)
    assert purified.shape == x.shape and purified.dtype == x.dtype
    assert 0 <= purified.min() and purified.max() <= 1
    assert (purified - x).abs().mean() > 1 / 255  # it changes the image, as JPEG does at this quality
    for reference in (pillow_jpeg(x, quality), torchvision_jpeg(x, quality)):
        if reference is not None:  # the same codec, up to the libjpeg build
            assert (purified - reference).abs().mean() < 0.25 / 255
            assert (purified - reference).abs().max() <= 2 / 255 + 1e-6
    assert torch.equal(purified, jpeg(x, quality))  # deterministic


@pytest.mark.parametrize("quality", [0, 101, 75.0, "75", True, None])
def test_a_quality_that_is_not_a_whole_number_from_1_to_100_is_refused(quality):
    with pytest.raises(ParameterError) as error:
        JPEG(quality=quality)
    message = str(error.value)
    assert "whole number from 1 to 100" in message and message.endswith(".") and "\n" not in message


def test_the_approximation_follows_the_codec_and_has_a_gradient(shapes):
    x = shapes[0]
    for quality in (50, 75, 90):
        real = jpeg(x, quality)
        approx = differentiable_jpeg(x, quality)
        assert (approx - real).abs().mean() < 1.5 / 255  # the codec moves pixels by 3-5 grey levels on average
        assert (approx - real).abs().mean() < 0.4 * (x - real).abs().mean()
    images = x[:4].clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(differentiable_jpeg(images, 75).sum(), images)
    assert gradient.abs().sum() > 0
    odd = torch.rand(2, 3, 21, 27, generator=torch.Generator().manual_seed(0))
    assert differentiable_jpeg(odd, 75).shape == odd.shape  # padded to whole blocks, then cropped


def test_diff_jpeg_keeps_the_budget_and_is_seeded():
    model, x, y = toy_classifier()
    defended = JPEG().wrap(model)
    for eps, options in ((8 / 255, {}), (4 / 255, {"random_start": True}), (0.5, {"norm": "L2"})):
        attack = DiffJPEG(eps=eps, steps=3, **options)
        x_adv = attack(defended, x, y, seed=1)
        assert x_adv.shape == x.shape and 0 <= x_adv.min() and x_adv.max() <= 1
        delta = (x_adv - x).flatten(1)
        size = delta.norm(dim=1) if options.get("norm") == "L2" else delta.abs().amax(1)
        assert size.max() <= attack.eps + 1e-6
        assert torch.equal(x_adv, attack(defended, x, y, seed=1))
    assert not torch.equal(DiffJPEG(random_start=True, steps=2)(defended, x, y, seed=1),
                           DiffJPEG(random_start=True, steps=2)(defended, x, y, seed=2))


def test_diff_jpeg_refuses_a_classifier_the_jpeg_defense_does_not_wrap():
    model, x, y = toy_classifier()
    with pytest.raises(ParameterError, match="defended by jpeg"):
        DiffJPEG()(model, x, y)
    with pytest.raises(ParameterError, match="momentum"):
        DiffJPEG(momentum=1.5)


def test_diff_jpeg_breaks_the_defended_world_model_where_bpda_falls_short(shapes):
    x, y = shapes
    defended = JPEG().wrap(zoo.load(MODEL))
    host = get_host()
    budget = {"eps": 4 / 255, "alpha": 1 / 255, "steps": 10}
    clean = accuracy(defended, x, y)
    transferred = accuracy(defended, host.create("attack", "pgd", **budget)(defended.classifier, x, y), y)
    bpda = accuracy(defended, host.create("attack", "bpda-eot", eot=1, **budget)(defended, x, y), y)
    diff = accuracy(defended, host.create("attack", "diff-jpeg", **budget)(defended, x, y), y)
    assert clean >= 0.9
    assert diff < bpda < transferred <= clean
    assert diff <= 0.25


def test_the_packaged_model_loads_with_its_weights_checked(tmp_path, shapes):
    card = get_host().get("model", MODEL).obj
    (file, sha256), = card.files.items()
    assert (WEIGHTS / file).stat().st_size < 400_000 and sha256_file(WEIGHTS / file) == sha256
    model = zoo.load(MODEL)
    assert isinstance(model, ImageClassifier) and model.architecture["name"] == "jpeg-convnet"
    assert list(model.classnames) == dataset("world-shapes").classnames and card.family == "classifier"
    x, y = shapes
    assert accuracy(model, x, y) >= 0.9 and accuracy(JPEG().wrap(model), x, y) >= 0.9
    # a weight file that is not the one its card names is refused, in one sentence
    shutil.copytree(WEIGHTS, tmp_path / "weights")
    corrupted = bytearray((tmp_path / "weights" / file).read_bytes())
    corrupted[-1] ^= 0xFF
    (tmp_path / "weights" / file).write_bytes(bytes(corrupted))
    copy, = packaged_cards(tmp_path / "weights")
    with pytest.raises(WeightsError):
        copy.load()
