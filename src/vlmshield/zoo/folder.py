"""A model folder in a Hugging Face Hub layout: what ``zoo.save`` writes and ``local-dir:`` reads.

A CLIP (a ``VLM``) is saved in open_clip's layout:

- ``open_clip_config.json``: ``model_cfg`` and ``preprocess_cfg`` as open_clip expects them, plus a
  ``vlmshield`` section (the card, and the tokenizer when it is vlmshield's word tokenizer);
- the tokenizer's own files (``tokenizer_config.json``, ``tokenizer.json``, ...) when the config names a
  Hugging Face tokenizer (``text_cfg.hf_tokenizer_name``: SigLIP and the Hugging Face text towers), where
  open_clip's ``local-dir:`` loader looks for them;
- ``open_clip_model.safetensors``: the weights, with provenance (name, method) in the safetensors
  header;
- ``README.md``: a Hub model card (YAML metadata with ``library_name``, tags, ``base_model``, license and
  a ``model-index`` of the measured accuracies), followed by a short description.

An image classifier (an ``ImageClassifier`` around a timm model) is saved in timm's layout:

- ``config.json``: timm's config (``architecture``, ``num_classes``, ``model_args``, ``label_names`` when
  the classes are named, and a ``pretrained_cfg`` whose input size, mean, std and interpolation are the
  classifier's, with ``crop_pct`` 1: the whole image is resized, as the classifier does), plus the same
  ``vlmshield`` section;
- ``model.safetensors``: the timm model's state dict, keys as timm names them;
- ``README.md``, as above, for the ``timm`` library.

A classifier whose model a plugin's registered ``Architecture`` builds is saved in the same files, its
``config.json`` naming the architecture and its arguments (``vlmshield_architecture``: ``{"name", "args"}``) with
the same ``pretrained_cfg`` and ``label_names``; loading it builds the architecture from the registry (the
plugin must be installed: the error names it otherwise) and reads the weights into it.

A folder saved from a real open_clip architecture loads with plain
``open_clip.create_model_and_transforms("local-dir:DIR")``, a classifier's with
``timm.create_model("local-dir:DIR", pretrained=True)``; ``vs.zoo.load("local-dir:DIR")`` loads both
(whichever config the folder holds), and checks the weights against the sha256 the config records.

Before a model is built for real, its config is checked: the preprocessing and the tokenizer it records, and the
size of the model it describes, counted on PyTorch's meta device (nothing allocated) against the weights file's
safetensors header and against the machine's memory. Whatever the libraries raise while building a model from
the config is one WeightsError sentence that names the folder.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from vlmshield.api import (
    VLM,
    ImageClassifier,
    ModelCard,
    ParameterError,
    UnknownNameError,
    VlmshieldError,
    WeightsError,
    WordTokenizer,
    atomic_write_json,
    error_summary,
    get_host,
    header_parameter_count,
    load_state,
    read_legacy_weights,
    read_weights,
    write_weights,
)

CONFIG, WEIGHTS, README = "open_clip_config.json", "open_clip_model.safetensors", "README.md"
#: What older open_clip Hub folders hold instead of safetensors, read with ``weights_only=True``.
LEGACY_WEIGHTS = "open_clip_pytorch_model.bin"
#: timm's layout, for an image classifier, and what older timm Hub folders hold instead of safetensors.
TIMM_CONFIG, TIMM_WEIGHTS, TIMM_LEGACY_WEIGHTS = "config.json", "model.safetensors", "pytorch_model.bin"
#: The files a Hugging Face tokenizer is saved as; ``tokenizer_config.json`` is always one of them.
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
HF_TOKENIZER_FILES = (HF_TOKENIZER_CONFIG, "tokenizer.json", "special_tokens_map.json", "spiece.model",
                      "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "merges.txt")


def hf_tokenizer_name(model_cfg: dict) -> str | None:
    """The Hugging Face tokenizer an open_clip model config names, or None for open_clip's own."""
    text_cfg = model_cfg.get("text_cfg")
    return (text_cfg.get("hf_tokenizer_name") or None) if isinstance(text_cfg, dict) else None


def _card_dict(card: ModelCard | dict | None) -> dict:
    """A card as the plain dict a folder records (from a ModelCard, or the dict ``zoo.info`` returns), without
    its loader; empty for no card."""
    data = card.to_dict() if isinstance(card, ModelCard) else dict(card or {})
    data.pop("loader", None)
    return data


