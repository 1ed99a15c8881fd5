"""Wrong input to every command is one sentence on stderr and exit status 2, before any heavy work.

A table of command lines, each with a mistake in it: an unknown name, a malformed value, a path that
cannot be used. Each must end with ``vlmshield: error: <one sentence>`` on one line of stderr, exit status
2, no traceback and no "internal error". The rows use the world's tiny models and datasets, and nothing
may download (``HF_HUB_OFFLINE=1``).

A row must be refused before the work starts: the progress bars of evaluation, training, pretraining and
the transfer matrix are replaced by one that raises, so a command that takes wrong input and starts working
fails the row in a moment (as an internal error) instead of running a training or an evaluation.
"""

from __future__ import annotations

import importlib
import json
import shlex
from pathlib import Path

import pytest

from vlmshield.api import temporary_host
from vlmshield.cli import main

#: The method plugins of this repository (plugins/*), registered as an install registers them.
PLUGINS = ("vlmshield_tecoa", "vlmshield_fare", "vlmshield_pmg_aft", "vlmshield_hpt_gpd", "vlmshield_ttc")
#: The modules whose progress bar marks the start of the heavy work.
HEAVY = ("vlmshield.engine.evaluation", "vlmshield.engine.training", "vlmshield.world.pretrain",
         "vlmshield.world.transfer")
#: Inside a location nothing can be created in, even by root.
READ_ONLY = "/proc/vlmshield-nope"

EVAL = "eval --model clip-tinyvit4 --dataset world-shapes --n 2"
PGD = EVAL + " --attack pgd"
TTC = EVAL + " --defense ttc"
BOARD = "leaderboard --models clip-tinyvit4 --protocol world --n 2"
TECOA = "train tecoa --preset world"
TRANSFER = "world transfer --models clip-tinyvit4,clip-tinyrn --n 2 --steps 1"
DEMO = "demo --models clip-tinyvit4 --n 2 --steps 1"


def rows(command: str, *table: tuple[str, str]) -> list:
    return [pytest.param(line, id=f"{command}-{name}") for name, line in table]


