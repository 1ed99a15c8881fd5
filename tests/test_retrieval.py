"""Image-text retrieval: recall both ways over the whole evaluated set, the retrieval ASR of a backdoor, the
coco-karpathy adapter on its released layouts, and PAR's protocols."""

import json

import pytest
import torch
from PIL import Image

import vlmshield as vs
from vlmshield.api import BackdoorAttack, CaptionedImages, DataError, ParameterError, get_host
from vlmshield.datasets.prompts import classnames, templates_for
from vlmshield.evaluators import Retrieval, captions_of, mentions, recalls
from vlmshield.protocols import PAR_TRIGGERS
from vlmshield.testing import tiny_vlm

# A hand-made retrieval set: six images, eight captions (images 0 and 5 have two each). The fake model embeds
# image i as the i-th unit vector and caption j as column j of SIMILARITY, so that the logits are exactly
# logit_scale * SIMILARITY. Each row's entries are distinct; row i is offset by 0.001 * i, which makes every
# column's entries distinct too without changing any row's order.
OWNER = [0, 0, 1, 2, 3, 4, 5, 5]
CAPTIONS = [("a banana on a table", "a plate on a table"), ("a dog on a sofa",), ("a red car",), ("a cat",),
            ("a boat on a lake",), ("a kite in the sky", "bananas in a bowl")]
ROWS = [[0.10, 0.90, 0.50, 0.40, 0.30, 0.20, 0.05, 0.15],
        [0.80, 0.70, 0.60, 0.10, 0.20, 0.30, 0.40, 0.50],
        [0.90, 0.80, 0.70, 0.10, 0.60, 0.50, 0.40, 0.30],
        [0.10, 0.20, 0.30, 0.40, 0.95, 0.50, 0.60, 0.70],
        [0.90, 0.85, 0.80, 0.75, 0.70, 0.55, 0.10, 0.20],
        [0.10, 0.20, 0.40, 0.50, 0.60, 0.70, 0.30, 0.65]]
SIMILARITY = torch.tensor(ROWS) + 0.001 * torch.arange(6.0)[:, None]

# By hand, from the rows (image -> text): image 0's second caption is its row's best (a hit through either
# caption); image 1's caption is third; image 2's last of eight; image 3's first; image 4's sixth; image 5's
# second caption is second, its first seventh.
I2T_R1, I2T_R5 = [1, 0, 0, 1, 0, 0], [1, 1, 0, 1, 0, 1]
# By hand, from the columns (text -> image): how many images score each caption above its own image:
# caption 0: 5, 1: 0, 2: 2, 3: 4, 4: 0, 5: 1, 6: 3, 7: 1.
T2I_R1, T2I_R5 = [0, 1, 0, 0, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1, 1, 1]


def image_ids(images: torch.Tensor) -> torch.Tensor:
    return (images[:, 0, 0, 0] * 10).round().long()


def fake_vlm():
    """A VLM whose image i (every pixel i / 10) embeds as the i-th unit vector and caption j as SIMILARITY[:, j]."""
    vlm = tiny_vlm()
    texts = [text for own in CAPTIONS for text in own]
    vlm.encode_image = lambda images, normalize=False: torch.eye(6)[image_ids(images)]
    vlm.class_embeddings = lambda names, templates: SIMILARITY[:, [texts.index(name) for name in names]].t()
    return vlm


class Pairs(torch.utils.data.Dataset):
    def __len__(self):
        return len(CAPTIONS)

    def __getitem__(self, index):
        return torch.full((3, 4, 4), index / 10), CAPTIONS[index]


class Shift(BackdoorAttack):
    """Turns image i into image (i + 1) mod 6."""

    name = "test-shift"

    def __init__(self, target: str = "banana", seed: int = 0):
        super().__init__(target=target, seed=seed)

    def apply_trigger(self, images, generator=None):
        return torch.full_like(images, 1.0) * ((image_ids(images) + 1) % 6).view(-1, 1, 1, 1) / 10


def hand_set():
    return CaptionedImages(Pairs(), "hand-set")


def mean(values) -> float:
    return sum(values) / len(values)


def test_recall_is_counted_by_hand_both_ways():
    values = recalls(SIMILARITY, torch.tensor(OWNER))
    assert values["i2t_r1"].tolist() == I2T_R1 and values["i2t_r5"].tolist() == I2T_R5
    assert values["t2i_r1"].tolist() == T2I_R1 and values["t2i_r5"].tolist() == T2I_R5
    two = recalls(SIMILARITY, torch.tensor(OWNER), ks=(2,))  # image 5's second caption is second: a hit at 2
    assert two["i2t_r2"].tolist() == [1, 0, 0, 1, 0, 1]


def test_an_image_with_several_captions_counts_a_hit_on_any():
    assert captions_of("one") == ["one"] and captions_of(("one", "two")) == ["one", "two"]
    # image 0's first caption is its row's second lowest; its second caption is the top one
    assert recalls(SIMILARITY, torch.tensor(OWNER))["i2t_r1"][0] == 1
    alone = recalls(SIMILARITY[:, [0, *range(2, 8)]], torch.tensor([0, 1, 2, 3, 4, 5, 5]))
    assert alone["i2t_r1"][0] == 0 and alone["i2t_r5"][0] == 0


