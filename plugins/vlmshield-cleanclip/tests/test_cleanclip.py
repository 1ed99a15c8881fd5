"""CleanCLIP: the in-modal term by hand, the loss's parts and weights, EDA's and AutoAugment's draws, training
that leaves the logit scale, resuming, the presets and the registration."""

import importlib.metadata
import math
import random

import pytest
import torch
from torch.utils.data import Subset
from vlmshield_cleanclip import plugin
from vlmshield_cleanclip.eda import (
    SYNONYMS,
    eda,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
    words_of,
)
from vlmshield_cleanclip.plugin import CleanCLIP, autoaugment, inmodal_loss

import vlmshield as vs
from vlmshield.api import (
    CaptionedImages,
    ParameterError,
    Stage,
    TrainConfig,
    clip_loss,
    derive_seed,
    learning_rate,
    temporary_host,
)
from vlmshield.cli import main
from vlmshield.cli.train import plan
from vlmshield.testing import tiny_vlm

CAPTIONS = ["A photo of a big dog on the road, near a little house!", "there is a small red circle at the top left",
            "cat", "a woman and her child walk by the sea at sunset in a beautiful old town", "Rock-n'-roll 1999"]


def world_pairs(n: int = 16) -> CaptionedImages:
    return CaptionedImages(Subset(vs.dataset("world-pretrain", split="train"), range(n)), name="world-pairs")


def _config(steps=2, **fields):
    return TrainConfig(stages=(Stage("a", steps=steps, lr=1e-3, warmup=0, weight_decay=0.1),), batch_size=8,
                       log_every=1, **fields)


def test_the_inmodal_term_is_each_row_s_cross_entropy_against_the_augmented_views():
    features = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    augmented = torch.tensor([[1.0, 1.0], [0.0, -5.0], [2.0, 2.0]])
    scale = 2.0
    unit = [[x / math.hypot(*row) for x in row] for row in features.tolist()]
    unit_augmented = [[x / math.hypot(*row) for x in row] for row in augmented.tolist()]
    by_hand = 0.0
    for i, row in enumerate(unit):
        logits = [scale * (row[0] * other[0] + row[1] * other[1]) for other in unit_augmented]
        by_hand += -logits[i] + math.log(sum(math.exp(z) for z in logits))
    assert inmodal_loss(features, augmented, torch.tensor(scale)).item() == pytest.approx(by_hand / 3, rel=1e-6)
    # one direction only: images against augmented views, not the views against the images
    assert inmodal_loss(augmented, features, torch.tensor(scale)).item() != pytest.approx(by_hand / 3, rel=1e-3)


def test_the_loss_weighs_clip_s_loss_on_the_originals_and_the_mean_of_both_inmodal_terms():
    vlm, pairs = tiny_vlm(), world_pairs(8)
    images = torch.stack([image for image, _ in pairs])
    method = CleanCLIP(clip_weight=0.5, inmodal_weight=2.0)
    rows = method.captions([caption for _, caption in pairs], step_seed=7)
    assert rows[:8] == [caption for _, caption in pairs] and len(rows) == 16
    texts = vlm.tokenizer(rows)
    with torch.no_grad():
        loss = method.loss(vlm, images, texts, {}, step_seed=7)
        image = vlm.encode_image(images)
        augmented = vlm.encode_image(autoaugment(images, derive_seed(7, "autoaugment")))
        text, augmented_text = vlm.model.encode_text(texts[:8]), vlm.model.encode_text(texts[8:])
        scale = vlm.model.logit_scale.exp()
        expected = 0.5 * clip_loss(image, text, scale) + 2.0 * (inmodal_loss(image, augmented, scale)
                                                                + inmodal_loss(text, augmented_text, scale)) / 2
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ParameterError, match="16 rows; got 8"):
        method.loss(vlm, images, texts[:8], {}, step_seed=7)


def _explained(original: list[str], augmented: list[str]) -> bool:
    """Whether ``augmented`` is one documented EDA edit of ``original``."""
    same_length = len(augmented) == len(original)
    replaced = same_length and all(a == o or a in SYNONYMS.get(o, ()) for o, a in zip(original, augmented, strict=True))
    swapped = sorted(augmented) == sorted(original)
    deleted = 1 <= len(augmented) <= len(original) and _subsequence(augmented, original)
    inserted = len(augmented) > len(original) and _subsequence(original, augmented) and \
        all(w in {s for o in original for s in SYNONYMS.get(o, ())} for w in _extra(original, augmented))
    return replaced or swapped or deleted or inserted


def _subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(word in it for word in short)


def _extra(short: list[str], long: list[str]) -> list[str]:
    extra, rest = list(long), list(short)
    for word in rest:
        extra.remove(word)
    return extra


def test_eda_is_seeded_edits_only_as_documented_and_never_empties_a_caption():
    for caption in CAPTIONS:
        words = words_of(caption)
        outputs = [eda(caption, random.Random(seed)) for seed in range(60)]
        assert outputs == [eda(caption, random.Random(seed)) for seed in range(60)]
        for output in outputs:
            assert output.strip() and _explained(words, output.split()), (caption, output)
        if len(words) > 1:
            assert len(set(outputs)) > 1
    assert words_of("Rock-n'-roll 1999") == ["rock", "n", "roll"]
    assert eda("!!! 42", random.Random(0)) == "!!! 42"  # no letters: nothing EDA could edit, kept as it is
    assert eda("dog", random.Random(3)) == "dog"


