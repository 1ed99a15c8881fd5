"""Vision-only checkpoints: an image tower's state dict loaded into its base CLIP.

Adversarial fine-tuning changes only the image encoder, so RobustVLM (and TeCoA before it) release the
vision tower alone: a ``.pt`` state dict to load into the ``visual`` module of the model it was
fine-tuned from, whose text tower it keeps. ``zoo.load("clip-vitb32", visual="fare.pt")`` does that
for any file, and catalog entries whose weights exist only as such files (``source="manual"``) find
them in the weights folder (``VLMSHIELD_WEIGHTS``, default ``~/.cache/vlmshield/weights``), where the
user puts what cannot be downloaded by a program.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlmshield.api import VLM, ModelCard, WeightsError, load_state, read_legacy_weights, read_weights

WEIGHTS_ENV = "VLMSHIELD_WEIGHTS"


def weights_dir() -> Path:
    """Where hand-downloaded weight files live: ``$VLMSHIELD_WEIGHTS`` or ``~/.cache/vlmshield/weights``."""
    return Path(os.environ.get(WEIGHTS_ENV) or Path.home() / ".cache" / "vlmshield" / "weights").expanduser()


def read_visual_state(path: str | os.PathLike, sha256: str | None = None) -> dict:
    """The image tower's state dict in ``path`` (safetensors, or a legacy file read with weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"vision checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":
        return read_weights(path, sha256)
    return read_legacy_weights(path, sha256)


def load_visual(vlm: VLM, path: str | os.PathLike, sha256: str | None = None) -> VLM:
    """Load the vision checkpoint ``path`` into ``vlm``'s image tower (strict: every key must fit)."""
    state = read_visual_state(path, sha256)
    load_state(vlm.model.visual, state, what=f"vision checkpoint {path} (for {vlm.name})")
    return vlm


def load_manual(card: ModelCard, device=None, weights: bool = True) -> VLM:
    """Loader of catalog entries published as a vision-only file to download by hand (``card.files``).

    The base model (``card.base_model``, ``ARCH/TAG``) is built with the card's activation (what the tag
    declares, which the vision tower was fine-tuned with), ``weights=False`` included.
    """
    arch, _, pretrained = card.base_model.partition("/")
    if not weights:
        return VLM.from_open_clip(arch, None, quick_gelu=card.quick_gelu, device=device, name=card.name)
    path, sha256 = manual_file(card)
    vlm = VLM.from_open_clip(arch, pretrained, quick_gelu=card.quick_gelu, device=device, name=card.name)
    return load_visual(vlm, path, sha256)


def manual_file(card: ModelCard) -> tuple[Path, str | None]:
    """The path of a ``source="manual"`` card's one file in the weights folder, and its sha256 (None where
    not published); a file not there is one sentence that says where to download it and put it."""
    (filename, sha256), = card.files.items()
    path = weights_dir() / filename
    if not path.is_file():
        raise WeightsError(f"{card.name} needs {filename}, which is not in {path.parent}: download it from "
                           f"{card.homepage or 'its authors'} and put it there (or set {WEIGHTS_ENV} to its "
                           f"folder).")
    return path, sha256
