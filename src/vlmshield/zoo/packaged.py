"""Weights shipped inside a package: the world's tiny CLIPs, the models plugins fine-tuned from them and
classifiers of a registered architecture, registered as zoo entries.

``export_packaged(vlm, "fare-tinyvit4", DIR, info)`` writes ``DIR/fare-tinyvit4.safetensors`` (half precision,
deterministic bytes) and its JSON card (``info`` plus the file and its sha256). ``packaged_cards(DIR)`` turns
every such card into a ``ModelCard`` whose loader builds the architecture and loads the checked weights into
it, strictly: the architecture of the base model (a zoo name, ``base_model``) for a fine-tuned model, or
``build(card)`` for a base model itself (the world's ``clip-tinyvit4``). An ``ImageClassifier`` that names
its registered architecture (``architecture=``) is packaged the same way; its card holds what rebuilds it
(``classifier``: the architecture and its arguments, the class count and names, the input size and
normalization) and its entry is of the ``classifier`` family. A plugin registers them through its models
hook, so ``zoo.load("fare-tinyvit4")`` works once the plugin is installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from vlmshield.api import (
    VLM,
    ImageClassifier,
    ModelCard,
    ParameterError,
    get_host,
    load_state,
    read_weights,
    write_weights,
)

#: The ``ModelCard`` fields a JSON card may state, and the JSON key of each; ``packaged_cards``'s ``fields``
#: fill what it leaves out.
STATED = {"description": "description", "threat_model": "threat_model", "training_data": "training_data",
          "paper": "paper", "recipe": "command"}


def card_metrics(metrics: dict) -> dict:
    """The published-numbers field of a ``ModelCard`` (percent) from a measured card's ``metrics``: the
    protocol in words, and the mean of each metric (``clean``, ``robust`` by eps, ``asr`` by trigger, ...)."""
    if not metrics:
        return {}
    protocol = metrics["protocol"]
    described = (f"{protocol['name']}: {protocol['description']}" if "name" in protocol else  # a bare attack's
                 f"{protocol['attack']}, {protocol['steps']} steps, n={protocol['n']} per dataset, Linf")
    shown = {"protocol": described}
    for key, mean in metrics.items():
        if key.endswith("_mean"):
            shown[key.removesuffix("_mean")] = ({s: _percent(v) for s, v in mean.items()} if isinstance(mean, dict)
                                                else _percent(mean))
    return shown


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def export_packaged(model: VLM | ImageClassifier, name: str, out: str | os.PathLike, info: dict, *,
                    metadata: dict | None = None) -> dict:
    """Write the weights (floating-point tensors as float16) and the card of ``name`` into ``out``; returns the
    card.

    The safetensors header records the name and method, and ``metadata`` (more provenance, as strings).
    """
    rebuild = _classifier_spec(model) if isinstance(model, ImageClassifier) else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    file = out / f"{name}.safetensors"
    state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu()
             for k, v in model.model.state_dict().items()}
    sha256 = write_weights(file, state, {"name": name, "method": str(info.get("method", "")), **(metadata or {})})
    card = {"name": name, **info, "file": file.name, "sha256": sha256, "dtype": "float16"}
    if rebuild is not None:
        card.update(family="classifier", classifier=rebuild)
    (out / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def _classifier_spec(classifier: ImageClassifier) -> dict:
    """What rebuilds a packaged classifier: its registered architecture, classes and preprocessing."""
    if classifier.architecture is None:
        raise ParameterError("a packaged classifier names the registered architecture that builds its model "
                             "(ImageClassifier(..., architecture={'name', 'args'})); this one names none.")
    get_host().get("architecture", classifier.architecture["name"])  # a name nothing builds is refused now
    return {"architecture": classifier.architecture, "num_classes": classifier.num_classes,
            "classnames": None if classifier.classnames is None else list(classifier.classnames),
            "image_size": list(classifier.image_size), "mean": list(classifier.mean), "std": list(classifier.std),
            "interpolation": classifier.interpolation}


def _build_classifier(card: ModelCard, spec: dict) -> ImageClassifier:
    return ImageClassifier.from_architecture(spec["architecture"], spec["num_classes"], image_size=spec["image_size"],
                                             mean=spec["mean"], std=spec["std"], interpolation=spec["interpolation"],
                                             classnames=spec["classnames"], name=card.name)


def load_packaged(card: ModelCard, device=None, weights: bool = True, *, directory: str | os.PathLike,
                  build: Callable[[ModelCard], VLM] | None = None, classifier: dict | None = None
                  ) -> VLM | ImageClassifier:
    """The loader of packaged entries: the architecture (a classifier's from its card's ``classifier``, else
    ``build(card)``, else the base model's), then the checked weights from ``directory``.

    When weights are loaded, the architecture's random initialisation runs on a copy of the global random
    state: loading a model leaves the caller's random numbers as they were.
    """
    with torch.random.fork_rng(devices=[], enabled=weights):
        if classifier is not None:
            vlm = _build_classifier(card, classifier)
        elif build is not None:
            vlm = build(card)
        else:
            base: ModelCard = get_host().get("model", card.base_model).obj
            vlm = base.load(device=device, weights=False)
    vlm.name = card.name
    if weights:
        (filename, sha256), = card.files.items()
        load_state(vlm.model, read_weights(Path(directory) / filename, sha256), what=f"the weights of {card.name}")
    return vlm.to(device or "cpu").eval()


def packaged_cards(directory: str | os.PathLike, *, build: Callable[[ModelCard], VLM] | None = None,
                   **fields) -> list[ModelCard]:
    """A zoo card for each JSON card in ``directory`` (records, which say ``"record"``, are not cards), loaded
    by ``load_packaged`` (with ``build`` for base models, whose cards name no ``base_model``). ``fields`` fill
    what the JSON does not say (``paper``, ``license``, ``training_data``, ...); a ``loader`` among them
    replaces ``load_packaged``."""
    directory = Path(directory)
    found = []
    for path in sorted(directory.glob("*.json")):
        info = json.loads(path.read_text())
        if "record" in info:  # a run's record beside the cards (a training's training.json), not a card
            continue
        stated = {field: info[key] for field, key in STATED.items() if key in info}
        spec = info.get("classifier")
        if spec is not None:
            stated.update(family="classifier", classnames=tuple(spec["classnames"] or ()),
                          num_classes=spec["num_classes"])
        found.append(ModelCard(
            info["name"], arch=info["arch"], method=info.get("method", "none"), base_model=info.get("base_model", ""),
            source="package", files={info["file"]: info["sha256"]}, metrics=card_metrics(info.get("metrics", {})),
            **{"loader": partial(load_packaged, directory=directory, build=build, classifier=spec), **fields,
               **stated}))
    return found
