"""VLM: an open_clip model in pixel space, and the zero-shot classifier built from it.

Every image a VLM sees is a float batch in [0, 1], NCHW, at whatever resolution the data has; the
resize to the model's input size and the mean/std normalization happen inside. So an eps of 4/255
means 4/255 on the pixels the user has, for every model and every attack.

open_clip is imported where a model is built or its registry read, not with this module: the command
line's listings and a plugin's registrations do not pay for it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError, ParameterError, UnknownNameError, VlmshieldError, did_you_mean, error_summary

#: How far outside [0, 1] an input may stray (float round-off) before it is rejected.
RANGE_TOLERANCE = 1e-5

DEFAULT_TEMPLATES = ("a photo of a {}.",)


def check_images(x: object, what: str = "images") -> torch.Tensor:
    """Raise InputError unless ``x`` is a float batch (N, 3, H, W) with values in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what} must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(
            f"{what} must be a batch of RGB images of shape (N, 3, H, W); got shape {tuple(x.shape)}."
        )
    if not x.is_floating_point():
        raise InputError(
            f"{what} must be floating point in [0, 1]; got dtype {x.dtype} (divide uint8 images by 255)."
        )
    if x.numel():
        low, high = torch.aminmax(x.detach())
        if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise InputError(
                f"{what} must lie in [0, 1] (unnormalized pixels; the model normalizes inside); "
                f"got values in [{low.item():.3g}, {high.item():.3g}]."
            )
    return x


@contextmanager
def eval_mode(module: object) -> Iterator[None]:
    """Put every submodule in eval mode for the duration, then restore each one's own flag."""
    if not isinstance(module, nn.Module):
        yield
        return
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


@contextmanager
def frozen(module: object) -> Iterator[None]:
    """Stop gradients to the parameters for the duration (attacks need input gradients only)."""
    if not isinstance(module, nn.Module):
        yield
        return
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy in eval mode with no parameter requiring gradients: a reference that never trains."""
    copied = copy.deepcopy(module).eval()
    for parameter in copied.parameters():
        parameter.requires_grad_(False)
    return copied


def declared_quick_gelu(arch: str, pretrained: str | None) -> bool | None:
    """Whether open_clip's pretrained config of ``arch`` and the tag ``pretrained`` declares QuickGELU, the
    activation OpenAI's CLIP weights (and a few others) were trained with; None when open_clip knows no such tag."""
    if not pretrained:
        return None
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    return bool(cfg.get("quick_gelu", False)) if cfg else None


#: The error open_clip logs just before raising what ``from_open_clip`` reports in its own sentence.
_REWORDED_LOG = "Failed to download weights for tag "


class _DropRewordedLog(logging.Filter):
    """Drops open_clip's log of a failed weight download (and nothing else): the error raised after it says
    the same, and ``from_open_clip`` turns that into one sentence."""

    def __init__(self):
        super().__init__()
        import open_clip

        self.open_clip_dir = Path(open_clip.__file__).resolve().parent

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.getMessage().startswith(_REWORDED_LOG)
                    and Path(record.pathname).resolve().parent == self.open_clip_dir)


@contextmanager
def _without_reworded_log() -> Iterator[None]:
    """For the duration, filter that one message out of the root logger, which open_clip logs through."""
    logger, drop = logging.getLogger(), _DropRewordedLog()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _fill(template: str, classname: str) -> str:
    return template.replace("{c}", classname) if "{c}" in template else template.format(classname)


def _fixed_positions_as_buffers(model: nn.Module) -> None:
    """open_clip keeps a fixed (sin-cos) position embedding as a parameter that does not require gradients;
    as a buffer (same state-dict key) no optimizer or fine-tuning method can train it."""
    for module in model.modules():
        positions = module._parameters.get("positional_embedding")
        if positions is not None and not positions.requires_grad:
            del module._parameters["positional_embedding"]
            module.register_buffer("positional_embedding", positions.detach())


