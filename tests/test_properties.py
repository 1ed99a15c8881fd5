"""Properties over generated input: what users type (eps, key=value lists) and what a model folder holds.

- eps: any text is either a budget in (0, 1] or a ParameterError; ``parse_eps(format_eps(x)) == x``.
- ``key=value`` lists (``--attack-params`` and the like): any text is a dict or a ParameterError; a list
  written from valid values reads back as those values.
- model folders (``local-dir:``): a folder saved by ``zoo.save`` whose ``open_clip_config.json``, safetensors
  header or weight bytes are damaged either loads or is refused with a VlmshieldError, through the API and
  through the command line; never another exception. A config that describes a huge model is refused
  without allocating it (run in a child process with a memory limit, last).

Hypothesis runs derandomized (the same examples on every run) and without an example database.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import vlmshield as vs
from vlmshield.api import ParameterError, VlmshieldError, format_eps, parse_eps, parse_params
from vlmshield.attacks import PGD
from vlmshield.attacks.apgd_t import APGDT
from vlmshield.cli import main

CONFIG, WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"
#: The largest integer generated into a config: a width or a depth this large still builds in a moment.
SANE_INT = 512


def props(max_examples: int):
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])  # the fixtures only patch


# ---------------------------------------------------------------------------------------------------- eps
NUMBERS = st.one_of(
    st.integers(-300, 300).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-2, max_value=300).map(lambda x: f"{x:g}"),
    st.tuples(st.integers(-300, 300), st.integers(-300, 300)).map(lambda p: f"{p[0]}/{p[1]}"),
    st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
    .map(lambda p: f"{p[0]!r}/{p[1]!r}"),
)
#: Text that looks like a number more often than random text would.
EPS_TEXT = st.one_of(st.text(max_size=12), NUMBERS,
                     st.lists(st.sampled_from(list("0123456789./+-eE _\u0664\u0666nainf")), max_size=10).map("".join))


@props(400)
@given(st.one_of(EPS_TEXT, st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                 st.booleans()))
@example("1_0")
@example("\u0664")  # an Arabic-Indic 4: float() reads it, a user did not mean it
@example("1e400/1e400")
@example("4/1e-400")
def test_eps_is_a_budget_in_0_1_or_a_parameter_error(text):
    try:
        value = parse_eps(text)
    except ParameterError as error:
        message = str(error)
        assert message.startswith("eps") and message.endswith(".") and "\n" not in message
        return
    assert isinstance(value, float) and math.isfinite(value) and 0 < value <= 1


@props(300)
@given(st.integers(1, 255 * 8))
def test_eps_in_eighths_of_255ths_round_trips(eighths):
    value = (eighths / 8) / 255
    assert format_eps(value).endswith("/255")
    assert parse_eps(format_eps(value)) == value


@props(300)
@given(st.floats(min_value=0, max_value=1, exclude_min=True))
def test_any_eps_round_trips_through_its_formatting(value):
    text = format_eps(value)
    assert parse_eps(text) == pytest.approx(value, rel=1e-5, abs=1e-6 / 255)


@props(300)
@given(st.decimals(min_value="0.000001", max_value="1", places=6))
def test_short_decimal_eps_round_trips_exactly(decimal):
    value = float(decimal)
    text = format_eps(value)
    if text.endswith("/255"):  # within 1e-6 of a number of 255ths: written as that (see format_eps)
        assert parse_eps(text) == pytest.approx(value, abs=1e-6 / 255)
    else:
        assert parse_eps(text) == value


# ------------------------------------------------------------------------------------------- key=value
KEYS = st.sampled_from(["eps", "alpha", "steps", "norm", "random_start", "loss", "momentum", "seed", "n_target_classes",
                        "nosuch", "", " ", "Eps", "random-start"])
ITEM = st.one_of(st.text(max_size=15),
                 st.tuples(KEYS, st.sampled_from(["=", "", "==", " = "]), st.one_of(EPS_TEXT, st.text(max_size=6)))
                 .map("".join))
PARAM_TEXT = st.lists(ITEM, max_size=4).map(",".join)


@props(400)
@given(PARAM_TEXT, st.sampled_from([PGD, APGDT]))
@example("alpha=1,alpha=2", PGD)
@example("steps=1_0", PGD)
@example("steps=" + "9" * 5000, PGD)
def test_any_key_value_text_is_a_dict_or_a_parameter_error(text, cls):
    try:
        params = parse_params(cls, text, f"attack {cls.name!r}", cls.pixel_params)
    except ParameterError as error:
        assert "\n" not in str(error) and str(error).endswith(".")
        return
    assert isinstance(params, dict)
    for key, value in params.items():
        if key in cls.pixel_params:
            assert isinstance(value, float) and 0 < value <= 1
        elif isinstance(value, float):
            assert math.isfinite(value)


def _written(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


@props(200)
@given(st.fixed_dictionaries({}, optional={
    "eps": st.integers(1, 255).map(lambda k: k / 255),
    "alpha": st.integers(1, 64).map(lambda k: (k / 4) / 255),
    "steps": st.integers(1, 10**6),
    "norm": st.sampled_from(["Linf", "L2"]),
    "random_start": st.booleans(),
    "loss": st.sampled_from(["ce", "cw", "dlr"]),
    "momentum": st.floats(min_value=0, max_value=1, exclude_max=True),
    "seed": st.integers(0, 2**63),
}))
def test_key_value_lists_of_valid_values_read_back(params):
    text = ",".join(f"{k}={format_eps(v) if k in PGD.pixel_params else _written(v)}" for k, v in params.items())
    assert parse_params(PGD, text, "attack 'pgd'", PGD.pixel_params) == params


def test_a_whole_number_for_a_parameter_defaulting_to_none_stays_whole():
    """n_target_classes=3 was read as 3.0, which APGD-T refused ('must be 1 or more; got 3.0')."""
    params = parse_params(APGDT, "n_target_classes=3", "attack 'apgd-t'", APGDT.pixel_params)
    assert params == {"n_target_classes": 3} and type(params["n_target_classes"]) is int
    APGDT.create(**params)


# --------------------------------------------------------------------------------------- model folders
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A world model saved as a model folder (open_clip's layout), the original every example damages."""
    directory = tmp_path_factory.mktemp("tinyvit4")
    vs.zoo.save(vs.zoo.load("clip-tinyvit4"), directory)
    return directory


