"""Helpers for offline tests, of vlmshield and of plugins: small real models, made in seconds on a CPU.

- ``tiny_vlm()``: a randomly initialised open_clip CLIP (ViT image tower, text transformer), 32 px.
- ``toy_task()`` and ``toy_classifier()``: a 4-class image task and a small CNN trained on it to 100%
  clean accuracy, for checking that attacks really lower accuracy.
- ``tensor_dataset()``: LabelledImages from tensors.
- ``make_plugin()``: a plugin object from hook functions, to register with ``temporary_host``.
- ``EmbeddingPull``: a FARE-like fine-tuning method (adversarial embeddings pulled to the frozen clean
  ones), to run the training engine on a ``tiny_vlm()``.
- ``hub_cache()``: a Hugging Face cache laid out on disk with one repo's files, for offline ``hf-hub:`` tests.
- ``CornerPatch``: a backdoor trigger (a white square in the corner), and ``Jitter``: a randomized
  test-time defense (uniform noise of 1/255), stand-ins to register in tests.
- ``attacked_accuracy()``: a zoo model's zero-shot accuracy under PGD on the first images of a task, to
  check that a shipped robust model resists where its base breaks.
- ``tinyimagenet_files()``: TinyImageNet's release layout with a few 64-px JPEGs, ``training_inputs()``:
  the data ``vlmshield train`` hands the method's trainer, and
  ``tinyimagenet_training_image()``: an image of those files as a preset's training data has it, for
  checking a fine-tuning preset's data and preprocessing without training.

Nothing here downloads anything.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from .api import AdversarialFineTuning, ImageEncoder
from .core import VLM, BackdoorAttack, LabelledImages, Purifier, TestTimeDefense, hookimpl

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def tiny_vlm(seed: int = 0, name: str = "tiny-clip") -> VLM:
    """A random-initialised tiny CLIP (32 px ViT, patch 8), the same for the same seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vlm = VLM.from_config(TINY_CLIP, preprocess_cfg={"mean": (0.48, 0.46, 0.41), "std": (0.27, 0.26, 0.28)},
                              name=name)
    return vlm.eval()


def toy_task(n: int = 256, num_classes: int = 4, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1]: a class-specific smooth pattern of amplitude 0.2 on grey, plus noise.

    The class patterns are the same for every call; ``seed`` draws the noise.
    """
    patterns = F.interpolate(torch.rand(num_classes, 3, 4, 4, generator=torch.Generator().manual_seed(1234)) * 2 - 1,
                             size=size, mode="bilinear", align_corners=False)
    y = torch.arange(n) % num_classes
    noise = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 0.05
    return (0.5 + 0.2 * patterns[y] + noise).clamp(0, 1), y


class ToyCNN(nn.Module):
    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def toy_classifier(seed: int = 0, steps: int = 150) -> tuple[ToyCNN, torch.Tensor, torch.Tensor]:
    """A ToyCNN trained on ``toy_task`` (about a second on a CPU); returns (model, test x, test y)."""
    x, y = toy_task(n=512, seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ToyCNN()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(steps):
            batch = torch.randint(len(x), (64,))
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.zero_grad(set_to_none=True)
    test_x, test_y = toy_task(n=128, seed=seed + 1)
    return model.eval(), test_x, test_y


def tensor_dataset(x: torch.Tensor, y: torch.Tensor, classnames, templates=("a photo of a {}.",),
                   name: str = "tensors") -> LabelledImages:
    return LabelledImages(TensorDataset(x, y), classnames, templates, name=name)


def logged_losses(vlm: VLM, data: LabelledImages, method, *, steps: int = 10, lr: float = 3e-4,
                  batch_size: int = 32, attack_steps: int = 3) -> list[float]:
    """Fine-tune ``vlm`` in place with ``method`` for ``steps`` steps (one stage at ``lr``, no warm-up, no
    weight decay) and return the loss the engine logged at every step."""
    from .core import Stage, TrainConfig

    losses = []
    config = TrainConfig(stages=(Stage("test", steps, lr, 0, 0.0),), batch_size=batch_size,
                         attack_steps=attack_steps, log_every=1)
    method.fit(vlm, data, config, progress=False, log=lambda line: losses.append(float(line.split()[4])))
    return losses


#: The class names of ``toy_dataset`` (the prompts of the training tests name them).
TOY_CLASSES = ("circle", "square", "star", "wave")


def toy_dataset(n: int = 32, size: int = 32) -> LabelledImages:
    """``toy_task``'s four classes as a labelled dataset named by ``TOY_CLASSES``, for fine-tuning tests."""
    x, y = toy_task(n=n, size=size)
    return tensor_dataset(x, y, list(TOY_CLASSES))


def make_plugin(name: str, **hooks):
    """A plugin object named ``name`` whose hooks are the given functions, for ``temporary_host``::

        plugin = make_plugin("my-test", register_attacks=lambda register: register(MyAttack))
        with temporary_host(plugin):
            ...
    """
    plugin = types.SimpleNamespace(__name__=name)
    for hook, function in hooks.items():
        def implementation(register, _function=function):
            return _function(register)
        setattr(plugin, hook, hookimpl(implementation))
    return plugin


