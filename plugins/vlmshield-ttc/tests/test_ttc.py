"""TTC, random noise and the adaptive attacks: hand computations, budgets, gating, calibration, evaluation."""

import math

import pytest
import torch
from torch import nn
from vlmshield_ttc import plugin
from vlmshield_ttc.noise import RandomNoise, uniform_noise
from vlmshield_ttc.ttc import TTC, Counterattacked, relative_drift, step_weights

import vlmshield as vs
from vlmshield.api import ModelCard, ParameterError, temporary_host
from vlmshield.cli import main
from vlmshield.core.params import parse_params
from vlmshield.testing import make_plugin, tensor_dataset, tiny_vlm, toy_task


@pytest.fixture
def host():
    tiny = make_plugin("tiny", register_models=lambda register: register(ModelCard(
        "tiny-clip", arch="tiny", loader=lambda card, device=None, weights=True: tiny_vlm().to(device))))
    with temporary_host(plugin, tiny) as host:
        yield host


def _task(n=16, size=32):
    x, y = toy_task(n=n, size=size)
    return x, y, tensor_dataset(x, y, ["circle", "square", "star", "wave"])


def _classifier():
    return tiny_vlm().zero_shot(["circle", "square", "star", "wave"], ["a photo of a {}."])


class CountingEncoder(nn.Module):
    """The tiny VLM's image tower behind a counter of images and of passes with autograd."""

    def __init__(self, vlm):
        super().__init__()
        self.vlm, self.images, self.with_grad = vlm, [], 0

    def forward(self, x):
        self.images.append(len(x))
        self.with_grad += int(torch.is_grad_enabled() and x.requires_grad)
        return self.vlm.encode_image(x)


def test_tau_is_the_relative_drift_of_the_embedding_under_the_noise():
    encoder = nn.Linear(12, 5, bias=False)
    x, delta = torch.rand(3, 12), 0.01 * torch.randn(3, 12)
    tau, anchor = relative_drift(encoder, x, delta)
    with torch.no_grad():
        for i in range(3):
            by_hand = float((encoder(x[i] + delta[i]) - encoder(x[i])).norm() / encoder(x[i]).norm())
            # a small difference of two float32 embeddings: batched and single products round apart by ~1e-5
            assert tau[i].item() == pytest.approx(by_hand, rel=1e-4)
        assert torch.allclose(anchor, encoder(x))


def test_step_weights_are_exp_beta_i_normalised():
    assert step_weights(2, 2.0).tolist() == pytest.approx([0.0159, 0.1173, 0.8668], abs=1e-4)  # the paper's
    weights = step_weights(4, 0.7)
    by_hand = [math.exp(0.7 * i) for i in range(5)]
    assert weights.tolist() == pytest.approx([w / sum(by_hand) for w in by_hand])
    assert step_weights(3, 0.0).tolist() == pytest.approx([0.25] * 4)


def test_one_counterattack_step_matches_a_hand_computation():
    classifier = _classifier()
    defended = TTC(steps=1, beta=0.0, tau_thres=float("inf")).wrap(classifier)
    x = toy_task(n=4, size=32)[0]
    generator = torch.Generator().manual_seed(3)
    purified = defended.purify(x, generator)
    delta0 = defended.noise(x, torch.Generator().manual_seed(3))
    encoder = classifier.vlm.encode_image
    delta = delta0.clone().requires_grad_(True)
    with torch.no_grad():
        anchor = encoder(x)
    (grad,) = torch.autograd.grad((encoder(x + delta) - anchor).pow(2).sum(), delta)
    delta1 = (x + (delta0 + grad.sign() / 255).clamp(-4 / 255, 4 / 255)).clamp(0, 1) - x
    assert torch.allclose(purified, x + 0.5 * delta0 + 0.5 * delta1, atol=1e-6)
    assert defended.last_gated.all()


