"""What a model is, as a record names it: the sha256 of its weights and of its configuration, where it was
loaded from, and the plugin distribution that provided it.

``weights_sha256`` hashes the model's state dict as it is in memory (each tensor's name, dtype, shape and
bytes, in name order), so it does not depend on the file format the weights came in; two models with
the same weights and configuration have the same identity whatever their names. ``load_model`` notes
where a model came from on the model itself (``model.source``: ``open_clip:ViT-B-32/openai``,
``package:fare-tinyvit4.safetensors``, ``local-dir:/abs/path``, ``hf-hub:ORG/NAME@COMMIT``, ``random-init``)
and which distribution provided its card or source (``model.provider``).
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from .classifier import ImageClassifier
from .model import VLM


def weights_sha256(module: nn.Module | dict) -> str:
    """The sha256 of ``module``'s state dict (or of a state dict): every tensor's name, dtype, shape and bytes,
    in name order."""
    state = module if isinstance(module, dict) else module.state_dict()
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        values = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{values.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(values.view(torch.uint8).numpy())
    return digest.hexdigest()


def configuration(model: nn.Module) -> dict:
    """What builds ``model`` besides its weights, as plain JSON: a VLM's open_clip config, preprocessing and
    tokenizer; a classifier's preprocessing and classes; the class of any other module."""
    if isinstance(model, VLM):
        tokenizer = model.tokenizer
        return {"model_cfg": model.model_cfg, "preprocess_cfg": model.preprocess_cfg(),
                "tokenizer": tokenizer.to_config() if hasattr(tokenizer, "to_config") else type(tokenizer).__name__}
    if isinstance(model, ImageClassifier):
        return {**model.config(), "model": type(model.model).__qualname__,
                "architecture": getattr(model.model, "pretrained_cfg", {}).get("architecture")}
    return {"class": f"{type(model).__module__}.{type(model).__qualname__}"}


def config_sha256(model: nn.Module) -> str:
    """The sha256 of ``configuration(model)`` as canonical JSON."""
    text = json.dumps(configuration(model), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def model_identity(model: nn.Module) -> dict:
    """What a record says a model is: its name, where it was loaded from and who provided it (what
    ``load_model`` noted; ``in-memory`` for a module built in Python), and the sha256 of its weights and
    of its configuration."""
    return {"name": getattr(model, "name", None) or type(model).__name__,
            "source": getattr(model, "source", None) or "in-memory",
            "provider": getattr(model, "provider", None),
            "weights_sha256": weights_sha256(model), "config_sha256": config_sha256(model)}


def same_model(a: dict, b: dict) -> bool:
    """Whether two identities are of the same model: the same weights and configuration."""
    return (a.get("weights_sha256"), a.get("config_sha256")) == (b.get("weights_sha256"), b.get("config_sha256"))


def describe_identity(identity: dict) -> str:
    """``NAME (SOURCE, weights sha256 ABCDEF123456...)`` for messages."""
    return (f"{identity.get('name')} ({identity.get('source')}, weights sha256 "
            f"{str(identity.get('weights_sha256'))[:12]}...)")
