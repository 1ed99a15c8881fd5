"""The plugin example in CONTRIBUTING.md is real code: it must load, register and run."""

import re
import types
from pathlib import Path

import torch

import vlmshield as vs
from vlmshield.api import temporary_host
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


def _protocol_rows(text: str) -> dict[str, dict[str, str]]:
    """The README's protocol table, row by protocol name, cell by header."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = next(i for i, line in enumerate(lines) if line.startswith("| protocol |"))
    names = [cell.strip() for cell in lines[header].strip("|").split("|")]
    rows = {}
    for line in lines[header + 1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != len(names) or not cells[0].startswith("`"):
            break
        rows[cells[0].strip("`")] = dict(zip(names, cells, strict=True))
    return rows


def test_the_readme_protocol_table_says_what_each_protocol_runs():
    """Eps, images per dataset, preprocessing and counting in the README are those of the registered protocols."""
    rows = _protocol_rows((ROOT / "README.md").read_text())
    for name in ("tecoa", "robustvlm", "clean", "world"):
        protocol, row = vs.get_host().get("protocol", name).obj, rows[name]
        assert row["eps"] == (", ".join(protocol.eps) or "-"), name
        assert row["n per dataset"] == ("all" if protocol.n is None else str(protocol.n)), name
        if protocol.attack:
            expected = {"all": "all images", "clean-correct": "clean-correct"}[protocol.counting]
            assert row["robust over"] == expected, name
            if protocol.attack == "aa-lite":
                assert f"{protocol.attack_params['n_target_classes']} targets" in row["attack"], name
        rules = protocol.preprocess
        default = rules.get("default", "native")
        cell = row["preprocessing (eps is on these pixels)"]
        if default == "native":
            assert cell.startswith(("native", "CIFAR")), name
        else:
            assert f"Resize {default['resize']}" in cell and f"CenterCrop {default['crop']}" in cell, name
        for dataset, rule in rules.items():
            if dataset != "default" and rule != "native":
                assert f"Resize {rule['resize']} ({rule['interpolation']})" in cell, (name, dataset)


def test_ttcs_readme_does_not_call_a_native_ensemble_run_the_papers_protocol():
    text = (ROOT / "plugins" / "vlmshield-ttc" / "README.md").read_text()
    assert "main protocol" not in text
    assert "--protocol tecoa` is the protocol of the paper's tables" in text
