"""Image classifiers in the zoo: ImageClassifier around timm models, timm's Hub layout, cards by name."""

import json
import re

import pytest
import torch
import torch.nn.functional as F

import vlmshield as vs
from vlmshield.api import (
    VLM,
    Architecture,
    DatasetEntry,
    ImageClassifier,
    InputError,
    ModelCard,
    ParameterError,
    VlmshieldError,
    WeightsError,
    evaluate,
    input_size,
    temporary_host,
)
from vlmshield.cli import main
from vlmshield.testing import HUB_REVISION as REVISION
from vlmshield.testing import ToyCNN, hub_cache, make_plugin, tensor_dataset, tiny_vlm, toy_task

timm = pytest.importorskip("timm")

CLASSES = ["circle", "square", "star", "wave"]
METRICS = {"protocol": {"attack": "pgd", "n": 8}, "clean": {"toy-shapes": 0.5},
           "robust": {"2/255": {"toy-shapes": 0.25}}}


def _classifier(arch: str = "resnet10t", seed: int = 0, **kwargs) -> ImageClassifier:
    """A random-initialised timm model with 4 classes at 32 px, the same for the same seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ImageClassifier.from_timm(arch, 4, image_size=32, classnames=CLASSES, name=f"toy-{arch}",
                                         **kwargs).eval()


@pytest.fixture
def saved(tmp_path):
    classifier = _classifier()
    return classifier, vs.zoo.save(classifier, tmp_path / "toy")


def test_a_classifier_takes_pixels_and_resizes_and_normalizes_inside():
    default = ImageClassifier.from_timm("resnet10t", 4)
    assert default.image_size == (176, 176) and default.num_classes == 4 and default.classnames is None
    assert default.pixel_mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])  # timm's data config
    classifier = _classifier()
    x = torch.rand(2, 3, 16, 16)
    expected = classifier.model((F.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False)
                                 - classifier.pixel_mean) / classifier.pixel_std)
    assert torch.equal(classifier(x), expected) and classifier(x).shape == (2, 4)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        classifier(x * 255)
    assert input_size(classifier) == 32 and input_size(tiny_vlm()) == 32 and input_size(torch.nn.Linear(2, 2)) == 224
    config = classifier.config()
    assert config["image_size"] == [32, 32] and config["classnames"] == CLASSES and config["num_classes"] == 4
    with pytest.raises(ParameterError, match="4 classes needs as many class names"):
        ImageClassifier(ToyCNN(), 4, classnames=["a", "b"])
    with pytest.raises(vs.core.UnknownNameError, match="resnet10t"):
        ImageClassifier.from_timm("resnet10x", 4)


def test_any_backbone_is_wrapped_with_its_preprocessing_but_only_timm_models_are_saved(tmp_path):
    backbone = ToyCNN().eval()
    classifier = ImageClassifier(backbone, 4, image_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = torch.rand(3, 3, 16, 16)
    assert torch.equal(classifier(x), backbone((x - 0.5) / 0.25))
    with pytest.raises(ParameterError, match="wraps a timm model or names the registered architecture"):
        vs.zoo.save(classifier, tmp_path / "toy")
    with pytest.raises(ParameterError, match="takes a VLM or an ImageClassifier"):
        vs.zoo.save(backbone, tmp_path / "toy")


@pytest.mark.parametrize("arch, kwargs", [("resnet10t", {}), ("test_vit", {"img_size": 32})])
def test_a_saved_classifier_is_timms_layout_and_loads_here_and_in_timm(tmp_path, arch, kwargs):
    classifier = _classifier(arch, **kwargs)
    vs.zoo.save(classifier, tmp_path, metrics=METRICS)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == arch and config["num_classes"] == 4 and config["label_names"] == CLASSES
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32] and config["pretrained_cfg"]["crop_pct"] == 1.0
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: timm\npipeline_tag: image-classification\n")
    assert "  - task:\n      type: image-classification\n    dataset:\n      name: \"toy-shapes\"" in readme
    assert 'name: "robust accuracy (pgd, Linf eps 2/255, n 8)"' in readme

    back = vs.zoo.load(f"local-dir:{tmp_path}")
    x = torch.rand(3, 3, 32, 32)
    assert isinstance(back, ImageClassifier) and back.name == f"toy-{arch}" and not back.training
    assert back.config() == classifier.config() and torch.equal(back(x), classifier(x))

    plain = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    state, own = plain.state_dict(), classifier.model.state_dict()
    assert state.keys() == own.keys() and all(torch.equal(state[k], own[k]) for k in own)
    assert timm.data.resolve_data_config(model=plain)["input_size"] == (3, 32, 32)
    vs.zoo.save(back, tmp_path / "again")  # a loaded folder saves again, the same weights
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tmp_path / "model.safetensors").read_bytes()


def test_a_damaged_classifier_folder_is_refused_and_publish_checks_it(saved, monkeypatch):
    _, folder = saved
    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda *a, **k: pytest.fail("dry run sent something"))
    listed = vs.zoo.publish(folder, "org/toy", dry_run=True)
    assert [f["path"] for f in listed["files"]] == ["README.md", "config.json", "model.safetensors"]
    assert listed["name"] == "toy-resnet10t"
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        vs.zoo.load(f"local-dir:{folder}")
    with pytest.raises(WeightsError, match="sha256"):
        vs.zoo.publish(folder, "org/toy", dry_run=True)
    assert vs.zoo.load(f"local-dir:{folder}", weights=False).num_classes == 4  # no weights read
    (folder / "config.json").write_text(json.dumps({"num_classes": 4}))
    with pytest.raises(WeightsError, match="not a timm config"):
        vs.zoo.load(f"local-dir:{folder}")


def test_a_classifier_on_the_hub_loads_from_the_cache(saved, tmp_path, monkeypatch):
    classifier, folder = saved
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub_cache(tmp_path, folder, repo="org/toy")))
    x = torch.rand(2, 3, 24, 24)
    for spec in (f"hf-hub:org/toy@{REVISION}", "hf-hub:org/toy"):
        loaded = vs.zoo.load(spec)
        assert isinstance(loaded, ImageClassifier) and loaded.name == spec and torch.equal(loaded(x), classifier(x))


def _plugin(folder):
    def build(root=None, split="test", image_size=224):
        x, y = toy_task(n=16, size=32)
        return tensor_dataset(x, y, CLASSES, name="toy-shapes")

    def load(card, device=None, weights=True):
        return vs.zoo.load(f"local-dir:{folder}", device=device, weights=weights)

    cards = [ModelCard("toy-resnet", arch="resnet10t", family="classifier", classnames=tuple(CLASSES), loader=load,
                       method="none", description="A random resnet10t over the toy shapes.", source="package"),
             ModelCard("toy-timm", arch="resnet10t", family="classifier", classnames=tuple(CLASSES)),
             ModelCard("toy-timm-pretrained", arch="resnet10t", pretrained="c3_in1k", family="classifier")]
    return make_plugin("toy-classifiers", register_datasets=lambda r: r(DatasetEntry("toy-shapes", build)),
                       register_models=lambda r: [r(card) for card in cards])


def test_a_classifier_card_loads_by_name_and_is_evaluated_from_the_cli(saved, capsys):
    classifier, folder = saved
    with temporary_host(_plugin(folder)):
        loaded = vs.zoo.load("toy-resnet")
        x = torch.rand(2, 3, 32, 32)
        assert isinstance(loaded, ImageClassifier) and loaded.name == "toy-resnet"
        assert torch.equal(loaded(x), classifier(x))
        code = main(["eval", "--model", "toy-resnet", "--dataset", "toy-shapes", "--evaluator", "accuracy",
                     "--attack", "pgd", "--eps", "2/255", "--steps", "2", "--n", "8", "--no-progress"])
        assert code == 0 and re.search(r"\| toy-shapes \| 8 \| \d+\.\d\d \| \d+\.\d\d \|", capsys.readouterr().out)
        record = evaluate("toy-resnet", "toy-shapes", evaluator="accuracy", n=8, progress=False)
        assert 0 <= record["results"]["toy-shapes"]["clean_acc"] <= 1

        card = vs.zoo.info("toy-timm")  # a timm card without a loader: timm builds it
        assert card["family"] == "classifier" and card["source"] == "timm" and card["num_classes"] == 4
        random = vs.zoo.load("toy-timm")
        assert isinstance(random, ImageClassifier) and random.classnames == tuple(CLASSES) and random(x).shape == (2, 4)
        assert vs.zoo.load("toy-timm-pretrained", weights=False).num_classes == 1000
        with pytest.raises(VlmshieldError, match="could not build timm's resnet10t.c3_in1k.*--no-weights"):
            vs.zoo.load("toy-timm-pretrained")  # offline in tests, nothing cached


def test_save_takes_the_card_info_returns_for_a_clip_and_a_classifier(saved, tmp_path):
    _, folder = saved
    vs.zoo.save(vs.zoo.load("clip-tinyrn"), tmp_path / "clip", card=vs.zoo.info("clip-tinyrn"), metrics=METRICS)
    assert "  - task:\n      type: zero-shot-image-classification\n" in (tmp_path / "clip" / "README.md").read_text()
    clip = json.loads((tmp_path / "clip" / "open_clip_config.json").read_text())["vlmshield"]
    assert clip["name"] == "clip-tinyrn" and clip["card"]["family"] == "clip" and "plugin" in clip["card"]
    assert isinstance(vs.zoo.load(f"local-dir:{tmp_path / 'clip'}"), VLM)
    with temporary_host(_plugin(folder)):
        vs.zoo.save(vs.zoo.load("toy-resnet"), tmp_path / "classifier", card=vs.zoo.info("toy-resnet"))
    config = json.loads((tmp_path / "classifier" / "config.json").read_text())
    assert config["vlmshield"]["name"] == "toy-resnet" and config["vlmshield"]["card"]["classnames"] == CLASSES
    assert "A random resnet10t over the toy shapes." in (tmp_path / "classifier" / "README.md").read_text()
    assert vs.zoo.load(f"local-dir:{tmp_path / 'classifier'}").name == "toy-resnet"


def test_card_fields_of_a_classifier_are_checked_and_clip_cards_are_unchanged():
    with pytest.raises(ParameterError, match="family must be one of clip, classifier"):
        ModelCard("odd", arch="resnet10t", family="detector")
    with pytest.raises(ParameterError, match="3 classes but 4 class names"):
        ModelCard("odd", arch="resnet10t", family="classifier", num_classes=3, classnames=tuple(CLASSES))
    info = vs.zoo.info("clip-vitb32")
    assert info["family"] == "clip" and info["source"] == "open_clip" and info["quick_gelu"] is True
    assert isinstance(vs.zoo.load("clip-tinyrn"), VLM)


def test_a_registered_architecture_is_saved_by_name_and_built_again_from_the_folder(tmp_path):
    built = []

    def build(num_classes: int = 4):
        built.append(num_classes)
        return ToyCNN(num_classes)

    toy = Architecture("toy-cnn", build, "a toy CNN")
    plugin = make_plugin("test-architectures", register_architectures=lambda register: register(toy))
    with temporary_host(plugin):
        torch.manual_seed(0)
        classifier = ImageClassifier(build(3), 3, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3,
                                     classnames=["a", "b", "c"], architecture={"name": "toy-cnn",
                                                                               "args": {"num_classes": 3}})
        folder = vs.zoo.save(classifier, tmp_path / "toy", {"name": "toy-classifier"})
        config = json.loads((folder / "config.json").read_text())
        assert config["vlmshield_architecture"] == {"name": "toy-cnn", "args": {"num_classes": 3}}
        loaded = vs.zoo.load(f"local-dir:{folder}")
        assert isinstance(loaded.model, ToyCNN) and built[-1] == 3 and loaded.classnames == ("a", "b", "c")
        assert (loaded.image_size, loaded.mean, loaded.std) == ((16, 16), (0.5,) * 3, (0.25,) * 3)
        x = torch.rand(2, 3, 16, 16)
        assert torch.equal(loaded(x), classifier.eval()(x))
        with pytest.raises(ParameterError, match="architecture"):
            ImageClassifier(ToyCNN(), 4, architecture={"args": {}})
        with pytest.raises(VlmshieldError, match="unknown architecture 'nothing'"):
            vs.zoo.save(ImageClassifier(ToyCNN(), 4, architecture={"name": "nothing"}), tmp_path / "other")
    with pytest.raises(WeightsError, match="the architecture 'toy-cnn', which no installed plugin registers"):
        vs.zoo.load(f"local-dir:{folder}")
