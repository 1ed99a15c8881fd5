"""PAR (Perturb and Recover): backdoor removal from CLIP by contrastive fine-tuning away from the poisoned model."""

from .plugin import PAR, CLIPFineTune, perturb_term, threshold

__all__ = ["PAR", "CLIPFineTune", "perturb_term", "threshold"]
