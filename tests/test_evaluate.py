import json

import pytest
import torch

import vlmshield as vs
from vlmshield.api import (
    ModelCard,
    ParameterError,
    TestTimeDefense,
    TrainingDefense,
    evaluate,
    model_identity,
    subset_indices,
    temporary_host,
)
from vlmshield.attacks import PGD
from vlmshield.evaluators import AttackSuccessRate
from vlmshield.testing import CornerPatch, make_plugin, tensor_dataset, tiny_vlm, toy_classifier

CLASSES = ["circle", "square", "star", "wave"]


class CountingPGD(PGD):
    """PGD that counts its calls, remembers what it attacked, and can simulate a crash."""

    name = "counting-pgd"
    calls: list = []
    crash_at: int | None = None

    def perturb(self, classifier, x, y, generator):
        CountingPGD.calls.append(classifier)
        if CountingPGD.crash_at is not None and len(CountingPGD.calls) > CountingPGD.crash_at:
            raise KeyboardInterrupt
        return super().perturb(classifier, x, y, generator)


class AdaptivePGD(CountingPGD):
    name = "adaptive-pgd"
    adaptive = True


class Blur(TestTimeDefense):
    name = "test-blur"
    description = "average-pools its input: a stand-in test-time defense"

    def __init__(self, size: int = 3):
        super().__init__(size=size)

    def wrap(self, classifier):
        return torch.nn.Sequential(torch.nn.AvgPool2d(self.size, stride=1, padding=self.size // 2), classifier)


class Finetune(TrainingDefense):
    name = "test-finetune"
    trainer = "adversarial"

    def fit(self, model, data, **options):
        return model




@pytest.fixture
def host():
    plugin = make_plugin(
        "test-plugin",
        register_attacks=lambda register: [register(c) for c in (CountingPGD, AdaptivePGD, CornerPatch)],
        register_defenses=lambda register: [register(Blur), register(Finetune)],
        register_models=lambda register: register(ModelCard(
            "tiny-clip", arch="tiny", loader=lambda card, device=None, weights=True: tiny_vlm().to(device))),
    )
    CountingPGD.calls, CountingPGD.crash_at = [], None
    with temporary_host(plugin) as host:
        yield host


@pytest.fixture(scope="module")
def toy():
    model, x, y = toy_classifier()
    return model, tensor_dataset(x, y, CLASSES, name="toy")


def test_record_has_configuration_numbers_and_environment(host, tmp_path):
    out = tmp_path / "record.json"
    record = evaluate("tiny-clip", "fakedata", attack="pgd", eps="4/255", steps=2, n=20, batch_size=8, out=out)
    assert json.loads(out.read_text()) == record
    assert not (tmp_path / "record.json.partial").exists()
    model = record["model"]
    assert {k: model[k] for k in ("name", "weights", "provider")} == {
        "name": "tiny-clip", "weights": True,
        "provider": {"distribution": None, "version": None, "plugin": "test-plugin"}}
    assert model["weights_sha256"] == model_identity(vs.zoo.load("tiny-clip"))["weights_sha256"]
    assert len(model["config_sha256"]) == 64 and record["provenance"]["attack"]["plugin"] == "vlmshield.attacks"
    assert record["attack"] == {"name": "pgd", "params": {"eps": 4 / 255, "alpha": 1 / 255, "steps": 2, "norm": "Linf",
                                                          "random_start": True, "loss": "ce", "momentum": 0.0,
                                                          "seed": 0}}
    result = record["results"]["fakedata"]
    assert result["n"] == 20 and result["num_classes"] == 10
    assert 0 <= result["robust_acc"] <= result["clean_acc"] <= 1
    assert {"vlmshield", "torch", "open_clip", "python"} <= set(record["environment"])


def test_seeded_subsets():
    assert subset_indices(100, 10, 0) == subset_indices(100, 10, 0)
    assert subset_indices(100, 10, 0) != subset_indices(100, 10, 1)
    assert subset_indices(5, 10, 0) == [0, 1, 2, 3, 4]
    assert len(set(subset_indices(100, 10, 3))) == 10


def test_several_datasets_give_a_table_with_the_average(toy):
    model, data = toy
    other = tensor_dataset(data.data.tensors[0][:64], data.data.tensors[1][:64], CLASSES, name="toy-half")
    record = evaluate(model, [data, other], evaluator="accuracy", attack="pgd", eps=8 / 255, steps=10,
                      attack_params={"alpha": 2 / 255}, batch_size=32)
    results = record["results"]
    assert record["average"]["robust_acc"] == pytest.approx(
        (results["toy"]["robust_acc"] + results["toy-half"]["robust_acc"]) / 2)
    assert results["toy"]["clean_acc"] == 1.0 and results["toy"]["robust_acc"] < 1.0
    table = vs.format_table(record)
    assert "| toy | 128 | 100.00 |" in table and "**average**" in table


def test_interrupted_run_resumes_without_recomputing(host, toy, tmp_path):
    model, data = toy
    settings = dict(evaluator="accuracy", attack="counting-pgd", eps=8 / 255, steps=3, n=64, batch_size=8)
    uninterrupted = evaluate(model, data, **settings)
    assert len(CountingPGD.calls) == 8

    out = tmp_path / "run.json"
    CountingPGD.calls, CountingPGD.crash_at = [], 3
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, data, out=out, **settings)
    partial = tmp_path / "run.json.partial"
    assert len(partial.read_text().splitlines()) == 1 + 3 and not out.exists()

    CountingPGD.calls, CountingPGD.crash_at = [], None
    resumed = evaluate(model, data, out=out, **settings)
    assert len(CountingPGD.calls) == 5
    assert resumed["results"] == uninterrupted["results"]
    assert not partial.exists()


def test_a_line_cut_short_by_a_crash_is_dropped(host, toy, tmp_path):
    model, data = toy
    settings = dict(evaluator="accuracy", attack="counting-pgd", eps=8 / 255, steps=3, n=32, batch_size=8)
    out = tmp_path / "run.json"
    CountingPGD.crash_at = 2
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, data, out=out, **settings)
    partial = tmp_path / "run.json.partial"
    partial.write_text(partial.read_text() + '{"key": "toy", "ind')
    CountingPGD.calls, CountingPGD.crash_at = [], None
    record = evaluate(model, data, out=out, **settings)
    assert len(CountingPGD.calls) == 2 and record["results"]["toy"]["n"] == 32


