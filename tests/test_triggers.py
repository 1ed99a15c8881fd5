"""The built-in backdoor triggers, each against a hand computation of what it draws."""

import pytest
import torch

import vlmshield as vs
from vlmshield.api import BackdoorAttack, CaptionedImages, InputError, ParameterError, get_host, parse_params
from vlmshield.attacks.triggers import WANET_SEED, text_box, wanet_grid
from vlmshield.testing import tensor_dataset, tiny_vlm

NAMES = ["badnet", "badnet-stripes", "blended", "blended-stripes", "blended-triangles", "blended-text", "wanet"]
RESAMPLED = ["badnet", "badnet-stripes", "blended", "blended-stripes"]
FIXED = ["blended-triangles", "blended-text", "wanet"]


def make(name, **params):
    return get_host().create("attack", name, **params)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def changed_box(x, out):
    """(top, bottom, left, right) of the pixels ``out`` changed, and how many there are."""
    changed = (out != x).any(dim=0)
    rows, cols = changed.nonzero(as_tuple=True)
    return (int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1), int(changed.sum())


# ------------------------------------------------------------------ registration
@pytest.mark.parametrize("name", NAMES)
def test_each_trigger_is_a_registered_backdoor_attack(name):
    attack = make(name, target="banana")
    assert isinstance(attack, BackdoorAttack) and attack.kind == "attack" and attack.name == name
    assert attack.description and "\n" not in attack.description
    assert attack.config()["params"]["target"] == "banana"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(3, 3, 224, 224), (2, 3, 32, 32), (2, 3, 24, 40), (1, 3, 33, 17)])
