"""DART's step 2 on the distillation trainer: what reaches the loss, the student's start, resume, processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import Dataset
from vlmshield_dart import plugin
from vlmshield_dart.dart import DART, logits_and_features
from vlmshield_dart.network import adaptation_classifier
from vlmshield_dart.uda import DANNAT, SourceOnlyAT

import vlmshield as vs
from vlmshield.api import (
    VLM,
    DomainPair,
    LabelledImages,
    ParameterError,
    Stage,
    TrainConfig,
    UnlabelledImages,
    temporary_host,
)
from vlmshield.testing import ToyCNN


def config(steps: int = 3, **fields) -> TrainConfig:
    return TrainConfig(stages=(Stage("robustify", steps=steps, lr=0.01, warmup=0, weight_decay=1e-3,
                                     schedule="inverse", decay_rate=0.001),),
                       batch_size=8, optimizer="sgd", nesterov=True, eps=4 / 255, attack_steps=2,
                       checkpoint_every=1, log_every=1, **fields)


@pytest.fixture(scope="module")
def pair():
    return vs.dataset("world-da/clutter", split="train")


@pytest.fixture(scope="module")
def teacher(pair):
    """A small adaptation network on the world's ResNet (step 1's output shape: it has DANN's adversary)."""
    with temporary_host(plugin):
        torch.manual_seed(0)
        return adaptation_classifier("clip-tinyrn", 10, classnames=pair.classnames, bottleneck_dim=16,
                                     adversary="dann")


class Untouchable(Dataset):
    """A dataset whose every read fails: the part of the pair the step-2 loss must never see."""

    def __init__(self, what: str, n: int = 64):
        self.what, self.n = what, n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        raise AssertionError(f"DART read the {self.what}")


class LabelBomb(tuple):
    """A target item whose image reads and whose label raises."""

    def __getitem__(self, index):
        if index != 0:
            raise AssertionError("DART read a target label")
        return super().__getitem__(0)


