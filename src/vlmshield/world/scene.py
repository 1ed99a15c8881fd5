"""The world's scenes: one colored shape on a textured background, rendered procedurally.

A scene is five factors, each an index into a tuple of names:

- shape (10): circle, square, triangle, diamond, cross, star, ring, bar, crescent, heart;
- color (8) of the shape, saturated, so that it never looks like the background;
- texture (6) of the greyish background: plain, striped, checkered, dotted, gradient, speckled;
- size (3): small, medium, large;
- position (5): top left, top right, bottom left, bottom right, center.

Nuisances that no caption mentions: rotation, position and size jitter, color jitter, background tones
and pattern scale, contrast, and pixel noise.

Scenes are hazy: each image is rendered at a contrast of 0.25 to 0.35 around mid-grey (``CONTRAST``).
This is the world's calibration of its threat model. A 32-pixel image has 49 times fewer pixels than
CLIP's 224-pixel input, and at full contrast the world's colors and positions were so easy to see that
vanilla models kept 66-100% of them under an 4/255 attack that real CLIP does not survive. Scaling every
factor's signal down by the contrast makes a perturbation of 4/255 as strong as one of 11-16/255 at full
contrast, and leaves clean accuracy as it was (the noise is scaled alike, and the models normalise
their input). Rendering is vectorised over a batch and anti-aliased analytically
(each shape is a signed distance in units of its radius), so a CPU core draws thousands of images per
second at 32x32; every draw comes from the caller's generator, so scenes are deterministic per seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star", "ring", "bar", "crescent", "heart")
COLORS = {
    "red": (0.85, 0.10, 0.10), "orange": (0.97, 0.52, 0.05), "yellow": (0.95, 0.88, 0.10),
    "green": (0.10, 0.68, 0.15), "cyan": (0.05, 0.80, 0.85), "blue": (0.10, 0.22, 0.92),
    "purple": (0.55, 0.15, 0.80), "pink": (0.98, 0.50, 0.78),
}
TEXTURES = ("plain", "striped", "checkered", "dotted", "gradient", "speckled")
SIZES = {"small": 0.22, "medium": 0.29, "large": 0.36}  # radius as a fraction of the image side
POSITIONS = {
    "top left": (0.3, 0.3), "top right": (0.7, 0.3), "bottom left": (0.3, 0.7), "bottom right": (0.7, 0.7),
    "center": (0.5, 0.5),
}
CONTRAST = (0.25, 0.35)  # of a rendered image around mid-grey; see the module's docstring
FACTORS = {
    "shape": SHAPES, "color": tuple(COLORS), "texture": TEXTURES, "size": tuple(SIZES),
    "position": tuple(POSITIONS),
}


@dataclass(frozen=True)
class Scenes:
    """A batch of scene descriptions: one long tensor of indices per factor."""

    shape: torch.Tensor
    color: torch.Tensor
    texture: torch.Tensor
    size: torch.Tensor
    position: torch.Tensor

    def __len__(self) -> int:
        return len(self.shape)

    def names(self, factor: str) -> list[str]:
        return [FACTORS[factor][i] for i in getattr(self, factor).tolist()]


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


# ------------------------------------------------------------------ shapes as distances
def _shape_distance(name: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance (radius units, negative inside) of a shape of radius 1 at the origin.

    u points right and v points down, as image columns and rows do.
    """
    r = torch.sqrt(u * u + v * v)
    if name == "circle":
        return r - 1
    if name == "square":
        return torch.maximum(u.abs(), v.abs()) - 0.8
    if name == "diamond":
        return (u.abs() + v.abs() - 1) / math.sqrt(2)
    if name == "triangle":  # pointing up, circumradius 1
        return torch.maximum(v - 0.5, (math.sqrt(3) * u.abs() - v - 1) / 2)
    if name == "bar":  # a wide, flat rectangle
        return torch.maximum(u.abs() - 1.0, v.abs() - 0.38)
    if name == "cross":
        arm = torch.maximum(u.abs() - 0.32, v.abs() - 0.95)
        bar = torch.maximum(v.abs() - 0.32, u.abs() - 0.95)
        return torch.minimum(arm, bar)
    if name == "ring":
        return torch.maximum(r - 1, 0.5 - r)
    if name == "crescent":
        bite = torch.sqrt((u - 0.5) ** 2 + (v + 0.15) ** 2)
        return torch.maximum(r - 1, 0.78 - bite)
    if name == "star":  # five points, one pointing up; the radius limit swings between 0.48 and 1.05
        angle = torch.atan2(u, -v)
        phase = torch.remainder(angle * 5 / (2 * math.pi) + 0.5, 1.0)
        limit = 0.48 + 0.57 * (1 - 2 * (phase - 0.5).abs())
        return (r - limit) * 0.6
    if name == "heart":  # two lobes over a long point
        left = torch.sqrt((u + 0.45) ** 2 + (v + 0.35) ** 2) - 0.5
        right = torch.sqrt((u - 0.45) ** 2 + (v + 0.35) ** 2) - 0.5
        point = torch.maximum(-v - 0.15, 0.8 * u.abs() + 0.6 * v - 0.62)
        return torch.minimum(torch.minimum(left, right), point)
    raise ValueError(f"unknown shape {name!r}")


