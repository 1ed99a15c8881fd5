"""PMG-AFT: pre-trained model guided adversarial fine-tuning of CLIP's vision encoder (Wang et al., CVPR 2024).

TeCoA's cross-entropy on adversarial images, plus two KL terms that keep the fine-tuned model near what
it was: its output on an adversarial image is pulled towards the frozen original model's output on that
same image (the "generalization information branch") and towards its own output on the clean image:

    L = CE(z(x_adv), y) + alpha * KL(p_orig(x_adv) || p(x_adv)) + beta * KL(p(x) || p(x_adv))

with z the zero-shot logits over the training classes, p = softmax(z), and x_adv crafted on the model
being trained by Linf PGD on the cross-entropy. As in the released code (HPT-GPD is built on it):

- each KL term is ``KLDivLoss(log_softmax(z(x_adv)), softmax(reference))``: the adversarial output is the
  second argument of the KL, the original model's and the clean output the first;

- the logits are the raw cosine between the normalized image and class-prompt embeddings (the code
  renormalizes the scaled text features, so CLIP's logit scale 100 drops out): ``logit_scale=1``;
- the cross-entropy is averaged over the batch and the KL terms are summed over it, with alpha = beta = 1.
  The engine averages every loss over the batch (so that torchrun processes agree), so the KL terms are
  weighted by the global batch size here: the same gradients as the code's (``kl_batch_sum``);
- gradients flow through both sides of the clean term (the model's clean output trains too); the original
  model is frozen;
- the ``paper`` preset is the README's run: ViT-B/32 (OpenAI) on TinyImageNet read as the code's training
  transform reads it (Resize 256, bilinear, then CenterCrop 224: the attack perturbs 224-px pixels), PGD-2
  at eps 1/255 with step 1/255 from a random start, SGD lr 5e-5 with momentum 0.9 and no weight decay,
  batch 256, 10 epochs (391 steps each) with 1,000 warm-up steps and cosine decay, the vision tower only.
  The script's own defaults train at 2/255 with 5 steps. The code's ImageNet normalization of the input is not copied:
  vlmshield models normalize with their own preprocessing config.

The ``world`` preset is the same method on ``clip-tinyvit4`` and ``world-finetune``, set as TeCoA's world
preset is (AdamW lr 1e-4, 300 steps, batch 64, eps 2/255), so that the two compare directly; the inner
attack stays PMG-AFT's (PGD with step 1/255 from a random start), with 2 steps (its README's).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from vlmshield.api import (
    SINGLE_TEMPLATE,
    AdversarialFineTuning,
    ParameterError,
    Stage,
    ZeroShotClassifier,
    check_number,
    check_template,
    frozen_copy,
    hookimpl,
    kl_divergence,
    packaged_cards,
    recipe_card,
)

PAPER = ("Wang, Zhang, Yuan and Shan, Pre-trained Model Guided Fine-Tuning for Zero-Shot Adversarial Robustness, "
         "CVPR 2024")
WEIGHTS = Path(__file__).parent / "weights"
#: The README's training attack: Linf PGD-2, step 1/255, random start, cross-entropy (no momentum).
PMG_ATTACK = {"attack": "pgd", "attack_steps": 2, "attack_alpha": 1 / 255, "attack_params": {"random_start": True}}
TINYIMAGENET_EPOCH = 391  # steps of 256 in TinyImageNet's 100,000 training images


class PMGAFT(AdversarialFineTuning):
    name = "pmg-aft"
    description = ("PMG-AFT: TeCoA's cross-entropy on adversarial images plus KL terms pulling the model's "
                   "adversarial output to the frozen original model's output on the same image and to its own "
                   "clean output (supervised; Wang et al., CVPR 2024).")
    paper = PAPER
    presets = {
        "paper": {"model": "clip-vitb32", "dataset": "tinyimagenet",
                  "preprocess": {"resize": 256, "crop": 224, "interpolation": "bilinear"}, "config": {
            "stages": [Stage("pmg-aft", steps=10 * TINYIMAGENET_EPOCH, lr=5e-5, warmup=1000, weight_decay=0.0)],
            "batch_size": 256, "eps": 1 / 255, "optimizer": "sgd", **PMG_ATTACK, "val_every": 500, "val_n": 128,
            "val_steps": 10}},
        "world": {"model": "clip-tinyvit4", "dataset": "world-finetune", "val_dataset": "world-finetune",
                  "params": {"template": "a photo of a {}."}, "config": {
                      "stages": [Stage("pmg-aft", steps=300, lr=1e-4, warmup=20, weight_decay=1e-4)],
                      "batch_size": 64, "eps": 2 / 255, **PMG_ATTACK, "checkpoint_every": 50, "log_every": 25,
                      "val_every": 100, "val_n": 100, "val_steps": 10}},
    }

    def __init__(self, template: str = SINGLE_TEMPLATE, logit_scale: float = 1.0, alpha: float = 1.0,
                 beta: float = 1.0, kl_batch_sum: bool = True):
        if not isinstance(kl_batch_sum, bool):
            raise ParameterError(f"kl_batch_sum must be true or false; got {kl_batch_sum!r}.")
        super().__init__(template=check_template(template),
                         logit_scale=check_number("logit_scale", logit_scale, positive=True),
                         alpha=check_number("alpha", alpha), beta=check_number("beta", beta), kl_batch_sum=kl_batch_sum)

    def references(self, vlm, data):
        # the class prompt embeddings are computed once: the text tower does not train
        target = vlm.zero_shot(data.classnames, [self.template], logit_scale=self.logit_scale)
        original = ZeroShotClassifier(frozen_copy(vlm), target.class_embeddings, target.logit_scale,
                                      target.classnames, target.templates)
        return {"target": target, "original": original}

    def attack_target(self, vlm, x, y, refs):
        return refs["target"], y, "ce"

    def kl_weight(self, refs) -> float:
        """What each sample's KL terms are multiplied by: the global batch when they are summed over it."""
        return float(refs["config"].batch_size) if self.kl_batch_sum else 1.0

    def loss(self, vlm, x_adv, x, y, target, refs):
        adversarial, clean = refs["target"](x_adv), refs["target"](x)
        with torch.no_grad():
            original = refs["original"](x_adv)
        regularizer = self.alpha * kl_divergence(original, adversarial) + self.beta * kl_divergence(clean, adversarial)
        return (F.cross_entropy(adversarial.float(), y, reduction="none") + self.kl_weight(refs) * regularizer).mean()


RECIPES = tuple(
    recipe_card(f"pmg-aft-{short}", "pmg-aft", f"clip-{short}", arch, "1/255", paper=PAPER,
                dataset="tinyimagenet:/path/to/tinyimagenet", training_data="TinyImageNet",
                description=f"PMG-AFT at eps 1/255 from OpenAI's {arch} on TinyImageNet: not on the Hub (TTC's "
                            f"code fetches a copy from Google Drive); the paper's recipe trains it.")
    for short, arch in (("vitb32", "ViT-B-32"),))


@hookimpl
def register_defenses(register):
    register(PMGAFT)


@hookimpl
def register_models(register):
    register(*RECIPES, *packaged_cards(WEIGHTS, paper=PAPER, license="MIT"))
