"""vlmshield: a plugin-based zoo of defenses for vision-language models.

    import vlmshield as vs
    vlm = vs.zoo.load("clip-vitb32")
    record = vs.evaluate(vlm, dataset="cifar10:/data/cifar10", attack="pgd", eps="1/255", n=1000)
    run = vs.evaluate("fare2-vitl14", protocol="robustvlm")      # a paper's protocol, all its datasets
    board = vs.leaderboard(["clip-tinyvit4", "clip-tinyrn"], "world", out="runs/board")
"""

from . import zoo
from ._version import __version__
from .api import (
    VLM,
    Attack,
    BackdoorAttack,
    Defense,
    Evaluator,
    LabelledImages,
    ZeroShotClassifier,
    dataset,
    evaluate,
    format_table,
    get_host,
    leaderboard,
    parse_eps,
    plugins,
)


def attack(name: str, **params) -> Attack:
    """A registered attack with its defaults overridden by ``params``: ``vs.attack("pgd", eps="4/255")``."""
    return get_host().create("attack", name, **params)


def defense(name: str, **params) -> Defense:
    """A registered defense: ``vs.defense("ttc").wrap(classifier)``."""
    return get_host().create("defense", name, **params)


def evaluator(name: str, **params) -> Evaluator:
    """A registered evaluator (``zero-shot``, ``accuracy``, ``asr``, ...)."""
    return get_host().create("evaluator", name, **params)


__all__ = [
    "__version__", "VLM", "ZeroShotClassifier", "LabelledImages", "Attack", "BackdoorAttack", "Defense",
    "Evaluator", "attack", "defense", "evaluator", "dataset", "evaluate", "format_table", "parse_eps",
    "plugins", "zoo", "leaderboard",
]