@contextlib.contextmanager
def copy_of(saved: Path):
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        shutil.copytree(saved, folder)
        yield folder


class _Loaded(VlmshieldError):
    """Raised by the command line test once the model is loaded: the evaluation itself is not under test."""


def assert_loads_or_refuses(folder: Path) -> None:
    """``zoo.load`` returns a model or raises a VlmshieldError; the command line says one sentence (exit 2) and
    never 'internal error'."""
    try:
        vs.zoo.load(f"local-dir:{folder}")
    except VlmshieldError as error:
        assert str(error) and "\n" not in str(error).strip(), repr(str(error))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["eval", "--model", f"local-dir:{folder}", "--dataset", "world-shapes", "--n", "1",
                     "--no-progress"])
    lines = err.getvalue().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vlmshield: error: "), (code, err.getvalue())
    with contextlib.redirect_stderr(err := io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        code = main(["publish", str(folder), "--repo-id", "org/name", "--dry-run", "--json"])
    assert code in (0, 2) and "internal error" not in err.getvalue(), (code, err.getvalue())


@pytest.fixture
def stop_after_loading(monkeypatch):
    """``vlmshield eval`` stops right after it loaded the model (exit 2, 'model loaded')."""
    import vlmshield.engine.evaluation as evaluation

    real = evaluation.resolve_model

    def load_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        raise _Loaded("model loaded.")

    monkeypatch.setattr(evaluation, "resolve_model", load_then_stop)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_the_undamaged_folder_loads(saved, stop_after_loading):
    assert vs.zoo.load(f"local-dir:{saved}").name == "clip-tinyvit4"
    assert_loads_or_refuses(saved)


# JSON values a damaged config may hold: integers no larger than SANE_INT (larger widths: the last test).
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**64, SANE_INT),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                         st.sampled_from(["", "abc", "bicubic", "shortest", "words", "none", "0"]))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)), max_leaves=6)


