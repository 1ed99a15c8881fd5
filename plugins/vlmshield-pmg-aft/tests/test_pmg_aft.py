"""PMG-AFT: its loss by hand, the frozen original, its attack and outer step, its presets, a world run."""

import json

import pytest
import torch
import torch.nn.functional as F
from vlmshield_pmg_aft import plugin
from vlmshield_pmg_aft.plugin import PMGAFT

import vlmshield as vs
from vlmshield.api import ParameterError, TrainConfig, packaged_cards, temporary_host
from vlmshield.cli import main
from vlmshield.testing import (
    TOY_CLASSES,
    attacked_accuracy,
    logged_losses,
    tiny_vlm,
    tinyimagenet_training_image,
    toy_dataset,
    training_inputs,
)

CLASSES = list(TOY_CLASSES)


@pytest.fixture
def host():
    with temporary_host(plugin) as host:
        yield host


def _batch(data, n):
    return torch.stack([data[i][0] for i in range(n)]), torch.tensor([data[i][1] for i in range(n)])


def _refs(method, vlm, data, batch_size=8):
    refs = method.references(vlm, data)
    refs["config"] = TrainConfig(batch_size=batch_size)
    return refs


@pytest.mark.parametrize("batch_sum", [True, False])
def test_the_loss_is_cross_entropy_plus_the_reference_kl_terms_summed_over_the_batch(batch_sum):
    vlm, data = tiny_vlm(), toy_dataset()
    method = PMGAFT(alpha=0.5, beta=2.0, kl_batch_sum=batch_sum)
    x, y = _batch(data, 4)
    x_adv = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    refs = _refs(method, vlm, data, batch_size=4)
    with torch.no_grad():
        original = vs.core.frozen_copy(vlm)
        texts = F.normalize(vlm.encode_text([f"This is a photo of a {c}" for c in CLASSES]), dim=-1)

        def logits(model, images):  # the raw cosine: the released code's logits
            return F.normalize(model.encode_image(images), dim=-1) @ texts.t()

        # the released code's criterion: KLDivLoss(reduction="sum")(log_softmax(adv), softmax(reference)),
        # that is KL(p_reference || p_adv), summed over the batch and the classes
        criterion = torch.nn.KLDivLoss(reduction="sum")

        def kl(adv, reference):
            return criterion(F.log_softmax(adv, dim=1), F.softmax(reference, dim=1))

        adversarial = logits(vlm, x_adv)
        cross_entropy = F.cross_entropy(adversarial, y)
        terms = 0.5 * kl(adversarial, logits(original, x_adv)) + 2.0 * kl(adversarial, logits(vlm, x))
        by_hand = terms if batch_sum else terms / 4
        assert method.loss(vlm, x_adv, x, y, y, refs).item() == pytest.approx((cross_entropy + by_hand).item(),
                                                                              rel=1e-5)
        assert method.loss(vlm, x, x, y, y, refs).item() == pytest.approx(F.cross_entropy(logits(vlm, x), y).item(),
                                                                          rel=1e-5)  # both KL terms vanish
    module, target, loss = method.attack_target(vlm, x, y, refs)
    assert module is refs["target"] and target is y and loss == "ce"


def test_the_kl_terms_point_as_in_the_released_code():
    """KL(p_original(x_adv) || p(x_adv)) and KL(p(x) || p(x_adv)), not the reverse: checked on logits far
    enough apart that the two directions differ (a tiny random model's cosines are nearly uniform)."""
    generator = torch.Generator().manual_seed(0)
    adversarial, clean, original = (3 * torch.randn(6, 5, generator=generator) for _ in range(3))
    x_adv, x, y = torch.zeros(6, 3, 8, 8), torch.ones(6, 3, 8, 8), torch.arange(6) % 5
    refs = {"target": lambda images: adversarial if images is x_adv else clean,
            "original": lambda images: original, "config": TrainConfig(batch_size=6)}
    criterion = torch.nn.KLDivLoss(reduction="sum")  # the released code's, on (log_softmax(adv), softmax(ref))
    expected = F.cross_entropy(adversarial, y) + 0.5 * criterion(adversarial.log_softmax(1), original.softmax(1)) \
        + 2.0 * criterion(adversarial.log_softmax(1), clean.softmax(1))
    reverse = F.cross_entropy(adversarial, y) + 0.5 * criterion(original.log_softmax(1), adversarial.softmax(1)) \
        + 2.0 * criterion(clean.log_softmax(1), adversarial.softmax(1))
    loss = PMGAFT(alpha=0.5, beta=2.0).loss(None, x_adv, x, y, y, refs)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(reverse.item() - expected.item()) > 0.02 * expected.item()


