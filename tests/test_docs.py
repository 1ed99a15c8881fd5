"""The plugin example in CONTRIBUTING.md is real code: it must load, register and run."""

import re
import types
from pathlib import Path

import torch

import vlmshield as vs
from vlmshield.core import temporary_host
from vlmshield.testing import tiny_vlm

ROOT = Path(__file__).resolve().parents[1]


def test_the_contributing_plugin_example_works():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    source = next(block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "@hookimpl" in block)
    module = types.ModuleType("contributing_example")
    exec(compile(source, "CONTRIBUTING.md", "exec"), module.__dict__)
    with temporary_host(module) as host:
        assert not host.infos["contributing_example"].errors
        classifier = tiny_vlm().zero_shot(["cat", "dog"])
        x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
        x_adv = vs.attack("my-attack", eps="2/255")(classifier, x, y)
        assert (x_adv - x).abs().max() <= 2 / 255 + 1e-6
        defended = vs.defense("mydef").wrap(classifier)
        assert defended(x).shape == (2, 2)
        record = vs.evaluate(tiny_vlm(), "fakedata", attack="my-attack", defense="my-defense", n=4)
        assert record["defense"]["name"] == "my-defense"