def _write_weights(wrapper: VLM | ImageClassifier, directory: Path, filename: str, card: dict) -> dict:
    """Write the weights of ``wrapper.model`` with their provenance; returns the config's ``vlmshield``
    section (name, method, the weights' sha256 and the card)."""
    directory.mkdir(parents=True, exist_ok=True)
    name = card.get("name") or wrapper.name or directory.name
    method = card.get("method", "none")
    sha256 = write_weights(directory / filename, wrapper.model.state_dict(), {"name": name, "method": method})
    return {"name": name, "method": method, "weights_sha256": sha256, "card": card or None}


def save(model: VLM | ImageClassifier, directory: str | os.PathLike, card: ModelCard | dict | None = None,
         metrics: dict | None = None) -> Path:
    """Write ``model`` as a model folder (a VLM in open_clip's layout, an image classifier in timm's);
    ``card`` is its ModelCard or the dict ``zoo.info`` returns; ``metrics`` (as in a world card: clean and
    robust per task, with the protocol) go into the README's model-index. Returns the folder."""
    directory, card = Path(directory), _card_dict(card)
    if isinstance(model, ImageClassifier):
        return _save_classifier(model, directory, card, metrics)
    if not isinstance(model, VLM):
        raise ParameterError(f"zoo.save takes a VLM or an ImageClassifier; got {type(model).__name__}.")
    vlm = model
    if vlm.model_cfg is None:
        raise ParameterError("this VLM has no open_clip model config to save; build it with VLM.from_open_clip "
                             "or VLM.from_config.")
    section = _write_weights(vlm, directory, WEIGHTS, card)
    if isinstance(vlm.tokenizer, WordTokenizer):
        section["tokenizer"] = vlm.tokenizer.to_config()
    elif hf_tokenizer_name(vlm.model_cfg):
        if not hasattr(vlm.tokenizer, "save_pretrained"):
            raise ParameterError(f"this model's config names the Hugging Face tokenizer "
                                 f"{hf_tokenizer_name(vlm.model_cfg)!r}, but its tokenizer "
                                 f"({type(vlm.tokenizer).__name__}) cannot write it; give the VLM open_clip's "
                                 f"tokenizer (open_clip.get_tokenizer).")
        vlm.tokenizer.save_pretrained(str(directory))
    atomic_write_json(directory / CONFIG, {"model_cfg": vlm.model_cfg, "preprocess_cfg": vlm.preprocess_cfg(),
                                           "vlmshield": section})
    (directory / README).write_text(model_card(section, metrics))
    return directory


def _save_classifier(classifier: ImageClassifier, directory: Path, card: dict, metrics: dict | None) -> Path:
    """Write a classifier in timm's layout: timm writes its config (architecture and the arguments that rebuild
    it), or the classifier names its registered architecture; then its preprocessing, classes and the section
    go in."""
    if classifier.architecture is not None:
        get_host().get("architecture", classifier.architecture["name"])  # a name nothing builds is refused now
        config = {"architecture": classifier.architecture["name"], "vlmshield_architecture": classifier.architecture,
                  "num_classes": classifier.num_classes, "pretrained_cfg": {}}
    elif hasattr(classifier.model, "pretrained_cfg"):
        from timm.models._hub import save_config_for_hf

        with tempfile.TemporaryDirectory() as scratch:
            save_config_for_hf(classifier.model, Path(scratch) / TIMM_CONFIG)
            config = json.loads((Path(scratch) / TIMM_CONFIG).read_text())
    else:
        raise ParameterError(f"a classifier is saved as a model folder when it wraps a timm model or names the "
                             f"registered architecture that builds its model (architecture=...); this one wraps "
                             f"a {type(classifier.model).__name__}.")
    section = _write_weights(classifier, directory, TIMM_WEIGHTS, card)
    preprocess = config["pretrained_cfg"]
    size = [3, *classifier.image_size]
    if preprocess.get("input_size") != size:
        preprocess["pool_size"] = None  # timm's note of the final feature map, at the old input size
    preprocess.update(input_size=size, mean=list(classifier.mean), std=list(classifier.std),
                      interpolation=classifier.interpolation, crop_pct=1.0, num_classes=classifier.num_classes)
    for key in ("test_input_size", "test_crop_pct"):  # the classifier has one input size
        preprocess.pop(key, None)
    if classifier.classnames is not None:
        config["label_names"] = list(classifier.classnames)
    atomic_write_json(directory / TIMM_CONFIG, {**config, "vlmshield": section})
    (directory / README).write_text(model_card(section, metrics, classifier=True))
    return directory