ROWS = [
    *rows("top",
          ("unknown-command", "frobnicate"),
          ("unknown-option", "--bogus"),
          ("nothing", "")),
    *rows("plugins",
          ("unknown-option", "plugins --bogus"),
          ("extra-argument", "plugins extra")),
    *rows("list",
          ("unknown-kind", "list widgets"),
          ("empty-kind", "list ''"),
          ("no-kind", "list"),
          ("method-on-attacks", "list attacks --method fare"),
          ("unknown-method", "list models --method nosuch"),
          ("unknown-arch", "list models --arch nosuch")),
    *rows("info",
          ("unknown-name", "info pdg"),
          ("empty-name", "info ''"),
          ("unknown-kind", "info pgd --kind widget"),
          ("wrong-kind", "info pgd --kind model"),
          ("local-dir", "info local-dir:/nonexistent"),
          ("hf-hub", "info hf-hub:../x")),
    *rows("eval",
          # unknown names
          ("unknown-model", "eval --model nosuch --dataset world-shapes --n 2"),
          ("empty-model", "eval --model '' --dataset world-shapes --n 2"),
          ("unknown-model-source", "eval --model nosuch:thing --dataset world-shapes --n 2"),
          ("unknown-dataset", "eval --model clip-tinyvit4 --dataset nosuch --n 2"),
          ("empty-dataset", "eval --model clip-tinyvit4 --dataset '' --n 2"),
          ("comma-dataset", "eval --model clip-tinyvit4 --dataset , --n 2"),
          ("root-for-rootless-dataset", "eval --model clip-tinyvit4 --dataset world-shapes:/nonexistent --n 2"),
          ("missing-imagefolder", "eval --model clip-tinyvit4 --dataset imagefolder:/nonexistent --n 2"),
          ("unknown-attack", PGD + "d"),
          ("unknown-defense", EVAL + " --defense nosuch"),
          ("training-defense", EVAL + " --defense tecoa"),
          ("unknown-evaluator", EVAL + " --evaluator nosuch"),
          ("asr-without-attack", EVAL + " --evaluator asr"),
          ("asr-evasion-attack", EVAL + " --evaluator asr --attack pgd"),
          ("accuracy-on-a-vlm", EVAL + " --evaluator accuracy"),
          ("unknown-protocol", "eval --model clip-tinyvit4 --protocol nosuch"),
          ("no-dataset", "eval --model clip-tinyvit4"),
          ("protocol-and-attack", "eval --model clip-tinyvit4 --protocol world --attack pgd"),
          # model sources
          ("local-dir-missing", "eval --model local-dir:/nonexistent --dataset world-shapes --n 2"),
          ("local-dir-empty", "eval --model local-dir: --dataset world-shapes --n 2"),
          ("local-dir-empty-folder", "eval --model local-dir:emptydir --dataset world-shapes --n 2"),
          ("local-dir-file", "eval --model local-dir:afile.txt --dataset world-shapes --n 2"),
          ("hf-hub-dotdot-org", "eval --model hf-hub:../x --dataset world-shapes --n 2"),
          ("hf-hub-dotdot-name", "eval --model hf-hub:org/.. --dataset world-shapes --n 2"),
          ("hf-hub-empty", "eval --model hf-hub: --dataset world-shapes --n 2"),
          ("hf-hub-offline-not-cached", "eval --model hf-hub:org/name --dataset world-shapes --n 2"),
          # eps
          ("eps-word", PGD + " --eps abc"),
          ("eps-divide-by-zero", PGD + " --eps 1/0"),
          ("eps-zero-over-zero", PGD + " --eps 0/0"),
          ("eps-negative", PGD + " --eps=-4/255"),
          ("eps-nan", PGD + " --eps nan"),
          ("eps-inf", PGD + " --eps inf"),
          ("eps-overflow", PGD + " --eps 1e400"),
          ("eps-underflow", PGD + " --eps 1e-400"),
          ("eps-inf-over-inf", PGD + " --eps 1e400/1e400"),
          ("eps-zero", PGD + " --eps 0"),
          ("eps-256ths", PGD + " --eps 256"),
          ("eps-empty", PGD + " --eps ''"),
          ("eps-two-slashes", PGD + " --eps 4/255/2"),
          ("eps-hex", PGD + " --eps 0x10"),
          ("eps-underscore", PGD + " --eps 1_0"),
          ("eps-arabic-indic-digit", PGD + " --eps \u0664"),
          ("eps-without-attack-255ths", EVAL + " --eps 4"),
          ("eps-without-attack-fraction", EVAL + " --eps 4/255"),
          # other values
          ("steps-negative", PGD + " --steps -1"),
          ("steps-zero", PGD + " --steps 0"),
          ("steps-word", PGD + " --steps x"),
          ("n-zero", "eval --model clip-tinyvit4 --dataset world-shapes --n 0"),
          ("n-negative", "eval --model clip-tinyvit4 --dataset world-shapes --n -3"),
          ("n-word", "eval --model clip-tinyvit4 --dataset world-shapes --n x"),
          ("batch-size-zero", EVAL + " --batch-size 0"),
          ("batch-size-negative", EVAL + " --batch-size -5"),
          ("seed-word", EVAL + " --seed x"),
          ("seed-too-large", EVAL + " --seed 99999999999999999999"),
          ("device-tpu", EVAL + " --device tpu"),
          ("device-cuda-word", EVAL + " --device cuda:x"),
          ("workers-negative", EVAL + " --workers -1"),
          # --attack-params
          ("attack-params-without-attack", EVAL + " --attack-params alpha=1"),
          ("attack-params-no-value", PGD + " --attack-params eps"),
          ("attack-params-no-key", PGD + " --attack-params =3"),
          ("attack-params-a=b=c", PGD + " --attack-params a=b=c"),
          ("attack-params-alpha=b=c", PGD + " --attack-params alpha=b=c"),
          ("attack-params-unknown-key", PGD + " --attack-params nosuch=1"),
          ("attack-params-typo", PGD + " --attack-params alpah=1"),
          ("attack-params-twice", PGD + " --attack-params alpha=1,alpha=2"),
          ("attack-params-eps-twice", PGD + " --eps 4/255 --attack-params eps=8/255"),
          ("attack-params-steps-word", PGD + " --attack-params steps=x"),
          ("attack-params-steps-float", PGD + " --attack-params steps=1.5"),
          ("attack-params-steps-negative", PGD + " --attack-params steps=-3"),
          ("attack-params-steps-underscore", PGD + " --attack-params steps=1_0"),
          ("attack-params-alpha-nan", PGD + " --attack-params alpha=nan"),
          ("attack-params-bool", PGD + " --attack-params random_start=maybe"),
          ("attack-params-norm", PGD + " --attack-params norm=L3"),
          ("attack-params-momentum-word", PGD + " --attack-params momentum=x"),
          ("attack-params-loss", EVAL + " --attack apgd-ce --attack-params loss=foo"),
          ("attack-params-fgsm-steps", EVAL + " --attack fgsm --steps 3"),
          ("attack-params-apgd-t-targets-zero", EVAL + " --attack apgd-t --attack-params n_target_classes=0"),
          ("attack-params-aa-lite-targets-zero", EVAL + " --attack aa-lite --attack-params n_target_classes=0"),
          ("attack-params-eot-zero", EVAL + " --attack bpda-eot --attack-params eot=0"),
          # --defense-params
          ("defense-params-without-defense", EVAL + " --defense-params eps=1"),
          ("defense-params-no-value", TTC + " --defense-params eps"),
          ("defense-params-no-key", TTC + " --defense-params =3"),
          ("defense-params-unknown-key", TTC + " --defense-params nosuch=1"),
          ("defense-params-keyword-or-number", TTC + " --defense-params tau_thres=x"),
          ("defense-params-negative-threshold", TTC + " --defense-params tau_thres=-1"),
          ("defense-params-steps-float", TTC + " --defense-params steps=1.5"),
          ("defense-params-eps-zero", TTC + " --defense-params eps=0"),
          ("defense-params-unknown-tau-model", TTC + " --defense-params tau_model=nosuch"),
          # --out
          ("out-existing-folder", EVAL + " --out folder"),
          ("out-under-a-file", EVAL + " --out afile.txt/run.json"),
          ("out-not-a-record", EVAL + " --out afile.txt"),
          ("out-empty-json", EVAL + " --out empty.json"),
          ("out-empty", EVAL + " --out ''"),
          ("out-read-only", EVAL + f" --out {READ_ONLY}/run.json"),
          ("protocol-out-file", "eval --model clip-tinyvit4 --protocol world --n 2 --out afile.txt"),
          ("protocol-out-empty", "eval --model clip-tinyvit4 --protocol world --n 2 --out ''"),
          ("protocol-out-read-only",
           f"eval --model clip-tinyvit4 --protocol clean --dataset world-shapes --n 2 --out {READ_ONLY}"),
          ("protocol-n-zero", "eval --model clip-tinyvit4 --protocol world --n 0 --out run")),
    *rows("report",
          ("missing-file", "report /nonexistent/run.json"),
          ("not-json", "report afile.txt"),
          ("empty-json", "report empty.json"),
          ("json-list", "report list.json"),
          ("empty-folder", "report emptydir"),
          ("empty-path", "report ''"),
          ("no-run", "report")),
    *rows("leaderboard",
          ("no-out", "leaderboard --models clip-tinyvit4 --protocol world"),
          ("unknown-model", "leaderboard --models nosuch --protocol world --out board --n 2"),
          ("no-models", "leaderboard --models '' --protocol world --out board --n 2"),
          ("comma-models", "leaderboard --models , --protocol world --out board --n 2"),
          ("local-dir-missing", "leaderboard --models local-dir:/nonexistent --protocol world --out board --n 2"),
          ("hf-hub-dotdot", "leaderboard --models hf-hub:../x --protocol world --out board --n 2"),
          ("unknown-protocol", "leaderboard --models clip-tinyvit4 --protocol nosuch --out board --n 2"),
          ("unknown-dataset", BOARD + " --out board --dataset nosuch"),
          ("unknown-defense", BOARD + " --out board --defense nosuch"),
          ("n-zero", "leaderboard --models clip-tinyvit4 --protocol world --out board --n 0"),
          ("n-word", "leaderboard --models clip-tinyvit4 --protocol world --out board --n x"),
          ("batch-size-zero", BOARD + " --out board --batch-size 0"),
          ("seed-word", BOARD + " --out board --seed x"),
          ("device-tpu", BOARD + " --out board --device tpu"),
          ("defense-params-without-defense", BOARD + " --out board --defense-params eps=1"),
          ("defense-params-no-key", BOARD + " --out board --defense ttc --defense-params =3"),
          ("defense-params-unknown-key", BOARD + " --out board --defense ttc --defense-params nosuch=1"),
          ("out-file", BOARD + " --out afile.txt"),
          ("out-empty", BOARD + " --out ''"),
          ("out-read-only", BOARD + f" --out {READ_ONLY}")),
    *rows("train",
          ("no-method", "train"),
          ("unknown-method", "train nosuch --preset world --out run"),
          ("test-time-defense", "train ttc --preset world --out run"),
          ("unknown-preset", "train tecoa --preset nosuch --out run"),
          ("unknown-model", TECOA + " --model nosuch --out run"),
          ("local-dir-missing", TECOA + " --model local-dir:/nonexistent --out run"),
          ("unknown-dataset", TECOA + " --dataset nosuch --out run"),
          ("missing-imagefolder", TECOA + " --dataset imagefolder:/nonexistent --out run"),
          ("unknown-stage", TECOA + " --stage nosuch --out run"),
          ("proxy-for-a-method-without-one", TECOA + " --proxy clip-tinyrn --out run"),
          ("unknown-proxy", "train hpt-gpd --preset world --proxy nosuch --out run"),
          ("unknown-evaluate-protocol", TECOA + " --evaluate nosuch --out run"),
          ("eps-word", TECOA + " --eps abc --out run"),
          ("eps-divide-by-zero", TECOA + " --eps 1/0 --out run"),
          ("eps-negative", TECOA + " --eps=-4/255 --out run"),
          ("eps-nan", TECOA + " --eps nan --out run"),
          ("eps-too-large", TECOA + " --eps 300 --out run"),
          ("steps-negative", TECOA + " --steps -1 --out run"),
          ("steps-zero", TECOA + " --steps 0 --out run"),
          ("steps-word", TECOA + " --steps x --out run"),
          ("steps-float", TECOA + " --steps 1.5 --out run"),
          ("steps-empty", TECOA + " --steps '' --out run"),
          ("steps-unknown-stage", TECOA + " --steps nosuch=3 --out run"),
          ("steps-stage-word", TECOA + " --steps tecoa=x --out run"),
          ("steps-bare-equals", TECOA + " --steps = --out run"),
          ("steps-one-for-two-stages", "train hpt-gpd --preset world --steps 3 --out run"),
          ("lr-word", TECOA + " --lr x --out run"),
          ("lr-negative", TECOA + " --lr -1 --out run"),
          ("lr-zero", TECOA + " --lr 0 --out run"),
          ("lr-nan", TECOA + " --lr nan --out run"),
          ("lr-inf", TECOA + " --lr inf --out run"),
          ("batch-size-zero", TECOA + " --batch-size 0 --out run"),
          ("batch-size-word", TECOA + " --batch-size x --out run"),
          ("seed-word", TECOA + " --seed x --out run"),
          ("attack-steps-zero", TECOA + " --attack-steps 0 --out run"),
          ("device-tpu", TECOA + " --device tpu --out run"),
          ("method-params-no-value", TECOA + " --method-params eps --out run"),
          ("method-params-no-key", TECOA + " --method-params =3 --out run"),
          ("method-params-a=b=c", TECOA + " --method-params a=b=c --out run"),
          ("method-params-unknown-key", TECOA + " --method-params nosuch=1 --out run"),
          ("method-params-word-for-number", TECOA + " --method-params logit_scale=x --out run"),
          ("method-params-negative-scale", TECOA + " --method-params logit_scale=-1 --out run"),
          ("method-params-template", TECOA + " --method-params template=nobraces --out run"),
          ("method-params-twice", TECOA + " --method-params logit_scale=1,logit_scale=2 --out run"),
          ("trainer-params-no-value", TECOA + " --trainer-params eps --out run"),
          ("trainer-params-no-key", TECOA + " --trainer-params =3 --out run"),
          ("trainer-params-unknown-key", TECOA + " --trainer-params nosuch=1 --out run"),
          ("preprocess-word", TECOA + " --preprocess x --out run"),
          ("preprocess-one-number", TECOA + " --preprocess 256 --out run"),
          ("preprocess-crop-word", TECOA + " --preprocess 256,x --out run"),
          ("preprocess-crop-too-large", TECOA + " --preprocess 224,256 --out run"),
          ("preprocess-zero", TECOA + " --preprocess 0,0 --out run"),
          ("preprocess-interpolation", TECOA + " --preprocess 256,224,nosuch --out run"),
          ("preprocess-four-parts", TECOA + " --preprocess 256,224,bilinear,extra --out run"),
          ("preprocess-empty", TECOA + " --preprocess '' --out run"),
          ("preprocess-other-than-checkpoint", TECOA + " --preprocess 64,64 --out trained"),
          ("out-file", TECOA + " --out afile.txt"),
          ("out-empty", TECOA + " --out ''"),
          ("out-read-only", TECOA + f" --out {READ_ONLY}")),
    *rows("world",
          ("no-action", "world"),
          ("unknown-action", "world nosuch")),
    *rows("world-pretrain",
          ("no-arch", "world pretrain"),
          ("unknown-arch", "world pretrain nosuch"),
          ("steps-word", "world pretrain tinyvit4 --steps x --out run"),
          ("steps-zero", "world pretrain tinyvit4 --no-eval --steps 0 --out run"),
          ("steps-negative", "world pretrain tinyvit4 --no-eval --steps -1 --out run"),
          ("batch-size-zero", "world pretrain tinyvit4 --no-eval --batch-size 0 --out run"),
          ("lr-word", "world pretrain tinyvit4 --lr x --out run"),
          ("lr-negative", "world pretrain tinyvit4 --no-eval --lr -1 --out run"),
          ("lr-nan", "world pretrain tinyvit4 --no-eval --lr nan --out run"),
          ("lr-inf", "world pretrain tinyvit4 --no-eval --lr inf --out run"),
          ("seed-word", "world pretrain tinyvit4 --seed x --out run"),
          ("device-tpu", "world pretrain tinyvit4 --no-eval --device tpu --out run"),
          ("out-file", "world pretrain tinyvit4 --no-eval --out afile.txt"),
          ("out-empty", "world pretrain tinyvit4 --no-eval --out ''"),
          ("out-read-only", f"world pretrain tinyvit4 --no-eval --out {READ_ONLY}")),
    *rows("world-measure",
          ("no-arch", "world measure"),
          ("unknown-arch", "world measure nosuch"),
          ("unknown-protocol", "world measure tinyvit4 --protocol nosuch --out run"),
          ("device-tpu", "world measure tinyvit4 --device tpu --out run"),
          ("out-file", "world measure tinyvit4 --out afile.txt"),
          ("out-empty", "world measure tinyvit4 --out ''"),
          ("out-read-only", f"world measure tinyvit4 --out {READ_ONLY}")),
    *rows("world-transfer",
          ("unknown-model", "world transfer --models nosuch,clip-tinyvit4 --n 2 --steps 1"),
          ("no-models", "world transfer --models '' --n 2 --steps 1"),
          ("one-model", "world transfer --models clip-tinyvit4 --n 2 --steps 1"),
          ("local-dir", "world transfer --models local-dir:/nonexistent,clip-tinyrn --n 2 --steps 1"),
          ("eps-word", TRANSFER + " --eps abc"),
          ("eps-divide-by-zero", TRANSFER + " --eps 1/0"),
          ("eps-nan", TRANSFER + " --eps nan"),
          ("eps-zero", TRANSFER + " --eps 0"),
          ("n-zero", "world transfer --models clip-tinyvit4,clip-tinyrn --n 0 --steps 1"),
          ("n-negative", "world transfer --models clip-tinyvit4,clip-tinyrn --n -1 --steps 1"),
          ("n-word", "world transfer --models clip-tinyvit4,clip-tinyrn --n x --steps 1"),
          ("steps-zero", "world transfer --models clip-tinyvit4,clip-tinyrn --n 2 --steps 0"),
          ("steps-word", "world transfer --models clip-tinyvit4,clip-tinyrn --n 2 --steps x"),
          ("out-existing-folder", TRANSFER + " --out folder"),
          ("out-under-a-file", TRANSFER + " --out afile.txt/matrix.json"),
          ("out-empty", TRANSFER + " --out ''"),
          ("out-read-only", TRANSFER + f" --out {READ_ONLY}/matrix.json")),
    *rows("demo",
          ("unknown-model", "demo --models nosuch --n 2 --steps 1 --out run"),
          ("no-models", "demo --models '' --n 2 --steps 1 --out run"),
          ("comma-models", "demo --models , --n 2 --steps 1 --out run"),
          ("hf-hub-dotdot", "demo --models hf-hub:org/.. --n 2 --steps 1 --out run"),
          ("n-zero", "demo --n 0 --steps 1 --out run"),
          ("n-negative", "demo --n -1 --steps 1 --out run"),
          ("n-word", "demo --n x --out run"),
          ("steps-zero", "demo --n 2 --steps 0 --out run"),
          ("steps-word", "demo --n 2 --steps x --out run"),
          ("out-file", DEMO + " --out afile.txt"),
          ("out-empty", DEMO + " --out ''"),
          ("out-read-only", DEMO + f" --out {READ_ONLY}")),
    *rows("publish",
          ("no-arguments", "publish"),
          ("no-repo-id", "publish folder"),
          ("missing-folder", "publish /nonexistent --repo-id org/name --dry-run"),
          ("a-file", "publish afile.txt --repo-id org/name --dry-run"),
          ("empty-folder", "publish emptydir --repo-id org/name --dry-run"),
          ("empty-path", "publish '' --repo-id org/name --dry-run"),
          ("repo-id-dotdot-org", "publish emptydir --repo-id ../x --dry-run"),
          ("repo-id-dotdot-name", "publish emptydir --repo-id org/.. --dry-run"),
          ("repo-id-empty", "publish emptydir --repo-id '' --dry-run"),
          ("repo-id-no-slash", "publish emptydir --repo-id noslash --dry-run")),
]


