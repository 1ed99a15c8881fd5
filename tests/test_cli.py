import json
import os
import shutil
import subprocess
import sys

import pytest

from vlmshield.api import Command, ModelCard, temporary_host
from vlmshield.cli import main
from vlmshield.testing import make_plugin, tiny_vlm

PGD_EVAL = ["eval", "--model", "tiny-clip", "--dataset", "fakedata", "--attack", "pgd"]


def broken(register):
    raise ImportError("this plugin is broken")


@pytest.fixture
def host():
    plugin = make_plugin(
        "test-plugin",
        register_models=lambda r: r(ModelCard("tiny-clip", arch="tiny",
                                              loader=lambda card, device=None, weights=True: tiny_vlm())),
        register_commands=lambda r: r(Command("hello", "say hello", lambda args: print(f"hello {args.who}") or 3,
                                              lambda parser: parser.add_argument("who"))),
    )
    with temporary_host(plugin, make_plugin("broken-plugin", register_attacks=broken)) as host:
        yield host


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("vlmshield ")


def test_plugins_lists_hooks_registrations_and_errors(host, capsys):
    code, out, _ = run(capsys, "plugins", "--json")
    plugins = {p["name"]: p for p in json.loads(out)}
    assert code == 0
    assert plugins["vlmshield.attacks"]["registered"]["attack"][:2] == ["fgsm", "pgd"]
    assert plugins["vlmshield.attacks"]["version"] and plugins["vlmshield.attacks"]["hooks"] == ["register_attacks"]
    assert plugins["broken-plugin"]["errors"] == ["register_attacks raised ImportError: this plugin is broken"]
    code, out, _ = run(capsys, "plugins")
    assert "error: register_attacks raised ImportError" in out and "attacks: fgsm, pgd" in out
    assert "Traceback" not in out
    code, out, _ = run(capsys, "plugins", "--debug")
    assert code == 0 and "Traceback (most recent call last)" in out and "ImportError: this plugin is broken" in out


@pytest.mark.parametrize("kind, expected", [
    ("models", "tiny-clip"), ("attacks", "aa-lite"), ("defenses", None), ("datasets", "imagefolder"),
    ("evaluators", "zero-shot"), ("commands", "hello"), ("attack", "pgd"),
])
def test_list_every_kind(host, capsys, kind, expected):
    code, out, _ = run(capsys, "list", kind, "--json")
    rows = json.loads(out)
    assert code == 0 and isinstance(rows, list)
    if expected:
        assert expected in [row["name"] for row in rows]
    code, text, _ = run(capsys, "list", kind)
    assert code == 0 and (expected is None or expected in text)


def test_list_attacks_tells_evasion_adaptive_and_backdoor_attacks_apart(host, capsys):
    code, out, _ = run(capsys, "list", "attacks")
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert code == 0 and "(evasion)" in lines["pgd"] and "(adaptive)" in lines["bpda-eot"]
    assert "(backdoor)" in lines["badnet"]
    rows = {row["name"]: row for row in json.loads(run(capsys, "list", "attacks", "--json")[1])}
    assert (rows["apgd-ce"]["attack_kind"], rows["bpda-eot"]["attack_kind"]) == ("evasion", "adaptive")


@pytest.mark.parametrize("name, kind", [
    ("pgd", "attack"), ("apgd", "attack"), ("tiny-clip", "model"), ("CLIP_VITB32", "model"),
    ("fakedata", "dataset"), ("asr", "evaluator"), ("eval", "command"),
])
def test_info(host, capsys, name, kind):
    code, out, _ = run(capsys, "info", name, "--json")
    info = json.loads(out)
    assert code == 0 and info["kind"] == kind and info["plugin"]
    code, out, _ = run(capsys, "info", name)
    assert out.startswith(kind)


def test_info_params_show_pixel_budgets_as_255ths(capsys):
    code, out, _ = run(capsys, "info", "pgd", "--json")
    assert json.loads(out)["params"]["eps"] == "4/255"


