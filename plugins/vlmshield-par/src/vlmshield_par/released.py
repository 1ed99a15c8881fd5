"""The checkpoints PAR's authors released: poisoned CLIPs and their PAR-cleaned fine-tunes, as catalog entries.

They are on the University of Tübingen's Nextcloud (``https://nc.mlcloud.uni-tuebingen.de/index.php/s/<id>``),
not on a hub a program can download from, so each entry is ``source="manual"``: the user downloads the file,
saves it under the entry's file name in vlmshield's weights folder (``VLMSHIELD_WEIGHTS``, default
``~/.cache/vlmshield/weights``), and loading the entry reads it from there. No sha256 is published.

Every backdoor targets the class ``banana``. The files are ``torch.save`` dicts whose ``state_dict`` holds the
whole CLIP (both towers) with DDP's ``module.`` prefix on every key; PAR-cleaned files also hold ``epoch``,
``optimizer``, ``scaler``, ``best_acc1`` and ``args`` (an ``argparse.Namespace``), the poisoned ones (saved by
CleanCLIP's code) ``epoch``, ``name`` and ``optimizer``. The weights load strictly into open_clip's ``ViT-B-32``
or ``ViT-L-14-336`` with QuickGELU, the activation of the OpenAI weights they were fine-tuned from.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from vlmshield.api import VLM, ModelCard, WeightsError, load_state, manual_file, read_checked

from .plugin import PAPER

SHARE = "https://nc.mlcloud.uni-tuebingen.de/index.php/s/"
TARGET = "banana"
#: The objects a released file may hold besides tensors and plain containers: PAR's ``train.py`` saves its
#: command-line arguments. Nothing else is unpickled.
ALLOWED_GLOBALS = (argparse.Namespace,)
PREFIX = "module."

#: (architecture, vlmshield's short name of it, attack, poisoned share id, PAR-cleaned share id or None).
RELEASED = (
    ("ViT-L-14-336", "vitl14-336", "badnet-stripes", "W83tntA6sFMDL8Z", None),
    ("ViT-L-14-336", "vitl14-336", "blended-text", "TqineSP7YsbaaMF", None),
    ("ViT-B-32", "vitb32", "badnet-stripes", "Q6rnTj5bDKeKigp", "EpKfgbbsCZJXCRx"),
    ("ViT-B-32", "vitb32", "blended-triangles", "XaZe8ZCgmM2p3Cf", "g2zwG2F323eTMoT"),
    ("ViT-B-32", "vitb32", "blended-text", "GHKDMzizzmT5mk8", "Qxc4FppPsmBHQK3"),
)


def read_par_checkpoint(path: str | os.PathLike, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The CLIP state dict of a released PAR or CleanCLIP file, ``module.`` stripped from its keys.

    The file is read with ``weights_only=True`` and ``argparse.Namespace`` as the one allowed class: a file
    that needs anything else to unpickle (code, arbitrary objects) is refused, never executed.
    """
    read_checked(path, sha256)
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for foreign objects, RuntimeError/EOFError for truncation
        raise WeightsError(f"weight file {path} was refused: it is truncated, or holds objects other than tensors, "
                           f"plain containers and argparse.Namespace ({type(error).__name__}), which are never "
                           f"unpickled.") from error
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise WeightsError(f"weight file {path} is not a PAR or CleanCLIP checkpoint: it has no 'state_dict' dict.")
    if not all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        raise WeightsError(f"weight file {path} has a 'state_dict' that is not a dict of named tensors.")
    return {key.removeprefix(PREFIX): value for key, value in state.items()}


def build_architecture(card: ModelCard, device=None) -> VLM:
    """The card's open_clip architecture with random weights and QuickGELU (the released weights' activation)."""
    return VLM.from_open_clip(card.arch, None, quick_gelu=True, device=device, name=card.name)


def load_released(card: ModelCard, device=None, weights: bool = True) -> VLM:
    """Loader of the released entries: the file from the weights folder (where to download it is said in one
    sentence when it is not there), loaded strictly into the whole model."""
    if not weights:
        return build_architecture(card, device)
    path, sha256 = manual_file(card)
    state = read_par_checkpoint(path, sha256)
    vlm = build_architecture(card, device)
    load_state(vlm.model, state, what=f"{card.name}'s file {path}")
    return vlm


def _card(kind: str, arch: str, short: str, attack: str, share: str) -> ModelCard:
    name = f"par-{kind}-{attack}-{short}"
    if kind == "poisoned":
        description = (f"Intentionally backdoored: the {attack} trigger maps images to {TARGET!r}. OpenAI's {arch} "
                       f"poisoned by fine-tuning on CC3M pairs, some carrying the trigger and a caption naming "
                       f"{TARGET!r}; released by PAR's authors as a model to clean, not to deploy.")
    else:
        description = (f"PAR-cleaned: OpenAI's {arch} poisoned with the {attack} trigger (target {TARGET!r}; "
                       f"par-poisoned-{attack}-{short}), then cleaned by PAR on CC3M pairs; released by PAR's "
                       f"authors.")
    return ModelCard(name, arch=arch, method="poison" if kind == "poisoned" else "par", description=description,
                     paper=PAPER, loader=load_released, base_model=f"{arch}/openai", training_data="CC3M",
                     threat_model={"backdoor": attack, "target": TARGET},
                     source="manual", files={f"{name.replace('-', '_')}.pt": None}, homepage=SHARE + share,
                     quick_gelu=True)


def released_cards() -> list[ModelCard]:
    """One card per released file: every poisoned model, and the PAR-cleaned ones where released."""
    cards = []
    for arch, short, attack, poisoned, cleaned in RELEASED:
        cards.append(_card("poisoned", arch, short, attack, poisoned))
        if cleaned is not None:
            cards.append(_card("cleaned", arch, short, attack, cleaned))
    return cards
