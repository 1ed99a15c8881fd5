"""FARE: its loss by hand, its attack and outer step, its presets, and a world run from the command line."""

import json

import pytest
import torch
from vlmshield_fare import plugin
from vlmshield_fare.plugin import FARE

import vlmshield as vs
from vlmshield.api import Protocol, packaged_cards, resolve_loss, temporary_host
from vlmshield.cli import main
from vlmshield.testing import (
    attacked_accuracy,
    logged_losses,
    make_plugin,
    tiny_vlm,
    toy_dataset,
)


@pytest.fixture
def host():
    with temporary_host(plugin) as host:
        yield host


def test_the_loss_is_the_squared_distance_summed_over_the_embedding_and_averaged_over_the_batch():
    vlm, method = tiny_vlm(), FARE()
    x = toy_dataset()[0][0][None].repeat(2, 1, 1, 1)
    refs = method.references(vlm, toy_dataset())
    _, target, inner = method.attack_target(vlm, x, None, refs)
    x_adv = (x + 0.01).clamp(0, 1)
    with torch.no_grad():
        embedding = vlm.encode_image(x_adv)  # not normalized, as in FARE
        by_hand = sum(float(((embedding[i] - target[i]) ** 2).sum()) for i in range(2)) / 2
        assert method.loss(vlm, x_adv, x, None, target, refs).item() == pytest.approx(by_hand, rel=1e-5)
        assert torch.allclose(resolve_loss(inner)(embedding, target), ((embedding - target) ** 2).sum(1))
        assert torch.allclose(target, vlm.encode_image(x))  # the frozen copy is the original encoder


def test_the_attack_raises_the_loss_and_training_lowers_it_with_the_original_frozen(host):
    vlm, method, data = tiny_vlm(), FARE(), toy_dataset()
    x = torch.stack([data[i][0] for i in range(8)])
    refs = method.references(vlm, data)
    _, target, inner = method.attack_target(vlm, x, None, refs)
    attack = vs.attack("pgd", eps="4/255", steps=5, loss=inner, momentum=0.9)
    x_adv = attack(vlm, x, target, seed=0)
    with torch.no_grad():
        assert method.loss(vlm, x_adv, x, None, target, refs) > method.loss(vlm, x, x, None, target, refs)
    original = {k: v.clone() for k, v in vlm.model.visual.state_dict().items()}
    losses = logged_losses(vlm, data, method)
    assert losses[-1] < losses[0]
    assert any(not torch.equal(v, vlm.model.visual.state_dict()[k]) for k, v in original.items())


def test_the_paper_preset_is_robustvlms_run(host):
    from vlmshield.cli.train import command_line, plan

    run = plan("fare", eps="2/255")
    config = run["config"]
    assert (run["model"], run["dataset"]) == ("clip-vitl14", "imagenet")
    assert [(s.steps, s.lr, s.warmup, s.weight_decay) for s in config.stages] == [(20000, 1e-5, 1400, 1e-4)]
    assert (config.batch_size, config.eps, config.attack, config.attack_steps) == (128, 2 / 255, "pgd", 10)
    assert config.attack_alpha == 1 / 255 and config.attack_params == {"momentum": 0.9, "random_start": True}
    assert command_line(run) == "vlmshield train fare --eps 2/255"
    card = vs.zoo.info("fare2-vitb32")
    assert card["source"] == "recipe" and "vlmshield train fare --model clip-vitb32" in card["recipe"]
    with pytest.raises(vs.core.ParameterError, match="vlmshield train fare --model clip-vitb32"):
        vs.zoo.load("fare2-vitb32")


QUICK = Protocol("quick", "a smoke protocol", attack="apgd-ce", eps=("4/255",), steps=2, n=4, datasets="world-shapes")


@pytest.mark.slow
def test_a_two_step_world_run_from_the_command_line_writes_a_loadable_model_and_card(tmp_path, capsys):
    with temporary_host(plugin, make_plugin("quick", register_protocols=lambda register: register(QUICK))):
        assert main(["train", "fare", "--preset", "world", "--steps", "2", "--batch-size", "8", "--out",
                     str(tmp_path), "--package", "--name", "fare-test", "--no-progress", "--evaluate", "quick"]) == 0
        packaged, = packaged_cards(tmp_path)
    out = capsys.readouterr().out
    assert "trained fare on clip-tinyvit4" in out and "quick: clean" in out
    assert packaged.metrics["protocol"] == "quick: a smoke protocol" and set(packaged.metrics["robust"]) == {"4/255"}
    assert "robust accuracy (apgd-ce, Linf eps 4/255, n 4)" in (tmp_path / "model" / "README.md").read_text()
    card = json.loads((tmp_path / "fare-test.json").read_text())
    assert card["method"] == "fare" and card["base_model"] == "clip-tinyvit4"
    assert card["config"]["stages"][0]["steps"] == 2
    assert card["command"] == "vlmshield train fare --preset world --steps 2 --batch-size 8"
    folder = vs.zoo.load(f"local-dir:{tmp_path / 'model'}")
    shipped = packaged.load()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # the half-precision package and the folder hold the same model
        torch.testing.assert_close(shipped.encode_image(images), folder.encode_image(images), atol=5e-2, rtol=5e-2)
        base = vs.zoo.load("clip-tinyvit4")
        assert not torch.allclose(folder.encode_image(images), base.encode_image(images))
        assert torch.equal(folder.encode_text(["a star."]), base.encode_text(["a star."]))


def test_fare_takes_no_proxy_and_no_unknown_stage(host):
    from vlmshield.cli.train import plan

    with pytest.raises(vs.core.ParameterError, match="does not distill from a proxy"):
        plan("fare", "world", proxy="clip-tinyrn")
    with pytest.raises(vs.core.ParameterError, match="no stage 'hpt'"):
        plan("fare", "world", stage="hpt")
    with pytest.raises(vs.core.ParameterError, match="has no parameter 'proxy_weight'"):
        plan("fare", "world", params={"proxy_weight": 1.0})


@pytest.mark.parametrize("name, eps", [("fare-tinyvit4", "2.5/255"), ("fare4-tinyvit4", "4/255")])
def test_the_shipped_world_models_load_checked_and_are_more_robust_than_their_base(host, name, eps):
    card = vs.zoo.info(name)
    assert card["source"] == "package" and card["base_model"] == "clip-tinyvit4" and card["metrics"]["robust"]["4/255"]
    assert card["threat_model"]["eps"] == eps
    # cards at 4/255: 88.4% (fare-tinyvit4) and 92.6% (fare4-tinyvit4) against 0.0% (n 500)
    task = "world-positions"
    assert attacked_accuracy(name, task) >= attacked_accuracy("clip-tinyvit4", task) + 0.5


def test_the_world_preset(host):
    from vlmshield.cli.train import plan

    run = plan("fare", "world")
    config = run["config"]
    assert (run["model"], run["dataset"], config.eps, config.batch_size) == ("clip-tinyvit4", "world-finetune",
                                                                             2.5 / 255, 64)
    assert [(s.steps, s.lr, s.warmup) for s in config.stages] == [(600, 1e-3, 20)]
    assert (config.attack_steps, config.attack_alpha) == (5, 1 / 255)
    assert config.attack_params == {"momentum": 0.9, "random_start": True}
