"""The built-in evaluation protocols, a plugin like any other.

- ``tecoa``: PGD-10 (step 1/255, random start) at eps 1/255, every test image, TTC's single prompt per
  dataset; every image, CIFAR included, resized to 256 (bilinear, shortest side) and centre-cropped to
  224 before the attack, as TTC's data loader does, so eps is measured on those 224-px pixels; robust
  accuracy over all images (every image attacked, as TeCoA's and TTC's code count it): how TeCoA,
  PMG-AFT, HPT-GPD and TTC report zero-shot robustness (on TTC's 16 datasets);
- ``robustvlm``: APGD-CE (100 iterations, 5 restarts) then APGD-T (100 iterations, 9 target classes;
  APGD-CE alone on binary tasks) at 2/255 and 4/255, 1,000 images per dataset, CLIP's prompt
  ensembles; CIFAR-10/100 and STL-10 at native resolution (upsampled inside the model), PCAM and
  EuroSAT resized to 224 (bicubic) and centre-cropped before the attack, the others resized to the
  model's input size, as RobustVLM's CLIP_benchmark does; robust accuracy over the clean-correct images
  (AutoAttack's count): RobustVLM's zero-shot table (FARE) on its 13 datasets;
- ``clean``: zero-shot accuracy on every test image with CLIP's ensembles, each dataset's native
  preprocessing;
- ``world``: the embedded world's threat model: APGD-CE then APGD-T on the images still robust (aa-lite,
  towards the 3 most likely wrong classes; AutoAttack takes 9, which costs three times as much on a
  robust model), 50 iterations each, at 1/255, 2/255 and 4/255, 250 images per task, each task's own
  prompts, on the whole world suite.
"""

from vlmshield.api import Protocol, hookimpl

PROTOCOLS = (
    Protocol("tecoa", "PGD-10, step 1/255, eps 1/255, all test images, TTC's single prompt per dataset; every "
             "image resized to 256 (bilinear) and centre-cropped to 224 before the attack; robust accuracy "
             "over all images.",
             attack="pgd", eps=("1/255",), steps=10, attack_params={"alpha": 1 / 255, "random_start": True},
             templates="single", datasets="zs-suite", papers="TeCoA (ICLR 2023), PMG-AFT (CVPR 2024), HPT-GPD, TTC",
             preprocess={"default": {"resize": 256, "crop": 224, "interpolation": "bilinear"}}, counting="all"),
    Protocol("robustvlm", "APGD-CE (5 restarts) + APGD-T (9 targets), 100 iterations each, eps 2/255 and 4/255, "
             "1000 images per dataset, CLIP's prompt ensembles; CIFAR and STL-10 at native resolution, PCAM and "
             "EuroSAT resized to 224 (bicubic), the others to the model's input size; robust accuracy over the "
             "clean-correct images.",
             attack="aa-lite", eps=("2/255", "4/255"), steps=100,
             attack_params={"n_restarts": 5, "n_target_classes": 9}, n=1000, datasets="robustvlm-13",
             papers="RobustVLM / FARE (ICML 2024)",
             preprocess={"default": "native", "pcam": {"resize": 224, "crop": 224, "interpolation": "bicubic"},
                         "eurosat": {"resize": 224, "crop": 224, "interpolation": "bicubic"}},
             counting="clean-correct"),
    Protocol("clean", "Zero-shot accuracy on every test image, CLIP's prompt ensembles, each dataset's native "
             "preprocessing.", datasets="zs-suite", preprocess={"default": "native"}),
    Protocol("world", "The world's threat model: APGD-CE then APGD-T (3 targets; aa-lite), 50 iterations each, "
             "eps 1/255, 2/255, 4/255, 250 images per task, each task's prompts.", attack="aa-lite",
             eps=("1/255", "2/255", "4/255"), steps=50, attack_params={"n_target_classes": 3}, n=250,
             datasets="world", papers="vlmshield's embedded world"),
)


@hookimpl
def register_protocols(register):
    register(*PROTOCOLS)
