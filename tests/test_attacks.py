import pytest
import torch

import vlmshield as vs
from vlmshield.api import Attack, InputError, ParameterError, get_host, squared_l2_loss
from vlmshield.testing import tiny_vlm, toy_classifier

EVASION = [r.name for r in get_host().registries["attack"] if issubclass(r.obj, Attack)]
FAST = {"steps": 3}


def make(name, **params):
    cls = get_host().get("attack", name).obj
    taken = {k: v for k, v in {**FAST, **params}.items() if k in vs.core.params.signature_defaults(cls)}
    return vs.attack(name, **taken)


@pytest.fixture(scope="module")
def zero_shot():
    return tiny_vlm().zero_shot(["cat", "dog", "bird", "car", "ship"])


@pytest.fixture(scope="module")
def toy():
    return toy_classifier()


def test_every_standard_attack_is_registered():
    assert {"fgsm", "pgd", "cw", "apgd-ce", "apgd-t", "aa-lite"} <= set(EVASION)


@pytest.mark.parametrize("name", EVASION)
@pytest.mark.parametrize("norm, eps", [("Linf", 8 / 255), ("L2", 0.5)])
def test_adversarial_images_stay_in_the_ball_and_in_range(name, norm, eps, zero_shot):
    x = torch.rand(6, 3, 32, 32)
    x[0] = 0.0
    x[1] = 1.0
    y = torch.arange(6) % 5
    x_adv = make(name, eps=eps, norm=norm)(zero_shot, x, y)
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "Linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all()


@pytest.mark.parametrize("name", EVASION)
def test_attacks_are_seeded_and_deterministic(name, toy):
    model, x, y = toy
    attack = make(name, eps=8 / 255)
    first, again = attack(model, x[:32], y[:32]), attack(model, x[:32], y[:32])
    assert torch.equal(first, again)
    assert torch.equal(make(name, eps=8 / 255, seed=5)(model, x[:32], y[:32]),
                       attack(model, x[:32], y[:32], seed=5))


@pytest.mark.parametrize("name", EVASION)
def test_attacks_run_in_eval_mode_and_leave_the_model_as_they_found_it(name, toy):
    model, x, y = toy
    model.train()
    model.features[1].eval()
    model.head.weight.requires_grad_(False)
    seen = []
    handle = model.register_forward_hook(lambda module, inputs, output: seen.append(module.training))
    try:
        make(name, eps=8 / 255)(model, x[:8], y[:8])
    finally:
        handle.remove()
        flags = (model.training, model.features[1].training, model.head.weight.requires_grad,
                 model.features[0].weight.requires_grad)
        model.eval()
        model.head.weight.requires_grad_(True)
    assert seen and not any(seen)
    assert flags == (True, False, False, True)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", EVASION)
def test_attacks_work_with_two_classes(name):
    classifier = tiny_vlm().zero_shot(["day", "night"])
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    assert make(name)(classifier, x, y).shape == x.shape


@pytest.mark.parametrize("name", EVASION)
def test_attacks_lower_the_accuracy_of_a_trained_classifier(name, toy):
    model, x, y = toy
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() == 1.0
    x_adv = make(name, eps=8 / 255, steps=10, alpha=2 / 255)(model, x, y)
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    assert robust < 0.7


def test_apgd_is_at_least_as_strong_as_pgd_at_equal_budget(toy):
    model, x, y = toy
    for steps in (10, 20):
        accuracy = {}
        for name in ("pgd", "apgd-ce"):
            x_adv = make(name, eps=8 / 255, steps=steps, alpha=2 / 255)(model, x, y)
            with torch.no_grad():
                accuracy[name] = (model(x_adv).argmax(1) == y).float().mean().item()
        assert accuracy["apgd-ce"] <= accuracy["pgd"], (steps, accuracy)


def test_aa_lite_is_the_worst_case_of_its_two_attacks(toy):
    model, x, y = toy
    accuracy = {}
    for name in ("apgd-ce", "aa-lite"):
        x_adv = make(name, eps=8 / 255, steps=10)(model, x, y)
        with torch.no_grad():
            accuracy[name] = (model(x_adv).argmax(1) == y).float().mean().item()
    assert accuracy["aa-lite"] <= accuracy["apgd-ce"]


@pytest.mark.parametrize("name", ["pgd", "apgd-ce"])
def test_a_custom_loss_makes_an_embedding_space_attack(name):
    """FARE's inner maximisation: push the embedding away from the clean embedding."""
    vlm = tiny_vlm()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        clean = vlm(x)
    x_adv = make(name, eps=4 / 255, steps=5, loss=squared_l2_loss)(vlm, x, clean)
    with torch.no_grad():
        moved = squared_l2_loss(vlm(x_adv), clean)
        noise = squared_l2_loss(vlm((x + (torch.rand_like(x) * 2 - 1) * 4 / 255).clamp(0, 1)), clean)
    assert moved.mean() > 2 * noise.mean()


