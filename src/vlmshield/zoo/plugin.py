"""The zoo as a built-in plugin: the catalog's cards and the ``local-dir:`` and ``hf-hub:`` model sources."""

from __future__ import annotations

from vlmshield.api import ModelSource, hookimpl

from . import folder, hub
from .catalog import CARDS


@hookimpl
def register_models(register):
    register(*CARDS)


@hookimpl
def register_model_sources(register):
    register(ModelSource("local-dir", folder.load, "a model folder written by vs.zoo.save: local-dir:PATH"))
    register(ModelSource("hf-hub", hub.load, "a model on the Hugging Face Hub: hf-hub:ORG/NAME[@REVISION]"))
