"""HPT-GPD (Fu, Huang & Zhang, 2026): proxy robustness transferred across CLIP architectures, as a vlmshield plugin."""

from .method import HPTGPD, kl_divergence

__all__ = ["HPTGPD", "kl_divergence"]
