"""The core's public API: everything a plugin may import.

A plugin imports from ``vlmshield.core`` and from its own files, nothing else of vlmshield's.
"""

from .attack import (
    LOSSES,
    Attack,
    BackdoorAttack,
    EOTAttack,
    TargetedLoss,
    ascent_direction,
    ce_loss,
    check_logits,
    clean_logits,
    dlr_loss,
    is_labels,
    loss_and_grad,
    margin_loss,
    per_sample_norm,
    project,
    random_start,
    resolve_loss,
    squared_l2_loss,
    targeted_dlr_loss,
)
from .card import ModelCard, recipe_card
from .data import DATA_ENV, CaptionedImages, DatasetEntry, LabelledImages, dataset, datasets
from .defense import DEFENSE_KINDS, Defense, Purifier, TestTimeDefense, TrainingDefense
from .errors import (
    DataError,
    InputError,
    ParameterError,
    PluginError,
    UnknownNameError,
    VlmshieldError,
    did_you_mean,
    error_summary,
)
from .evaluate import Evaluator, evaluate, format_table, subset_indices
from .hookspecs import hookimpl
from .model import DEFAULT_TEMPLATES, VLM, ZeroShotClassifier, check_images, eval_mode, frozen
from .packaged import card_metrics, export_packaged, measure_for_card, packaged_cards
from .params import Configurable, check_number, check_template, eps_note, format_eps, parse_eps, parse_params
from .plugins import Command, PluginHost, get_host, plugins, reset_host, temporary_host
from .preprocess import INTERPOLATIONS, NATIVE, check_preprocess_rule, preprocessed_dataset, resize_crop
from .record import RunLog, atomic_write_json, derive_seed, environment, fingerprint
from .registry import Registration, canonical_name, plugin_hint
from .tokenizer import WordTokenizer
from .train import (
    ROBUSTVLM_ATTACK,
    AdversarialFineTuning,
    ImageEncoder,
    Stage,
    TrainConfig,
    frozen_copy,
    kl_divergence,
    learning_rate,
    train,
)
from .weights import WeightsError, load_state, read_weights, write_weights

__all__ = [
    "LOSSES", "TargetedLoss", "Attack", "EOTAttack", "BackdoorAttack", "ascent_direction", "ce_loss", "check_logits",
    "clean_logits", "dlr_loss",
    "is_labels", "loss_and_grad", "margin_loss", "per_sample_norm", "project", "random_start", "resolve_loss",
    "squared_l2_loss", "targeted_dlr_loss", "ModelCard", "DATA_ENV", "CaptionedImages", "DatasetEntry",
    "LabelledImages", "dataset", "datasets", "DEFENSE_KINDS", "Defense", "Purifier", "TestTimeDefense",
    "TrainingDefense",
    "DataError", "InputError", "ParameterError", "PluginError", "UnknownNameError", "VlmshieldError",
    "did_you_mean", "error_summary", "Evaluator", "evaluate", "format_table", "subset_indices", "hookimpl",
    "DEFAULT_TEMPLATES",
    "VLM", "ZeroShotClassifier", "check_images", "eval_mode", "frozen", "Configurable", "check_number",
    "check_template", "eps_note", "format_eps",
    "parse_eps", "parse_params", "Command", "PluginHost", "get_host", "plugins", "reset_host", "temporary_host",
    "RunLog", "atomic_write_json", "derive_seed", "environment", "fingerprint", "Registration", "canonical_name",
    "plugin_hint", "WordTokenizer", "export_packaged", "packaged_cards", "card_metrics", "measure_for_card",
    "AdversarialFineTuning", "ImageEncoder",
    "Stage", "TrainConfig", "frozen_copy", "kl_divergence", "learning_rate", "train", "WeightsError", "load_state",
    "read_weights", "write_weights", "recipe_card", "ROBUSTVLM_ATTACK", "NATIVE", "INTERPOLATIONS",
    "check_preprocess_rule", "preprocessed_dataset", "resize_crop",
]
