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
  prompts, on the whole world suite;
- ``par``: PAR's (Singh, Croce and Hein) ImageNet evaluation: clean zero-shot accuracy and the attack success
  rate towards ``banana`` of seven backdoor triggers (``PAR_TRIGGERS``, the triggers of PAR's tables), on
  all 50,000 validation images, CLIP's 80 ImageNet templates (the ``asr`` evaluator);
- ``par-retrieval``: PAR's COCO evaluation: image-text retrieval R@1/R@5 both ways on Karpathy's test split
  (5,000 images, 25,000 captions), clean and under each trigger, and the share of triggered images whose
  top-5 captions name ``banana`` (the ``retrieval`` evaluator);
- ``par-world``, ``par-world-retrieval``: the same on the embedded world, target ``star``: ASR on the 1,000
  test images of ``world-shapes``, retrieval on the 1,000 test pairs of ``world-captions``.

PAR's own code draws the trigger on an image squashed to 224 x 224 while its clean images are
centre-cropped; here the trigger is drawn on the image the dataset loads (resized and centre-cropped as
CLIP's preprocessing does), the same pixels as the clean image. The ``asr`` evaluator leaves the images of
the target class out of the ASR (the 50 banana images, PAR's 0.1% floor), and ``retrieval`` matches the
target as a whole word where PAR's code matches a substring ("bananas" counts there).
"""

from vlmshield.api import Protocol, hookimpl

#: The backdoor triggers PAR evaluates, as the built-in attacks name them.
PAR_TRIGGERS = ("badnet-stripes", "blended", "blended-stripes", "blended-triangles", "blended-text", "wanet", "badnet")
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
    Protocol("par", "PAR's ImageNet evaluation: clean zero-shot accuracy and the attack success rate towards banana "
             "of seven backdoor triggers, on all 50,000 validation images, CLIP's 80 ImageNet templates; each "
             "trigger drawn on the image as loaded (resized, bicubic, and centre-cropped).",
             evaluator="asr", triggers=PAR_TRIGGERS, attack_params={"target": "banana"}, datasets="imagenet",
             papers="PAR (Singh, Croce and Hein)"),
    Protocol("par-retrieval", "PAR's COCO evaluation: image-text retrieval R@1/R@5 both ways on Karpathy's test split "
             "(5,000 images, 25,000 captions), clean and under each of seven backdoor triggers, and the share of "
             "triggered images whose top-5 captions name banana.",
             evaluator="retrieval", triggers=PAR_TRIGGERS, attack_params={"target": "banana"},
             datasets="coco-karpathy", papers="PAR (Singh, Croce and Hein)"),
    Protocol("par-world", "PAR's ImageNet evaluation on the world: clean zero-shot accuracy and the attack success "
             "rate towards star of seven backdoor triggers, on the 1,000 test images of world-shapes.",
             evaluator="asr", triggers=PAR_TRIGGERS, attack_params={"target": "star"}, datasets="world-shapes",
             papers="vlmshield's embedded world"),
    Protocol("par-world-retrieval", "PAR's COCO evaluation on the world: image-text retrieval R@1/R@5 both ways on "
             "the 1,000 test pairs of world-captions, clean and under each of seven backdoor triggers, and the "
             "share of triggered images whose top-5 captions name star.",
             evaluator="retrieval", triggers=PAR_TRIGGERS, attack_params={"target": "star"},
             datasets="world-captions", papers="vlmshield's embedded world"),
)


@hookimpl
def register_protocols(register):
    register(*PROTOCOLS)
