"""Records name exactly what ran, and no mistake costs a result: a model is identified by what it is (its
weights' and config's sha256, where it came from, who provided it), a resume or a catalog entry refuses
another model, a finished record is not silently replaced, outputs are locked, leftovers cleaned, and
broken numbers are flagged."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import vlmshield as vs
from vlmshield.api import (
    ParameterError,
    RunLog,
    Stage,
    TrainConfig,
    WeightsError,
    evaluate,
    model_identity,
    temporary_host,
)
from vlmshield.attacks import PGD
from vlmshield.cli import main
from vlmshield.testing import HUB_REVISION, EmbeddingPull, hub_cache, tiny_vlm, toy_dataset
from vlmshield.zoo import hub


def _config():
    return TrainConfig(stages=(Stage("a", steps=4, lr=1e-3, warmup=1, weight_decay=0.0),), batch_size=8,
                       attack_steps=2, checkpoint_every=2, log_every=1)


EVAL = ["eval", "--dataset", "world-shapes,world-colors", "--attack", "pgd", "--eps", "4/255", "--steps", "1",
        "--n", "16", "--batch-size", "8", "--no-progress"]


def _interrupt_after(monkeypatch, calls: int) -> None:
    """Ctrl-C in the attack after ``calls`` batches, as a user stopping a run."""
    done, perturb = [], PGD.perturb

    def interrupted(self, *args, **kwargs):
        done.append(1)
        if len(done) > calls:
            raise KeyboardInterrupt
        return perturb(self, *args, **kwargs)

    monkeypatch.setattr(PGD, "perturb", interrupted)


@pytest.fixture(scope="module")
def changed_copy(tmp_path_factory):
    """clip-tinyvit4 saved as a folder with its weights changed: it reports the name it was saved under."""
    vlm = vs.zoo.load("clip-tinyvit4")
    with torch.no_grad():
        vlm.model.visual.proj.mul_(1.5)
    folder = tmp_path_factory.mktemp("changed") / "model"
    vs.zoo.save(vlm, folder)
    return folder


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vlmshield: error:") and "Traceback" not in err, err
    return err


def test_a_model_is_identified_by_its_weights_and_config_not_its_name(tmp_path, changed_copy):
    zoo_model = vs.zoo.load("clip-tinyvit4")
    vs.zoo.save(zoo_model, tmp_path / "same")
    same, changed = vs.zoo.load(f"local-dir:{tmp_path / 'same'}"), vs.zoo.load(f"local-dir:{changed_copy}")
    assert same.name == changed.name == "clip-tinyvit4"
    ids = [model_identity(m) for m in (zoo_model, same, changed)]
    assert ids[0]["weights_sha256"] == ids[1]["weights_sha256"] != ids[2]["weights_sha256"]
    assert ids[0]["config_sha256"] == ids[1]["config_sha256"] == ids[2]["config_sha256"]
    assert ids[0]["source"] == "package:clip-tinyvit4.safetensors"
    assert ids[1]["source"] == f"local-dir:{(tmp_path / 'same').resolve()}"
    assert ids[0]["provider"]["distribution"] == "vlmshield"
    assert vs.zoo.load("clip-tinyvit4", weights=False).source == "random-init"


def test_a_resumed_evaluation_refuses_another_model_and_records_the_whole_run(tmp_path, monkeypatch, capsys,
                                                                               changed_copy):
    out, partial = tmp_path / "r.json", tmp_path / "r.json.partial"
    with monkeypatch.context() as patched:
        _interrupt_after(patched, 2)
        assert main([*EVAL, "--model", "clip-tinyvit4", "--out", str(out)]) == 130
    assert partial.exists() and not out.exists()
    first_part = max(json.loads(line)["elapsed_s"] for line in partial.read_text().splitlines()[1:])
    capsys.readouterr()

    assert main([*EVAL, "--model", f"local-dir:{changed_copy}", "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "another model" in err and "clip-tinyvit4 (package:" in err and f"local-dir:{changed_copy}" in err

    assert main([*EVAL, "--model", "clip-tinyvit4", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["resumed"] is True and record["wall_time_s"] > first_part
    assert record["model"]["weights_sha256"] == model_identity(vs.zoo.load("clip-tinyvit4"))["weights_sha256"]


def test_a_finished_record_of_another_configuration_is_replaced_only_with_overwrite(tmp_path, capsys, changed_copy):
    out = tmp_path / "r.json"
    clean = ["eval", "--dataset", "world-shapes", "--n", "8", "--no-progress", "--out", str(out)]
    assert main([*clean, "--model", "clip-tinyvit4"]) == 0
    first = out.read_text()
    assert main([*clean, "--model", "clip-tinyvit4"]) == 0  # the same configuration: written again
    capsys.readouterr()
    assert main([*clean, "--model", f"local-dir:{changed_copy}"]) == 2
    assert "another configuration (model clip-tinyvit4)" in _one_line_error(capsys)
    assert json.loads(out.read_text())["results"] == json.loads(first)["results"]
    assert main([*clean, "--model", f"local-dir:{changed_copy}", "--overwrite"]) == 0
    assert json.loads(out.read_text())["model"]["source"].startswith("local-dir:")


def test_a_record_being_written_is_locked_and_leftovers_of_a_killed_write_are_removed(tmp_path):
    out = tmp_path / "r.json"
    leftover = tmp_path / ".r.json.k1ll3d.tmp"
    leftover.write_text("{half a rec")
    log = RunLog(out, "fingerprint")
    try:
        assert not leftover.exists()
        with pytest.raises(ParameterError, match="in use by another run"):
            RunLog(out, "fingerprint")
    finally:
        log.close()


def test_a_second_training_into_the_same_folder_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from vlmshield.engine.records import locked_folder
        with locked_folder({str(tmp_path)!r}):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with temporary_host(), pytest.raises(ParameterError, match="in use by another run"):
            EmbeddingPull().fit(tiny_vlm(), toy_dataset(), _config(), out=tmp_path, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_catalog_entry_refuses_a_cache_folder_of_another_architecture(tmp_path, monkeypatch):
    """A 1M-parameter folder in the cache under a catalog entry's repo is not loaded as that entry."""
    vs.zoo.save(vs.zoo.load("clip-tinyvit4"), tmp_path / "impostor")
    repo = "chs20/FARE4-ViT-B-32-laion2B-s34B-b79K"
    cache = hub_cache(tmp_path, tmp_path / "impostor", repo=repo)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.warns(UserWarning, match="does not pin"), \
            pytest.raises(WeightsError, match=r"fare4-vitb32-laion2b is a ViT-B-32 of 151,277,313 parameters, but "
                                              rf"the model loaded from hf-hub:{repo}@{HUB_REVISION} has [\d,]+: those "
                                              r"files are not fare4-vitb32-laion2b's"):
        vs.zoo.load("fare4-vitb32-laion2b")
    assert hub.load(repo).source == f"hf-hub:{repo}@{HUB_REVISION}"  # by its own name it loads, and says from where
    with pytest.raises(WeightsError, match="is corrupt or was modified"):
        hub.load(repo, sha256={"open_clip_model.safetensors": "0" * 64})


