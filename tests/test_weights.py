"""Weight files: deterministic bytes, sha256 checks, one-sentence errors, strict loading."""

import pytest
import torch

from vlmshield.core.weights import WeightsError, load_state, read_weights, write_weights


def _state():
    layer = torch.nn.Linear(4, 3)
    return layer, {k: v.detach().clone() for k, v in layer.state_dict().items()}


def test_same_weights_and_metadata_give_the_same_bytes(tmp_path):
    _, state = _state()
    metadata = {f"key{i}": f"value {i}" for i in range(8)}  # safetensors would write these in hash order
    digests = {write_weights(tmp_path / f"w{i}.safetensors", state, metadata) for i in range(5)}
    assert len(digests) == 1
    read = read_weights(tmp_path / "w0.safetensors", digests.pop())
    assert all(torch.equal(read[k], state[k]) for k in state)


def test_tampered_truncated_and_missing_files_are_refused(tmp_path):
    _, state = _state()
    path = tmp_path / "w.safetensors"
    sha = write_weights(path, state, {"name": "w"})
    data = path.read_bytes()
    path.write_bytes(data[:-4] + bytes(4))
    with pytest.raises(WeightsError, match="sha256"):
        read_weights(path, sha)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        read_weights(path)
    with pytest.raises(WeightsError, match="does not exist"):
        read_weights(tmp_path / "absent.safetensors")


def test_load_state_is_strict_and_names_the_problem():
    layer, state = _state()
    load_state(layer, {k: v.half() for k, v in state.items()}, what="w")  # cast to the module's dtype
    assert layer.weight.dtype == torch.float32
    with pytest.raises(WeightsError, match=r"1 missing \(e.g. bias\)"):
        load_state(layer, {"weight": state["weight"]}, what="w")
    with pytest.raises(WeightsError, match="wrong shape"):
        load_state(layer, {"weight": torch.zeros(2, 2), "bias": state["bias"]}, what="w")
