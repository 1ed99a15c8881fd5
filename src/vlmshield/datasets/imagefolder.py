"""imagefolder: any folder of class sub-folders (ROOT/<class name>/<image>), as torchvision's ImageFolder.

Class names are the sub-folder names with '_' read as a space; the prompt is CLIP's single template.
Images are resized (bicubic, shortest side) and centre-cropped to the model's input size, as CLIP's
preprocessing does, so the threat model is on those pixels; a protocol's resize-and-crop rule
(``preprocess``) replaces that. A file that is not a readable image is a DataError naming it when the item is
read.
"""

from __future__ import annotations

from functools import partial

from vlmshield.api import DEFAULT_TEMPLATES, DataError, DatasetEntry, LabelledImages, read_image


def build(root, split: str = "test", image_size: int = 224, preprocess: dict | None = None) -> LabelledImages:
    from torchvision import datasets, transforms

    if preprocess is not None:  # {"resize": R, "crop": C, "interpolation": ...}: a protocol's rule
        size, crop = preprocess["resize"], preprocess["crop"]
        interpolation = transforms.InterpolationMode(preprocess["interpolation"])
    else:
        size, crop, interpolation = image_size, image_size, transforms.InterpolationMode.BICUBIC
    transform = transforms.Compose([
        transforms.Resize(size, interpolation=interpolation),
        transforms.CenterCrop(crop),
        transforms.ToTensor(),
    ])
    try:
        data = datasets.ImageFolder(str(root), transform=transform,
                                    loader=partial(read_image, what=f"imagefolder {root}"))
    except (FileNotFoundError, OSError) as error:
        raise DataError(f"imagefolder {root}: {error}") from None
    classnames = [c.replace("_", " ") for c in data.classes]
    return LabelledImages(data, classnames, DEFAULT_TEMPLATES, name=f"imagefolder-{root.name}".lower())


ENTRY = DatasetEntry(
    name="imagefolder", build=build, needs_root=True,
    description=("A folder of class sub-folders (ROOT/<class>/<image>), as torchvision's ImageFolder; "
                 "give it as imagefolder:/path."),
)
