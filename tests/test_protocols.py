"""Named protocols, protocol runs, sanity flags, reports and the leaderboard."""

import json

import pytest
import torch
from torch import nn

import vlmshield as vs
from vlmshield.api import (
    ParameterError,
    Protocol,
    TestTimeDefense,
    format_run,
    get_host,
    load_run,
    run_protocol,
    temporary_host,
    write_report,
)
from vlmshield.engine.protocol_runs import apply_templates
from vlmshield.engine.sanity import check_classifier, check_results
from vlmshield.testing import Jitter, make_plugin, tensor_dataset, toy_classifier


def test_protocols_resolve_to_their_documented_parameters():
    tecoa = get_host().get("protocol", "tecoa").obj
    assert (tecoa.attack, tecoa.eps, tecoa.steps, tecoa.n, tecoa.templates, tecoa.datasets) == (
        "pgd", ("1/255",), 10, None, "single", "zs-suite")
    assert tecoa.attack_params == {"alpha": 1 / 255, "random_start": True}
    robustvlm = get_host().get("protocol", "RobustVLM").obj
    assert (robustvlm.attack, robustvlm.eps, robustvlm.steps, robustvlm.n, robustvlm.templates) == (
        "aa-lite", ("2/255", "4/255"), 100, 1000, "dataset")
    assert robustvlm.attack_params == {"n_restarts": 5, "n_target_classes": 9}
    assert robustvlm.datasets == "robustvlm-13"
    clean = get_host().get("protocol", "clean").obj
    assert clean.attack is None and clean.eps == () and clean.n is None
    world = get_host().get("protocol", "world").obj  # a cascade with a targeted attack, as AutoAttack's
    assert (world.attack, world.steps, world.n, list(world.eps)) == ("aa-lite", 50, 250, ["1/255", "2/255", "4/255"])
    assert world.attack_params == {"n_target_classes": 3}
    for protocol in (tecoa, robustvlm, clean, world):  # every protocol's attack and datasets exist
        if protocol.attack:
            get_host().create("attack", protocol.attack, **protocol.attack_params)
        assert protocol.datasets in get_host().registries["dataset"]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"templates": "ensembles"}, "templates must be one of"),
    ({"attack": "pgd"}, "needs its eps"),
    ({"eps": ("1/255",)}, "needs its eps values, and eps an attack"),
    ({"attack": "pgd", "eps": ("4/3",)}, "eps"),
])
def test_malformed_protocols_are_refused(kwargs, fragment):
    with pytest.raises(ParameterError, match=fragment):
        Protocol("bad", "a bad protocol", **kwargs)


def test_template_conventions():
    data = tensor_dataset(torch.rand(4, 3, 8, 8), torch.arange(4) % 2, ["cat", "dog"])
    assert apply_templates(data, "dataset") is data
    with pytest.raises(ParameterError, match="no 'single' prompt templates"):
        apply_templates(data, "single")
    data.template_sets = {"single": ["This is a photo of a {}."]}
    assert apply_templates(data, "single").templates == ["This is a photo of a {}."]


#: The world protocol with 5 attack iterations: the same code path, in seconds.
QUICK = Protocol("quick", "world, 5 iterations", attack="apgd-ce", eps=("1/255", "2/255", "4/255"), steps=5, n=500,
                 datasets="world")


@pytest.fixture(scope="module")
def world_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    kwargs = dict(dataset="world-shapes,world-colors", n=6, batch_size=3, progress=False)
    return out, [run_protocol(name, QUICK, out=out / name, **kwargs) for name in ("clip-tinyvit8", "clip-tinyrn")]


