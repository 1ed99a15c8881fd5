"""The built-in evaluators, a plugin like any other.

- ``zero-shot``: clean and robust zero-shot accuracy of a VLM (its classifier is built from the
  dataset's class names and prompt templates);
- ``accuracy``: clean and robust accuracy of a plain classifier, e.g. a domain-adapted one (DART's metric);
- ``asr``: clean zero-shot accuracy and the attack success rate of a backdoor trigger (a leaderboard of it
  ranks the lowest first); a task whose classes do not contain the backdoor's target is skipped.

Robust accuracy counts as ``evaluate(counting=...)`` says. ``"clean-correct"`` (the default): only the
clean-correct images are attacked, a wrong clean prediction is not robust, as AutoAttack, RobustBench and
RobustVLM count it. ``"all"``: every image is attacked and robust accuracy is the share classified right
after the attack, as TeCoA, PMG-AFT and TTC count it. Both are shares of all evaluated images.
"""

from __future__ import annotations

import torch

from vlmshield.api import COUNTINGS, VLM, BackdoorAttack, Evaluator, ParameterError, hookimpl


class Accuracy(Evaluator):
    name = "accuracy"
    description = "Clean and robust accuracy of a classifier that is not a VLM (a domain-adapted model, say)."
    metrics = ("clean_acc", "robust_acc")
    countings = COUNTINGS

    def classifier(self, model, data):
        if isinstance(model, VLM):
            raise ParameterError("the accuracy evaluator takes a classifier; evaluate a VLM with zero-shot.")
        return model

    def score(self, classifier, x, y, *, data, attack=None, attack_model=None, seed=0, counting="clean-correct"):
        """Clean and robust correctness per image; ``counting="all"`` attacks every image, the default
        only those ``classifier`` gets right clean (the others count as not robust)."""
        with torch.no_grad():
            clean = classifier(x).argmax(dim=1) == y
        values = {"clean_acc": clean.float()}
        if attack is not None:
            robust = torch.zeros_like(clean)
            idx = torch.arange(len(y), device=y.device) if counting == "all" else clean.nonzero().squeeze(1)
            if idx.numel():
                x_adv = attack(attack_model, x[idx], y[idx], seed=seed)
                with torch.no_grad():
                    robust[idx] = classifier(x_adv).argmax(dim=1) == y[idx]
            values["robust_acc"] = robust.float()
        return values


class ZeroShot(Accuracy):
    name = "zero-shot"
    description = "Clean and robust zero-shot accuracy of a VLM over the dataset's class names and templates."

    def classifier(self, model, data):
        if not isinstance(model, VLM):
            raise ParameterError(f"the zero-shot evaluator takes a VLM; got {type(model).__name__}.")
        return model.zero_shot(data.classnames, data.templates)


class AttackSuccessRate(Evaluator):
    """Clean zero-shot accuracy and a backdoor trigger's attack success rate (ASR).

    ASR is the share of triggered images whose true label is not the target that are classified as the
    target. Images of the target class are left out (NaN per image): the trigger cannot send them to the
    target. A task whose classes do not contain the target has no ASR (``applies_to`` says so)."""

    name = "asr"
    description = ("Clean zero-shot accuracy and the backdoor's attack success rate: the share of triggered "
                   "images, outside the target class, classified as the target.")
    metrics = ("clean_acc", "asr")
    rank_by = ("asr", "min")
    attack_type = BackdoorAttack
    needs_attack = True

    def classifier(self, model, data):
        return ZeroShot().classifier(model, data)

    def applies_to(self, data, attack=None):
        if attack is not None and attack.target not in data.classnames:
            return f"the backdoor target {attack.target!r} is not one of its classes"
        return None

    def score(self, classifier, x, y, *, data, attack=None, attack_model=None, seed=0):
        reason = self.applies_to(data, attack)
        if reason:
            raise ParameterError(f"{data.name}: {reason}.")
        target = data.classnames.index(attack.target)
        triggered = attack.apply_trigger(x, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            clean = (classifier(x).argmax(dim=1) == y).float()
            hit = (classifier(triggered).argmax(dim=1) == target).float()
        return {"clean_acc": clean, "asr": torch.where(y == target, torch.full_like(hit, float("nan")), hit)}


@hookimpl
def register_evaluators(register):
    register(ZeroShot, Accuracy, AttackSuccessRate)