def _read_json_config(path: Path, key: str, kind: type, what: str) -> dict:
    """The JSON object in ``path``, checked to hold ``key`` of type ``kind`` (WeightsError naming ``what``)."""
    try:
        config = json.loads(path.read_text())
        if not isinstance(config[key], kind):
            raise TypeError(f"{key} is not a {kind.__name__}")
    except (ValueError, KeyError, TypeError) as error:
        raise WeightsError(f"{path} is not {what} ({type(error).__name__}).") from error
    return config


def read_config(directory: str | os.PathLike) -> dict:
    """The ``open_clip_config.json`` of a model folder, checked to hold a ``model_cfg``."""
    config_path = Path(directory) / CONFIG
    if not config_path.is_file():
        raise WeightsError(f"{directory} is not a model folder: it has no {CONFIG} (a CLIP's) or {TIMM_CONFIG} "
                           f"(an image classifier's, in timm's layout).")
    return _read_json_config(config_path, "model_cfg", dict, "an open_clip config")


def read_timm_config(directory: str | os.PathLike) -> dict:
    """The ``config.json`` of a model folder in timm's layout, checked to name an ``architecture``."""
    return _read_json_config(Path(directory) / TIMM_CONFIG, "architecture", str, "a timm config")


def is_classifier_folder(directory: str | os.PathLike) -> bool:
    """Whether a folder holds timm's layout (an image classifier) rather than open_clip's."""
    return not (Path(directory) / CONFIG).is_file() and (Path(directory) / TIMM_CONFIG).is_file()


def read_layout(directory: str | os.PathLike) -> tuple[dict, str]:
    """A model folder's config (open_clip's or timm's, whichever it holds) and the name of its weights file."""
    if is_classifier_folder(directory):
        return read_timm_config(directory), TIMM_WEIGHTS
    return read_config(directory), WEIGHTS


def _load_weights(module, directory: Path, filename: str, legacy: str, sha256: str | None) -> None:
    """Load the folder's safetensors weights (checked against ``sha256``), or its legacy file when it has only
    that, into ``module``, strictly."""
    if (directory / filename).exists() or not (directory / legacy).exists():
        state = read_weights(directory / filename, sha256)
    else:
        state = read_legacy_weights(directory / legacy)
    load_state(module, state, what=f"the weights in {directory}")


def load(directory: str | os.PathLike, device=None, weights: bool = True) -> VLM | ImageClassifier:
    """The model of a folder written by ``save`` (or any open_clip or timm Hub folder): a VLM from
    open_clip's layout, an ImageClassifier from timm's."""
    directory = Path(directory)
    if is_classifier_folder(directory):
        return load_classifier(directory, device=device, weights=weights)
    config = read_config(directory)
    section = checked_section(directory / CONFIG, config)
    preprocess_cfg = _preprocess(directory / CONFIG, config.get("preprocess_cfg"))
    tokenizer = _tokenizer(directory, config)
    check_depth(directory / CONFIG, config["model_cfg"])
    check_size(directory, _meta_count(lambda: VLM.open_clip_model(config["model_cfg"])),
               directory / WEIGHTS if weights else None)
    name = section.get("name", directory.name)
    vlm = _from_config(directory, lambda: VLM.from_config(config["model_cfg"], preprocess_cfg=preprocess_cfg,
                                                          tokenizer=tokenizer, name=name))
    _check_tokenizer_fits(directory / CONFIG, vlm)
    if weights:
        _load_weights(vlm.model, directory, WEIGHTS, LEGACY_WEIGHTS, section.get("weights_sha256"))
    return vlm.to(device or "cpu").eval()


