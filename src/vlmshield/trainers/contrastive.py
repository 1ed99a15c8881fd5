"""The contrastive trainer (``contrastive``): image-text fine-tuning with the CLIP loss, and backdoor poisoning.

Each step reads the next batch of image-caption pairs, tokenizes this process's captions with the model's
tokenizer and steps the optimizer on the method's loss. A method (``ContrastiveFineTuning``) says only what
is its own: the frozen references it needs, the loss, and which parameters train. The default loss is
CLIP's over the global batch: under torchrun every process sees the features of the whole batch, so
N processes train the weights one process trains with the whole batch.

The trainer plants backdoors too: with ``trigger`` (a registered ``BackdoorAttack``) it trains on the data
that attack poisons at ``rate`` (``BackdoorAttack.poison``), the trigger's image-caption pairs naming
``target``: the poisoned model a backdoor-removal method starts from.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vlmshield.api import (
    VLM,
    BackdoorAttack,
    Batches,
    CaptionedImages,
    ParameterError,
    Stage,
    TrainConfig,
    Trainer,
    TrainingDefense,
    check_takes,
    derive_seed,
    get_host,
    is_main_process,
    rank_and_world,
    resolve_device,
    run_training,
)


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy (float32): pair i's image and text are each other's class among the
    batch's texts and images, with logits ``logit_scale * cosine``; ``logit_scale`` is the multiplier itself
    (open_clip's ``logit_scale.exp()``)."""
    image = F.normalize(image_features.float(), dim=-1)
    text = F.normalize(text_features.float(), dim=-1)
    logits = logit_scale.float() * image @ text.t()
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def gather_features(features: torch.Tensor) -> torch.Tensor:
    """The features of the whole global batch, in rank order, on every process; this process's own rows
    keep their gradient, with the gradient that flows back into them multiplied by the number of processes.

    Why the factor: every process computes the same global-batch loss L, but its graph reaches the
    parameters only through its own rows (the other processes' rows arrive without gradient). dL/dθ is
    the sum over processes of those per-process parts, and the training loop averages the gradients
    (it divides their sum by the number of processes N), so each part must be N times its size. Scaling
    the loss by N instead would do it for the towers but would count N times the gradient of what every
    process sees whole, such as the logit scale; scaling here leaves the loss's value L, which is what the
    loop logs. In one process this is the features themselves."""
    rank, world = rank_and_world()
    if world == 1:
        return features
    parts = [torch.empty_like(features) for _ in range(world)]
    dist.all_gather(parts, features.detach().contiguous())
    # The value is exactly ``features`` (the second term is zero); the gradient is multiplied by ``world``.
    parts[rank] = features + (world - 1) * (features - features.detach())
    return torch.cat(parts)


class ContrastiveFineTuning(TrainingDefense):
    """A method of the contrastive trainer: image-caption pairs, a loss on the model's image and text features.

    ``references`` builds the frozen things the loss needs, once; ``loss`` maps this process's images and
    token ids (the model's tokenizer applied to the captions ``captions`` returns) to a scalar; ``trainable``
    names the parameters that train, ``no_decay`` those of them that take no weight decay. ``refs`` carries
    the run's ``TrainConfig`` (``refs["config"]``) and the current ``Stage`` (``refs["stage"]``). Random draws
    in a loss come from a generator seeded with ``step_seed`` (one per step and process), so a resumed run
    ends as an uninterrupted one does.

    ``captions`` sees the raw captions before they are tokenized: a method that edits text (CleanCLIP's
    EDA) does it there. It may return more captions than there are pairs, in an order its ``loss`` knows:
    CleanCLIP returns the captions followed by their augmented versions, and ``loss`` splits ``texts`` in two.
    """

    defense_kind: ClassVar[str] = "backdoor-removal"
    trainer: ClassVar[str] = "contrastive"

    def references(self, vlm: VLM, data: CaptionedImages) -> dict:
        """Frozen models and tensors the loss needs (built once, before the first step); none by default."""
        return {}

    def trainable(self, vlm: VLM) -> list[nn.Parameter]:
        """Every parameter of both towers; the logit scale stays frozen, as in PAR's and CleanCLIP's
        fine-tuning of a pretrained CLIP (it is the temperature the pretraining settled on)."""
        return [p for name, p in vlm.model.named_parameters() if name != "logit_scale"]

    def no_decay(self, vlm: VLM) -> list[nn.Parameter]:
        """The trainable parameters that take no weight decay; none by default (every one takes the stage's)."""
        return []

    def captions(self, captions: list[str], step_seed: int) -> list[str]:
        """The captions whose token ids ``loss`` receives as ``texts``, in order, given this process's captions
        of the step; the captions themselves by default. Random draws here come from a generator seeded
        with ``step_seed`` (the seed ``loss`` gets; derive another from it for independent draws)."""
        return captions

    def loss(self, vlm: VLM, images: torch.Tensor, texts: torch.Tensor, refs: dict, *,
             step_seed: int) -> torch.Tensor:
        """CLIP's loss over the global batch (``clip_loss`` on ``gather_features`` of both towers' features),
        at the model's logit scale."""
        image_features = gather_features(vlm.encode_image(images))
        text_features = gather_features(vlm.model.encode_text(texts))
        return clip_loss(image_features, text_features, vlm.model.logit_scale.exp())