def test_a_log_from_another_configuration_is_refused(host, toy, tmp_path):
    model, data = toy
    out = tmp_path / "run.json"
    CountingPGD.crash_at = 1
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, data, evaluator="accuracy", attack="counting-pgd", steps=2, n=32, batch_size=8, out=out)
    with pytest.raises(ParameterError, match="different configuration"):
        evaluate(model, data, evaluator="accuracy", attack="counting-pgd", steps=3, n=32, batch_size=8, out=out)


def test_non_adaptive_attacks_see_the_undefended_classifier(host, toy):
    model, data = toy
    record = evaluate(model, data, evaluator="accuracy", attack="counting-pgd", defense="test-blur", n=16,
                      batch_size=16, steps=2)
    assert CountingPGD.calls[-1] is model
    assert record["defense"] == {"name": "test-blur", "params": {"size": 3}}
    evaluate(model, data, evaluator="accuracy", attack="adaptive-pgd", defense="test-blur", n=16, batch_size=16)
    assert isinstance(CountingPGD.calls[-1], torch.nn.Sequential)


def test_eot_draws_once_against_a_deterministic_defense_and_the_user_sets_adaptive_parameters(host, toy):
    model, data = toy

    class NoisyBlur(Blur):
        name = "test-noisy-blur"
        randomized = True

    def adaptive(defense, **options):
        record = evaluate(model, data, evaluator="accuracy", attack="pgd", eps=4 / 255, steps=1, defense=defense,
                          n=4, batch_size=4, **options)
        return {a["name"]: a["params"] for a in record["adaptive_attacks"]}

    assert adaptive(Blur())["bpda-eot"]["eot"] == 1
    assert adaptive(NoisyBlur())["bpda-eot"]["eot"] == 4  # the attack's default
    chosen = adaptive(NoisyBlur(), adaptive_params={"eot": 2, "steps": 3})["bpda-eot"]
    assert (chosen["eot"], chosen["steps"]) == (2, 3)
    with pytest.raises(ParameterError, match="no adaptive attack of test-blur .bpda-eot. takes restarts"):
        adaptive(Blur(), adaptive_params={"restarts": 2})


