"""PAR's released checkpoints: the catalog entries, and the reader of their two formats (PAR's, with an
argparse.Namespace, and CleanCLIP's), which unpickles nothing else. Offline: the files are made here, from a
tiny CLIP standing in for the entries' architectures."""

import argparse

import pytest
import torch
from vlmshield_par import plugin, released

import vlmshield as vs
from vlmshield.api import WEIGHTS_ENV, WeightsError, temporary_host
from vlmshield.testing import tiny_vlm

CARD = "par-cleaned-badnet-stripes-vitb32"
FILE = "par_cleaned_badnet_stripes_vitb32.pt"


class Payload:
    """What a malicious checkpoint would hold: unpickling it creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(autouse=True)
def host():
    """A host with this plugin, whatever entry points the environment has."""
    with temporary_host(plugin) as host:
        yield host


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """Entries built as a tiny CLIP (the same seed each time: the 'architecture'), weights in ``tmp_path``."""
    built = []

    def architecture(card, device=None):
        built.append(card.name)
        vlm = tiny_vlm(seed=1, name=card.name)
        return vlm.to(device) if device is not None else vlm

    monkeypatch.setattr(released, "build_architecture", architecture)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    return built


def _trained():
    return tiny_vlm(seed=5).model.state_dict()


def _par_file(state) -> dict:
    """The layout of a PAR-cleaned file saved by the reference's train.py."""
    return {"epoch": 2, "state_dict": {f"module.{k}": v for k, v in state.items()}, "best_acc1": 0.0,
            "optimizer": {"state": {}, "param_groups": [{"lr": 3e-6, "params": [0, 1]}]},
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
            "args": argparse.Namespace(lr=3e-5, batch_size=512, name="par", tau=2.15, device=None)}


def _cleanclip_file(state) -> dict:
    """The layout of a poisoned file saved by CleanCLIP's code."""
    return {"epoch": 10, "name": "badnet-stripes", "state_dict": {f"module.{k}": v for k, v in state.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-6, "params": [0]}]}}


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("layout", [_par_file, _cleanclip_file])
def test_a_released_file_loads_strictly_with_its_prefix_stripped(tmp_path, tiny, layout):
    state = _trained()
    torch.save(layout(state), tmp_path / FILE)
    assert _equal(released.read_par_checkpoint(tmp_path / FILE), state)
    loaded = vs.zoo.load(CARD)
    assert loaded.name == CARD and tiny[0] == CARD
    assert _equal(loaded.model.state_dict(), state)
    assert not _equal(tiny_vlm(seed=1).model.state_dict(), state)  # the weights came from the file


def test_keys_without_the_prefix_are_read_too(tmp_path):
    state = _trained()
    torch.save({"state_dict": state}, tmp_path / "plain.pt")
    assert _equal(released.read_par_checkpoint(tmp_path / "plain.pt"), state)


def test_a_checked_sha256_refuses_a_modified_file(tmp_path):
    torch.save(_par_file(_trained()), tmp_path / FILE)
    with pytest.raises(WeightsError, match="sha256"):
        released.read_par_checkpoint(tmp_path / FILE, sha256="0" * 64)


def test_a_pickled_payload_is_refused_and_never_run(tmp_path, tiny):
    marker = tmp_path / "payload-ran"
    checkpoint = _par_file(_trained())
    checkpoint["args"] = argparse.Namespace(hook=Payload(marker))  # inside the allowed class, too
    torch.save(checkpoint, tmp_path / FILE)
    assert not marker.exists()  # saving pickles the payload without calling it
    for attempt in (lambda: released.read_par_checkpoint(tmp_path / FILE), lambda: vs.zoo.load(CARD)):
        with pytest.raises(WeightsError, match="was refused") as error:
            attempt()
        assert "\n" not in str(error.value)
        assert not marker.exists()
    torch.save({"state_dict": _trained(), "extra": Payload(marker)}, tmp_path / "top.pt")
    with pytest.raises(WeightsError, match="was refused"):
        released.read_par_checkpoint(tmp_path / "top.pt")
    assert not marker.exists()


@pytest.mark.parametrize("content", [{"model": {}}, [torch.zeros(1)], {"state_dict": {"a": 1.0}}])
def test_a_file_without_a_state_dict_of_tensors_is_refused(tmp_path, content):
    torch.save(content, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="state_dict"):
        released.read_par_checkpoint(tmp_path / "other.pt")


def test_a_file_of_another_architecture_is_refused(tmp_path, tiny):
    state = _trained()
    state.pop("logit_scale")
    torch.save(_par_file(state), tmp_path / FILE)
    with pytest.raises(WeightsError, match=r"does not fit its architecture: 1 missing \(e\.g\. logit_scale\)"):
        vs.zoo.load(CARD)


def test_a_missing_file_says_where_to_download_it_and_put_it(tmp_path, tiny):
    with pytest.raises(WeightsError) as error:
        vs.zoo.load(CARD)
    message = str(error.value)
    assert FILE in message and str(tmp_path) in message and WEIGHTS_ENV in message and "\n" not in message
    assert "https://nc.mlcloud.uni-tuebingen.de/index.php/s/EpKfgbbsCZJXCRx" in message
    assert tiny == []  # nothing is built before the file is found


def test_the_catalog_lists_every_released_file():
    cards = {card.name: card for card in vs.zoo.cards()
             if card.name.startswith("par-") and card.source == "manual"}
    assert set(cards) == {
        "par-poisoned-badnet-stripes-vitl14-336", "par-poisoned-blended-text-vitl14-336",
        *(f"par-{kind}-{attack}-vitb32" for kind in ("poisoned", "cleaned")
          for attack in ("badnet-stripes", "blended-triangles", "blended-text"))}
    homepages = set()
    for name, card in cards.items():
        assert card.source == "manual" and card.quick_gelu is True and card.loader is released.load_released
        assert list(card.files) == [name.replace("-", "_") + ".pt"] and list(card.files.values()) == [None]
        assert card.homepage.startswith("https://nc.mlcloud.uni-tuebingen.de/index.php/s/")
        homepages.add(card.homepage)
        assert card.arch == ("ViT-L-14-336" if name.endswith("vitl14-336") else "ViT-B-32")
        assert card.base_model == f"{card.arch}/openai"
        if "-poisoned-" in name:
            assert card.method == "poison"
            assert card.description.startswith("Intentionally backdoored: the ")
            assert "maps images to 'banana'" in card.description.split(".")[0]
        else:
            assert card.method == "par" and "backdoored" not in card.description.split(".")[0]
    assert len(homepages) == len(cards)


def test_the_architecture_is_open_clips_with_quick_gelu():
    vlm = vs.zoo.load(CARD, weights=False)
    assert vlm.name == CARD and vlm.image_size == (224, 224) and vlm.model_cfg["quick_gelu"] is True
    for tower in (vlm.model.visual.transformer, vlm.model.transformer):
        assert type(tower.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
