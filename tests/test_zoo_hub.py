"""hf-hub: sources through a Hugging Face cache the test lays out itself (offline), and legacy files."""

import hashlib
import os
import pickle

import open_clip
import pytest
import torch

import vlmshield as vs
from vlmshield.api import ParameterError
from vlmshield.core.weights import WeightsError, read_legacy_weights
from vlmshield.testing import HUB_REVISION as REVISION
from vlmshield.testing import hub_cache as lay_out_cache


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    vlm = vs.zoo.load("clip-tinyrn")
    vs.zoo.save(vlm, tmp_path / "saved")
    cache = lay_out_cache(tmp_path, tmp_path / "saved")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    return vlm


def test_a_cached_pinned_revision_loads_offline(hub_cache):
    images = torch.rand(2, 3, 32, 32)
    for spec in (f"hf-hub:vlmshield-test/tiny@{REVISION}", "hf-hub:vlmshield-test/tiny"):
        loaded = vs.zoo.load(spec)
        assert loaded.name == spec and torch.equal(loaded.encode_image(images), hub_cache.encode_image(images))


def test_a_missing_hub_file_names_the_repo_and_the_way_out(hub_cache):
    with pytest.raises(WeightsError, match=r"open_clip_config.json of vlmshield-test/other@.* HF_HUB_OFFLINE"):
        vs.zoo.load(f"hf-hub:vlmshield-test/other@{REVISION}")
    with pytest.raises(ParameterError, match="hf-hub:ORG/NAME"):
        vs.zoo.load("hf-hub:no-slash")


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_legacy_files_are_read_as_tensors_only(tmp_path, capsys):
    state = {"weight": torch.ones(2, 2)}
    torch.save(state, tmp_path / "plain.bin")
    assert torch.equal(read_legacy_weights(tmp_path / "plain.bin")["weight"], state["weight"])
    (tmp_path / "evil.bin").write_bytes(pickle.dumps({"weight": _Payload()}, protocol=2))
    with pytest.raises(WeightsError, match="refused"):
        read_legacy_weights(tmp_path / "evil.bin")
    assert "this must never run" not in capsys.readouterr().out
    (tmp_path / "cut.bin").write_bytes((tmp_path / "plain.bin").read_bytes()[:40])
    with pytest.raises(WeightsError, match="refused"):
        read_legacy_weights(tmp_path / "cut.bin")


def test_a_folder_with_only_legacy_weights_loads(tmp_path):
    vlm = vs.zoo.load("clip-tinyvit8")
    vs.zoo.save(vlm, tmp_path)
    (tmp_path / "open_clip_model.safetensors").unlink()
    torch.save(vlm.model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(vs.zoo.load(f"local-dir:{tmp_path}").encode_image(images), vlm.encode_image(images))


def test_publish_dry_run_lists_the_folder_and_sends_nothing(tmp_path, capsys, monkeypatch):
    vs.zoo.save(vs.zoo.load("clip-tinyvit8"), tmp_path / "m")
    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda *a, **k: pytest.fail("dry run sent something"))
    result = vs.zoo.publish(tmp_path / "m", "org/tiny", dry_run=True)
    assert [f["path"] for f in result["files"]] == ["README.md", "open_clip_config.json",
                                                    "open_clip_model.safetensors"]
    from vlmshield.cli import main

    assert main(["publish", str(tmp_path / "m"), "--repo-id", "org/tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload clip-tinyvit8 to org/tiny" in out and "open_clip_model.safetensors" in out


def test_publish_never_follows_a_link_out_of_the_folder(tmp_path, monkeypatch):
    vs.zoo.save(vs.zoo.load("clip-tinyvit8"), tmp_path / "m")
    (tmp_path / "secret").write_text("not for the Hub")
    (tmp_path / "m" / "notes.txt").symlink_to(tmp_path / "secret")
    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda *a, **k: pytest.fail("publish sent something"))
    for dry_run in (True, False):
        with pytest.raises(ParameterError, match="notes.txt is a link .* never what a link points to"):
            vs.zoo.publish(tmp_path / "m", "org/tiny", dry_run=dry_run)


@pytest.mark.parametrize("name", ["hf-hub:../x", "hf-hub:org/..", "hf-hub:org/.hidden", "hf-hub:a/b/c"])
def test_a_malformed_hub_name_is_one_sentence(name):
    with pytest.raises(ParameterError, match="a Hub model is hf-hub:ORG/NAME"):
        vs.zoo.load(name)


def test_files_written_through_temporary_names_follow_the_umask(tmp_path):
    """Records and weights are written under private temporary names first; they end as open() would make them."""
    from vlmshield.api import atomic_write_json, write_weights

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        write_weights(tmp_path / "w.safetensors", {"x": torch.zeros(2)})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644


def test_publish_is_one_commit_and_refuses_a_tampered_folder(tmp_path, monkeypatch):
    vs.zoo.save(vs.zoo.load("clip-tinyrn"), tmp_path / "m")
    calls = []

    class Commit:
        oid, commit_url, pr_url = "f" * 40, "https://hf.co/org/tiny/commit/fff", None

    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda self, repo_id, **k: calls.append(("create", k)))
    monkeypatch.setattr("huggingface_hub.HfApi.upload_folder", lambda self, **k: calls.append(("upload", k)) or Commit)
    result = vs.zoo.publish(tmp_path / "m", "org/tiny", private=True)
    assert [c[0] for c in calls] == ["create", "upload"] and calls[0][1]["private"] is True
    assert result["revision"] == "f" * 40 and calls[1][1]["folder_path"] == tmp_path / "m"
    weights = tmp_path / "m" / "open_clip_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        vs.zoo.publish(tmp_path / "m", "org/tiny")
    assert len(calls) == 2
    with pytest.raises(ParameterError, match="ORG/NAME"):
        vs.zoo.publish(tmp_path / "m", "no-org")


