"""The contract: hook specifications, the plugin host and registries, and the base types of every kind
(models and cards, data, attacks, defenses, trainers, evaluators, protocols).

It imports nothing of vlmshield's outside this package. Plugins import from ``vlmshield.api``, which
re-exports this and the engines' public functions.
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
from .card import ModelCard, ModelSource, load_model, recipe_card
from .classifier import Architecture, ImageClassifier, input_size
from .command import Command, UsageError, defense_params, progress_flag, resumable
from .data import (
    DATA_ENV,
    DATA_TYPES,
    CaptionedImages,
    DatasetEntry,
    DomainPair,
    LabelledImages,
    UnlabelledImages,
    check_takes,
    dataset,
    datasets,
)
from .defense import DEFENSE_KINDS, Defense, Purifier, TestTimeDefense, TrainingDefense
from .errors import (
    ContestedNameError,
    DataError,
    InputError,
    ParameterError,
    PluginError,
    UnknownNameError,
    VlmshieldError,
    did_you_mean,
    error_summary,
)
from .evaluator import COUNTINGS, Evaluator
from .hookspecs import hookimpl
from .identity import describe_identity, model_identity, same_model, weights_sha256
from .model import DEFAULT_TEMPLATES, VLM, ZeroShotClassifier, check_images, eval_mode, frozen, frozen_copy
from .params import (
    Configurable,
    check_number,
    check_template,
    eps_note,
    format_eps,
    parse_eps,
    parse_params,
    signature_defaults,
)
from .plugins import PluginHost, get_host, plugins, reset_host, temporary_host
from .preprocess import INTERPOLATIONS, NATIVE, check_preprocess_rule, preprocessed_dataset, resize_crop
from .protocol import Protocol, get_protocol
from .registry import KINDS, Registration, canonical_name, plugin_hint
from .seeds import derive_seed
from .tokenizer import WordTokenizer
from .trainer import Stage, TrainConfig, Trainer, kl_divergence, learning_rate
from .weights import (
    WeightsError,
    load_state,
    read_checked,
    read_legacy_weights,
    read_weights,
    resume_state,
    sha256_file,
    write_weights,
)

__all__ = [
    "LOSSES", "TargetedLoss", "Attack", "EOTAttack", "BackdoorAttack", "ascent_direction", "ce_loss", "check_logits",
    "clean_logits", "dlr_loss", "is_labels", "loss_and_grad", "margin_loss", "per_sample_norm", "project",
    "random_start", "resolve_loss", "squared_l2_loss", "targeted_dlr_loss",
    "ModelCard", "ModelSource", "load_model", "recipe_card",
    "Architecture", "ImageClassifier", "input_size",
    "DATA_ENV", "DATA_TYPES", "CaptionedImages", "DatasetEntry", "DomainPair", "LabelledImages", "UnlabelledImages",
    "check_takes", "dataset", "datasets",
    "DEFENSE_KINDS", "Defense", "Purifier", "TestTimeDefense", "TrainingDefense",
    "ContestedNameError", "DataError", "InputError", "ParameterError", "PluginError", "UnknownNameError",
    "VlmshieldError",
    "did_you_mean", "error_summary", "COUNTINGS", "Evaluator", "hookimpl",
    "describe_identity", "model_identity", "same_model", "weights_sha256",
    "DEFAULT_TEMPLATES", "VLM", "ZeroShotClassifier", "check_images", "eval_mode", "frozen", "frozen_copy",
    "Configurable", "check_number", "check_template", "eps_note", "format_eps", "parse_eps", "parse_params",
    "signature_defaults", "Command", "UsageError", "defense_params", "progress_flag", "resumable", "PluginHost",
    "get_host", "plugins", "reset_host", "temporary_host",
    "INTERPOLATIONS", "NATIVE", "check_preprocess_rule", "preprocessed_dataset", "resize_crop",
    "Protocol", "get_protocol", "Registration", "canonical_name", "plugin_hint", "derive_seed", "WordTokenizer",
    "Stage", "TrainConfig", "Trainer", "kl_divergence", "learning_rate",
    "WeightsError", "load_state", "read_checked", "read_legacy_weights", "read_weights", "resume_state", "sha256_file",
    "write_weights", "KINDS",
]