class TargetWithLabels(Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return LabelBomb((self.images[index], 0))


def test_only_unlabelled_target_images_reach_the_loss(pair, teacher):
    images = torch.stack([pair.target[i][0] for i in range(32)])
    templates = pair.source.templates
    guarded = DomainPair(LabelledImages(Untouchable("labelled source"), pair.classnames, templates, "source"),
                         UnlabelledImages(TargetWithLabels(images), "target"),
                         LabelledImages(Untouchable("target test labels"), pair.classnames, templates, "test"),
                         "guarded")
    seen = []

    class Recording(DART):
        def loss(self, model, x, refs, *, step_seed):
            seen.append(x.clone())
            return super().loss(model, x, refs, step_seed=step_seed)

    with temporary_host(plugin):
        student = Recording().fit(teacher, guarded, config(steps=2), progress=False)
    batches = torch.cat(seen)
    assert len(batches) == 16 and all(any(torch.equal(b, i) for i in images) for b in batches)
    assert student is not teacher and student.model.adversary is None


def test_the_student_starts_as_the_reference_builds_it_or_from_the_teacher(pair, teacher):
    with temporary_host(plugin):
        fresh, copied = DART().student(teacher, pair), DART(init="teacher").student(teacher, pair)
        pretrained = vs.zoo.load("clip-tinyrn").model.visual.state_dict()
    for key, value in fresh.model.backbone.state_dict().items():
        assert torch.equal(value, pretrained[key]), key
    assert not torch.equal(fresh.model.head.weight, teacher.model.head.weight)
    assert torch.equal(copied.model.head.weight, teacher.model.head.weight)
    assert fresh.model.adversary is None and copied.model.adversary is None
    assert teacher.model.adversary is not None, "building a student changed the teacher"
    assert all(s.architecture["args"].get("adversary", "none") == "none" for s in (fresh, copied))
    assert fresh.classnames == teacher.classnames and fresh.image_size == teacher.image_size


def test_the_teacher_stays_frozen_and_the_student_learns(pair, teacher, tmp_path):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with temporary_host(plugin):
        student = DART(init="teacher").fit(teacher, pair, config(steps=3), out=tmp_path, progress=False)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not torch.equal(student.model.head.weight, teacher.model.head.weight)
    logged = (tmp_path / "log.jsonl").read_text()
    assert all(f'"{part}"' in logged for part in ("def", "pred", "feat", "weight"))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert len({g["lr"] for g in state["optimizer"]["param_groups"]}) == 2  # the backbone at 0.1x


def test_an_interrupted_run_resumes_to_the_same_weights(pair, teacher, tmp_path):
    with temporary_host(plugin):
        whole = DART().fit(teacher, pair, config(steps=4), out=tmp_path / "whole", progress=False)
        DART().fit(teacher, pair, config(steps=4), out=tmp_path / "parts", stop_after=2, progress=False)
        resumed = DART().fit(teacher, pair, config(steps=4), out=tmp_path / "parts", progress=False)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_clip_teacher_distils_into_its_own_image_tower(pair):
    with temporary_host(plugin):
        vlm = vs.zoo.load("clip-tinyrn")
        student = DART().fit(vlm, pair, config(steps=2), progress=False)
        teacher = DART().teacher(vlm, pair)
    assert isinstance(student, VLM) and student is not vlm
    changed = {n for n, p in student.model.named_parameters() if not torch.equal(p, vlm.model.get_parameter(n))}
    assert changed and all(n.startswith("visual.") for n in changed)
    images = torch.rand(3, 3, 32, 32)
    logits, features = logits_and_features(teacher, images)
    assert logits.shape == (3, 10) and features.shape == (3, vlm.model.visual.output_dim)
    assert torch.allclose(logits, teacher(images), atol=1e-5)


def test_bad_teachers_and_options_say_what_is_expected(pair):
    with pytest.raises(ParameterError, match="weighting"):
        DART(weighting="mean")
    with pytest.raises(ParameterError, match="init"):
        DART(init="random")
    with temporary_host(plugin), pytest.raises(ParameterError, match="adaptation network"):
        DART().teacher(ToyCNN(), pair)
    with temporary_host(plugin), pytest.raises(ParameterError, match="domain pair"):
        DART().teacher(vs.zoo.load("clip-tinyrn"), pair.target_test)


@pytest.mark.parametrize("method", [SourceOnlyAT, DANNAT])
def test_vanilla_adversarial_training_attacks_the_source_within_the_budget(method, pair, monkeypatch):
    crafted = []
    from vlmshield.attacks.pgd import PGD

    original = PGD.__call__

    def recording(self, model, images, labels, *args, **kwargs):
        adversarial = original(self, model, images, labels, *args, **kwargs)
        crafted.append((images, adversarial, self.eps))
        return adversarial

    monkeypatch.setattr(PGD, "__call__", recording)
    with temporary_host(plugin):
        method(bottleneck_dim=16).fit(vs.zoo.load("clip-tinyrn"), pair, config(steps=2), progress=False)
    assert len(crafted) == 2
    for images, adversarial, eps in crafted:
        assert eps == pytest.approx(4 / 255) and not torch.equal(images, adversarial)
        assert (adversarial - images).abs().max() <= eps + 1e-6 and 0 <= adversarial.min() <= adversarial.max() <= 1


SCRIPT = textwrap.dedent('''
    import sys, torch
    torch.set_num_threads(1)
    import vlmshield as vs
    from vlmshield.api import Stage, TrainConfig, init_from_env, rank_and_world, temporary_host
    from vlmshield_dart import plugin
    from vlmshield_dart.dart import DART
    init_from_env()
    config = TrainConfig(stages=(Stage("robustify", steps=3, lr=0.05, warmup=0, weight_decay=0.0),), batch_size=8,
                         optimizer="sgd", eps=4 / 255, attack_steps=2)
    with temporary_host(plugin):
        student = DART().fit(vs.zoo.load("clip-tinyvit8"), vs.dataset("world-da/texture"), config, progress=False,
                             device="cpu")
    if rank_and_world()[0] == 0:
        torch.save(student.model.visual.state_dict(), sys.argv[1])
''')


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one(tmp_path):
    """A student without BatchNorm (a ViT's LayerNorms: its forward does not depend on the batch), the
    per-sample weighting (a mean over the batch): two processes average to the whole batch's step."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for name, prefix in (("one", [sys.executable]), ("two", torchrun)):
        done = subprocess.run([*prefix, str(script), str(tmp_path / f"{name}.pt")], capture_output=True, text=True,
                              timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    start = vs.zoo.load("clip-tinyvit8").model.visual.state_dict()
    assert any(not torch.equal(one[k], start[k]) for k in one)
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=key)


def test_the_shipped_world_models_load_checked_and_the_student_is_the_more_robust():
    from vlmshield.api import evaluate

    with temporary_host(plugin):
        cards = {name: vs.zoo.info(name) for name in ("dann-tinyrn-palette", "dart-tinyrn-palette")}
        target = vs.dataset("world-da/palette").target_test
        measured = {name: evaluate(vs.zoo.load(name), target, evaluator="accuracy", attack="apgd-ce", eps="1/255",
                                   steps=10, n=64, progress=False)["average"] for name in cards}
    for card in cards.values():
        assert card["family"] == "classifier" and card["training_data"] == "world-da/palette"
        assert list(card["classnames"]) == list(target.classnames)
    teacher, student = measured["dann-tinyrn-palette"], measured["dart-tinyrn-palette"]
    assert student["robust_acc"] >= teacher["robust_acc"] + 0.2
    assert student["clean_acc"] >= teacher["clean_acc"] - 0.1


def test_the_demo_measures_adapted_models_on_their_pairs_target(tmp_path):
    from vlmshield.world.demo import run_demo, world_models

    with temporary_host(plugin):
        assert {"dann-tinyrn-palette", "dart-tinyrn-palette"} <= set(world_models())
        summary = run_demo(tmp_path, models=["dart-tinyrn-palette"], n=8, steps=1, progress=False)
    row = summary["adaptation"]["dart-tinyrn-palette"]
    assert row["pair"] == "world-da/palette" and 0 <= row["robust"]["4/255"] <= row["clean"] <= 1
    assert "| dart-tinyrn-palette | world-da/palette |" in (tmp_path / "report.md").read_text()


def test_the_urda_protocols_measure_source_and_target_of_each_pair(teacher):
    from vlmshield.api import get_protocol, run_protocol

    with temporary_host(plugin):
        office, world = get_protocol("urda"), get_protocol("urda-world")
        record = run_protocol(teacher, world, "world-da/clutter", n=4, progress=False)
    assert office.datasets.count("office31/") == 6 and office.evaluator == world.evaluator == "accuracy"
    result = record["results"]["world-da/clutter"]
    assert result["source:n"] == result["target:n"] == 4
    assert set(result["target:robust_acc"]) == {"1/255", "2/255", "4/255"}
    assert record["overrides"] == {"datasets": "world-da/clutter", "n": 4}
