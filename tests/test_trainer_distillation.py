"""The distillation trainer: a student taught by a frozen teacher on unlabelled world images."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset, TensorDataset

import vlmshield as vs
from vlmshield.api import (
    Distillation,
    DomainPair,
    LabelledImages,
    ParameterError,
    Stage,
    TrainConfig,
    UnlabelledImages,
    frozen_copy,
    get_host,
    kl_divergence,
    temporary_host,
)
from vlmshield.testing import ToyCNN, tiny_vlm
from vlmshield.trainers.distillation import DistillationTrainer


def toy_cnn(seed: int) -> ToyCNN:
    """A small CNN (no BatchNorm) with 10 outputs, the same for the same seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ToyCNN(num_classes=10)


class ToyDistillation(Distillation):
    """Teaches the student a fixed random CNN (sharpened, so that its soft labels are far from uniform)."""

    name = "toy-distillation"

    def teacher(self, model, data):
        teacher = toy_cnn(seed=100)
        teacher.head.weight.data.mul_(20)
        return frozen_copy(teacher)


def world_images(n: int = 64) -> UnlabelledImages:
    """The first ``n`` images of the world's fine-tuning set, without their labels."""
    return UnlabelledImages(Subset(vs.dataset("world-finetune", split="train"), range(n)), "world-finetune")


def _config(steps: int = 6, lr: float = 3e-3, **overrides) -> TrainConfig:
    fields = dict(stages=(Stage("distill", steps=steps, lr=lr, warmup=1, weight_decay=0.0),), batch_size=8,
                  checkpoint_every=2, log_every=1)
    return TrainConfig(**{**fields, **overrides})


def test_training_lowers_the_distillation_loss():
    data, student, method = world_images(), toy_cnn(seed=1), ToyDistillation()
    x = torch.stack([data[i][0] for i in range(len(data))])
    refs = method.references(student, data)

    def loss():
        with torch.no_grad():
            return method.loss(student, x, refs, step_seed=0).item()

    before = loss()
    with temporary_host():
        DistillationTrainer().train(student, data, method, _config(steps=10), progress=False, device="cpu")
    assert loss() < 0.8 * before


def test_the_default_loss_is_the_temperature_scaled_kl_from_a_frozen_copy_of_the_model():
    student, x = toy_cnn(seed=1), world_images(8)
    x = torch.stack([x[i][0] for i in range(8)])
    method = Distillation(temperature=2.0)
    refs = method.references(student, None)
    assert method.loss(student, x, refs, step_seed=0).item() == pytest.approx(0, abs=1e-6)  # the model as it starts
    other = toy_cnn(seed=2)
    expected = kl_divergence(student(x) / 2, other(x) / 2).mean() * 4
    assert torch.allclose(method.loss(other, x, refs, step_seed=0), expected)
    with pytest.raises(ParameterError, match="zero_shot"):
        method.loss(tiny_vlm(), x, {"teacher": tiny_vlm()}, step_seed=0)
    with pytest.raises(ParameterError, match="temperature must be a positive number"):
        Distillation(temperature=0)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    data = world_images()
    with temporary_host():
        whole = ToyDistillation().fit(toy_cnn(seed=1), data, _config(), progress=False, device="cpu")
        ToyDistillation().fit(toy_cnn(seed=1), data, _config(), out=tmp_path, progress=False, device="cpu",
                              stop_after=3)
        resumed = ToyDistillation().fit(toy_cnn(seed=1), data, _config(), out=tmp_path, progress=False, device="cpu")
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert not torch.equal(whole.head.weight, toy_cnn(seed=1).head.weight)
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_labelled_images_and_a_domain_pair_s_target_are_read_as_images_and_other_data_is_refused():
    world = vs.dataset("world-finetune", split="train")
    labelled = LabelledImages(Subset(world, range(16)), world.classnames, world.templates, name="world-16")
    pair = DomainPair(labelled, world_images(16), labelled, name="world-pair")
    config = _config(steps=2)
    with temporary_host():
        for data in (labelled, pair):
            trained = ToyDistillation().fit(toy_cnn(seed=1), data, config, progress=False, device="cpu")
            assert not torch.equal(trained.head.weight, toy_cnn(seed=1).head.weight)
        with pytest.raises(ParameterError, match="the distillation trainer takes unlabelled images; TensorDataset"):
            ToyDistillation().fit(toy_cnn(seed=1), TensorDataset(torch.rand(16, 3, 32, 32)), config, progress=False)