def test_eval_prints_a_table_and_writes_the_record(host, capsys, tmp_path):
    out_file = tmp_path / "run.json"
    code, out, err = run(capsys, "eval", "--model", "tiny-clip", "--dataset", "fakedata", "--attack", "pgd",
                         "--eps", "4", "--steps", "2", "--n", "12", "--batch-size", "6", "--out", str(out_file),
                         "--attack-params", "alpha=0.5/255,random_start=false")
    assert code == 0, err
    assert "| fakedata | 12 |" in out and "eps 4 read as 4/255" in err
    record = json.loads(out_file.read_text())
    assert record["attack"]["params"]["alpha"] == pytest.approx(0.5 / 255)
    assert record["attack"]["params"]["random_start"] is False
    assert 0 <= record["results"]["fakedata"]["clean_acc"] <= 1
    code, out, _ = run(capsys, "eval", "--model", "tiny-clip", "--dataset", "fakedata", "--n", "4", "--json")
    assert json.loads(out)["results"]["fakedata"]["n"] == 4


def test_plugins_add_subcommands(host, capsys):
    code, out, _ = run(capsys, "hello", "world")
    assert (code, out) == (3, "hello world\n")


@pytest.mark.parametrize("argv, fragment", [
    ([*PGD_EVAL, "--eps", "4/25x"], "eps must be a number"),
    ([*PGD_EVAL, "--eps", "0"], "eps must be above 0"),
    ([*PGD_EVAL, "--eps=-4/255"], "eps must be above 0"),
    ([*PGD_EVAL, "--eps", "300"], "eps must be above 0"),
    ([*PGD_EVAL, "--steps", "-1"], "steps must be 1 or more"),
    (["eval", "--model", "tiny-clip", "--dataset", "fakedata", "--n", "0"], "n must be"),
    (["eval", "--model", "tiny-clip", "--dataset", "fakedata", "--n", "ten"], "invalid int value"),
    (["eval", "--model", "tiny-clip", "--dataset", "cifar-ten"], "unknown dataset 'cifar-ten'"),
    (["eval", "--model", "tiny-clipp", "--dataset", "fakedata"], "Did you mean 'tiny-clip'"),
    (["eval", "--model", "tiny-clip", "--dataset", "fakedata", "--attack", "pdg"], "Did you mean 'pgd'"),
    (["eval", "--model", "tiny-clip", "--dataset", "imagefolder"], "needs its files"),
    (["eval", "--model", "tiny-clip", "--dataset", "imagefolder:/does/not/exist"], "does not exist"),
    (["eval", "--model", "tiny-clip", "--dataset", "fakedata", "--attack-params", "alpha=1"], "needs --attack"),
    ([*PGD_EVAL, "--adaptive-params", "eot=2"], "give --defense"),
    ([*PGD_EVAL, "--defense", "ttc", "--adaptive-params", "eot=2"], "unknown defense 'ttc'"),
    (["eval", "--model", "tiny-clip"], "give --dataset (or --protocol"),
    (["eval", "--model", "tiny-clip", "--protocol", "world", "--attack", "pgd"], "--protocol fixes the attack"),
    (["eval", "--model", "tiny-clip", "--protocol", "wrold"], "Did you mean 'world'"),
    (["eval", "--model", "tiny-clip", "--protocol", "tecoa", "--dataset", "fakedata"], "no 'single' prompt"),
    (["report", "/does/not/exist.json"], "cannot read a run record"),
    (["leaderboard", "--models", "tiny-clip", "--protocol", "world"], "required: --out"),
    (["list", "widgets"], "cannot list 'widgets'"),
    (["info", "pdg"], "Did you mean 'pgd'"),
    (["frobnicate"], "invalid choice"),
    ([], "no command given"),
])
def test_bad_input_is_one_line_and_exit_status_2(host, capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    lines = [line for line in err.splitlines() if not line.startswith("vlmshield: eps")]
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err
    assert lines[0].startswith("vlmshield: error: ")


def test_one_class_image_folder_is_one_line(host, capsys, tmp_path):
    from PIL import Image

    (tmp_path / "cat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "a.png")
    code, _, err = run(capsys, "eval", "--model", "tiny-clip", "--dataset", f"imagefolder:{tmp_path}")
    assert code == 2 and err.count("\n") == 1 and "at least 2 class names" in err


def test_debug_shows_the_traceback(host, capsys):
    code, _, err = run(capsys, "--debug", "info", "pdg")
    assert code == 2 and "Traceback" in err


def test_the_console_script_is_installed():
    script = shutil.which("vlmshield", path=os.path.dirname(sys.executable))
    assert script, "the vlmshield console script is missing; run make install"
    result = subprocess.run([script, "list", "attacks", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "apgd-t" in {a["name"] for a in json.loads(result.stdout)}
    result = subprocess.run([script, "eval", "--model", "clip-vitb32", "--dataset", "fakedata", "--eps", "2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr == "vlmshield: error: --eps needs --attack.\n"


def test_images_outside_the_pixel_range_are_one_line(capsys):
    import torch

    from vlmshield.core import DatasetEntry
    from vlmshield.testing import tensor_dataset

    def build(root=None, split="test", image_size=224):
        return tensor_dataset(torch.rand(4, 3, 32, 32) * 255, torch.tensor([0, 1, 0, 1]), ["a", "b"], name="raw")

    plugin = make_plugin(
        "raw-data",
        register_datasets=lambda r: r(DatasetEntry("raw-pixels", build)),
        register_models=lambda r: r(ModelCard("tiny-clip", arch="tiny",
                                              loader=lambda card, device=None, weights=True: tiny_vlm())),
    )
    with temporary_host(plugin):
        code, _, err = run(capsys, "eval", "--model", "tiny-clip", "--dataset", "raw-pixels")
    assert code == 2 and err.count("\n") == 1 and "must lie in [0, 1]" in err


def test_an_empty_dataset_is_one_line(host, capsys, tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    code, _, err = run(capsys, "eval", "--model", "tiny-clip", "--dataset", f"imagefolder:{tmp_path}")
    assert code == 2 and err.count("\n") == 1 and "error:" in err


def test_protocols_are_listed_and_described(host, capsys):
    code, out, _ = run(capsys, "list", "protocols")
    assert code == 0 and all(name in out for name in ("tecoa", "robustvlm", "clean", "world"))
    code, out, _ = run(capsys, "info", "robustvlm", "--json")
    info = json.loads(out)
    assert code == 0 and info["kind"] == "protocol" and info["eps"] == ["2/255", "4/255"] and info["n"] == 1000


@pytest.mark.parametrize("where, fragment", [
    ("folder", "is a folder; the record is a file"),
    ("file/record.json", "is a file, not a folder"),
    ("", "the output path is empty"),
])
def test_an_unusable_out_is_refused_before_any_work(host, capsys, tmp_path, monkeypatch, where, fragment):
    """The destination is checked first: nothing is evaluated (the model is never loaded) for a bad --out."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    import vlmshield.engine.evaluation as evaluation

    monkeypatch.setattr(evaluation, "resolve_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code, out, err = run(capsys, "eval", "--model", "tiny-clip", "--dataset", "fakedata", "--n", "2", "--out", where)
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err


def test_a_run_folder_that_is_a_file_is_refused(host, capsys, tmp_path):
    (tmp_path / "taken").write_text("a file")
    code, out, err = run(capsys, "eval", "--model", "tiny-clip", "--protocol", "world", "--dataset", "fakedata",
                         "--n", "2", "--out", str(tmp_path / "taken"))
    assert code == 2 and "is a file; this run writes a folder there" in err, err
    from vlmshield.api import ParameterError
    from vlmshield.cli.train import train_run

    with pytest.raises(ParameterError, match="is a file; this run writes a folder there"):
        train_run({}, tmp_path / "taken")  # checked before the run is even read


@pytest.mark.parametrize("argv, fragment", [
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--workers", "-1"], "data loading workers must be 0"),
    (["--attack", "pgd", "--eps", "4/255", "--attack-params", "eps=8/255"], "eps given twice"),
    (["--attack", "pgd", "--eps", "4/255", "--steps", "0"], "steps must be 1 or more"),
])
def test_user_mistakes_in_eval_options_are_one_sentence(host, capsys, argv, fragment):
    code, out, err = run(capsys, "eval", "--model", "tiny-clip", "--dataset", "fakedata", "--n", "2", *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err


def test_a_gpu_asked_for_where_there_is_none_is_one_sentence(host, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    code, out, err = run(capsys, "eval", "--model", "tiny-clip", "--dataset", "fakedata", "--n", "2",
                         "--device", "cuda")
    assert code == 2 and "no CUDA GPU is available here; use --device cpu" in err, err


def test_listing_loads_every_installed_plugin_without_importing_torchvision_or_model_code():
    """The cheap commands start in about the time of importing torch: plugins import heavy modules at use."""
    env = {k: v for k, v in os.environ.items() if k != "VLMSHIELD_LOAD_PLUGINS"}
    code = ("import sys; from vlmshield.cli import main; main(['list', 'defenses']); "
            "print(sorted(m for m in ('torchvision', 'open_clip', 'timm', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and "cleanclip" in done.stdout, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:]
