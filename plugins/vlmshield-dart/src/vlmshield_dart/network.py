"""The network of unsupervised domain adaptation: a pretrained backbone, a bottleneck and a classifier head,
with the training-only part of the adaptation method beside them.

As Transfer-Learning-Library's ``ImageClassifier`` (the released DART configuration: MDD on a ResNet-50):

- ``backbone``: ``timm:NAME`` (a timm model without its classifier: ``timm:resnet50`` is the paper's) or a
  zoo CLIP's image tower (``clip-tinyrn``: the world's pretrained ResNet, or ``clip-vitb16``);
- ``bottleneck``: Linear -> BatchNorm1d -> ReLU -> Dropout(0.5), ``bottleneck_dim`` wide (1024);
- ``head``: one Linear layer, or MDD's two (Linear -> ReLU -> Dropout(0.5) -> Linear, the hidden layer
  ``bottleneck_dim`` wide);
- ``adversary``: ``none``; ``dann``, the domain discriminator of DANN (Linear -> BatchNorm1d -> ReLU, twice,
  1024 wide, then one logit); or ``mdd``, MDD's adversarial head (a second head of the main head's shape).

``features(z)`` is the bottleneck's output g(x) (what DART's feature term compares), ``forward(z)`` the logits;
``z`` is the normalized input. The network is registered as the architecture ``adaptation-net``: a model folder
that names it is built again with these arguments and its own weights. ``adaptation_classifier`` builds one
with the backbone's pretrained weights and wraps it as an ``ImageClassifier`` (the backbone's input size and
normalization).
"""

from __future__ import annotations

from torch import nn

from vlmshield.api import VLM, Architecture, ImageClassifier, ParameterError, zoo

ADVERSARIES = ("none", "dann", "mdd")


def _timm():
    import timm

    return timm


def build_backbone(backbone: str, pretrained: bool = False) -> tuple[nn.Module, int]:
    """The backbone ``backbone`` names (random weights unless ``pretrained``) and the width of its output."""
    if backbone.startswith("timm:"):
        model = _timm().create_model(backbone.removeprefix("timm:"), pretrained=pretrained, num_classes=0)
        return model, model.num_features
    vlm = zoo.load(backbone, weights=pretrained)
    if not isinstance(vlm, VLM):
        raise ParameterError(f"the backbone is timm:NAME or a zoo CLIP; {backbone} is a {type(vlm).__name__}.")
    return vlm.model.visual, vlm.model.visual.output_dim


def _head(width: int, num_classes: int, layers: int, dropout: float) -> nn.Module:
    if layers == 1:
        return nn.Linear(width, num_classes)
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, num_classes))


class AdaptationNet(nn.Module):
    """backbone -> bottleneck -> head, and the adversary of the method (module docstring)."""

    def __init__(self, backbone: str = "timm:resnet50", num_classes: int = 31, bottleneck_dim: int = 1024,
                 head_layers: int = 1, adversary: str = "none", dropout: float = 0.5):
        super().__init__()
        if head_layers not in (1, 2) or adversary not in ADVERSARIES or not 0 <= dropout < 1 \
                or bottleneck_dim < 1 or num_classes < 2:
            raise ParameterError(f"an adaptation network has head_layers 1 or 2, an adversary among "
                                 f"{', '.join(ADVERSARIES)}, dropout in [0, 1), a bottleneck of 1 or more and 2 "
                                 f"classes or more; got {head_layers}, {adversary!r}, {dropout}, {bottleneck_dim}, "
                                 f"{num_classes}.")
        self.backbone, width = build_backbone(backbone)
        self.bottleneck = nn.Sequential(nn.Linear(width, bottleneck_dim), nn.BatchNorm1d(bottleneck_dim), nn.ReLU(),
                                        nn.Dropout(dropout))
        self.head = _head(bottleneck_dim, num_classes, head_layers, dropout)
        if adversary == "dann":
            self.adversary = nn.Sequential(nn.Linear(bottleneck_dim, 1024), nn.BatchNorm1d(1024), nn.ReLU(),
                                           nn.Linear(1024, 1024), nn.BatchNorm1d(1024), nn.ReLU(), nn.Linear(1024, 1))
        elif adversary == "mdd":
            self.adversary = _head(bottleneck_dim, num_classes, head_layers, dropout)
        else:
            self.adversary = None

    def features(self, z):
        """The bottleneck's output g(x) for normalized inputs ``z``."""
        return self.bottleneck(self.backbone(z))

    def forward(self, z):
        return self.head(self.features(z))