def _paths(node, prefix=()) -> list[tuple]:
    """Every path into a JSON document (long lists: their first two items and their last)."""
    paths = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            paths += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        shown = sorted({i for i in (0, 1, len(node) - 1) if 0 <= i < len(node)})
        for index in shown:
            paths += _paths(node[index], (*prefix, index))
    return paths


def _mutate(document, data) -> tuple:
    """One edit of a JSON document drawn with ``data``: a value replaced, a key or item deleted, a key added."""
    paths = [p for p in _paths(document) if p]  # the document itself stays an object
    path = data.draw(st.sampled_from(paths), label="path")
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    kind = data.draw(st.sampled_from(["replace", "delete", "add"]), label="edit")
    if kind == "replace":
        parent[path[-1]] = data.draw(JSON_VALUES, label="value")
    elif kind == "delete":
        del parent[path[-1]]
    else:
        target = parent[path[-1]] if isinstance(parent[path[-1]], dict) else parent
        if isinstance(target, list):
            target.append(data.draw(JSON_VALUES, label="value"))
        else:
            target[data.draw(st.text(max_size=12), label="key")] = data.draw(JSON_VALUES, label="value")
    return kind, path


@props(120)
@given(data=st.data())
def test_a_damaged_config_loads_or_is_refused_in_one_sentence(saved, stop_after_loading, data):
    original = json.loads((saved / CONFIG).read_text())
    config = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        _mutate(config, data)
    with copy_of(saved) as folder:
        (folder / CONFIG).write_text(json.dumps(config))
        assert_loads_or_refuses(folder)


def _split(weights: bytes) -> tuple[dict, bytes]:
    (size,) = struct.unpack("<Q", weights[:8])
    return json.loads(weights[8:8 + size]), weights[8 + size:]


def _join(header: dict, data: bytes, pad: bool = True) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text = text.ljust(-(-len(text) // 8) * 8)
    return struct.pack("<Q", len(text)) + text + data


DTYPES = st.sampled_from(["F32", "F16", "BF16", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL", "F8_E4M3",
                          "F8_E5M2", "C64", "f32", "", "XYZ"])
SIZES = st.one_of(st.integers(-2, 600), st.integers(-2**64, 2**64), st.sampled_from([0, 2**31, 2**32, 2**63 - 1]))


def _damage_header(header: dict, data: st.DataObject) -> dict:
    """A header with one of its tensor entries (or its metadata) damaged."""
    names = sorted(header)
    name = data.draw(st.sampled_from(names), label="entry")
    entry = header[name]
    what = data.draw(st.sampled_from(["dtype", "shape", "offsets", "field", "entry", "swap-shape"]), label="damage")
    if name == "__metadata__" or what == "entry":
        choice = data.draw(st.sampled_from(["delete", "replace", "add"]), label="entry-edit")
        if choice == "delete":
            del header[name]
        elif choice == "replace":
            header[name] = data.draw(JSON_VALUES, label="value")
        else:
            header[data.draw(st.text(max_size=12), label="new")] = data.draw(JSON_VALUES, label="value")
    elif what == "dtype":
        entry["dtype"] = data.draw(st.one_of(DTYPES, JSON_SCALARS), label="dtype")
    elif what == "shape":
        entry["shape"] = data.draw(st.one_of(st.lists(SIZES, max_size=4), JSON_VALUES), label="shape")
    elif what == "swap-shape":  # as many numbers, another shape: the file reads, the model refuses it
        entry["shape"] = list(reversed(entry["shape"])) + data.draw(st.lists(st.just(1), max_size=2), label="ones")
    elif what == "offsets":
        entry["data_offsets"] = data.draw(st.one_of(st.lists(SIZES, min_size=2, max_size=2), JSON_VALUES),
                                          label="offsets")
    else:
        key = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]), label="field")
        if data.draw(st.booleans(), label="delete-field"):
            entry.pop(key, None)
        else:
            entry[data.draw(st.text(max_size=8), label="new-field")] = data.draw(JSON_VALUES, label="value")
    return header


