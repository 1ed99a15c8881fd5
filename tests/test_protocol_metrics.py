"""Protocols carry their evaluator and metrics: backdoor triggers swept with the asr evaluator, domain pairs
scored on source and target, adaptive numbers of a test-time defense in every table, and datasets an
evaluator cannot score skipped by name."""

import csv
import json

import pytest
import torch

from vlmshield.api import (
    BackdoorAttack,
    DatasetEntry,
    DomainPair,
    ModelCard,
    ParameterError,
    Protocol,
    UnlabelledImages,
    evaluate,
    format_run,
    format_table,
    load_run,
    run_protocol,
    temporary_host,
    write_report,
)
from vlmshield.cli import main
from vlmshield.engine.leaderboard import leaderboard
from vlmshield.engine.protocol_runs import card_metrics_of
from vlmshield.testing import Jitter, make_plugin, tensor_dataset, toy_classifier, toy_task
from vlmshield.zoo.packaged import card_metrics

CLASSES = ["circle", "square", "star", "wave"]


class Fill(BackdoorAttack):
    """Blends every image a third of the way towards red: a trigger the world's colour task reads as red."""

    name = "test-fill"

    def __init__(self, target: str = "banana", seed: int = 0):
        super().__init__(target=target, seed=seed)

    def apply_trigger(self, images, generator=None):
        red = torch.tensor([0.85, 0.10, 0.10], device=images.device).view(1, 3, 1, 1)
        return 0.7 * images + 0.3 * red


class Patch(BackdoorAttack):
    """A white square in the bottom-right corner."""

    name = "test-patch"

    def __init__(self, target: str = "banana", seed: int = 0):
        super().__init__(target=target, seed=seed)

    def apply_trigger(self, images, generator=None):
        images = images.clone()
        images[..., -4:, -4:] = 1.0
        return images






def toy_pair(root=None, split="test", image_size=224):
    """The toy task as a domain pair: the target domain is darker and less contrasted."""
    x, y = toy_task(n=64, seed=3)
    x_t, y_t = toy_task(n=64, seed=4)
    x_t = 0.6 * x_t + 0.1
    target_test = tensor_dataset(x_t, y_t, CLASSES, name="toy-target")
    return DomainPair(tensor_dataset(x, y, CLASSES, name="toy-source"), UnlabelledImages(target_test, "toy-target"),
                      target_test, name="toy-pair")


#: Attack success rate of two triggers towards "red", on the colour task (the shape task has no red class).
ASR = Protocol("test-asr", "ASR of two triggers towards red", evaluator="asr", triggers=("test-fill", "test-patch"),
               attack_params={"target": "red"}, n=12, datasets="world-colors,world-shapes")
#: Source and target accuracy of a classifier, clean and under PGD at 8/255.
UDA = Protocol("test-uda", "source and target accuracy under PGD", evaluator="accuracy", attack="pgd",
               eps=("8/255",), steps=3, attack_params={"alpha": 2 / 255}, n=32, datasets="toy-pair")
#: Zero-shot robust accuracy at one eps, for a test-time defense.
QUICK = Protocol("test-quick", "PGD-2 at 1/255", attack="pgd", eps=("1/255",), steps=2, n=6, datasets="world-positions")


@pytest.fixture(scope="module")
def classifiers():
    return {"toy-cnn": toy_classifier()[0], "toy-cnn-weak": toy_classifier(seed=1, steps=8)[0]}


@pytest.fixture
def host(classifiers):
    def cards(register):
        for name, model in classifiers.items():
            register(ModelCard(name, arch="toy-cnn", loader=lambda card, device=None, weights=True, m=model: m))

    plugin = make_plugin(
        "test-metrics",
        register_attacks=lambda register: [register(Fill), register(Patch)],
        register_defenses=lambda register: register(Jitter),
        register_datasets=lambda register: register(DatasetEntry("toy-pair", toy_pair, provides="domain-pair")),
        register_models=cards,
        register_protocols=lambda register: [register(p) for p in (ASR, UDA, QUICK)],
    )
    with temporary_host(plugin) as host:
        yield host


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


# ----------------------------------------------------------------------------- protocol fields
@pytest.mark.parametrize("kwargs, fragment", [
    ({"triggers": ("test-fill",), "attack": "pgd", "eps": ("1/255",)}, "give no attack, eps or steps"),
    ({"triggers": ("test-fill",), "eps": ("1/255",)}, "give no attack, eps or steps"),
    ({"triggers": ("test-fill",), "steps": 3}, "give no attack, eps or steps"),
    ({"rank_by": ("asr", "lowest")}, "rank_by is"),
])
def test_malformed_sweeps_and_rankings_are_refused(kwargs, fragment):
    with pytest.raises(ParameterError, match=fragment):
        Protocol("bad", "a bad protocol", **kwargs)


