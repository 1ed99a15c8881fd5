"""How long do the command line's cheap commands take to answer, and what do they import?

Runs each command in a fresh interpreter (the same Python as this script) ``--repeats`` times and prints
the median wall time, beside ``python -c "import torch"`` (the floor: the contract is built on torch), and
which heavy modules each one imported (a child reports ``sys.modules`` at exit). None of these commands
builds a model, so none should import open_clip, timm, huggingface_hub, matplotlib or torchvision.

    python bench/cli_startup.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HEAVY = ("open_clip", "timm", "huggingface_hub", "matplotlib", "torchvision", "transformers", "safetensors",
         "tqdm", "scipy")
CASES = {
    'python -c "import torch"': "import torch",
    "vlmshield --version": ["--version"],
    "vlmshield --help": ["--help"],
    "vlmshield list models": ["list", "models"],
    "vlmshield info pgd": ["info", "pgd"],
    "vlmshield plugins": ["plugins"],
}
#: Runs the command line's main() and, at exit, prints the heavy modules in sys.modules as one JSON line on
#: stderr (the command's own output goes to stdout, which is discarded).
CHILD = """
import atexit, json, sys
atexit.register(lambda: print("HEAVY " + json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)),
                              file=sys.stderr))
{body}
"""


def child_code(case: str | list[str]) -> str:
    if isinstance(case, str):
        body = case
    else:
        body = f"sys.argv = ['vlmshield', *{case!r}]\nfrom vlmshield.cli import main\nsys.exit(main())"
    return CHILD.format(heavy=HEAVY, body=body)


def run_once(code: str) -> tuple[float, list[str]]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    seconds = time.perf_counter() - start
    heavy = [json.loads(line[6:]) for line in done.stderr.splitlines() if line.startswith("HEAVY ")]
    if done.returncode != 0 or not heavy:
        raise SystemExit(f"the child failed (exit {done.returncode}):\n{done.stderr}")
    return seconds, heavy[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"command-line start-up, median of {args.repeats} runs, {sys.executable}")
    print("| command | seconds | heavy modules imported |")
    print("|---|---|---|")
    for label, case in CASES.items():
        code = child_code(case)
        runs = [run_once(code) for _ in range(args.repeats)]
        median = statistics.median(seconds for seconds, _ in runs)
        print(f"| `{label}` | {median:.2f} | {', '.join(runs[-1][1]) or '-'} |", flush=True)


if __name__ == "__main__":
    main()
