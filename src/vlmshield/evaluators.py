"""The built-in evaluators, a plugin like any other.

- ``zero-shot``: clean and robust zero-shot accuracy of a VLM (its classifier is built from the
  dataset's class names and prompt templates);
- ``accuracy``: clean and robust accuracy of a plain classifier, e.g. a domain-adapted one (DART's metric);
- ``asr``: clean zero-shot accuracy and the attack success rate of a backdoor trigger (a leaderboard of it
  ranks the lowest first); a task whose classes do not contain the backdoor's target is skipped;
- ``retrieval``: image-text retrieval recall (R@1, R@5, both ways) over the whole evaluated set of
  image-caption pairs, and, with a backdoor trigger, the same on triggered images and the retrieval attack
  success rate (PAR's COCO evaluation).

Robust accuracy counts as ``evaluate(counting=...)`` says. ``"clean-correct"`` (the default): only the
clean-correct images are attacked, a wrong clean prediction is not robust, as AutoAttack, RobustBench and
RobustVLM count it. ``"all"``: every image is attacked and robust accuracy is the share classified right
after the attack, as TeCoA, PMG-AFT and TTC count it. Both are shares of all evaluated images.
"""

from __future__ import annotations

import re

import torch

from vlmshield.api import COUNTINGS, VLM, BackdoorAttack, Evaluator, ParameterError, ZeroShotClassifier, hookimpl


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


def captions_of(caption) -> list[str]:
    """An item's captions: its caption, or its several (a tuple of strings, as COCO's five per image)."""
    return [caption] if isinstance(caption, str) else list(caption)


def mentions(caption: str, word: str, match: str = "word") -> bool:
    """Whether ``caption`` contains ``word``, case-insensitively: as a whole word (``match="word"``: not
    inside a longer word, so "banana" is not in "bananas") or anywhere (``"substring"``, as PAR's code)."""
    if match == "substring":
        return word.lower() in caption.lower()
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", caption, re.IGNORECASE) is not None


def recalls(logits: torch.Tensor, owner: torch.Tensor, ks=(1, 5)) -> dict[str, torch.Tensor]:
    """Recall at each k of ``ks`` both ways, from ``logits`` (images x captions) and ``owner`` (each
    caption's image, a row index): ``i2t_rK`` per image, whether one of its captions is among the K
    captions it scores highest; ``t2i_rK`` per caption, whether its image is among the K images that score
    it highest (K at most the number there are; ties as ``torch.topk`` breaks them)."""
    images, texts = logits.shape
    top_texts = logits.topk(min(max(ks), texts), dim=1).indices  # (images, k), best first
    own_text = owner[top_texts] == torch.arange(images, device=logits.device)[:, None]
    top_images = logits.topk(min(max(ks), images), dim=0).indices  # (k, captions), best first
    own_image = top_images == owner[None, :]
    values = {f"i2t_r{k}": own_text[:, :k].any(dim=1).float() for k in ks}
    values.update({f"t2i_r{k}": own_image[:k].any(dim=0).float() for k in ks})
    return values