class HeavyWorkStarted(Exception):
    """The command started its work (a progress bar over batches or steps) instead of refusing the input."""


def _refuse(*args, desc=None, **kwargs):
    raise HeavyWorkStarted(f"the work began ({desc or 'a progress bar'}) before the input was refused")


@pytest.fixture(scope="module")
def host():
    with temporary_host(*(importlib.import_module(f"{name}.plugin") for name in PLUGINS)) as host:
        yield host


@pytest.fixture
def sandbox(host, tmp_path, monkeypatch):
    """A fresh working folder with the files the rows name; no network, no heavy work."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in HEAVY:
        monkeypatch.setattr(importlib.import_module(name), "tqdm", _refuse)
    (tmp_path / "folder").mkdir()
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "afile.txt").write_text("not json, not a folder\n")
    (tmp_path / "empty.json").write_text("{}\n")
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    (tmp_path / "trained").mkdir()
    (tmp_path / "trained" / "checkpoint.pt").write_bytes(b"a checkpoint trained on native images")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("line", ROWS)
def test_wrong_input_is_one_sentence_and_exit_status_2(sandbox, capsys, line):
    if READ_ONLY in line and not Path("/proc/self").is_dir():
        pytest.skip("needs /proc (Linux) as a place nothing can be created in")
    code = main(shlex.split(line))
    out, err = capsys.readouterr()
    shown = f"exit {code}\nstdout: {out[-800:]!r}\nstderr: {err[-1500:]!r}"
    assert "Traceback" not in err and "internal error" not in err, shown
    assert code == 2, shown
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlmshield: error: ") and lines[0].strip() != "vlmshield: error:", \
        shown
