"""Vision-only checkpoints: an image tower's state dict loaded into its base model."""

import pytest
import torch

import vlmshield as vs
from vlmshield.api import VLM, ModelCard
from vlmshield.core.weights import WeightsError
from vlmshield.world.models import build
from vlmshield.zoo import visual


@pytest.fixture
def fine_tuned():
    """A tinyvit8 whose image tower differs from the shipped one: the 'fine-tuned' model."""
    torch.manual_seed(7)
    return build("tinyvit8").eval()


def _images():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("layout", ["plain", "tecoa"])
def test_a_vision_checkpoint_replaces_the_image_tower_and_keeps_the_text_tower(tmp_path, fine_tuned, layout):
    state = fine_tuned.model.visual.state_dict()
    if layout == "tecoa":  # TeCoA's checkpoints nest the tower under one key
        state = {"vision_encoder_state_dict": state}
    path = tmp_path / "final.pt"
    torch.save(state, path)
    base = vs.zoo.load("clip-tinyvit8")
    loaded = vs.zoo.load("clip-tinyvit8", visual=path)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(_images()), fine_tuned.encode_image(_images()))
        assert not torch.equal(loaded.encode_image(_images()), base.encode_image(_images()))
        assert torch.equal(loaded.encode_text(["a red star."]), base.encode_text(["a red star."]))


def test_a_checkpoint_of_another_tower_is_refused_naming_a_key(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "rn.pt"
    torch.save(build("tinyrn").model.visual.state_dict(), path)
    with pytest.raises(WeightsError, match=r"vision checkpoint .*rn\.pt .* does not fit .* missing \(e\.g\. "):
        vs.zoo.load("clip-tinyvit8", visual=path)
    with pytest.raises(WeightsError, match="does not exist"):
        vs.zoo.load("clip-tinyvit8", visual=tmp_path / "absent.pt")


def test_a_pickled_payload_in_a_vision_checkpoint_is_never_run(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "hook": print}, path)
    with pytest.raises(WeightsError, match="refused"):
        vs.zoo.load("clip-tinyvit8", visual=path)


def test_a_manual_entry_says_where_to_put_its_file_then_loads_it(tmp_path, monkeypatch, fine_tuned):
    card = ModelCard("fare4-tinyvit8", arch="tinyvit8", method="fare", base_model="tinyvit8/world",
                     source="manual", files={"fare.pt": None}, homepage="https://example.org/weights",
                     loader=visual.load_manual, description="a test entry")
    monkeypatch.setenv(visual.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(WeightsError) as error:
        card.load()
    message = str(error.value)
    assert "fare.pt" in message and str(tmp_path) in message and "https://example.org/weights" in message
    assert visual.WEIGHTS_ENV in message and "\n" not in message

    torch.save(fine_tuned.model.visual.state_dict(), tmp_path / "fare.pt")
    built = []

    def base(arch, pretrained=None, *, device=None, name=None, **_):  # stands in for open_clip's download
        built.append((arch, pretrained))
        return vs.zoo.load("clip-tinyvit8", device=device)

    monkeypatch.setattr(VLM, "from_open_clip", staticmethod(base))
    loaded = card.load()
    assert built[0] == ("tinyvit8", "world") and loaded.name == "fare4-tinyvit8"  # then the card's check, unweighted
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(_images()), fine_tuned.encode_image(_images()))


def test_the_vision_only_catalog_entries_point_to_their_files():
    assert {card.name for card in vs.zoo.cards(method="fare", arch="ViT-B-32")} == {
        "fare1-vitb32", "fare4-vitb32", "fare4-vitb32-laion2b"}
    for method, eps in (("tecoa", 1), ("fare", 1), ("tecoa", 4), ("fare", 4)):
        card = vs.zoo.info(f"{method}{eps}-vitb32")
        assert card["source"] == "manual" and card["homepage"].startswith("https://github.com/chs20/RobustVLM")
        assert list(card["files"]) == [f"vitb32_{method}_eps_{eps}.pt"] and card["base_model"] == "ViT-B-32/openai"
        assert card["threat_model"] == {"norm": "Linf", "eps": f"{eps}/255"}
    vlm = vs.zoo.load("fare4-vitb32", weights=False)
    assert vlm.name == "fare4-vitb32" and vlm.image_size == (224, 224)
