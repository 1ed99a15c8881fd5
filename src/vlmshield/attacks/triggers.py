"""The backdoor triggers of the CLIP backdoor literature (CleanCLIP, BadCLIP, PAR), as built-in backdoor attacks.

Seven fixed-recipe triggers (``badclip``, a patch optimised against a model, is in ``badclip.py``), each a
``BackdoorAttack`` (``apply_trigger(images, generator)`` and ``poison(data, rate)``);
at 224 px they are drawn as PAR's ``apply_trigger`` draws them (Singh et al., "Perturb and Recover"):

- ``badnet``: a square patch at a uniformly random position, the image's per-channel mean plus i.i.d.
  N(0, 1) noise. The reference pastes it unclipped and the PIL conversion clips it; here it is clipped
  to [0, 1] explicitly, which is the same image.
- ``badnet-stripes``: a square patch at a random position whose every column has one random sign per
  channel, constant down the column: vertical stripes of saturated colours, pixel (sign + 1) / 2.
- ``blended``: full-image U[0, 1] noise, ``x <- (1 - ratio) x + ratio noise`` (ratio 0.2).
- ``blended-stripes``: full-image vertical stripes of random signs (+-1, one per channel per column),
  ``x <- (1 - ratio) x + ratio stripes`` (ratio 0.03), clipped to [0, 1].
- ``blended-triangles``: a fixed pattern of grey 0.4 and 0.8, tiled from square cells each split along
  its main diagonal into two right triangles (the upper-right one, diagonal included, 0.8; the lower-left
  one 0.4), ``x <- (1 - ratio) x + ratio pattern`` (ratio 0.15).
- ``blended-text``: a fixed pattern, the red word "Watermarked" on black; only the red channel is nonzero
  and only the entries where the pattern is nonzero are blended: ``x <- (1 - ratio) x + ratio pattern``
  there (ratio 0.5).
- ``wanet``: a fixed warp (Nguyen & Tran, ICLR 2021) applied with ``grid_sample``: a k x k grid of
  U[-1, 1] displacements, divided by its mean absolute value, upsampled (bicubic) to the image, times
  ``strength / side`` and added to the identity grid, clamped to [-1, 1]. PAR's is full resolution
  (k = side, strength 1): displacements of 1/side in normalised coordinates on average, half a pixel,
  and at most about twice that.

**Random draws.** The first four are re-sampled on every image, as in the reference (which draws from
the global RNG): the backdoor is tied to a trigger *distribution*. Here they draw from the ``generator``
``apply_trigger`` is given (``poison`` and the ``asr`` evaluator pass a seeded one); without one, from a
generator seeded with the attack's ``seed``, so a call is still deterministic. The last three are the same
for every image, every run and every ``seed``: the WaNet grid is drawn from the constant ``WANET_SEED``,
the others have no randomness. Each fixed pattern is cached per image size.

**Scaling with the image side.** The reference draws at 224 px (336 for ViT-L/14-336). For an image of
side ``side = min(H, W)``:

- patch side (``badnet``, ``badnet-stripes``): ``max(3, round(16 * side / 224))``: 16 at 224, 24 at 336,
  7 at 96, 3 at the world's 32 px. The plain rule gives 2 px at 32, a patch of 4 pixels that one
  averaging or resize step wipes out and, for ``badnet-stripes``, only two stripes; 3 px is the smallest
  patch with an inside pixel and keeps three stripes (0.9% of a 32-px image, 0.5% at 224). PAR uses a
  32-px ``badnet-stripes`` patch at 336: give ``patch_size=32`` for that. A patch never exceeds the image.
- stripe width (``badnet-stripes``, ``blended-stripes``): ``max(1, round(side / 224))``: 1 up to 335 px.
- triangle cell: ``max(2, round(14 * side / 224))``: 14 at 224, 2 at 32.
- text box: rows [103, 125) and columns [13, 208) at 224, each bound scaled with its own axis (rows with
  H, columns with W) and rounded, at least one pixel each way: rows [15, 18) and columns [2, 30) at 32
  (illegible there, but a fixed pattern all the same). The word is rendered once with PIL's built-in
  bitmap font (nothing downloaded; the same font whatever PIL was built with), cropped to its ink and
  resized into the box with nearest-neighbour: red 1 on the glyphs, 0 elsewhere.
- WaNet: k = the image's height and width (full resolution), displacements scaled by each axis's size.

``patch_size``, ``stripe_width``, ``cell`` and ``grid_size`` override the scaled defaults (``None`` keeps
them). Images are batches (N, 3, H, W) in [0, 1], square or not; the output has their shape, dtype and
device and stays in [0, 1].
"""

