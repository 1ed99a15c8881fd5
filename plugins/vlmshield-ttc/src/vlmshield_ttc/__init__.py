"""TTC (Xing, Zhao & Sebe, CVPR 2025): test-time counterattacks for CLIP-like models, as a vlmshield plugin."""

from .adaptive import TTCAware
from .noise import NoisedInput, RandomNoise, uniform_noise
from .ttc import TTC, Counterattacked, step_weights

__all__ = ["TTC", "Counterattacked", "RandomNoise", "NoisedInput", "TTCAware", "step_weights", "uniform_noise"]
