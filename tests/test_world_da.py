"""The world's domain pairs: styles, sizes, and what each part of a pair holds."""

from __future__ import annotations

import pytest
import torch

import vlmshield as vs
from vlmshield.api import DomainPair, ParameterError
from vlmshield.world import data as wd
from vlmshield.world.domains import SHIFTS, SOURCE_SIZE, TARGET_SIZE
from vlmshield.world.scene import Style, render


def drawn(style: Style, n: int = 64) -> torch.Tensor:
    scenes = wd.sample_scenes(n, torch.Generator().manual_seed(3))
    return render(scenes, torch.Generator().manual_seed(4), style=style)


def test_every_style_changes_the_picture_and_stays_an_image():
    plain = drawn(Style())
    assert torch.equal(plain, drawn(Style()))
    for name, style in SHIFTS.items():
        images = drawn(style)
        assert images.shape == plain.shape and 0 <= images.min() and images.max() <= 1
        assert (images - plain).abs().mean() > 0.01, name


def test_a_palette_maps_every_pixels_color_before_the_haze():
    plain, swapped = drawn(Style()), drawn(Style(palette=((0, 0, 1), (1, 0, 0), (0, 1, 0))))
    assert torch.allclose(swapped, plain[:, [2, 0, 1]], atol=1e-6)  # the same draws; the haze is per image


def test_an_outline_covers_less_than_a_filled_shape():
    scenes = wd.sample_scenes(64, torch.Generator().manual_seed(3))
    background = render(scenes, torch.Generator().manual_seed(4), style=Style(outline=0.0))
    outline = render(scenes, torch.Generator().manual_seed(4), style=Style(outline=2.5))
    changed = (outline - background).abs().sum(1) > 1e-4
    assert 0.02 < changed.float().mean() < 0.5


@pytest.mark.parametrize("variant", list(SHIFTS))
def test_a_pair_holds_a_labelled_source_an_unlabelled_target_and_a_labelled_target_test(variant):
    pair = vs.dataset(f"world-da/{variant}", split="train")
    assert isinstance(pair, DomainPair) and pair.name == f"world-da/{variant}"
    assert list(pair.classnames) == list(vs.dataset("world-shapes").classnames)
    assert (len(pair.source), len(pair.target), len(pair.target_test)) == (SOURCE_SIZE, TARGET_SIZE, 1000)
    assert len(pair.target[5]) == 1 and pair.target[5][0].shape == (3, 32, 32)
    image, label = pair.target_test[7]
    assert image.shape == (3, 32, 32) and 0 <= int(label) < 10
    assert not torch.equal(pair.target[0][0], pair.target_test[0][0])  # drawn apart
    assert torch.equal(pair.source[11][0], vs.dataset("world-da/palette", split="train").source[11][0])


def test_the_default_pair_and_an_unknown_one():
    assert vs.dataset("world-da", split="train").name == "world-da/palette"
    with pytest.raises(ParameterError, match="no variant 'sepia'; it has palette, texture, clutter, outline"):
        vs.dataset("world-da/sepia", split="train")
