"""TeCoA: its loss by hand, its attack and outer step, its presets, and a world run from the command line."""

import json

import pytest
import torch
import torch.nn.functional as F
from vlmshield_tecoa import plugin
from vlmshield_tecoa.plugin import TeCoA

import vlmshield as vs
from vlmshield.api import ParameterError, packaged_cards, temporary_host
from vlmshield.cli import main
from vlmshield.testing import (
    TOY_CLASSES,
    attacked_accuracy,
    logged_losses,
    tiny_vlm,
    toy_dataset,
)

CLASSES = list(TOY_CLASSES)


@pytest.fixture
def host():
    with temporary_host(plugin) as host:
        yield host


def test_the_loss_is_cross_entropy_of_100_times_the_cosine_to_the_class_prompts():
    vlm, method, data = tiny_vlm(), TeCoA(), toy_dataset()
    x, y = torch.stack([data[i][0] for i in range(4)]), torch.tensor([data[i][1] for i in range(4)])
    refs = method.references(vlm, data)
    with torch.no_grad():
        texts = F.normalize(vlm.encode_text([f"This is a photo of a {c}" for c in CLASSES]), dim=-1)
        images = F.normalize(vlm.encode_image(x), dim=-1)
        by_hand = F.cross_entropy(100 * images @ texts.t(), y)
        assert method.loss(vlm, x, x, y, y, refs).item() == pytest.approx(by_hand.item(), rel=1e-5)
    module, target, loss = method.attack_target(vlm, x, y, refs)
    assert module is refs["classifier"] and target is y and loss == "ce"


def test_bad_parameters_are_refused():
    with pytest.raises(ParameterError, match="must contain"):
        TeCoA(template="a photo")
    with pytest.raises(ParameterError, match="positive"):
        TeCoA(logit_scale=0)


def test_the_attack_raises_the_loss_and_training_lowers_it_and_leaves_the_text_tower(host):
    vlm, method, data = tiny_vlm(), TeCoA(), toy_dataset()
    x, y = torch.stack([data[i][0] for i in range(8)]), torch.tensor([data[i][1] for i in range(8)])
    refs = method.references(vlm, data)
    x_adv = vs.attack("pgd", eps="4/255", steps=5, momentum=0.9)(refs["classifier"], x, y, seed=0)
    with torch.no_grad():
        assert method.loss(vlm, x_adv, x, y, y, refs) > method.loss(vlm, x, x, y, y, refs)
    text = {k: v.clone() for k, v in vlm.model.state_dict().items() if not k.startswith("visual.")}
    losses = logged_losses(vlm, data, method)
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, vlm.model.state_dict()[k]) for k, v in text.items())


def test_the_presets(host):
    from vlmshield.cli.train import plan

    paper, world = plan("tecoa"), plan("tecoa", "world")
    assert paper["method"].template == "This is a photo of a {}" and paper["method"].logit_scale == 100.0
    assert [(s.steps, s.lr, s.warmup) for s in paper["config"].stages] == [(20000, 1e-5, 1400)]
    assert (paper["config"].eps, paper["config"].batch_size, paper["model"]) == (4 / 255, 128, "clip-vitl14")
    assert world["model"] == "clip-tinyvit4" and world["dataset"] == "world-finetune"
    assert world["method"].template == "a photo of a {}."  # the world's own prompt for shapes
    assert world["config"].eps == 2 / 255  # TeCoA2: at the world's 4/255 the training collapses
    with pytest.raises(ParameterError, match="no preset 'tiny'"):
        plan("tecoa", "tiny")
    with pytest.raises(ParameterError, match="not published"):
        vs.zoo.load("tecoa2-vitb16")


@pytest.mark.slow
def test_a_two_step_world_run_from_the_command_line_writes_a_loadable_model_and_card(host, tmp_path):
    assert main(["train", "tecoa", "--preset", "world", "--steps", "2", "--batch-size", "8", "--out",
                 str(tmp_path), "--package", "--no-progress"]) == 0
    card = json.loads((tmp_path / "tecoa-tinyvit4.json").read_text())
    assert card["method"] == "tecoa" and card["threat_model"] == {"norm": "Linf", "eps": "2/255"}
    assert card["method_params"] == {"template": "a photo of a {}.", "logit_scale": 100.0}
    loaded = packaged_cards(tmp_path)[0].load()
    assert loaded.name == "tecoa-tinyvit4"
    assert vs.zoo.load(f"local-dir:{tmp_path / 'model'}").name
    assert (tmp_path / "checkpoint.pt").exists() and len((tmp_path / "log.jsonl").read_text().splitlines()) == 2


def test_the_shipped_world_model_loads_checked_and_is_more_robust_than_its_base(host):
    card = vs.zoo.info("tecoa-tinyvit4")
    assert card["source"] == "package" and card["base_model"] == "clip-tinyvit4"
    assert card["threat_model"]["eps"] == "2/255" and card["metrics"]["robust"]["2/255"]
    for task in ("world-colors", "world-positions"):  # card at 4/255: 32.4% and 17.4% against 1.0% and 0.0% (n 500)
        assert attacked_accuracy("tecoa-tinyvit4", task, n=64) >= attacked_accuracy("clip-tinyvit4", task, n=64) + 0.05
