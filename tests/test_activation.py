"""Activations: every model is built with the one its weights were trained with (QuickGELU for OpenAI's
CLIPs and their fine-tunes, nn.GELU for LAION's), random weights and saved folders included, and building a
model leaves the process's logging as it was."""

import json
import logging
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from torch import nn

import vlmshield as vs
from vlmshield.api import VlmshieldError, get_host
from vlmshield.zoo import catalog

CORE_CATALOG = (*catalog.BASE_MODELS, *catalog.ROBUST_MODELS, *catalog.VISION_ONLY_MODELS)
OPEN_CLIP_DIR = Path(open_clip.__file__).resolve().parent


def _tag_declares_quick_gelu(card) -> bool:
    """What open_clip's pretrained config says of the tag the card's weights start from."""
    arch, tag = (card.arch, card.pretrained) if card.pretrained else card.base_model.split("/")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    assert cfg, f"{card.name}: open_clip knows no tag {arch}/{tag}"
    return bool(cfg.get("quick_gelu", False))


def _activations(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules() if isinstance(m, (QuickGELU, nn.GELU))}


def _assert_activation(vlm, quick_gelu: bool, what: str) -> None:
    expected = QuickGELU if quick_gelu else nn.GELU
    text = vlm.model.text if hasattr(vlm.model, "text") else vlm.model.transformer
    assert _activations(text) == {expected}, what
    # a ResNet image tower has no GELU at all, and a timm tower always runs nn.GELU (never QuickGELU)
    assert _activations(vlm.model.visual) <= {expected}, what


def test_the_openai_initialised_catalog_entries_are_the_ones_declaring_quick_gelu():
    for card in CORE_CATALOG:
        from_openai = card.pretrained == "openai" or card.base_model.endswith("/openai")
        assert _tag_declares_quick_gelu(card) == from_openai == card.quick_gelu, card.name
        assert ("QuickGELU" in card.description) == from_openai, card.name
        assert vs.zoo.info(card.name)["quick_gelu"] == from_openai, card.name


def test_every_core_catalog_entry_without_weights_has_the_activation_its_tag_declares():
    for card in CORE_CATALOG:
        quick_gelu = _tag_declares_quick_gelu(card)
        with torch.device("meta"):  # the real modules, without initialising half a billion weights
            vlm = vs.zoo.load(card.name, device="meta", weights=False)
        _assert_activation(vlm, quick_gelu, card.name)
        # what zoo.save writes as open_clip_config.json
        assert bool(vlm.model_cfg.get("quick_gelu", False)) == quick_gelu, card.name


def test_a_saved_quick_gelu_model_reloads_with_quick_gelu_here_and_in_plain_open_clip(tmp_path):
    vlm = vs.zoo.load("clip-vitb32", weights=False)
    _assert_activation(vlm, True, "built")
    vs.zoo.save(vlm, tmp_path)
    assert json.loads((tmp_path / "open_clip_config.json").read_text())["model_cfg"]["quick_gelu"] is True
    back = vs.zoo.load(f"local-dir:{tmp_path}")
    _assert_activation(back, True, "reloaded by vlmshield")
    plain = open_clip.create_model(f"local-dir:{tmp_path}").eval()
    assert _activations(plain.transformer) == _activations(plain.visual) == {QuickGELU}
    images = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(vlm.encode_image(images), back.encode_image(images))
        assert torch.equal(vlm.model.encode_image(vlm.preprocess(images)), plain.encode_image(vlm.preprocess(images)))


def test_building_a_model_lets_open_clip_log_and_leaves_logging_as_it_was(caplog):
    before = logging.root.manager.disable
    logging.disable(logging.DEBUG)  # a process that silenced debug logging for itself
    try:
        filters = list(logging.root.filters)
        caplog.set_level(logging.WARNING)
        with torch.device("meta"):
            vs.zoo.load("clip-rn50", device="meta", weights=False)
        assert logging.root.manager.disable == logging.DEBUG and logging.root.filters == filters
        # open_clip logs through the root logger; its warning about random weights got through
        assert any(record.levelno == logging.WARNING and Path(record.pathname).resolve().parent == OPEN_CLIP_DIR
                   for record in caplog.records)
        caplog.clear()
        logging.warning("still heard after the load")
        assert [record.getMessage() for record in caplog.records] == ["still heard after the load"]
    finally:
        logging.disable(before)


