"""The contrastive trainer: CLIP's loss over the global batch, resume, processes, and backdoor poisoning."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

import vlmshield as vs
from vlmshield.api import (
    CaptionedImages,
    ContrastiveFineTuning,
    ParameterError,
    Stage,
    TrainConfig,
    clip_loss,
    get_host,
    temporary_host,
)
from vlmshield.testing import CornerPatch, make_plugin, tensor_dataset, tiny_vlm


class CleanPairs(ContrastiveFineTuning):
    """The default method: CLIP's loss on the pairs, every parameter but the logit scale training."""

    name = "clean-pairs"
    presets = {"test": {"model": "clip-tinyvit8", "dataset": "world-pretrain",
                        "config": {"stages": (Stage("clean", steps=2, lr=1e-4, warmup=0, weight_decay=0.0),),
                                   "batch_size": 8, "checkpoint_every": 10, "log_every": 1}}}




class WithLogitScale(CleanPairs):
    """CLIP's loss training the logit scale too (it sees every process's features whole)."""

    name = "with-logit-scale"

    def trainable(self, vlm):
        return list(vlm.model.parameters())


def plugin():
    return make_plugin("test-contrastive", register_defenses=lambda register: register(CleanPairs),
                       register_attacks=lambda register: register(CornerPatch))


def world_pairs(n: int = 32, start: int = 0) -> CaptionedImages:
    """The first ``n`` pairs of world-pretrain after ``start``."""
    return CaptionedImages(Subset(vs.dataset("world-pretrain", split="train"), range(start, start + n)),
                           name="world-pretrain-slice")


def config(**overrides) -> TrainConfig:
    fields = dict(stages=(Stage("a", steps=4, lr=1e-3, warmup=1, weight_decay=0.01),), batch_size=8,
                  checkpoint_every=2, log_every=1)
    return TrainConfig(**{**fields, **overrides})


def batch_loss(vlm, pairs) -> float:
    with torch.no_grad():
        images = torch.stack([image for image, _ in pairs])
        return clip_loss(vlm.encode_image(images), vlm.encode_text([c for _, c in pairs]),
                         vlm.model.logit_scale.exp()).item()


def test_clip_loss_is_symmetric_cross_entropy_and_low_for_matching_pairs():
    assert clip_loss(torch.eye(6), 2 * torch.eye(6), torch.tensor(100.0)) < 1e-6  # each pair matches, no other
    features = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    logits = 3 * torch.nn.functional.normalize(features, dim=1) @ torch.nn.functional.normalize(-features, dim=1).t()
    by_hand = (torch.nn.functional.cross_entropy(logits, torch.arange(6))
               + torch.nn.functional.cross_entropy(logits.t(), torch.arange(6))) / 2
    assert clip_loss(features, -features, torch.tensor(3.0)) == pytest.approx(by_hand.item())


def test_training_on_captioned_pairs_lowers_the_clip_loss_and_keeps_the_logit_scale(tmp_path):
    data = world_pairs(16)
    vlm = tiny_vlm()
    scale, before = vlm.model.logit_scale.detach().clone(), batch_loss(vlm, data)
    with temporary_host(plugin()):
        CleanPairs().fit(vlm, data, config(stages=(Stage("a", steps=8, lr=1e-3, warmup=0, weight_decay=0.0),)),
                         out=tmp_path, progress=False)
    assert batch_loss(vlm, data) < before - 0.1
    assert torch.equal(vlm.model.logit_scale, scale)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 9)) and all(e["loss"] > 0 for e in log)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    data = world_pairs()
    with temporary_host(plugin()):
        whole = CleanPairs().fit(tiny_vlm(), data, config(), progress=False)
        CleanPairs().fit(tiny_vlm(), data, config(), out=tmp_path, progress=False, stop_after=2)
        resumed = CleanPairs().fit(tiny_vlm(), data, config(), out=tmp_path, progress=False)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert any(not torch.equal(v, tiny_vlm().model.state_dict()[k]) for k, v in whole.model.state_dict().items())


def test_the_trainer_refuses_labelled_data_in_one_sentence():
    labelled = tensor_dataset(torch.rand(8, 3, 32, 32), torch.arange(8) % 2, ["cat", "dog"], name="toy")
    with temporary_host(plugin()), pytest.raises(ParameterError,
                                                 match=r"^the contrastive trainer takes image-caption pairs; toy "
                                                       r"is labelled images\.$"):
        CleanPairs().fit(tiny_vlm(), labelled, config(), progress=False)


@pytest.mark.parametrize("params, fragment", [
    ({"rate": 0.1}, "a poisoning rate needs a trigger"),
    ({"trigger": "corner-patch", "rate": 1.5}, r"must be in \[0, 1\]"),
    ({"trigger": "pgd", "rate": 0.1}, "'pgd' is an evasion attack"),
])
def test_bad_trainer_parameters_are_one_sentence(params, fragment):
    with temporary_host(plugin()), pytest.raises(ParameterError, match=fragment):
        get_host().create("trainer", "contrastive", **params)


