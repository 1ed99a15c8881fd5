"""A model folder in open_clip's Hugging Face Hub layout: what ``zoo.save`` writes and ``local-dir:`` reads.

- ``open_clip_config.json``: ``model_cfg`` and ``preprocess_cfg`` as open_clip expects them, plus a
  ``vlmshield`` section (the card, and the tokenizer when it is vlmshield's word tokenizer);
- the tokenizer's own files (``tokenizer_config.json``, ``tokenizer.json``, ...) when the config names a
  Hugging Face tokenizer (``text_cfg.hf_tokenizer_name``: SigLIP and the Hugging Face text towers), where
  open_clip's ``local-dir:`` loader looks for them;
- ``open_clip_model.safetensors``: the weights, with provenance (name, method) in the safetensors
  header;
- ``README.md``: a Hub model card (YAML metadata with ``library_name``, tags, ``base_model``, license and
  a ``model-index`` of the measured accuracies), followed by a short description.

A folder saved from a real open_clip architecture loads with plain
``open_clip.create_model_and_transforms("local-dir:DIR")``; ``vs.zoo.load("local-dir:DIR")`` loads every
folder, and checks the weights against the sha256 the config records.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import open_clip

from vlmshield.api import (
    VLM,
    ModelCard,
    ParameterError,
    VlmshieldError,
    WeightsError,
    WordTokenizer,
    atomic_write_json,
    error_summary,
    load_state,
    read_legacy_weights,
    read_weights,
    write_weights,
)

CONFIG, WEIGHTS, README = "open_clip_config.json", "open_clip_model.safetensors", "README.md"
#: What older open_clip Hub folders hold instead of safetensors, read with ``weights_only=True``.
LEGACY_WEIGHTS = "open_clip_pytorch_model.bin"
#: The files a Hugging Face tokenizer is saved as; ``tokenizer_config.json`` is always one of them.
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
HF_TOKENIZER_FILES = (HF_TOKENIZER_CONFIG, "tokenizer.json", "special_tokens_map.json", "spiece.model",
                      "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "merges.txt")


def hf_tokenizer_name(model_cfg: dict) -> str | None:
    """The Hugging Face tokenizer an open_clip model config names, or None for open_clip's own."""
    return model_cfg.get("text_cfg", {}).get("hf_tokenizer_name") or None


def _preprocess_cfg(vlm: VLM) -> dict:
    return {"mean": vlm.pixel_mean.flatten().tolist(), "std": vlm.pixel_std.flatten().tolist(),
            "size": list(vlm.image_size), "interpolation": vlm.interpolation, "resize_mode": vlm.resize_mode}