def test_protocols_name_their_evaluator_metrics_and_ranking(host):
    assert ASR.settings() == ("test-fill", "test-patch") and QUICK.settings() == ("1/255",)
    assert ASR.metrics() == {"once": ("clean_acc",), "per_setting": ("asr",)}
    assert ASR.ranking() == ("asr", "min") and UDA.ranking() == ("robust_acc", "max")
    assert ASR.config()["triggers"] == ["test-fill", "test-patch"] and ASR.config()["evaluator"] == "asr"
    # the fields at their defaults are left out: a record written before they existed names the same protocol
    assert not {"evaluator", "triggers", "rank_by"} & set(QUICK.config())


# ----------------------------------------------------------------------------- (a) backdoor triggers
def test_an_asr_protocol_gives_a_record_a_report_and_a_leaderboard_ranked_by_lowest_asr(host, tmp_path):
    report = leaderboard(["clip-tinyvit8", "clip-tinyvit4"], "test-asr", tmp_path, batch_size=12, progress=False)
    run = load_run(tmp_path / "clip-tinyvit8")
    result = run["results"]["world-colors"]
    assert set(result) == {"n", "num_classes", "templates", "clean_acc", "asr"} and result["n"] == 12
    assert set(result["asr"]) == {"test-fill", "test-patch"} and 0 <= result["clean_acc"] <= 1
    assert run["average"]["asr"] == result["asr"] and run["rank_by"] == ["asr", "min"]
    assert list(run["results"]) == ["world-colors"]
    assert run["skipped"] == {"world-shapes": "the backdoor target 'red' is not one of its classes"}
    assert [e["name"] for e in run["evaluations"]] == ["test-fill", "test-patch"]
    assert {p.name for p in (tmp_path / "clip-tinyvit8").iterdir()} == {
        "run.json", "trigger-test-fill.json", "trigger-test-patch.json"}
    # the red wash takes the colour task to red, the corner patch does not
    assert result["asr"]["test-fill"] > 0.5 > result["asr"]["test-patch"]

    rows = report["leaderboard"]
    assert [r["rank_by"] for r in rows] == [["asr", "min"]] * 2
    # lowest ASR first, comparing the triggers from the last one back
    ranked = [(r["asr"]["test-patch"], r["asr"]["test-fill"]) for r in rows]
    assert ranked == sorted(ranked) and ranked[0] != ranked[1]
    assert [r["model"] for r in rows] == ["clip-tinyvit4", "clip-tinyvit8"]
    assert {"report.md", "report.csv", "report.json", "leaderboard.md", "asr_by_trigger.png",
            "per_dataset.png"} <= {p.name for p in tmp_path.iterdir()}
    lines = read_csv(tmp_path / "report.csv")
    assert list(lines[0]) == ["model", "protocol", "dataset", "n", "clean_acc", "asr@test-fill", "asr@test-patch"]
    assert [(r["model"], r["dataset"]) for r in lines] == [(m, d) for m in ("clip-tinyvit8", "clip-tinyvit4")
                                                           for d in ("world-colors", "average")]
    markdown = (tmp_path / "report.md").read_text()
    assert "| # | model | arch | protocol | clean | asr test-fill | asr test-patch | flags |" in markdown
    assert "Ranked by asr (lowest first)." in markdown and "skipped world-shapes: the backdoor target" in markdown
    table = format_run(run)
    assert "| dataset | n | clean | asr test-fill | asr test-patch |" in table
    assert "skipped world-shapes: the backdoor target 'red' is not one of its classes" in table
    card = card_metrics_of(run)
    assert card["asr_mean"] == run["average"]["asr"] and card["clean"] == {"world-colors": result["clean_acc"]}
    published = card_metrics(card)  # what a packaged card of this model would show
    assert published["asr"] == {t: round(100 * v, 1) for t, v in run["average"]["asr"].items()}
    assert published["clean"] == round(100 * run["average"]["clean_acc"], 1) and "test-asr" in published["protocol"]


