"""The world's language: caption templates, a small vocabulary, and a word-level tokenizer.

Captions mention a varying subset of a scene's factors, as web captions do: each factor is mentioned
with its own probability (``MENTION``), in a small grammar with a few phrasings. The tokenizer knows
only the world's 49 words, so the text tower's embedding table is tiny; it is the core's
``WordTokenizer`` (open_clip's token layout) over that vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from vlmshield.api import WordTokenizer

from .scene import FACTORS, Scenes

#: A quarter of the captions name one factor only ("a striped background"); the others mention each
#: factor with its probability here, the shape named or replaced by "shape"/"object". Single-factor
#: captions keep every factor worth learning: with only the rich captions, a model that knows four of
#: the five factors already tells a batch apart and may never learn the fifth.
SINGLE = 0.25
MENTION = {"shape": 0.85, "color": 0.8, "size": 0.5, "position": 0.8, "texture": 0.8}
PREFIXES = ("", "", "a photo of", "an image of", "this is", "there is", "a picture of")
POSITION_PHRASES = ("in the {}", "at the {}")
TEXTURE_PHRASES = ("on a {} background", "with a {} background")
SINGLE_PHRASES = {
    "shape": ("a {}", "a photo of a {}"), "color": ("a {} shape", "a {} object"),
    "texture": ("a {} background", "a photo of a {} background"),
    "position": ("a shape in the {}", "an object at the {}"), "size": ("a {} shape", "a {} object"),
}
_WORD = re.compile(r"[a-z]+")


def _caption(names: dict[str, str], mention: dict[str, bool], choice: list[int]) -> str:
    """One caption from a small grammar: [prefix] a [size] [color] shape [position] [texture]."""
    noun = names["shape"] if mention["shape"] else ("shape", "object")[choice[0] % 2]
    phrase = " ".join(w for w in (names["size"] if mention["size"] else "",
                                  names["color"] if mention["color"] else "", noun) if w)
    parts = [PREFIXES[choice[1] % len(PREFIXES)], "a " + phrase]
    if mention["position"]:
        parts.append(POSITION_PHRASES[choice[2] % 2].format(names["position"]))
    if mention["texture"]:
        texture = TEXTURE_PHRASES[choice[3] % 2].format(names["texture"])
        if choice[4] % 3 == 0:  # sometimes the background comes first
            return _article(" ".join(w for w in ("a " + texture.split(" ", 2)[2], "with", "a " + phrase,
                                                 *parts[2:]) if w))
        parts.append(texture)
    return _article(" ".join(w for w in parts if w))


def _single(names: dict[str, str], choice: list[int]) -> str:
    factor = tuple(SINGLE_PHRASES)[choice[0] % len(SINGLE_PHRASES)]
    return _article(SINGLE_PHRASES[factor][choice[1] % 2].format(names[factor]))


def _vocabulary() -> tuple[str, ...]:
    words = {"a", "with", "shape", "object"}
    for phrase in (*PREFIXES, *POSITION_PHRASES, *TEXTURE_PHRASES, *sum(SINGLE_PHRASES.values(), ())):
        words.update(_WORD.findall(phrase.lower()))
    for names in FACTORS.values():
        for name in names:
            words.update(_WORD.findall(name))
    return tuple(sorted(words))


VOCABULARY = _vocabulary()


def _article(text: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def captions(scenes: Scenes, generator: torch.Generator) -> list[str]:
    """One caption per scene: a single-factor one (probability SINGLE) or a rich one (MENTION)."""
    n = len(scenes)
    single = (torch.rand(n, generator=generator) < SINGLE).tolist()
    mentioned = {f: (torch.rand(n, generator=generator) < p).tolist() for f, p in MENTION.items()}
    choices = torch.randint(0, 420, (n, 5), generator=generator).tolist()
    names = {factor: scenes.names(factor) for factor in FACTORS}
    scene_names = [{f: names[f][i] for f in FACTORS} for i in range(n)]
    return [_single(scene_names[i], choices[i]) if single[i]
            else _caption(scene_names[i], {f: mentioned[f][i] for f in MENTION}, choices[i]) for i in range(n)]


class WorldTokenizer(WordTokenizer):
    """The core's word-level tokenizer over the world's vocabulary (open_clip's token layout)."""

    def __init__(self, words: Sequence[str] = VOCABULARY, context_length: int = 24):
        super().__init__(words, context_length)
