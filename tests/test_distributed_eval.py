"""Evaluation sharded across processes with torch.distributed (torchrun, gloo on the CPU).

torchrun's own parser reads ``--n`` as an abbreviation of its options, so the sample count is written
``--n-samples`` after it.
"""

import json
import subprocess
import sys

import pytest

ARGS = ["eval", "--model", "clip-tinyvit8", "--dataset", "world-shapes,world-colors", "--attack", "apgd-ce",
        "--eps", "4/255", "--steps", "3", "--n-samples", "20", "--batch-size", "4", "--no-progress", "--device", "cpu"]


def _run(tmp_path, nproc: int, name: str) -> dict:
    out = tmp_path / f"{name}.json"
    if nproc == 1:
        command = [sys.executable, "-m", "vlmshield.cli", *ARGS, "--out", str(out)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "vlmshield.cli", *ARGS, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={
        **__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_processes_give_the_numbers_of_one(tmp_path):
    single = _run(tmp_path, 1, "single")
    sharded = _run(tmp_path, 2, "sharded")
    assert sharded["results"] == single["results"] and sharded["average"] == single["average"]
    assert single["results"]["world-shapes"]["n"] == 20
    assert (single["processes"], sharded["processes"]) == (1, 2)
    assert not list(tmp_path.glob("*.partial"))  # every process's log of finished batches is removed