def test_fit_runs_the_registered_distillation_trainer(tmp_path):
    with temporary_host():
        registered = get_host().get("trainer", "distillation").obj
        assert registered is DistillationTrainer and registered.method_type is Distillation
        assert (ToyDistillation.trainer, ToyDistillation.defense_kind) == ("distillation", "domain-adaptation")
        student = toy_cnn(seed=1)
        world = vs.dataset("world-finetune", split="train")
        trained = ToyDistillation().fit(student, world_images(), _config(steps=2, val_every=1, val_n=20),
                                        out=tmp_path, val_data=world, progress=False, device="cpu")
    assert trained is student and not trained.training
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2] and 0 <= log[-1]["val"]["clean_acc"] <= 1
    assert (tmp_path / "checkpoint.pt").exists()


SCRIPT = textwrap.dedent('''
    import sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from test_trainer_distillation import ToyDistillation, _config, toy_cnn, world_images
    from vlmshield.api import init_from_env, rank_and_world
    init_from_env()
    student = ToyDistillation().fit(toy_cnn(seed=1), world_images(), _config(steps=4, lr=0.05, optimizer="sgd"),
                                    progress=False, device="cpu")
    if rank_and_world()[0] == 0:
        torch.save(student.state_dict(), sys.argv[1])
''')


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one_with_the_whole_batch(tmp_path):
    """With SGD, whose steps scale with the gradient: the averaged gradient must be the whole batch's."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for name, prefix in (("one", [sys.executable]), ("two", torchrun)):
        done = subprocess.run([*prefix, str(script), str(tmp_path / f"{name}.pt"), str(Path(__file__).parent)],
                              capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=key)
    assert all(not torch.equal(one[k], toy_cnn(seed=1).state_dict()[k]) for k in one)


class WorldStudent(Distillation):
    """The default distillation (a frozen copy of the model teaches it) with a preset on the world."""

    name = "world-student"
    presets = {"test": {"model": "toy-world-classifier", "dataset": "world-finetune", "config": {
        "stages": (Stage("distill", steps=2, lr=1e-3, warmup=0, weight_decay=0.0),), "batch_size": 8}}}


def test_vlmshield_train_distills_a_timm_classifier_card_and_saves_it_in_timms_layout(tmp_path, capsys):
    """The whole command on a classifier that is not a CLIP: train, save the folder, load it back."""
    pytest.importorskip("timm")
    from vlmshield.api import ImageClassifier, ModelCard
    from vlmshield.cli import main
    from vlmshield.testing import make_plugin

    classes = vs.dataset("world-finetune", split="test").classnames
    card = ModelCard("toy-world-classifier", arch="resnet10t", family="classifier", classnames=tuple(classes),
                     loader=lambda card, device=None, weights=True: ImageClassifier.from_timm(
                         "resnet10t", num_classes=len(classes), image_size=32, classnames=classes))
    plugin = make_plugin("world-student", register_models=lambda register: register(card),
                         register_defenses=lambda register: register(WorldStudent))
    with temporary_host(plugin):
        code = main(["train", "world-student", "--preset", "test", "--out", str(tmp_path / "run"), "--no-progress"])
        assert code == 0, capsys.readouterr().err
        saved = tmp_path / "run" / "model"
        assert {"config.json", "model.safetensors"} <= {p.name for p in saved.iterdir()}
        loaded = vs.zoo.load(f"local-dir:{saved}")
    assert isinstance(loaded, ImageClassifier) and loaded.num_classes == len(classes)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2]