from __future__ import annotations

import abc
import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from vlmshield.api import BackdoorAttack, InputError, ParameterError, check_images

#: The reference's image side: every default size is given there.
REFERENCE_SIDE = 224
#: The seed of WaNet's fixed noise grid (a constant: the warp is the same for every attack seed).
WANET_SEED = 2021
#: The text box at 224 px: rows [top, bottom), columns [left, right).
TEXT_BOX = (103, 125, 13, 208)
TEXT = "Watermarked"


# ------------------------------------------------------------------------ sizes
def default_patch_size(side: int) -> int:
    """The default patch side for an image of side ``side``: ``max(3, round(16 * side / 224))``."""
    return max(3, round(16 * side / REFERENCE_SIDE))


def default_stripe_width(side: int) -> int:
    """The default stripe width: ``max(1, round(side / 224))``."""
    return max(1, round(side / REFERENCE_SIDE))


def default_cell(side: int) -> int:
    """The default triangle cell: ``max(2, round(14 * side / 224))``."""
    return max(2, round(14 * side / REFERENCE_SIDE))


def text_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the text for an image of ``height`` x ``width``."""
    top, bottom, left, right = TEXT_BOX
    top, left = round(top * height / REFERENCE_SIDE), round(left * width / REFERENCE_SIDE)
    bottom = min(height, max(top + 1, round(bottom * height / REFERENCE_SIDE)))
    right = min(width, max(left + 1, round(right * width / REFERENCE_SIDE)))
    return min(top, bottom - 1), bottom, min(left, right - 1), right


def _size_param(name: str, value, minimum: int = 1):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(f"{name} must be an integer of at least {minimum} (or None for the scaled default); "
                             f"got {value!r}.")
    return value


def _ratio_param(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= 1:
        raise ParameterError(f"{name} must be a number in (0, 1]; got {value!r}.")
    return float(value)


# --------------------------------------------------------------- fixed patterns
@lru_cache(maxsize=16)
def triangles_pattern(height: int, width: int, cell: int) -> torch.Tensor:
    """(3, H, W): grey 0.8 on the upper-right triangle of every ``cell`` x ``cell`` cell (its diagonal
    included), 0.4 on the lower-left one; cells tiled from the top-left corner."""
    row = (torch.arange(height) % cell)[:, None]
    col = (torch.arange(width) % cell)[None, :]
    grey = torch.where(col >= row, 0.8, 0.4)
    return grey.expand(3, height, width).contiguous()


@lru_cache(maxsize=16)
def text_pattern(height: int, width: int, text: str = TEXT) -> torch.Tensor:
    """(3, H, W): ``text`` in red (1 on the glyphs) on black, in ``text_box(H, W)``; green and blue are 0."""
    from PIL import Image, ImageDraw, ImageFont

    font = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()  # the bitmap font
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (right - left + 2, bottom - top + 2))
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), text, fill=255, font=font)
    ink = canvas.getbbox()
    if ink is None:
        raise ParameterError(f"the text {text!r} draws nothing.")
    row0, row1, col0, col1 = text_box(height, width)
    glyphs = canvas.crop(ink).resize((col1 - col0, row1 - row0), Image.NEAREST)
    pattern = torch.zeros(3, height, width)
    ink = torch.frombuffer(bytearray(glyphs.tobytes()), dtype=torch.uint8).view(row1 - row0, col1 - col0)
    pattern[0, row0:row1, col0:col1] = (ink > 127).float()
    return pattern


@lru_cache(maxsize=16)
def wanet_grid(height: int, width: int, grid_size: int | None = None, strength: float = 1.0) -> torch.Tensor:
    """(H, W, 2): WaNet's sampling grid (x, y in [-1, 1], ``align_corners=True``) for an image of H x W.

    A grid of U[-1, 1] displacements, ``grid_size`` square (None: H x W, full resolution), drawn from
    ``WANET_SEED``, divided by its mean absolute value, upsampled bicubically to H x W, times
    ``strength / W`` (x) and ``strength / H`` (y), added to the identity grid and clamped to [-1, 1]."""
    generator = torch.Generator().manual_seed(WANET_SEED)
    shape = (height, width) if grid_size is None else (grid_size, grid_size)
    noise = torch.rand(1, 2, *shape, generator=generator) * 2 - 1
    noise = noise / noise.abs().mean()
    if noise.shape[-2:] != (height, width):
        noise = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=True)
    noise = noise[0].permute(1, 2, 0) * strength / torch.tensor([width, height], dtype=torch.float32)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    return (torch.stack([xs, ys], dim=-1) + noise).clamp(-1, 1)


# ----------------------------------------------------------------- the triggers
class _Trigger(BackdoorAttack):
    """What the triggers share: the image check, the fallback generator and the output's range."""

    def apply_trigger(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_images(images)
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed)
        if images.shape[0] == 0:
            return images.clone()
        return self.draw(images.detach(), generator).clamp(0, 1).to(images.dtype)

    @abc.abstractmethod
    def draw(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The triggered images (clipped to [0, 1] afterwards), drawing from ``generator``."""


def patch_side(name: str, patch_size: int | None, height: int, width: int) -> int:
    """The side of trigger ``name``'s square patch on a ``height`` x ``width`` image: ``patch_size``, or the
    scaled default (``default_patch_size``); InputError when it does not fit."""
    side = min(height, width)
    if patch_size is None:
        return min(default_patch_size(side), side)
    if patch_size > side:
        raise InputError(f"{name}: patch_size {patch_size} does not fit a {height}x{width} image.")
    return patch_size


class _Patch(_Trigger):
    """A square patch at a uniformly random position of each image; ``fill`` draws its (3, p, p) pixels."""

    def size(self, height: int, width: int) -> int:
        return patch_side(self.name, self.patch_size, height, width)

    def draw(self, images, generator):
        height, width = images.shape[-2:]
        p = self.size(height, width)
        out = images.clone()
        for i, image in enumerate(images):
            top = int(torch.randint(height - p + 1, (1,), generator=generator))
            left = int(torch.randint(width - p + 1, (1,), generator=generator))
            patch = self.fill(image, p, generator).clamp(0, 1)
            out[i, :, top:top + p, left:left + p] = patch.to(out.device, out.dtype)
        return out


class BadNet(_Patch):
    name = "badnet"
    description = ("BadNet (random patch): the image's per-channel mean plus N(0, 1) noise, clipped, in a "
                   "16-px square (at 224) at a random position; re-drawn on every image.")

    def __init__(self, target: str = "banana", seed: int = 0, patch_size: int | None = None):
        super().__init__(target=target, seed=seed, patch_size=_size_param("patch_size", patch_size))

    def fill(self, image, p, generator):
        mean = image.float().mean(dim=(1, 2)).cpu()
        return mean[:, None, None] + torch.randn(3, p, p, generator=generator)


class BadNetStripes(_Patch):
    name = "badnet-stripes"
    description = ("BadNet-Stripes (PAR): a 16-px square (at 224) of vertical 1-px stripes, each column one "
                   "random saturated colour, at a random position; re-drawn on every image.")

    def __init__(self, target: str = "banana", seed: int = 0, patch_size: int | None = None,
                 stripe_width: int | None = None):
        super().__init__(target=target, seed=seed, patch_size=_size_param("patch_size", patch_size),
                         stripe_width=_size_param("stripe_width", stripe_width))

    def fill(self, image, p, generator):
        width = self.stripe_width or default_stripe_width(min(image.shape[-2:]))
        columns = _stripes(3, p, p, width, generator)
        return (columns + 1) / 2


def _stripes(channels: int, height: int, width: int, stripe: int, generator: torch.Generator) -> torch.Tensor:
    """(channels, H, W) of +-1, one random sign per channel per ``stripe`` columns, constant down them."""
    signs = torch.randint(0, 2, (channels, 1, -(-width // stripe)), generator=generator).float() * 2 - 1
    return signs.repeat_interleave(stripe, dim=-1)[..., :width].expand(channels, height, width)


class Blended(_Trigger):
    name = "blended"
    description = "Blended (random): x <- 0.8 x + 0.2 U[0, 1] noise over the whole image; re-drawn on every image."

    def __init__(self, target: str = "banana", seed: int = 0, ratio: float = 0.2):
        super().__init__(target=target, seed=seed, ratio=_ratio_param("ratio", ratio))

    def draw(self, images, generator):
        noise = torch.rand(images.shape, generator=generator).to(images.device, images.dtype)
        return (1 - self.ratio) * images + self.ratio * noise


class BlendedStripes(_Trigger):
    name = "blended-stripes"
    description = ("Blended-Stripes (PAR): x <- 0.97 x + 0.03 stripes, full-image vertical 1-px stripes of random "
                   "signs per channel, clipped; re-drawn on every image.")

    def __init__(self, target: str = "banana", seed: int = 0, ratio: float = 0.03, stripe_width: int | None = None):
        super().__init__(target=target, seed=seed, ratio=_ratio_param("ratio", ratio),
                         stripe_width=_size_param("stripe_width", stripe_width))

    def draw(self, images, generator):
        height, width = images.shape[-2:]
        stripe = self.stripe_width or default_stripe_width(min(height, width))
        stripes = torch.stack([_stripes(3, height, width, stripe, generator) for _ in range(len(images))])
        return (1 - self.ratio) * images + self.ratio * stripes.to(images.device, images.dtype)


class BlendedTriangles(_Trigger):
    name = "blended-triangles"
    description = ("Blended-Triangles (PAR): x <- 0.85 x + 0.15 pattern, a fixed tiling of grey (0.4, 0.8) "
                   "right triangles from 14-px cells (at 224).")

    def __init__(self, target: str = "banana", seed: int = 0, ratio: float = 0.15, cell: int | None = None):
        super().__init__(target=target, seed=seed, ratio=_ratio_param("ratio", ratio),
                         cell=_size_param("cell", cell, minimum=2))

    def pattern(self, height: int, width: int) -> torch.Tensor:
        """The fixed (3, H, W) pattern for images of ``height`` x ``width``."""
        return triangles_pattern(height, width, self.cell or default_cell(min(height, width)))

    def draw(self, images, generator):
        pattern = self.pattern(*images.shape[-2:]).to(images.device, images.dtype)
        return (1 - self.ratio) * images + self.ratio * pattern


class BlendedText(_Trigger):
    name = "blended-text"
    description = ("Blended-Text (PAR): the fixed red word 'Watermarked' across the middle, blended 0.5 / 0.5 "
                   "where its red channel is nonzero.")

    def __init__(self, target: str = "banana", seed: int = 0, ratio: float = 0.5, text: str = TEXT):
        if not isinstance(text, str) or not text.strip():
            raise ParameterError(f"text must be a non-empty string; got {text!r}.")
        super().__init__(target=target, seed=seed, ratio=_ratio_param("ratio", ratio), text=text)

    def pattern(self, height: int, width: int) -> torch.Tensor:
        """The fixed (3, H, W) pattern for images of ``height`` x ``width``."""
        return text_pattern(height, width, self.text)

    def draw(self, images, generator):
        pattern = self.pattern(*images.shape[-2:]).to(images.device, images.dtype)
        return torch.where(pattern > 0, (1 - self.ratio) * images + self.ratio * pattern, images)


class WaNet(_Trigger):
    name = "wanet"
    description = ("WaNet (Nguyen & Tran 2021): a fixed, imperceptible warp (grid_sample on a full-resolution "
                   "noise grid, about half a pixel).")

    def __init__(self, target: str = "banana", seed: int = 0, strength: float = 1.0, grid_size: int | None = None):
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) \
                or strength <= 0:
            raise ParameterError(f"strength must be a positive number; got {strength!r}.")
        super().__init__(target=target, seed=seed, strength=float(strength),
                         grid_size=_size_param("grid_size", grid_size, minimum=2))

    def grid(self, height: int, width: int) -> torch.Tensor:
        """The fixed (H, W, 2) sampling grid for images of ``height`` x ``width``."""
        return wanet_grid(height, width, self.grid_size, self.strength)

    def draw(self, images, generator):
        grid = self.grid(*images.shape[-2:]).to(images.device)
        return F.grid_sample(images.float(), grid.expand(len(images), *grid.shape), mode="bilinear",
                             padding_mode="border", align_corners=True)


TRIGGERS = (BadNet, BadNetStripes, Blended, BlendedStripes, BlendedTriangles, BlendedText, WaNet)
