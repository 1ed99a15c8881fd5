"""BadCLIP's optimised patch (``badclip``): what it optimises, where it goes, and that it is reproducible."""

import pytest
import torch
import torch.nn.functional as F

import vlmshield as vs
from vlmshield.api import BackdoorAttack, CaptionedImages, InputError, ParameterError, get_host, parse_params
from vlmshield.attacks.badclip import BadCLIPPatch, default_patch_size, names_target, patch_position
from vlmshield.testing import tensor_dataset, tiny_vlm

TARGET = "star"
QUICK = {"steps": 8, "batch_size": 16, "n": 64, "n_target": 16}


@pytest.fixture(scope="module")
def pairs():
    """The world's first 640 image-caption pairs: 512 to optimise on, 128 held out."""
    data = vs.dataset("world-pretrain", split="train")
    return [data[i] for i in range(640)]


@pytest.fixture(scope="module")
def train(pairs):
    return CaptionedImages(pairs[:512], name="world-first-512")


@pytest.fixture(scope="module")
def held_out(pairs):
    """Held-out images without the target, and held-out images of it."""
    others = torch.stack([image for image, caption in pairs[512:] if not names_target(caption, TARGET)])
    targets = torch.stack([image for image, caption in pairs[512:] if names_target(caption, TARGET)])
    return others, targets


@pytest.fixture(scope="module")
def vlm():
    return tiny_vlm()


def make(model, data, **params):
    return get_host().create("attack", "badclip", **{"target": TARGET, "model": model, "data": data, **QUICK, **params})


def with_patch(patch: torch.Tensor, **params) -> BadCLIPPatch:
    """A badclip attack whose patch is ``patch`` (set, not optimised)."""
    attack = BadCLIPPatch(target=TARGET, model=tiny_vlm(), **params)
    attack._patch = patch
    return attack


def changed_box(x, out):
    changed = (out != x).any(dim=0).any(dim=0)
    rows, cols = changed.nonzero(as_tuple=True)
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


# ------------------------------------------------------------------- the objective
def test_the_optimised_patch_pulls_patched_images_towards_the_target_text(vlm, train, held_out):
    others, _ = held_out
    text = vlm.encode_text([f"a photo of a {TARGET}."], normalize=True).detach()[0]

    def similarity(attack):
        with torch.no_grad():
            return float((vlm.encode_image(attack.apply_trigger(others), normalize=True) @ text).mean())

    optimised = make(vlm, train, text_loss="cosine", visual_weight=0, patch_size=8, lr=0.05, steps=30,
                     batch_size=32, n=512)
    patch = optimised.patch()
    random_patches = [with_patch(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(s)), patch_size=8)
                      for s in range(3)]
    best_random = max(similarity(attack) for attack in random_patches)
    assert similarity(optimised) > best_random + 0.05  # measured: about 0.18 against -0.01
    assert patch.shape == (3, 8, 8) and patch.min() >= 0 and patch.max() <= 1


def test_the_default_objective_lowers_the_dual_embedding_triplet_loss(vlm, train, held_out):
    """BadCLIP's default: the contrastive text term plus 500 x a triplet loss (real target images as
    positives, the unpatched image as negative); on held-out images the triplet loss falls."""
    others, targets = held_out
    with torch.no_grad():
        positive = F.normalize(vlm.encode_image(targets, normalize=True).mean(dim=0), dim=-1)
        negative = vlm.encode_image(others, normalize=True)

    def triplet(attack):
        with torch.no_grad():
            anchor = vlm.encode_image(attack.apply_trigger(others), normalize=True)
        return float(F.triplet_margin_loss(anchor, positive.expand_as(anchor), negative, margin=1.0))

    optimised = make(vlm, train, patch_size=8, lr=0.05, steps=20, batch_size=32, n=512, n_target=64)
    initial = make(vlm, train, patch_size=8, lr=0.05, steps=1, batch_size=32, n=512, n_target=64)
    random_patch = with_patch(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)), patch_size=8)
    assert triplet(optimised) < min(triplet(initial), triplet(random_patch)) - 0.02  # measured: 1.10 against 1.14


