"""The zoo as a built-in plugin: the catalog's cards and the ``local-dir:`` and ``hf-hub:`` model sources."""

from __future__ import annotations

from pathlib import Path

from vlmshield.api import ModelSource, hookimpl

from . import folder, hub
from .catalog import CARDS


@hookimpl
def register_models(register):
    register(*CARDS)


def load_local_dir(path: str, device=None, weights: bool = True):
    """The model of a folder written by ``zoo.save``; its ``source`` is the folder's absolute path."""
    model = folder.load(path, device=device, weights=weights)
    model.source = f"local-dir:{Path(path).resolve()}"
    return model


@hookimpl
def register_model_sources(register):
    register(ModelSource("local-dir", load_local_dir, "a model folder written by vs.zoo.save: local-dir:PATH"))
    register(ModelSource("hf-hub", hub.load, "a model on the Hugging Face Hub: hf-hub:ORG/NAME[@REVISION]"))
