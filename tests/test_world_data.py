"""The world's generator and splits: deterministic, disjoint, and honest about what is held out."""

import hashlib
import re

import pytest
import torch

import vlmshield as vs
from vlmshield.api import ParameterError, datasets
from vlmshield.world import data as wd
from vlmshield.world.scene import FACTORS, render
from vlmshield.world.text import VOCABULARY, WorldTokenizer, captions


def _digest(images: torch.Tensor) -> set[str]:
    return {hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in images}


def test_generation_is_deterministic_per_seed_and_split():
    first = wd.build_pretrain().data.chunk(3)
    again = wd.WorldSplit("world-pretrain", "train", 2 ** 20, wd._captioned_chunk).chunk(3)
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    other = wd.build_pretrain().data.chunk(4)
    assert not torch.equal(first[0], other[0])
    a = render(wd.sample_scenes(64, torch.Generator().manual_seed(5)), torch.Generator().manual_seed(6))
    b = render(wd.sample_scenes(64, torch.Generator().manual_seed(5)), torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and a.shape == (64, 3, 32, 32) and 0 <= a.min() and a.max() <= 1


def test_resolution_is_configurable_and_checked():
    images, _ = wd.WorldSplit("world-shapes", "test", 8, wd._labelled_chunk(wd.TASKS[0]), resolution=48).chunk(0)
    assert images.shape == (8, 3, 48, 48)
    with pytest.raises(ParameterError, match="resolution"):
        wd.build_pretrain(resolution=3)


def test_splits_do_not_overlap():
    pretrain = wd.build_pretrain().data
    train = vs.dataset("world-finetune", split="train").data.tensors[0]
    seen = _digest(torch.cat([pretrain.chunk(i)[0] for i in range(2)] + [train[:2048]]))
    tests = [vs.dataset(t.name) for t in wd.TASKS] + [vs.dataset("world-finetune", split="test")]
    test_digests = [_digest(d.data.tensors[0]) for d in tests]
    for digests in test_digests:
        assert not digests & seen
    for i, a in enumerate(test_digests):
        for b in test_digests[i + 1:]:
            assert not a & b


def test_held_out_compositions_never_appear_in_pretraining():
    held = {(c, s) for c, s in wd.HELD_OUT}
    pretrain = wd.build_pretrain().data
    pattern = re.compile(r"\b(" + "|".join(sorted({c for c, _ in held})) + r")\b.*\b("
                         + "|".join(sorted({s for _, s in held})) + r")\b")
    for index in (0, 1, 511, 1023):  # chunks from the start, the middle and the end of the split
        generator = torch.Generator().manual_seed(wd.derive_seed(wd.WORLD_SEED, "world-pretrain", "train", index))
        scenes = wd.sample_scene_groups(wd.CHUNK, generator)
        pairs = set(zip(scenes.names("color"), scenes.names("shape"), strict=True))
        assert not pairs & held
        for caption in pretrain.chunk(index)[1]:
            assert not pattern.search(caption), caption
    # ... while every test image of world-compositions is one of them, and every color and shape alone is seen
    compositions = vs.dataset("world-compositions")
    assert set(compositions.data.tensors[1].tolist()) == set(range(len(held)))
    assert set(scenes.names("color")) == set(FACTORS["color"]) and set(scenes.names("shape")) == set(FACTORS["shape"])


def test_suite_and_tasks_are_registered_with_names_and_templates():
    suite = datasets("world")
    assert [d.name for d in suite] == [t.name for t in wd.TASKS] and len(suite) >= 4
    for data in suite:
        assert len(data) == wd.TEST_SIZE and data.templates and all("{}" in t for t in data.templates)
        labels = data.data.tensors[1]
        assert labels.min() == 0 and labels.max() == len(data.classnames) - 1
    with pytest.raises(ParameterError, match="collection"):
        vs.dataset("world")


def test_captions_mention_varying_factors_and_fit_the_tokenizer():
    generator = torch.Generator().manual_seed(0)
    scenes = wd.sample_scenes(2000, generator)
    texts = captions(scenes, generator)
    tokenizer = WorldTokenizer(context_length=20)
    assert len(set(texts)) > 500
    for text in texts:
        assert not tokenizer.unknown_words(text), text
        assert len(tokenizer.encode(text)) + 2 <= 20, text
    for factor in FACTORS:  # every factor is named in some captions and left out of others
        named = sum(any(re.search(rf"\b{n}\b", t) for n in [scenes.names(factor)[i]]) for i, t in enumerate(texts))
        assert 0.2 * len(texts) < named < 0.95 * len(texts), factor
    tokens = tokenizer(["a red star", "a zebra"])
    assert tokens[0, 0] == tokenizer.START and tokens.argmax(dim=1).tolist() == [4, 3]
    assert tokens[1, 2] == tokenizer.UNKNOWN and tokenizer.vocab_size == len(VOCABULARY) + 4
    assert WorldTokenizer.from_config(tokenizer.to_config())(["a red star"]).equal(tokens[:1])
    with pytest.raises(ParameterError, match="distinct lowercase words"):
        WorldTokenizer(["red", "red"])


def test_finetune_labels_compose_color_shape_and_texture_without_held_out_pairs():
    data = vs.dataset("world-finetune", split="test")
    assert len(data.classnames) == len(set(data.classnames)) == 8 * 10 * 6 - len(wd.HELD_OUT) * 6
    assert data.classnames[0] == "red circle on a plain background"
    generator = torch.Generator().manual_seed(0)
    scenes = wd.sample_scenes(2048, generator, wd.FINETUNE.held_out)
    labels = wd.FINETUNE.label(scenes)
    for i in range(0, 2048, 97):  # each label names the scene's color, shape and texture
        name = data.classnames[labels[i]]
        assert name == f"{scenes.names('color')[i]} {scenes.names('shape')[i]} on a {scenes.names('texture')[i]} " \
                       f"background"
    named = {tuple(data.classnames[i].split(" ")[:2]) for i in data.data.tensors[1].tolist()}
    assert not named & set(wd.HELD_OUT) and len(named) == 71  # every other color-shape pair occurs
    assert {data.classnames[i].split(" ")[-2] for i in data.data.tensors[1].tolist()} == set(wd.TEXTURES)
    assert all(word in VOCABULARY for name in data.classnames for word in name.split())  # the text tower's words
