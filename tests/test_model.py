import pytest
import torch
import torch.nn.functional as F

from vlmshield.api import VLM, InputError, ParameterError, UnknownNameError
from vlmshield.testing import tiny_vlm


@pytest.fixture(scope="module")
def vlm():
    return tiny_vlm()


def test_preprocess_resizes_and_normalizes_inside(vlm):
    x = torch.rand(2, 3, 48, 48)
    expected = (F.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)
                - vlm.pixel_mean) / vlm.pixel_std
    assert torch.allclose(vlm.preprocess(x), expected, atol=1e-6)
    native = torch.rand(2, 3, 32, 32)
    assert torch.allclose(vlm.preprocess(native), (native - vlm.pixel_mean) / vlm.pixel_std)


def test_non_square_inputs_are_centre_cropped_on_the_short_side(vlm):
    assert vlm.preprocess(torch.rand(1, 3, 20, 60)).shape == (1, 3, 32, 32)


def test_zero_shot_logits_are_scaled_cosines_of_template_ensembles(vlm):
    classes, templates = ["cat", "dog", "car"], ["a photo of a {}.", "a drawing of a {}."]
    classifier = vlm.zero_shot(classes, templates)
    with torch.no_grad():
        per_template = torch.stack([vlm.encode_text([t.format(c) for t in templates], normalize=True).mean(0)
                                    for c in classes])
        text = F.normalize(per_template, dim=-1)
        x = torch.rand(3, 3, 32, 32)
        expected = vlm.logit_scale * vlm.encode_image(x, normalize=True) @ text.t()
        assert torch.allclose(classifier(x), expected, atol=1e-5)
    assert classifier.num_classes == 3 and classifier.logit_scale == pytest.approx(vlm.logit_scale)
    assert vlm.zero_shot(classes, logit_scale=100.0).logit_scale == 100.0


def test_text_embeddings_are_cached_until_the_text_tower_changes(monkeypatch):
    vlm = tiny_vlm()
    calls = []
    original = vlm.encode_text
    monkeypatch.setattr(vlm, "encode_text",
                        lambda texts, normalize=False: calls.append(1) or original(texts, normalize))
    first = vlm.zero_shot(["a", "b"]).class_embeddings
    vlm.zero_shot(["a", "b"])
    assert len(calls) == 1
    with torch.no_grad():
        vlm.model.visual.conv1.weight.add_(1.0)  # the image tower does not invalidate text embeddings
    vlm.zero_shot(["a", "b"])
    assert len(calls) == 1
    with torch.no_grad():
        vlm.model.token_embedding.weight.mul_(2.0)
    changed = vlm.zero_shot(["a", "b"]).class_embeddings
    assert len(calls) == 2 and not torch.allclose(first, changed)


@pytest.mark.parametrize("x, fragment", [
    (torch.rand(3, 32, 32), "shape"),
    (torch.rand(1, 1, 32, 32), "shape"),
    (torch.rand(1, 3, 32, 32) * 255, r"\[0, 1\]"),
    (torch.rand(1, 3, 32, 32) - 0.5, r"\[0, 1\]"),
    ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), "floating point"),
    ([[0.5]], "torch.Tensor"),
])
def test_bad_images_get_one_clear_sentence(vlm, x, fragment):
    with pytest.raises(InputError, match=fragment) as error:
        vlm.zero_shot(["a", "b"])(x)
    assert "\n" not in str(error.value)


def test_one_class_or_templates_without_placeholder_are_refused(vlm):
    with pytest.raises(ParameterError, match="at least 2"):
        vlm.zero_shot(["only"])
    with pytest.raises(ParameterError, match="placeholder"):
        vlm.zero_shot(["a", "b"], ["a photo"])


def test_from_open_clip_builds_real_architectures_without_download():
    vlm = VLM.from_open_clip("ViT-B-32")
    assert vlm.image_size == (224, 224) and vlm.name == "ViT-B-32"
    with torch.no_grad():
        logits = vlm.zero_shot(["a", "b"])(torch.rand(1, 3, 32, 32))
    assert logits.shape == (1, 2)
    with pytest.raises(UnknownNameError, match="Did you mean 'ViT-B-32'"):
        VLM.from_open_clip("ViT-B-23")