@pytest.mark.parametrize("defense", [TTC(), TTC(eps="8/255", steps=5, alpha="3/255", tau_thres=1e9),
                                     RandomNoise(eps="4/255")])
def test_the_defended_input_stays_in_the_budget_and_in_the_pixel_range(defense):
    x = torch.cat([torch.zeros(2, 3, 32, 32), torch.ones(2, 3, 32, 32), toy_task(n=4, size=32)[0]])
    purified = defense.wrap(_classifier()).purify(x, torch.Generator().manual_seed(0))
    assert purified.min() >= 0 and purified.max() <= 1
    assert (purified - x).abs().max() <= defense.eps + 1e-6
    assert (purified - x).abs().max() > 0


def test_gated_off_images_cost_only_the_tau_check():
    vlm, x = tiny_vlm(), toy_task(n=6, size=32)[0]
    counting = CountingEncoder(vlm)
    classifier = vlm.zero_shot(["circle", "square", "star", "wave"], ["a photo of a {}."])
    defended = Counterattacked(classifier, eps=4 / 255, steps=2, alpha=1 / 255, beta=2.0, threshold=0.0)
    defended.encoder = counting  # the victim's encoder, which also measures tau
    defended.purify(x)
    assert counting.images == [6, 6] and counting.with_grad == 0  # f(x) and f(x + noise), nothing else
    assert not defended.last_gated.any()
    with torch.no_grad():
        tau, _ = relative_drift(vlm.encode_image, x, defended.noise(x, torch.Generator().manual_seed(0)))
    defended.threshold = float(tau.sort().values[2:4].mean())  # about half the images gated
    counting.images.clear()
    defended.purify(x, torch.Generator().manual_seed(0))
    gated = int(defended.last_gated.sum())
    assert 0 < gated < 6
    assert counting.images == [6, 6, gated, gated]  # the tau check on all; two steps on the gated only
    assert counting.with_grad == 2


