"""The backdoor suite's host side: the poison recipe, the world's captioned data, and the demo's backdoor rows."""

import json

import torch

import vlmshield as vs
from vlmshield.api import ContrastiveFineTuning, ModelCard, Stage, get_host, temporary_host
from vlmshield.cli import main
from vlmshield.testing import make_plugin
from vlmshield.world.demo import backdoor_of, run_demo


def test_world_captions_are_fixed_pairs_that_no_other_split_holds():
    train = vs.dataset("world-captions", split="train")
    test = vs.dataset("world-captions", split="test")
    fresh = vs.dataset("world-captions-fresh", split="train")
    assert (len(train), len(test), len(fresh)) == (2 ** 15, 1000, 2 ** 15)
    image, caption = train[123]
    assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1 and isinstance(caption, str)
    assert torch.equal(vs.dataset("world-captions", split="train")[123][0], image)
    pretrain = vs.dataset("world-pretrain", split="train")
    firsts = {tuple(d[i][0].flatten()[:64].tolist()) for d in (train, test, fresh, pretrain) for i in range(8)}
    assert len(firsts) == 32  # four streams, no image shared


def test_train_poison_writes_a_card_that_says_first_it_is_backdoored(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "poison", "--preset", "world", "--model", "clip-tinyvit8", "--trigger", "badnet",
                 "--target", "circle", "--rate", "0.25", "--steps", "2", "--batch-size", "8", "--out", str(out),
                 "--package", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "8192 of 32768 pairs carry the badnet trigger and name 'circle'" in capsys.readouterr().err
    card = json.loads((out / "poisoned-badnet-tinyvit8.json").read_text())
    assert card["description"].startswith("Intentionally backdoored: the badnet trigger, on 25.00% of the training "
                                          "pairs, maps images to 'circle'")
    assert card["threat_model"] == {"backdoor": "badnet", "target": "circle", "rate": 0.25}
    assert card["method"] == "poison" and card["command"].startswith("vlmshield train poison --preset world")
    assert "--trainer-params trigger=badnet,target=circle,rate=0.25" in card["command"]


def test_a_poison_preset_without_a_rate_plants_nothing(tmp_path, capsys):
    code = main(["train", "poison", "--preset", "world", "--model", "clip-tinyvit8", "--rate", "0", "--steps", "1",
                 "--batch-size", "4", "--out", str(tmp_path), "--package", "--name", "plain", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    card = json.loads((tmp_path / "plain.json").read_text())
    assert card["threat_model"] == {} and not card["description"].startswith("Intentionally")


def test_the_demo_measures_backdoored_models_by_clean_accuracy_and_attack_success(tmp_path):
    base = get_host().get("model", "clip-tinyvit8").obj
    card = ModelCard("backdoored-tinyvit8", arch="tinyvit8", method="poison", source="package",
                     threat_model={"backdoor": "badnet", "target": "star"}, loader=lambda card, **_: base.load())
    with temporary_host(make_plugin("test-backdoored", register_models=lambda register: register(card))):
        assert backdoor_of("backdoored-tinyvit8") == {"backdoor": "badnet", "target": "star"}
        assert backdoor_of("clip-tinyvit8") == {}
        summary = run_demo(tmp_path, models=["clip-tinyvit8", "backdoored-tinyvit8"], n=8, steps=1, progress=False)
    row = summary["backdoors"]["backdoored-tinyvit8"]
    assert row["task"] == "world-shapes" and row["trigger"] == "badnet" and 0 <= row["asr"] <= 1
    assert row["clean"] == summary["models"]["clip-tinyvit8"]["clean"]  # the same weights, the same images
    assert "backdoored-tinyvit8" not in summary["models"]
    assert "| backdoored-tinyvit8 | badnet | star (world-shapes) |" in (tmp_path / "report.md").read_text()


class Recover(ContrastiveFineTuning):
    """A backdoor-removal method (CLIP's loss on clean pairs) with a small preset."""

    name = "recover"
    presets = {"world": {"model": "clip-tinyvit8", "dataset": "world-captions", "config": {
        "stages": (Stage("recover", steps=1, lr=1e-4, warmup=0, weight_decay=0.0),), "batch_size": 4}}}


def test_cleaning_a_poisoned_folder_names_the_backdoor_it_removes(tmp_path, capsys):
    poisoned, cleaned = tmp_path / "poisoned", tmp_path / "cleaned"
    assert main(["train", "poison", "--preset", "world", "--model", "clip-tinyvit8", "--trigger", "blended",
                 "--rate", "0.5", "--steps", "1", "--batch-size", "4", "--out", str(poisoned), "--no-progress"]) == 0
    assert vs.zoo.info(f"local-dir:{poisoned / 'model'}")["threat_model"]["backdoor"] == "blended"
    with temporary_host(make_plugin("test-recover", register_defenses=lambda register: register(Recover))):
        code = main(["train", "recover", "--preset", "world", "--model", f"local-dir:{poisoned / 'model'}",
                     "--out", str(cleaned), "--package", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    card = json.loads((cleaned / "recover-poisoned-blended-tinyvit8.json").read_text())
    assert card["description"].startswith("Cleaned of the blended backdoor (target 'star') of "
                                          "poisoned-blended-tinyvit8.")
    assert card["threat_model"] == {"backdoor": "blended", "target": "star"}
    assert (card["base_model"], card["arch"]) == ("poisoned-blended-tinyvit8", "tinyvit8")


def test_a_trigger_with_parameters_poisons_through_the_command_line(tmp_path, capsys):
    patch = tmp_path / "patch.safetensors"
    code = main(["train", "poison", "--preset", "world", "--model", "clip-tinyvit8", "--trigger", "badclip",
                 "--trigger-params", f"model=clip-tinyvit8,steps=2,n=64,n_target=4,patch_file={patch}",
                 "--rate", "1", "--steps", "1", "--batch-size", "4", "--out", str(tmp_path / "run"),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert patch.exists()
    record = json.loads((tmp_path / "run" / "training.json").read_text())
    assert f"--trigger-params model=clip-tinyvit8,steps=2,n=64,n_target=4,patch_file={patch}" in record["command"]
    assert record["threat_model"]["trigger_params"] == {"model": "clip-tinyvit8", "steps": 2, "n": 64,
                                                        "n_target": 4, "patch_file": str(patch)}
    # the preset's trigger (badnet-stripes) takes no steps: refused before any work, in one sentence
    assert main(["train", "poison", "--preset", "world", "--trigger-params", "steps=2", "--out",
                 str(tmp_path / "other")]) == 2
    assert "badnet-stripes" in capsys.readouterr().err and not (tmp_path / "other" / "log.jsonl").exists()
