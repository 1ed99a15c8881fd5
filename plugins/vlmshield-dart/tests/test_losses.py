"""DART's losses against hand computations: the confidence weight, the tempered KL (no T^2), the two weightings of
the distillation loss, and the pixel-space I-FGSM (budget, clip, mode, gradients, determinism)."""

import math

import pytest
import torch
from torch import nn
from vlmshield_dart.losses import confidence_weight, dart_loss, ifgsm, tempered_kl

from vlmshield.api import InputError, ParameterError

# Hand-computed references, in plain Python floats.


def softmax(row, temperature=1.0):
    exps = [math.exp(v / temperature) for v in row]
    return [e / sum(exps) for e in exps]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def weight(row):
    p = softmax(row)
    return 1 + sum(pi * math.log(pi + 1e-5) for pi in p) / math.log(len(p))


TEACHER = [[2.0, 0.5, -1.0], [0.1, 0.0, -0.1], [-3.0, 4.0, 1.0]]
CLEAN = [[1.0, 1.0, 0.0], [0.3, -0.2, 0.4], [-1.0, 2.0, 2.5]]
ADV = [[-0.5, 1.5, 0.2], [1.0, -1.0, 0.0], [0.5, 0.5, 0.5]]
T_FEAT = [[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.2, -0.4, 3.0]]
S_FEAT = [[0.0, -1.0, 1.0, 0.5], [1.5, 0.5, 1.0, 0.0], [0.1, 0.2, 0.0, 2.0]]


def tensors(requires_grad=False):
    return [torch.tensor(t, requires_grad=requires_grad) for t in (TEACHER, CLEAN, ADV, T_FEAT, S_FEAT)]


def hand_parts(temperature=2.0):
    """(mean KL adv, mean KL clean, weights, feature MSE) by hand."""
    weights = [weight(t) for t in TEACHER]
    kl_adv = [kl(softmax(t, temperature), softmax(s, temperature)) for t, s in zip(TEACHER, ADV, strict=True)]
    kl_clean = [kl(softmax(t, temperature), softmax(s, temperature)) for t, s in zip(TEACHER, CLEAN, strict=True)]
    squares = [(s - t) ** 2 for trow, srow in zip(T_FEAT, S_FEAT, strict=True) for t, s in zip(trow, srow, strict=True)]
    return kl_adv, kl_clean, weights, sum(squares) / len(squares)


# The confidence weight.


def test_a_uniform_teacher_weighs_almost_nothing():
    # p = 1/4 each: H = -log(1/4 + 1e-5), so w = 1 + log(0.25001)/log 4 = log(1.00004)/log 4, about 2.9e-5.
    w = confidence_weight(torch.zeros(2, 4))
    assert w.shape == (2,)
    assert w.tolist() == pytest.approx([math.log(1.00004) / math.log(4)] * 2, abs=1e-6)
    assert 2e-5 < w[0].item() < 4e-5  # the epsilon's effect, not 0


def test_a_confident_teacher_weighs_one():
    w = confidence_weight(torch.tensor([[30.0, 0.0, 0.0], [0.0, -40.0, 25.0]]))
    assert w.tolist() == pytest.approx([1.0, 1.0], abs=1e-4)


def test_the_weight_of_a_three_class_teacher_by_hand():
    # p = (1/8, 2/8, 5/8); H = -[1/8 log(0.12501) + 1/4 log(0.25001) + 5/8 log(0.62501)], w = 1 - H/log 3.
    entropy = -(0.125 * math.log(0.12501) + 0.25 * math.log(0.25001) + 0.625 * math.log(0.62501))
    expected = 1 - entropy / math.log(3)
    assert expected == pytest.approx(0.18052, abs=1e-4)
    w = confidence_weight(torch.tensor([[math.log(1.0), math.log(2.0), math.log(5.0)]]))
    assert w.item() == pytest.approx(expected, abs=1e-6)


def test_the_weight_has_no_gradient():
    teacher = torch.randn(3, 5, requires_grad=True)
    assert not confidence_weight(teacher).requires_grad


