"""The plugin passes vlmshield's conformance checks on everything it registers."""

import torch
from vlmshield_dart import plugin
from vlmshield_dart.network import adaptation_classifier

import vlmshield as vs
from vlmshield.api import temporary_host
from vlmshield.conformance import Inputs


def test_everything_the_plugin_registers_conforms(vlmshield_conformance):
    """The UDA methods adapt the world's ResNet on a world pair; DART distils a small adaptation network."""
    with temporary_host(plugin):
        pair = vs.dataset("world-da/clutter", split="train")
        backbone = vs.zoo.load("clip-tinyrn")
        torch.manual_seed(0)
        teacher = adaptation_classifier("clip-tinyrn", 10, classnames=pair.classnames, bottleneck_dim=16)
        uda = Inputs(model=backbone, data=pair)
        inputs = {name: uda for name in ("source-only", "dann", "mdd", "source-only-at", "dann-at")}
        checked = vlmshield_conformance(plugin, inputs={**inputs, "dart": Inputs(model=teacher, data=pair)})
    assert "defense dart" in checked and not [line for line in checked if "not checked" in line]
