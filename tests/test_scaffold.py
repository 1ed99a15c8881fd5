"""`vlmshield new-plugin`: what it writes for every kind installs, registers, and passes its own tests and the
conformance checks, unchanged; bad requests are one sentence."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vlmshield.cli import main
from vlmshield.cli.scaffold import KINDS, compatible_range, new_plugin


def test_every_kind_installs_registers_and_passes_its_tests_unchanged(tmp_path):
    """Each kind is written, built as a wheel and installed (non-editable, offline) into one folder, and its
    tests run there in a fresh process that loads installed plugins, as a user's would."""
    plugins = [new_plugin(f"my-{kind}", kind, tmp_path / f"vlmshield-my-{kind}") for kind in KINDS]
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), *map(str, plugins)], check=True, timeout=600)
    assert {f"vlmshield_my_{kind}" for kind in KINDS} <= {path.name for path in site.iterdir()}
    assert (site / "vlmshield_my_model" / "weights" / "my-model.safetensors").is_file()  # package data
    env = {k: v for k, v in os.environ.items() if k != "VLMSHIELD_LOAD_PLUGINS"}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
                           *(str(p / "tests") for p in plugins)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0 and " failed" not in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
    assert f"{3 * len(KINDS)} passed" in done.stdout, done.stdout[-1000:]
    listed = subprocess.run([sys.executable, "-m", "vlmshield.cli", "plugins"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert all(f"vlmshield-my-{kind}" in listed.stdout for kind in KINDS), listed.stdout


def test_the_written_plugin_asks_for_this_minor_series_of_vlmshield(tmp_path):
    assert compatible_range("0.1.0") == ">=0.1,<0.2" and compatible_range("1.12.3") == ">=1.12,<1.13"
    out = new_plugin("vlmshield-jpeg", "defense", tmp_path / "p")
    pyproject = (out / "pyproject.toml").read_text()
    assert 'name = "vlmshield-jpeg"' in pyproject and f'"vlmshield{compatible_range()}"' in pyproject
    assert 'jpeg = "vlmshield_jpeg.plugin"' in pyproject
    assert "class Jpeg(TestTimeDefense)" in (out / "src" / "vlmshield_jpeg" / "plugin.py").read_text()


@pytest.mark.parametrize("argv, message", [
    (["new-plugin", "My_Attack", "--kind", "attack"], "a plugin name is lower-case words"),
    (["new-plugin", "ok", "--kind", "sampler"], "invalid choice: 'sampler'"),
])
def test_a_bad_name_or_kind_is_one_sentence(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_an_existing_folder_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["new-plugin", "mine", "--kind", "attack", "--out", str(tmp_path)]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