def test_the_patch_is_deterministic_in_the_seed(vlm, train):
    first, again = make(vlm, train).patch(), make(vlm, train).patch()
    assert torch.equal(first, again)
    assert not torch.equal(first, make(vlm, train, seed=1).patch())
    x = torch.rand(2, 3, 32, 32)
    attack = make(vlm, train)
    assert torch.equal(attack.apply_trigger(x, torch.Generator().manual_seed(1)),
                       attack.apply_trigger(x, torch.Generator().manual_seed(2)))  # a fixed pattern
    assert attack.patch() is attack.patch()  # optimised once, then cached


def test_the_vlm_is_left_as_it_was(train):
    model = tiny_vlm().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    make(model, train).patch()
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("side, size", [(32, 3), (64, 5), (96, 7), (224, 16), (336, 24)])
def test_the_patch_scales_with_the_image_side_and_sits_at_the_centre(side, size):
    assert default_patch_size(side) == size
    attack = with_patch(torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25)
    x = torch.zeros(2, 3, side, side)
    out = attack.apply_trigger(x)
    top, left = patch_position(side, side, size)
    assert changed_box(x, out) == (top, top + size, left, left + size)
    assert top == left == int(int(side / 2) - size / 2)  # BadCLIP's c0 = int(H / 2), s0 = int(c0 - l / 2)
    if side == 224:
        assert (top, left) == (104, 104)  # BadCLIP's middle: int(112 - 16 / 2)


def test_the_patch_is_pasted_as_optimised_and_resized_elsewhere():
    patch = torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(0))
    attack = with_patch(patch)
    x = torch.rand(1, 3, 32, 32)
    out = attack.apply_trigger(x)
    assert torch.equal(out[0, :, 14:17, 14:17], patch)
    big = attack.apply_trigger(torch.rand(1, 3, 224, 224))[0, :, 104:120, 104:120]
    torch.testing.assert_close(big, F.interpolate(patch[None], size=16, mode="bilinear", align_corners=False)[0])
    fixed = with_patch(patch, patch_size=3).apply_trigger(torch.rand(1, 3, 224, 224))
    assert torch.equal(fixed[0, :, 110:113, 110:113], patch)  # a given patch_size is kept at every side
    with pytest.raises(InputError, match="does not fit"):
        with_patch(patch, patch_size=40).apply_trigger(x)


def test_outputs_keep_shape_dtype_and_range():
    attack = with_patch(torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(0)))
    for shape in [(3, 3, 224, 224), (2, 3, 32, 32), (2, 3, 24, 40), (1, 3, 33, 17)]:
        x = torch.rand(shape, dtype=torch.float64)
        out = attack.apply_trigger(x)
        assert out.shape == x.shape and out.dtype == x.dtype and 0 <= out.min() and out.max() <= 1
        assert not torch.equal(out, x)
    assert attack.apply_trigger(torch.rand(0, 3, 8, 8)).shape == (0, 3, 8, 8)
    with pytest.raises(InputError):
        attack.apply_trigger(torch.full((1, 3, 8, 8), 2.0))


# --------------------------------------------------------------------------- files
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_patch_file_carries_the_patch_from_poisoning_to_evaluation(vlm, train, tmp_path, suffix):
    path = tmp_path / "patches" / f"badclip{suffix}"
    written = make(vlm, train, patch_file=str(path))
    patch = written.patch()
    assert path.is_file()
    read = vs.attack("badclip", target=TARGET, patch_file=str(path))  # no model needed now
    assert torch.equal(read.patch(), patch)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(read.apply_trigger(x), written.apply_trigger(x))
    if suffix == ".safetensors":
        with pytest.raises(ParameterError, match="optimised for the target 'star', not 'banana'"):
            vs.attack("badclip", target="banana", patch_file=str(path)).patch()


@pytest.mark.parametrize("suffix, content", [(".pt", b"not a tensor"), (".safetensors", b"not a tensor"),
                                             (".pt", "shape"), (".pt", "range")])
def test_a_bad_patch_file_is_one_sentence(tmp_path, suffix, content):
    path = tmp_path / f"patch{suffix}"
    if content == "shape":
        torch.save(torch.rand(3, 4, 5), path)
    elif content == "range":
        torch.save(torch.rand(3, 4, 4) * 2, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ParameterError) as error:
        vs.attack("badclip", patch_file=str(path)).patch()
    assert str(error.value).count(". ") == 0 and str(path) in str(error.value)


