"""A word-level tokenizer with open_clip's token layout, for models with a small closed vocabulary.

Ids: 0 padding, 1 start, 2 unknown word, then the words in order, and the end token last (the largest
id, where open_clip's text transformer pools by default). ``to_config()`` is what a saved model keeps
so that it can be rebuilt without the code that made it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from .errors import ParameterError

_WORD = re.compile(r"[a-z]+")


class WordTokenizer:
    PAD, START, UNKNOWN = 0, 1, 2

    def __init__(self, words: Sequence[str], context_length: int = 24):
        self.words = tuple(words)
        if len(set(self.words)) != len(self.words) or not all(_WORD.fullmatch(w) for w in self.words):
            raise ParameterError("a word tokenizer's words must be distinct lowercase words (a-z).")
        self.ids = {word: index + 3 for index, word in enumerate(self.words)}
        self.end = len(self.words) + 3
        self.context_length = context_length

    @property
    def vocab_size(self) -> int:
        return self.end + 1

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(word, self.UNKNOWN) for word in _WORD.findall(text.lower())]

    def unknown_words(self, text: str) -> list[str]:
        return [word for word in _WORD.findall(text.lower()) if word not in self.ids]

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        tokens = torch.full((len(texts), length), self.PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.START, *self.encode(text)[:length - 2], self.end]
            tokens[row, :len(ids)] = torch.tensor(ids)
        return tokens

    def to_config(self) -> dict:
        return {"type": "words", "words": list(self.words), "context_length": self.context_length}

    @classmethod
    def from_config(cls, config: dict) -> WordTokenizer:
        """The tokenizer ``to_config()`` describes; ParameterError in one sentence for anything else."""
        problem = _config_problem(config)
        if problem:
            raise ParameterError(f"a word tokenizer's config is {{\"type\": \"words\", \"words\": [distinct "
                                 f"lowercase words], \"context_length\": an integer of at least 2}}; {problem}.")
        return cls(config["words"], config["context_length"])


def _config_problem(config: object) -> str | None:
    """What is wrong with a word tokenizer's config, or None."""
    if not isinstance(config, dict):
        return f"got a {type(config).__name__}"
    if config.get("type", "words") != "words":
        return f"got type {config.get('type')!r}"
    words, length = config.get("words"), config.get("context_length")
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        return "its words are not a list of strings"
    if type(length) is not int or length < 2:
        return f"got context_length {length!r}"
    return None