# The tempered KL.


def test_tempered_kl_of_two_classes_by_hand():
    # At T = 2, t = (2, 0) -> (1, 0) and s = (0, 2) -> (0, 1): p = (e, 1)/(e + 1), q = (1, e)/(e + 1), and
    # KL = e/(e+1) log e + 1/(e+1) log(1/e) = (e - 1)/(e + 1).
    e = math.exp(1.0)
    p, q = [e / (e + 1), 1 / (e + 1)], [1 / (e + 1), e / (e + 1)]
    expected = p[0] * math.log(p[0] / q[0]) + p[1] * math.log(p[1] / q[1])
    assert expected == pytest.approx((e - 1) / (e + 1))
    value = tempered_kl(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]]), 2.0)
    assert value.shape == (1,)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert value.item() != pytest.approx(4 * expected, rel=0.1)  # no T^2 factor


def test_tempered_kl_of_three_classes_by_hand():
    # t = (2, 0, -2) at T = 2 -> (1, 0, -1); s = 0 -> uniform q = 1/3: KL = sum p log(3 p).
    z = math.exp(1) + 1 + math.exp(-1)
    p = [math.exp(1) / z, 1 / z, math.exp(-1) / z]
    expected = sum(pi * math.log(3 * pi) for pi in p)
    value = tempered_kl(torch.tensor([[2.0, 0.0, -2.0]]), torch.zeros(1, 3), 2.0)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_tempered_kl_is_zero_for_equal_logits_and_has_no_t_squared():
    logits = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    assert tempered_kl(logits, logits.clone(), 2.0).abs().max().item() < 1e-6
    t = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    s = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    # KL of (2t)/2 and (2s)/2 is the KL of t and s at T = 1: no T^2 = 4 on top.
    torch.testing.assert_close(tempered_kl(2 * t, 2 * s, 2.0), tempered_kl(t, s, 1.0))


def test_tempered_kl_detaches_the_teacher_and_checks_the_temperature():
    teacher, student = torch.randn(2, 3, requires_grad=True), torch.randn(2, 3, requires_grad=True)
    tempered_kl(teacher, student, 2.0).sum().backward()
    assert teacher.grad is None and student.grad is not None
    for bad in (0, -1.0, math.inf):
        with pytest.raises(ParameterError):
            tempered_kl(teacher, student, bad)


# The distillation loss.


def test_sample_weighting_is_the_formula():
    kl_adv, kl_clean, weights, feat = hand_parts()
    defense = sum(w * k for w, k in zip(weights, kl_adv, strict=True)) / 3
    prediction = sum(w * k for w, k in zip(weights, kl_clean, strict=True)) / 3
    loss, parts = dart_loss(*tensors(), beta=0.1, temperature=2.0)
    assert loss.item() == pytest.approx(0.1 * (defense + prediction) + feat, rel=1e-5)
    assert set(parts) == {"def", "pred", "feat", "weight"}
    assert all(isinstance(v, float) for v in parts.values())
    assert parts["def"] == pytest.approx(defense, rel=1e-5)
    assert parts["pred"] == pytest.approx(prediction, rel=1e-5)
    assert parts["feat"] == pytest.approx(feat, rel=1e-6)
    assert parts["weight"] == pytest.approx(sum(weights) / 3, rel=1e-5)


def test_batch_weighting_is_the_mean_kl_times_the_sum_of_weights():
    kl_adv, kl_clean, weights, feat = hand_parts()
    defense = sum(kl_adv) / 3 * sum(weights)
    prediction = sum(kl_clean) / 3 * sum(weights)
    loss, parts = dart_loss(*tensors(), beta=0.1, temperature=2.0, weighting="batch")
    assert loss.item() == pytest.approx(0.1 * (defense + prediction) + feat, rel=1e-5)
    assert parts["def"] == pytest.approx(defense, rel=1e-5)
    assert parts["pred"] == pytest.approx(prediction, rel=1e-5)
    # With confidences that differ, the two readings differ (and not by a constant B).
    _, sample = dart_loss(*tensors())
    assert parts["def"] != pytest.approx(sample["def"], rel=1e-2)
    assert parts["def"] / sample["def"] != pytest.approx(parts["pred"] / sample["pred"], rel=1e-2)