def _write_weights(folder: Path, weights: bytes, data: st.DataObject) -> None:
    """Write damaged weights and record their sha256 in the config (or drop it): the header is read, not just
    found to differ from the sha256 the folder was saved with."""
    (folder / WEIGHTS).write_bytes(weights)
    config = json.loads((folder / CONFIG).read_text())
    if data.draw(st.booleans(), label="drop-sha256"):
        config["vlmshield"].pop("weights_sha256", None)
    else:
        config["vlmshield"]["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    (folder / CONFIG).write_text(json.dumps(config))


@props(100)
@given(data=st.data())
def test_a_damaged_safetensors_header_loads_or_is_refused_in_one_sentence(saved, stop_after_loading, data):
    original = (saved / WEIGHTS).read_bytes()
    header, tensors = _split(original)
    how = data.draw(st.sampled_from(["json", "json", "json", "length", "header-bytes", "truncate"]), label="how")
    if how == "json":
        weights = _join(_damage_header(header, data), tensors, pad=data.draw(st.booleans(), label="pad"))
    elif how == "length":
        size = data.draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, len(original)),
                                   st.sampled_from([0, 1, 7, 8, len(original) - 8, len(original), 2**64 - 1])),
                         label="length")
        weights = struct.pack("<Q", size) + original[8:]
    elif how == "header-bytes":
        end = 8 + struct.unpack("<Q", original[:8])[0]
        start = data.draw(st.integers(8, end - 1), label="at")
        chunk = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
        weights = original[:start] + chunk + original[start + len(chunk):]
    else:
        weights = original[:data.draw(st.integers(0, len(original) - 1), label="keep")]
    with copy_of(saved) as folder:
        _write_weights(folder, weights, data)
        assert_loads_or_refuses(folder)


@props(40)
@given(data=st.data())
def test_damaged_weight_bytes_load_or_are_refused_in_one_sentence(saved, stop_after_loading, data):
    weights = bytearray((saved / WEIGHTS).read_bytes())
    header_end = 8 + struct.unpack("<Q", weights[:8])[0]
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        at = data.draw(st.one_of(st.integers(0, header_end + 64), st.integers(0, len(weights) - 1)), label="at")
        weights[at] = data.draw(st.integers(0, 255), label="byte")
    if data.draw(st.booleans(), label="resize"):
        keep = data.draw(st.integers(0, len(weights) + 64), label="keep")
        weights = weights[:keep] + bytes(max(0, keep - len(weights)))
    with copy_of(saved) as folder:
        _write_weights(folder, bytes(weights), data)
        assert_loads_or_refuses(folder)


# Explicit damage, each a one-sentence refusal (or a model).
CONFIG_EDITS = {
    "embed-dim-word": {"model_cfg": {"embed_dim": "abc"}},
    "embed-dim-negative": {"model_cfg": {"embed_dim": -1}},
    "embed-dim-float": {"model_cfg": {"embed_dim": 128.0}},
    "vision-heads-zero": {"model_cfg": {"vision_cfg": {"head_width": 0}}},
    "text-heads-zero": {"model_cfg": {"text_cfg": {"heads": 0}}},
    "patch-size-zero": {"model_cfg": {"vision_cfg": {"patch_size": 0}}},
    "patch-larger-than-image": {"model_cfg": {"vision_cfg": {"patch_size": 64}}},
    "layers-negative": {"model_cfg": {"vision_cfg": {"layers": -1}}},
    "vision-cfg-list": {"model_cfg": {"vision_cfg": []}},
    "model-cfg-null": {"model_cfg": None},
    "preprocess-null": {"preprocess_cfg": None},
    "preprocess-size-zero": {"preprocess_cfg": {"size": [0, 0]}},
    "preprocess-std-zero": {"preprocess_cfg": {"std": [0, 0, 0]}},
    "preprocess-mean-nan": {"preprocess_cfg": {"mean": [float("nan")] * 3}},
    "vlmshield-list": {"vlmshield": []},
    "vlmshield-name-number": {"vlmshield": {"name": 3}},
    "tokenizer-list": {"vlmshield": {"tokenizer": []}},
    "tokenizer-words-number": {"vlmshield": {"tokenizer": {"words": 3}}},
    "tokenizer-context-zero": {"vlmshield": {"tokenizer": {"context_length": 0}}},
    "tokenizer-type-unknown": {"vlmshield": {"tokenizer": {"type": "bpe"}}},
    "hf-tokenizer-named": {"model_cfg": {"text_cfg": {"hf_tokenizer_name": "org/tok"}}},
}


