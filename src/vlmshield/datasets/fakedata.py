"""fakedata: seeded random-noise images with random labels, for smoke runs and benchmarks.

Like torchvision's FakeData (which it uses): every image is a deterministic function of its index,
so runs are repeatable, and no model can do better than chance on it. It measures cost, not accuracy.
"""

from __future__ import annotations

from vlmshield.api import DEFAULT_TEMPLATES, DatasetEntry, LabelledImages, ParameterError


def build(root=None, split: str = "test", image_size: int = 224, size: int = 100, num_classes: int = 10,
          seed: int = 0) -> LabelledImages:
    if size < 1 or num_classes < 2:
        raise ParameterError(f"fakedata needs size >= 1 and num_classes >= 2; got {size} and {num_classes}.")
    from torchvision import datasets, transforms

    data = datasets.FakeData(size=size, image_size=(3, image_size, image_size), num_classes=num_classes,
                             transform=transforms.ToTensor(), random_offset=seed)
    classnames = [f"class {i}" for i in range(num_classes)]
    return LabelledImages(data, classnames, DEFAULT_TEMPLATES, name="fakedata")


ENTRY = DatasetEntry(
    name="fakedata", build=build,
    description=("Seeded random-noise images (torchvision FakeData) at the model's input size, "
                 "for smoke runs and benchmarks."),
)
