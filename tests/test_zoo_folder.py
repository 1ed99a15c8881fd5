"""zoo.save and local-dir: open_clip's Hub layout, round trips, and refusing damaged folders."""

import json

import open_clip
import pytest
import torch

import vlmshield as vs
from vlmshield.core.weights import WeightsError
from vlmshield.world import models as wm


def test_world_model_round_trip_keeps_outputs_tokenizer_and_metrics(tmp_path):
    vlm = vs.zoo.load("clip-tinyvit8")
    card = vs.core.get_host().get("model", "clip-tinyvit8").obj
    vs.zoo.save(vlm, tmp_path, card, wm.read_card("clip-tinyvit8")["metrics"])
    assert {p.name for p in tmp_path.iterdir()} == {"open_clip_config.json", "open_clip_model.safetensors",
                                                    "README.md"}
    back = vs.zoo.load(f"local-dir:{tmp_path}")
    images, texts = torch.rand(4, 3, 32, 32), ["a red star", "a striped background"]
    assert torch.equal(vlm.encode_image(images), back.encode_image(images))
    assert torch.equal(vlm.encode_text(texts), back.encode_text(texts))
    assert back.name == "clip-tinyvit8" and back.image_size == vlm.image_size
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: open_clip\n") and "model-index:" in readme
    assert 'name: "robust accuracy (aa-lite, Linf eps 4/255, n 250)"' in readme  # the world protocol


def test_a_saved_open_clip_architecture_loads_with_plain_open_clip(tmp_path):
    vlm = vs.zoo.load("clip-vitb32", weights=False)
    vs.zoo.save(vlm, tmp_path)
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path}")
    images = vlm.preprocess(torch.rand(2, 3, 224, 224))
    with torch.no_grad():
        assert torch.equal(vlm.model.encode_image(images), model.eval().encode_image(images))
    assert torch.equal(vs.zoo.load(f"local-dir:{tmp_path}").encode_text(["a dog"]), vlm.encode_text(["a dog"]))


def test_damaged_folders_are_refused_in_one_sentence(tmp_path):
    vs.zoo.save(vs.zoo.load("clip-tinyrn"), tmp_path)
    weights = tmp_path / "open_clip_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-2] + b"\x00\x00")
    with pytest.raises(WeightsError, match="sha256"):
        vs.zoo.load(f"local-dir:{tmp_path}")
    assert vs.zoo.load(f"local-dir:{tmp_path}", weights=False).name == "clip-tinyrn"  # no file needed
    config = tmp_path / "open_clip_config.json"
    config.write_text(json.dumps({"preprocess_cfg": {}}))
    with pytest.raises(WeightsError, match="not an open_clip config"):
        vs.zoo.load(f"local-dir:{tmp_path}")
    config.unlink()
    with pytest.raises(WeightsError, match="not a model folder"):
        vs.zoo.load(f"local-dir:{tmp_path}")
