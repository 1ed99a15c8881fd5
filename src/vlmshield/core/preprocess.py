"""Preprocessing rules: which pixels a dataset's images have when the attack perturbs them.

The attack perturbs the images the data loader produces, so the preprocessing decides which pixels eps
is measured on, in evaluation (a protocol's ``preprocess``, by dataset) and in training (a fine-tuning
preset's ``"preprocess"``). A rule is one of:

- ``"native"`` (``NATIVE``): the images as the dataset builds them: fixed-size low-resolution sets
  (CIFAR-10/100, STL-10, PCAM, EuroSAT, TinyImageNet, the world) at their own resolution, upsampled
  inside the model's forward pass; sets whose image size varies resized (bicubic, shortest side) to the
  model's input size and centre-cropped;
- ``{"resize": R, "crop": C, "interpolation": "bilinear" | "bicubic"}``: each image's shortest side
  resized to R pixels, then a centre crop of C x C, before the attack: torchvision's
  ``Resize(R), CenterCrop(C)`` (TTC's ``Resize(256), CenterCrop(224)`` is
  ``{"resize": 256, "crop": 224, "interpolation": "bilinear"}``).

``preprocessed_dataset(spec, rule)`` builds a dataset under a rule. A dataset whose build function takes
``preprocess`` (the zero-shot suite's adapters, ``imagefolder``) applies a resize-and-crop rule to the
decoded image, as torchvision does; any other is built at R pixels (the size a dataset of varying image
sizes is resized to) and its image tensors are resized (antialiased) and cropped.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch.utils.data import Dataset

from .data import CaptionedImages, LabelledImages, dataset, parse_dataset_spec
from .errors import ParameterError
from .plugins import get_host

#: The preprocessing rule that keeps a dataset's images as it builds them.
NATIVE = "native"
#: Interpolations a resize-and-crop rule may name (torchvision's).
INTERPOLATIONS = ("bilinear", "bicubic")


def check_preprocess_rule(rule, where: str = "preprocessing") -> None:
    """ParameterError unless ``rule`` is ``"native"`` or a resize-and-crop rule (module docstring);
    ``where`` starts the message."""
    if rule == NATIVE:
        return
    if not isinstance(rule, dict) or set(rule) != {"resize", "crop", "interpolation"}:
        raise ParameterError(f"{where}: a rule is 'native' or {{'resize': R, 'crop': C, 'interpolation': "
                             f"{' | '.join(INTERPOLATIONS)}}}; got {rule!r}.")
    for key in ("resize", "crop"):
        if isinstance(rule[key], bool) or not isinstance(rule[key], int) or rule[key] < 1:
            raise ParameterError(f"{where}: {key} must be a whole number of pixels; got {rule[key]!r}.")
    if rule["crop"] > rule["resize"]:
        raise ParameterError(f"{where}: the crop ({rule['crop']}) cannot exceed the resized side ({rule['resize']}).")
    if rule["interpolation"] not in INTERPOLATIONS:
        raise ParameterError(f"{where}: interpolation must be one of {', '.join(INTERPOLATIONS)}; "
                             f"got {rule['interpolation']!r}.")


def resize_crop(images: torch.Tensor, rule: dict) -> torch.Tensor:
    """[0, 1] images (..., 3, H, W), shortest side resized to ``rule["resize"]`` (antialiased) and
    centre-cropped to ``rule["crop"]``: a resize-and-crop rule applied to tensors."""
    from torchvision.transforms import InterpolationMode  # imported where images are resized
    from torchvision.transforms import functional as TF

    resized = TF.resize(images, rule["resize"], interpolation=InterpolationMode(rule["interpolation"]),
                        antialias=True)
    return TF.center_crop(resized, rule["crop"]).clamp(0, 1)


class _Resized(Dataset):
    """The items of ``data`` with each image (the item's first element) passed through ``resize_crop``."""

    def __init__(self, data: Dataset, rule: dict):
        self.data, self.rule = data, rule

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        image, *rest = self.data[index]
        return resize_crop(image, self.rule), *rest


def _takes(build, name: str) -> bool:
    try:
        return name in inspect.signature(build).parameters
    except (TypeError, ValueError):
        return False


def preprocessed_dataset(spec, rule=NATIVE, *, split: str | None = None, image_size: int = 224,
                         download: bool = False):
    """Dataset ``spec`` (``name``, ``name:/root`` or a built LabelledImages/CaptionedImages) under ``rule``;
    its ``preprocess`` attribute is the rule.

    A spec is built from its ``split`` (``split`` and ``download`` as in ``dataset``), at ``image_size`` under
    ``"native"``. Under a resize-and-crop rule, a build function that takes ``preprocess`` applies it to
    the decoded image; any other dataset is built at ``rule["resize"]`` pixels, and a built one taken as
    it is, and its image tensors are resized and cropped (``resize_crop``).
    """
    check_preprocess_rule(rule)
    if isinstance(spec, str):
        build = get_host().get("dataset", parse_dataset_spec(spec)[0]).obj.build
        if rule == NATIVE:
            data = dataset(spec, split=split, image_size=image_size, download=download)
        elif _takes(build, "preprocess"):
            data = dataset(spec, split=split, image_size=image_size, download=download, preprocess=dict(rule))
        else:
            data = _resized_copy(dataset(spec, split=split, image_size=rule["resize"], download=download), rule)
    else:
        data = spec if rule == NATIVE else _resized_copy(spec, rule)
    data.preprocess = rule
    return data


def _resized_copy(data, rule: dict):
    """A copy of ``data`` (same name, class names, prompts) whose images are passed through ``resize_crop``."""
    if not isinstance(data, (LabelledImages, CaptionedImages)):
        raise ParameterError(f"cannot preprocess {getattr(data, 'name', type(data).__name__)}: a rule applies to "
                             f"LabelledImages and CaptionedImages.")
    resized = copy.copy(data)
    resized.data = _Resized(data, rule)
    return resized
