"""Step 1 of DART: unsupervised domain adaptation (UDA) teachers, and the trainer that runs them.

The ``uda`` trainer reads a domain pair: every step, a batch of labelled source images and a batch of
unlabelled target images (two seeded orders; under torchrun each process takes its share of both and the
gradients are averaged). The target's labels are never read: the pair's target is unlabelled images. The
network's new layers start from the run's seed and each step's dropout from the step's, so a resumed run ends
with the weights of an uninterrupted one. The method turns the start model into an adaptation network
(``network.adapt``: a zoo CLIP's image tower or a timm backbone, a bottleneck and a head), declares the
backbone's learning rate at 0.1x the heads' (as Transfer-Learning-Library's ``get_parameters``), and gives the
loss:

- ``source-only``: cross-entropy on the source, the target unused (the lower bound every UDA paper reports);
- ``dann`` (Ganin et al., JMLR 2016): cross-entropy on the source plus the domain discriminator's binary
  cross-entropy (source 1, target 0, the mean of both domains' means), whose gradient reaches the features
  reversed and scaled by lambda_p = 2 / (1 + exp(-10 p)) - 1, p the share of training done (the paper's
  schedule, from 0 to 1).

- ``mdd`` (Zhang et al., ICML 2019), as Transfer-Learning-Library's MDD, the UDA model of DART's released
  configuration: cross-entropy on the source minus the margin disparity discrepancy of an adversarial head,
  D = mean_s[-margin CE(adv(f_s), argmax y_s)] + mean_t[log(1 - softmax(adv(f_t))[argmax y_t])] (margin 4,
  log shifted by 1e-6 and capped at 0), the adversarial head fed the features through a gradient reversal of
  weight 2 hi / (1 + exp(-t / 1000)) - hi, hi = 0.1 (its warm start), t the step.

- ``source-only-at`` and ``dann-at``: the same with vanilla adversarial training (VAT, Madry et al.) inside:
  the source images of the loss replaced by PGD examples against their labels (random start, the run's
  ``eps``, ``attack_steps`` and ``attack_alpha``, the network in eval mode), the baselines DART's paper
  says fail in UDA (the target has no labels to attack with).

Their ``paper`` presets train timm's ResNet-50 (torchvision's ImageNet weights, as tllib) on Office-31 A->W,
batch 32, SGD with Nesterov momentum 0.9. ``mdd``'s is tllib's MDD example: lr 0.004, weight decay 5e-4,
lr (1 + 0.0002 t)^-0.75, 20 epochs of 1,000 steps, bottleneck and head 1024 wide. ``source-only`` and ``dann``
take the DANN paper's optimizer: lr 0.01, weight decay 1e-3, annealed as lr (1 + 10 p)^-0.75, for 10,000 steps
(the paper fixes no count; DART's step 2 runs as many). Their ``world`` presets adapt the world's pretrained
ResNet (``clip-tinyrn``) on ``world-da``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlmshield.api import (
    Batches,
    DomainPair,
    ImageClassifier,
    Stage,
    TrainConfig,
    Trainer,
    TrainingDefense,
    check_takes,
    derive_seed,
    evaluate,
    get_host,
    rank_and_world,
    resolve_device,
    run_training,
)

from .network import adapt, without_adversary

#: The DANN paper's optimizer: SGD, momentum 0.9 (Nesterov, as tllib), lr 0.01 annealed as (1 + 10 p)^-0.75.
PAPER_CONFIG = {"stages": [Stage("adapt", steps=10_000, lr=0.01, warmup=0, weight_decay=1e-3, schedule="inverse",
                                 decay_rate=10 / 10_000)],
                "batch_size": 32, "optimizer": "sgd", "nesterov": True, "checkpoint_every": 1000, "log_every": 100}
#: tllib's MDD example: lr 0.004, weight decay 5e-4, (1 + 0.0002 t)^-0.75, 20 epochs of 1,000 steps.
MDD_CONFIG = {**PAPER_CONFIG, "stages": [Stage("adapt", steps=20_000, lr=0.004, warmup=0, weight_decay=5e-4,
                                               schedule="inverse", decay_rate=0.0002)]}
WORLD_STEPS = 1500
WORLD_CONFIG = {"stages": [Stage("adapt", steps=WORLD_STEPS, lr=0.01, warmup=0, weight_decay=1e-3,
                                 schedule="inverse", decay_rate=10 / WORLD_STEPS)],
                "batch_size": 64, "optimizer": "sgd", "nesterov": True, "checkpoint_every": 250, "log_every": 100,
                "val_every": 500, "val_n": 500}


class Adaptation(TrainingDefense):
    """A UDA method: the network it trains (``adversary``, ``head_layers``), its parameters' learning rates and
    its loss on a source batch and a target batch."""

    defense_kind: ClassVar[str] = "domain-adaptation"
    trainer: ClassVar[str] = "uda"
    #: The training-only part of the network the method needs (``none``, ``dann``, ``mdd``).
    adversary: ClassVar[str] = "none"
    head_layers: ClassVar[int] = 1

    def __init__(self, bottleneck_dim: int = 1024, backbone_lr: float = 0.1, **params):
        super().__init__(bottleneck_dim=int(bottleneck_dim), backbone_lr=float(backbone_lr), **params)

    def network(self, model: nn.Module, data: DomainPair) -> ImageClassifier:
        """The adaptation network trained from ``model`` for the pair's classes."""
        return adapt(model, len(data.classnames), classnames=data.classnames, bottleneck_dim=self.bottleneck_dim,
                     head_layers=self.head_layers, adversary=self.adversary)

    def lr_scales(self, model: nn.Module) -> dict[int, float]:
        return {id(p): self.backbone_lr for p in model.model.backbone.parameters()}

    def loss(self, model: ImageClassifier, xs: torch.Tensor, ys: torch.Tensor, xt: torch.Tensor, refs: dict, *,
             step: int, total_steps: int) -> torch.Tensor:
        """The loss of step ``step`` (of ``total_steps``) on source images ``xs`` (labels ``ys``) and target
        images ``xt``."""
        return F.cross_entropy(model(xs), ys)


