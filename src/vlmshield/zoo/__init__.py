"""The zoo: ``zoo.load(name)`` for every registered model, and saving and publishing models.

Entries are ``ModelCard`` data registered by plugins (this package's catalog holds the vanilla CLIPs and
the published robust ones); a card's model is a CLIP (a ``VLM``) or, with ``family="classifier"``, an
``ImageClassifier`` (a timm model, or a plugin's own). ``local-dir:PATH`` and ``hf-hub:ORG/NAME[@REV]``
names are model sources this package registers. Name resolution itself is the contract's
(``vlmshield.core.load_model``).
"""

from __future__ import annotations

from vlmshield.api import ModelCard, get_host, load_model

from .folder import save, saved_card
from .hub import publish
from .visual import load_visual

LOCAL_DIR = "local-dir:"

__all__ = ["load", "cards", "info", "save", "publish"]


def load(name: str, device=None, weights: bool = True, visual=None):
    """Build the model ``name`` in eval mode; ``weights=False`` gives random weights (no download).

    ``local-dir:PATH`` loads a model folder (what ``save`` writes: open_clip's Hub layout for a CLIP,
    timm's for an image classifier), and ``hf-hub:ORG/NAME[@REVISION]`` one on the Hugging Face Hub, from
    its cache when it is there. ``visual=PATH`` then replaces the image tower of a CLIP with a vision-only
    checkpoint (RobustVLM's ``.pt`` files): ``load("clip-vitl14", visual="fare_eps_2.pt")``.
    """
    model = load_model(name, device=device, weights=weights)
    return model if visual is None else load_visual(model, visual)


def cards(method: str | None = None, arch: str | None = None) -> list[ModelCard]:
    """Registered model cards, optionally only those of a method or an architecture."""
    return [r.obj for r in get_host().registries["model"]
            if (method is None or r.obj.method == method) and (arch is None or r.obj.arch == arch)]


def info(name: str) -> dict:
    """A model's card as a dict, with the plugin that registered it (``save(model, DIR, card=info(name))``
    accepts it); for ``local-dir:PATH``, the card the folder records (its name at least)."""
    if name.startswith(LOCAL_DIR):
        return saved_card(name.removeprefix(LOCAL_DIR))
    registration = get_host().get("model", name)
    return {**registration.obj.to_dict(), "plugin": registration.provider}