def test_a_protocol_run_records_everything_and_its_overrides(world_runs):
    out, (run, _) = world_runs
    assert run["record"] == "protocol-run" and run["protocol"] == QUICK.config()
    assert run["protocol"]["steps"] == 5 and run["protocol"]["eps"] == ["1/255", "2/255", "4/255"]
    assert run["overrides"] == {"datasets": "world-shapes,world-colors", "n": 6} and run["n"] == 6
    assert run["model"]["name"] == "clip-tinyvit8" and run["model"]["source"] == "package:clip-tinyvit8.safetensors"
    assert run["datasets"] == ["world-shapes", "world-colors"]
    for result in run["results"].values():
        assert result["n"] == 6 and list(result["robust_acc"]) == ["1/255", "2/255", "4/255"]
        assert all(value <= result["clean_acc"] for value in result["robust_acc"].values())
    assert [e["params"]["eps"] for e in run["evaluations"]] == pytest.approx([1 / 255, 2 / 255, 4 / 255])
    assert load_run(out / "clip-tinyvit8") == json.loads((out / "clip-tinyvit8" / "run.json").read_text())
    assert {p.name for p in (out / "clip-tinyvit8").iterdir()} == {
        "run.json", "eps-1-255.json", "eps-2-255.json", "eps-4-255.json"}
    # the same clean subset under every eps: one clean number
    records = [json.loads((out / "clip-tinyvit8" / f"eps-{e}-255.json").read_text()) for e in (1, 2, 4)]
    assert len({r["results"]["world-shapes"]["clean_acc"] for r in records}) == 1
    table = format_run(run)
    assert "| world-shapes | 6 |" in table and "robust 4/255" in table and "overrides: datasets=" in table


def test_evaluate_takes_a_protocol_and_refuses_an_attack_beside_it():
    with pytest.raises(ParameterError, match="either a protocol or an attack"):
        vs.evaluate("clip-tinyvit8", protocol="world", attack="pgd")
    run = vs.evaluate("clip-tinyvit8", "world-positions", protocol="clean", n=5, progress=False)
    assert run["protocol"]["name"] == "clean" and run["results"]["world-positions"]["robust_acc"] == {}


