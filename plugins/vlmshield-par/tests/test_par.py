"""PAR: the threshold acts as the hinge, the logit scale and the poisoned reference stay, norms and biases take
no weight decay, the augmentation is the reference's, and processes keep one set of weights."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import Subset
from vlmshield_par import plugin
from vlmshield_par.plugin import PAR, aligned_distance, linear_cka, perturb_term, threshold

import vlmshield as vs
from vlmshield.api import CaptionedImages, ParameterError, Stage, TrainConfig, clip_loss, learning_rate, temporary_host
from vlmshield.cli.train import plan
from vlmshield.testing import tiny_vlm


def world_pairs(n: int = 16) -> CaptionedImages:
    return CaptionedImages(Subset(vs.dataset("world-pretrain", split="train"), range(n)), name="world-pairs")


def _config(steps=2, **fields):
    return TrainConfig(stages=(Stage("a", steps=steps, lr=1e-3, warmup=0, weight_decay=0.1),), batch_size=8,
                       log_every=1, **fields)


@pytest.mark.parametrize("tau", [0.5, 2.15])
def test_the_threshold_has_the_gradient_of_the_hinge(tau):
    torch.manual_seed(0)
    for scale in (0.1, 0.5, 1.0, 3.0):  # distances on both sides of tau
        features = torch.randn(6, 8, requires_grad=True)
        poisoned = features.detach() + scale * torch.randn(6, 8)
        push, = torch.autograd.grad(-perturb_term(features, poisoned, tau), features)
        unit = torch.nn.functional.normalize
        distance = (unit(features, dim=-1) - unit(poisoned, dim=-1)).pow(2).sum(-1).mean()
        hinge, = torch.autograd.grad((tau - distance).clamp(min=0), features)
        torch.testing.assert_close(push, hinge)
    assert threshold(torch.tensor(2.0), 2.15) == 2.0 and threshold(torch.tensor(2.2), 2.15) == 0


def test_at_the_start_the_loss_is_clip_s_and_the_push_grows_with_the_distance():
    vlm, pairs = tiny_vlm(), world_pairs(8)
    images = torch.stack([image for image, _ in pairs])
    texts = vlm.tokenizer([caption for _, caption in pairs])
    method = PAR()
    refs = method.references(vlm, pairs)
    with torch.no_grad():
        loss = method.loss(vlm, images, texts, refs, step_seed=3)
        augmented = method.augment(images, vlm.pixel_mean, torch.Generator().manual_seed(3))
        expected = clip_loss(vlm.encode_image(augmented), vlm.model.encode_text(texts), vlm.model.logit_scale.exp())
    torch.testing.assert_close(loss, expected)  # the student is the poisoned model: S = 0
    features = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert perturb_term(features, features, 2.15) == 0
    assert perturb_term(features, -features, 4.0) == pytest.approx(4.0)  # opposite unit vectors: S = 4


def test_training_leaves_the_logit_scale_and_the_poisoned_reference_and_spares_norms_the_decay():
    vlm, method = tiny_vlm(), PAR()
    before = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    spared = {id(p) for p in method.no_decay(vlm)}
    names = {name for name, p in vlm.model.named_parameters() if id(p) in spared}
    assert names and all(vlm.model.get_parameter(n).ndim < 2 or "ln" in n for n in names)
    assert "visual.proj" not in names and "logit_scale" not in names
    with temporary_host(plugin):
        trained = method.fit(vlm, world_pairs(), _config(), progress=False)
    after = trained.model.state_dict()
    assert torch.equal(after["logit_scale"], before["logit_scale"])
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("visual."))


def test_the_augmentation_brightens_or_erases_a_small_square_and_is_seeded():
    images = torch.full((64, 3, 32, 32), 0.3)
    method, mean = PAR(), torch.tensor([0.5, 0.5, 0.5])
    first = method.augment(images, mean, torch.Generator().manual_seed(1))
    assert torch.equal(first, method.augment(images, mean, torch.Generator().manual_seed(1)))
    assert (first >= 0.3 - 1e-6).all() and (first > 0.3 + 1e-3).any()  # noise only brightens (as erasing to 0.5)
    erased = (first == 0.5).all(1).flatten(1).sum(1)  # pixels set to the mean colour in each image
    sides = erased[erased > 0].float().sqrt()
    assert ((sides >= 2) & (sides <= 4)).all()  # 0.5-1% of 32x32: a 2- to 3-px square (rounded)
    assert 16 <= (erased > 0).sum() <= 48  # about half the images
    untouched = PAR(noise_p=0, erase_p=0).augment(images, mean, torch.Generator().manual_seed(1))
    assert torch.equal(untouched, images)


def test_parameters_are_checked():
    for bad in ({"tau": 0}, {"tau": 5}, {"noise_p": 2}, {"erase_area": (0.2, 0.1)}):
        with pytest.raises(ParameterError):
            PAR(**bad)


def test_the_paper_preset_is_the_reference_s_run():
    with temporary_host(plugin):
        run = plan("par", "paper")
    config = run["config"]
    assert run["model"] == "clip-vitb32" and run["dataset"].startswith("captions-csv:")
    assert (config.batch_size, tuple(config.betas), config.seed, config.total_steps) == (2048, (0.9, 0.98), 8, 244)
    first, second = config.stages
    assert learning_rate(first, 0) == pytest.approx(3e-5) and learning_rate(second, 0) == pytest.approx(3e-6)
    assert learning_rate(second, second.steps) == pytest.approx(1e-9)
    assert run["method"].tau == 2.15


SCRIPT = textwrap.dedent('''
    import sys, torch
    torch.set_num_threads(1)
    from torch.utils.data import Subset
    import vlmshield as vs
    from vlmshield.api import CaptionedImages, Stage, TrainConfig, init_from_env, rank_and_world
    from vlmshield.testing import tiny_vlm
    from vlmshield_par import PAR
    init_from_env()
    pairs = CaptionedImages(Subset(vs.dataset("world-pretrain", split="train"), range(16)), name="pairs")
    config = TrainConfig(stages=(Stage("a", steps=3, lr=1e-2, warmup=0, weight_decay=0.01),), batch_size=8,
                         log_every=1, optimizer="sgd")
    augment = sys.argv[2] == "augment"
    method = PAR(tau=0.05) if augment else PAR(tau=0.05, noise_p=0, erase_p=0)
    vlm = method.fit(tiny_vlm(), pairs, config, progress=False, device="cpu")
    torch.save(vlm.model.state_dict(), f"{sys.argv[1]}.rank{rank_and_world()[0]}.pt")
''')


@pytest.mark.slow
def test_processes_average_their_gradients_and_end_with_the_same_weights(tmp_path):
    """Unlike the reference (whose processes step on their own gradients and drift apart): every process
    ends with the same weights, and without augmentation (whose draws are per process) those of one process."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for name, prefix, augment in (("one", [sys.executable], "plain"), ("two", torchrun, "plain"),
                                  ("two-augmented", torchrun, "augment")):
        done = subprocess.run([*prefix, str(script), str(tmp_path / name), augment], capture_output=True, text=True,
                              timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    one = torch.load(tmp_path / "one.rank0.pt")
    for name in ("two", "two-augmented"):
        first, second = torch.load(tmp_path / f"{name}.rank0.pt"), torch.load(tmp_path / f"{name}.rank1.pt")
        for key in first:
            assert torch.equal(first[key], second[key]), (name, key)
    for key in one:
        torch.testing.assert_close(torch.load(tmp_path / "two.rank0.pt")[key], one[key], rtol=1e-5, atol=1e-6,
                                   msg=key)
    assert not torch.equal(one["visual.proj"], tiny_vlm().model.state_dict()["visual.proj"])


def test_the_fine_tuning_baseline_is_par_without_the_push():
    from vlmshield_par import CLIPFineTune

    vlm, pairs = tiny_vlm(), world_pairs(8)
    images = torch.stack([image for image, _ in pairs])
    texts = vlm.tokenizer([caption for _, caption in pairs])
    baseline = CLIPFineTune()
    assert baseline.references(vlm, pairs) == {} and "tau" not in baseline.config()["params"]
    with torch.no_grad():
        moved = tiny_vlm(seed=1)  # a student away from its start: PAR would push, the baseline does not
        par_refs = PAR(tau=4.0).references(vlm, pairs)
        plain = baseline.loss(moved, images, texts, {}, step_seed=5)
        pushed = PAR(tau=4.0).loss(moved, images, texts, par_refs, step_seed=5)
    assert pushed < plain
    augmented = baseline.augment(images, moved.pixel_mean, torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = clip_loss(moved.encode_image(augmented), moved.model.encode_text(texts),
                             moved.model.logit_scale.exp())
    torch.testing.assert_close(plain, expected)


def test_a_rotation_meets_par_s_objective_but_not_the_rotation_invariant_distances():
    """Rotating both towers' embeddings changes no CLIP decision (the backdoor stays) yet drives S up to 4;
    the Procrustes-aligned distance and linear CKA see through it."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(64, 16, generator=generator)
    rotation = torch.linalg.qr(torch.randn(16, 16, generator=generator))[0]
    for rotated in (features @ rotation, -features):
        assert perturb_term(rotated, features, 4.0) > 1.0
        assert aligned_distance(rotated, features).abs() < 1e-4
        assert linear_cka(rotated, features) > 1 - 1e-4
    unrelated = torch.randn(64, 16, generator=generator)
    assert aligned_distance(unrelated, features) > 0.5 and linear_cka(unrelated, features) < 0.6
    torch.testing.assert_close(aligned_distance(features, features), torch.tensor(0.0), atol=1e-4, rtol=0)


def test_the_training_log_reports_s_beside_the_rotation_invariant_distances(tmp_path):
    import json

    with temporary_host(plugin):
        PAR().fit(tiny_vlm(), world_pairs(), _config(), progress=False, out=tmp_path)
    entries = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(entries) == 2
    for entry in entries:
        for tower in ("img", "txt"):
            assert 0 <= entry[f"S_{tower}_aligned"] <= entry[f"S_{tower}"] + 1e-5 <= 4
            assert 0 <= entry[f"cka_{tower}"] <= 1 + 1e-5
    assert entries[0]["S_img"] < 1e-3  # the first step starts at the poisoned model itself


@pytest.mark.slow
def test_poisoning_a_tiny_clip_plants_the_backdoor_and_par_removes_it():
    """clip-tinyvit8 poisoned with blended on half of 2,048 world pairs learns the trigger; PAR on the clean
    pairs removes it again."""
    from vlmshield.api import get_host

    def asr(vlm) -> float:
        return vs.evaluate(vlm, "world-shapes", evaluator="asr", attack="blended", attack_params={"target": "star"},
                           n=128, progress=False)["average"]["asr"]

    pairs = CaptionedImages(Subset(vs.dataset("world-captions", split="train"), range(2048)), name="pairs")
    vlm = vs.zoo.load("clip-tinyvit8")
    before = asr(vlm)
    trainer = get_host().create("trainer", "contrastive", trigger="blended", target="star", rate=0.5)
    config = TrainConfig(stages=(Stage("poison", steps=60, lr=5e-4, warmup=5, weight_decay=0.0),), batch_size=32)
    trainer.train(vlm, pairs, get_host().create("defense", "poison"), config, progress=False)
    poisoned = asr(vlm)
    half = 30
    config = TrainConfig(stages=(Stage("perturb", steps=half, lr=3e-5, lr_start=3e-4, warmup=0, weight_decay=0.0),
                                 Stage("recover", steps=half, lr=3e-5, lr_end=3e-8, warmup=0, weight_decay=0.0)),
                         batch_size=32)
    with temporary_host(plugin):
        PAR().fit(vlm, pairs, config, progress=False)
    cleaned = asr(vlm)
    assert poisoned > before + 0.4 and cleaned < poisoned - 0.3, (before, poisoned, cleaned)