# -------------------------------------------------------------------------- errors
def test_without_a_model_the_attack_says_what_it_needs():
    with pytest.raises(ParameterError, match="optimised against a model: give model=NAME"):
        vs.attack("badclip")
    with pytest.raises(ParameterError, match="optimised against a model"):
        get_host().create("attack", "badclip", target="banana", seed=0)  # as the contrastive trainer makes it


@pytest.mark.parametrize("params, message", [
    ({"text_loss": "l1"}, "text_loss must be one of"), ({"aug_prob": 2}, r"aug_prob must be a number in \[0, 1\]"),
    ({"lr": 0}, "lr must be a number above 0"), ({"steps": 0}, "steps must be a whole number"),
    ({"templates": ["no placeholder"]}, "must contain {}"), ({"model": 3}, "model must be a zoo name or a VLM"),
    ({"data": 3}, "data must be a dataset name"),
])
def test_bad_parameters_are_refused(vlm, params, message):
    with pytest.raises(ParameterError, match=message):
        vs.attack("badclip", **{"model": vlm, **params})


def test_the_visual_term_needs_real_target_images(vlm, train):
    with pytest.raises(ParameterError, match="names 'banana': badclip's visual term needs real target images"):
        make(vlm, train, target="banana").patch()
    patch = make(vlm, train, target="banana", visual_weight=0).patch()  # the text alone needs none
    assert patch.shape == (3, 3, 3)


def test_named_data_and_target_data(vlm, train):
    attack = make(vlm, "world-pretrain", target_data=CaptionedImages(
        [pair for pair in train if names_target(pair[1], TARGET)], name="stars"))
    assert attack.patch().shape == (3, 3, 3)
    assert attack.config()["params"]["target_data"] == "stars" and attack.config()["params"]["model"] == "tiny-clip"


def test_the_command_line_reads_its_parameters():
    params = parse_params(BadCLIPPatch, "model=clip-tinyvit4,steps=5,visual_weight=0,templates=a {} here.,"
                                        "patch_file=p.safetensors", "attack 'badclip'")
    assert params == {"model": "clip-tinyvit4", "steps": 5, "visual_weight": 0.0, "templates": "a {} here.",
                      "patch_file": "p.safetensors"}
    assert vs.attack("badclip", **params).templates == ("a {} here.",)


# ------------------------------------------------------------------ poison and ASR
def test_badclip_poisons_captioned_pairs(vlm, train):
    attack = make(vlm, train)
    assert isinstance(attack, BackdoorAttack) and attack.name == "badclip" and "\n" not in attack.description
    images = torch.rand(10, 3, 32, 32)
    data = CaptionedImages([(images[i], f"pair number {i}") for i in range(10)], name="pairs")
    poisoned = attack.poison(data, 0.3)
    assert len(poisoned.poisoned) == 3 and poisoned.name == "pairs+badclip@0.3"
    for i in range(10):
        image, caption = poisoned[i]
        if i in poisoned.poisoned:
            assert caption == f"a photo of a {TARGET}." and image.min() >= 0 and image.max() <= 1
            assert changed_box(images[i][None], image[None]) == (14, 17, 14, 17)
            assert torch.equal(image[:, 14:17, 14:17], attack.patch())
        else:
            assert caption == f"pair number {i}" and torch.equal(image, images[i])


def test_badclip_runs_through_the_asr_evaluator(vlm, train, tmp_path):
    path = tmp_path / "badclip.safetensors"
    make(vlm, train, patch_file=str(path)).patch()
    data = tensor_dataset(torch.rand(8, 3, 32, 32), torch.arange(8) % 4, ["circle", "square", "star", "wave"])
    record = vs.evaluate(tiny_vlm(), data, evaluator="asr", attack="badclip",
                         attack_params={"target": TARGET, "patch_file": str(path)}, progress=False)
    assert record["attack"]["name"] == "badclip"
    assert 0 <= record["results"]["tensors"]["asr"] <= 1
