"""An evaluation killed with SIGKILL resumes from its log: same numbers, finished batches not redone."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CHILD = Path(__file__).with_name("evaluate_child.py")


def child(out, seconds_per_batch):
    return subprocess.Popen([sys.executable, str(CHILD), str(out), str(seconds_per_batch)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return json.loads(out)


def test_killed_evaluation_resumes_with_the_same_numbers(tmp_path):
    reference = child(tmp_path / "reference.json", 0)
    out = tmp_path / "run.json"
    partial = Path(f"{out}.partial")
    victim = child(out, 0.5)
    deadline = time.time() + 240
    while time.time() < deadline and (not partial.exists() or len(partial.read_text().splitlines()) < 4):
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    assert not out.exists()
    done = len([line for line in partial.read_text().splitlines()[1:] if line.endswith("}")])
    assert 3 <= done < 8

    resumed = finish(child(out, 0))
    expected = finish(reference)
    assert resumed["calls"] == 8 - done
    assert resumed["results"] == expected["results"]
    assert json.loads(out.read_text())["results"] == expected["results"] and not partial.exists()