def test_a_report_has_the_leaderboard_table_csv_and_plots(world_runs, tmp_path):
    _, runs = world_runs
    report = write_report(runs, tmp_path, title="world")
    rows = report["leaderboard"]
    assert [r["model"] for r in rows] == sorted((r["model"] for r in rows), key=lambda m: [
        -x for x in reversed(list(next(r for r in rows if r["model"] == m)["robust_acc"].values()))])
    assert all(r["protocol"] == "quick" and r["versions"]["torch"] == torch.__version__ for r in rows)
    markdown = (tmp_path / "report.md").read_text()
    assert "| # | model | arch | protocol | clean | robust 1/255 | robust 2/255 | robust 4/255 | flags |" in markdown
    assert "quick (datasets=world-shapes,world-colors, n=6)" in markdown and "### robust 4/255 accuracy" in markdown
    lines = (tmp_path / "report.csv").read_text().splitlines()
    assert lines[0] == "model,protocol,dataset,n,clean_acc,robust_acc@1/255,robust_acc@2/255,robust_acc@4/255"
    assert len(lines) == 1 + 2 * 3  # two datasets and the average, per model
    for plot in ("robust_vs_eps.png", "per_dataset.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "report.json").read_text())["leaderboard"] == rows


def test_leaderboard_reuses_finished_runs_and_reruns_changed_ones(world_runs, monkeypatch):
    out, runs = world_runs
    import vlmshield.engine.leaderboard as board

    def no_run(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(board, "run_protocol", no_run)
    report = board.leaderboard(["clip-tinyvit8", "clip-tinyrn"], QUICK, out, dataset="world-shapes,world-colors", n=6)
    assert {r["model"] for r in report["leaderboard"]} == {"clip-tinyvit8", "clip-tinyrn"}
    assert (out / "leaderboard.md").exists()
    with pytest.raises(AssertionError, match="run again"):  # another n: not the same run
        board.leaderboard(["clip-tinyvit8"], QUICK, out, dataset="world-shapes,world-colors", n=7)


def test_report_rejects_what_is_not_a_run_record(tmp_path):
    (tmp_path / "x.json").write_text('{"record": "evaluation"}')
    with pytest.raises(vs.core.DataError, match="not the record of a protocol run"):
        load_run(tmp_path / "x.json")
    with pytest.raises(vs.core.DataError, match="cannot read"):
        load_run(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- sanity flags
class Noisy(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x + 0.05 * torch.randn_like(x))


class Optimising(nn.Module):
    """Takes one gradient step on its input before classifying: a test-time defense."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            grad, = torch.autograd.grad(self.inner(z).logsumexp(1).sum(), z)
        return self.inner((x - 0.01 * grad.sign()).clamp(0, 1))


class Masked(nn.Module):
    """Logits that are piecewise constant in the input: zero gradients everywhere."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 4) / 4 + 0 * x)


def test_sanity_flags_catch_randomness_autograd_and_masked_gradients():
    model, x, y = toy_classifier()
    x, y = x[:8], y[:8]
    assert check_classifier(model, x, y, "toy") == []
    assert [f["flag"] for f in check_classifier(Noisy(model), x, y, "toy")] == ["randomized-outputs"]
    assert [f["flag"] for f in check_classifier(Optimising(model), x, y, "toy")] == ["autograd-in-forward"]
    flags = check_classifier(Masked(model), x, y, "toy")
    assert [f["flag"] for f in flags] == ["zero-gradients"] and "at 8 of 8 images" in flags[0]["detail"]
    assert check_classifier(Masked(model), x, y, "toy", adaptive=True) == []  # BPDA ran beside: nothing to flag
    assert check_classifier(Masked(model), x, y, "toy", attacked=False) == []  # a backdoor trigger needs no gradient


def test_result_flags_robust_above_clean_and_non_adaptive_attacks_on_test_time_defenses():
    class Gate(TestTimeDefense):
        name = "gate"

        def wrap(self, classifier):
            return classifier

    results = {"a": {"clean_acc": 0.5, "robust_acc": {"4/255": 0.6}}, "b": {"clean_acc": 0.5, "robust_acc": {}}}
    flags = check_results(results, Gate(), vs.attack("pgd"))
    assert [(f["flag"], f["dataset"]) for f in flags] == [("robust-above-clean", "a"), ("test-time-defense", None)]
    assert check_results(results, None, vs.attack("pgd"))[0]["flag"] == "robust-above-clean"






def test_a_test_time_defense_is_reported_with_its_adaptive_numbers_and_ranked_by_them(tmp_path):
    quick = Protocol("quick4", "one eps", attack="pgd", eps=("1/255",), steps=3, n=6, datasets="world-positions")
    with temporary_host(make_plugin("jitter", register_defenses=lambda register: register(Jitter))):
        defended = run_protocol("clip-tinyvit8", quick, defense="test-jitter", batch_size=6, progress=False)
        plain = run_protocol("clip-tinyvit8", quick, batch_size=6, progress=False)
    result = defended["results"]["world-positions"]
    assert set(result["adaptive_robust_acc"]) == {"1/255"} and "adaptive_robust_acc" not in plain["average"]
    assert result["adaptive_robust_acc"]["1/255"] <= result["robust_acc"]["1/255"]
    assert [a["name"] for a in defended["adaptive_attacks"]] == ["bpda-eot"]
    assert defended["adaptive_attacks"][0]["params"]["steps"] == 3
    report = write_report([defended, plain], tmp_path)
    row = next(r for r in report["leaderboard"] if r["test_time_defense"])
    assert row["adaptive_robust_acc"] == defended["average"]["adaptive_robust_acc"]
    markdown = (tmp_path / "report.md").read_text()
    assert "(test-time defense)" in markdown and " / adaptive " in markdown


# ----------------------------------------------------------------------------- preprocessing and counting
def test_protocols_declare_their_preprocessing_and_counting():
    from vlmshield.cli.commands import describe

    tecoa, robustvlm, clean = (get_host().get("protocol", name).obj for name in ("tecoa", "robustvlm", "clean"))
    ttc = {"resize": 256, "crop": 224, "interpolation": "bilinear"}
    assert tecoa.preprocess == {"default": ttc} and tecoa.counting == "all"
    assert tecoa.preprocessing("cifar10") == tecoa.preprocessing("pcam") == ttc
    resize = {"resize": 224, "crop": 224, "interpolation": "bicubic"}
    assert robustvlm.preprocessing("pcam") == robustvlm.preprocessing("eurosat") == resize
    assert robustvlm.preprocessing("cifar10") == robustvlm.preprocessing("stl10") == "native"
    assert robustvlm.counting == clean.counting == "clean-correct" and clean.preprocessing("eurosat") == "native"
    info = describe(get_host().get("protocol", "tecoa"))  # what `vlmshield list/info protocols` shows
    assert info["preprocess"] == {"default": ttc} and info["counting"] == "all"
    assert "224" in tecoa.description and "all images" in tecoa.description
    assert "native" in robustvlm.description and "clean-correct" in robustvlm.description


@pytest.mark.parametrize("kwargs, fragment", [
    ({"counting": "some"}, "counting must be one of clean-correct, all"),
    ({"preprocess": {"default": "upsampled"}}, "a rule is 'native' or"),
    ({"preprocess": {"default": {"resize": 224, "crop": 256, "interpolation": "bilinear"}}}, "cannot exceed"),
    ({"preprocess": {"pcam": {"resize": 224, "crop": 224, "interpolation": "lanczos"}}}, "interpolation must be"),
    ({"preprocess": {"pcam": {"resize": 0, "crop": 0, "interpolation": "bicubic"}}}, "whole number of pixels"),
])
def test_malformed_preprocessing_and_counting_are_refused(kwargs, fragment):
    with pytest.raises(ParameterError, match=fragment):
        Protocol("bad", "a bad protocol", **kwargs)


def test_a_dataset_that_cannot_resize_itself_is_resized_as_tensors():
    from vlmshield.engine.protocol_runs import protocol_datasets

    rule = {"resize": 64, "crop": 48, "interpolation": "bicubic"}
    wide = Protocol("wide", "resize and crop", preprocess={"default": "native", "tensors": rule})
    data = tensor_dataset(torch.rand(3, 3, 16, 20), torch.arange(3) % 2, ["cat", "dog"])
    data.template_sets = {"single": ["This is a photo of a {}."]}
    built, = protocol_datasets(wide, [data])
    image = built[0][0]
    assert image.shape == (3, 48, 48) and 0 <= image.min() and image.max() <= 1
    assert built.preprocess == rule and built.template_sets == data.template_sets and built.name == "tensors"
    native = Protocol("plain", "as built")
    assert protocol_datasets(native, [data])[0] is data and data.preprocess == "native"


def test_a_counting_override_is_recorded_and_the_report_warns_about_mixed_conventions(tmp_path):
    from vlmshield.testing import tiny_vlm

    quick = Protocol("quick-all", "one PGD step, counted over all images", attack="pgd", eps=("1/255",), steps=1,
                     datasets="fakedata", counting="all")
    data = tensor_dataset(torch.rand(4, 3, 32, 32), torch.arange(4) % 2, ["cat", "dog"])
    runs = [run_protocol(tiny_vlm(), quick, data, batch_size=4, progress=False, counting=counting)
            for counting in (None, "clean-correct")]
    assert [r["counting"] for r in runs] == ["all", "clean-correct"]
    assert runs[0]["overrides"] == {"datasets": ["tensors"]}  # a built dataset is recorded by name
    assert runs[1]["overrides"] == {"datasets": ["tensors"], "counting": "clean-correct"}
    assert "robust accuracy over all images" in format_run(runs[0])
    report = write_report(runs, tmp_path)
    assert sorted(r["counting"] for r in report["leaderboard"]) == ["all", "clean-correct"]
    assert "counted differently across these runs" in (tmp_path / "report.md").read_text()
