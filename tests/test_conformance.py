"""The conformance checks shipped for plugin authors: the built-ins pass them, broken registrations fail
them with a sentence that says what is wrong."""

from __future__ import annotations

import pytest
import torch

from vlmshield.api import Attack, ModelCard, TestTimeDefense, random_start, temporary_host
from vlmshield.attacks import PGD
from vlmshield.conformance import ConformanceError, Inputs, check_distribution
from vlmshield.evaluators import ZeroShot
from vlmshield.testing import EmbeddingPull, make_plugin, tiny_vlm, toy_classifier


def test_the_built_in_attacks_conform(vlmshield_conformance):
    checked = vlmshield_conformance("vlmshield.attacks")
    assert {"attack pgd", "attack aa-lite", "attack bpda-eot", "attack badnet", "attack wanet"} <= set(checked)
    badclip, = (line for line in checked if line.startswith("attack badclip"))
    assert "not checked: the badclip patch is optimised against a model" in badclip


def test_the_built_in_evaluators_and_trainers_conform(vlmshield_conformance):
    """Every built-in evaluator scores toy data twice alike; the built-in poisoning trains and resumes exactly."""
    checked = vlmshield_conformance("vlmshield.evaluators", inputs={"accuracy": Inputs(model=toy_classifier()[0])})
    assert {"evaluator accuracy", "evaluator zero-shot", "evaluator asr", "evaluator retrieval"} <= set(checked)
    assert "defense poison" in vlmshield_conformance("vlmshield.trainers")


class LeavesTheBall(PGD):
    """An attack that steps twice its budget and skips the base class's projection."""

    name = "leaves-the-ball"

    def __call__(self, classifier, x, y, *, seed=None):
        return (x + 2 * self.eps).clamp(0, 1)


class Unseeded(PGD):
    """Draws its perturbation from the global random state, not from the seeded generator (a random point of the
    ball: the iterates of PGD from two random starts can end at the same corners of it)."""

    name = "unseeded"

    def perturb(self, classifier, x, y, generator):
        return random_start(x, self.eps, self.norm, torch.Generator().manual_seed(int(torch.randint(2**31, ()))))


class DoesNothing(PGD):
    name = "does-nothing"
    adaptive = True

    def perturb(self, classifier, x, y, generator):
        return x.clone()


class Rounding(TestTimeDefense):
    """Quantizes the input to 4 levels (no input gradient) and names a useless adaptive attack."""

    name = "rounding"
    adaptive_attacks = ("does-nothing",)

    def wrap(self, classifier, calibration=None):
        return _Rounded(classifier)


class _Rounded(torch.nn.Module):
    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(torch.round(x * 3) / 3)


class Jittery(Rounding):
    name = "jittery"
    adaptive_attacks = ("bpda-eot",)

    def wrap(self, classifier, calibration=None):
        return torch.nn.Sequential(_Noise(), classifier)


class _Noise(torch.nn.Module):
    def forward(self, x):
        return (x + 0.01 * torch.randn_like(x)).clamp(0, 1)


class OneSmallStep(Attack):
    """Chooses its own step size (no ``alpha``), badly: one step of a tenth of the budget."""

    name = "one-small-step"

    def __init__(self, eps: float = 4 / 255, steps: int = 100, norm: str = "Linf", seed: int = 0):
        super().__init__(eps=eps, steps=steps, norm=norm, seed=seed)

    def perturb(self, classifier, x, y, generator):
        return PGD(eps=self.eps, alpha=self.eps / 10, steps=1, random_start=False).perturb(classifier, x, y, generator)


def _failures(plugin) -> str:
    """What the conformance checks say of everything ``plugin`` registers (they must fail)."""
    with temporary_host(plugin), pytest.raises(ConformanceError) as failed:
        check_distribution(plugin.__name__)
    return str(failed.value)


def test_a_broken_attack_fails_with_what_it_broke():
    plugin = make_plugin("broken-attacks", register_attacks=lambda register: register(LeavesTheBall, Unseeded,
                                                                                      OneSmallStep))
    message = _failures(plugin)
    assert "attack leaves-the-ball: left its Linf budget: a perturbation of 0.0627 for eps 0.0314." in message
    assert "attack unseeded: gave other images for the same seed" in message
    assert "attack one-small-step: chooses its own step size and is weaker than PGD with as many steps" in message


def test_a_defense_whose_adaptive_attack_is_weaker_than_pgd_fails():
    plugin = make_plugin("weak-defense", register_attacks=lambda register: register(DoesNothing),
                         register_defenses=lambda register: register(Rounding, Jittery))
    message = _failures(plugin)
    assert "defense rounding: its adaptive attack does-nothing leaves" in message
    assert "an adaptive attack weaker than a non-adaptive one cannot certify the defense" in message
    assert "defense jittery: two passes over the same images differ: declare randomized = True" in message


class Forgetful(EmbeddingPull):
    """Scales its loss by a count of its calls that no checkpoint keeps: a resume trains differently."""

    name = "forgetful"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def loss(self, vlm, x_adv, x, y, target, refs):
        self.calls += 1
        return self.calls * super().loss(vlm, x_adv, x, y, target, refs)


class OverOne(ZeroShot):
    """Reports clean accuracy in percent."""

    name = "over-one"

    def score(self, classifier, x, y, **options):
        return {metric: 100 * values for metric, values in super().score(classifier, x, y, **options).items()}


def test_a_trainer_that_does_not_resume_exactly_and_an_evaluator_out_of_range_fail():
    plugin = make_plugin("broken-kinds", register_defenses=lambda register: register(Forgetful),
                         register_evaluators=lambda register: register(OverOne))
    message = _failures(plugin)
    assert "defense forgetful: a run interrupted after two of four steps and resumed ends with other weights" in message
    assert "evaluator over-one: clean_acc is 25.0 on tensors; a metric is a fraction in [0, 1]" in message


def test_inputs_for_a_name_the_distribution_does_not_register_are_refused():
    with pytest.raises(ConformanceError, match="inputs are given for pgdd, which 'vlmshield.attacks' does not"):
        check_distribution("vlmshield.attacks", inputs={"pgdd": Inputs()})


def test_cards_that_do_not_build_or_name_no_hash_fail():
    def broken(card, device=None, weights=True):
        raise RuntimeError("no such architecture")

    cards = (ModelCard("bad-hash", arch="tiny", files={"w.safetensors": "abc"},
                       loader=lambda card, device=None, weights=True: tiny_vlm()),
             ModelCard("no-build", arch="tiny", loader=broken))
    with temporary_host(make_plugin("bad-cards", register_models=lambda register: register(*cards))), \
            pytest.raises(ConformanceError) as failed:
        check_distribution("bad-cards")
    assert "model bad-hash: the weight file w.safetensors names the sha256 'abc'" in str(failed.value)
    assert "model no-build: its architecture does not build without weights: RuntimeError" in str(failed.value)


def test_a_name_nothing_registers_is_one_sentence():
    with pytest.raises(ConformanceError, match="nothing is registered by 'vlmshield-nothing'"):
        check_distribution("vlmshield-nothing")


def test_the_pytest_option_checks_installed_distributions(tmp_path):
    """``pytest --vlmshield-conformance DIST`` adds one test per distribution (the plugins load as installed)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "VLMSHIELD_LOAD_PLUGINS"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--vlmshield-conformance",
                           "vlmshield-fare", "--vlmshield-conformance", "vlmshield-nothing"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env={**env, "OMP_NUM_THREADS": "1"})
    assert "1 failed, 1 passed" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert "nothing is registered by 'vlmshield-nothing'" in done.stdout
