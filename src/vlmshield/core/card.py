"""ModelCard: a zoo entry is data.

A card names a model (``<method>-<arch>``, e.g. ``clip-vitb32``), says how to build it (an open_clip
architecture and pretrained tag, or a ``loader`` of the plugin's own) and what it is. Plugins register
cards through the ``register_models`` hook; ``vs.zoo.load(name)`` builds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from .model import VLM


@dataclass(frozen=True)
class ModelCard:
    name: str
    #: open_clip architecture name (``ViT-B-32``), or the plugin's own for custom loaders.
    arch: str
    #: open_clip pretrained tag (``openai``) used when no ``loader`` is given.
    pretrained: str | None = None
    #: The defense that produced the weights; ``none`` for vanilla models.
    method: str = "none"
    description: str = ""
    paper: str = ""
    #: ``loader(card, device=None, weights=True) -> VLM`` for models open_clip cannot build alone.
    loader: Callable[..., VLM] | None = None

    def load(self, device=None, weights: bool = True) -> VLM:
        """Build the model; ``weights=False`` gives the architecture with random weights (no download)."""
        if self.loader is not None:
            vlm = self.loader(self, device=device, weights=weights)
        else:
            vlm = VLM.from_open_clip(self.arch, self.pretrained if weights else None, device=device)
        vlm.name = self.name
        return vlm.eval()

    def to_dict(self) -> dict:
        data = asdict(self)
        data["loader"] = None if self.loader is None else getattr(self.loader, "__qualname__", repr(self.loader))
        return data