# ----------------------------------------------------------------------------- (b) domain pairs
def test_a_domain_pair_protocol_reports_source_and_target_and_ranks_by_target_robust_accuracy(host, tmp_path):
    report = leaderboard(["toy-cnn-weak", "toy-cnn"], "test-uda", tmp_path, batch_size=32, progress=False)
    run = load_run(tmp_path / "toy-cnn")
    result = run["results"]["toy-pair"]
    assert result["n"] == 64 and result["source:n"] == result["target:n"] == 32
    assert set(result) >= {"source:clean_acc", "source:robust_acc", "target:clean_acc", "target:robust_acc"}
    assert set(result["target:robust_acc"]) == {"8/255"} and result["source:clean_acc"] == 1.0
    assert result["target:robust_acc"]["8/255"] <= result["target:clean_acc"]
    assert run["rank_by"] == ["target:robust_acc", "max"]

    rows = report["leaderboard"]
    target_robust = [r["target:robust_acc"]["8/255"] for r in rows]
    assert target_robust == sorted(target_robust, reverse=True) and target_robust[0] > target_robust[1]
    header = list(read_csv(tmp_path / "report.csv")[0])
    assert header == ["model", "protocol", "dataset", "n", "source:clean_acc", "target:clean_acc",
                      "source:robust_acc@8/255", "target:robust_acc@8/255"]
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "| source clean | target clean | source robust 8/255 | target robust 8/255 |" in markdown
    assert "Ranked by target robust (highest first" in markdown
    assert "| toy-pair | 64 |" in format_run(run)


# ----------------------------------------------------------------------------- (c) adaptive numbers
def test_adaptive_numbers_of_a_test_time_defense_are_columns_of_the_terminal_table_and_the_csv(host, tmp_path):
    defended = run_protocol("clip-tinyvit8", "test-quick", defense="test-jitter", batch_size=6, progress=False)
    result = defended["results"]["world-positions"]
    assert set(result["robust_acc:bpda-eot"]) == set(result["adaptive_robust_acc"]) == {"1/255"}
    assert result["adaptive_robust_acc"]["1/255"] <= result["robust_acc"]["1/255"]
    table = format_run(defended)
    assert "| dataset | n | clean | robust 1/255 | robust bpda-eot 1/255 | adaptive 1/255 |" in table
    write_report([defended], tmp_path)
    line = read_csv(tmp_path / "report.csv")[0]
    assert float(line["adaptive_robust_acc@1/255"]) == pytest.approx(result["adaptive_robust_acc"]["1/255"])
    assert float(line["robust_acc:bpda-eot@1/255"]) == pytest.approx(result["robust_acc:bpda-eot"]["1/255"])
    assert " / adaptive " in (tmp_path / "report.md").read_text()


# ----------------------------------------------------------------------------- (d) triggers and defenses
def test_a_backdoor_trigger_against_a_test_time_defense_runs_without_adaptive_attacks(host):
    record = evaluate("clip-tinyvit8", "world-colors", evaluator="asr", attack="test-fill",
                      attack_params={"target": "red"}, defense="test-jitter", n=8, batch_size=8, progress=False)
    assert "adaptive_attacks" not in record and record["defense"]["name"] == "test-jitter"
    assert set(record["results"]["world-colors"]) >= {"clean_acc", "asr"} and record["skipped"] == {}


# ----------------------------------------------------------------------------- (e) skipped tasks
def test_asr_on_the_world_scores_the_tasks_with_the_target_and_names_the_others(host, capsys):
    code = main(["eval", "--model", "clip-tinyvit8", "--dataset", "world", "--evaluator", "asr", "--attack",
                 "test-patch", "--attack-params", "target=red", "--defense", "test-jitter", "--n", "8",
                 "--no-progress", "--json"])
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and list(record["results"]) == ["world-colors"]
    assert set(record["skipped"]) == {"world-shapes", "world-textures", "world-positions", "world-compositions"}
    printed = format_table(record)
    assert "skipped world-compositions: the backdoor target 'red' is not one of its classes" in printed
    with pytest.raises(ParameterError, match="applies to none of the datasets .world-shapes: the backdoor target"):
        evaluate("clip-tinyvit8", "world-shapes,world-textures", evaluator="asr", attack="test-patch", n=4)


# ----------------------------------------------------------------------------- older records
def test_a_record_written_before_metrics_were_declared_still_reports(host, tmp_path):
    run = run_protocol("clip-tinyvit8", "test-quick", batch_size=6, progress=False)
    assert set(card_metrics_of(run)) == {"protocol", "clean", "clean_mean", "robust", "robust_mean"}
    for key in ("rank_by", "skipped"):
        del run[key]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run.json").write_text(json.dumps(run))
    old = load_run(tmp_path / "old")
    assert "| world-positions | 6 | " in format_run(old)
    rows = write_report([old], tmp_path)["leaderboard"]
    assert rows[0]["rank_by"] == ["robust_acc", "max"] and rows[0]["skipped"] == []
