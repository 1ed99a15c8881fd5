"""The world's tiny CLIP models, built from open_clip's own classes, and their shipped weights.

Three image towers share one text tower and one embedding size:

- ``tinyvit8``: a ViT with 8-pixel patches (16 tokens at 32 px): the analogue of ViT-B/32;
- ``tinyvit4``: a ViT with 4-pixel patches (64 tokens): the analogue of ViT-B/16. It is narrower
  (width 96, not 128) to keep its pretraining affordable on a CPU (ViT-B/16 and ViT-B/32 share their
  width; the pair's point here is the patch size), and its position embedding is open_clip's fixed 2-D
  sin-cos one; the world's README gives the measurements behind both choices;
- ``tinyrn``: open_clip's ModifiedResNet (attention-pooled ResNet) at a small width.

The text tower is open_clip's text transformer over the world's word-level vocabulary
(``WorldTokenizer``). Shipped weights are half-precision safetensors in ``world/weights/``, each with
a JSON card (recipe, seed, sha256, measured accuracy), written and read as every packaged model's are
(``export_packaged``, ``packaged_cards``); ``load("clip-tinyvit4")`` checks the sha256.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from vlmshield.api import (
    VLM,
    ModelCard,
    UnknownNameError,
    did_you_mean,
    load_packaged,
    packaged_cards,
)

from .text import VOCABULARY, WorldTokenizer

EMBED_DIM = 128
CONTEXT_LENGTH = 20  # the longest caption of the grammar is 17 tokens with start and end
TEXT_CFG = {"context_length": CONTEXT_LENGTH, "vocab_size": len(VOCABULARY) + 4, "width": 128, "heads": 4,
            "layers": 3}
VISION_CFGS = {
    "tinyvit8": {"image_size": 32, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32},
    "tinyvit4": {"image_size": 32, "patch_size": 4, "width": 96, "layers": 4, "head_width": 32,
                 "pos_embed_type": "sin_cos_2d"},
    "tinyrn": {"image_size": 32, "layers": [2, 2, 2, 2], "width": 16, "head_width": 32},
}
ARCHS = tuple(VISION_CFGS)
#: Normalization inside the model: the world's hazy pixels are centred near 0.5 with a spread near 0.065.
PREPROCESS = {"mean": (0.5, 0.5, 0.5), "std": (0.065, 0.065, 0.065), "size": 32}
WEIGHTS_DIR = Path(__file__).parent / "weights"


def model_config(arch: str) -> dict:
    """The open_clip model config (as in open_clip's JSON files) of a world architecture."""
    if arch not in VISION_CFGS:
        raise UnknownNameError(f"unknown world architecture {arch!r}; the world has {', '.join(ARCHS)}."
                               f"{did_you_mean(arch, ARCHS)}")
    return {"embed_dim": EMBED_DIM, "vision_cfg": dict(VISION_CFGS[arch]), "text_cfg": dict(TEXT_CFG)}


def build(arch: str, device=None, name: str | None = None) -> VLM:
    """A randomly initialised world model (seed it with ``torch.manual_seed`` before, for repeatable init)."""
    vlm = VLM.from_config(model_config(arch), preprocess_cfg=PREPROCESS,
                          tokenizer=WorldTokenizer(context_length=CONTEXT_LENGTH), name=name or f"clip-{arch}")
    return vlm.to(device or "cpu")


def architecture(card: ModelCard) -> VLM:
    """A randomly initialised model of a world card's architecture (``card.arch``), named as the card."""
    return build(card.arch, name=card.name)


@cache
def read_card(name: str) -> dict:
    """The JSON card shipped beside a model's weights: recipe, seed, sha256, metrics."""
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())


def load_shipped(card: ModelCard, device=None, weights: bool = True) -> VLM:
    """The zoo loader of the shipped world models: the packaged models' loader (the card's architecture, then
    its sha256-checked weights) on ``WEIGHTS_DIR`` as it is at load time."""
    return load_packaged(card, device, weights, directory=WEIGHTS_DIR, build=architecture)


def shipped_cards() -> list[ModelCard]:
    """A zoo card for every model whose weights ship in ``world/weights``: all pretrained on world-pretrain."""
    return packaged_cards(WEIGHTS_DIR, loader=load_shipped, training_data="world-pretrain", license="MIT")
