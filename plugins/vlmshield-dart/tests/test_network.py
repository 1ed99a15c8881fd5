"""The adaptation network: its parts, its pretrained backbone, and a model folder that builds it again."""

from __future__ import annotations

import json

import pytest
import torch
from vlmshield_dart import plugin
from vlmshield_dart.network import AdaptationNet, adaptation_classifier

import vlmshield as vs
from vlmshield.api import ImageClassifier, ParameterError, WeightsError, temporary_host


@pytest.mark.parametrize("adversary, head_layers", [("none", 1), ("dann", 1), ("mdd", 2)])
def test_the_parts_have_the_references_shapes(adversary, head_layers):
    torch.manual_seed(0)
    net = AdaptationNet("timm:resnet10t", num_classes=5, bottleneck_dim=32, head_layers=head_layers,
                        adversary=adversary).eval()
    z = torch.randn(3, 3, 32, 32)
    features = net.features(z)
    assert features.shape == (3, 32) and net(z).shape == (3, 5)
    assert torch.equal(net(z), net.head(features))
    assert isinstance(net.bottleneck[1], torch.nn.BatchNorm1d) and net.bottleneck[3].p == 0.5
    if adversary == "none":
        assert net.adversary is None
    else:
        assert net.adversary(features).shape == (3, 1 if adversary == "dann" else 5)
    assert len([m for m in net.head.modules() if isinstance(m, torch.nn.Linear)]) == head_layers


def test_bad_arguments_are_one_sentence():
    with pytest.raises(ParameterError, match="an adversary among none, dann, mdd"):
        AdaptationNet("timm:resnet10t", num_classes=5, adversary="cdan")


def test_a_clip_backbone_keeps_its_pretrained_weights_and_its_preprocessing():
    classifier = adaptation_classifier("clip-tinyrn", 10, bottleneck_dim=16, classnames=[str(i) for i in range(10)])
    tower = vs.zoo.load("clip-tinyrn").model.visual
    assert all(torch.equal(a, b) for a, b in zip(classifier.model.backbone.state_dict().values(),
                                                 tower.state_dict().values(), strict=True))
    assert classifier.image_size == (32, 32) and classifier.mean == (0.5,) * 3
    assert classifier.architecture == {"name": "adaptation-net", "args": {"backbone": "clip-tinyrn",
                                                                          "num_classes": 10, "bottleneck_dim": 16}}
    assert classifier.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_a_saved_network_loads_from_its_folder_with_its_weights(tmp_path):
    torch.manual_seed(1)
    classifier = adaptation_classifier("timm:resnet10t", 4, pretrained=False, bottleneck_dim=8, head_layers=2,
                                       adversary="mdd", classnames=list("abcd")).eval()
    with temporary_host(plugin):
        folder = vs.zoo.save(classifier, tmp_path / "net", {"name": "mdd-toy"})
        loaded = vs.zoo.load(f"local-dir:{folder}")
    assert json.loads((folder / "config.json").read_text())["vlmshield_architecture"]["args"]["adversary"] == "mdd"
    assert isinstance(loaded, ImageClassifier) and isinstance(loaded.model, AdaptationNet)
    assert loaded.model.adversary is not None and loaded.classnames == tuple("abcd")
    x = torch.rand(2, 3, 40, 40)
    assert torch.equal(loaded(x), classifier(x))
    with pytest.raises(WeightsError, match="'adaptation-net', which no installed plugin registers"):
        vs.zoo.load(f"local-dir:{folder}")  # without the plugin
