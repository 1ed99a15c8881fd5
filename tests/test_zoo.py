import pytest

import vlmshield as vs
from vlmshield.api import UnknownNameError, VlmshieldError, temporary_host


def test_base_models_are_listed_with_their_plugin():
    names = [card.name for card in vs.zoo.cards(method="none")]
    assert {"clip-vitb32", "clip-vitb16", "clip-vitl14", "clip-rn50"} <= set(names)
    assert [card.name for card in vs.zoo.cards(method="none", arch="ViT-B-16")] == ["clip-vitb16"]
    assert {card.name for card in vs.zoo.cards(method="fare", arch="ViT-L-14")} == {"fare2-vitl14", "fare4-vitl14"}
    info = vs.zoo.info("CLIP_ViTB32")
    assert info["arch"] == "ViT-B-32" and info["pretrained"] == "openai"
    assert info["plugin"].startswith("vlmshield.zoo.plugin (vlmshield ")


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
    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)  # as on a machine without plugins
    for load in (lambda: vs.zoo.load("hpt-gpd-vitb16"), lambda: vs.zoo.load("FARE2_ViTB32")):
        with pytest.raises(UnknownNameError, match=r"plugin vlmshield-(hpt-gpd|fare): `pip install vlmshield-"):
            load()
    with pytest.raises(UnknownNameError, match="pip install vlmshield-ttc"):
        vs.defense("ttc")
    assert vs.core.plugin_hint("parrot") == "" and vs.core.plugin_hint("clip-vitb32") == ""
    # installed but not loaded (disabled, or failing to import): the message says where to look instead
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: object())
    assert "installed but not loaded" in vs.core.plugin_hint("tecoa4-vitb32")
    from vlmshield.cli import main

    assert main(["info", "hpt-gpd-vitb16"]) == 2
    assert "installed but not loaded" in capsys.readouterr().err


@pytest.mark.parametrize("installed", [False, True])
def test_every_catalog_entry_validates(installed):
    from vlmshield.core.card import SOURCES
    from vlmshield.core.registry import NAME_PATTERN

    with temporary_host(entry_points=installed):  # the core's catalog, then with every installed plugin's
        cards = vs.zoo.cards()
    robust = [card for card in cards if "eps" in card.threat_model]  # adversarially robust
    backdoored = [card for card in cards if "backdoor" in card.threat_model]  # a backdoor planted or removed
    if installed:
        assert {"par-poisoned-blended-text-vitb32", "par-cleaned-blended-text-vitb32"} <= {c.name for c in backdoored}
    for card in backdoored:
        assert issubclass(vs.core.get_host().get("attack", card.threat_model["backdoor"]).obj, vs.core.BackdoorAttack)
        assert card.threat_model["target"] and (card.method != "poison" or
                                                card.description.startswith("Intentionally backdoored")), card.name
    assert {"fare2-vitl14", "fare4-vitl14", "tecoa2-vitl14", "tecoa4-vitl14"} <= {card.name for card in robust}
    for card in cards:
        assert NAME_PATTERN.fullmatch(card.name) and card.description, card.name
        assert card.source.startswith(SOURCES), card.name
        if card.source.startswith("hf-hub:"):
            vs.zoo.hub.parse(card.source.removeprefix("hf-hub:"))  # raises on a malformed id
        if card.metrics:  # a domain pair's card has each part's numbers: "target:clean", "source:robust", ...
            parts = [part for part in ("", "source:", "target:") if f"{part}clean" in card.metrics]
            assert card.metrics["protocol"] and parts, card.name
            for part in parts:
                clean, by_eps = card.metrics[f"{part}clean"], card.metrics.get(f"{part}robust", {})
                assert 0 < clean <= 100 and all(0 <= value <= clean for value in by_eps.values()), card.name
                assert all(vs.core.parse_eps(eps) for eps in by_eps), card.name
    for card in (card for card in cards if card.method != "none"):
        assert card.paper and card.base_model, card.name
    for card in robust:
        names = {c.name for c in cards}  # a base model is ARCH/TAG (open_clip's) or a zoo entry
        assert card.paper and card.license and (card.base_model.count("/") == 1 or card.base_model in names), card.name
        assert card.threat_model["norm"] == "Linf" and vs.core.parse_eps(card.threat_model["eps"]) > 0
        assert card.name.startswith(card.method), card.name


def test_hub_entries_build_offline_without_weights_and_say_how_to_get_them():
    vlm = vs.zoo.load("fare4-vitb32-laion2b", weights=False)
    assert vlm.name == "fare4-vitb32-laion2b" and vlm.image_size == (224, 224)
    with pytest.raises(VlmshieldError, match="chs20/FARE4-ViT-B-32-laion2B-s34B-b79K .*local-dir:PATH") as error, \
            pytest.warns(UserWarning, match="does not pin chs20/FARE4-ViT-B-32-laion2B-s34B-b79K to a commit"):
        vs.zoo.load("fare4-vitb32-laion2b")
    assert "\n" not in str(error.value)
    info = vs.zoo.info("TeCoA4-ViTL14")
    assert info["metrics"]["robust"]["4/255"] == 31.9 and info["source"] == "hf-hub:chs20/tecoa4-clip"


def test_cli_lists_models_by_method_and_architecture(capsys):
    from vlmshield.cli import main

    assert main(["list", "models", "--method", "FARE", "--arch", "ViT-L-14"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["fare2-vitl14", "fare4-vitl14"]
    assert main(["list", "attacks", "--method", "fare"]) == 2


def test_a_recipe_entry_says_which_command_trains_it():
    card = vs.core.ModelCard("hpt-gpd-vitb32", arch="ViT-B-32", method="hpt-gpd", source="recipe",
                        recipe="vlmshield train hpt-gpd --model clip-vitb32 --proxy clip-vitb16")
    with pytest.raises(VlmshieldError, match="not published yet; `vlmshield train hpt-gpd --model clip-vitb32"):
        card.load()
    assert card.load(weights=False).name == "hpt-gpd-vitb32"