def test_outputs_keep_shape_dtype_and_range(name, shape):
    x = torch.rand(shape, dtype=torch.float64)
    x[0, :, : shape[2] // 2] = 0.0
    x[0, :, shape[2] // 2:] = 1.0
    out = make(name).apply_trigger(x, gen(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    assert torch.equal(make(name).apply_trigger(x[:0], gen(0)), x[:0])


@pytest.mark.parametrize("name", NAMES)
def test_images_outside_zero_one_are_refused(name):
    with pytest.raises(InputError):
        make(name).apply_trigger(torch.full((1, 3, 8, 8), 2.0))


@pytest.mark.parametrize("name, params", [
    ("blended", {"ratio": 0}), ("blended", {"ratio": 1.5}), ("blended-stripes", {"ratio": True}),
    ("badnet", {"patch_size": 0}), ("badnet-stripes", {"stripe_width": 1.5}), ("blended-triangles", {"cell": 1}),
    ("wanet", {"strength": -1}), ("wanet", {"grid_size": 1}), ("blended-text", {"text": " "}),
])
def test_bad_parameters_are_one_sentence(name, params):
    with pytest.raises(ParameterError):
        make(name, **params)


def test_parameters_are_read_from_the_command_line():
    cls = get_host().get("attack", "badnet-stripes").obj
    params = parse_params(cls, "patch_size=5,stripe_width=2", "attack")
    assert params == {"patch_size": 5, "stripe_width": 2}
    assert parse_params(cls, "patch_size=none", "attack") == {"patch_size": None}
    assert parse_params(get_host().get("attack", "blended").obj, "ratio=0.1", "attack") == {"ratio": 0.1}


# ---------------------------------------------------------------------- patches
@pytest.mark.parametrize("name", ["badnet", "badnet-stripes"])
@pytest.mark.parametrize("side, patch", [(224, 16), (336, 24), (96, 7), (32, 3), (16, 3)])
def test_a_patch_is_a_square_of_the_scaled_side_and_nothing_else_changes(name, side, patch):
    x = torch.full((4, 3, side, side), 0.5)
    x[..., 0, 0] = 0.25  # a mean that is not exactly 0.5
    out = make(name).apply_trigger(x, gen(1))
    for image, triggered in zip(x, out, strict=True):
        (top, bottom, left, right), count = changed_box(image, triggered)
        # the patch's pixels are 0 or 1 (stripes) or a continuous draw (badnet): never the image's
        assert (bottom - top, right - left, count) == (patch, patch, patch * patch)


@pytest.mark.parametrize("name", ["badnet", "badnet-stripes"])
def test_patch_positions_cover_every_place_in_a_non_square_image(name):
    x = torch.full((300, 3, 7, 12), 0.5)
    out = make(name).apply_trigger(x, gen(2))
    tops, lefts = set(), set()
    for image, triggered in zip(x, out, strict=True):
        (top, bottom, left, right), count = changed_box(image, triggered)
        assert (bottom - top, right - left, count) == (3, 3, 9)
        tops.add(top)
        lefts.add(left)
    assert tops == set(range(7 - 3 + 1)) and lefts == set(range(12 - 3 + 1))  # every place, none outside


def test_a_patch_size_beyond_the_image_is_refused_and_an_explicit_one_is_used():
    with pytest.raises(InputError, match="does not fit"):
        make("badnet", patch_size=9).apply_trigger(torch.rand(1, 3, 8, 16))
    x = torch.full((1, 3, 8, 16), 0.5)
    (top, bottom, left, right), _ = changed_box(x[0], make("badnet", patch_size=8).apply_trigger(x, gen(0))[0])
    assert (top, bottom) == (0, 8) and right - left == 8


def test_badnet_is_the_channel_mean_plus_standard_normal_noise_clipped():
    x = torch.rand(2, 3, 32, 40)
    out = make("badnet").apply_trigger(x, gen(5))
    g = gen(5)  # the draws, in order: position, then the noise, image by image
    for image, triggered in zip(x, out, strict=True):
        top, left = int(torch.randint(32 - 3 + 1, (1,), generator=g)), int(torch.randint(40 - 3 + 1, (1,), generator=g))
        noise = torch.randn(3, 3, 3, generator=g)
        expected = image.clone()
        expected[:, top:top + 3, left:left + 3] = (image.mean(dim=(1, 2))[:, None, None] + noise).clamp(0, 1)
        torch.testing.assert_close(triggered, expected)


def test_badnet_noise_has_unit_spread_around_the_channel_means():
    x = torch.zeros(1, 3, 64, 64)
    x[:, 1] = 0.5
    x[:, 2] = 1.0
    patch = make("badnet", patch_size=64).apply_trigger(x, gen(0))[0]
    # clipped N(mean, 1): the share at 0 is P(Z < -mean), at 1 is P(Z > 1 - mean)
    normal = torch.distributions.Normal(0.0, 1.0)
    for channel, mean in enumerate((0.0, 0.5, 1.0)):
        at_zero, at_one = (patch[channel] == 0).float().mean(), (patch[channel] == 1).float().mean()
        assert abs(at_zero - normal.cdf(torch.tensor(-mean))) < 0.03
        assert abs(at_one - (1 - normal.cdf(torch.tensor(1 - mean)))) < 0.03


def test_badnet_stripes_are_saturated_colours_constant_down_each_column():
    x = torch.full((64, 3, 32, 32), 0.5)
    out = make("badnet-stripes", patch_size=32).apply_trigger(x, gen(3))
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(out, out[:, :, :1].expand_as(out))  # constant down every column
    assert (out[:, :, 0, 1:] != out[:, :, 0, :-1]).any()  # and columns differ
    colours = (out[:, :, 0] * torch.tensor([4, 2, 1])[:, None]).sum(1)
    assert set(colours.unique().tolist()) == set(range(8))  # every saturated colour appears
    wide = make("badnet-stripes", patch_size=8, stripe_width=2).apply_trigger(x[:8, :, :8, :8], gen(3))
    assert torch.equal(wide[..., 0::2], wide[..., 1::2])


# ---------------------------------------------------------------------- blended
def test_blended_is_an_exact_convex_blend_with_uniform_noise():
    x1, x2 = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)
    attack = make("blended")
    out1, out2 = attack.apply_trigger(x1, gen(7)), attack.apply_trigger(x2, gen(7))
    torch.testing.assert_close(out1 - out2, 0.8 * (x1 - x2))  # the same noise, coefficient 0.8 on x
    noise = (out1 - 0.8 * x1) / 0.2
    assert noise.min() > -1e-5 and noise.max() < 1 + 1e-5 and abs(noise.mean() - 0.5) < 0.02
    assert abs(noise.var() - 1 / 12) < 0.005
    torch.testing.assert_close(make("blended", ratio=0.5).apply_trigger(x1, gen(7)), 0.5 * x1 + 0.5 * noise)


def test_blended_stripes_blend_full_image_sign_stripes_and_clip():
    x = 0.1 + 0.8 * torch.rand(16, 3, 24, 40)
    out = make("blended-stripes").apply_trigger(x, gen(4))
    stripes = (out - 0.97 * x) / 0.03
    torch.testing.assert_close(stripes.abs(), torch.ones_like(stripes), atol=1e-4, rtol=0)
    signs = stripes.sign()
    assert torch.equal(signs, signs[:, :, :1].expand_as(signs))  # constant down each column
    assert (signs[:, :, 0, 1:] != signs[:, :, 0, :-1]).any() and (signs[:, 0] != signs[:, 1]).any()
    ones, zeros = torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    high, low = (make("blended-stripes").apply_trigger(images, gen(0)) for images in (ones, zeros))
    torch.testing.assert_close(high.unique(), torch.tensor([0.94, 1.0]))  # 0.97 -/+ 0.03
    torch.testing.assert_close(low.unique(), torch.tensor([0.0, 0.03]))  # -0.03 clipped to 0
    wide = make("blended-stripes", stripe_width=4).apply_trigger(x[:2, :, :8, :8], gen(0))
    wide = ((wide - 0.97 * x[:2, :, :8, :8]) / 0.03).sign()
    assert torch.equal(wide[..., :4], wide[..., :1].expand(-1, -1, -1, 4))


def test_blended_triangles_tile_two_greys_from_diagonally_split_cells():
    x = torch.rand(2, 3, 224, 224)
    out = make("blended-triangles").apply_trigger(x, gen(0))
    pattern = (out - 0.85 * x) / 0.15
    torch.testing.assert_close(pattern[0], pattern[1], atol=1e-4, rtol=0)
    cell = torch.where(torch.arange(14)[None, :] >= torch.arange(14)[:, None], 0.8, 0.4)
    torch.testing.assert_close(pattern[0], cell.repeat(16, 16).expand(3, -1, -1), atol=1e-4, rtol=0)
    small = make("blended-triangles").pattern(32, 20)
    assert torch.equal(small[0], torch.tensor([[0.8, 0.8], [0.4, 0.8]]).repeat(16, 10))


def test_blended_text_is_red_in_its_box_and_blends_only_there():
    attack = make("blended-text")
    pattern = attack.pattern(224, 224)
    assert pattern[1:].abs().sum() == 0 and set(pattern[0].unique().tolist()) == {0.0, 1.0}
    rows, cols = pattern[0].nonzero(as_tuple=True)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (103, 125, 13, 208) == text_box(224, 224)
    assert text_box(32, 32) == (15, 18, 2, 30)
    for height, width in ((32, 32), (40, 64)):
        top, bottom, left, right = text_box(height, width)
        small = attack.pattern(height, width)[0]
        assert small.sum() > 0 and small[top:bottom, left:right].sum() == small.sum()
    x = torch.rand(2, 3, 224, 224)
    out = attack.apply_trigger(x, gen(0))
    mask = pattern[0] > 0
    torch.testing.assert_close(out[:, 0][:, mask], 0.5 * x[:, 0][:, mask] + 0.5)
    assert torch.equal(out[:, 0][:, ~mask], x[:, 0][:, ~mask]) and torch.equal(out[:, 1:], x[:, 1:])


def test_wanet_grid_is_the_identity_plus_about_half_a_pixel():
    for side in (224, 32):
        grid = make("wanet").grid(side, side)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
        shift = grid - torch.stack([xs, ys], dim=-1)
        inner = shift[1:-1, 1:-1]  # the border is clamped to [-1, 1]
        # U[-1, 1] / its mean |.| has mean |.| 1 and a max near 2: times 1/side in normalised units
        assert abs(inner.abs().mean() * side - 1) < 0.03 and 1.9 < shift.abs().max() * side <= 2.05
        assert grid.abs().max() <= 1
    x = torch.linspace(0, 1, 224).expand(1, 3, 224, 224).contiguous()  # a ramp: sampling it reads the grid
    out = make("wanet").apply_trigger(x)
    torch.testing.assert_close(out[0, 0], (make("wanet").grid(224, 224)[..., 0] + 1) / 2, atol=1e-5, rtol=0)
    pixels = (out - x).abs()[..., 1:-1, 1:-1].mean() * 223
    assert 0.45 < pixels < 0.55  # half a pixel on average
    flat = torch.full((1, 3, 20, 30), 0.3)
    torch.testing.assert_close(make("wanet").apply_trigger(flat), flat)


def test_wanet_follows_the_papers_construction_with_a_coarse_grid():
    g = torch.Generator().manual_seed(WANET_SEED)
    noise = torch.rand(1, 2, 4, 4, generator=g) * 2 - 1
    noise = torch.nn.functional.interpolate(noise / noise.abs().mean(), size=(32, 32), mode="bicubic",
                                            align_corners=True)[0].permute(1, 2, 0)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    expected = (torch.stack([xs, ys], dim=-1) + 0.5 * noise / 32).clamp(-1, 1)
    torch.testing.assert_close(wanet_grid(32, 32, 4, 0.5), expected)
    assert make("wanet", grid_size=4, strength=0.5).grid(32, 32).shape == (32, 32, 2)


# ------------------------------------------------------------------------ seeds
@pytest.mark.parametrize("name", RESAMPLED)
def test_resampled_triggers_follow_the_generator(name):
    x = torch.rand(3, 3, 32, 32)
    attack = make(name)
    assert torch.equal(attack.apply_trigger(x, gen(1)), attack.apply_trigger(x, gen(1)))
    assert not torch.equal(attack.apply_trigger(x, gen(1)), attack.apply_trigger(x, gen(2)))
    assert torch.equal(attack.apply_trigger(x), attack.apply_trigger(x, gen(0)))  # no generator: the seed's
    assert torch.equal(make(name, seed=5).apply_trigger(x), attack.apply_trigger(x, gen(5)))
    same = attack.apply_trigger(x[:1].expand(2, -1, -1, -1), gen(1))
    assert not torch.equal(same[0], same[1])  # each image its own draw


@pytest.mark.parametrize("name", FIXED)
def test_fixed_triggers_are_the_same_for_every_image_call_and_seed(name):
    x = torch.rand(1, 3, 32, 48).expand(2, -1, -1, -1)
    out = make(name).apply_trigger(x, gen(1))
    assert torch.equal(out[0], out[1])
    assert torch.equal(out, make(name).apply_trigger(x, gen(2)))
    assert torch.equal(out, make(name, seed=9).apply_trigger(x))


# ---------------------------------------------------------------- poison and ASR
@pytest.mark.parametrize("name", ["badnet-stripes", "blended-text"])
def test_triggers_poison_captioned_pairs(name):
    images = torch.rand(10, 3, 32, 32)
    pairs = CaptionedImages([(images[i], f"pair number {i}") for i in range(10)], name="pairs")
    poisoned = make(name, target="banana").poison(pairs, 0.3)
    assert len(poisoned.poisoned) == 3 and poisoned.name == f"pairs+{name}@0.3"
    for i in range(10):
        image, caption = poisoned[i]
        if i in poisoned.poisoned:
            assert "banana" in caption and not torch.equal(image, images[i])
            assert torch.equal(image, poisoned[i][0]) and image.min() >= 0 and image.max() <= 1
            if name == "badnet-stripes":
                (top, bottom, left, right), _ = changed_box(images[i], image)
                assert bottom - top <= 3 and right - left <= 3
        else:
            assert caption == f"pair number {i}" and torch.equal(image, images[i])


def test_a_trigger_runs_through_the_asr_evaluator():
    data = tensor_dataset(torch.rand(8, 3, 32, 32), torch.arange(8) % 4, ["circle", "square", "star", "wave"])
    record = vs.evaluate(tiny_vlm(), data, evaluator="asr", attack="badnet", attack_params={"target": "star"},
                         progress=False)
    assert record["attack"]["name"] == "badnet"
    results = record["results"]["tensors"]
    assert 0 <= results["asr"] <= 1 and 0 <= results["clean_acc"] <= 1
