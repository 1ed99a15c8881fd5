"""Everything a plugin may import, in one module: the contract (``vlmshield.core``), the built-in
trainers' method bases, and the engines' public functions.

    from vlmshield.api import AdversarialFineTuning, hookimpl, kl_divergence

vlmshield's own plugins (attacks, datasets, evaluators, trainers, the zoo, the world, the commands)
import from here too, as a third-party plugin does.
"""

from .core import *  # noqa: F401,F403  (the contract, whole)
from .core import __all__ as _contract
from .core.data import UnreadableImageError, read_image
from .core.weights import header_parameter_count
from .engine.distributed import (
    default_device,
    gather_objects,
    init_from_env,
    is_main_process,
    rank_and_world,
    resolve_device,
)
from .engine.evaluation import evaluate, format_table, subset_indices
from .engine.leaderboard import leaderboard
from .engine.protocol_runs import measure_for_card, run_protocol
from .engine.records import (
    RunLog,
    atomic_write_json,
    check_destination,
    check_overwrite,
    environment,
    fingerprint,
    locked_folder,
)
from .engine.reports import format_run, load_run, write_report
from .engine.training import (
    Batches,
    average_gradients,
    mean_loss,
    read_checkpoint,
    run_training,
    save_checkpoint,
    training_progress,
    weights_module,
)

__all__ = [
    *_contract, "UnreadableImageError", "read_image", "header_parameter_count",
    "default_device", "gather_objects", "init_from_env", "is_main_process", "rank_and_world", "resolve_device",
    "evaluate", "format_table", "subset_indices", "leaderboard", "measure_for_card", "run_protocol",
    "RunLog", "atomic_write_json", "check_destination", "check_overwrite", "environment", "fingerprint",
    "locked_folder", "format_run", "load_run",
    "write_report",
    "Batches", "average_gradients", "mean_loss", "read_checkpoint", "run_training", "save_checkpoint",
    "training_progress", "weights_module",
]


# The built-in trainers' method bases, the shared prompt and the zoo come from built-in plugins, which
# import this module: imported last, once every name above exists.
from . import zoo  # noqa: E402  (zoo.load, zoo.save, zoo.publish)
from .datasets.prompts import SINGLE_TEMPLATE  # noqa: E402
from .trainers.adversarial import ROBUSTVLM_ATTACK, AdversarialFineTuning, ImageEncoder, inner_attack  # noqa: E402
from .trainers.contrastive import ContrastiveFineTuning, clip_loss, gather_features  # noqa: E402
from .trainers.distillation import Distillation  # noqa: E402
from .zoo.packaged import card_metrics, export_packaged, load_packaged, packaged_cards  # noqa: E402
from .zoo.visual import WEIGHTS_ENV, manual_file, weights_dir  # noqa: E402

__all__ += ["zoo", "SINGLE_TEMPLATE", "ROBUSTVLM_ATTACK", "AdversarialFineTuning", "ImageEncoder", "inner_attack",
            "ContrastiveFineTuning", "clip_loss", "gather_features", "Distillation", "card_metrics",
            "export_packaged", "load_packaged", "packaged_cards", "WEIGHTS_ENV", "manual_file", "weights_dir"]