def _hf_tokenized_model(tmp_path):
    """A tiny CLIP whose config names a Hugging Face tokenizer, with that tokenizer built here (a word-level
    one over a few words, saved as transformers saves any tokenizer)."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "a", "red", "blue", "star", "photo", "of"]
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    model.post_processor = tokenizers.processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    transformers.PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]", pad_token="[PAD]",
                                         bos_token="[BOS]", eos_token="[EOS]").save_pretrained(tmp_path / "words")
    model_cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1,
                                                 "head_width": 16},
                 "text_cfg": {"context_length": 8, "vocab_size": len(words), "width": 32, "heads": 2, "layers": 1,
                              "hf_tokenizer_name": "vlmshield-test/words"}}
    tokenizer = open_clip.tokenizer.HFTokenizer(str(tmp_path / "words"), context_length=8)
    return vs.core.VLM.from_config(model_cfg, tokenizer=tokenizer, name="hf-words")


def test_a_hugging_face_tokenizer_is_saved_beside_the_config_and_loads_back(tmp_path, monkeypatch):
    vlm = _hf_tokenized_model(tmp_path)
    texts = ["a red star", "a photo of a blue star"]
    saved = vs.zoo.save(vlm, tmp_path / "saved")
    assert (saved / "tokenizer_config.json").is_file() and (saved / "tokenizer.json").is_file()
    assert torch.equal(open_clip.get_tokenizer(f"local-dir:{saved}")(texts), vlm.tokenizer(texts))
    back = vs.zoo.load(f"local-dir:{saved}")
    assert torch.equal(back.tokenizer(texts), vlm.tokenizer(texts))
    assert torch.equal(back.encode_text(texts), vlm.encode_text(texts))

    cache = lay_out_cache(tmp_path, saved, repo="vlmshield-test/words")  # the Hub path fetches the files too
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requested = []
    import huggingface_hub

    download = huggingface_hub.hf_hub_download
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, **kw: (requested.append(name),
                                                                                  download(repo, name, **kw))[1])
    assert torch.equal(vs.zoo.load(f"hf-hub:vlmshield-test/words@{REVISION}").encode_text(texts),
                       vlm.encode_text(texts))
    assert {"tokenizer_config.json", "tokenizer.json"} <= set(requested)

    (saved / "tokenizer_config.json").unlink()
    with pytest.raises(WeightsError, match="has no tokenizer_config.json: its config names the Hugging Face"):
        vs.zoo.load(f"local-dir:{saved}")
    vlm.tokenizer = open_clip.SimpleTokenizer(context_length=8)  # a tokenizer that cannot write the named one
    with pytest.raises(ParameterError, match="names the Hugging Face tokenizer 'vlmshield-test/words'"):
        vs.zoo.save(vlm, tmp_path / "again")


def test_a_plugin_card_of_hub_weights_loads_them_with_its_hashes_checked(hub_cache, tmp_path):
    """A card that names a Hub repository and no loader loads that repository (not random weights), and the
    sha256 it states for a file is checked before the file is read."""
    from vlmshield.api import ModelCard, temporary_host
    from vlmshield.testing import make_plugin

    digest = hashlib.sha256((tmp_path / "saved" / "open_clip_model.safetensors").read_bytes()).hexdigest()
    cards = [ModelCard(name, arch="tinyrn", source=f"hf-hub:vlmshield-test/tiny@{REVISION}",
                       files={"open_clip_model.safetensors": sha})
             for name, sha in (("good", digest), ("bad", "0" * 64))]
    with temporary_host(make_plugin("hub-cards", register_models=lambda register: register(*cards))):
        images = torch.rand(2, 3, 32, 32)
        assert torch.equal(vs.zoo.load("good").encode_image(images), hub_cache.encode_image(images))
        assert vs.zoo.load("good").source == f"hf-hub:vlmshield-test/tiny@{REVISION}"
        with pytest.raises(WeightsError, match="sha256"):
            vs.zoo.load("bad")
