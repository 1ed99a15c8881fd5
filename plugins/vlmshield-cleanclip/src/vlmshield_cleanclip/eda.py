"""EDA, Easy Data Augmentation (Wei and Zou, EMNLP 2019): the caption augmentation of CleanCLIP's in-modal text term.

CleanCLIP augments each caption with EDA at its reference defaults (``alpha`` 0.1 for all four operations, one
augmented sentence per caption), which comes down to one of four edits, chosen uniformly at random:

- synonym replacement (SR): up to ``n`` distinct words that are not stop words and have a synonym are each
  replaced, at every place they occur, by one of their synonyms;
- random insertion (RI): ``n`` times, a synonym of a random word of the caption is inserted at a random place
  (a word without synonyms is redrawn, ten tries at most; then nothing is inserted);
- random swap (RS): ``n`` times, two words at distinct random places trade places;
- random deletion (RD): each word is dropped with probability ``p``; a one-word caption is kept, and when every
  word would go, one random word is kept;

where ``n = max(1, int(alpha * number of words))``. As in the reference, the caption is first lower-cased and
reduced to the letters a-z (apostrophes dropped, hyphens and every other character read as a space), so the
augmented caption is lower case without digits or punctuation. A caption with no letters at all is returned as
it is (the reference fails on it); an augmented caption is never empty.

Deviation: EDA finds synonyms in WordNet, which is not available offline. ``SYNONYM_GROUPS`` below is a small
table of our own instead: groups of interchangeable words common in image captions. SR and RI therefore find
far fewer synonyms than with WordNet (RS and RD are unchanged); words outside the table have none. The groups
that contain a word of the world's vocabulary (``photo``/``picture``/``image``, ``shape``/``object``) stay
inside it, so a world caption stays in the world's vocabulary.
"""

from __future__ import annotations

import random
import re

#: Words synonym replacement leaves alone (English function words, as EDA's list).
STOP_WORDS = frozenset("""
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself
    it its itself they them their theirs themselves what which who whom this that these those am is are was were be
    been being have has had having do does did doing a an the and but if or because as until while of at by for with
    about against between into through during before after above below to from up down in out on off over under
    again further then once here there when where why how all any both each few more most other some such no nor
    not only own same so than too very s t can will just don should now
""".split())

#: Interchangeable words, one group a tuple: every word of a group is a synonym of the others.
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("photo", "picture", "image"),
    ("shape", "object"),
    ("big", "huge", "enormous"),
    ("little", "tiny"),
    ("man", "guy"),
    ("woman", "lady"),
    ("child", "kid"),
    ("boy", "lad"),
    ("road", "street"),
    ("car", "automobile"),
    ("house", "home"),
    ("beautiful", "pretty", "lovely"),
    ("happy", "cheerful", "glad"),
    ("sea", "ocean"),
    ("stone", "rock"),
    ("forest", "woods"),
    ("boat", "ship"),
    ("city", "town"),
    ("sofa", "couch"),
    ("view", "scene"),
    ("illustration", "drawing"),
    ("fast", "quick"),
    ("begin", "start"),
    ("near", "beside"),
    ("old", "aged"),
    ("modern", "contemporary"),
    ("shop", "store"),
    ("gift", "present"),
    ("pathway", "path", "trail"),
    ("river", "stream"),
)


def _synonym_table(groups) -> dict[str, tuple[str, ...]]:
    table: dict[str, list[str]] = {}
    for group in groups:
        for word in group:
            others = table.setdefault(word, [])
            others.extend(other for other in group if other != word and other not in others)
    return {word: tuple(others) for word, others in table.items()}


#: Each word of the table and its synonyms.
SYNONYMS: dict[str, tuple[str, ...]] = _synonym_table(SYNONYM_GROUPS)


def words_of(caption: str) -> list[str]:
    """The caption's words as EDA reads them: lower case, letters a-z only."""
    text = caption.lower().replace("'", "").replace("\u2019", "")
    return re.sub(r"[^a-z]", " ", text).split()


def synonym_replacement(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Up to ``n`` distinct non-stop words with a synonym, each replaced everywhere by a random synonym."""
    candidates = sorted({w for w in words if w not in STOP_WORDS and w in SYNONYMS})
    rng.shuffle(candidates)
    replacement = {word: rng.choice(SYNONYMS[word]) for word in candidates[:n]}
    return [replacement.get(word, word) for word in words]


def random_insertion(words: list[str], n: int, rng: random.Random) -> list[str]:
    """``n`` times, a synonym of a random word inserted at a random place (ten draws to find a word with one)."""
    words = list(words)
    for _ in range(n):
        for _ in range(10):
            word = words[rng.randrange(len(words))]
            if word in SYNONYMS:
                words.insert(rng.randrange(len(words)), rng.choice(SYNONYMS[word]))
                break
    return words


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    """``n`` times, two words at distinct random places swapped."""
    words = list(words)
    if len(words) < 2:
        return words
    for _ in range(n):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return words


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    """Each word dropped with probability ``p``; never all of them (one random word stays)."""
    if len(words) <= 1:
        return list(words)
    kept = [word for word in words if rng.random() > p]
    return kept or [words[rng.randrange(len(words))]]


def eda(caption: str, rng: random.Random, alpha_sr: float = 0.1, alpha_ri: float = 0.1, alpha_rs: float = 0.1,
        p_rd: float = 0.1) -> str:
    """One EDA augmentation of ``caption``: one of the operations whose rate is positive, chosen uniformly."""
    words = words_of(caption)
    operations = [op for op, rate in (("sr", alpha_sr), ("ri", alpha_ri), ("rs", alpha_rs), ("rd", p_rd)) if rate > 0]
    if not words or not operations:
        return caption
    operation = operations[rng.randrange(len(operations))]
    if operation == "rd":
        return " ".join(random_deletion(words, p_rd, rng))
    rate, edit = {"sr": (alpha_sr, synonym_replacement), "ri": (alpha_ri, random_insertion),
                  "rs": (alpha_rs, random_swap)}[operation]
    return " ".join(edit(words, max(1, int(rate * len(words))), rng))
