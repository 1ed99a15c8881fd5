"""vlmshield-jpeg: JPEG compression as a test-time defense, its adaptive attack through a differentiable JPEG,
and a small world classifier trained to keep its accuracy under JPEG; an example of a plugin that ships as a wheel."""

from .attack import DiffJPEG
from .codec import differentiable_jpeg, jpeg, quantization_tables, soft_round
from .defense import JPEG, JPEGCompressed, check_quality
from .network import ARCHITECTURE, ConvNet, convnet_classifier

__all__ = ["JPEG", "JPEGCompressed", "DiffJPEG", "ConvNet", "ARCHITECTURE", "check_quality", "convnet_classifier",
           "differentiable_jpeg", "jpeg", "quantization_tables", "soft_round"]