def save(vlm: VLM, directory: str | os.PathLike, card: ModelCard | None = None, metrics: dict | None = None) -> Path:
    """Write ``vlm`` as a model folder; ``metrics`` (as in a world card: clean and robust per task, with
    the protocol) go into the README's model-index. Returns the folder."""
    if vlm.model_cfg is None:
        raise ParameterError("this VLM has no open_clip model config to save; build it with VLM.from_open_clip "
                             "or VLM.from_config.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = card.name if card else (vlm.name or directory.name)
    method = card.method if card else "none"
    sha256 = write_weights(directory / WEIGHTS, vlm.model.state_dict(), {"name": name, "method": method})
    section = {"name": name, "method": method, "weights_sha256": sha256,
               "card": None if card is None else {k: v for k, v in card.to_dict().items() if k != "loader"}}
    if isinstance(vlm.tokenizer, WordTokenizer):
        section["tokenizer"] = vlm.tokenizer.to_config()
    elif hf_tokenizer_name(vlm.model_cfg):
        if not hasattr(vlm.tokenizer, "save_pretrained"):
            raise ParameterError(f"this model's config names the Hugging Face tokenizer "
                                 f"{hf_tokenizer_name(vlm.model_cfg)!r}, but its tokenizer "
                                 f"({type(vlm.tokenizer).__name__}) cannot write it; give the VLM open_clip's "
                                 f"tokenizer (open_clip.get_tokenizer).")
        vlm.tokenizer.save_pretrained(str(directory))
    atomic_write_json(directory / CONFIG, {"model_cfg": vlm.model_cfg, "preprocess_cfg": _preprocess_cfg(vlm),
                                           "vlmshield": section})
    (directory / README).write_text(model_card(name, card, metrics, sha256))
    return directory


def read_config(directory: str | os.PathLike) -> dict:
    """The ``open_clip_config.json`` of a model folder, checked to hold a ``model_cfg``."""
    config_path = Path(directory) / CONFIG
    if not config_path.is_file():
        raise WeightsError(f"{directory} is not a model folder: it has no {CONFIG}.")
    try:
        config = json.loads(config_path.read_text())
        if not isinstance(config["model_cfg"], dict):
            raise TypeError("model_cfg is not a mapping")
    except (ValueError, KeyError, TypeError) as error:
        raise WeightsError(f"{config_path} is not an open_clip config ({type(error).__name__}).") from error
    return config


def load(directory: str | os.PathLike, device=None, weights: bool = True) -> VLM:
    """The model of a folder written by ``save`` (or any open_clip Hub folder with safetensors weights)."""
    directory = Path(directory)
    config = read_config(directory)
    section = config.get("vlmshield", {})
    vlm = VLM.from_config(config["model_cfg"], preprocess_cfg=config.get("preprocess_cfg"),
                          tokenizer=_tokenizer(directory, config), name=section.get("name", directory.name))
    if weights:
        if (directory / WEIGHTS).exists() or not (directory / LEGACY_WEIGHTS).exists():
            state = read_weights(directory / WEIGHTS, section.get("weights_sha256"))
        else:
            state = read_legacy_weights(directory / LEGACY_WEIGHTS)
        load_state(vlm.model, state, what=f"the weights in {directory}")
    return vlm.to(device or "cpu").eval()


def _tokenizer(directory: Path, config: dict):
    """The folder's tokenizer: vlmshield's word tokenizer, the Hugging Face one saved beside the config, or
    None (open_clip's own, which ``VLM.from_config`` builds)."""
    word_tokenizer = config.get("vlmshield", {}).get("tokenizer")
    if word_tokenizer is not None:
        return WordTokenizer.from_config(word_tokenizer)
    name = hf_tokenizer_name(config["model_cfg"])
    if name is None:
        return None
    if not (directory / HF_TOKENIZER_CONFIG).is_file():
        raise WeightsError(f"{directory} has no {HF_TOKENIZER_CONFIG}: its config names the Hugging Face tokenizer "
                           f"{name!r}, whose files belong beside the config (zoo.save writes them there).")
    try:
        return open_clip.get_tokenizer(f"local-dir:{directory}")
    except ImportError as error:
        raise VlmshieldError(f"the tokenizer of {directory} is a Hugging Face tokenizer, which needs the "
                             f"transformers package: pip install vlmshield[hf] (or transformers).") from error
    except (OSError, ValueError) as error:
        raise WeightsError(f"could not read the Hugging Face tokenizer in {directory} "
                           f"({error_summary(error)}).") from error


def _yaml(value) -> str:
    return json.dumps(value)  # a JSON scalar or list is valid YAML


def model_card(name: str, card: ModelCard | None, metrics: dict | None, sha256: str) -> str:
    """The README of a model folder: Hub YAML metadata, then what the model is."""
    method = card.method if card else "none"
    tags = ["vlmshield", "clip", "open_clip", "zero-shot-image-classification", "adversarial-robustness"]
    lines = ["---", "library_name: open_clip", "pipeline_tag: zero-shot-image-classification",
             "license: other", "tags:", *(f"- {_yaml(t)}" for t in tags + ([method] if method != "none" else []))]
    if card and card.pretrained:
        lines.append(f"base_model: {_yaml(f'{card.arch} ({card.pretrained})')}")
    if metrics:
        protocol = metrics.get("protocol", {})
        lines += ["model-index:", f"- name: {_yaml(name)}", "  results:"]
        for task, clean in metrics.get("clean", {}).items():
            lines += ["  - task:", "      type: zero-shot-image-classification",
                      "    dataset:", f"      name: {_yaml(task)}", f"      type: {_yaml(task)}", "    metrics:",
                      "    - type: accuracy", f"      value: {round(100 * clean, 2)}", "      name: clean accuracy"]
            for eps, robust in metrics.get("robust", {}).items():
                if task in robust:
                    label = f"robust accuracy ({protocol.get('attack')}, Linf eps {eps}, n {protocol.get('n')})"
                    lines += ["    - type: robust_accuracy", f"      value: {round(100 * robust[task], 2)}",
                              f"      name: {_yaml(label)}"]
    lines += ["---", "", f"# {name}", "",
              (card.description if card and card.description else f"A {method} CLIP model saved by vlmshield."), "",
              f"Load it with `vlmshield.zoo.load(\"local-dir:PATH\")`; `{WEIGHTS}` has sha256 `{sha256}`.", ""]
    if card and card.paper:
        lines += [f"Paper: {card.paper}", ""]
    return "\n".join(lines)