def test_the_original_model_is_frozen_and_the_clean_term_trains_the_model():
    vlm, data, method = tiny_vlm(), toy_dataset(), PMGAFT(alpha=0.0, beta=1.0)
    x, y = _batch(data, 4)
    refs = _refs(method, vlm, data)
    assert not any(p.requires_grad for p in refs["original"].parameters())
    before = {k: v.clone() for k, v in refs["original"].vlm.model.state_dict().items()}
    x_adv = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    method.loss(vlm, x_adv, x, y, y, refs).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vlm.model.visual.parameters())
    assert all(torch.equal(v, refs["original"].vlm.model.state_dict()[k]) for k, v in before.items())


def test_bad_parameters_are_refused():
    with pytest.raises(ParameterError, match="must contain"):
        PMGAFT(template="a photo")
    with pytest.raises(ParameterError, match="logit_scale must be a positive"):
        PMGAFT(logit_scale=0)
    with pytest.raises(ParameterError, match="alpha must be a non-negative"):
        PMGAFT(alpha=-1)
    with pytest.raises(ParameterError, match="kl_batch_sum must be true or false"):
        PMGAFT(kl_batch_sum="yes")


def test_the_attack_raises_the_loss_and_training_lowers_it_and_leaves_the_text_tower(host):
    vlm, method, data = tiny_vlm(), PMGAFT(), toy_dataset()
    x, y = _batch(data, 8)
    refs = _refs(method, vlm, data)
    x_adv = vs.attack("pgd", eps="4/255", steps=5)(refs["target"], x, y, seed=0)
    with torch.no_grad():
        assert F.cross_entropy(refs["target"](x_adv), y) > F.cross_entropy(refs["target"](x), y)
    text = {k: v.clone() for k, v in vlm.model.state_dict().items() if not k.startswith("visual.")}
    losses = logged_losses(vlm, data, method, lr=3e-3, attack_steps=2)
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, vlm.model.state_dict()[k]) for k, v in text.items())


def test_the_presets(host):
    from vlmshield.cli.train import command_line, plan

    paper, world = plan("pmg-aft"), plan("pmg-aft", "world")
    assert (paper["model"], paper["dataset"]) == ("clip-vitb32", "tinyimagenet")
    assert paper["method"].logit_scale == 1.0 and (paper["method"].alpha, paper["method"].beta) == (1.0, 1.0)
    config = paper["config"]
    assert [(s.steps, s.lr, s.warmup, s.weight_decay) for s in config.stages] == [(3910, 5e-5, 1000, 0.0)]
    assert (config.eps, config.batch_size, config.optimizer, config.attack_steps) == (1 / 255, 256, "sgd", 2)
    assert world["model"] == "clip-tinyvit4" and world["method"].template == "a photo of a {}."
    assert world["config"].eps == 2 / 255  # as TeCoA's world preset, for a direct comparison
    stronger = plan("pmg-aft", "world", eps="4/255", attack_steps=10)
    assert (stronger["config"].attack_steps, stronger["config"].attack_alpha) == (10, 1 / 255)
    assert command_line(stronger) == "vlmshield train pmg-aft --preset world --eps 4/255 --attack-steps 10"
    with pytest.raises(ParameterError, match="attack_steps must be a whole number, 1 or more; got 0"):
        plan("pmg-aft", "world", attack_steps=0)
    with pytest.raises(ParameterError, match="vlmshield train pmg-aft --model clip-vitb32 .*--eps 1/255` trains it"):
        vs.zoo.load("pmg-aft-vitb32")