def load_classifier(directory: str | os.PathLike, device=None, weights: bool = True) -> ImageClassifier:
    """The classifier of a folder in timm's layout: timm builds the architecture from the config, with the
    config's preprocessing and class names; the weights are checked against the recorded sha256."""
    directory = Path(directory)
    timm_config = read_timm_config(directory)
    section = checked_section(directory / TIMM_CONFIG, timm_config)
    name = section.get("name", directory.name)
    if "vlmshield_architecture" in timm_config:
        build, make = _registered_architecture(directory, timm_config, name)
    else:
        check_depth(directory / TIMM_CONFIG, timm_config.get("model_args"))
        build = lambda: _timm_model(directory)  # noqa: E731
        make = lambda: ImageClassifier.from_timm_model(_timm_model(directory), name=name)  # noqa: E731
    check_size(directory, _meta_count(build), directory / TIMM_WEIGHTS if weights else None)
    classifier = _from_config(directory, make)
    problem = _preprocess_problem({"mean": list(classifier.mean), "std": list(classifier.std),
                                   "size": list(classifier.image_size)})
    if problem:
        raise WeightsError(f"{directory / TIMM_CONFIG} has a malformed pretrained_cfg: {problem}.")
    if weights:
        _load_weights(classifier.model, directory, TIMM_WEIGHTS, TIMM_LEGACY_WEIGHTS, section.get("weights_sha256"))
    return classifier.to(device or "cpu").eval()


def _registered_architecture(directory: Path, config: dict, name: str) -> tuple[Callable, Callable]:
    """For a folder naming a registered architecture: a function that builds its model, and one that builds the
    classifier around it with the config's preprocessing and classes."""
    path, architecture = directory / TIMM_CONFIG, config["vlmshield_architecture"]
    if not (isinstance(architecture, dict) and isinstance(architecture.get("name"), str)
            and isinstance(architecture.get("args", {}), dict)):
        raise WeightsError(f"{path} has a malformed vlmshield_architecture: it should be an object with a name and "
                           f"its args.")
    try:
        get_host().get("architecture", architecture["name"])
    except UnknownNameError:
        raise WeightsError(f"{directory} holds a model of the architecture {architecture['name']!r}, which no "
                           f"installed plugin registers; install the plugin that trained it.") from None
    pretrained, labels = config.get("pretrained_cfg") or {}, config.get("label_names")
    size = pretrained.get("input_size", [3, 224, 224])
    problem = _preprocess_problem({"mean": pretrained.get("mean"), "std": pretrained.get("std"),
                                   "size": size[1:] if isinstance(size, list) else size})
    if problem or not (type(config.get("num_classes")) is int and config["num_classes"] > 0):
        raise WeightsError(f"{path} has a malformed pretrained_cfg or num_classes: {problem or 'no class count'}.")
    make = lambda: ImageClassifier.from_architecture(  # noqa: E731
        architecture, config["num_classes"], image_size=size[1:], mean=pretrained["mean"], std=pretrained["std"],
        interpolation=pretrained.get("interpolation", "bicubic"), classnames=labels, name=name)
    return lambda: make().model, make


def _timm_model(directory: Path) -> torch.nn.Module:
    """The timm model (randomly initialised) that the ``config.json`` of a folder in timm's layout describes."""
    import timm  # a dependency of open_clip, and of vlmshield

    return timm.create_model(f"local-dir:{directory}", pretrained=False)


def saved_card(directory: str | os.PathLike) -> dict:
    """The card a model folder records (``save``'s ``card``), with the folder's name where it records none."""
    directory = Path(directory)
    if is_classifier_folder(directory):
        section = json.loads((directory / TIMM_CONFIG).read_text()).get("vlmshield") or {}
    else:
        section = checked_section(directory / CONFIG, read_config(directory))
    card = section.get("card") if isinstance(section.get("card"), dict) else {}
    return {"name": section.get("name", directory.name), **card}


def checked_section(path: Path, config: dict) -> dict:
    """The config's ``vlmshield`` section (empty in a folder vlmshield did not write), checked to be an object
    whose name and weights' sha256, where given, are strings."""
    section = config.get("vlmshield") or {}
    if not isinstance(section, dict) or not all(isinstance(section.get(key, ""), str)
                                                for key in ("name", "weights_sha256")):
        raise WeightsError(f"{path} has a malformed vlmshield section: it should be an object whose name and "
                           f"weights_sha256 are strings.")
    return section


#: The interpolations and resize modes a VLM resizes with (open_clip's names).
INTERPOLATIONS, RESIZE_MODES = ("bicubic", "bilinear"), ("shortest", "longest", "squash")


def _preprocess(path: Path, cfg: object) -> dict | None:
    """An open_clip ``preprocess_cfg`` (None when the config has none), checked to hold values a VLM can use."""
    problem = _preprocess_problem(cfg) if cfg is not None else None
    if problem:
        raise WeightsError(f"{path} has a malformed preprocess_cfg: {problem}.")
    return cfg