def test_a_separate_tau_encoder_measures_tau_and_the_victim_counterattacks():
    victim, original = tiny_vlm(seed=0), tiny_vlm(seed=1)
    classifier = victim.zero_shot(["circle", "square", "star", "wave"], ["a photo of a {}."])
    defended = TTC(tau_model=original).wrap(classifier)
    x = toy_task(n=4, size=32)[0]
    delta0 = defended.noise(x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(defended.tau(x, delta0), relative_drift(original.encode_image, x, delta0)[0])
        assert not torch.allclose(defended.tau(x, delta0), relative_drift(victim.encode_image, x, delta0)[0])


def test_the_auto_threshold_is_a_quantile_of_clean_tau_and_deterministic_for_a_seed():
    classifier, x = _classifier(), toy_task(n=40, size=32)[0]
    first = TTC(tau_thres="auto", seed=4).wrap(classifier, calibration=x).threshold
    again = TTC(tau_thres="auto", seed=4).wrap(classifier, calibration=x).threshold
    other = TTC(tau_thres="auto", seed=5).wrap(classifier, calibration=x).threshold
    assert first == again and first != other
    noise = torch.Generator().manual_seed(4)
    with torch.no_grad():
        taus = relative_drift(classifier.vlm.encode_image, x, uniform_noise(x, 4 / 255, noise))[0]
    assert first == pytest.approx(float(torch.quantile(taus.double(), 0.1)))
    assert TTC(tau_thres="auto").calibration_size() == 256 and TTC().calibration_size() == 0


def test_bad_settings_are_one_clear_sentence(host):
    with pytest.raises(ParameterError, match="calibration"):
        TTC(tau_thres="auto").wrap(_classifier())
    with pytest.raises(ParameterError, match="tau_thres"):
        TTC(tau_thres=-1)
    with pytest.raises(ParameterError, match="auto_quantile"):
        TTC(auto_quantile=2)
    with pytest.raises(ParameterError, match="steps"):
        TTC(steps=-1)
    with pytest.raises(ParameterError, match="eps"):
        TTC(eps="a lot")
    with pytest.raises(ParameterError, match="image encoder"):
        TTC().wrap(object())
    assert parse_params(TTC, "tau_thres=auto,eps=2/255", "defense 'ttc'", TTC.pixel_params) == {
        "tau_thres": "auto", "eps": 2 / 255}
    with pytest.raises(ParameterError, match="tau_thres"):
        parse_params(TTC, "tau_thres=often", "defense 'ttc'", TTC.pixel_params)
    x, y, _ = _task(n=4)
    with pytest.raises(ParameterError, match="ttc-aware attacks a classifier defended by TTC"):
        vs.attack("ttc-aware", eps="1/255", steps=1)(_classifier(), x, y)


def _trained_world_model():
    """The shipped tiny ViT of the world and 48 images of one of its tasks (a small trained model)."""
    vlm = vs.zoo.load("clip-tinyvit8")
    data = vs.dataset("world-positions", image_size=32)
    x = torch.stack([data[i][0] for i in range(48)])
    y = torch.tensor([data[i][1] for i in range(48)])
    return vlm.zero_shot(data.classnames, data.templates), x, y


@pytest.mark.slow
def test_adaptive_attacks_lower_the_defended_accuracy_at_least_as_much_as_the_non_adaptive_one(host):
    classifier, x, y = _trained_world_model()
    defended = TTC().wrap(classifier)
    budget = {"eps": "1/255", "alpha": "1/255", "steps": 10}  # the paper's PGD-10 at 1/255

    def accuracy(x_adv):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            with torch.no_grad():
                return float((defended(x_adv).argmax(1) == y).float().mean())

    non_adaptive = accuracy(vs.attack("pgd", **budget)(classifier, x, y))
    assert accuracy(x) > non_adaptive  # the attack does something
    assert accuracy(vs.attack("bpda-eot", **budget)(defended, x, y)) <= non_adaptive
    assert accuracy(vs.attack("ttc-aware", **budget)(defended, x, y)) <= non_adaptive


def test_evaluate_reports_the_adaptive_numbers_beside_and_calibrates_outside_the_subset(host):
    _, _, data = _task(n=24)
    record = vs.evaluate("tiny-clip", data, attack="pgd", eps="1/255", steps=2, n=8, batch_size=8,
                         defense="ttc", defense_params={"tau_thres": "auto", "calibration_n": 16},
                         progress=False)
    result = record["results"][data.name]
    for metric in ("clean_acc", "robust_acc", "robust_acc:bpda-eot", "robust_acc:ttc-aware", "adaptive_robust_acc"):
        assert metric in result and metric in record["average"]
    assert result["adaptive_robust_acc"] <= min(result["robust_acc"], result["robust_acc:bpda-eot"],
                                                 result["robust_acc:ttc-aware"])
    assert result["calibration"] == {"n": 16, "disjoint": True}
    assert [a["name"] for a in record["adaptive_attacks"]] == ["bpda-eot", "ttc-aware"]
    assert record["adaptive_attacks"][0]["params"]["eps"] == pytest.approx(1 / 255)
    assert "test-time-defense" not in {f["flag"] for f in record["flags"]}
    plain = vs.evaluate("tiny-clip", data, attack="pgd", eps="1/255", steps=2, n=8, batch_size=8,
                        defense="random-noise", progress=False, adaptive=False)
    assert "adaptive_robust_acc" not in plain["average"]
    assert "test-time-defense" in {f["flag"] for f in plain["flags"]}


def test_the_command_line_takes_ttc_and_its_parameters(host, capsys):
    _, _, data = _task(n=8)
    assert main(["eval", "--model", "clip-tinyvit8", "--dataset", "world-colors", "--attack", "pgd", "--eps", "1/255",
                 "--steps", "1", "--n", "4", "--defense", "ttc", "--defense-params", "tau_thres=auto,calibration_n=8",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "adaptive_robust_acc" in out and "robust_acc:ttc-aware" in out and "defense: ttc" in out
