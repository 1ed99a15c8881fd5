"""ImageClassifier: any image classifier in pixel space, as the attacks see it.

An ``ImageClassifier`` takes a float batch in [0, 1], NCHW, at whatever resolution the data has, and
returns logits: the resize to the model's input size and the mean/std normalization happen inside, as
in a ``VLM``, so an eps is measured on the pixels the user has.

``ImageClassifier.from_timm("resnet18", num_classes=10)`` builds a timm model (its head included) and
takes the input size, mean, std and interpolation from timm's data config. Any other backbone is
wrapped by passing the module and its preprocessing; a plugin's domain-adapted model, say, whose
backbone, bottleneck and head are separate modules::

    ImageClassifier(nn.Sequential(backbone, bottleneck, head), num_classes=65, image_size=224,
                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), classnames=office_home_classes)

Its card's ``loader`` returns that (``ModelCard(..., family="classifier", loader=...)``). A model folder
(``zoo.save``) holds a timm model in timm's Hub layout, or any model a plugin's registered ``Architecture``
builds: the classifier names it (``architecture={"name": ..., "args": {...}}``), the folder records that, and
loading the folder builds the architecture again from the registry and reads the weights into it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ParameterError, UnknownNameError, VlmshieldError, did_you_mean, error_summary
from .model import VLM, check_images

#: ImageNet's mean and std, the default normalization of timm and torchvision models.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _timm():
    """The timm package, imported on first use: vlmshield needs it only for timm classifiers."""
    try:
        import timm
    except ImportError as error:
        raise VlmshieldError("timm classifiers need the timm package (1.0.16 or later): pip install timm.") from error
    return timm


def _pair(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)


@dataclass(frozen=True)
class Architecture:
    """A classifier architecture a plugin registers (``register_architectures``): ``build(**args)`` returns the
    module (normalized images -> logits), its ``args`` plain JSON values, so that a model folder naming it is
    built again wherever the plugin is installed."""

    name: str
    build: Callable[..., nn.Module]
    description: str = ""


class ImageClassifier(nn.Module):
    """[0, 1] images at any size -> logits of ``model`` over ``num_classes`` classes.

    ``model`` is the classifier itself (normalized inputs at ``image_size``, as it was trained);
    ``classifier(images)`` resizes (shortest side to ``image_size``, then a centre crop) and normalizes.
    ``classnames`` name the outputs, where known; ``architecture`` (``{"name": NAME, "args": {...}}``) names the
    registered ``Architecture`` that builds ``model``, for a model that is not timm's.
    """

    def __init__(self, model: nn.Module, num_classes: int, *, image_size: int | Sequence[int] = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 interpolation: str = "bicubic", classnames: Sequence[str] | None = None, name: str | None = None,
                 architecture: dict | None = None):
        super().__init__()
        if classnames is not None and len(classnames) != num_classes:
            raise ParameterError(f"a classifier of {num_classes} classes needs as many class names; "
                                 f"got {len(classnames)}.")
        self.model = model
        self.num_classes = int(num_classes)
        self.image_size: tuple[int, int] = _pair(image_size)
        self.interpolation = interpolation
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.classnames: tuple[str, ...] | None = None if classnames is None else tuple(classnames)
        self.name = name
        if architecture is not None and not (isinstance(architecture, dict)
                                             and isinstance(architecture.get("name"), str)
                                             and isinstance(architecture.get("args", {}), dict)):
            raise ParameterError(f"architecture is {{'name': NAME, 'args': {{...}}}}, a registered architecture and "
                                 f"its arguments; got {architecture!r}.")
        self.architecture = None if architecture is None else {"name": architecture["name"],
                                                               "args": dict(architecture.get("args", {}))}
        self.register_buffer("pixel_mean", torch.tensor(self.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.std).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_timm(cls, arch: str, num_classes: int | None = None, pretrained: bool = False, *,
                  image_size: int | Sequence[int] | None = None, classnames: Sequence[str] | None = None,
                  name: str | None = None, **kwargs) -> ImageClassifier:
        """A timm model with a head of ``num_classes`` (timm's default when None); random weights unless
        ``pretrained``. ``arch`` is timm's name (``resnet18``, ``resnet18.a1_in1k``) or a folder in timm's Hub
        layout (``local-dir:PATH``). ``kwargs`` go to ``timm.create_model`` (``img_size=32`` for a ViT at
        32 px); ``image_size`` overrides the input size of timm's data config."""
        timm = _timm()
        if ":" not in arch and not timm.is_model(arch):
            raise UnknownNameError(f"timm has no model {arch!r}.{did_you_mean(arch, timm.list_models())}")
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        try:
            model = timm.create_model(arch, pretrained=pretrained, **kwargs)
        except Exception as error:  # a download, file or argument problem, reported in one sentence
            offline = (" (without network access, build it with random weights instead: weights=False / "
                       "--no-weights)") if pretrained else ""
            raise VlmshieldError(f"could not build timm's {arch}{' with its pretrained weights' if pretrained else ''}"
                                 f": {error_summary(error)}{offline}.") from error
        return cls.from_timm_model(model, image_size=image_size or kwargs.get("img_size"), classnames=classnames,
                                   name=name or arch)

    @classmethod
    def from_timm_model(cls, model: nn.Module, *, image_size: int | Sequence[int] | None = None,
                        classnames: Sequence[str] | None = None, name: str | None = None) -> ImageClassifier:
        """Wrap a model timm built, with the preprocessing of its data config (``image_size`` overrides the
        input size; ``classnames`` default to the ``label_names`` of its pretrained config)."""
        data = _timm().data.resolve_data_config(model=model)
        labels = model.pretrained_cfg.get("label_names")
        if classnames is None and isinstance(labels, (list, tuple)) and len(labels) == model.num_classes:
            classnames = labels
        return cls(model, model.num_classes, image_size=image_size or data["input_size"][1:], mean=data["mean"],
                   std=data["std"], interpolation=data["interpolation"], classnames=classnames, name=name)

    @classmethod
    def from_architecture(cls, architecture: dict, num_classes: int, **options) -> ImageClassifier:
        """A classifier whose model the registered ``Architecture`` named ``architecture["name"]`` builds from
        ``architecture["args"]``, with random weights; ``options`` are ``__init__``'s (preprocessing, class
        names, name)."""
        from .plugins import get_host  # the registry of architectures

        model = get_host().get("architecture", architecture["name"]).obj.build(**architecture.get("args", {}))
        return cls(model, num_classes, architecture=architecture, **options)

    def config(self) -> dict:
        """The classifier's preprocessing and classes, as plain JSON values (what a saved folder records)."""
        return {"num_classes": self.num_classes, "image_size": list(self.image_size),
                "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation,
                "classnames": None if self.classnames is None else list(self.classnames)}

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels at any size -> the normalized input of ``model``."""
        check_images(images)
        height, width = self.image_size
        h, w = images.shape[-2:]
        if (h, w) != (height, width):  # shortest side to the input size, then a centre crop
            scale = max(height / h, width / w)
            new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
            images = F.interpolate(images, size=(new_h, new_w), mode=self.interpolation, align_corners=False,
                                   antialias=new_h < h or new_w < w)
            top, left = (new_h - height) // 2, (new_w - width) // 2
            images = images[..., top:top + height, left:left + width]
        return (images - self.pixel_mean) / self.pixel_std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(images))


def input_size(model: nn.Module) -> int:
    """The side a model's datasets are built at: the input size of a ``VLM`` or an ``ImageClassifier``, 224
    for any other module (datasets of a fixed native resolution keep theirs; the model resizes inside)."""
    return model.image_size[0] if isinstance(model, (VLM, ImageClassifier)) else 224