class Retrieval(Evaluator):
    """Image-text retrieval over the whole evaluated set of image-caption pairs, clean and triggered.

    The evaluated set is the seeded subset of ``n`` images (every image with all its captions: an item's
    caption may be a tuple of several, as COCO's five); the gallery is every caption of the set, or every
    image of it, never one batch's. Scores are ``logit_scale * cos(image, caption)`` of the VLM (the
    classifier is a zero-shot classifier whose classes are the set's captions; a test-time defense wraps it
    as it wraps any classifier). The metrics, fractions in [0, 1]:

    - ``i2t_r1``, ``i2t_r5`` (text retrieval): per image, whether one of its own captions is among the 1
      (5) captions of the set it scores highest; averaged over images;
    - ``t2i_r1``, ``t2i_r5`` (image retrieval): per caption, whether its own image is among the 1 (5)
      images of the set that score it highest; averaged over captions;
    - with a backdoor attack, ``i2t_r1_triggered`` ... ``t2i_r5_triggered``: the same with the trigger on
      every image (queries and gallery; the captions stay clean);
    - ``retrieval_asr`` (PAR's "ASR-Text"): per triggered image, whether one of the 5 captions it scores
      highest contains the backdoor's target, case-insensitively: anywhere, inside longer words too
      (``match="substring"``, the default, as PAR's code: "bananas" counts) or as a whole word only
      (``match="word"``). Every image counts, those whose own captions
      name the target included (as in PAR's code), so a clean model scores above zero on COCO, which has
      bananas.

    The K best are those ``torch.topk`` returns (ties broken as it breaks them); with fewer than K captions
    (images) in the set every query is a hit. ``chunk`` images go through the model at once."""

    name = "retrieval"
    description = ("Image-text retrieval R@1/R@5 both ways over the evaluated set of image-caption pairs; with a "
                   "backdoor trigger, the same on triggered images and the share whose top-5 captions name the "
                   "target (retrieval_asr).")
    metrics = ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "i2t_r1_triggered", "i2t_r5_triggered", "t2i_r1_triggered",
               "t2i_r5_triggered", "retrieval_asr")
    clean_metrics = ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5")
    rank_by = ("retrieval_asr", "min")
    attack_type = BackdoorAttack
    takes = "captioned"
    whole_set = True
    #: PAR's retrieval ASR looks at the top 5 captions.
    ASR_TOP = 5
    MATCHES = ("word", "substring")

    def __init__(self, match: str = "substring", chunk: int = 256):
        if match not in self.MATCHES:
            raise ParameterError(f"match must be one of {', '.join(self.MATCHES)}; got {match!r}.")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ParameterError(f"chunk must be a whole number of images, 1 or more; got {chunk!r}.")
        super().__init__(match=match, chunk=chunk)

    def classifier(self, model, data, indices=None):
        """Images -> logits over every caption of the images at ``indices`` (all of ``data`` without), in
        order. Captions come from ``data.captions`` (one entry per item) when the dataset lists them, so that
        no image is decoded for them, else from its items."""
        if not isinstance(model, VLM):
            raise ParameterError(f"the retrieval evaluator takes a VLM; got {type(model).__name__}.")
        indices = range(len(data)) if indices is None else indices
        listed = getattr(data, "captions", None)
        texts = [text for i in indices for text in captions_of(listed[i] if listed is not None else data[i][1])]
        return ZeroShotClassifier(model, model.class_embeddings(texts, ["{}"]), model.logit_scale, texts, ["{}"])

    def _logits(self, classifier, x, trigger=None):
        chunks = []
        with torch.no_grad():
            for start in range(0, len(x), self.chunk):
                images = x[start:start + self.chunk]
                chunks.append(classifier(images if trigger is None else trigger(images)))
        return torch.cat(chunks)

    def score(self, classifier, x, y, *, data, attack=None, attack_model=None, seed=0):
        """The metric values of the whole evaluated set: ``x`` its images, ``y`` their captions, in the
        order ``classifier`` was built with; per image (``i2t_*``, ``retrieval_asr``), per caption (``t2i_*``)."""
        texts = [captions_of(caption) for caption in y]
        owner = torch.tensor([i for i, own in enumerate(texts) for _ in own], dtype=torch.long, device=x.device)
        clean = self._logits(classifier, x)
        if clean.shape != (len(x), len(owner)):
            raise ParameterError(f"{data.name}: the retrieval classifier scores {clean.shape[1]} captions where the "
                                 f"evaluated set has {len(owner)}; build it on the same images (indices=).")
        values = recalls(clean, owner)
        if attack is not None:
            generator = torch.Generator().manual_seed(seed)
            triggered = self._logits(classifier, x, lambda images: attack.apply_trigger(images, generator))
            values.update({f"{k}_triggered": v for k, v in recalls(triggered, owner).items()})
            named = torch.tensor([mentions(text, attack.target, self.match) for own in texts for text in own],
                                 device=x.device)
            top = triggered.topk(min(self.ASR_TOP, len(owner)), dim=1).indices
            values["retrieval_asr"] = named[top].any(dim=1).float()
        return values


@hookimpl
def register_evaluators(register):
    register(ZeroShot, Accuracy, AttackSuccessRate, Retrieval)
