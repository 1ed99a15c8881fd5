"""PAR (Perturb and Recover): backdoor removal from CLIP by contrastive fine-tuning away from the poisoned model."""

from .plugin import PAR, perturb_term, threshold

__all__ = ["PAR", "perturb_term", "threshold"]
