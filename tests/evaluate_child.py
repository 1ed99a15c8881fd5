"""Run by test_evaluate_kill.py in a child process: an evaluation that can be killed mid-way.

Usage: python evaluate_child.py OUT.json SECONDS_PER_BATCH
Prints the per-dataset results and how many batches it attacked, as JSON.
"""

import json
import sys
import time

import vlmshield as vs
from vlmshield.api import temporary_host
from vlmshield.attacks import PGD
from vlmshield.testing import make_plugin, tensor_dataset, toy_classifier

calls = []


class SlowPGD(PGD):
    name = "slow-pgd"

    def perturb(self, classifier, x, y, generator):
        calls.append(1)
        time.sleep(float(sys.argv[2]))
        return super().perturb(classifier, x, y, generator)


model, x, y = toy_classifier()
data = tensor_dataset(x, y, ["a", "b", "c", "d"], name="toy")
with temporary_host(make_plugin("slow", register_attacks=lambda register: register(SlowPGD))):
    record = vs.evaluate(model, data, evaluator="accuracy", attack="slow-pgd", eps=8 / 255, steps=3,
                         attack_params={"alpha": 2 / 255}, n=64, batch_size=8, out=sys.argv[1], progress=False)
print(json.dumps({"results": record["results"], "calls": len(calls)}))