def attacked_accuracy(model: str, task: str, n: int = 32, eps: str = "4/255", steps: int = 10) -> float:
    """Zero-shot accuracy of the zoo model ``model`` on the first ``n`` images of ``task`` under Linf PGD."""
    from . import zoo
    from .core import dataset, get_host

    data = dataset(task, image_size=32)
    x = torch.stack([data[i][0] for i in range(n)])
    y = torch.tensor([data[i][1] for i in range(n)])
    classifier = zoo.load(model).zero_shot(data.classnames, data.templates)
    x_adv = get_host().create("attack", "pgd", eps=eps, alpha="1/255", steps=steps)(classifier, x, y)
    with torch.no_grad():
        return float((classifier(x_adv).argmax(1) == y).float().mean())


def tinyimagenet_files(root, n: int = 2) -> tuple:
    """TinyImageNet's release layout under ``root`` with ``n`` 64-px noise JPEGs of its first class;
    returns (root, the JPEGs' paths)."""
    from PIL import Image

    from .datasets.prompts import wnids

    names = wnids("tinyimagenet")
    folder = root / "tiny-imagenet-200" / "train" / names[0] / "images"
    folder.mkdir(parents=True)
    (root / "tiny-imagenet-200" / "wnids.txt").write_text("\n".join(names) + "\n")
    generator, paths = torch.Generator().manual_seed(0), []
    for i in range(n):
        paths.append(folder / f"{names[0]}_{i}.JPEG")
        Image.fromarray((torch.rand(64, 64, 3, generator=generator) * 255).byte().numpy()).save(paths[-1])
    return root, paths


class _Stopped(Exception):
    """Raised by ``training_inputs``'s stand-in engine once it has the data."""


def training_inputs(run: dict, out, monkeypatch) -> tuple:
    """(training data, validation data or None) that ``train_run(run, out)`` (``vlmshield train``) hands the
    method's trainer, stopped there, with ``tiny_vlm()`` for the zoo's model (``monkeypatch``: pytest's
    fixture)."""
    from .cli import train

    seen = {}

    def trainer(vlm, data, method, config, val_data=None, **options):
        seen.update(data=data, val=val_data)
        raise _Stopped

    monkeypatch.setattr(run["trainer"], "train", trainer)
    monkeypatch.setattr(train, "load_model", lambda name, device=None: tiny_vlm())
    try:
        train.train_run(run, out)
    except _Stopped:
        return seen["data"], seen["val"]
    raise AssertionError("train_run ended without handing the trainer its data.")


def tinyimagenet_training_image(method: str, tmp_path, monkeypatch, index: int = 0, **overrides) -> tuple:
    """(image, label, the JPEG as PIL decodes it) of item ``index`` of the training data that ``method``'s
    paper preset (with ``plan`` ``overrides``) reads from ``tinyimagenet_files(tmp_path / "data")``."""
    from PIL import Image

    from .cli.train import plan

    root, paths = tinyimagenet_files(tmp_path / "data")
    data, _ = training_inputs(plan(method, data=f"tinyimagenet:{root}", **overrides), tmp_path / "run", monkeypatch)
    image, label = data[index]
    return image, label, Image.open(paths[index]).convert("RGB")


class CornerPatch(BackdoorAttack):
    """A backdoor trigger for tests: a white square of ``size`` pixels in the bottom-right corner."""

    name = "corner-patch"
    description = "A white square in the bottom-right corner (a test stand-in)."

    def __init__(self, target: str = "banana", seed: int = 0, size: int = 4):
        super().__init__(target=target, seed=seed, size=size)

    def apply_trigger(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        images = images.clone()
        images[..., -self.size:, -self.size:] = 1.0
        return images


class Jittered(Purifier):
    """The classifier of ``Jitter``: uniform noise of at most 1/255 on the input, then the classifier."""

    def purify(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.rand(x.shape, generator=generator) if generator is not None else torch.rand_like(x)
        return (x + (2 * noise.to(x.device) - 1) / 255).clamp(0, 1)


class Jitter(TestTimeDefense):
    """A randomized test-time defense for tests: ``Jittered`` around the classifier."""

    name = "test-jitter"
    description = "Uniform noise of 1/255 on the input (a test stand-in)."
    randomized = True

    def wrap(self, classifier: nn.Module, calibration: torch.Tensor | None = None) -> nn.Module:
        return Jittered(classifier)



class EmbeddingPull(AdversarialFineTuning):
    """A FARE-like method for the engine's tests: pull adversarial embeddings to the clean frozen ones."""

    name = "embedding-pull"

    def references(self, vlm, data):
        return {"original": ImageEncoder(vlm)}

    def attack_target(self, vlm, x, y, refs):
        return vlm, refs["original"](x), "l2"

    def loss(self, vlm, x_adv, x, y, target, refs):
        return (vlm(x_adv) - target).pow(2).sum(1).mean()


#: The commit ``hub_cache`` files a repo's snapshot under.
HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root, folder, repo: str = "vlmshield-test/tiny"):
    """A Hugging Face cache under ``root/hub`` as huggingface_hub lays it out (``refs/main``,
    ``snapshots/HUB_REVISION/<files>`` linking to ``blobs``), holding the files of ``folder`` as ``repo``;
    returns the cache folder (for ``HF_HUB_CACHE``)."""
    from pathlib import Path

    cache = Path(root) / "hub"
    repo_root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_root / "snapshots" / HUB_REVISION
    snapshot.mkdir(parents=True)
    (repo_root / "blobs").mkdir()
    (repo_root / "refs").mkdir()
    (repo_root / "refs" / "main").write_text(HUB_REVISION)
    for file in Path(folder).iterdir():
        blob = repo_root / "blobs" / file.name
        blob.write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(blob)
    return cache
