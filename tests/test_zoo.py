import pytest

import vlmshield as vs
from vlmshield.core import UnknownNameError, VlmshieldError


def test_base_models_are_listed_with_their_plugin():
    names = [card.name for card in vs.zoo.list(method="none")]
    assert {"clip-vitb32", "clip-vitb16", "clip-vitl14", "clip-rn50"} <= set(names)
    assert [card.name for card in vs.zoo.list(arch="ViT-B-16")] == ["clip-vitb16"]
    info = vs.zoo.info("CLIP_ViTB32")
    assert info["arch"] == "ViT-B-32" and info["pretrained"] == "openai"
    assert info["plugin"].startswith("vlmshield.zoo.catalog (vlmshield ")


def test_weights_false_builds_the_architecture_without_download():
    vlm = vs.zoo.load("clip-rn50", weights=False)
    assert isinstance(vlm, vs.VLM) and vlm.name == "clip-rn50" and not vlm.training
    assert vlm.image_size == (224, 224)


def test_unknown_names_suggest_and_offline_downloads_fail_in_one_sentence():
    with pytest.raises(UnknownNameError, match="Did you mean 'clip-vitb32'"):
        vs.zoo.load("clip-vitb23")
    with pytest.raises(VlmshieldError, match="could not load the 'openai' weights of ViT-B-32") as error:
        vs.zoo.load("clip-vitb32")  # HF_HUB_OFFLINE=1 in tests, nothing cached
    assert "\n" not in str(error.value) and "--no-weights" in str(error.value)


def test_names_of_a_method_plugin_say_which_distribution_to_install(monkeypatch, capsys):
    for load in (lambda: vs.zoo.load("hpt-gpd-vitb16"), lambda: vs.zoo.load("FARE2_ViTL14")):
        with pytest.raises(UnknownNameError, match=r"plugin vlmshield-(hpt-gpd|fare): `pip install vlmshield-"):
            load()
    with pytest.raises(UnknownNameError, match="pip install vlmshield-ttc"):
        vs.defense("ttc")
    assert vs.core.plugin_hint("parrot") == "" and vs.core.plugin_hint("clip-vitb32") == ""
    # installed but not loaded (disabled, or failing to import): the message says where to look instead
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: object())
    assert "installed but not loaded" in vs.core.plugin_hint("tecoa4-vitb32")
    from vlmshield.cli import main

    assert main(["info", "dart-vitb16"]) == 2
    assert "installed but not loaded" in capsys.readouterr().err
