"""zoo.save and local-dir: open_clip's Hub layout, round trips, and refusing damaged folders."""

import json
import re
import struct

import open_clip
import pytest
import torch

import vlmshield as vs
from vlmshield.api import VLM
from vlmshield.cli import main
from vlmshield.core.weights import WeightsError, header_parameter_count
from vlmshield.world import models as wm
from vlmshield.zoo import folder


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


# ----------------------------------------------------------------------------- a folder's config, checked first
@pytest.fixture(scope="module")
def world_model():
    return vs.zoo.load("clip-tinyvit4")


@pytest.fixture
def saved(world_model, tmp_path):
    """A saved world model, and the number of parameters (state dict entries) its weights file holds."""
    vs.zoo.save(world_model, tmp_path)
    return tmp_path, sum(t.numel() for t in world_model.model.state_dict().values())


def edit_config(directory, edit):
    """Rewrite the folder's open_clip_config.json with ``edit`` applied to the parsed config."""
    path = directory / "open_clip_config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def refused(directory, weights=True) -> str:
    with pytest.raises(WeightsError) as caught:
        vs.zoo.load(f"local-dir:{directory}", weights=weights)
    message = str(caught.value)
    assert "\n" not in message and message.endswith(".")
    return message


def never_built(monkeypatch):
    """Make building a model for real (not on the meta device) fail the test."""
    def build(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(VLM, "from_config", build)


def test_a_save_and_load_round_trip_writes_the_same_bytes(world_model, saved, tmp_path_factory):
    directory, _ = saved
    again = vs.zoo.save(vs.zoo.load(f"local-dir:{directory}"), tmp_path_factory.mktemp("again"))
    for name in ("open_clip_config.json", "open_clip_model.safetensors", "README.md"):
        assert (again / name).read_bytes() == (directory / name).read_bytes()


def test_the_header_counts_the_parameters_without_reading_tensors(saved, tmp_path):
    directory, count = saved
    weights = directory / "open_clip_model.safetensors"
    assert header_parameter_count(weights) == count
    for name, data in (("short", b"\x01\x02"), ("long", struct.pack("<Q", 1 << 40) + b"{}"),
                       ("text", struct.pack("<Q", 5) + b"nope!"), ("list", struct.pack("<Q", 2) + b"[]"),
                       ("shape", struct.pack("<Q", 27) + b'{"w":{"shape":[2,"three"]}}')):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsError, match=rf"^weight file {tmp_path / name} has no readable safetensors header "
                                               r"\([^\n]+\)\.$"):
            header_parameter_count(tmp_path / name)


def test_a_model_too_large_for_memory_is_refused_before_it_is_built(saved, monkeypatch):
    directory, count = saved
    edit_config(directory, lambda c: c["model_cfg"]["vision_cfg"].update(width=32768, layers=64, head_width=64))
    never_built(monkeypatch)
    message = refused(directory, weights=False)
    implied = int(re.search(r"describes a model of ([\d,]+) parameters", message)[1].replace(",", ""))
    assert implied > 8 * 10**11 and message.startswith(f"the config of {directory} describes a model of ")
    assert re.search(r", [\d,.]+ GiB as float32, more than this machine's [\d,.]+ GiB of memory: ", message)
    assert refused(directory).startswith(f"the config of {directory} implies {implied:,} parameters, but its "
                                         f"weights file holds {count:,}: ")


def test_a_config_that_does_not_fit_its_weights_is_refused_before_it_is_built(saved, monkeypatch):
    directory, count = saved
    edit_config(directory, lambda c: c["model_cfg"]["vision_cfg"].update(layers=5))  # saved with 4
    assert vs.zoo.load(f"local-dir:{directory}", weights=False).name == "clip-tinyvit4"  # no weights to compare
    never_built(monkeypatch)
    message = refused(directory)
    assert re.fullmatch(rf"the config of {directory} implies [\d,]+ parameters, but its weights file holds {count:,}: "
                        r"the config and the weights do not belong together; restore the config saved with these "
                        r"weights\.", message)


def test_the_weights_file_is_counted_when_the_meta_device_cannot_build_the_model(saved, monkeypatch):
    directory, count = saved
    build = VLM.open_clip_model

    def no_meta(model_cfg):
        if torch.empty(0).is_meta:
            raise RuntimeError("Tensor.item() cannot be called on meta tensors")
        return build(model_cfg)

    monkeypatch.setattr(VLM, "open_clip_model", staticmethod(no_meta))
    assert vs.zoo.load(f"local-dir:{directory}").name == "clip-tinyvit4"
    monkeypatch.setattr(folder, "memory_bytes", lambda: 4 * count - 1)
    assert refused(directory).startswith(f"the weights file of {directory} describes a model of {count:,} "
                                         f"parameters, ")
    assert vs.zoo.load(f"local-dir:{directory}", weights=False).name == "clip-tinyvit4"  # nothing to count


def test_a_legacy_weights_file_has_no_header_to_count(world_model, saved, monkeypatch):
    directory, _ = saved
    (directory / "open_clip_model.safetensors").unlink()
    torch.save(world_model.model.state_dict(), directory / "open_clip_pytorch_model.bin")
    edit_config(directory, lambda c: c["vlmshield"].pop("weights_sha256"))
    assert vs.zoo.load(f"local-dir:{directory}").name == "clip-tinyvit4"
    edit_config(directory, lambda c: c["model_cfg"]["vision_cfg"].update(layers=5))
    assert "does not fit its architecture" in refused(directory)  # found when the weights are loaded


