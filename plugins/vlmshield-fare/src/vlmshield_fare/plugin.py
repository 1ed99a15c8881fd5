"""FARE: unsupervised adversarial fine-tuning of CLIP's vision encoder (Schlarmann et al., ICML 2024).

The inner attack maximises, and the outer step minimises, the squared L2 distance between the
fine-tuned encoder's embedding of the perturbed image and the frozen original encoder's embedding of
the clean image (summed over the embedding, averaged over the batch; embeddings not normalized):

    min_phi  E_x  max_{||delta||_inf <= eps}  || phi(x + delta) - phi_orig(x) ||_2^2

No label and no text is used. The ``paper`` preset is RobustVLM's run: ViT-L/14 (OpenAI), ImageNet,
10-step PGD with step 1/255 and momentum 0.9 from a random start, AdamW lr 1e-5 wd 1e-4, batch 128,
20,000 steps with 1,400 of warm-up, the vision tower only. The ``world`` preset is the same method at
the world's scale (``clip-tinyvit4`` on ``world-finetune``); its steps, learning rate and budget are the
world's (600 steps at lr 1e-3, eps 2.5/255: between the paper's FARE2 and FARE4 on the world's scale,
chosen for its trade-off between clean and robust accuracy), and so is its inner attack: PGD-5 with the
paper's step 1/255 (5 steps reach the 2.5/255 budget), so that a run takes minutes on a CPU. The README
has the runs behind these choices.
"""

from __future__ import annotations

from pathlib import Path

from vlmshield.api import (
    ROBUSTVLM_ATTACK,
    AdversarialFineTuning,
    ImageEncoder,
    Stage,
    hookimpl,
    packaged_cards,
    recipe_card,
    squared_l2_loss,
)

PAPER = ("Schlarmann, Singh, Croce and Hein, Robust CLIP: Unsupervised Adversarial Fine-Tuning of Vision "
         "Embeddings for Robust Large Vision-Language Models, ICML 2024")
WEIGHTS = Path(__file__).parent / "weights"


class FARE(AdversarialFineTuning):
    name = "fare"
    description = ("FARE: the vision encoder's embedding of adversarial images is pulled to the frozen original "
                   "encoder's embedding of the clean image (unsupervised; Schlarmann et al., ICML 2024).")
    paper = PAPER
    presets = {
        "paper": {"model": "clip-vitl14", "dataset": "imagenet", "config": {
            "stages": [Stage("fare", steps=20000, lr=1e-5, warmup=1400, weight_decay=1e-4)], "batch_size": 128,
            **ROBUSTVLM_ATTACK, "val_every": 500, "val_n": 128, "val_steps": 50}},
        "world": {"model": "clip-tinyvit4", "dataset": "world-finetune", "val_dataset": "world-finetune", "config": {
            "stages": [Stage("fare", steps=600, lr=1e-3, warmup=20, weight_decay=1e-4)], "batch_size": 64,
            "eps": 2.5 / 255, **ROBUSTVLM_ATTACK, "attack_steps": 5, "checkpoint_every": 50, "log_every": 25,
            "val_every": 100, "val_n": 100, "val_steps": 10}},
    }

    def references(self, vlm, data):
        return {"original": ImageEncoder(vlm)}

    def attack_target(self, vlm, x, y, refs):
        return vlm, refs["original"](x), "l2"  # vlm(x) is its image embedding, not normalized

    def loss(self, vlm, x_adv, x, y, target, refs):
        return squared_l2_loss(vlm(x_adv), target).mean()  # summed over the embedding, not divided by its size


RECIPES = tuple(
    recipe_card(f"fare2-{short}", "fare", f"clip-{short}", arch, "2/255", paper=PAPER,
                description=f"FARE at eps 2/255 from OpenAI's {arch}: not published by the authors; the paper's "
                            f"recipe trains it.")
    for short, arch in (("vitb32", "ViT-B-32"), ("vitb16", "ViT-B-16")))


@hookimpl
def register_defenses(register):
    register(FARE)


@hookimpl
def register_models(register):
    register(*RECIPES, *packaged_cards(WEIGHTS, paper=PAPER, license="MIT"))
