"""CleanCLIP: backdoor removal from CLIP by contrastive fine-tuning with in-modal self-supervision."""

from .eda import eda
from .plugin import CleanCLIP, autoaugment, inmodal_loss

__all__ = ["CleanCLIP", "autoaugment", "eda", "inmodal_loss"]