def test_each_eda_operation():
    rng = random.Random(0)
    words = "a photo of a big dog by the road".split()
    replaced = synonym_replacement(words, 2, rng)
    changed = [(o, a) for o, a in zip(words, replaced, strict=True) if o != a]
    assert len(changed) == 2 and all(a in SYNONYMS[o] for o, a in changed)
    inserted = random_insertion(words, 3, rng)
    assert len(inserted) == 12 and _subsequence(words, inserted)
    assert random_insertion(["cat", "sat"], 2, rng) == ["cat", "sat"]  # no synonyms: nothing to insert
    swapped = random_swap(words, 1, rng)
    assert sorted(swapped) == sorted(words) and sum(o != s for o, s in zip(words, swapped, strict=True)) in (0, 2)
    assert random_deletion(words, 1.0, rng) in [[w] for w in words]  # never every word
    assert random_deletion(["one"], 1.0, rng) == ["one"]
    assert random_deletion(words, 0.0, rng) == words


def test_eda_keeps_a_world_caption_in_the_world_s_vocabulary():
    tokenizer = vs.zoo.load("clip-tinyvit4").tokenizer
    pairs = world_pairs(64)
    for seed, (_, caption) in enumerate(pairs):
        for offset in range(5):
            assert not tokenizer.unknown_words(eda(caption, random.Random(seed * 5 + offset))), caption


def test_autoaugment_stays_in_the_unit_range_keeps_the_shape_and_is_seeded():
    images = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    first = autoaugment(images, 5)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
    assert first.shape == images.shape and first.dtype == images.dtype
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, autoaugment(images, 5))
    assert not torch.equal(first, autoaugment(images, 6))
    changed = (first - images).abs().flatten(1).amax(1) > 1 / 255  # beyond the 8-bit rounding
    assert changed.sum() >= 4  # each image draws its own sub-policy, some of which leave it nearly as it is


def test_training_moves_both_towers_but_not_the_logit_scale_and_spares_norms_and_biases_the_decay():
    vlm, method = tiny_vlm(), CleanCLIP()
    names = {name for name, p in vlm.model.named_parameters() if id(p) in {id(q) for q in method.no_decay(vlm)}}
    assert names and all(any(key in name for key in ("ln", "bias", "logit_scale")) for name in names)
    assert {"visual.proj", "visual.class_embedding", "text_projection"}.isdisjoint(names)
    before = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    with temporary_host(plugin):
        trained = method.fit(vlm, world_pairs(), _config(), progress=False)
    after = trained.model.state_dict()
    assert torch.equal(after["logit_scale"], before["logit_scale"])
    assert not torch.equal(after["visual.proj"], before["visual.proj"])
    assert not torch.equal(after["text_projection"], before["text_projection"])


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    data, config = world_pairs(), _config(steps=4, checkpoint_every=2)
    with temporary_host(plugin):
        whole = CleanCLIP().fit(tiny_vlm(), data, config, progress=False)
        CleanCLIP().fit(tiny_vlm(), data, config, out=tmp_path, progress=False, stop_after=2)
        resumed = CleanCLIP().fit(tiny_vlm(), data, config, out=tmp_path, progress=False)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_parameters_are_checked():
    for bad in ({"clip_weight": -1}, {"inmodal_weight": math.inf}, {"clip_weight": 0, "inmodal_weight": 0},
                {"eda_alpha": 1.5}, {"clip_weight": True}):
        with pytest.raises(ParameterError):
            CleanCLIP(**bad)
    assert CleanCLIP(clip_weight=0).inmodal_weight == 1.0


def test_the_presets():
    with temporary_host(plugin):
        paper, world = plan("cleanclip", "paper"), plan("cleanclip", "world")
    config = paper["config"]
    assert paper["model"] == "clip-vitb32" and paper["dataset"] == "captions-csv:/path/to/cc3m-100k.csv"
    assert (config.batch_size, tuple(config.betas), config.total_steps) == (64, (0.9, 0.999), 10 * 1562)
    stage, = config.stages
    assert (stage.lr, stage.warmup, stage.weight_decay, stage.lr_end) == (1e-5, 50, 0.1, 0.0)
    assert learning_rate(stage, 0) == pytest.approx(1e-5 / 50) and learning_rate(stage, 50) == pytest.approx(1e-5)
    assert (paper["method"].clip_weight, paper["method"].inmodal_weight, paper["method"].eda_alpha) == (1, 1, 0.1)
    config = world["config"]
    assert (world["model"], world["dataset"]) == ("poisoned-badnet-stripes-tinyvit4", "world-captions")
    assert (config.batch_size, tuple(config.betas), config.seed, config.checkpoint_every, config.log_every) == \
        (128, (0.9, 0.98), 0, 100, 20)
    stage, = config.stages
    assert (stage.steps, stage.lr, stage.warmup, stage.weight_decay) == (300, 1e-4, 20, 1e-4)


def test_vlmshield_lists_the_defense(capsys):
    with temporary_host(plugin) as host:
        assert not host.infos[plugin.__name__].errors
        assert main(["list", "defenses"]) == 0
    assert any(line.startswith("cleanclip ") for line in capsys.readouterr().out.splitlines())


def test_the_installed_distribution_registers_the_defense(capsys):
    try:
        importlib.metadata.distribution("vlmshield-cleanclip")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("vlmshield-cleanclip is not installed (make install installs it)")
    with temporary_host(entry_points=True):
        assert main(["info", "cleanclip", "--json"]) == 0
    assert '"distribution": "vlmshield-cleanclip"' in capsys.readouterr().out
