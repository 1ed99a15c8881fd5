"""The zoo: ``zoo.load(name)`` for every registered model.

Entries are ``ModelCard`` data registered by plugins (the core's catalog holds the vanilla CLIPs).
"""

from __future__ import annotations

import builtins

from vlmshield.core import VLM, ModelCard, get_host

from . import folder, hub
from .folder import save
from .hub import publish

__all__ = ["load", "list", "info", "save", "publish"]
LOCAL_DIR = "local-dir:"


def load(name: str, device=None, weights: bool = True) -> VLM:
    """Build the model ``name`` in eval mode; ``weights=False`` gives random weights (no download).

    ``local-dir:PATH`` loads a model folder (what ``save`` writes, open_clip's Hub layout), and
    ``hf-hub:ORG/NAME[@REVISION]`` one on the Hugging Face Hub, from its cache when it is there.
    """
    if name.startswith(LOCAL_DIR):
        return folder.load(name[len(LOCAL_DIR):], device=device, weights=weights)
    if name.startswith(hub.PREFIX):
        return hub.load(name[len(hub.PREFIX):], device=device, weights=weights)
    card: ModelCard = get_host().get("model", name).obj
    return card.load(device=device, weights=weights)


def list(method: str | None = None, arch: str | None = None) -> builtins.list[ModelCard]:  # noqa: A001
    """Registered model cards, optionally only those of a method or an architecture."""
    return [r.obj for r in get_host().registries["model"]
            if (method is None or r.obj.method == method) and (arch is None or r.obj.arch == arch)]


def info(name: str) -> dict:
    """A model's card as a dict, with the plugin that registered it."""
    registration = get_host().get("model", name)
    return {**registration.obj.to_dict(), "plugin": registration.provider}