def _preprocess_problem(cfg: object) -> str | None:
    """What is wrong with a ``preprocess_cfg``, or None."""
    if not isinstance(cfg, dict):
        return f"it is a {type(cfg).__name__}, not an object"
    for key in ("mean", "std"):
        value = cfg.get(key, 0.5)
        values = value if isinstance(value, list) and len(value) in (1, 3) else [value]
        if not all(_is_number(v) and math.isfinite(v) and (key == "mean" or v > 0) for v in values):
            return f"its {key} should be a number or a list of 3 numbers{' above 0' if key == 'std' else ''}; " \
                   f"got {value!r}"
    size = cfg.get("size", 224)
    sides = size if isinstance(size, list) and len(size) == 2 else [size]
    if not all(type(side) is int and side > 0 for side in sides):
        return f"its size should be a positive integer or a list of two; got {size!r}"
    for key, allowed in (("interpolation", INTERPOLATIONS), ("resize_mode", RESIZE_MODES)):
        if cfg.get(key, allowed[0]) not in allowed:
            return f"its {key} should be {' or '.join(allowed)}; got {cfg[key]!r}"
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: More layers than any CLIP or timm tower has, by an order of magnitude: a config asking for more is damaged
#: (and building it, even on the meta device, would take minutes).
MAX_LAYERS = 1000


def check_depth(path: Path, cfg: object) -> None:
    """Refuse in one sentence a config whose ``layers`` or ``depth`` (a count, or a list of counts per stage)
    exceeds ``MAX_LAYERS`` anywhere in it."""
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            counts = value if isinstance(value, (list, tuple)) else [value]
            if key in ("layers", "depth") and all(_is_number(c) for c in counts) and sum(counts) > MAX_LAYERS:
                raise WeightsError(f"{path} asks for {sum(counts):,} layers ({key}), more than any model has "
                                   f"({MAX_LAYERS:,} at most): the config is damaged.")
            check_depth(path, value)


def _meta_count(build: Callable[[], torch.nn.Module]) -> int | None:
    """How many numbers the state dict of the model ``build()`` returns holds, counted on a model built on
    PyTorch's meta device (shapes, no memory); None when the architecture cannot be built there (code that
    reads a tensor's value while it builds) or not from this config (building it for real says why)."""
    try:
        with torch.device("meta"):
            model = build()
        return sum(tensor.numel() for tensor in model.state_dict().values())
    except Exception:
        return None


def memory_bytes() -> int | None:
    """The machine's physical memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_size(directory: Path, implied: int | None, weights_file: Path | None) -> None:
    """Refuse in one sentence a folder whose config implies (``implied``, None when unknown) another number of
    parameters than its safetensors weights file holds (``weights_file``, None when the weights are not read; a
    legacy file has no header to count), or a model too large for this machine's memory as float32."""
    held = header_parameter_count(weights_file) if weights_file is not None and weights_file.is_file() else None
    if implied is not None and held is not None and implied != held:
        raise WeightsError(f"the config of {directory} implies {implied:,} parameters, but its weights file holds "
                           f"{held:,}: the config and the weights do not belong together; restore the config saved "
                           f"with these weights.")
    count, memory = (implied if implied is not None else held), memory_bytes()
    if count is not None and memory is not None and 4 * count > memory:
        source = "config" if implied is not None else "weights file"
        raise WeightsError(f"the {source} of {directory} describes a model of {count:,} parameters, "
                           f"{4 * count / 2**30:,.1f} GiB as float32, more than this machine's {memory / 2**30:,.1f} "
                           f"GiB of memory: the {source} is damaged, or the model is too large for this machine.")


def _from_config(directory: Path, build: Callable):
    """``build()``, with whatever the libraries raise while building a model from the folder's config as one
    WeightsError sentence that names the folder and their error."""
    try:
        return build()
    except VlmshieldError:
        raise
    except Exception as error:
        raise WeightsError(f"the config of {directory} does not build a model ({error_summary(error)}); fix it, or "
                           f"replace it with the config saved with the weights.") from error


def _check_tokenizer_fits(path: Path, vlm: VLM) -> None:
    """Refuse a word tokenizer whose ids the text model cannot embed, or of another context length."""
    tokenizer, model = vlm.tokenizer, vlm.model
    vocab, length = getattr(model, "vocab_size", None), getattr(model, "context_length", None)
    if isinstance(tokenizer, WordTokenizer) and isinstance(vocab, int) and isinstance(length, int) and \
            (tokenizer.vocab_size > vocab or tokenizer.context_length != length):
        raise WeightsError(f"the word tokenizer in {path} has {tokenizer.vocab_size} token ids and a context length "
                           f"of {tokenizer.context_length}, but the text model takes at most {vocab} ids and a "
                           f"context length of {length}: it does not belong to this model.")