def captioned(n: int = 40) -> CaptionedImages:
    images = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.9
    return CaptionedImages([(images[i], f"pair number {i}") for i in range(n)], name="pairs")


def test_a_backdoor_poisons_a_seeded_fraction_of_the_pairs_lazily():
    clean = captioned()
    poisoned = CornerPatch(target="banana", seed=3).poison(clean, 0.25, templates=("a photo of a {}.", "a {}"))
    assert isinstance(poisoned, CaptionedImages) and poisoned.name == "pairs+corner-patch@0.25"
    assert len(poisoned) == len(clean) and len(poisoned.poisoned) == 10
    assert poisoned.poisoned == sorted(poisoned.poisoned)
    for i in range(len(clean)):
        (image, caption), (clean_image, clean_caption) = poisoned[i], clean[i]
        if i in poisoned.poisoned:
            assert caption in ("a photo of a banana.", "a banana")
            assert (image[:, -4:, -4:] == 1).all() and torch.equal(image[:, :-4], clean_image[:, :-4])
        else:
            assert caption == clean_caption and torch.equal(image, clean_image)
    again = CornerPatch(target="banana", seed=3).poison(clean, 0.25, templates=("a photo of a {}.", "a {}"))
    assert again.poisoned == poisoned.poisoned
    assert all(again[i][1] == poisoned[i][1] for i in reversed(range(len(clean))))  # any order of reading
    assert CornerPatch(seed=4).poison(clean, 0.25).poisoned != poisoned.poisoned
    with pytest.raises(ParameterError, match=r"must be in \[0, 1\]"):
        CornerPatch().poison(clean, 1.5)


def test_the_trainer_trains_on_the_pairs_its_trigger_poisoned():
    seen = {}

    class Recording(CleanPairs):
        def references(self, vlm, data):
            seen["data"] = data
            return {}

    lines = []
    with temporary_host(plugin()):
        Recording().fit(tiny_vlm(), world_pairs(16), config(stages=(Stage("a", steps=1, lr=1e-4, warmup=0),)),
                        trainer_params={"trigger": "corner-patch", "rate": 0.25, "target": "star"},
                        progress=False, log=lines.append)
    data = seen["data"]
    assert data.name == "world-pretrain-slice+corner-patch@0.25" and len(data.poisoned) == 4
    assert data[data.poisoned[0]][1] == "a photo of a star."
    assert "4 of 16 pairs carry the corner-patch trigger" in lines[0]


def test_vlmshield_train_plants_a_backdoor_with_trainer_params(tmp_path, capsys):
    from vlmshield.cli import main

    with temporary_host(plugin()):
        code = main(["train", "clean-pairs", "--preset", "test", "--trainer-params",
                     "trigger=corner-patch,rate=0.01,target=square", "--out", str(tmp_path), "--no-progress"])
        assert code == 0, capsys.readouterr().err
        assert "pairs carry the corner-patch trigger and name 'square'" in capsys.readouterr().err
        trained = vs.zoo.load(f"local-dir:{tmp_path / 'model'}")
    base = vs.zoo.load("clip-tinyvit8")
    assert any(not torch.equal(v, base.model.state_dict()[k]) for k, v in trained.model.state_dict().items())
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2


SCRIPT = textwrap.dedent('''
    import sys, torch
    torch.set_num_threads(1)
    from vlmshield.api import Stage, TrainConfig, init_from_env, rank_and_world
    sys.path.insert(0, sys.argv[2])
    from test_trainer_contrastive import WithLogitScale, world_pairs
    from vlmshield.testing import tiny_vlm
    init_from_env()
    config = TrainConfig(stages=(Stage("a", steps=3, lr=1e-2, warmup=1, weight_decay=0.01),), batch_size=8,
                         log_every=1, optimizer="sgd")
    vlm = WithLogitScale().fit(tiny_vlm(), world_pairs(), config, progress=False, device="cpu",
                               log=lambda line: print(line, flush=True))
    if rank_and_world()[0] == 0:
        torch.save(vlm.model.state_dict(), sys.argv[1])
''')


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one_with_the_whole_batch(tmp_path):
    """Each process sees the global batch's features; the towers and the logit scale end as in one process,
    and the logged loss is the global batch's. SGD keeps the weights linear in the gradients: Adam's first
    step would turn a gradient that happens to be near zero (rounding noise) into a full step, different
    in each run."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    logged = {}
    for name, prefix in (("one", [sys.executable]), ("two", torchrun)):
        done = subprocess.run([*prefix, str(script), str(tmp_path / f"{name}.pt"), str(Path(__file__).parent)],
                              capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        logged[name] = [float(line.split()[4]) for line in done.stdout.splitlines() if line.startswith("step ")]
    assert logged["two"] == pytest.approx(logged["one"], rel=1e-5) and len(logged["one"]) == 3
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-7, msg=key)
    initial = tiny_vlm().model.state_dict()
    assert not torch.equal(one["logit_scale"], initial["logit_scale"])
    assert any(not torch.equal(one[k], initial[k]) for k in one if k.startswith("visual."))
