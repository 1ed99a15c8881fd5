"""The plugin examples in CONTRIBUTING.md are real code: they load, register, run and pass the conformance checks;
the README's tables say what the code does."""

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


def _section_module(text: str, title: str) -> types.ModuleType:
    """The Python blocks of CONTRIBUTING.md's section ``title``, run in order as one module."""
    section = text.split(f"\n### {title}\n", 1)[1].split("\n### ", 1)[0]
    name = "contributing_" + re.sub(r"\W+", "_", title.lower())
    module = types.ModuleType(name)
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        exec(compile(block, f"CONTRIBUTING.md ({title})", "exec"), module.__dict__)
    return module


def _as_plugin(module: types.ModuleType):
    """A plugin registering every attack, defense, trainer and evaluator class the module defines, and the
    datasets its hook registers (some sections register through hooks, some leave it to the reader)."""
    from vlmshield.api import Attack, BackdoorAttack, Defense, Evaluator, Trainer
    from vlmshield.testing import make_plugin

    defined = [obj for obj in vars(module).values()
               if isinstance(obj, type) and obj.__module__ == module.__name__ and getattr(obj, "name", "")]
    kinds = {"attacks": (Attack, BackdoorAttack), "defenses": (Defense,), "trainers": (Trainer,),
             "evaluators": (Evaluator,)}
    hooks = {f"register_{kind}": (lambda register, found=found: register(*found))
             for kind, bases in kinds.items() if (found := [c for c in defined if issubclass(c, bases)])}
    if hasattr(module, "register_datasets"):
        hooks["register_datasets"] = module.register_datasets
    return make_plugin(module.__name__, **hooks)


def test_every_kind_of_the_contributing_tutorial_passes_the_conformance_checks(tmp_path):
    """Each section's worked example, as written, registers and passes every conformance check."""
    from torchvision.utils import save_image

    from vlmshield.conformance import Inputs, check_distribution

    for split in ("train", "test"):  # the layout the dataset example reads
        for label, classname in enumerate(("red_square", "blue_circle")):
            (tmp_path / split / classname).mkdir(parents=True)
            save_image(torch.full((3, 20, 24), 0.2 + 0.6 * label), tmp_path / split / classname / "0.png")
    text = (ROOT / "CONTRIBUTING.md").read_text()
    sections = {"An evasion attack": None, "A test-time defense and its adaptive attack": None,
                "A backdoor trigger": None, "A training-time defense on an existing trainer": None,
                "A trainer for a new kind of defense": None, "An evaluator": None,
                "A dataset": {"my-folders": Inputs(root=tmp_path)}}
    for title, inputs in sections.items():
        plugin = _as_plugin(_section_module(text, title))
        with temporary_host(plugin):
            checked = check_distribution(plugin.__name__, inputs)
        assert checked and not [line for line in checked if "not checked" in line], (title, checked)
