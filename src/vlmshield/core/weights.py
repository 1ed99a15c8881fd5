"""Weight files: safetensors only for what vlmshield writes, each checked against its sha256.

``write_weights`` writes atomically (a temporary file, then a rename) with string metadata in the
safetensors header (provenance: method, recipe, seed, ...). ``read_weights`` checks the file's sha256
before it parses anything and turns every problem (missing, truncated, tampered) into one sentence.
The same weights and metadata always give the same bytes, hence the same sha256.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import VlmshieldError, error_summary


class WeightsError(VlmshieldError):
    """A weight file that is missing, corrupt, tampered with, or does not fit its architecture."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sort_metadata(path: str | os.PathLike) -> None:
    """Sort the header's metadata in place: safetensors writes that map in hash order, which would give
    the same weights a different sha256 in every process."""
    with open(path, "r+b") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(size))
        if "__metadata__" not in header:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) <= size:  # the header keeps its length; safetensors pads it with spaces
            handle.seek(8)
            handle.write(text.ljust(size))


def file_mode() -> int:
    """The permissions a new file gets under the user's umask (``0o666 & ~umask``): what ``open`` would give
    it, for files first written under a private temporary name (``mkstemp`` makes them 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_weights(path: str | os.PathLike, state: dict[str, torch.Tensor], metadata: dict | None = None) -> str:
    """Write ``state`` to ``path`` (safetensors) atomically; returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state.items()}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={k: str(v) for k, v in (metadata or {}).items()})
        _sort_metadata(temporary)
        os.chmod(temporary, file_mode())  # mkstemp makes it private; the user's umask decides
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return sha256_file(path)


def read_checked(path: str | os.PathLike, sha256: str | None) -> str | None:
    """Check that ``path`` exists and, when ``sha256`` is given, has that sha256 (then returned; a file with
    no recorded sha256 is not hashed); else one sentence."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist.")
    if sha256 is None:
        return None
    actual = sha256_file(path)
    if actual != sha256:
        raise WeightsError(f"weight file {path} has sha256 {actual[:12]}..., not the {sha256[:12]}... recorded "
                           f"for it: it is corrupt or was modified; reinstall or re-download it.")
    return actual


def read_weights(path: str | os.PathLike, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, after checking its sha256 when one is given."""
    read_checked(path, sha256)
    path = Path(path)
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"weight file {path} is not a readable safetensors file ({error}).") from error


#: The longest header safetensors itself reads (100 MB); a file that claims more is not a safetensors file.
MAX_HEADER_BYTES = 100_000_000


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, data offsets, and the
    ``__metadata__``), read without reading any tensor; a malformed header is one WeightsError sentence."""
    path = Path(path)
    try:
        header, problem = _parse_header(path)
    except (OSError, struct.error, ValueError, RecursionError) as error:  # JSON and UTF-8 errors are ValueErrors
        header, problem = None, error_summary(error)
    if problem:
        raise WeightsError(f"weight file {path} has no readable safetensors header ({problem}).")
    return header


def _parse_header(path: Path) -> tuple[dict | None, str | None]:
    """(header, None), or (None, what is wrong with it): an 8-byte little-endian length, then that much JSON."""
    file_size = path.stat().st_size
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        if size > min(MAX_HEADER_BYTES, file_size - 8):
            return None, f"it claims a header of {size} bytes in a file of {file_size}"
        header = json.loads(handle.read(size))
    if not isinstance(header, dict):
        return None, "its header is not a JSON object"
    bad = next((name for name, entry in header.items() if name != "__metadata__" and not _is_tensor_entry(entry)),
               None)
    return (None, f"the header's entry for {bad!r} has no valid shape") if bad is not None else (header, None)


def _is_tensor_entry(entry: object) -> bool:
    """Whether a header entry describes a tensor: a dict whose shape is a list of non-negative integers."""
    shape = entry.get("shape") if isinstance(entry, dict) else None
    return isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)


def header_parameter_count(path: str | os.PathLike) -> int:
    """How many numbers the tensors of a safetensors file hold, from its header alone."""
    header = read_header(path)
    return sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")


#: Keys under which known trainers nest a state dict: PyTorch Lightning and many scripts use
#: ``state_dict``; TeCoA's checkpoints hold the image tower under ``vision_encoder_state_dict``.
NESTED_KEYS = ("state_dict", "vision_encoder_state_dict")


def read_legacy_weights(path: str | os.PathLike, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict of a legacy PyTorch file (``.bin``, ``.pt``), read with ``weights_only=True``: a file
    that needs anything but tensors to unpickle (code, arbitrary objects) is refused, never executed."""
    read_checked(path, sha256)
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for foreign objects, RuntimeError/EOFError for truncation
        raise WeightsError(f"weight file {path} was refused: it is truncated, or holds more than tensors "
                           f"({type(error).__name__}); only plain state dicts are read.") from error
    for key in NESTED_KEYS:  # trainers that wrap the state dict in a dict of their own
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weight file {path} holds no state dict of tensors.")
    return state


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Strict ``load_state_dict`` (cast to the module's dtypes) with a one-sentence error."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        problems = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                    f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                    f"{len(wrong)} of the wrong shape (e.g. {wrong[0]})" if wrong else ""]
        listed = ", ".join(p for p in problems if p)
        raise WeightsError(f"{what} does not fit its architecture: {listed} tensors.")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def resume_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, path) -> None:
    """Restore a training checkpoint's model and optimizer, or say in one sentence that it does not fit."""
    load_state(module, state["model"], what=f"checkpoint {path}")
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as error:  # parameter groups of another size: another version of the model
        raise WeightsError(f"checkpoint {path} holds the optimizer of another version of the model "
                           f"({error}); use another output folder, or delete it to start over.") from error