def test_the_temperature_reaches_both_kd_terms():
    kl_adv, kl_clean, weights, _ = hand_parts(temperature=1.0)
    _, parts = dart_loss(*tensors(), temperature=1.0)
    assert parts["def"] == pytest.approx(sum(w * k for w, k in zip(weights, kl_adv, strict=True)) / 3, rel=1e-5)
    assert parts["pred"] == pytest.approx(sum(w * k for w, k in zip(weights, kl_clean, strict=True)) / 3, rel=1e-5)


@pytest.mark.parametrize("weighting", ["sample", "batch"])
def test_beta_scales_only_the_kd_terms(weighting):
    loss0, parts0 = dart_loss(*tensors(), beta=0.0, weighting=weighting)
    assert loss0.item() == pytest.approx(parts0["feat"], rel=1e-6)
    for beta in (0.1, 0.7, 3.0):
        loss, parts = dart_loss(*tensors(), beta=beta, weighting=weighting)
        assert parts == pytest.approx(parts0)
        assert loss.item() - parts["feat"] == pytest.approx(beta * (parts["def"] + parts["pred"]), rel=1e-5)


def test_the_teacher_gets_no_gradient_and_the_student_does():
    teacher, clean, adv, t_feat, s_feat = tensors(requires_grad=True)
    loss, _ = dart_loss(teacher, clean, adv, t_feat, s_feat)
    loss.backward()
    assert teacher.grad is None and t_feat.grad is None
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (clean, adv, s_feat))
    # The feature term's gradient: 2 (s - t) / numel, untouched by the weights.
    torch.testing.assert_close(s_feat.grad, 2 * (s_feat.detach() - t_feat.detach()) / s_feat.numel())


def test_a_bad_weighting_or_beta_is_refused():
    with pytest.raises(ParameterError, match="'sample'.*'batch'"):
        dart_loss(*tensors(), weighting="mean")
    with pytest.raises(ParameterError, match="beta"):
        dart_loss(*tensors(), beta=-0.1)
    teacher, clean, adv, t_feat, s_feat = tensors()
    with pytest.raises(InputError):
        dart_loss(teacher, clean, adv, t_feat, s_feat[:, :3])


# The attack.