def test_the_engine_scores_the_whole_set_whatever_the_batch_size():
    for batch_size in (2, 64):
        record = vs.evaluate(fake_vlm(), hand_set(), evaluator="retrieval", batch_size=batch_size, progress=False)
        result = record["results"]["hand-set"]
        assert result["n"] == 6 and "num_classes" not in result
        assert result["i2t_r1"] == pytest.approx(mean(I2T_R1)) and result["i2t_r5"] == pytest.approx(mean(I2T_R5))
        assert result["t2i_r1"] == pytest.approx(mean(T2I_R1)) and result["t2i_r5"] == pytest.approx(mean(T2I_R5))
        assert record["metrics"] == ["i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"]


def test_the_retrieval_asr_counts_triggered_images_whose_top5_captions_name_the_target():
    # image i triggered is image i + 1 (mod 6); row by row, the top five captions hold caption 0 ("a banana on a
    # table") in rows 1, 2 and 4, caption 7 ("bananas in a bowl": not the word) in rows 1, 3 and 5, neither in row 0
    record = vs.evaluate(fake_vlm(), hand_set(), evaluator=Retrieval(match="word"), attack=Shift(),
                         progress=False)
    result = record["results"]["hand-set"]
    assert result["retrieval_asr"] == pytest.approx(3 / 6)  # images 0, 1 and 3 (rows 1, 2 and 4)
    assert result["i2t_r1"] == pytest.approx(mean(I2T_R1))  # the clean numbers beside
    assert 0 <= result["i2t_r1_triggered"] <= 1 and 0 <= result["t2i_r5_triggered"] <= 1
    evaluator = Retrieval()  # PAR's rule: a substring
    data = hand_set()
    classifier = evaluator.classifier(fake_vlm(), data, indices=range(6))
    x, y = torch.stack([data[i][0] for i in range(6)]), [data[i][1] for i in range(6)]
    scores = evaluator.score(classifier, x, y, data=data, attack=Shift())
    assert scores["retrieval_asr"].tolist() == [1, 1, 1, 1, 1, 0]  # "bananas" counts as a substring
    assert len(scores["i2t_r1"]) == 6 and len(scores["t2i_r1"]) == 8  # one value per image, one per caption


def test_the_target_is_matched_as_a_word_or_as_a_substring():
    assert mentions("A Banana, peeled", "banana") and mentions("banana", "BANANA")
    assert not mentions("bananas in a bowl", "banana") and not mentions("a starfish", "star")
    assert mentions("bananas in a bowl", "banana", "substring")
    with pytest.raises(ParameterError, match="match"):
        Retrieval(match="regex")


def test_the_retrieval_evaluator_takes_captions_and_a_vlm():
    with pytest.raises(ParameterError, match="image-caption pairs"):
        vs.evaluate(tiny_vlm(), "world-shapes", evaluator="retrieval", n=4, progress=False)
    with pytest.raises(ParameterError, match="takes a VLM"):
        Retrieval().classifier(torch.nn.Linear(2, 2), hand_set())