@pytest.mark.slow
def test_a_two_step_world_run_from_the_command_line_writes_a_loadable_model_and_card(host, tmp_path):
    assert main(["train", "pmg-aft", "--preset", "world", "--steps", "2", "--batch-size", "8", "--out",
                 str(tmp_path), "--package", "--no-progress"]) == 0
    card = json.loads((tmp_path / "pmg-aft-tinyvit4.json").read_text())
    assert card["method"] == "pmg-aft" and card["threat_model"] == {"norm": "Linf", "eps": "2/255"}
    assert card["method_params"] == {"template": "a photo of a {}.", "logit_scale": 1.0, "alpha": 1.0, "beta": 1.0,
                                     "kl_batch_sum": True}
    assert packaged_cards(tmp_path)[0].load().name == "pmg-aft-tinyvit4"
    assert (tmp_path / "checkpoint.pt").exists() and len((tmp_path / "log.jsonl").read_text().splitlines()) == 2


def test_the_shipped_world_model_loads_checked_and_is_more_robust_than_its_base(host):
    card = vs.zoo.info("pmg-aft-tinyvit4")
    assert card["source"] == "package" and card["base_model"] == "clip-tinyvit4"
    assert card["threat_model"]["eps"] == "2/255" and card["metrics"]["robust"]["2/255"]
    for task in ("world-colors", "world-positions"):  # card at 2/255: 94.4% and 86.8% against 61.4% and 44.8%
        assert attacked_accuracy("pmg-aft-tinyvit4", task, n=64, eps="2/255") >= \
            attacked_accuracy("clip-tinyvit4", task, n=64, eps="2/255") + 0.1


def test_the_paper_preset_attacks_tinyimagenet_at_224_px_as_the_code_does_and_the_world_keeps_32(
        host, tmp_path, monkeypatch):
    from torchvision import transforms

    from vlmshield.cli.train import command_line, plan

    image, label, decoded = tinyimagenet_training_image("pmg-aft", tmp_path, monkeypatch)
    assert image.shape == (3, 224, 224) and label == 0
    # the released code's training transform, on the file as it decodes it (up to rounding to 8 bits: bicubic
    # or Resize 224 would be tens of levels away on this noise)
    code = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    assert (image - code(decoded)).abs().max() <= 1.5 / 255
    paper = plan("pmg-aft")
    assert paper["preprocess"] == {"resize": 256, "crop": 224, "interpolation": "bilinear"}
    assert command_line(plan("pmg-aft", preprocess="native")) == "vlmshield train pmg-aft --preprocess native"
    native = tinyimagenet_training_image("pmg-aft", tmp_path / "native", monkeypatch, preprocess="native")
    assert native[0].shape == (3, 64, 64)
    world = plan("pmg-aft", "world")
    assert world["preprocess"] == "native"
    data, val = training_inputs(world, tmp_path / "world", monkeypatch)
    assert data[0][0].shape == val[0][0].shape == (3, 32, 32)


def test_a_run_is_not_resumed_with_another_preprocessing_rule(host, tmp_path, monkeypatch):
    from vlmshield.cli.train import plan

    out = tmp_path / "run"
    out.mkdir()
    training_inputs(plan("pmg-aft", "world"), out, monkeypatch)  # started on native images...
    (out / "checkpoint.pt").write_bytes(b"")  # ...and stopped after a checkpoint
    with pytest.raises(ParameterError, match="trained on images preprocessed as native, not 64,32,bilinear; "
                                             "resume it with --preprocess native, or train with 64,32,bilinear "
                                             "into another output folder"):
        training_inputs(plan("pmg-aft", "world", preprocess="64,32"), out, monkeypatch)
    data, _ = training_inputs(plan("pmg-aft", "world", preprocess="native"), out, monkeypatch)  # the same rule
    assert data[0][0].shape == (3, 32, 32)
    older = tmp_path / "older"  # a checkpoint from before training data had rules was trained on native images
    older.mkdir()
    (older / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ParameterError, match="preprocessed as native, not 256,224,bilinear"):
        training_inputs(plan("pmg-aft"), older, monkeypatch)
    resized = tmp_path / "resized"  # and the other way round
    resized.mkdir()
    training_inputs(plan("pmg-aft", "world", preprocess="64,32"), resized, monkeypatch)
    (resized / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ParameterError, match="preprocessed as 64,32,bilinear, not native"):
        training_inputs(plan("pmg-aft", "world"), resized, monkeypatch)