def test_only_the_download_error_said_again_in_vlmshields_sentence_is_filtered(caplog):
    caplog.set_level(logging.INFO)
    filters = list(logging.root.filters)
    with pytest.raises(VlmshieldError, match="Failed to download weights for tag 'openai'"):
        vs.zoo.load("clip-vitb32")  # HF_HUB_OFFLINE=1 in tests, nothing cached
    from_open_clip = [record.getMessage() for record in caplog.records
                      if Path(record.pathname).resolve().parent == OPEN_CLIP_DIR]
    assert from_open_clip, "open_clip's other messages are let through"
    assert not any(message.startswith("Failed to download weights") for message in from_open_clip)
    assert logging.root.filters == filters
    logging.getLogger().error("Failed to download weights for tag 'x': someone else's error")
    assert caplog.records[-1].getMessage().startswith("Failed to download weights for tag 'x'")


def _tiny(quick_gelu):
    model_cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 16, "layers": 1,
                                                 "head_width": 8},
                 "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    if quick_gelu is not None:
        model_cfg["quick_gelu"] = quick_gelu
    return vs.VLM.from_config(model_cfg, name="tiny")


@pytest.mark.parametrize("declared", [None, False])
def test_a_hub_config_declaring_another_activation_than_the_card_is_warned_about(monkeypatch, declared):
    monkeypatch.setattr(catalog.hub, "load", lambda spec, device=None, sha256=None: _tiny(declared))
    with pytest.warns(UserWarning, match=r"tecoa2-vitl14: the config of chs20/tecoa2-clip declares nn\.GELU, but "
                                         r"its weights come from ViT-L-14/openai, trained with QuickGELU"):
        catalog.load_from_hub(get_host().get("model", "tecoa2-vitl14").obj)  # the loader alone: a tiny model


def test_robustvlm_hub_configs_declare_quick_gelu_as_a_string_and_build_with_it(monkeypatch, recwarn):
    """RobustVLM's ViT-L/14 Hub configs say ``"quick_gelu": "TRUE"``: open_clip and vlmshield build QuickGELU."""
    tiny = _tiny("TRUE")
    _assert_activation(tiny, True, "from a config saying TRUE")
    monkeypatch.setattr(catalog.hub, "load", lambda spec, device=None, sha256=None: tiny)
    catalog.load_from_hub(get_host().get("model", "tecoa2-vitl14").obj)
    assert not [w for w in recwarn if "declares" in str(w.message)]


def test_from_open_clip_follows_the_tag_the_architecture_or_the_caller():
    from vlmshield.core.model import declared_quick_gelu

    assert declared_quick_gelu("ViT-B-32", "openai") is True
    assert declared_quick_gelu("ViT-B-32", "laion2b_s34b_b79k") is False
    assert declared_quick_gelu("ViT-B-32", "no-such-tag") is None and declared_quick_gelu("tinyvit8", "world") is None
    with torch.device("meta"):
        for arch, quick_gelu, expected in (("ViT-B-32", None, False), ("ViT-B-32", True, True),
                                           ("ViT-B-32-quickgelu", None, True), ("ViT-B-32-quickgelu", False, False)):
            vlm = vs.VLM.from_open_clip(arch, quick_gelu=quick_gelu, device="meta")
            _assert_activation(vlm, expected, f"{arch}, quick_gelu={quick_gelu}")
            assert vlm.model_cfg.get("quick_gelu", False) is expected


def test_a_recipe_without_weights_has_the_activation_of_its_base_model():
    card = vs.core.ModelCard("fare9-vitb32", arch="ViT-B-32", method="fare", base_model="clip-vitb32",
                             source="recipe", recipe="vlmshield train fare --model clip-vitb32")
    assert card.quick_gelu is None and card.resolved_quick_gelu() is True
    with torch.device("meta"):
        _assert_activation(card.load(device="meta", weights=False), True, card.name)
