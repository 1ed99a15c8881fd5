"""The Hugging Face Hub: ``hf-hub:org/name[@revision]`` models through the local cache, and ``publish``.

A repo in open_clip's layout (``open_clip_config.json``) is a CLIP; one in timm's (``config.json``, and no
open_clip config) an image classifier, as in a ``local-dir:`` folder.

Files come from ``hf_hub_download`` (``library_name="vlmshield"``), so the Hub's cache, ``HF_HOME``,
``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` behave as everywhere else: a file cached at a pinned revision
loads with no network call. A file that is neither cached nor reachable is one sentence that names the
repo, the file, and how to make it available.
"""

from __future__ import annotations

import re
from contextlib import suppress
from pathlib import Path

from vlmshield._version import __version__
from vlmshield.api import VLM, ImageClassifier, ParameterError, WeightsError, error_summary, read_checked, sha256_file

from . import folder

PREFIX = "hf-hub:"


#: A part of a Hub repository id, as the Hub allows it: letters, digits, ``-``, ``_`` and ``.``, not starting
#: or ending with ``-`` or ``.``, at most 96 characters (so no ``..`` path tricks).
_REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")


def parse(spec: str) -> tuple[str, str | None]:
    """``org/name[@revision]`` -> (repo id, revision or None); ParameterError for anything else."""
    repo, _, revision = spec.partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(_REPO_PART.fullmatch(p) and ".." not in p for p in parts) or "@" in revision:
        raise ParameterError(f"a Hub model is hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION (letters, digits, "
                             f"'-', '_', '.'); got {PREFIX}{spec!r}.")
    return repo, revision or None


def _download(repo: str, revision: str | None, filename: str, cache_dir) -> Path:
    import huggingface_hub  # imported where the Hub is used: the command line starts without it
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    where = f"{repo}@{revision}" if revision else repo
    try:
        return Path(huggingface_hub.hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir,
                                    library_name="vlmshield", library_version=__version__))
    except (LocalEntryNotFoundError, EntryNotFoundError) as error:
        raise WeightsError(
            f"{filename} of {where} is not in the Hugging Face cache and could not be downloaded "
            f"({type(error).__name__}): with network access, unset HF_HUB_OFFLINE; without, copy the repo into "
            f"the cache (HF_HUB_CACHE or cache_dir) at that revision, or load its folder with local-dir:PATH."
        ) from error
    except (HfHubHTTPError, OSError) as error:
        raise WeightsError(f"could not get {filename} of {where} from the Hugging Face Hub "
                           f"({error_summary(error)}).") from error


def _download_either(repo: str, revision: str | None, filenames: tuple[str, str], cache_dir) -> Path:
    """The first of two files the repo has; the error is the first one's."""
    try:
        return _download(repo, revision, filenames[0], cache_dir)
    except WeightsError as missing:
        try:
            return _download(repo, revision, filenames[1], cache_dir)
        except WeightsError:
            raise missing from None


def load(spec: str, device=None, weights: bool = True, cache_dir=None,
         sha256: dict | None = None) -> VLM | ImageClassifier:
    """The model of the Hub repo ``spec`` (``org/name[@revision]``), from the cache when it is there.

    ``sha256`` (file name -> sha256, as a card's ``files``) is checked against the downloaded weights file
    before it is read. The model's ``source`` is ``hf-hub:ORG/NAME@COMMIT``, the commit the files are from.
    """
    repo, revision = parse(spec)
    config = _download_either(repo, revision, (folder.CONFIG, folder.TIMM_CONFIG), cache_dir)
    classifier = config.name == folder.TIMM_CONFIG
    if not classifier and folder.hf_tokenizer_name(folder.read_config(config.parent)["model_cfg"]):
        _download(repo, revision, folder.HF_TOKENIZER_CONFIG, cache_dir)
        for filename in folder.HF_TOKENIZER_FILES[1:]:  # which of the others a tokenizer has depends on its kind
            with suppress(WeightsError):
                _download(repo, revision, filename, cache_dir)
    if weights:  # older repos hold a pickled state dict only, read with weights_only=True
        file = _download_either(repo, revision, (folder.TIMM_WEIGHTS, folder.TIMM_LEGACY_WEIGHTS) if classifier
                                else (folder.WEIGHTS, folder.LEGACY_WEIGHTS), cache_dir)
        if (sha256 or {}).get(file.name):
            read_checked(file, sha256[file.name])
    model = folder.load(config.parent, device=device, weights=weights)
    model.name = PREFIX + spec
    model.source = f"{PREFIX}{repo}@{config.parent.name}"  # the cache keeps a commit's files in snapshots/COMMIT
    return model


def publish(directory, repo_id: str, revision: str | None = None, private: bool = False, create_pr: bool = False,
            dry_run: bool = False, token: str | None = None) -> dict:
    """Upload a model folder to the Hub in one commit (``create_repo``, then ``upload_folder``).

    The weights are checked against the sha256 the folder's config records before anything is sent.
    Returns the repo, the files with their sha256, and (unless ``dry_run``) the commit to pin in a card.
    """
    if not str(directory).strip():
        raise ParameterError("the folder to publish is empty; give the model folder (zoo.save's output).")
    directory = Path(directory)
    if "@" in repo_id:
        raise ParameterError(f"a Hub repo id is ORG/NAME (the branch goes to --revision); got {repo_id!r}.")
    parse(repo_id)
    links = [p for p in sorted(directory.rglob("*")) if p.is_symlink()]
    if links:
        raise ParameterError(f"{links[0]} is a link (to {links[0].resolve()}); publish uploads only the folder's own "
                             f"files, never what a link points to: replace it with the file itself.")
    config, weights_file = folder.read_layout(directory)
    config_file = folder.CONFIG if weights_file == folder.WEIGHTS else folder.TIMM_CONFIG
    section = folder.checked_section(directory / config_file, config)
    recorded, name = section.get("weights_sha256"), section.get("name", directory.name)
    files = [{"path": p.relative_to(directory).as_posix(), "bytes": p.stat().st_size,
              "sha256": read_checked(p, recorded) if p.name == weights_file and recorded else sha256_file(p)}
             for p in sorted(directory.rglob("*")) if p.is_file()]
    result = {"repo_id": repo_id, "name": name, "files": files, "dry_run": dry_run}
    if dry_run:
        return result
    from huggingface_hub import HfApi

    api = HfApi(token=token, library_name="vlmshield", library_version=__version__)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=directory, revision=revision, create_pr=create_pr,
                               commit_message=f"Upload {name} (vlmshield {__version__})")
    return {**result, "revision": commit.oid, "commit_url": commit.commit_url, "pr_url": commit.pr_url}
