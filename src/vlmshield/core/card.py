"""ModelCard: a zoo entry is data.

A card names a model (``<method>-<arch>``, e.g. ``clip-vitb32``), says how to build it (an open_clip
architecture and pretrained tag, or a ``loader`` of the plugin's own) and what it is. Plugins register
cards through the ``register_models`` hook; ``vs.zoo.load(name)`` builds them.

``family`` says what the model is: ``clip`` (a ``VLM``, the default) or ``classifier`` (an
``ImageClassifier``: [0, 1] images -> logits over ``num_classes``, named by ``classnames``). Without a
loader a classifier card is a timm model: ``arch`` is timm's model name and ``pretrained`` its
pretrained tag (``ModelCard("rn18", arch="resnet18", pretrained="a1_in1k", family="classifier")``).

``source`` says where the weights come from: ``open_clip`` (its pretrained registry), ``timm`` (timm's, the
default of a classifier), ``hf-hub:ORG/NAME[@REV]`` (without a loader, the repository is loaded as
``vs.zoo.load("hf-hub:...")`` loads it, with each file of ``files`` checked against its sha256, and
``weights=False`` builds ``arch`` as above),
``package`` (files shipped in an installed package), ``manual`` (files a person downloads from
``homepage`` into the weights folder, such as vision-only checkpoints on a university server), or
``recipe`` (known but not published yet: loading it says which command produces it). ``metrics`` are the
numbers the model was published with, with the protocol that measured them.

``quick_gelu`` says which activation the weights were trained with: OpenAI's CLIPs, and every model
fine-tuned from them, use QuickGELU (``x * sigmoid(1.702 x)``), most others nn.GELU. Unless a card sets
it, it is what open_clip's pretrained config declares for ``pretrained`` (or for the ``ARCH/TAG`` of
``base_model``), and ``load`` builds the model with it, random weights included.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from .classifier import ImageClassifier
from .errors import ParameterError, VlmshieldError
from .model import VLM, declared_quick_gelu
from .plugins import get_host
from .registry import canonical_name
from .weights import WeightsError

#: Where a card's weights come from (``hf-hub:`` is followed by the repository).
SOURCES = ("open_clip", "timm", "hf-hub:", "package", "manual", "recipe")
#: What a card's model is: a CLIP-like ``VLM``, or an ``ImageClassifier``.
FAMILIES = ("clip", "classifier")


@dataclass(frozen=True)
class ModelCard:
    name: str
    #: open_clip architecture name (``ViT-B-32``), timm's model name for a classifier (``resnet18``), or the
    #: plugin's own for custom loaders.
    arch: str
    #: open_clip pretrained tag (``openai``), or timm's (``a1_in1k``), used when no ``loader`` is given.
    pretrained: str | None = None
    #: The defense that produced the weights; ``none`` for vanilla models.
    method: str = "none"
    description: str = ""
    paper: str = ""
    #: ``loader(card, device=None, weights=True) -> VLM | ImageClassifier`` for models open_clip (or timm)
    #: cannot build alone.
    loader: Callable[..., VLM | ImageClassifier] | None = None
    #: The open_clip model it was fine-tuned from, ``ARCH/PRETRAINED`` (``ViT-L-14/openai``).
    base_model: str = ""
    #: What it was made robust against: ``{"norm": "Linf", "eps": "4/255"}``; for a model with a backdoor
    #: planted or removed, the backdoor: ``{"backdoor": "badnet-stripes", "target": "banana", "rate": 0.003}``
    #: (and ``"trigger_params"``, the trigger's other parameters, where it was given any).
    threat_model: dict = field(default_factory=dict)
    training_data: str = ""
    source: str = "open_clip"
    #: File name -> sha256, where known.
    files: dict = field(default_factory=dict)
    license: str = ""
    bibtex: str = ""
    #: Published numbers: ``{"protocol": "...", "clean": 61.1, "robust": {"2/255": 45.9, ...}}`` (percent).
    metrics: dict = field(default_factory=dict)
    #: For ``source="recipe"``: the command that produces the weights.
    recipe: str = ""
    #: For ``source="manual"``: the page where a person downloads ``files``.
    homepage: str = ""
    #: True: the weights were trained with QuickGELU (OpenAI's CLIPs and their fine-tunes); False: nn.GELU;
    #: None: not known from the card. Left None, it is what open_clip declares for ``pretrained`` or for
    #: the ``ARCH/TAG`` of ``base_model``.
    quick_gelu: bool | None = None
    #: ``clip`` (a VLM) or ``classifier`` (an ImageClassifier).
    family: str = "clip"
    #: A classifier's number of outputs (the length of ``classnames`` when None; timm's default when both
    #: are unset).
    num_classes: int | None = None
    #: A classifier's class names, in output order, where known.
    classnames: tuple[str, ...] = ()

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ParameterError(f"model card {self.name!r}: family must be one of {', '.join(FAMILIES)}; "
                                 f"got {self.family!r}.")
        if self.family == "classifier" and self.source == "open_clip":  # the default; no classifier comes from it
            object.__setattr__(self, "source", "timm")
        if not self.source.startswith(SOURCES):
            raise ParameterError(f"model card {self.name!r}: source must be one of {', '.join(SOURCES)} "
                                 f"(hf-hub:ORG/NAME); got {self.source!r}.")
        if self.family == "classifier":
            self._check_classes()
        elif self.quick_gelu is None:
            if self.pretrained:
                arch, tag = self.arch, self.pretrained
            else:
                arch, _, tag = self.base_model.partition("/")
            object.__setattr__(self, "quick_gelu", declared_quick_gelu(arch, tag or None))

    def _check_classes(self):
        object.__setattr__(self, "classnames", tuple(self.classnames))
        if self.num_classes is None and self.classnames:
            object.__setattr__(self, "num_classes", len(self.classnames))
        if self.classnames and len(self.classnames) != self.num_classes:
            raise ParameterError(f"model card {self.name!r}: {self.num_classes} classes but "
                                 f"{len(self.classnames)} class names.")

    def resolved_quick_gelu(self) -> bool | None:
        """The activation ``load`` builds: ``quick_gelu``, or else that of the zoo entry ``base_model`` names
        (a recipe's base model, whose weights it fine-tunes)."""
        if self.quick_gelu is not None or not self.base_model or "/" in self.base_model:
            return self.quick_gelu
        try:
            base = get_host().get("model", self.base_model).obj
        except VlmshieldError:
            return None
        return base.quick_gelu if isinstance(base, ModelCard) else None

    def load(self, device=None, weights: bool = True) -> VLM | ImageClassifier:
        """Build the model; ``weights=False`` gives the architecture with random weights (no download)."""
        if self.source == "recipe" and weights:
            raise ParameterError(f"{self.name} is not published yet; `{self.recipe}` trains it "
                                 f"(or load the architecture alone with weights=False).")
        if self.loader is not None:
            model = self.loader(self, device=device, weights=weights)
        elif weights and self.source.startswith("hf-hub:"):
            model = self._from_hub(device)
        elif self.family == "classifier":  # a timm model, ARCH.TAG in timm's names
            tagged = f"{self.arch}.{self.pretrained}" if self.pretrained else self.arch
            model = ImageClassifier.from_timm(tagged, self.num_classes, pretrained=weights and bool(self.pretrained),
                                              classnames=self.classnames or None).to(device or "cpu")
        else:
            model = VLM.from_open_clip(self.arch, self.pretrained if weights else None,
                                       quick_gelu=self.resolved_quick_gelu(), device=device)
        model.source = self._source_of(model, weights)
        if weights:
            self._check_architecture(model)
        model.name = self.name
        return model.eval()

    def _from_hub(self, device):
        """The Hub repository of ``source``, through the ``hf-hub`` model source, each file of ``files`` checked
        against its sha256 before it is read."""
        hub = get_host().get("model-source", "hf-hub").obj
        return hub.load(self.source.removeprefix("hf-hub:"), device=device, weights=True, sha256=self.files or None)

    def _source_of(self, model, weights: bool) -> str:
        """Where the loaded weights came from, as a record says it."""
        if not weights:
            return "random-init"
        if self.source.startswith("hf-hub:"):  # the Hub loader notes the commit it read
            source = getattr(model, "source", None)
            return source if isinstance(source, str) and source.startswith("hf-hub:") else self.source
        if self.source in ("open_clip", "timm") and self.loader is None:
            joined = "/" if self.source == "open_clip" else "."
            return f"{self.source}:{self.arch}{joined + self.pretrained if self.pretrained else ''}"
        return f"{self.source}:{','.join(self.files) or self.name}"

    def _check_architecture(self, model) -> None:
        """Refuse, in one sentence, a loaded model that is not of the card's architecture: its parameter count
        and tensor shapes are compared with the architecture built on the meta device (no memory, no
        weights). A card whose architecture cannot be built there is not checked."""
        try:
            with torch.device("meta"):
                reference = self.load(device="meta", weights=False)
        except Exception:  # an architecture that cannot be built without memory: nothing to compare with
            return
        expected, found = _shapes(reference), _shapes(model)
        if expected != found:
            count = sum(math.prod(s) for s in expected)
            loaded = sum(math.prod(s) for s in found)
            raise WeightsError(
                f"{self.name} is a {self.arch} of {count:,} parameters, but the model loaded from "
                f"{getattr(model, 'source', self.source)} has {loaded:,}"
                f"{' in tensors of other shapes' if count == loaded else ''}: those files are not {self.name}'s; "
                f"remove them (from the Hugging Face cache, or the weights folder) to get the real ones.")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["loader"] = None if self.loader is None else getattr(self.loader, "__qualname__", repr(self.loader))
        return data


def recipe_card(name: str, method: str, base: str, arch: str, eps: str, *, paper: str, description: str,
                dataset: str = "imagenet:/path/to/imagenet", training_data: str = "ImageNet",
                flags: str = "") -> ModelCard:
    """A known-but-unpublished model: loading it names the ``vlmshield train`` command that produces it
    (``flags``: more options of that command, such as ``--proxy clip-vitb16``)."""
    return ModelCard(name, arch=arch, method=method, base_model=base, source="recipe",
                     recipe=f"vlmshield train {method} --model {base}{' ' + flags if flags else ''} "
                            f"--dataset {dataset} --eps {eps}",
                     threat_model={"norm": "Linf", "eps": eps}, training_data=training_data, paper=paper,
                     license="MIT", description=description)


@dataclass(frozen=True)
class ModelSource:
    """A scheme of model names that are not zoo entries: ``load(rest, device=None, weights=True)`` builds
    the model that ``SCHEME:rest`` names (``local-dir:PATH``, ``hf-hub:ORG/NAME[@REV]``)."""

    name: str
    load: Callable[..., object]
    description: str = ""


def _shapes(model) -> list[tuple[int, ...]]:
    """The shapes of a model's parameters, sorted: its architecture, whatever its modules are named."""
    return sorted(tuple(p.shape) for p in model.parameters())


def load_model(name: str, device=None, weights: bool = True):
    """The model a name stands for, in eval mode: a registered zoo entry (``clip-vitb32``), or
    ``SCHEME:REST`` for a registered model source (``local-dir:runs/fare/model``); ``weights=False``
    gives the architecture with random weights (no download)."""
    if not isinstance(name, str) or not name.strip():
        raise ParameterError(f"a model is named by a zoo name or SCHEME:PATH; got {name!r}.")
    scheme, sep, rest = name.partition(":")
    host = get_host()
    if sep and canonical_name(scheme) in host.registries["model-source"]:
        registration = host.get("model-source", scheme)
        model = registration.obj.load(rest, device=device, weights=weights)
        model.source = getattr(model, "source", None) or f"{registration.name}:{rest}"
    else:
        registration = host.get("model", name)
        model = registration.obj.load(device=device, weights=weights)
    model.provider = registration.provenance
    return model
