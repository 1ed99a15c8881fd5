"""Class names and prompt templates of the zero-shot suite, read from the JSON files in ``metadata/``.

They are data, not code, so that they can be checked against their sources line by line:

- ``classnames.json``: per dataset, the class names in label order. CLIP's curated English names (OpenAI
  CLIP's ``data/prompts.md`` and its ImageNet notebook, as packaged in LAION's CLIP_benchmark
  ``en_classnames.json``), ordered as torchvision labels the dataset: Oxford Pets follows torchvision's
  case-insensitive breed order, Caltech-101 drops CLIP's "background" (torchvision has no such class),
  ImageNet-R and TinyImageNet are CLIP's ImageNet names of their WordNet ids. Caltech-256 has no CLIP list:
  its names are the category folders without the number and the "-101" suffix, hyphens read as spaces
  (but "t-shirt" and "yo-yo").
- ``templates.json``: CLIP's per-dataset prompt ensembles, as CLIP_benchmark's
  ``en_zeroshot_classification_templates.json`` has them (what RobustVLM evaluates with); datasets without
  their own (Caltech-256, ImageNet-R, ImageNet-Sketch, TinyImageNet) use the 80 ImageNet templates, as
  CLIP_benchmark falls back to.
- ``single_templates.json``: the one prompt per dataset of TTC's evaluation (``code/utils.py`` and the
  ``clip_prompts`` of its dataset classes), inherited from TeCoA and PMG-AFT. The default is
  "This is a photo of a {}." with a full stop; TeCoA and PMG-AFT write it without one (``SINGLE_TEMPLATE``),
  TTC adds it. TTC gives PCAM two fixed sentences ("This is a photo of a healthy lymph node tissue." and
  "... lymph node tumor tissue."); here PCAM keeps CLIP's class names with TTC's default template.
  ImageNet-R and ImageNet-Sketch, which TTC does not evaluate, get that default too. Class names stay
  CLIP's under both conventions: TTC's own renamings (Stanford Cars without the year, Caltech-101's two face
  classes as "person", its refined ImageNet and TinyImageNet labels) are not reproduced.
- ``wnids.json``: the WordNet ids of the ImageNet family in label order (ImageNet's standard sorted index,
  ImageNet-R's 200 and TinyImageNet's 200 in sorted order).

Templates hold ``{}`` where the class name goes.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from vlmshield.api import ParameterError

#: TeCoA's and PMG-AFT's single prompt (training and evaluation); TTC evaluates with it plus a full stop.
SINGLE_TEMPLATE = "This is a photo of a {}"

#: The prompt conventions ``templates_for`` knows.
CONVENTIONS = ("ensemble", "single")


@cache
def _table(stem: str) -> dict[str, list[str]]:
    """One metadata file, read once."""
    return json.loads((resources.files(__package__) / "metadata" / f"{stem}.json").read_text(encoding="utf-8"))


def _lookup(stem: str, name: str) -> list[str]:
    table = _table(stem)
    if name not in table:
        raise ParameterError(f"no {stem.replace('_', ' ')} for dataset {name!r}; known: {', '.join(table)}.")
    return list(table[name])


def classnames(name: str) -> list[str]:
    """The class names of dataset ``name``, in label order."""
    return _lookup("classnames", name)


def wnids(name: str) -> list[str]:
    """The WordNet ids of an ImageNet-family dataset (imagenet, imagenet-r, tinyimagenet), in label order."""
    return _lookup("wnids", name)


def single_templates(name: str) -> list[str]:
    """The single prompt TTC evaluates dataset ``name`` with; ``SINGLE_TEMPLATE`` for any other dataset."""
    table = _table("single_templates")
    return list(table[name]) if name in table else [SINGLE_TEMPLATE]


def templates_for(name: str, convention: str = "ensemble") -> list[str]:
    """The prompt templates of dataset ``name`` under ``convention``.

    ``"ensemble"``: CLIP's per-dataset prompt ensemble (RobustVLM/FARE and CLIP_benchmark average the
    normalised text embeddings of all of them). ``"single"``: one prompt per dataset, as TeCoA, PMG-AFT
    and TTC evaluate (see ``single_templates``). Each template holds ``{}`` for the class name.
    """
    if convention == "ensemble":
        return _lookup("templates", name)
    if convention == "single":
        return single_templates(name)
    raise ParameterError(f"prompt convention must be one of {', '.join(CONVENTIONS)}; got {convention!r}.")
