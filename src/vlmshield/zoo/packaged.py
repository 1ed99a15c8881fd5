"""Weights shipped inside a plugin's package: fine-tuned models of the world, registered as zoo entries.

``export_packaged(vlm, "fare-tinyvit4", DIR, info)`` writes ``DIR/fare-tinyvit4.safetensors`` (half precision,
deterministic bytes) and its JSON card (``info`` plus the file and its sha256). ``packaged_cards(DIR)`` turns
every such card into a ``ModelCard`` whose loader builds the base model's architecture (a zoo name,
``base_model``) and loads the checked weights into it, strictly. A plugin registers them through its
models hook, so ``zoo.load("fare-tinyvit4")`` works once the plugin is installed.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

from vlmshield.api import VLM, ModelCard, get_host, load_state, read_weights, write_weights


def card_metrics(metrics: dict) -> dict:
    """The published-numbers field of a ``ModelCard`` (percent) from a measured card's ``metrics``."""
    if not metrics:
        return {}
    protocol = metrics["protocol"]
    described = (f"{protocol['name']}: {protocol['description']}" if "name" in protocol else  # a bare attack's
                 f"{protocol['attack']}, {protocol['steps']} steps, n={protocol['n']} per dataset, Linf")
    return {"protocol": described,
            "clean": round(100 * metrics["clean_mean"], 1),
            "robust": {e: round(100 * v, 1) for e, v in metrics["robust_mean"].items()}}


def export_packaged(vlm: VLM, name: str, out: str | os.PathLike, info: dict) -> dict:
    """Write the weights (float16) and the card of ``name`` into ``out``; returns the card."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    file = out / f"{name}.safetensors"
    state = {k: v.detach().half().cpu() for k, v in vlm.model.state_dict().items()}
    sha256 = write_weights(file, state, {"name": name, "method": str(info.get("method", ""))})
    card = {"name": name, **info, "file": file.name, "sha256": sha256, "dtype": "float16"}
    (out / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def load_packaged(card: ModelCard, device=None, weights: bool = True, *, directory: Path) -> VLM:
    """The loader of packaged entries: the base model's architecture, then the checked weights."""
    base: ModelCard = get_host().get("model", card.base_model).obj
    vlm = base.load(device=device, weights=False)
    vlm.name = card.name
    if weights:
        (filename, sha256), = card.files.items()
        load_state(vlm.model, read_weights(directory / filename, sha256), what=f"the weights of {card.name}")
    return vlm.to(device or "cpu").eval()


def packaged_cards(directory: str | os.PathLike, **fields) -> list[ModelCard]:
    """A zoo card for each JSON card in ``directory`` (``fields`` fill what the JSON does not say)."""
    directory = Path(directory)
    found = []
    for path in sorted(directory.glob("*.json")):
        info = json.loads(path.read_text())
        found.append(ModelCard(
            info["name"], arch=info["arch"], method=info["method"], base_model=info["base_model"],
            description=info.get("description", ""), threat_model=info.get("threat_model", {}),
            training_data=info.get("training_data", ""), source="package", files={info["file"]: info["sha256"]},
            loader=partial(load_packaged, directory=directory), recipe=info.get("command", ""),
            metrics=card_metrics(info.get("metrics", {})), **fields))
    return found
