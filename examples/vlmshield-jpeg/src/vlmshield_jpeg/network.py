"""A small convolutional classifier for the world's 32-pixel images, registered as the architecture ``jpeg-convnet``.

Three stages of two 3x3 convolutions (batch norm, ReLU), ``width``, ``2 * width`` and ``4 * width`` channels, the
first two followed by a 2x2 max-pool, then global average pooling and a linear head. At ``width`` 16 it has 72,954
parameters for 10 classes (150 KB in float16). A packaged classifier names it with its arguments, so the zoo builds it
again wherever this plugin is installed.
"""

from __future__ import annotations

from torch import nn

from vlmshield.api import Architecture, ImageClassifier, ParameterError

#: The world's normalization (its images are rendered at low contrast around mid-grey).
WORLD_MEAN, WORLD_STD = (0.5, 0.5, 0.5), (0.065, 0.065, 0.065)


def _stage(inputs: int, outputs: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(),
            nn.Conv2d(outputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU()]


class ConvNet(nn.Module):
    """Normalized images -> logits over ``num_classes`` (module docstring)."""

    def __init__(self, num_classes: int = 10, width: int = 16, channels: int = 3):
        super().__init__()
        if num_classes < 2 or width < 1 or channels < 1:
            raise ParameterError(f"a jpeg-convnet has 2 classes or more, a width of 1 or more and 1 input channel "
                                 f"or more; got {num_classes}, {width} and {channels}.")
        self.features = nn.Sequential(*_stage(channels, width), nn.MaxPool2d(2), *_stage(width, 2 * width),
                                      nn.MaxPool2d(2), *_stage(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, z):
        return self.head(self.features(z))


ARCHITECTURE = Architecture("jpeg-convnet", ConvNet,
                            "A small CNN for 32-pixel images (three stages of two 3x3 convolutions, global pooling, "
                            "a linear head).")


def convnet_classifier(classnames, *, width: int = 16, name: str | None = None) -> ImageClassifier:
    """A randomly initialised ``ConvNet`` over ``classnames`` as an ImageClassifier at the world's 32 pixels and
    normalization, naming its architecture (what ``export_packaged`` needs)."""
    args = {"num_classes": len(classnames), "width": width}
    return ImageClassifier(ConvNet(**args), len(classnames), image_size=32, mean=WORLD_MEAN, std=WORLD_STD,
                           interpolation="bicubic", classnames=classnames, name=name,
                           architecture={"name": ARCHITECTURE.name, "args": args})
