"""The zoo: ``zoo.load(name)`` for every registered model.

Entries are ``ModelCard`` data registered by plugins (the core's catalog holds the vanilla CLIPs).
"""

from __future__ import annotations

import builtins

from vlmshield.core import VLM, ModelCard, get_host

from . import folder, hub
from .folder import save
from .hub import publish
from .visual import load_visual

__all__ = ["load", "list", "info", "save", "publish"]
LOCAL_DIR = "local-dir:"


def load(name: str, device=None, weights: bool = True, visual=None) -> VLM:
    """Build the model ``name`` in eval mode; ``weights=False`` gives random weights (no download).

    ``local-dir:PATH`` loads a model folder (what ``save`` writes, open_clip's Hub layout), and
    ``hf-hub:ORG/NAME[@REVISION]`` one on the Hugging Face Hub, from its cache when it is there.
    ``visual=PATH`` then replaces the image tower with a vision-only checkpoint (RobustVLM's ``.pt``
    files): ``load("clip-vitl14", visual="fare_eps_2.pt")``.
    """
    if name.startswith(LOCAL_DIR):
        vlm = folder.load(name[len(LOCAL_DIR):], device=device, weights=weights)
    elif name.startswith(hub.PREFIX):
        vlm = hub.load(name[len(hub.PREFIX):], device=device, weights=weights)
    else:
        card: ModelCard = get_host().get("model", name).obj
        vlm = card.load(device=device, weights=weights)
    return vlm if visual is None else load_visual(vlm, visual)


def list(method: str | None = None, arch: str | None = None) -> builtins.list[ModelCard]:  # noqa: A001
    """Registered model cards, optionally only those of a method or an architecture."""
    return [r.obj for r in get_host().registries["model"]
            if (method is None or r.obj.method == method) and (arch is None or r.obj.arch == arch)]


def info(name: str) -> dict:
    """A model's card as a dict, with the plugin that registered it."""
    registration = get_host().get("model", name)
    return {**registration.obj.to_dict(), "plugin": registration.provider}
