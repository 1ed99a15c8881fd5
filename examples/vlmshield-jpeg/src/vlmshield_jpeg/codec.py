"""JPEG twice: the real codec, and a differentiable approximation of it.

``jpeg(x, quality)`` compresses and decompresses each image of a batch with Pillow's JPEG codec (libjpeg, its
defaults): pixels are rounded to 8 bits, colours converted to YCbCr, the chroma subsampled 2x2 (4:2:0), each 8x8
block transformed by the DCT and its coefficients divided by the quality-scaled quantization table and rounded.
It has no gradient.

``differentiable_jpeg(x, quality)`` follows the same steps in torch (Shin & Song, "JPEG-resistant adversarial
images", 2017): RGB -> YCbCr, 2x2 average chroma subsampling, 8x8 block DCT, quantization by the standard
luminance and chrominance tables scaled for ``quality`` (libjpeg's scaling), the rounding of each coefficient
replaced by ``round(v) + (v - round(v))**3`` (its value stays within 1/8 of a quantization step of the real
rounding's, and its derivative ``3 (v - round(v))**2`` is nonzero almost everywhere, where the real one is zero),
then the inverse DCT, bilinear chroma upsampling (libjpeg's "fancy" upsampling) and YCbCr -> RGB. The pixel-level
8-bit roundings are left out. On the world's images its output is about one grey level (of 255) from the real
codec's on average, where the codec itself moves pixels by 3 to 5.
"""

from __future__ import annotations

import io
import math

import torch
import torch.nn.functional as F
from PIL import Image

from vlmshield.api import InputError

#: The luminance and chrominance quantization tables of the JPEG standard (ITU-T T.81, Annex K), at quality 50.
LUMINANCE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55), (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62), (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMINANCE = (
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99), (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99), *((99,) * 8,) * 4,
)
#: RGB -> YCbCr (JFIF, full range); the chroma rows are offset by 128.
RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
#: The side of a DCT block, and of a minimum coded unit with 4:2:0 chroma subsampling.
BLOCK, MCU = 8, 16


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image of ``x`` (N, 1 or 3, H, W in [0, 1]) through a real JPEG encoder and decoder at ``quality``;
    float in [0, 1], the shape, device and dtype of ``x``. Not differentiable."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise InputError(f"JPEG compresses batches of grey or RGB images, (N, 1 or 3, H, W); got {tuple(x.shape)}.")
    n, channels, h, w = x.shape
    if n == 0:
        return x.detach().clone()
    mode = "L" if channels == 1 else "RGB"
    pixels = (x.detach().float().cpu() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    decoded = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.frombytes(mode, (w, h), image.numpy().tobytes()).save(buffer, format="JPEG", quality=quality)
        decoded.append(torch.frombuffer(bytearray(Image.open(buffer).tobytes()), dtype=torch.uint8))
    out = torch.stack(decoded).view(n, h, w, channels).permute(0, 3, 1, 2)
    return (out.float() / 255).to(x.device, x.dtype)


def quantization_tables(quality: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The luminance and chrominance tables at ``quality`` (1-100), scaled as libjpeg scales them (baseline:
    each step from 1 to 255)."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality

    def scaled(table):
        return torch.tensor([[min(max(math.floor((q * scale + 50) / 100), 1), 255) for q in row] for row in table],
                            dtype=torch.float32)

    return scaled(LUMINANCE), scaled(CHROMINANCE)


def soft_round(v: torch.Tensor) -> torch.Tensor:
    """Shin & Song's differentiable rounding: ``round(v) + (v - round(v))**3``."""
    rounded = torch.round(v).detach()
    return rounded + (v - rounded) ** 3


def dct_matrix(n: int = BLOCK) -> torch.Tensor:
    """The orthonormal DCT-II matrix D (coefficients of a block B: D B D^T), JPEG's transform for n = 8."""
    k = torch.arange(n, dtype=torch.float64)
    matrix = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    matrix[0] /= math.sqrt(2)
    return matrix.float()


def _quantized(planes: torch.Tensor, table: torch.Tensor, rounding) -> torch.Tensor:
    """8x8 blocks of ``planes`` (N, C, H, W, H and W multiples of 8; level-shifted) through DCT, quantization
    with ``table`` and ``rounding``, dequantization and the inverse DCT."""
    n, c, h, w = planes.shape
    d = dct_matrix().to(planes)
    blocks = planes.reshape(n, c, h // BLOCK, BLOCK, w // BLOCK, BLOCK).transpose(3, 4)
    table = table.to(planes)
    coefficients = rounding(d @ blocks @ d.T / table) * table
    return (d.T @ coefficients @ d).transpose(3, 4).reshape(n, c, h, w)


def differentiable_jpeg(x: torch.Tensor, quality: int, rounding=soft_round) -> torch.Tensor:
    """A differentiable approximation of ``jpeg(x, quality)`` (module docstring); ``rounding=torch.round``
    gives the codec's arithmetic without its 8-bit pixel roundings."""
    n, channels, h, w = x.shape
    luminance, chrominance = quantization_tables(quality)
    pad_h, pad_w = -h % MCU, -w % MCU  # the encoder repeats the last row and column up to whole units
    pixels = F.pad(x * 255, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x * 255
    if channels == 1:
        gray = _quantized(pixels - 128, luminance, rounding) + 128
        return (gray[..., :h, :w] / 255).clamp(0, 1)
    ycbcr = torch.einsum("ij,njhw->nihw", torch.tensor(RGB_TO_YCBCR).to(pixels), pixels)
    y = _quantized(ycbcr[:, :1] - 128, luminance, rounding) + 128
    chroma = _quantized(F.avg_pool2d(ycbcr[:, 1:], 2), chrominance, rounding)  # centred on 0 already
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    rgb = torch.einsum("ij,njhw->nihw", torch.linalg.inv(torch.tensor(RGB_TO_YCBCR)).to(pixels),
                       torch.cat([y, chroma], 1))
    return (rgb[..., :h, :w] / 255).clamp(0, 1)
