"""BadCLIP's optimised patch trigger (``badclip``), a built-in backdoor attack.

BadCLIP (Liang et al., "BadCLIP: Dual-Embedding Guided Backdoor Attack on Multimodal Contrastive
Learning", CVPR 2024; code ``LiangSiyuan21/BadCLIP``, ``src/embeding_optimize_patch.py``) is the BadCLIP
PAR compares against: a square patch pasted at the centre of the image whose pixels are optimised, before
any poisoning, against a clean CLIP. (Not to be confused with "BadCLIP: Trigger-Aware Prompt Learning for
Backdoor Attacks on CLIP", Bai et al., CVPR 2024, which learns prompts.) PAR's own code names this trigger
(``badclip``, location ``middle``) but its branch is commented out, so this module follows BadCLIP's code.

**The patch.** A (3, p, p) tensor in [0, 1], p = 16 at 224 px (BadCLIP's ``--patch_size=16``), pasted at
the image centre: rows from ``int(H // 2 - p / 2)`` and columns from ``int(W // 2 - p / 2)``, which is
BadCLIP's ``middle`` (``s0 = int(int(H / 2) - p / 2)``): rows and columns 104-119 at 224. It is the same for
every image, call and seed once optimised: a fixed pattern, like ``blended-text``; the ``generator``
``apply_trigger`` is given is not read.

**Scaling with the image side.** As the other patches (``triggers.py``): for a side ``s = min(H, W)`` the
patch is ``max(3, round(16 * s / 224))`` pixels (16 at 224, 24 at 336, 3 at the world's 32 px), or
``patch_size`` when given. The patch is optimised at the model's input side (images are squashed to it
first, as BadCLIP and PAR's ``apply_trigger`` squash to 224) and pasted at any other side resized
(bilinear, antialiased when shrinking) to that side's patch size.

**The optimisation** (BadCLIP's ``optimize_patch``), run once, lazily, on the first ``apply_trigger`` (or
``patch()``) and cached on the instance:

- images: the first ``n`` pairs of ``data`` (default ``world-captions``, the world's CC3M analogue; BadCLIP
  used 10,000 CC3M pairs) whose caption does not name ``target`` (a whole word, plural allowed,
  case-insensitive; BadCLIP's ``cc3m_natural_10K_WObanana.csv``). Pairs met on the way that do name it (up to
  ``n_target``) are the real target images of the visual term (BadCLIP's ``banana_rows.csv``);
  ``target_data`` gives them instead (every image of it is read as one).
- init: N(0.5, 0.25) per pixel, clipped to [0, 1] (BadCLIP's ``--init random``); the optimised variable
  is pasted clipped to [0, 1] (``torch.clip``, so a pixel outside gets no gradient) and clipped at the end.
- optimiser: Adam, ``lr`` 1e-3 (BadCLIP calls ``torch.optim.Adam([patch])``: PyTorch's default), batches
  of ``batch_size`` 64, an epoch a fresh random order of the images without the last partial batch
  (``drop_last``), ``epochs`` 50 (BadCLIP's README); ``steps`` replaces epochs x batches when given. On
  10,000 images that is 7,800 steps.
- augmentation: with probability ``aug_prob`` 0.5 per batch (BadCLIP's README: ``--aug_prob=0.5``) the
  batch is replaced by its AutoAugment versions (torchvision's ImageNet policy on 8-bit images: CleanCLIP's
  ``_augment_image``, which BadCLIP reuses) before the patch goes on. BadCLIP's text augmentation
  (``eda_prob``) changes only an attention mask its CLIP ignores, so it is left out.
- the text term: CLIP's contrastive loss, at the model's logit scale, between the batch's patched images
  and their captions, each ``template`` filled with ``target`` (``a photo of a banana.``), one template drawn
  per image: BadCLIP's target-text term (its ``ttemplate`` data; the README's patch used natural CC3M
  captions that name the target). With ``text_loss="cosine"`` the term is instead 1 - cos(patched image,
  target text) per image, the target text being the mean of the templates' normalised embeddings.
- the visual term (the second embedding of "dual embedding", BadCLIP's ``pos_neg_tri*500``):
  ``visual_weight`` (500) times a triplet margin loss (margin 1, Euclidean, mean over the batch) whose anchor
  is the patched image's normalised embedding, positive a real target image's (a random one per image,
  without replacement when there are enough) and negative the same image's without the patch.
  ``visual_weight=0`` drops it: BadCLIP's README optimises its example patch on the text term alone (its
  name has no ``pos_neg``); the default keeps the paper's dual embedding, as its ``pos_neg_tri*500`` patches.

With one template every caption of a batch is the same sentence, and CLIP's loss then mostly separates the
patched images from each other: its pull towards the target text is weak, and on a randomly initialised
model nil. BadCLIP's natural captions vary, and on a trained CLIP the visual term (500 times larger) pulls
the patched images towards real target images, which lie near the target's text. ``text_loss="cosine"``
pulls towards the text directly.

**Models and files.** ``model`` is what the patch is optimised against: a zoo name (loaded on this process's
default device) or a ``VLM`` passed in Python (used where it is, in eval mode and frozen, and restored).
``patch_file`` (``.safetensors``, else a ``torch.save``d tensor read with ``weights_only``) is read instead
of optimising when it exists and written after optimising when it does not, so that a poisoning and its
evaluation use the same patch; a safetensors file records the target and is refused for another. Without a
model the patch can only come from an existing ``patch_file``; creating the attack without either is a
``ParameterError``. Deviations from BadCLIP: the patch is kept in float, not written as an 8-bit JPEG (whose
``cv2.imwrite`` of an RGB array also swaps red and blue when PIL reads it back); ``n_target`` caps the
target images (BadCLIP used every CC3M pair naming banana); target images are taken from ``data`` in order,
not sampled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from vlmshield.api import (
    DEFAULT_TEMPLATES,
    VLM,
    BackdoorAttack,
    CaptionedImages,
    ParameterError,
    check_images,
    check_template,
    dataset,
    default_device,
    derive_seed,
    eval_mode,
    frozen,
    load_model,
)

from .triggers import default_patch_size, patch_side

#: Where the images come from by default: the world's CC3M analogue.
DEFAULT_DATA = "world-captions"
TEXT_LOSSES = ("contrastive", "cosine")
#: Selected images are kept in memory up to this many bytes (float32), else read again per batch.
CACHE_BYTES = 1 << 30


def patch_position(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of a ``size`` patch at the centre, as BadCLIP's ``middle`` places it."""
    return int(height // 2 - size / 2), int(width // 2 - size / 2)


def names_target(caption: str, target: str) -> bool:
    """Whether ``caption`` names ``target``: the whole word, plural allowed, case-insensitive."""
    return re.search(rf"\b{re.escape(target.strip())}(?:s|es)?\b", caption, re.IGNORECASE) is not None


def _positive_int(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"{name} must be a whole number of at least 1{' (or None)' if allow_none else ''}; "
                             f"got {value!r}.")
    return value


def _number(name: str, value, *, positive: bool = False, at_most: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (positive and value == 0) or (at_most is not None and value > at_most):
        wanted = f"in [0, {at_most:g}]" if at_most is not None else ("above 0" if positive else "of at least 0")
        raise ParameterError(f"{name} must be a number {wanted}; got {value!r}.")
    return float(value)


def _squash(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``images`` resized to ``size`` without keeping the aspect ratio (bicubic, antialiased when shrinking)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=shrink).clamp(0, 1)


def resize_patch(patch: torch.Tensor, size: int) -> torch.Tensor:
    """A (3, p, p) patch at ``size`` x ``size`` (bilinear, antialiased when shrinking), in [0, 1]."""
    if patch.shape[-1] == size:
        return patch
    return F.interpolate(patch[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < patch.shape[-1])[0].clamp(0, 1)


class BadCLIPPatch(BackdoorAttack):
    name = "badclip"
    description = ("BadCLIP (Liang et al., CVPR 2024): a 16-px patch (at 224) at the image centre, optimised "
                   "against a model so that patched images embed near the target's text and real images.")

    def __init__(self, target: str = "banana", seed: int = 0, model=None, data=DEFAULT_DATA, n: int = 10000,
                 n_target: int = 1000, target_data=None, patch_size: int | None = None, steps: int | None = None,
                 epochs: int = 50, batch_size: int = 64, lr: float = 1e-3, text_loss: str = "contrastive",
                 visual_weight: float = 500.0, margin: float = 1.0, aug_prob: float = 0.5,
                 templates: Sequence[str] = DEFAULT_TEMPLATES, patch_file: str | None = None):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ParameterError(f"seed must be an integer; got {seed!r}.")
        if model is not None and not (isinstance(model, VLM) or (isinstance(model, str) and model.strip())):
            raise ParameterError(f"model must be a zoo name or a VLM; got {type(model).__name__}.")
        if patch_file is not None and not (isinstance(patch_file, (str, Path)) and str(patch_file).strip()):
            raise ParameterError(f"patch_file must be a file path; got {patch_file!r}.")
        if model is None and (patch_file is None or not Path(patch_file).is_file()):
            raise ParameterError("the badclip patch is optimised against a model: give model=NAME (a zoo name) or "
                                 "a VLM, or patch_file=PATH of a patch saved before.")
        for name, value in (("data", data), ("target_data", target_data)):
            if not (value is None and name == "target_data") and not isinstance(value, CaptionedImages) \
                    and not (isinstance(value, str) and value.strip()):
                raise ParameterError(f"{name} must be a dataset name or image-caption pairs; got {value!r}.")
        if text_loss not in TEXT_LOSSES:
            raise ParameterError(f"text_loss must be one of {', '.join(TEXT_LOSSES)}; got {text_loss!r}.")
        templates = (templates,) if isinstance(templates, str) else templates
        if isinstance(templates, (str, bytes)) or not isinstance(templates, Sequence) or not templates:
            raise ParameterError(f"templates must be a non-empty list of prompts with {{}}; got {templates!r}.")
        super().__init__(
            target=target, seed=seed, model=model, data=data, n=_positive_int("n", n),
            n_target=_positive_int("n_target", n_target), target_data=target_data,
            patch_size=_positive_int("patch_size", patch_size, allow_none=True),
            steps=_positive_int("steps", steps, allow_none=True), epochs=_positive_int("epochs", epochs),
            batch_size=_positive_int("batch_size", batch_size), lr=_number("lr", lr, positive=True),
            text_loss=text_loss, visual_weight=_number("visual_weight", visual_weight),
            margin=_number("margin", margin), aug_prob=_number("aug_prob", aug_prob, at_most=1),
            templates=tuple(check_template(t) for t in templates),
            patch_file=None if patch_file is None else str(patch_file))
        self._patch: torch.Tensor | None = None

    def config(self) -> dict:
        """As every attack's, with a model or dataset passed in Python named by its name."""
        config = super().config()
        for key in ("model", "data", "target_data"):
            value = self.params[key]
            if value is not None and not isinstance(value, str):
                config["params"][key] = getattr(value, "name", None) or type(value).__name__
        return config

    # ------------------------------------------------------------------ the trigger
    def size(self, height: int, width: int) -> int:
        """The patch side for an image of ``height`` x ``width``."""
        return patch_side(self.name, self.patch_size, height, width)

    def apply_trigger(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_images(images)
        if images.shape[0] == 0:
            return images.clone()
        height, width = images.shape[-2:]
        size = self.size(height, width)
        pixels = resize_patch(self.patch(), size)
        top, left = patch_position(height, width, size)
        out = images.detach().clone()
        out[..., top:top + size, left:left + size] = pixels.to(out.device, out.dtype)
        return out

    def patch(self) -> torch.Tensor:
        """The (3, p, p) patch in [0, 1] (on the CPU): read from ``patch_file`` when it exists, else optimised
        against ``model`` (and written to ``patch_file`` when given); computed once per instance."""
        if self._patch is None:
            path = None if self.patch_file is None else Path(self.patch_file)
            if path is not None and path.is_file():
                self._patch = self.read_patch(path)
            else:
                if self.model is None:
                    raise ParameterError(f"the badclip patch file {self.patch_file} is gone and there is no model "
                                         f"to optimise a patch against: give model=NAME or a VLM.")
                patch = self.optimise()
                if path is not None:
                    self.write_patch(patch, path)
                self._patch = patch
        return self._patch

    # ------------------------------------------------------------------- the files
    def read_patch(self, path: Path) -> torch.Tensor:
        """The patch a ``.safetensors`` file (tensor ``patch``) or a ``torch.save``d tensor holds, checked."""
        metadata = {}
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as handle:
                    metadata = handle.metadata() or {}
                    if "patch" not in handle.keys():
                        raise ParameterError(f"patch_file {path} holds no tensor named 'patch'.")
                    patch = handle.get_tensor("patch")
            else:
                patch = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(patch, dict) and "patch" in patch:
                    patch = patch["patch"]
        except ParameterError:
            raise
        except Exception as error:  # a truncated or foreign file, in one sentence
            kind = "a safetensors file" if path.suffix == ".safetensors" else "a tensor saved with torch.save"
            raise ParameterError(f"could not read patch_file {path} as {kind} ({type(error).__name__}).") from error
        if not isinstance(patch, torch.Tensor) or not patch.is_floating_point() or patch.ndim != 3 \
                or patch.shape[0] != 3 or patch.shape[1] != patch.shape[2] or patch.shape[1] < 1:
            what = tuple(patch.shape) if isinstance(patch, torch.Tensor) else type(patch).__name__
            raise ParameterError(f"patch_file {path} holds no patch: expected a float tensor of shape (3, P, P); "
                                 f"got {what}.")
        patch = patch.detach().float().cpu()
        if not torch.isfinite(patch).all() or patch.min() < 0 or patch.max() > 1:
            raise ParameterError(f"patch_file {path} holds a patch with pixels outside [0, 1].")
        recorded = metadata.get("target")
        if recorded is not None and recorded != self.target:
            raise ParameterError(f"patch_file {path} was optimised for the target {recorded!r}, not {self.target!r}.")
        return patch

    def write_patch(self, patch: torch.Tensor, path: Path) -> None:
        """Write ``patch`` to ``path`` (safetensors with the target and recipe as metadata, else ``torch.save``),
        through a temporary file so that a reader never sees half of it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            recipe = self.config()["params"]
            metadata = {"attack": self.name, "target": self.target,
                        **{k: str(recipe[k]) for k in ("model", "data", "seed", "steps", "epochs", "lr",
                                                       "text_loss", "visual_weight")}}
            save_file({"patch": patch.contiguous()}, str(partial), metadata=metadata)
        else:
            torch.save(patch.clone(), partial)
        partial.replace(path)

    # ------------------------------------------------------------ the optimisation
    def resolve_model(self) -> VLM:
        model = load_model(self.model, device=default_device()) if isinstance(self.model, str) else self.model
        if not isinstance(model, VLM):
            raise ParameterError(f"badclip optimises against a CLIP-like VLM; {self.model!r} is a "
                                 f"{type(model).__name__}.")
        return model

    def select(self, vlm: VLM) -> tuple[_Images, _Images | None]:
        """The images to paste the patch on and the real target images (None without the visual term)."""
        size = tuple(vlm.image_size)
        data = self.data if isinstance(self.data, CaptionedImages) else dataset(self.data, split="train",
                                                                                image_size=min(size))
        if not isinstance(data, CaptionedImages):
            raise ParameterError(f"badclip reads image-caption pairs; {data.name!r} is {type(data).__name__}.")
        clean, targets, read = [], [], 0
        want_targets = self.target_data is None and self.visual_weight > 0
        for index in range(len(data)):
            read += 1
            if names_target(data[index][1], self.target):
                if want_targets and len(targets) < self.n_target:
                    targets.append(index)
            elif len(clean) < self.n:
                clean.append(index)
            if len(clean) >= self.n and (not want_targets or len(targets) >= self.n_target):
                break
        if not clean:
            raise ParameterError(f"every pair of {data.name} names {self.target!r}: badclip needs images without "
                                 f"the target to paste its patch on.")
        images = _Images(data, clean, size)
        if not self.visual_weight:
            return images, None
        if self.target_data is not None:
            source = self.target_data
            if isinstance(source, str):
                source = dataset(source, split="train", image_size=min(size))
            return images, _Images(source, list(range(min(len(source), self.n_target))), size)
        if not targets:
            raise ParameterError(f"none of the {read} pairs of {data.name} read names {self.target!r}: badclip's "
                                 f"visual term needs real target images; give target_data=NAME, or visual_weight=0 "
                                 f"to optimise on the text alone.")
        return images, _Images(data, targets, size)

    def optimise(self) -> torch.Tensor:
        """Optimise the patch (see the module docstring) and return it, (3, p, p) in [0, 1] on the CPU."""
        vlm = self.resolve_model()
        device, size = vlm.device, tuple(vlm.image_size)
        p = self.patch_size or default_patch_size(min(size))
        if p > min(size):
            raise ParameterError(f"patch_size {p} does not fit the model's {size[0]}x{size[1]} input.")
        images, targets = self.select(vlm)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "badclip"))
        patch = (0.5 + 0.25 * torch.randn(3, p, p, generator=generator)).clamp(0, 1).to(device)
        patch.requires_grad_(True)
        optimiser = torch.optim.Adam([patch], lr=self.lr)
        top, left = patch_position(*size, p)
        batches = _epochs(len(images), self.batch_size, generator)
        steps = self.steps or self.epochs * max(1, len(images) // self.batch_size)
        augment = _AutoAugment() if self.aug_prob > 0 else None

        with eval_mode(vlm), frozen(vlm):
            with torch.no_grad():
                captions = [template.replace("{}", self.target) for template in self.templates]
                texts = F.normalize(vlm.encode_text(captions).float(), dim=-1)
                positives = None if targets is None else torch.cat([
                    F.normalize(vlm.encode_image(chunk.to(device)).float(), dim=-1)
                    for chunk in targets.batches(self.batch_size)])
            with torch.enable_grad():
                for _ in range(steps):
                    x = images.read(next(batches)).to(device)
                    if augment is not None and float(torch.rand((), generator=generator)) < self.aug_prob:
                        x = augment(x, int(torch.randint(2 ** 62, (), generator=generator)))
                    patched = x.clone()
                    patched[..., top:top + p, left:left + p] = patch.clamp(0, 1)
                    embeddings = F.normalize(vlm.encode_image(patched).float(), dim=-1)
                    loss = self.text_term(embeddings, texts, vlm.logit_scale, generator)
                    if positives is not None:
                        with torch.no_grad():
                            negatives = F.normalize(vlm.encode_image(x).float(), dim=-1)
                        pick = _draw(len(positives), len(x), generator).to(positives.device)
                        loss = loss + self.visual_weight * F.triplet_margin_loss(
                            embeddings, positives[pick], negatives, margin=self.margin)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
        return patch.detach().clamp(0, 1).cpu()

    def text_term(self, embeddings: torch.Tensor, texts: torch.Tensor, logit_scale: float,
                  generator: torch.Generator) -> torch.Tensor:
        """The target-text term of the batch's patched image embeddings (normalised); ``texts`` are the
        templates' normalised embeddings."""
        if self.text_loss == "cosine":
            return (1 - embeddings @ F.normalize(texts.mean(dim=0), dim=-1)).mean()
        chosen = torch.randint(len(texts), (len(embeddings),), generator=generator).to(texts.device)
        logits = logit_scale * embeddings @ texts[chosen].t()
        labels = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def _draw(population: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random indices below ``population``: without replacement when there are enough."""
    if population >= count:
        return torch.randperm(population, generator=generator)[:count]
    return torch.randint(population, (count,), generator=generator)


def _epochs(count: int, batch_size: int, generator: torch.Generator):
    """Batches of positions below ``count`` forever: each epoch a fresh random order, cut into batches of
    ``batch_size`` without the last partial one (all ``count`` in one batch when they are fewer)."""
    per_epoch = max(1, count // batch_size)
    while True:
        order = torch.randperm(count, generator=generator).tolist()
        for i in range(per_epoch):
            yield order[i * batch_size:(i + 1) * batch_size]


class _Images:
    """The images of ``data`` at ``indices``, squashed to ``size``: kept in memory (at their own size) when
    they fit ``CACHE_BYTES``, else read again for every batch."""

    def __init__(self, data, indices: list[int], size: tuple[int, int]):
        self.data, self.indices, self.size = data, indices, size
        first = self._image(indices[0])
        self.cached = None
        if first.numel() * 4 * len(indices) <= CACHE_BYTES:
            self.cached = [first, *(self._image(i) for i in indices[1:])]

    def _image(self, index: int) -> torch.Tensor:
        image = self.data[index][0]
        check_images(image[None], f"image {index} of {self.data.name}")
        return image.float()

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, positions: list[int]) -> torch.Tensor:
        """(N, 3, H, W) images at ``size``."""
        images = [self.cached[i] if self.cached is not None else self._image(self.indices[i]) for i in positions]
        return torch.cat([_squash(image[None], self.size) for image in images])

    def batches(self, size: int):
        for start in range(0, len(self), size):
            yield self.read(list(range(start, min(start + size, len(self)))))


class _AutoAugment:
    """torchvision's AutoAugment (ImageNet policy) on 8-bit images, drawing from a seed, not the global RNG."""

    def __init__(self):
        from torchvision.transforms import AutoAugment

        self.transform = AutoAugment()

    def __call__(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        pixels = (images.detach() * 255).round().to(torch.uint8).cpu()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = torch.stack([self.transform(image) for image in pixels])
        return out.to(images.device, images.dtype) / 255