@pytest.mark.parametrize("params, fragment", [
    ({"eps": 0}, "eps"), ({"eps": "-4/255"}, "eps"), ({"eps": "300"}, "eps"), ({"steps": -1}, "steps"),
    ({"norm": "L3"}, "norm"), ({"loss": "hinge"}, "loss"), ({"epss": 1}, "Did you mean 'eps'"),
])
def test_bad_parameters_are_refused(params, fragment):
    with pytest.raises(ParameterError, match=fragment):
        vs.attack("pgd", **params)


def test_bad_inputs_are_refused(zero_shot):
    attack = vs.attack("pgd", steps=1)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        attack(zero_shot, torch.rand(2, 3, 32, 32) * 2, torch.tensor([0, 1]))
    with pytest.raises(InputError, match="shape"):
        attack(zero_shot, torch.rand(3, 32, 32), torch.tensor([0, 1, 2]))
    with pytest.raises(InputError, match="one entry per image"):
        attack(zero_shot, torch.rand(2, 3, 32, 32), torch.tensor([0]))
    with pytest.raises(InputError, match=r"labels must lie in \[0, 4\]"):
        attack(zero_shot, torch.rand(2, 3, 32, 32), torch.tensor([0, 7]))
    one_class = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 1))
    with pytest.raises(InputError, match="1 class"):
        attack(one_class, torch.rand(2, 3, 32, 32), torch.tensor([0, 0]))


def test_unknown_attack_suggests_the_closest_name():
    with pytest.raises(vs.core.UnknownNameError, match="Did you mean 'pgd'"):
        vs.attack("pdg")


def test_apgd_first_checkpoint_compares_step_one_with_zero_as_autoattack_does():
    """AutoAttack keeps no loss before the first step: its first checkpoint compares step 1 with zero."""
    from vlmshield.attacks.apgd import halve_step

    steps, k = 10, 2  # APGD's first checkpoint for 10 steps comes after step 2 (row 1)
    record = torch.zeros(steps, 3)
    # a DLR loss rising while the point stays correctly classified (start -0.9), a cross-entropy that
    # fell at step 1 and rose at step 2 (start 0.5), a DLR loss rising through zero
    record[0] = torch.tensor([-0.8, 0.3, -0.1])
    record[1] = torch.tensor([-0.7, 0.4, 0.2])
    first = torch.ones(3, dtype=torch.bool)  # nothing was halved "at the last check": no stall test
    best = record[:2].amax(dim=0)
    reduce = halve_step(record, 1, k, 0.75, first, best, best)
    # rises counted: 0 + 1 (step 1 is not above 0), 1 + 1, 0 + 1; halved when at most 0.75 * 2
    assert reduce.tolist() == [True, False, True]


def test_apgd_later_checkpoints_compare_consecutive_steps_and_halve_on_a_stall():
    from vlmshield.attacks.apgd import halve_step

    record = torch.zeros(10, 3)
    record[:5] = torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [3.0, 1.0, 3.0], [4.0, 2.0, 3.5],
                               [5.0, 3.0, 4.0]])
    # second checkpoint after step 5 (row 4), 3 steps since the first: rises 3, 2, 3 of 3 (threshold 2.25);
    # the third sample's best loss (6, reached before the first checkpoint) did not improve since
    best_at_check, best = torch.tensor([2.0, 2.0, 6.0]), torch.tensor([5.0, 3.0, 6.0])
    not_halved = torch.zeros(3, dtype=torch.bool)
    assert halve_step(record, 4, 3, 0.75, not_halved, best_at_check, best).tolist() == [False, True, True]
    assert halve_step(record, 4, 3, 0.75, ~not_halved, best_at_check, best).tolist() == [False, True, False]


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t"])
def test_apgd_iterates_are_autoattacks_from_the_same_start(name, toy):
    """One run from the reference's ``x_init``: the same points fooled, the others at the same best point."""
    autopgd = pytest.importorskip("pyautoattack.autopgd_base")
    model, x, y = toy
    x, y = x[:64], y[:64]
    eps, steps = 8 / 255, 10
    attack = vs.attack(name, eps=eps, steps=steps)
    start = attack.start(x, torch.Generator().manual_seed(0))
    attack.start = lambda x, generator: start.clone()
    if name == "apgd-t":
        with torch.no_grad():
            target = model(x).argsort(dim=1)[:, -2]
        loss_fn = vs.core.targeted_dlr_loss(target)
        reference = autopgd.APGDAttack_targeted(model, n_iter=steps, eps=eps, device="cpu")
        reference.y_target = target
    else:
        loss_fn = vs.core.resolve_loss("ce")
        reference = autopgd.APGDAttack(model, n_iter=steps, eps=eps, device="cpu", loss="ce")
    reference.init_hyperparam(x)
    best, robust, loss, _ = reference.attack_single_run(x, y, x_init=start.clone())
    adv, fooled, our_loss = attack.run(model, x, y, loss_fn, torch.Generator(), labels=True)
    assert torch.equal(fooled, ~robust)
    assert robust.any()
    torch.testing.assert_close(adv[robust], best[robust], rtol=0, atol=1e-6)
    torch.testing.assert_close(our_loss[robust], loss[robust], rtol=0, atol=1e-6)
