"""``vlmshield new-plugin NAME --kind KIND``: a plugin distribution to start from, that installs and passes its
tests as written.

It writes ``vlmshield-NAME/``: a ``pyproject.toml`` with the ``vlmshield`` entry point and the range of vlmshield
releases it is written for, ``src/vlmshield_NAME/plugin.py`` with a working registration of the kind (an
attack: momentum iterative FGSM; a defense: bit-depth reduction with its adaptive attack named; an evaluator:
top-k accuracy; a dataset: class folders; a trainer: Gaussian-noise fine-tuning and its method; a model: a
packaged zoo entry with its weights in the package), tests that run the conformance checks and the
registration's own behaviour, and a README with the card fields to fill in.

The files are ``templates/common`` overlaid by ``templates/KIND``, with ``$name``, ``$dist``, ``$package``,
``$Class``, ``$entry``, ``$summary``, ``$usage`` and ``$vlmshield_range`` substituted (``PACKAGE`` in a path is
the import package); ``summary.txt`` and ``usage.md`` of a kind fill ``$summary`` and ``$usage``.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from vlmshield.api import ParameterError

from ..._version import __version__

KINDS = ("attack", "defense", "evaluator", "dataset", "trainer", "model")
TEMPLATES = Path(__file__).parent / "templates"
#: The files of a kind that fill the others instead of being written.
FILLERS = {"summary": "summary.txt.tmpl", "usage": "usage.md.tmpl"}
#: A plugin name: lower-case words of letters and digits joined by hyphens, starting with a letter.
NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def compatible_range(version: str = __version__) -> str:
    """The vlmshield releases a plugin written against ``version`` runs on: the same minor series."""
    major, minor = (int(part) for part in version.split(".")[:2])
    return f">={major}.{minor},<{major}.{minor + 1}"


def substitutions(name: str) -> dict[str, str]:
    """What the templates' placeholders stand for, for the plugin ``name`` (``vlmshield-`` prefix optional)."""
    name = name.removeprefix("vlmshield-")
    if not NAME.fullmatch(name):
        raise ParameterError(f"a plugin name is lower-case words of letters and digits joined by hyphens, "
                             f"starting with a letter (as 'jpeg' or 'my-attack'); got {name!r}.")
    dist = f"vlmshield-{name}"
    return {"name": name, "dist": dist, "package": dist.replace("-", "_"), "entry": name.replace("-", "_"),
            "Class": "".join(part.capitalize() for part in name.split("-")), "vlmshield_range": compatible_range()}


def new_plugin(name: str, kind: str, out=None) -> Path:
    """Write the plugin distribution ``vlmshield-NAME`` of ``kind`` into ``out`` (default ``./vlmshield-NAME``),
    which must be new or empty; returns it."""
    if kind not in KINDS:
        raise ParameterError(f"the kind is one of {', '.join(KINDS)}; got {kind!r}.")
    values = substitutions(name)
    out = Path(out if out is not None else values["dist"])
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ParameterError(f"{out} already exists and is not an empty folder; choose another with --out.")
    kind_dir = TEMPLATES / kind
    for key, filename in FILLERS.items():
        values[key] = Template((kind_dir / filename).read_text()).substitute(values).strip()
    files = {path.relative_to(folder): path for folder in (TEMPLATES / "common", kind_dir)
             for path in sorted(folder.rglob("*.tmpl")) if path.name not in FILLERS.values()}
    for relative, template in sorted(files.items()):
        target = out / str(relative.with_suffix("")).replace("PACKAGE", values["package"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(template.read_text()).substitute(values))
    if kind == "model":
        _package_starting_weights(values, out / "src" / values["package"] / "weights")
    return out


def _package_starting_weights(values: dict, weights) -> None:
    """The world's ``clip-tinyvit4`` packaged under the plugin's name: weights to replace with the author's."""
    from vlmshield.api import export_packaged, zoo

    base = "clip-tinyvit4"
    export_packaged(zoo.load(base), values["name"], weights, {
        "arch": "tinyvit4", "base_model": base, "method": "none", "training_data": "world-pretrain",
        "description": f"A copy of the world's {base}, packaged by `vlmshield new-plugin` as a starting point: "
                       f"replace it with the model {values['dist']} publishes."})
