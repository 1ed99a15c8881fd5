"""Typed registries, filled through the plugin hooks.

A name is lowercase letters and digits in groups joined by ``-`` or ``.`` (``apgd-ce``,
``hpt-gpd-vitb16``). Look-ups are case-insensitive and treat ``_`` as ``-``; aliases resolve to the
name they stand for. Every registration remembers the plugin, distribution and version that made it.
An unknown name that one of the project's method plugins provides says which distribution to install.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import PluginError, UnknownNameError, did_you_mean

NAME_PATTERN = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")

#: Registry kinds, in the order they are listed, with the plural used in messages and the CLI.
KINDS = ("model", "attack", "defense", "trainer", "dataset", "evaluator", "protocol", "model-source", "command")


#: The project's method plugins, by the method part of the names they register: the defense (``fare``)
#: and its zoo models (``fare2-vitl14``, ``hpt-gpd-vitb16``: method, an optional number, then the arch).
PLUGIN_METHODS = {
    "tecoa": "vlmshield-tecoa", "fare": "vlmshield-fare", "pmg-aft": "vlmshield-pmg-aft",
    "hpt-gpd": "vlmshield-hpt-gpd", "hpt": "vlmshield-hpt-gpd", "ttc": "vlmshield-ttc",
    "random-noise": "vlmshield-ttc",
}


def plugin_hint(name: str) -> str:
    """A sentence saying which plugin distribution provides ``name``, or '' when none is known to."""
    canonical = canonical_name(name)
    for method, distribution in PLUGIN_METHODS.items():
        if re.fullmatch(rf"{re.escape(method)}\d*(-.+)?", canonical):
            try:
                importlib.metadata.distribution(distribution)
            except importlib.metadata.PackageNotFoundError:
                return f" It is provided by the plugin {distribution}: `pip install {distribution}`."
            return (f" It is provided by the plugin {distribution}, which is installed but not loaded: see "
                    f"`vlmshield plugins` for its error, and VLMSHIELD_LOAD_PLUGINS / VLMSHIELD_DISABLE_PLUGINS.")
    return ""


def canonical_name(name: str) -> str:
    """The form a name is looked up under: stripped, lowercase, ``_`` read as ``-``."""
    return name.strip().lower().replace("_", "-")


def check_name(kind: str, name: object) -> str:
    """Return ``name`` if it is a valid registry name, else raise a PluginError saying why."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise PluginError(
            f"invalid {kind} name {name!r}: use lowercase letters and digits joined by '-' or '.'"
        )
    return name


@dataclass(frozen=True)
class Registration:
    """One registered object and where it came from."""

    kind: str
    name: str
    obj: object
    plugin: str
    distribution: str | None = None
    version: str | None = None
    aliases: tuple[str, ...] = field(default=())

    @property
    def provider(self) -> str:
        """'plugin (distribution version)' for messages and listings."""
        if self.distribution is None:
            return self.plugin
        return f"{self.plugin} ({self.distribution} {self.version or '?'})"


class Registry:
    """Name -> Registration for one kind of object."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Registration] = {}
        self._aliases: dict[str, str] = {}

    def add(self, registration: Registration) -> None:
        names = (registration.name, *registration.aliases)
        for name in names:
            check_name(self.kind, name)
        if len(set(names)) != len(names):
            raise PluginError(f"{self.kind} {registration.name!r} lists a name twice among its aliases")
        for name in names:
            owner = self._owner(name)
            if owner is not None:
                raise PluginError(
                    f"{self.kind} name {name!r} from plugin {registration.plugin} is already "
                    f"registered by plugin {owner.plugin}"
                )
        self._entries[registration.name] = registration
        for alias in registration.aliases:
            self._aliases[alias] = registration.name

    def _owner(self, name: str) -> Registration | None:
        return self._entries.get(self._aliases.get(name, name))

    def get(self, name: str) -> Registration:
        """The registration for ``name`` (or an alias); UnknownNameError with suggestions if none."""
        found = self._owner(canonical_name(name))
        if found is None:
            known = [*self._entries, *self._aliases]
            hint = plugin_hint(name) or (f"{did_you_mean(canonical_name(name), known)}"
                                         f" See `vlmshield list {self.kind}s`.")
            raise UnknownNameError(f"unknown {self.kind} {name!r}.{hint}")
        return found

    def __contains__(self, name: str) -> bool:
        return self._owner(canonical_name(name)) is not None

    def __iter__(self) -> Iterator[Registration]:
        return iter(sorted(self._entries.values(), key=lambda r: r.name))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)