def test_attack_success_rate_counts_triggered_images_outside_the_target_class():
    data = tensor_dataset(torch.rand(6, 3, 16, 16) * 0.5, torch.tensor([0, 1, 2, 3, 2, 0]), CLASSES)

    class Backdoored(torch.nn.Module):  # answers "star" when the corner is white, else the true class
        def forward(self, x):
            triggered = x[:, :, -4:, -4:].mean(dim=(1, 2, 3)) > 0.99
            logits = torch.zeros(len(x), 4)
            logits[torch.arange(len(x)), torch.tensor([0, 1, 2, 3, 2, 1])] = 1.0
            logits[triggered, 2] = 5.0
            return logits

    x, y = data.data.tensors
    values = AttackSuccessRate().score(Backdoored(), x, y, data=data, attack=CornerPatch(target="star"))
    assert values["clean_acc"].tolist() == [1, 1, 1, 1, 1, 0]
    assert values["asr"][y != 2].tolist() == [1, 1, 1, 1] and values["asr"][y == 2].isnan().all()


def test_asr_and_clean_evaluations_run_end_to_end(host):
    data = tensor_dataset(torch.rand(8, 3, 32, 32), torch.arange(8) % 4, CLASSES)
    record = evaluate("tiny-clip", data, evaluator="asr", attack="corner-patch", attack_params={"target": "star"})
    assert set(record["results"]["tensors"]) >= {"clean_acc", "asr"}
    clean = evaluate("tiny-clip", data)
    assert "robust_acc" not in clean["results"]["tensors"] and record["attack"]["name"] == "corner-patch"


@pytest.mark.parametrize("kwargs, fragment", [
    ({"n": 0}, "n must be"), ({"batch_size": 0}, "batch size"), ({"attack": "corner-patch"}, "takes a Attack"),
    ({"evaluator": "asr"}, "needs an attack"), ({"evaluator": "asr", "attack": "pgd"}, "takes a BackdoorAttack"),
    ({"defense": "test-finetune"}, "finetune defense"), ({"eps": "4/255"}, "need an attack"),
    ({"attack": "pgd", "eps": "0"}, "eps must be"), ({"dataset": "fakedata,fakedata"}, "listed twice"),
    ({"dataset": "imagefolder"}, "needs its files"), ({"dataset": "imagefolder:/nonexistent/x"}, "does not exist"),
])
def test_bad_evaluation_requests_are_refused(host, kwargs, fragment):
    settings = {"dataset": "fakedata", **kwargs}
    with pytest.raises(vs.core.VlmshieldError, match=fragment):
        evaluate("tiny-clip", **settings)


def test_empty_or_one_class_image_folders_are_refused(host, tmp_path):
    from PIL import Image

    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(vs.core.DataError):
        evaluate("tiny-clip", f"imagefolder:{tmp_path / 'empty'}")
    (tmp_path / "one" / "cat").mkdir(parents=True)
    Image.new("RGB", (40, 30), "red").save(tmp_path / "one" / "cat" / "a.png")
    with pytest.raises(ParameterError, match="at least 2 class"):
        evaluate("tiny-clip", f"imagefolder:{tmp_path / 'one'}")


def test_image_folders_are_read_resized_and_classified(host, tmp_path):
    from PIL import Image

    for name, colour in (("red_apple", "red"), ("blue_sky", "blue")):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (40 + i, 30), colour).save(tmp_path / name / f"{i}.png")
    data = vs.dataset(f"imagefolder:{tmp_path}", image_size=32)
    assert data.classnames == ["blue sky", "red apple"] and data[0][0].shape == (3, 32, 32)
    assert evaluate("tiny-clip", data, n=4)["results"][data.name]["n"] == 4


# ----------------------------------------------------------------------------- counting conventions
class Threshold(torch.nn.Module):
    """Class 1 when an image's mean pixel is above 0.5, class 0 below: the attack moves the mean."""

    def forward(self, x):
        mean = x.mean(dim=(1, 2, 3))
        return 50 * torch.stack([0.5 - mean, mean - 0.5], dim=1)


