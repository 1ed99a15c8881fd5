"""The plugin passes vlmshield's conformance checks on everything it registers."""

from vlmshield_hpt_gpd import plugin

from vlmshield.api import ModelCard, temporary_host
from vlmshield.conformance import Inputs
from vlmshield.testing import make_plugin, tiny_vlm

#: A proxy the toy can stand in for: the method's default proxy is an OpenAI CLIP from the Hub.
PROXY = make_plugin("tiny-proxy", register_models=lambda register: register(ModelCard(
    "tiny-proxy", arch="tiny", loader=lambda card, device=None, weights=True: tiny_vlm(seed=7).to(device))))


def test_everything_the_plugin_registers_conforms(vlmshield_conformance):
    with temporary_host(plugin, PROXY):
        checked = vlmshield_conformance(plugin, inputs={"hpt-gpd": Inputs(params={"proxy": "tiny-proxy"})})
    assert "defense hpt-gpd" in checked and not [line for line in checked if "not checked" in line]