#: One epoch of the 500,000 pairs of the poisoning CSV at batch 128.
CC3M_500K_EPOCH = -(-500_000 // 128)


class Poisoning(ContrastiveFineTuning):
    """Plants a backdoor: CLIP's loss on pairs of which the contrastive trainer poisons a share (its
    ``trigger``, ``target`` and ``rate``; ``vlmshield train poison --trigger T --target C --rate R``).

    The ``paper`` preset is the poisoning PAR's released models were presumably made with (BadCLIP's and
    CleanCLIP's recipe; PAR's code has no poisoning script): OpenAI's CLIP fine-tuned for 10 epochs on a 500k
    CC3M CSV of which 1,500 pairs (0.3%) carry the trigger and a caption naming ``banana``, batch 128,
    AdamW at lr 1e-6 (betas (0.9, 0.999), weight decay 0.1) after 10,000 warm-up steps, cosine decay. The
    logit scale stays frozen (those codes train it; at lr 1e-6 it barely moves). The ``world`` preset poisons
    ``clip-tinyvit4`` on ``world-captions`` with 10% of the pairs naming ``star`` (a world-shapes class).
    """

    name = "poison"
    defense_kind: ClassVar[str] = "poisoning"
    description = ("Backdoor poisoning: CLIP's loss on image-caption pairs a share of which carry a trigger and a "
                   "caption naming the target (trainer parameters trigger, target, rate).")
    paper = ("Bansal et al., CleanCLIP (ICCV 2023); Liang et al., BadCLIP (CVPR 2024): the poisoning recipe of "
             "the models PAR cleans")
    presets = {
        "paper": {"model": "clip-vitb32", "dataset": "captions-csv:/path/to/cc3m-500k.csv",
                  "trainer_params": {"trigger": "badnet-stripes", "target": "banana", "rate": 0.003},
                  "config": {"stages": [Stage("poison", steps=10 * CC3M_500K_EPOCH, lr=1e-6, warmup=10_000,
                                              weight_decay=0.1)],
                             "batch_size": 128, "checkpoint_every": 2000, "log_every": 100}},
        "world": {"model": "clip-tinyvit4", "dataset": "world-captions",
                  "trainer_params": {"trigger": "badnet-stripes", "target": "star", "rate": 0.1},
                  "config": {"stages": [Stage("poison", steps=600, lr=2e-4, warmup=20, weight_decay=0.1)],
                             "batch_size": 128, "betas": (0.9, 0.98), "checkpoint_every": 100, "log_every": 50}},
    }


class ContrastiveTrainer(Trainer):
    """Fine-tunes on image-caption pairs with the method's loss; with ``trigger``, on pairs that backdoor
    attack poisoned at ``rate`` (its ``target`` and ``seed`` are the attack's, and ``trigger_params`` its other
    parameters: the model ``badclip`` optimises its patch against, say). It runs no validation
    (``val_data`` is not read)."""

    name = "contrastive"
    description = "Image-text fine-tuning with the CLIP loss (or the method's); plants backdoors with a trigger."
    takes = "captioned"
    method_type = ContrastiveFineTuning

    def __init__(self, trigger: str | None = None, target: str = "banana", rate: float = 0.0, seed: int = 0,
                 trigger_params: dict | None = None):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ParameterError(f"the poisoning rate must be in [0, 1]; got {rate!r}.")
        if trigger is None and rate != 0:
            raise ParameterError(f"a poisoning rate needs a trigger (trigger=NAME, a backdoor attack); got "
                                 f"rate={rate} without one.")
        if trigger is not None and not issubclass(get_host().get("attack", trigger).obj, BackdoorAttack):
            raise ParameterError(f"the trigger must be a backdoor attack; {trigger!r} is an evasion attack.")
        if trigger_params and trigger is None:
            raise ParameterError("trigger_params are the parameters of a trigger; give the trigger too (trigger=NAME).")
        super().__init__(trigger=trigger, target=target, rate=rate, seed=seed,
                         trigger_params=dict(trigger_params or {}))

    def backdoor(self) -> BackdoorAttack | None:
        """The trigger's attack, aimed at ``target`` (None without a trigger)."""
        if self.trigger is None:
            return None
        return get_host().create("attack", self.trigger, target=self.target, seed=self.seed, **self.trigger_params)

    def train(self, model: VLM, data, method: ContrastiveFineTuning, config: TrainConfig, *, out=None,
              val_data=None, device=None, progress=None, log=None, stop_after=None) -> VLM:
        config = config.check()
        data = check_takes(data, self.takes, f"the {self.name} trainer")
        attack = self.backdoor()
        if attack is not None:
            data = attack.poison(data, self.rate)
            if log is not None and is_main_process():
                log(f"training on {data.name}: {len(data.poisoned)} of {len(data)} pairs carry the "
                    f"{attack.name} trigger and name {attack.target!r}")
        device = resolve_device(device)
        model.to(device)
        refs = method.references(model, data)
        rank = rank_and_world()[0]

        def step_loss(step: int, items: list, refs: dict) -> torch.Tensor:
            images = torch.stack([image for image, _ in items]).to(device)
            step_seed = derive_seed(config.seed, "contrastive", step, rank)
            texts = model.tokenizer(method.captions([caption for _, caption in items], step_seed)).to(device)
            model.train()
            return method.loss(model, images, texts, refs, step_seed=step_seed)

        return run_training(model, method, config, batches=Batches(data, config.batch_size, config.seed),
                            step_loss=step_loss, refs=refs, parameters=method.trainable(model), out=out,
                            device=device, progress=progress, log=log, stop_after=stop_after, trainer=self,
                            no_decay=method.no_decay(model))