class FlipsPerturbed(torch.nn.Module):
    """The opposite of ``inner``'s answer on images off the 1/255 grid (perturbed ones), its own elsewhere:
    wrong on a clean image ``inner`` gets wrong, right on the adversarial version of it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        logits = self.inner(x)
        perturbed = ((x * 255) - (x * 255).round()).abs().flatten(1).amax(dim=1) > 1e-3
        return torch.where(perturbed[:, None], -logits, logits)


class Reverse(TestTimeDefense):
    name = "test-reverse"
    adaptive_attacks = ()

    def wrap(self, classifier, calibration=None):
        return FlipsPerturbed(classifier)


def counting_task():
    """Five constant images on the 1/255 grid: three at 0.2 labelled 1 (Threshold gets them wrong clean),
    one at 0.8 labelled 1 and one at 0.2 labelled 0 (right clean)."""
    levels = torch.tensor([51, 51, 204, 51, 51]) / 255
    x = levels[:, None, None, None].expand(5, 3, 8, 8).clone()
    return tensor_dataset(x, torch.tensor([1, 1, 1, 0, 1]), ["low", "high"], name="levels")


#: PGD with an eps off the 1/255 grid, so that every adversarial image is off it.
OFF_GRID_PGD = dict(evaluator="accuracy", attack="pgd", eps=0.01, steps=3, attack_params={"alpha": 0.004},
                    batch_size=5)


def test_the_two_counting_conventions_on_a_test_time_defense():
    data = counting_task()
    results, records = {}, {}
    for counting in ("clean-correct", "all"):
        records[counting] = evaluate(Threshold(), data, defense=Reverse(), counting=counting, **OFF_GRID_PGD)
        results[counting] = records[counting]["results"]["levels"]
        assert records[counting]["counting"] == counting
    # clean: the defended classifier is Threshold on clean images, right on the 0.8 and the label-0 images
    assert results["clean-correct"]["clean_acc"] == results["all"]["clean_acc"] == pytest.approx(0.4)
    # only those two are attacked; the defense flips its answer on them and gets both wrong
    assert results["clean-correct"]["robust_acc"] == 0.0
    # every image attacked: the three wrong clean are right once perturbed, the two right clean are wrong
    assert results["all"]["robust_acc"] == pytest.approx(0.6)
    # above clean, and no fault of the evaluation: not robust-above-clean; the non-adaptive number is flagged
    assert [f["flag"] for f in records["all"]["flags"]] == ["test-time-defense"]
    assert [f["flag"] for f in records["clean-correct"]["flags"]] == ["test-time-defense"]


def test_robust_above_clean_is_flagged_when_counting_all_without_a_defense():
    record = evaluate(FlipsPerturbed(Threshold()), counting_task(), counting="all", **OFF_GRID_PGD)
    result = record["results"]["levels"]
    assert result["robust_acc"] == pytest.approx(0.6) and result["clean_acc"] == pytest.approx(0.4)
    assert [f["flag"] for f in record["flags"]] == ["robust-above-clean"]
    default = evaluate(FlipsPerturbed(Threshold()), counting_task(), **OFF_GRID_PGD)
    assert default["counting"] == "clean-correct" and default["results"]["levels"]["robust_acc"] == 0.0


def test_a_log_of_another_counting_convention_is_not_resumed(host, toy, tmp_path):
    model, data = toy
    out = tmp_path / "run.json"
    settings = dict(evaluator="accuracy", attack="counting-pgd", steps=2, n=32, batch_size=8, out=out)
    CountingPGD.crash_at = 1
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, data, **settings)
    CountingPGD.crash_at = None
    with pytest.raises(ParameterError, match="different configuration"):
        evaluate(model, data, counting="all", **settings)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"counting": "some"}, "counting must be one of clean-correct, all"),
    ({"counting": "all", "evaluator": "asr", "attack": "corner-patch"}, "no counting convention 'all'"),
])
def test_bad_counting_requests_are_refused(host, kwargs, fragment):
    with pytest.raises(ParameterError, match=fragment):
        evaluate("tiny-clip", "fakedata", **kwargs)


def test_an_evaluator_given_data_it_does_not_take_says_so_in_one_sentence(host):
    from vlmshield.api import CaptionedImages

    pairs = CaptionedImages([(torch.rand(3, 32, 32), "a red circle")] * 4, name="pairs")
    with pytest.raises(ParameterError, match=r"^the zero-shot evaluator takes labelled images; pairs is image-caption "
                                             r"pairs\.$"):
        evaluate("tiny-clip", pairs)
