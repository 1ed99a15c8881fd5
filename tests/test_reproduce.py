"""bench/reproduce.py: published numbers from the card beside measured ones, and its one-sentence refusals.

The published numbers are read from the cards here, never written down: cards are re-measured when a
protocol changes.
"""

import importlib.util
import json
from pathlib import Path

import pytest

import vlmshield as vs
from vlmshield.api import ModelCard, temporary_host
from vlmshield.testing import make_plugin
from vlmshield.world.models import build, read_card

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "reproduce.py"


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(out: str) -> dict[str, list[str]]:
    """The printed table's rows: 'clean, world-shapes' -> [published, measured, difference]."""
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows if cells[0].strip() != "number"}


def test_a_world_model_prints_the_cards_numbers_beside_measured_ones(reproduce, tmp_path, capsys):
    assert reproduce.main(["clip-tinyvit4", "--n", "8", "--datasets", "world-shapes", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = table(out)
    card = read_card("clip-tinyvit4")["metrics"]  # the JSON card beside the weights: fractions per task
    run = json.loads((tmp_path / "clip-tinyvit4" / "run.json").read_text())["results"]["world-shapes"]
    expected = {"clean, world-shapes": (card["clean"]["world-shapes"], run["clean_acc"])}
    expected.update({f"robust {eps}, world-shapes": (card["robust"][eps]["world-shapes"], run["robust_acc"][eps])
                     for eps in card["robust"]})
    for label, (published, measured) in expected.items():
        shown = rows[label]
        assert shown[0] == f"{100 * published:.1f}" and shown[1] == f"{100 * measured:.1f}"
        assert float(shown[2]) == pytest.approx(float(shown[1]) - float(shown[0]), abs=1e-9)
    # The means are published (the zoo card's percent) but a one-dataset run does not measure them.
    assert rows["clean, mean"] == [f"{vs.zoo.info('clip-tinyvit4')['metrics']['clean']:.1f}", "-", "-"]
    assert not any(label.endswith("world-colors") for label in rows)
    assert "overrides: datasets=world-shapes (" in out and ", n=8 (" in out and "standard error" in out


def test_both_card_formats_normalise_to_the_same_percent(reproduce):
    card = vs.get_host().get("model", "clip-tinyvit4").obj
    from_json, from_card = reproduce.published(reproduce.shipped_metrics(card)), reproduce.published(card.metrics)
    assert set(from_card) < set(from_json)
    for key, value in from_card.items():
        assert round(from_json[key], 1) == value
    assert reproduce.published({}) == {}


def test_cards_name_their_protocol_or_cite_a_table(reproduce):
    assert reproduce.protocol_of("a", {"protocol": "world: APGD-CE, 50 iterations"}, {}) == "world"
    assert reproduce.protocol_of("b", {"protocol": "world: ..."}, {"protocol": {"name": "tecoa"}}) == "tecoa"
    for name in ("fare4-vitl14", "fare4-vitb32"):  # the catalog's cards cite RobustVLM's README
        card = vs.get_host().get("model", name).obj
        assert reproduce.protocol_of(name, card.metrics, reproduce.shipped_metrics(card)) == "robustvlm"


def one_sentence(err: str, *phrases: str) -> None:
    assert err.count("\n") == 1 and err.rstrip().endswith(".")
    for phrase in phrases:
        assert phrase in err


def never_loaded(card, device=None, weights=True):
    raise AssertionError("the model was loaded")


def test_a_card_without_numbers_or_with_an_unknown_protocol_is_one_sentence_and_status_2(reproduce, capsys):
    assert reproduce.main(["clip-vitb32"]) == 2
    one_sentence(capsys.readouterr().err, "clip-vitb32 has no published numbers")
    odd = ModelCard("odd-tinyvit4", arch="tinyvit4", loader=never_loaded,
                    metrics={"protocol": "Someone's table 3: PGD-7", "clean": 50.0, "robust": {"1/255": 10.0}})
    with temporary_host(make_plugin("odd", register_models=lambda register: register(odd))):
        assert reproduce.main(["odd-tinyvit4", "--n", "4"]) == 2
    one_sentence(capsys.readouterr().err, "odd-tinyvit4's numbers were measured under \"Someone's table 3: PGD-7\"",
                 "not a registered protocol (")


def random_tinyvit4(card, device=None, weights=True):
    return build("tinyvit4", name=card.name)


def test_missing_weights_and_data_are_the_librarys_sentences(reproduce, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VLMSHIELD_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("VLMSHIELD_DATA", str(tmp_path / "elsewhere"))  # restored after the test: main sets it
    assert reproduce.main(["fare4-vitb32", "--n", "4"]) == 2
    one_sentence(capsys.readouterr().err, "needs vitb32_fare_eps_4.pt", str(tmp_path))
    card = ModelCard("data-tinyvit4", arch="tinyvit4", loader=random_tinyvit4,
                     metrics={"protocol": "world: the world's threat model", "clean": 50.0})
    with temporary_host(make_plugin("data", register_models=lambda register: register(card))):
        assert reproduce.main(["data-tinyvit4", "--n", "4", "--datasets", "cifar10", "--data-root", str(tmp_path)]) == 2
    one_sentence(capsys.readouterr().err, "dataset 'cifar10'", f"{tmp_path / 'cifar10'} does not exist")


def test_a_card_measured_under_other_settings_than_the_registered_protocol_says_so(reproduce):
    from vlmshield.api import get_protocol

    config = get_protocol("world").config()
    run = {"protocol": config, "overrides": {}, "n": config["n"]}
    assert reproduce.notes(run, {"protocol": dict(config)}, {}) == []
    older = dict(config, attack="an-older-attack", steps=7)
    (note,) = reproduce.notes(run, {"protocol": older}, {})
    assert f"attack an-older-attack (now {config['attack']}), steps 7 (now {config['steps']})" in note