@pytest.mark.parametrize("edit, error", [
    (lambda c: c["model_cfg"].update(embed_dim="abc"), "TypeError"),
    (lambda c: c["model_cfg"].update(wings=2), "TypeError: CLIP.__init__() got an unexpected keyword argument"),
    (lambda c: c["model_cfg"].update(text_cfg="small"), "AttributeError"),
    (lambda c: c["model_cfg"]["vision_cfg"].update(layers=2.5), "TypeError"),
    (lambda c: c["model_cfg"]["vision_cfg"].update(patch_size=0), "ZeroDivisionError"),
])
def test_a_config_the_library_cannot_build_is_one_sentence_naming_the_folder(saved, edit, error):
    directory, _ = saved
    edit_config(directory, edit)
    for weights in (True, False):
        message = refused(directory, weights=weights)
        assert message.startswith(f"the config of {directory} does not build a model ({error}")
        assert message.endswith("); fix it, or replace it with the config saved with the weights.")


@pytest.mark.parametrize("tokenizer, problem", [
    ("words", "got a str"),
    ({"type": "words", "context_length": 20}, "its words are not a list of strings"),
    ({"type": "words", "words": "abc", "context_length": 20}, "its words are not a list of strings"),
    ({"type": "words", "words": ["a", "b"], "context_length": "20"}, "got context_length '20'"),
    ({"type": "bpe", "words": ["a", "b"], "context_length": 20}, "got type 'bpe'"),
])
def test_a_malformed_word_tokenizer_is_refused(saved, tokenizer, problem):
    directory, _ = saved
    edit_config(directory, lambda c: c["vlmshield"].update(tokenizer=tokenizer))
    message = refused(directory, weights=False)
    assert message.startswith(f"{directory / 'open_clip_config.json'} has a malformed vlmshield tokenizer: a word "
                              f"tokenizer's config is ")
    assert message.endswith(f"; {problem}.")


@pytest.mark.parametrize("edit", [
    lambda t: t.update(words=t["words"] + ["zebra", "zeppelin"]),  # ids past the text model's vocabulary
    lambda t: t.update(context_length=10),  # the text model's is 20
])
def test_a_word_tokenizer_that_does_not_fit_the_text_model_is_refused(saved, edit):
    directory, _ = saved
    edit_config(directory, lambda c: edit(c["vlmshield"]["tokenizer"]))
    assert refused(directory).startswith(f"the word tokenizer in {directory / 'open_clip_config.json'} has ")


@pytest.mark.parametrize("preprocess, problem", [
    ({"mean": [0.5, 0.5]}, "its mean should be a number or a list of 3 numbers; got [0.5, 0.5]"),
    ({"std": [0.1, 0.0, 0.1]}, "its std should be a number or a list of 3 numbers above 0; got [0.1, 0.0, 0.1]"),
    ({"size": "abc"}, "its size should be a positive integer or a list of two; got 'abc'"),
    ({"interpolation": "nearest"}, "its interpolation should be bicubic or bilinear; got 'nearest'"),
])
def test_a_malformed_preprocess_cfg_is_refused(saved, preprocess, problem):
    directory, _ = saved
    edit_config(directory, lambda c: c["preprocess_cfg"].update(preprocess))
    assert refused(directory, weights=False) == \
        f"{directory / 'open_clip_config.json'} has a malformed preprocess_cfg: {problem}."


def test_the_cli_refuses_a_broken_config_in_one_line(saved, capsys):
    directory, _ = saved
    edit_config(directory, lambda c: c["model_cfg"].update(embed_dim="abc"))
    code = main(["eval", "--model", f"local-dir:{directory}", "--dataset", "fakedata", "--n", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"vlmshield: error: the config of {directory} does not build a model (TypeError: ")


def test_a_classifier_folder_is_checked_the_same_way(tmp_path, monkeypatch):
    from vlmshield.api import ImageClassifier

    classifier = ImageClassifier.from_timm("resnet10t", 4, image_size=32)
    for name, edit in (("huge", lambda c: c.update(architecture="vit_base_patch16_224",
                                                   model_args={"embed_dim": 16384, "depth": 48, "num_heads": 16})),
                       ("broken", lambda c: c.update(num_classes="four", model_args={"num_classes": "four"})),
                       ("mean", lambda c: c["pretrained_cfg"].update(mean=[0.5, 0.5]))):
        directory = vs.zoo.save(classifier, tmp_path / name)
        config = json.loads((directory / "config.json").read_text())
        edit(config)
        (directory / "config.json").write_text(json.dumps(config))
        with pytest.raises(WeightsError) as caught:
            vs.zoo.load(f"local-dir:{directory}", weights=False)
        message = str(caught.value)
        assert "\n" not in message and message.endswith(".")
        assert message.startswith({"huge": f"the config of {directory} describes a model of ",
                                   "broken": f"the config of {directory} does not build a model (TypeError: ",
                                   "mean": f"{directory / 'config.json'} has a malformed pretrained_cfg: "}[name])
