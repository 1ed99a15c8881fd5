"""Every run is a record: JSON written atomically, with the environment that produced it, and a log of
finished work so that an interrupted run resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from .._version import __version__
from ..core.errors import ParameterError
from ..core.weights import file_mode


def check_destination(out, *, folder: bool) -> Path | None:
    """``out`` as the place a run will write (a record file, or a run's folder when ``folder``), checked
    before any work is done: ParameterError in one sentence when it cannot be written there. None stays None."""
    if out is None:
        return None
    if not str(out).strip():
        raise ParameterError("the output path is empty; give a file (a record) or a folder (a protocol run, a "
                             "training) to write to.")
    path = Path(out)
    if folder and path.exists() and not path.is_dir():
        raise ParameterError(f"{path} is a file; this run writes a folder there: give a folder path.")
    if not folder and path.is_dir():
        raise ParameterError(f"{path} is a folder; the record is a file: give a file name such as {path / 'run.json'}.")
    ancestor = next(p for p in (path, *path.parents) if p.exists())  # "." or "/" at the latest
    if ancestor == path and not folder:
        ancestor = path.parent
    if not ancestor.is_dir():
        raise ParameterError(f"cannot write {path}: {ancestor} is a file, not a folder.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ParameterError(f"cannot write {path}: the folder {ancestor} is not writable.")
    return path


def atomic_write_json(path: str | os.PathLike, data: object) -> Path:
    """Write ``data`` as JSON to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(data, file, indent=2, allow_nan=False)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, file_mode())  # mkstemp makes it private; the user's umask decides
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def fingerprint(config: object) -> str:
    """A short stable hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def git_revision() -> str | None:
    """The commit of the vlmshield source tree when it is a git checkout, else None."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def environment() -> dict:
    """Versions and platform, for the record."""
    import open_clip
    import torch
    import torchvision

    return {
        "vlmshield": __version__,
        "git_revision": git_revision(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class RunLog:
    """Finished pieces of an unfinished run, one JSON line each, in ``OUT.partial`` beside the record
    (``OUT.PART.partial`` for one process's part of a distributed run).

    The first line holds the run's configuration fingerprint; a log from another configuration is
    refused rather than mixed in. A last line cut short by a crash is dropped on reading.
    """

    def __init__(self, out: str | os.PathLike, config_fingerprint: str, part: str = ""):
        out = Path(out)
        self.path = out.with_name(out.name + (f".{part}" if part else "") + ".partial")
        self.done: dict[tuple[str, int], dict] = {}
        entries: list[str] = []
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            try:
                header = json.loads(lines[0]) if lines else {}
            except json.JSONDecodeError:
                header = {}
            if header.get("fingerprint") != config_fingerprint:
                raise ParameterError(
                    f"{self.path} holds an unfinished run with a different configuration; "
                    f"delete it or write the record to another file."
                )
            for line in lines[1:]:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break
                self.done[(entry["key"], entry["index"])] = entry["values"]
                entries.append(line)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w") as file:  # rewritten without any broken tail
            file.write("\n".join([json.dumps({"fingerprint": config_fingerprint}), *entries]) + "\n")
        self._file = open(self.path, "a")

    def get(self, key: str, index: int) -> dict | None:
        return self.done.get((key, index))

    def put(self, key: str, index: int, values: dict) -> None:
        self._file.write(json.dumps({"key": key, "index": index, "values": values}) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done[(key, index)] = values

    def close(self) -> None:
        self._file.close()

    def finish(self) -> None:
        """The record is written: the log is no longer needed."""
        self._file.close()
        self.path.unlink(missing_ok=True)
