"""Named evaluation protocols: the evaluator, the attack, budgets (or backdoor triggers), iterations, sample
count, prompts, preprocessing, counting convention and ranking of a paper's table.

A ``Protocol`` is data, registered by plugins like models and datasets (the built-in ones: ``tecoa``,
``robustvlm``, ``clean``, ``world``); ``run_protocol`` (``vlmshield.api``) runs one on a model and writes
one run record. Overriding ``n``, the datasets or the counting convention is allowed and recorded as an
override, so that a number is never passed off as the protocol's.

What a protocol measures comes from its evaluator (``evaluator``, ``zero-shot`` by default): the metrics in
the evaluator's ``clean_metrics`` are measured once per dataset, the others once per setting, an eps label
(``eps``, with an evasion ``attack``) or a backdoor trigger (``triggers``: the names of backdoor attacks,
one evaluation each, ``attack_params`` shared, e.g. ``{"target": "banana"}``), so a run record holds
``clean_acc: value`` and ``robust_acc: {"4/255": value}``, or ``clean_acc`` and ``asr: {"badnet": value}``.
``rank_by`` names the column that ranks a leaderboard and whether the highest (``"max"``) or the lowest
(``"min"``) value is best; without it the evaluator's ``rank_by`` applies (highest robust accuracy; lowest
attack success rate for ``asr``).

Preprocessing decides which pixels eps is measured on, since the attack perturbs the images the data
loader produces. ``Protocol.preprocess`` maps dataset names (and ``"default"``, for every other one) to
a rule (``vlmshield.core.preprocess``): ``"native"``, the images as the dataset builds them (what
``evaluate(model, dataset=...)`` uses), or ``{"resize": R, "crop": C, "interpolation": "bilinear" |
"bicubic"}``, the shortest side resized to R pixels and a centre crop of C x C before the attack (TTC's
``Resize(256), CenterCrop(224)`` is ``{"resize": 256, "crop": 224, "interpolation": "bilinear"}``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import ParameterError
from .evaluator import COUNTINGS
from .params import parse_eps
from .plugins import get_host
from .preprocess import NATIVE, check_preprocess_rule

#: Template conventions: each dataset's own prompts (CLIP's ensembles for the real datasets), or the
#: single prompt per dataset of TeCoA, PMG-AFT and TTC (the dataset's ``template_sets["single"]``).
TEMPLATE_CONVENTIONS = ("dataset", "single")
#: Which way a ranking column is better: the highest value, or the lowest.
RANK_DIRECTIONS = ("max", "min")
#: Fields added after run records existed, at their defaults (``Protocol.config`` leaves them out).
_LATER_DEFAULTS = {"evaluator": "zero-shot", "triggers": [], "rank_by": None}


@dataclass(frozen=True)
class Protocol:
    """How a paper measures robustness, fixed so that numbers from different runs compare."""

    name: str
    description: str
    #: A registered attack name, or None for clean accuracy only.
    attack: str | None = None
    #: Budgets, as written in papers ("4/255").
    eps: tuple[str, ...] = ()
    steps: int | None = None
    attack_params: dict = field(default_factory=dict)
    #: Samples per dataset (a seeded subset); None: the whole test split.
    n: int | None = None
    templates: str = "dataset"
    #: The datasets (or collection) the papers run it on.
    datasets: str = ""
    #: Who uses it.
    papers: str = ""
    #: How each dataset's images reach the model, by dataset name; "default" covers the others (a rule:
    #: "native" or {"resize": R, "crop": C, "interpolation": ...}; see the module docstring).
    preprocess: dict = field(default_factory=lambda: {"default": NATIVE})
    #: Which images robust accuracy counts: "clean-correct" (AutoAttack, RobustBench, RobustVLM) or
    #: "all" (TeCoA, PMG-AFT, TTC); see ``evaluate``.
    counting: str = "clean-correct"
    #: The registered evaluator that scores each dataset ("zero-shot", "accuracy", "asr", ...).
    evaluator: str = "zero-shot"
    #: Backdoor attacks swept instead of eps: one evaluation per trigger, ``attack_params`` shared.
    triggers: tuple[str, ...] = ()
    #: (column, "max" | "min"): what ranks a leaderboard, and which way; None: the evaluator's ``rank_by``.
    rank_by: tuple[str, str] | None = None

    def __post_init__(self):
        if self.templates not in TEMPLATE_CONVENTIONS:
            raise ParameterError(f"protocol {self.name!r}: templates must be one of "
                                 f"{', '.join(TEMPLATE_CONVENTIONS)}; got {self.templates!r}.")
        if self.triggers and (self.attack is not None or self.eps or self.steps is not None):
            raise ParameterError(f"protocol {self.name!r}: triggers are the attacks it sweeps; give no attack, "
                                 f"eps or steps beside them.")
        if (self.attack is None) != (not self.eps):
            raise ParameterError(f"protocol {self.name!r}: an attack needs its eps values, and eps an attack.")
        if self.rank_by is not None and (len(self.rank_by) != 2 or self.rank_by[1] not in RANK_DIRECTIONS):
            raise ParameterError(f"protocol {self.name!r}: rank_by is (column, 'max' or 'min'); got {self.rank_by!r}.")
        for eps in self.eps:
            parse_eps(eps)
        if self.counting not in COUNTINGS:
            raise ParameterError(f"protocol {self.name!r}: counting must be one of {', '.join(COUNTINGS)}; "
                                 f"got {self.counting!r}.")
        if not isinstance(self.preprocess, dict) or not all(isinstance(k, str) for k in self.preprocess):
            raise ParameterError(f"protocol {self.name!r}: preprocess maps dataset names (and 'default') to rules; "
                                 f"got {self.preprocess!r}.")
        for name, rule in self.preprocess.items():
            check_preprocess_rule(rule, f"protocol {self.name!r}, preprocess[{name!r}]")

    def preprocessing(self, dataset: str):
        """The preprocessing rule of ``dataset`` under this protocol ("native" unless the protocol says)."""
        return self.preprocess.get(dataset, self.preprocess.get("default", NATIVE))

    def settings(self) -> tuple[str, ...]:
        """What the protocol sweeps, one evaluation each: its eps labels or its triggers (empty: clean only)."""
        return self.eps or self.triggers

    def metrics(self) -> dict[str, tuple[str, ...]]:
        """The evaluator's metrics: ``once`` (its ``clean_metrics``, one value per dataset) and
        ``per_setting`` (one value per eps or trigger)."""
        evaluator = get_host().get("evaluator", self.evaluator).obj
        return {"once": tuple(m for m in evaluator.metrics if m in evaluator.clean_metrics),
                "per_setting": tuple(m for m in evaluator.metrics if m not in evaluator.clean_metrics)}

    def ranking(self) -> tuple[str, str]:
        """(column, "max" | "min"): ``rank_by``, or the evaluator's."""
        return tuple(self.rank_by or get_host().get("evaluator", self.evaluator).obj.rank_by)

    def config(self) -> dict:
        """Every parameter, JSON-ready; the evaluator, triggers and ranking only when not the defaults, so that
        records written before those existed still describe the same protocol."""
        config = {**asdict(self), "eps": list(self.eps), "triggers": list(self.triggers),
                  "rank_by": list(self.rank_by) if self.rank_by else None}
        return {k: v for k, v in config.items() if k not in _LATER_DEFAULTS or v != _LATER_DEFAULTS[k]}


def get_protocol(protocol: str | Protocol) -> Protocol:
    return protocol if isinstance(protocol, Protocol) else get_host().get("protocol", protocol).obj