def _merge(document: dict, edit: dict) -> dict:
    for key, value in edit.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            _merge(document[key], value)
        else:
            document[key] = value
    return document


@pytest.mark.parametrize("edit", list(CONFIG_EDITS.values()), ids=list(CONFIG_EDITS))
def test_explicitly_damaged_configs_load_or_are_refused_in_one_sentence(saved, stop_after_loading, edit):
    with copy_of(saved) as folder:
        config = _merge(json.loads((folder / CONFIG).read_text()), copy.deepcopy(edit))
        (folder / CONFIG).write_text(json.dumps(config))
        assert_loads_or_refuses(folder)


# ------------------------------------------------------------------------------ huge models, last of all
CHILD = textwrap.dedent("""
    import json, resource, shutil, sys, tempfile, time
    from pathlib import Path
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.RLIM_INFINITY))  # never more than 8 GiB
    import vlmshield as vs
    from vlmshield.api import VlmshieldError
    saved, edits = Path(sys.argv[1]), json.loads(sys.argv[2])
    for edit in edits:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "model"
            shutil.copytree(saved, folder)
            config = json.loads((folder / "open_clip_config.json").read_text())
            node = config["model_cfg"]
            *parents, last = edit["path"]
            for key in parents:
                node = node[key]
            node[last] = edit["value"]
            (folder / "open_clip_config.json").write_text(json.dumps(config))
            clock = time.perf_counter()
            try:
                vs.zoo.load(f"local-dir:{folder}")
                outcome = "loaded"
            except VlmshieldError as error:
                outcome = "refused: " + str(error)
            except BaseException as error:
                outcome = f"OTHER {type(error).__name__}: {error}"
            print(json.dumps({"edit": edit, "outcome": outcome, "seconds": round(time.perf_counter() - clock, 2)}),
                  flush=True)
""")

HUGE = {
    "wide": ([{"path": ["vision_cfg", "width"], "value": 32768}, {"path": ["text_cfg", "width"], "value": 65536},
              {"path": ["embed_dim"], "value": 2**40}, {"path": ["text_cfg", "vocab_size"], "value": 10**12},
              {"path": ["vision_cfg", "image_size"], "value": 10**6}], 60),
    "deep": ([{"path": ["vision_cfg", "layers"], "value": 10**6}], 20),
}


@pytest.mark.skipif(sys.platform != "linux", reason="the child's memory limit needs Linux")
@pytest.mark.parametrize("case", list(HUGE), ids=list(HUGE))
def test_a_config_of_a_huge_model_is_refused_without_building_it(saved, case):
    """Run last, in a child process limited to 8 GiB of memory and a time limit: a config that describes a model
    far larger than its weights is refused in one sentence before anything that size is built."""
    edits, seconds = HUGE[case]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    try:
        result = subprocess.run([sys.executable, "-c", CHILD, str(saved), json.dumps(edits)], capture_output=True,
                                text=True, timeout=seconds, env=env)
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"loading took more than {seconds} s (killed): {edits}; it printed {timeout.stdout!r}")
    outcomes = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0 and len(outcomes) == len(edits), result.stderr[-2000:]
    for outcome in outcomes:
        assert outcome["outcome"].startswith("refused: "), outcome
