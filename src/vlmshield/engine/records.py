"""Every run is a record: JSON written atomically, with the environment that produced it, and a log of
finished work so that an interrupted run resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._version import __version__
from ..core.errors import ParameterError
from ..core.identity import describe_identity, same_model
from ..core.weights import file_mode


def check_destination(out, *, folder: bool) -> Path | None:
    """``out`` as the place a run will write (a record file, or a run's folder when ``folder``), checked
    before any work is done, its folder created: ParameterError in one sentence when it cannot be written
    there. None stays None."""
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
    try:  # some folders refuse what access() allows (/proc, a full or read-only mount)
        (path if folder else path.parent).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ParameterError(f"cannot write {path}: {error.strerror or error} ({ancestor} refuses it).") from None
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


def check_overwrite(path: str | os.PathLike, config_fingerprint: str, overwrite: bool = False) -> None:
    """Refuse, in one sentence, to replace a finished record at ``path`` that another configuration wrote
    (another model, attack, dataset, ...) unless ``overwrite``; a record of the same configuration is
    simply written again."""
    path = Path(path)
    if overwrite or not path.is_file():
        return
    try:
        existing = json.loads(path.read_text())
    except (ValueError, OSError):
        existing = None
    if not isinstance(existing, dict) or "record" not in existing:
        raise ParameterError(f"{path} exists and is not a vlmshield record; write to another file, or pass "
                             f"--overwrite (overwrite=True) to replace it.")
    if existing.get("fingerprint") == config_fingerprint:
        return
    model = existing.get("model") or {}
    raise ParameterError(f"{path} holds a finished record of another configuration (model "
                         f"{model.get('name', '?')}); write to another file, or pass --overwrite (overwrite=True) to "
                         f"replace it.")


def remove_leftovers(path: str | os.PathLike) -> None:
    """Delete the temporary files a run killed while writing ``path`` left beside it."""
    path = Path(path)
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
    path.with_name(path.name + ".tmp").unlink(missing_ok=True)


_held: set[Path] = set()


def lock(handle, what: str) -> None:
    """Take the exclusive lock of an open file for this process; ParameterError in one sentence when another
    process holds it (another run writing the same output)."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise ParameterError(f"{what} is in use by another run that is still going; wait for it to finish, or "
                             f"write to another place.") from None


@contextmanager
def locked_folder(folder: str | os.PathLike) -> Iterator[None]:
    """Hold ``FOLDER/.lock`` while the block runs, so that two runs never write into one folder (a second one
    is refused in one sentence); re-entrant within a process."""
    path = Path(folder).resolve() / ".lock"
    if path in _held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        lock(handle, str(Path(folder)))
        _held.add(path)
        try:
            yield
        finally:
            _held.discard(path)


class RunLog:
    """Finished pieces of an unfinished run, one JSON line each, in ``OUT.partial`` beside the record
    (``OUT.PART.partial`` for one process's part of a distributed run).

    The first line holds the run's configuration fingerprint and the model's identity; a log from another
    configuration is refused rather than mixed in (naming the other model when that is what differs). A
    last line cut short by a crash is dropped on reading. Each piece records the run's seconds so far, so a
    resumed run knows the time of its earlier parts (``elapsed_before``, ``resumed``). The log is locked
    while it is open: a second run writing the same record is refused, and temporary files an earlier run
    left while writing the record are removed.
    """

    def __init__(self, out: str | os.PathLike, config_fingerprint: str, part: str = "", model: dict | None = None):
        out = Path(out)
        self.path = out.with_name(out.name + (f".{part}" if part else "") + ".partial")
        self.done: dict[tuple[str, int], dict] = {}
        self.elapsed_before = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            lock(self._file, str(out))
            self._file.seek(0)
            entries = self._read(self._file.read().splitlines(), config_fingerprint, model)
        except BaseException:
            self._file.close()
            raise
        remove_leftovers(out)
        self.resumed = bool(entries)
        self._file.seek(0)
        self._file.truncate()  # rewritten without any broken tail
        header = {"fingerprint": config_fingerprint, **({"model": model} if model else {})}
        self._file.write("\n".join([json.dumps(header), *entries]) + "\n")
        self._file.flush()
        self._clock = time.perf_counter()

    def _read(self, lines: list[str], config_fingerprint: str, model: dict | None) -> list[str]:
        if not lines:
            return []
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            header = {}
        if header.get("fingerprint") != config_fingerprint:
            other = header.get("model")
            if model and other and not same_model(other, model):
                raise ParameterError(f"{self.path} holds an unfinished run of another model, "
                                     f"{describe_identity(other)}, not {describe_identity(model)}; delete it or "
                                     f"write the record to another file.")
            raise ParameterError(f"{self.path} holds an unfinished run with a different configuration; "
                                 f"delete it or write the record to another file.")
        entries = []
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            self.done[(entry["key"], entry["index"])] = entry["values"]
            self.elapsed_before = max(self.elapsed_before, entry.get("elapsed_s", 0.0))
            entries.append(line)
        return entries

    def elapsed(self) -> float:
        """Seconds of the run so far: its earlier parts' (up to their last finished piece) and this one's."""
        return self.elapsed_before + time.perf_counter() - self._clock

    def get(self, key: str, index: int) -> dict | None:
        return self.done.get((key, index))

    def put(self, key: str, index: int, values: dict) -> None:
        entry = {"key": key, "index": index, "values": values, "elapsed_s": round(self.elapsed(), 3)}
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done[(key, index)] = values

    def close(self) -> None:
        self._file.close()

    def finish(self) -> None:
        """The record is written: the log is no longer needed."""
        self.path.unlink(missing_ok=True)
        self._file.close()
