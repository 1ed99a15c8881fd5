"""The URDA protocols: target clean and robust accuracy of each domain pair, the table of DART's paper
"with and without attacks" (its source numbers come beside them, measured the same way).

- ``urda``: the six Office-31 tasks of DART's released commands, PGD-20 (step 1/255, random start) at
  4/255 and 8/255 on [0, 1] pixels, every target test image, robust accuracy over all images. The paper's
  evaluation attack and budgets are not released; these are the common L-inf settings, and 6/255 is about
  the pixel width of the code's training budget;
- ``urda-world``: the world's four pairs (``world-da``), aa-lite (APGD-CE then APGD-T, 3 targets, 50
  iterations each) at 1/255, 2/255 and 4/255 (the ``world`` protocol's budgets), 500 images of each part,
  robust accuracy over the clean-correct ones.
"""

from __future__ import annotations

from vlmshield.api import Protocol

OFFICE31_TASKS = ",".join(f"office31/{task}" for task in (
    "amazon-to-webcam", "dslr-to-webcam", "webcam-to-dslr", "amazon-to-dslr", "dslr-to-amazon", "webcam-to-amazon"))
WORLD_PAIRS = ",".join(f"world-da/{shift}" for shift in ("palette", "texture", "clutter", "outline"))

PROTOCOLS = (
    Protocol("urda", "Target (and source) clean and robust accuracy of Office-31's six tasks: PGD-20, step 1/255, "
             "random start, eps 4/255 and 8/255, every image; robust accuracy over all images.",
             attack="pgd", eps=("4/255", "8/255"), steps=20, attack_params={"alpha": 1 / 255, "random_start": True},
             evaluator="accuracy", datasets=OFFICE31_TASKS, counting="all",
             papers="DART (IJCV 2026): its table with and without attacks"),
    Protocol("urda-world", "The world's domain pairs: aa-lite (APGD-CE then APGD-T, 3 targets), 50 iterations each, "
             "eps 1/255, 2/255 and 4/255, 500 images of each part; robust accuracy over the clean-correct images.",
             attack="aa-lite", eps=("1/255", "2/255", "4/255"), steps=50, attack_params={"n_target_classes": 3}, n=500,
             evaluator="accuracy", datasets=WORLD_PAIRS,
             papers="the world's analogue of DART's table"),
)