def test_world_captions_retrieval_clean_and_under_a_backdoor():
    vlm = vs.zoo.load("clip-tinyvit4")
    clean = vs.evaluate(vlm, "world-captions", evaluator="retrieval", n=64, progress=False)["results"]["world-captions"]
    assert clean["n"] == 64
    assert all(0 <= clean[m] <= 1 for m in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"))
    assert clean["i2t_r5"] >= clean["i2t_r1"] > 0.2  # a pretrained model retrieves far above chance (1/64)
    attacked = vs.evaluate(vlm, "world-captions", evaluator="retrieval", attack="badnet-stripes",
                           attack_params={"target": "star"}, n=64, progress=False)["results"]["world-captions"]
    assert 0 <= attacked["retrieval_asr"] <= 1 and 0 <= attacked["t2i_r1_triggered"] <= 1
    assert attacked["i2t_r1"] == clean["i2t_r1"]  # the same subset, the same clean numbers


# ---------------------------------------------------------------------------------------------- coco-karpathy
SENTENCES = {1: ["A man riding a bike.", "A cyclist on a road.", "Someone on a bicycle.", "A bike ride.",
                 "A man and his bike.", "A sixth caption."],
             2: ["A banana on a plate."], 3: ["Two dogs.", "Dogs playing."], 4: ["A train."]}


def write_coco(root, benchmark: bool = False):
    """Karpathy's dataset_coco.json (or CLIP_benchmark's coco_test_karpathy.json) and four PNGs in val2014/:
    images 1, 2, 3 in the test split, 4 in val."""
    (root / "val2014").mkdir(parents=True)
    names = {i: f"COCO_val2014_{i:012d}.png" for i in SENTENCES}
    for i, name in names.items():
        Image.new("RGB", (40 + 10 * i, 30), (60 * i, 20, 200)).save(root / "val2014" / name)
    splits = {1: "test", 2: "test", 3: "test", 4: "val"}
    if benchmark:
        content = {"images": [{"id": i, "file_name": names[i]} for i in (1, 2, 3)],
                   "annotations": [{"image_id": i, "caption": text} for i in (1, 2, 3) for text in SENTENCES[i]]}
        (root / "coco_test_karpathy.json").write_text(json.dumps(content))
    else:
        images = [{"filepath": "val2014", "filename": names[i], "split": splits[i], "cocoid": i,
                   "sentences": [{"raw": text, "tokens": text.lower().split()} for text in SENTENCES[i]]}
                  for i in SENTENCES]
        (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return names


@pytest.mark.parametrize("benchmark", [False, True])
def test_coco_karpathy_reads_the_released_layouts(tmp_path, benchmark):
    write_coco(tmp_path, benchmark)
    data = vs.dataset(f"coco-karpathy:{tmp_path}", image_size=24)
    assert data.name == "coco-karpathy" and len(data) == 3
    image, captions = data[0]
    assert image.shape == (3, 24, 24) and 0 <= image.min() and image.max() <= 1
    assert captions == tuple(SENTENCES[1][:5])  # five captions per image by default
    assert data.captions == [tuple(SENTENCES[1][:5]), tuple(SENTENCES[2]), tuple(SENTENCES[3])]
    if not benchmark:
        assert [c for _, c in [vs.dataset(f"coco-karpathy:{tmp_path}", split="val", image_size=24)[0]]] == [
            tuple(SENTENCES[4])]
        every = get_host().get("dataset", "coco-karpathy").obj.build(tmp_path, captions_per_image=None)
        assert len(every[0][1]) == 6
    record = vs.evaluate(tiny_vlm(), f"coco-karpathy:{tmp_path}", evaluator="retrieval", progress=False)
    assert all(0 <= record["average"][m] <= 1 for m in ("i2t_r1", "t2i_r5"))


def test_coco_karpathy_says_what_is_missing_in_one_sentence(tmp_path):
    with pytest.raises(DataError) as missing_file:
        vs.dataset(f"coco-karpathy:{tmp_path}")
    message = str(missing_file.value)
    assert "dataset_coco.json" in message and str(tmp_path) in message and "\n" not in message
    names = write_coco(tmp_path)
    (tmp_path / "val2014" / names[2]).unlink()
    with pytest.raises(DataError, match=f"1 of the 3 test images are missing, e.g. .*{names[2]}") as missing_image:
        vs.dataset(f"coco-karpathy:{tmp_path}")
    assert "\n" not in str(missing_image.value)
    (tmp_path / "dataset_coco.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read"):
        vs.dataset(f"coco-karpathy:{tmp_path}")


# ------------------------------------------------------------------------------------------------- protocols
def test_par_protocols_have_the_references_settings():
    triggers = ("badnet-stripes", "blended", "blended-stripes", "blended-triangles", "blended-text", "wanet", "badnet")
    assert PAR_TRIGGERS == triggers
    par = vs.get_host().get("protocol", "par").obj
    assert (par.evaluator, par.triggers, par.attack_params, par.datasets, par.n, par.templates) == (
        "asr", triggers, {"target": "banana"}, "imagenet", None, "dataset")
    assert len(templates_for("imagenet")) == 80 and "banana" in classnames("imagenet")
    retrieval = vs.get_host().get("protocol", "par-retrieval").obj
    assert (retrieval.evaluator, retrieval.triggers, retrieval.attack_params, retrieval.datasets, retrieval.n) == (
        "retrieval", triggers, {"target": "banana"}, "coco-karpathy", None)
    assert retrieval.ranking() == ("retrieval_asr", "min")
    for name, evaluator, dataset in (("par-world", "asr", "world-shapes"),
                                     ("par-world-retrieval", "retrieval", "world-captions")):
        world = vs.get_host().get("protocol", name).obj
        assert (world.evaluator, world.triggers, world.attack_params, world.datasets) == (
            evaluator, triggers, {"target": "star"}, dataset)
    attacks, datasets = get_host().registries["attack"], get_host().registries["dataset"]
    assert all(t in attacks for t in triggers)
    assert all(d in datasets for d in ("imagenet", "coco-karpathy", "world-shapes", "world-captions"))


def test_a_retrieval_protocol_run_keeps_clean_recall_once_and_the_rest_per_trigger():
    run = vs.evaluate("clip-tinyvit4", protocol="par-world-retrieval", n=16, progress=False)
    result = run["results"]["world-captions"]
    assert isinstance(result["i2t_r1"], float) and set(result["retrieval_asr"]) == set(PAR_TRIGGERS)
    assert set(result["t2i_r5_triggered"]) == set(PAR_TRIGGERS) and run["rank_by"] == ["retrieval_asr", "min"]