def classifier(seed=0):
    """A small convnet with batch norm and dropout, whose outputs depend on the mode."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(6 * 8 * 8, 5))


def images(n=32, seed=1):
    """Random images, the first all 0 and the second all 1, a few pixels of the others at the bounds."""
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    x[0], x[1] = 0.0, 1.0
    x[2:, :, 0, :] = 0.0
    x[2:, :, -1, :] = 1.0
    return x


def pseudo_labels(model, x):
    with torch.no_grad():
        return model.eval()(x).argmax(1)


def cross_entropy(model, x, y):
    with torch.no_grad():
        return nn.functional.cross_entropy(model.eval()(x), y).item()


@pytest.mark.parametrize("eps", [4 / 255, 8 / 255])
def test_the_adversarial_images_stay_in_the_pixel_ball_and_in_range(eps):
    model, x = classifier(), images()
    y = pseudo_labels(model, x)
    adv = ifgsm(model, x, y, eps=eps)
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert (adv - x).abs().max().item() <= eps + 1e-6
    assert adv.min().item() >= 0 and adv.max().item() <= 1
    assert (adv - x).abs().max().item() == pytest.approx(eps, abs=1e-6)  # it does use the budget
    assert adv[0].min().item() == 0 and adv[0].max().item() <= eps + 1e-6  # the black image only brightens
    assert adv[1].max().item() == 1 and adv[1].min().item() >= 1 - eps - 1e-6  # the white one only darkens


def test_the_attack_raises_the_loss_and_lowers_the_accuracy():
    model, x = classifier(), images()
    with torch.no_grad():
        model[5].weight.mul_(10)  # confident logits
    y = pseudo_labels(model, x)  # the clean accuracy is 1
    adv = ifgsm(model, x, y)
    noise = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(4)) * 2 - 1
    noisy = (x + 4 / 255 * noise).clamp(0, 1)  # a random corner of the same ball
    assert cross_entropy(model, adv, y) > cross_entropy(model, x, y) + 0.1
    assert cross_entropy(model, adv, y) > cross_entropy(model, noisy, y) + 0.1
    with torch.no_grad():
        assert (model(adv).argmax(1) == y).float().mean().item() < 0.75
        assert (model(noisy).argmax(1) == y).float().mean().item() > 0.9


def test_the_default_step_is_half_the_budget():
    model = classifier()
    x = 0.25 + 0.5 * torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(3))  # far from the bounds
    y = pseudo_labels(model, x)
    moved = (ifgsm(model, x, y, eps=8 / 255, steps=1) - x).abs()
    assert moved.max().item() == pytest.approx(4 / 255, abs=1e-6)
    assert ((moved - 4 / 255).abs() < 1e-6).float().mean().item() > 0.9  # sign steps: almost every pixel moves
    moved = (ifgsm(model, x, y, eps=8 / 255, steps=1, alpha=1 / 255) - x).abs()
    assert moved.max().item() == pytest.approx(1 / 255, abs=1e-6)


def test_the_model_runs_in_eval_mode_and_each_module_gets_its_mode_back():
    model, x = classifier(), images(8)
    y = pseudo_labels(model, x)
    model.train()
    model[1].eval()  # a mixed state: the batch norm frozen, the rest training
    seen = []
    for module in (model[1], model[3]):
        module.register_forward_hook(lambda m, inputs, output: seen.append(m.training))
    ifgsm(model, x, y, steps=3)
    assert seen and not any(seen)
    assert model.training and model[0].training and model[3].training and not model[1].training


def test_parameter_gradients_and_flags_are_left_alone():
    model, x = classifier(), images(8)
    y = pseudo_labels(model, x)
    model[0].weight.requires_grad_(False)
    marked = torch.full_like(model[5].weight, 0.5)
    model[5].weight.grad = marked.clone()
    ifgsm(model, x, y)
    for name, p in model.named_parameters():
        if name == "5.weight":
            torch.testing.assert_close(p.grad, marked)
        else:
            assert p.grad is None, name
    assert [p.requires_grad for p in model.parameters()] == [name != "0.weight" for name, _ in
                                                           model.named_parameters()]


def test_the_attack_is_deterministic_and_works_under_no_grad():
    model, x = classifier(), images(8)
    y = pseudo_labels(model, x)
    first = ifgsm(model, x, y, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        second = ifgsm(model, x, y, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, second)
    assert not torch.equal(first, x)


@pytest.mark.parametrize("params", [{"eps": 0}, {"eps": 1.5}, {"eps": True}, {"eps": -4 / 255}, {"steps": 0},
                                    {"steps": 2.5}, {"steps": True}, {"alpha": 0}, {"alpha": -1 / 255},
                                    {"alpha": math.inf}])
def test_bad_attack_parameters_are_refused(params):
    model, x = classifier(), images(4)
    with pytest.raises(ParameterError):
        ifgsm(model, x, torch.zeros(4, dtype=torch.long), **params)


def test_images_off_the_pixel_range_and_bad_labels_are_refused():
    model, x = classifier(), images(4)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(InputError):
        ifgsm(model, (x - 0.45) / 0.226, y)  # normalised tensors: the released code's space
    with pytest.raises(InputError):
        ifgsm(model, x, y.float())
    with pytest.raises(InputError):
        ifgsm(model, x, y[:3])
    with pytest.raises(InputError):
        ifgsm(model, x, torch.full((4,), 7))  # 5 classes