ARCHITECTURE = Architecture("adaptation-net", AdaptationNet,
                            "A domain adaptation network: pretrained backbone, bottleneck, head (and DANN's "
                            "discriminator or MDD's adversarial head).")


def adaptation_classifier(backbone: str, num_classes: int, *, classnames=None, pretrained: bool = True,
                          name: str | None = None, **args) -> ImageClassifier:
    """An ``AdaptationNet`` (``args``: its other arguments) whose backbone has its pretrained weights
    (``pretrained``), as an ImageClassifier at the backbone's input size and normalization."""
    net = AdaptationNet(backbone, num_classes, **args)
    source, _ = build_backbone(backbone, pretrained=pretrained)
    net.backbone.load_state_dict(source.state_dict())
    if backbone.startswith("timm:"):
        config = _timm().data.resolve_data_config(model=source)
        size, mean, std = config["input_size"][1:], config["mean"], config["std"]
        interpolation = config["interpolation"]
    else:
        vlm = zoo.load(backbone, weights=False)
        size, mean, std, interpolation = vlm.image_size, vlm.preprocess_cfg()["mean"], vlm.preprocess_cfg()["std"], \
            vlm.interpolation
    architecture = {"name": ARCHITECTURE.name, "args": {"backbone": backbone, "num_classes": num_classes, **args}}
    return ImageClassifier(net, num_classes, image_size=size, mean=mean, std=std, interpolation=interpolation,
                           classnames=classnames, name=name, architecture=architecture)


def without_adversary(classifier: ImageClassifier) -> ImageClassifier:
    """``classifier`` (changed in place) with its network's training-only adversary removed, as its architecture
    records: the deployable classifier."""
    classifier.model.adversary = None
    classifier.architecture = {"name": classifier.architecture["name"],
                               "args": {**classifier.architecture["args"], "adversary": "none"}}
    return classifier


def adapt(model, num_classes: int, *, classnames=None, **args) -> ImageClassifier:
    """The adaptation network a UDA method trains, from the model a run starts with: a zoo CLIP (its image tower
    becomes the backbone, with its weights), an ImageClassifier around a timm model (the same, without its head),
    or an adaptation network already (returned as it is)."""
    if isinstance(model, ImageClassifier) and isinstance(model.model, AdaptationNet):
        if model.num_classes != num_classes:
            raise ParameterError(f"the adaptation network has {model.num_classes} classes; the data has {num_classes}.")
        wanted = args.get("adversary", "none")
        if wanted != "none" and model.architecture["args"].get("adversary", "none") != wanted:
            raise ParameterError(f"this adaptation network has no {wanted} adversary (a trained one is saved "
                                 f"without it): resume its run from the checkpoint, or start from its backbone.")
        return model
    if isinstance(model, VLM):
        backbone, tower = model.name, model.model.visual
    elif isinstance(model, ImageClassifier) and hasattr(model.model, "pretrained_cfg"):
        backbone, tower = f"timm:{model.model.pretrained_cfg['architecture']}", model.model
    else:
        raise ParameterError(f"a domain adaptation starts from a zoo CLIP, a timm classifier or an adaptation "
                             f"network; got a {type(model).__name__}.")
    classifier = adaptation_classifier(backbone, num_classes, classnames=classnames, pretrained=False, **args)
    state = {k: v for k, v in tower.state_dict().items() if k in classifier.model.backbone.state_dict()}
    classifier.model.backbone.load_state_dict(state)
    if isinstance(model, ImageClassifier):  # the classifier's own preprocessing, not timm's defaults
        classifier.image_size, classifier.mean, classifier.std = model.image_size, model.mean, model.std
        classifier.pixel_mean.copy_(model.pixel_mean)
        classifier.pixel_std.copy_(model.pixel_std)
    return classifier