class VLM(nn.Module):
    """A CLIP-like model taking [0, 1] images; wraps an open_clip model, its tokenizer and preprocessing.

    ``vlm.model`` is the open_clip model itself (normalized inputs, as open_clip expects).
    ``vlm(images)`` and ``vlm.encode_image(images)`` take [0, 1] pixels.
    """

    def __init__(self, model: nn.Module, tokenizer, preprocess_cfg: dict | None = None, *,
                 name: str | None = None, model_cfg: dict | None = None):
        super().__init__()
        import open_clip

        _fixed_positions_as_buffers(model)
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.model_cfg = model_cfg
        # open_clip's own default (OpenAI's mean and std) for a model built without a preprocessing config
        cfg = {"mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD,
               **open_clip.get_model_preprocess_cfg(model), **(preprocess_cfg or {})}
        size = cfg.get("size", 224)
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self.interpolation: str = cfg.get("interpolation", "bicubic")
        self.resize_mode: str = cfg.get("resize_mode", "shortest")
        self.register_buffer("pixel_mean", torch.tensor(cfg["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg["std"]).view(1, -1, 1, 1), persistent=False)
        self._text_cache: dict[tuple, torch.Tensor] = {}

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_open_clip(cls, arch: str, pretrained: str | None = None, *, quick_gelu: bool | None = None,
                       device=None, cache_dir: str | None = None, name: str | None = None) -> VLM:
        """Build an open_clip architecture; random init when ``pretrained`` is None (no download).

        The activation is the one the weights were trained with: QuickGELU where the architecture's config
        or open_clip's pretrained config of the tag declares it (every ``openai`` tag), nn.GELU otherwise.
        ``quick_gelu`` chooses it instead, so that random weights can be built as a tag's model is
        (``quick_gelu=declared_quick_gelu(arch, tag)``). The model config kept on the VLM records it, so a
        folder written by ``zoo.save`` reloads with the same activation (here and in plain open_clip).
        """
        import open_clip

        if arch not in open_clip.list_models():
            raise UnknownNameError(
                f"unknown open_clip architecture {arch!r}.{did_you_mean(arch, open_clip.list_models())}"
            )
        model_cfg = open_clip.get_model_config(arch)
        if quick_gelu is None:
            quick_gelu = bool(model_cfg.get("quick_gelu")) or bool(declared_quick_gelu(arch, pretrained))
        if quick_gelu:
            activation = {"force_quick_gelu": True}
            model_cfg["quick_gelu"] = True
        else:  # a "-quickgelu" architecture asked for nn.GELU: override its config
            activation = {"quick_gelu": False} if model_cfg.pop("quick_gelu", False) else {}
        try:
            with _without_reworded_log():
                model = open_clip.create_model(arch, pretrained=pretrained, device=device or "cpu",
                                               cache_dir=cache_dir, **activation)
        except VlmshieldError:
            raise
        except Exception as error:  # a download or file problem, reported in one sentence
            raise VlmshieldError(
                f"could not load the {pretrained!r} weights of {arch}: {error_summary(error)} (without "
                f"network access, build it with random weights instead: weights=False / --no-weights)."
            ) from error
        return cls(model, open_clip.get_tokenizer(arch), name=name or arch, model_cfg=model_cfg)

    @classmethod
    def from_config(cls, model_cfg: dict, *, preprocess_cfg: dict | None = None, tokenizer=None,
                    name: str | None = None) -> VLM:
        """Build a randomly initialised model from an open_clip model config (a dict as in open_clip's JSON)."""
        import open_clip

        model = cls.open_clip_model(model_cfg)
        if tokenizer is None:
            context_length = model_cfg.get("text_cfg", {}).get("context_length", 77)
            tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
        return cls(model, tokenizer, preprocess_cfg, name=name, model_cfg=dict(model_cfg))

    @staticmethod
    def open_clip_model(model_cfg: dict) -> nn.Module:
        """The open_clip model (randomly initialised) of a model config: a CLIP, or a CustomTextCLIP where the
        config says so or names a Hugging Face text tower. Built under ``torch.device("meta")``, it allocates
        nothing."""
        import open_clip

        cfg = dict(model_cfg)
        custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
        return (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**cfg)

    def preprocess_cfg(self) -> dict:
        """The preprocessing as open_clip's ``preprocess_cfg`` holds it: mean, std, size, interpolation, resize mode."""
        return {"mean": self.pixel_mean.flatten().tolist(), "std": self.pixel_std.flatten().tolist(),
                "size": list(self.image_size), "interpolation": self.interpolation, "resize_mode": self.resize_mode}

    # ------------------------------------------------------------------- encoders
    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def logit_scale(self) -> float:
        """The model's own logit scale, exp(model.logit_scale) (100 for OpenAI CLIP)."""
        return float(self.model.logit_scale.detach().exp())

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels at any size -> the normalized input of the open_clip model."""
        check_images(images)
        return (self._resize(images) - self.pixel_mean) / self.pixel_std

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.image_size
        h, w = x.shape[-2:]
        if (h, w) == (height, width):
            return x
        if self.resize_mode == "squash":
            new_h, new_w = height, width
        else:  # "shortest" (open_clip's default): scale the short side, then centre-crop
            scale = max(height / h, width / w)
            new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode=self.interpolation, align_corners=False,
                          antialias=new_h < h or new_w < w)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        return x[..., top:top + height, left:left + width]

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.model.encode_image(self.preprocess(images))
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings (not normalized) of [0, 1] images."""
        return self.encode_image(images)

    def encode_text(self, texts: Sequence[str], normalize: bool = False) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        features = self.model.encode_text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    # ------------------------------------------------------------------- zero-shot
    def zero_shot(self, classnames: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES, *,
                  logit_scale: float | None = None) -> ZeroShotClassifier:
        """A classifier over ``classnames``: [0, 1] images -> logit_scale * cosine(image, class text).

        A class's text embedding is the mean of its normalized template embeddings, renormalized (as
        in CLIP). It is computed once per (classnames, templates) and cached until the text tower changes.
        """
        classnames, templates = list(classnames), list(templates)
        if len(classnames) < 2 or not all(isinstance(c, str) for c in classnames):
            raise ParameterError(
                f"a zero-shot classifier needs at least 2 class names (strings); got {classnames!r}."
            )
        if not templates or not all(isinstance(t, str) and ("{}" in t or "{c}" in t) for t in templates):
            raise ParameterError(
                f"templates must be strings with a '{{}}' placeholder for the class name; got {templates!r}."
            )
        scale = self.logit_scale if logit_scale is None else float(logit_scale)
        return ZeroShotClassifier(self, self.class_embeddings(classnames, templates), scale,
                                  classnames, templates)

    def class_embeddings(self, classnames: list[str], templates: list[str]) -> torch.Tensor:
        """(C, D) unit-norm text embeddings of the classes, from the cache when the text tower is unchanged."""
        text_params = [p for n, p in self.model.named_parameters()
                       if not n.startswith("visual.") and not n.startswith("logit_")]
        state = tuple((id(p), p._version) for p in text_params)
        key = (tuple(classnames), tuple(templates), str(self.device), self.pixel_mean.dtype, state)
        cached = self._text_cache.get(key)
        if cached is None:
            self._text_cache = {k: v for k, v in self._text_cache.items() if k[-1] == state}
            texts = [_fill(t, c) for c in classnames for t in templates]
            with torch.no_grad(), eval_mode(self):
                chunks = [self.encode_text(texts[i:i + 256], normalize=True) for i in range(0, len(texts), 256)]
            per_template = torch.cat(chunks).view(len(classnames), len(templates), -1)
            cached = F.normalize(per_template.mean(dim=1), dim=-1)
            self._text_cache[key] = cached
        return cached


class ZeroShotClassifier(nn.Module):
    """[0, 1] images -> logits = logit_scale * cosine(image embedding, class text embedding)."""

    def __init__(self, vlm: VLM, class_embeddings: torch.Tensor, logit_scale: float,
                 classnames: list[str], templates: list[str]):
        super().__init__()
        self.vlm = vlm
        self.register_buffer("class_embeddings", class_embeddings)
        self.logit_scale = float(logit_scale)
        self.classnames = classnames
        self.templates = templates

    @property
    def num_classes(self) -> int:
        return self.class_embeddings.shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.vlm.encode_image(images, normalize=True)
        return self.logit_scale * features @ self.class_embeddings.to(features.dtype).t()