def _tokenizer(directory: Path, config: dict):
    """The folder's tokenizer: vlmshield's word tokenizer, the Hugging Face one saved beside the config, or
    None (open_clip's own, which ``VLM.from_config`` builds)."""
    word_tokenizer = (config.get("vlmshield") or {}).get("tokenizer")
    if word_tokenizer is not None:
        try:
            return WordTokenizer.from_config(word_tokenizer)
        except ParameterError as error:
            raise WeightsError(f"{directory / CONFIG} has a malformed vlmshield tokenizer: "
                               f"{str(error).rstrip('.')}.") from error
    name = hf_tokenizer_name(config["model_cfg"])
    if name is None:
        return None
    if not (directory / HF_TOKENIZER_CONFIG).is_file():
        raise WeightsError(f"{directory} has no {HF_TOKENIZER_CONFIG}: its config names the Hugging Face tokenizer "
                           f"{name!r}, whose files belong beside the config (zoo.save writes them there).")
    try:
        import open_clip  # only for folders with a Hugging Face tokenizer

        return open_clip.get_tokenizer(f"local-dir:{directory}")
    except ImportError as error:
        raise VlmshieldError(f"the tokenizer of {directory} is a Hugging Face tokenizer, which needs the "
                             f"transformers package: pip install vlmshield[hf] (or transformers).") from error
    except (OSError, ValueError) as error:
        raise WeightsError(f"could not read the Hugging Face tokenizer in {directory} "
                           f"({error_summary(error)}).") from error


def _yaml(value) -> str:
    return json.dumps(value)  # a JSON scalar or list is valid YAML


def model_card(section: dict, metrics: dict | None, classifier: bool = False) -> str:
    """The README of a model folder (``section``: its config's ``vlmshield`` section): Hub YAML metadata, then
    what the model is; ``classifier``: an image classifier in timm's layout, else a CLIP."""
    name, method, sha256, card = section["name"], section["method"], section["weights_sha256"], section["card"] or {}
    library, pipeline = ("timm", "image-classification") if classifier else \
        ("open_clip", "zero-shot-image-classification")
    tags = ["vlmshield", *([] if classifier else ["clip"]), library, pipeline, "adversarial-robustness"]
    lines = ["---", f"library_name: {library}", f"pipeline_tag: {pipeline}",
             "license: other", "tags:", *(f"- {_yaml(t)}" for t in tags + ([method] if method != "none" else []))]
    if card.get("pretrained"):  # timm's Hub repo of the weights, or the open_clip model and tag
        base = f"timm/{card['arch']}.{card['pretrained']}" if classifier else f"{card['arch']} ({card['pretrained']})"
        lines.append(f"base_model: {_yaml(base)}")
    if metrics:
        protocol = metrics.get("protocol", {})
        lines += ["model-index:", f"- name: {_yaml(name)}", "  results:"]
        for task, clean in metrics.get("clean", {}).items():
            lines += ["  - task:", f"      type: {pipeline}",
                      "    dataset:", f"      name: {_yaml(task)}", f"      type: {_yaml(task)}", "    metrics:",
                      "    - type: accuracy", f"      value: {round(100 * clean, 2)}", "      name: clean accuracy"]
            for eps, robust in metrics.get("robust", {}).items():
                if task in robust:
                    label = f"robust accuracy ({protocol.get('attack')}, Linf eps {eps}, n {protocol.get('n')})"
                    lines += ["    - type: robust_accuracy", f"      value: {round(100 * robust[task], 2)}",
                              f"      name: {_yaml(label)}"]
    what = "image classifier" if classifier else "CLIP model"
    also = ' (or `timm.create_model("local-dir:PATH", pretrained=True)`)' if classifier else ""
    lines += ["---", "", f"# {name}", "", card.get("description") or f"A {method} {what} saved by vlmshield.", "",
              f"Load it with `vlmshield.zoo.load(\"local-dir:PATH\")`{also}; "
              f"`{TIMM_WEIGHTS if classifier else WEIGHTS}` has sha256 `{sha256}`.", ""]
    if card.get("paper"):
        lines += [f"Paper: {card['paper']}", ""]
    return "\n".join(lines)