class SourceOnly(Adaptation):
    name = "source-only"
    description = "Source-only training: cross-entropy on the labelled source (the UDA lower bound)."
    paper = "The lower bound of unsupervised domain adaptation (as DANN and MDD report it)"
    presets = {"paper": {"model": "hf-hub:timm/resnet50.tv_in1k", "dataset": "office31/amazon-to-webcam",
                         "config": PAPER_CONFIG},
               "world": {"model": "clip-tinyrn", "dataset": "world-da/palette", "config": WORLD_CONFIG}}


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's reversal weight: 2 / (1 + exp(-gamma p)) - 1, from 0 at the start to nearly 1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """``x`` forward; its gradient multiplied by -``weight`` backward (DANN's gradient reversal layer)."""
    return _Reverse.apply(x, weight)


class DANN(Adaptation):
    name = "dann"
    description = ("DANN: source cross-entropy plus a domain discriminator whose gradient reaches the features "
                   "reversed (Ganin et al.).")
    paper = "Ganin et al., Domain-Adversarial Training of Neural Networks (JMLR 2016)"
    adversary = "dann"
    presets = SourceOnly.presets

    def __init__(self, trade_off: float = 1.0, **params):
        super().__init__(trade_off=float(trade_off), **params)

    def loss(self, model, xs, ys, xt, refs, *, step, total_steps):
        net = model.model
        features = net.features(model.preprocess(torch.cat([xs, xt])))
        classification = F.cross_entropy(net.head(features[:len(xs)]), ys)
        domains = net.adversary(reverse_gradient(features, dann_lambda(step / total_steps))).squeeze(1)
        truth = torch.cat([torch.ones(len(xs)), torch.zeros(len(xt))]).to(domains)
        per_image = F.binary_cross_entropy_with_logits(domains.float(), truth, reduction="none")
        transfer = 0.5 * (per_image[:len(xs)].mean() + per_image[len(xs):].mean())
        refs["diagnostics"].update(cls=classification.detach(), domain=transfer.detach())
        return classification + self.trade_off * transfer


def warm_start_lambda(step: int, high: float = 0.1, iterations: int = 1000) -> float:
    """MDD's reversal weight (tllib's warm start): 2 high / (1 + exp(-step / iterations)) - high."""
    return 2.0 * high / (1.0 + math.exp(-step / iterations)) - high


def margin_disparity(y_s: torch.Tensor, y_s_adv: torch.Tensor, y_t: torch.Tensor, y_t_adv: torch.Tensor,
                     margin: float = 4.0) -> torch.Tensor:
    """MDD's discrepancy (module docstring): the adversarial head's disagreement with the main head's
    predictions, margin-weighted on the source."""
    source = -margin * F.cross_entropy(y_s_adv.float(), y_s.argmax(1), reduction="none")
    disagree = 1.0 - F.softmax(y_t_adv.float(), dim=1).gather(1, y_t.argmax(1, keepdim=True)).squeeze(1)
    target = torch.log(torch.clamp(disagree + 1e-6, max=1.0))
    return (source + target).mean()


class MDD(Adaptation):
    name = "mdd"
    description = ("MDD: source cross-entropy minus the margin disparity discrepancy of an adversarial head "
                   "(Zhang et al.), as Transfer-Learning-Library runs it.")
    paper = "Zhang et al., Bridging Theory and Algorithm for Domain Adaptation (ICML 2019)"
    adversary = "mdd"
    head_layers = 2
    presets = {"paper": {**SourceOnly.presets["paper"], "config": MDD_CONFIG}, "world": SourceOnly.presets["world"]}

    def __init__(self, margin: float = 4.0, trade_off: float = 1.0, **params):
        super().__init__(margin=float(margin), trade_off=float(trade_off), **params)

    def loss(self, model, xs, ys, xt, refs, *, step, total_steps):
        net = model.model
        features = net.features(model.preprocess(torch.cat([xs, xt])))
        outputs = net.head(features)
        adversarial = net.adversary(reverse_gradient(features, warm_start_lambda(step)))
        n = len(xs)
        classification = F.cross_entropy(outputs[:n], ys)
        disparity = margin_disparity(outputs[:n], adversarial[:n], outputs[n:], adversarial[n:], self.margin)
        refs["diagnostics"].update(cls=classification.detach(), mdd=disparity.detach())
        return classification - self.trade_off * disparity


#: Vanilla adversarial training's attack on the world: PGD-3 with a random start, steps of eps/2, at DART's
#: world budget.
WORLD_AT = {"eps": 2 / 255, "attack_steps": 3, "attack_alpha": 1 / 255}
PAPER_AT = {"eps": 6 / 255, "attack_steps": 10, "attack_alpha": 1.5 / 255}


def _with_at(presets: dict) -> dict:
    return {"paper": {**presets["paper"], "config": {**presets["paper"]["config"], **PAPER_AT}},
            "world": {**presets["world"], "config": {**presets["world"]["config"], **WORLD_AT}}}


class VanillaAT:
    """Mixed into a UDA method: its loss on PGD examples of the source batch (module docstring)."""

    adversarial: ClassVar[bool] = True

    def loss(self, model, xs, ys, xt, refs, *, step, total_steps):
        config = refs["config"]
        attack = get_host().create("attack", "pgd", eps=config.eps, alpha=config.attack_alpha,
                                   steps=config.attack_steps, random_start=True)
        return super().loss(model, attack(model, xs, ys), ys, xt, refs, step=step, total_steps=total_steps)


class SourceOnlyAT(VanillaAT, SourceOnly):
    name = "source-only-at"
    description = "Source-only adversarial training: cross-entropy on PGD examples of the labelled source."
    paper = "Madry et al. (ICLR 2018) on the source alone, the URDA baseline of DART's paper"
    presets = _with_at(SourceOnly.presets)


class DANNAT(VanillaAT, DANN):
    name = "dann-at"
    description = "DANN with vanilla adversarial training: its source term on PGD examples (DART's VAT baseline)."
    paper = "Ganin et al. (JMLR 2016) with Madry et al.'s adversarial training, DART's VAT baseline"
    presets = _with_at(DANN.presets)


class _PairedBatches:
    """Each step's source batch and target batch (two seeded orders), this process's share of each."""

    def __init__(self, data: DomainPair, batch_size: int, seed: int):
        self.source = Batches(data.source, batch_size, seed)
        self.target = Batches(data.target, batch_size, seed + 1)

    def local(self, step: int) -> tuple[list, list]:
        return self.source.local(step), self.target.local(step)


class AdaptationTrainer(Trainer):
    name = "uda"
    description = "Unsupervised domain adaptation: a labelled source batch and an unlabelled target batch per step."
    takes = "domain-pair"
    method_type = Adaptation

    def train(self, model: nn.Module, data, method: Adaptation, config: TrainConfig, *, out=None, val_data=None,
              device=None, progress=None, log=None, stop_after=None) -> ImageClassifier:
        """Train the method's adaptation network from ``model`` (see ``Trainer``) and return it without its
        adversary (the checkpoint keeps it); the pair's target test set (or ``val_data``) gives its target
        accuracy every ``val_every`` steps."""
        pair = check_takes(data, self.takes, f"the {self.name} trainer")
        config = config.check()
        device = resolve_device(device)
        with torch.random.fork_rng(devices=[]):  # the new layers start from the run's seed, not the global state
            torch.manual_seed(derive_seed(config.seed, "adaptation-network"))
            classifier = method.network(model, pair).to(device)
        total = config.total_steps

        def step_loss(step: int, items: tuple, refs: dict) -> torch.Tensor:
            source, target = items
            xs = torch.stack([item[0] for item in source]).to(device)
            ys = torch.as_tensor([int(item[1]) for item in source], device=device)
            xt = torch.stack([item[0] for item in target]).to(device)
            classifier.train()
            with torch.random.fork_rng(devices=[]):  # dropout draws from the step's seed: a resumed run is exact
                torch.manual_seed(derive_seed(config.seed, "uda", step, rank_and_world()[0]))
                return method.loss(classifier, xs, ys, xt, refs, step=step, total_steps=total)

        held_out = val_data if val_data is not None else pair.target_test

        def validate() -> dict:
            record = evaluate(classifier, held_out, evaluator="accuracy", n=config.val_n, progress=False,
                              device=device, seed=config.seed)
            return {"target_acc": record["average"]["clean_acc"]}

        trained = run_training(classifier, method, config, batches=_PairedBatches(pair, config.batch_size,
                                                                                  config.seed),
                               step_loss=step_loss, refs={}, parameters=list(classifier.parameters()), out=out,
                               device=device, progress=progress, log=log, stop_after=stop_after,
                               validate=validate, trainer=self)
        return without_adversary(trained)