# --------------------------------------------------------------------------- textures
def _texture(name: str, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pattern in [0, 1] (0: first tone, 1: second tone) for images (n, H, W) of pixel centres x, y."""
    n = x.shape[0]

    def per_image(low, high):
        return _uniform(n, low, high, generator).view(n, 1, 1)

    if name == "plain":
        return torch.zeros_like(x)
    if name == "striped":
        angle, period = per_image(0, math.pi), per_image(0.14, 0.24)
        return (torch.remainder((x * torch.cos(angle) + y * torch.sin(angle)) / period, 1.0) < 0.5).float()
    if name == "checkered":
        period = per_image(0.12, 0.22)
        shift_x, shift_y = per_image(0, 1), per_image(0, 1)
        cells = torch.floor(x / period + shift_x) + torch.floor(y / period + shift_y)
        return torch.remainder(cells, 2.0)
    if name == "dotted":
        period = per_image(0.14, 0.22)
        shift_x, shift_y = per_image(0, 1), per_image(0, 1)
        du = torch.remainder(x / period + shift_x, 1.0) - 0.5
        dv = torch.remainder(y / period + shift_y, 1.0) - 0.5
        return (du * du + dv * dv < 0.07).float()
    if name == "gradient":
        angle = per_image(0, 2 * math.pi)
        t = (x - 0.5) * torch.cos(angle) + (y - 0.5) * torch.sin(angle)
        return (t / 1.42 + 0.5).clamp(0, 1)
    if name == "speckled":
        return (torch.rand(x.shape, generator=generator) < 0.25).float()
    raise ValueError(f"unknown texture {name!r}")


# --------------------------------------------------------------------------- styles
@dataclass(frozen=True)
class Style:
    """How scenes are drawn; the default is the world's own look, and each other field a domain shift:

    - ``palette``: a 3 x 3 color matrix applied to every pixel's RGB before the haze (a sepia cast, say);
    - ``fill_stripes``: the shape filled with fine stripes (a 3-pixel period at 32 px) that mix its color with
      its complement by this share (0: a flat color, 1: color and complement);
    - ``clutter``: that many strokes in the world's colors drawn across the background, behind the shape;
    - ``outline``: the shape drawn as its contour, a stroke of that many pixels at 32 px (0: filled).

    Lengths scale with the image side. A style draws extra random numbers only for what it changes, so the
    default style renders exactly the images it always has.
    """

    palette: tuple[tuple[float, float, float], ...] | None = None
    fill_stripes: float = 0.0
    clutter: int = 0
    outline: float = 0.0


PLAIN = Style()


def _segment_distance(x: torch.Tensor, y: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """(n, H, W): distance of the pixel centres to each image's segment from ``start`` to ``end`` (n, 2)."""
    direction = end - start
    length2 = (direction * direction).sum(1).clamp_min(1e-8)[:, None, None]
    px, py = x - start[:, 0, None, None], y - start[:, 1, None, None]
    t = ((px * direction[:, 0, None, None] + py * direction[:, 1, None, None]) / length2).clamp(0, 1)
    return torch.sqrt((px - t * direction[:, 0, None, None]) ** 2 + (py - t * direction[:, 1, None, None]) ** 2)


def _clutter(image: torch.Tensor, x: torch.Tensor, y: torch.Tensor, strokes: int,
             generator: torch.Generator) -> torch.Tensor:
    """``image`` with ``strokes`` anti-aliased segments per image, each in one of the world's colors."""
    n, size = image.shape[0], image.shape[-1]
    palette = torch.tensor(list(COLORS.values()))
    for _ in range(strokes):
        start, end = torch.rand(n, 2, generator=generator), torch.rand(n, 2, generator=generator)
        width = _uniform(n, 0.6, 1.4, generator)[:, None, None] / 32
        coverage = (0.5 - (_segment_distance(x, y, start, end) - width) * size).clamp(0, 1)[:, None]
        color = palette[torch.randint(len(palette), (n,), generator=generator)]
        image = image * (1 - coverage) + color[:, :, None, None] * coverage
    return image


# --------------------------------------------------------------------------- rendering
def render(scenes: Scenes, generator: torch.Generator, image_size: int = 32, style: Style = PLAIN) -> torch.Tensor:
    """Images (n, 3, H, W) in [0, 1] of ``scenes`` drawn in ``style``, with nuisances drawn from ``generator``."""
    n, size = len(scenes), image_size
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    x, y = x.expand(n, size, size), y.expand(n, size, size)

    # background: two greyish tones, slightly tinted, mixed by the texture pattern
    first = _uniform(n, 0.12, 0.82, generator)
    contrast = _uniform(n, 0.16, 0.32, generator) * torch.where(first > 0.47, -1.0, 1.0)
    tint = (torch.rand(n, 3, generator=generator) - 0.5) * 0.08
    tone_a = (first[:, None] + tint).clamp(0, 1)
    tone_b = (first[:, None] + contrast[:, None] + tint).clamp(0, 1)
    pattern = torch.empty(n, size, size)
    for index, name in enumerate(TEXTURES):
        chosen = (scenes.texture == index).nonzero().squeeze(1)
        if chosen.numel():
            pattern[chosen] = _texture(name, x[chosen], y[chosen], generator)
    pattern = pattern[:, None]
    image = tone_a[:, :, None, None] * (1 - pattern) + tone_b[:, :, None, None] * pattern
    if style.clutter:
        image = _clutter(image, x, y, style.clutter, generator)

    # the shape: position, size and rotation with jitter, then an anti-aliased coverage mask
    anchor = torch.tensor(list(POSITIONS.values()))[scenes.position]
    centre = anchor + (torch.rand(n, 2, generator=generator) - 0.5) * 0.08
    radius = torch.tensor(list(SIZES.values()))[scenes.size] * _uniform(n, 0.9, 1.1, generator)
    angle = _uniform(n, -0.25, 0.25, generator)
    dx, dy = x - centre[:, 0, None, None], y - centre[:, 1, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    u = (cos * dx + sin * dy) / radius[:, None, None]
    v = (-sin * dx + cos * dy) / radius[:, None, None]
    distance = torch.empty(n, size, size)
    for index, name in enumerate(SHAPES):
        chosen = (scenes.shape == index).nonzero().squeeze(1)
        if chosen.numel():
            distance[chosen] = _shape_distance(name, u[chosen], v[chosen])
    distance = distance * radius[:, None, None] * size  # in pixels
    if style.outline:
        distance = distance.abs() - style.outline * size / 64
    coverage = (0.5 - distance).clamp(0, 1)[:, None]
    color = torch.tensor(list(COLORS.values()))[scenes.color]
    color = (color * _uniform(n, 0.85, 1.1, generator)[:, None]
              + (torch.rand(n, 3, generator=generator) - 0.5) * 0.08).clamp(0, 1)[:, :, None, None]
    if style.fill_stripes:
        stripes = (torch.remainder((x + y) * 32 / 3, 1.0) < 0.5).float()[:, None]  # a 3-pixel period at 32 px
        stripes = stripes * style.fill_stripes
        color = color * (1 - stripes) + (1 - color) * stripes
    image = image * (1 - coverage) + color * coverage

    noise = _uniform(n, 0.0, 0.03, generator).view(n, 1, 1, 1)
    image = image + noise * torch.randn(image.shape, generator=generator)
    image = image.clamp(0, 1)
    if style.palette is not None:
        image = torch.einsum("ij,njhw->nihw", torch.tensor(style.palette, dtype=image.dtype), image).clamp(0, 1)
    contrast = _uniform(n, *CONTRAST, generator).view(n, 1, 1, 1)
    return (0.5 + contrast * (image - 0.5)).clamp(0, 1)
