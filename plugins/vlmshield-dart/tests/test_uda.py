"""The UDA trainer and its methods: DANN's reversal, the parameter groups, a few steps on the world, resume."""

from __future__ import annotations

import math

import pytest
import torch
from vlmshield_dart import plugin
from vlmshield_dart.network import AdaptationNet
from vlmshield_dart.uda import (
    DANN,
    MDD,
    SourceOnly,
    dann_lambda,
    margin_disparity,
    reverse_gradient,
    warm_start_lambda,
)

import vlmshield as vs
from vlmshield.api import ImageClassifier, ParameterError, Stage, TrainConfig, packaged_cards, temporary_host


def test_danns_weight_rises_from_zero_as_the_paper_schedules_it():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_lambda(1.0) == pytest.approx(0.99991, abs=1e-5)


def test_mdds_discrepancy_and_warm_start_against_hand_computations():
    y_s, y_s_adv = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])  # main head says 0; adversary: 50/50
    y_t, y_t_adv = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, math.log(3.0)]])  # main says 1; adversary 3/4
    expected = -4 * math.log(2) + math.log(1 - 0.75 + 1e-6)
    assert margin_disparity(y_s, y_s_adv, y_t, y_t_adv).item() == pytest.approx(expected, rel=1e-6)
    assert margin_disparity(y_s, y_s_adv, y_t, y_t_adv, margin=1.0).item() == \
        pytest.approx(-math.log(2) + math.log(0.25 + 1e-6), rel=1e-6)
    certain = torch.tensor([[0.0, 50.0]])  # the adversary agrees with the main head on the target: capped at 0
    assert margin_disparity(y_s, y_s_adv, y_t, certain).item() == pytest.approx(-4 * math.log(2) + math.log(1e-6),
                                                                              rel=1e-4)
    assert warm_start_lambda(0) == 0.0 and warm_start_lambda(1000) == pytest.approx(0.2 / (1 + math.exp(-1)) - 0.1)
    assert warm_start_lambda(10**6) == pytest.approx(0.1)


def test_the_reversal_layer_passes_forward_and_flips_and_scales_backward():
    x = torch.randn(4, 3, requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.3 * torch.arange(3.0).expand(4, 3))


def config(steps: int = 4) -> TrainConfig:
    return TrainConfig(stages=(Stage("adapt", steps=steps, lr=0.01, warmup=0, weight_decay=1e-3, schedule="inverse"),),
                       batch_size=8, optimizer="sgd", nesterov=True, checkpoint_every=2, log_every=1)


@pytest.fixture(scope="module")
def pair():
    return vs.dataset("world-da/clutter", split="train")


@pytest.mark.parametrize("method", [SourceOnly, DANN, MDD])
def test_a_few_steps_adapt_the_worlds_resnet_with_the_backbone_at_a_tenth(method, pair, tmp_path):
    with temporary_host(plugin):
        start = vs.zoo.load("clip-tinyrn")
        trained = method(bottleneck_dim=16).fit(start, pair, config(), out=tmp_path)
    assert isinstance(trained, ImageClassifier) and isinstance(trained.model, AdaptationNet)
    assert trained.classnames == tuple(pair.classnames) and trained(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert trained.model.adversary is None and trained.architecture["args"]["adversary"] == "none"
    kept = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]  # the adversary, for a resume
    assert any(key.startswith(("adversary.", "model.adversary.")) for key in kept) == (method is not SourceOnly)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    rates = sorted({round(g["lr"] / 0.01 * (1 + 0.001 * 3) ** 0.75, 6) for g in state["optimizer"]["param_groups"]})
    assert rates == [0.1, 1.0] and all(g["nesterov"] for g in state["optimizer"]["param_groups"])
    logged = (tmp_path / "log.jsonl").read_text()
    assert ("domain" in logged) == (method is DANN) and ("mdd" in logged) == (method is MDD)


def test_an_interrupted_run_resumes_to_the_same_weights(pair, tmp_path):
    with temporary_host(plugin):
        whole = DANN(bottleneck_dim=16).fit(vs.zoo.load("clip-tinyrn"), pair, config(), out=tmp_path / "whole")
        DANN(bottleneck_dim=16).fit(vs.zoo.load("clip-tinyrn"), pair, config(), out=tmp_path / "parts", stop_after=2)
        resumed = DANN(bottleneck_dim=16).fit(vs.zoo.load("clip-tinyrn"), pair, config(), out=tmp_path / "parts")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_the_command_line_trains_a_teacher_into_a_model_folder_and_a_packaged_classifier(tmp_path, capsys):
    from vlmshield.cli import main

    run = tmp_path / "run"
    with temporary_host(plugin):
        code = main(["train", "dann", "--preset", "world", "--steps", "2", "--batch-size", "8", "--out", str(run),
                     "--no-progress", "--package", "--name", "dann-test"])
        assert code == 0, capsys.readouterr().err
        teacher = vs.zoo.load(f"local-dir:{run / 'model'}")
        packaged, = packaged_cards(run)
        again = packaged.load()
    assert isinstance(teacher.model, AdaptationNet) and teacher.model.adversary is None
    with temporary_host(plugin), pytest.raises(ParameterError, match="has no dann adversary"):
        DANN(bottleneck_dim=16).fit(teacher, vs.dataset("world-da/clutter"), config())
    assert vs.zoo.info(f"local-dir:{run / 'model'}")["family"] == "classifier"
    assert packaged.family == "classifier" and packaged.classnames == teacher.classnames
    assert isinstance(again, ImageClassifier) and again.image_size == teacher.image_size
    for (key, a), b in zip(teacher.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a.half().to(a.dtype) if a.is_floating_point() else a, b), key