def test_a_record_names_the_provider_of_every_component_and_the_loaded_plugins():
    with temporary_host(entry_points=True):  # the installed method plugins
        record = evaluate("fare-tinyvit4", "world-shapes", attack="pgd", eps=4 / 255, steps=1, defense="ttc",
                          n=8, progress=False)
        adaptive = vs.get_host().create("defense", "ttc").adaptive_attacks
    provenance = record["provenance"]
    assert record["model"]["provider"]["distribution"] == "vlmshield-fare"
    assert provenance["defense"]["distribution"] == "vlmshield-ttc"
    assert provenance["attack"]["distribution"] == provenance["evaluator"]["distribution"] == "vlmshield"
    assert provenance["datasets"]["world-shapes"]["distribution"] == "vlmshield"
    assert set(provenance["adaptive_attacks"]) == set(adaptive)
    assert {"vlmshield-fare", "vlmshield-ttc", "vlmshield"} <= {p["distribution"] for p in record["plugins"]}


def test_nan_weights_are_flagged_as_non_finite_not_as_randomness():
    vlm = vs.zoo.load("clip-tinyvit4")
    with torch.no_grad():
        vlm.model.visual.proj.fill_(float("nan"))
    for attack in (None, "pgd"):
        record = evaluate(vlm, "world-shapes", attack=attack, eps=4 / 255 if attack else None,
                          steps=1 if attack else None, n=8, progress=False)
        flags = {f["flag"] for f in record["flags"]}
        assert "non-finite-outputs" in flags and "randomized-outputs" not in flags, flags


def test_n_beyond_a_dataset_is_recorded_as_what_ran():
    size = len(vs.core.dataset("world-shapes", image_size=32))
    record = evaluate("clip-tinyvit4", "world-shapes", n=size + 1000, progress=False, batch_size=256)
    assert record["n"] == size + 1000 and record["results"]["world-shapes"]["n"] == size
    assert [f["flag"] for f in record["flags"]] == ["n-above-size"]


def test_a_training_checkpoint_is_not_resumed_from_another_model(tmp_path):
    with temporary_host():
        EmbeddingPull().fit(tiny_vlm(), toy_dataset(), _config(), out=tmp_path, progress=False, stop_after=2)
        other = tiny_vlm()
        with torch.no_grad():
            next(other.parameters()).add_(0.1)
        with pytest.raises(ParameterError, match=r"continues a training of .* not of"):
            EmbeddingPull().fit(other, toy_dataset(), _config(), out=tmp_path, progress=False)


def test_a_resumed_training_logs_each_step_once(tmp_path):
    with temporary_host():  # checkpoints every 2 steps: killed in step 4, after step 3 was logged
        method, steps_seen = EmbeddingPull(), []
        original = method.loss

        def loss(*args):
            steps_seen.append(1)
            if len(steps_seen) == 4:
                raise KeyboardInterrupt
            return original(*args)

        method.loss = loss
        with pytest.raises(KeyboardInterrupt):
            method.fit(tiny_vlm(), toy_dataset(), _config(), out=tmp_path, progress=False)
        logged = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
        assert logged == [1, 2, 3]
        EmbeddingPull().fit(tiny_vlm(), toy_dataset(), _config(), out=tmp_path, progress=False)
    logged = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]
    assert not Path(tmp_path / "checkpoint.pt.tmp").exists()


def test_a_leaderboard_measures_again_a_model_whose_folder_changed(tmp_path, changed_copy):
    folder = tmp_path / "model"
    vs.zoo.save(vs.zoo.load("clip-tinyvit4"), folder)
    board = dict(dataset="world-shapes", n=4, progress=False)
    vs.leaderboard([f"local-dir:{folder}"], "world", tmp_path / "board", **board)
    run_json = next((tmp_path / "board").glob("*/run.json"))
    before = json.loads(run_json.read_text())["model"]["weights_sha256"]
    vs.zoo.save(vs.zoo.load(f"local-dir:{changed_copy}"), folder)  # the same path, other weights
    vs.leaderboard([f"local-dir:{folder}"], "world", tmp_path / "board", **board)
    after = json.loads(run_json.read_text())["model"]["weights_sha256"]
    assert before != after == model_identity(vs.zoo.load(f"local-dir:{changed_copy}"))["weights_sha256"]
