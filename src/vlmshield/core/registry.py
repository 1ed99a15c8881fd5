"""Typed registries, filled through the plugin hooks.

A name is lowercase letters and digits in groups joined by ``-`` or ``.`` (``apgd-ce``,
``hpt-gpd-vitb16``). Look-ups are case-insensitive and treat ``_`` as ``-``; aliases resolve to the
name they stand for. Every registration remembers the plugin, distribution and version that made it.
An unknown name that one of the project's method plugins provides says which distribution to install.

Who wins a name: a built-in registration (one of vlmshield's own plugins, loaded first) keeps its names, and
another plugin registering one of them fails that registration. A name that two or more other distributions
claim is *contested*: every claim is kept, and looking the plain name up raises ContestedNameError until the
user chooses, by disabling one distribution (``VLMSHIELD_DISABLE_PLUGINS``) or by asking for the qualified
name ``DIST:NAME`` (``vlmshield-ttc:ttc-aware``). A qualified name works for every registration; DIST is a
distribution (``vlmshield`` for the built-ins) or, failing that, a plugin's name. One distribution registering
a name twice is an error.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import ContestedNameError, PluginError, UnknownNameError, did_you_mean

NAME_PATTERN = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")

#: Registry kinds, in the order they are listed, with the plural used in messages and the CLI.
KINDS = ("model", "attack", "defense", "trainer", "dataset", "evaluator", "protocol", "model-source", "architecture",
         "command")


#: The project's method plugins, by the method part of the names they register: the defense (``fare``)
#: and its zoo models (``fare2-vitl14``, ``hpt-gpd-vitb16``: method, an optional number, then the arch).
PLUGIN_METHODS = {
    "tecoa": "vlmshield-tecoa", "fare": "vlmshield-fare", "pmg-aft": "vlmshield-pmg-aft",
    "hpt-gpd": "vlmshield-hpt-gpd", "hpt": "vlmshield-hpt-gpd", "ttc": "vlmshield-ttc",
    "random-noise": "vlmshield-ttc", "par": "vlmshield-par", "clip-finetune": "vlmshield-par",
    "cleanclip": "vlmshield-cleanclip", "dart": "vlmshield-dart", "dann": "vlmshield-dart", "mdd": "vlmshield-dart",
    "source-only": "vlmshield-dart", "urda": "vlmshield-dart", "uda": "vlmshield-dart",
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


def split_qualified(name: str) -> tuple[str | None, str]:
    """``'DIST:NAME'`` -> ``('DIST', 'NAME')``; a plain name -> ``(None, name)``."""
    qualifier, sep, rest = name.partition(":")
    return (qualifier.strip(), rest) if sep else (None, name)


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
    builtin: bool = False

    @property
    def provider(self) -> str:
        """'plugin (distribution version)' for messages and listings."""
        if self.distribution is None:
            return self.plugin
        return f"{self.plugin} ({self.distribution} {self.version or '?'})"

    @property
    def provenance(self) -> dict:
        """Distribution, version and plugin, as a record lists who provided a component."""
        return {"distribution": self.distribution, "version": self.version, "plugin": self.plugin}

    @property
    def qualifier(self) -> str:
        """What goes before the ':' of this registration's qualified name: its distribution, else its plugin."""
        return self.distribution or self.plugin

    @property
    def origin(self) -> str:
        """'distribution version' (the plugin's name when it has no distribution), to tell claimants apart."""
        if self.distribution is None:
            return self.plugin
        return f"{self.distribution} {self.version or '?'}"

    @property
    def names(self) -> tuple[str, ...]:
        """The name and the aliases."""
        return (self.name, *self.aliases)


def _provider_key(registration: Registration) -> str:
    """Registrations with the same key come from the same provider (distribution, else plugin)."""
    return canonical_name(registration.qualifier)


def _listing(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


class Registry:
    """Name -> Registration for one kind of object; a contested name maps to every claimant."""

    def __init__(self, kind: str):
        self.kind = kind
        self._registrations: list[Registration] = []
        self._claims: dict[str, list[Registration]] = {}  # name or alias -> registrations claiming it

    def add(self, registration: Registration) -> None:
        """Register, or raise PluginError: a bad name, a built-in's name, or a name its provider already has."""
        names = registration.names
        for name in names:
            check_name(self.kind, name)
        if len(set(names)) != len(names):
            raise PluginError(f"{self.kind} {registration.name!r} lists a name twice among its aliases")
        for name in names:
            self._check_free(name, registration)
        self._registrations.append(registration)
        for name in names:
            claimants = self._claims.setdefault(name, [])
            claimants.append(registration)
            claimants.sort(key=_provider_key)  # messages name claimants in the same order whatever the load order

    def _check_free(self, name: str, registration: Registration) -> None:
        """PluginError unless ``name`` is unclaimed or claimed only by other non-built-in providers."""
        for owner in self._claims.get(name, ()):
            if owner.builtin or registration.builtin or _provider_key(owner) == _provider_key(registration):
                raise PluginError(
                    f"{self.kind} name {name!r} from plugin {registration.plugin} is already "
                    f"registered by plugin {owner.plugin}"
                )

    def get(self, name: str) -> Registration:
        """The registration for ``name``, an alias or ``DIST:NAME``; UnknownNameError with suggestions if none,
        ContestedNameError if several distributions claim the plain name."""
        qualifier, bare = split_qualified(name)
        claimants = self._claims.get(canonical_name(bare), [])
        if not claimants:
            hint = plugin_hint(bare) or (f"{did_you_mean(canonical_name(bare), self._claims)}"
                                         f" See `vlmshield list {self.kind}s`.")
            raise UnknownNameError(f"unknown {self.kind} {name!r}.{hint}")
        if qualifier is not None:
            claimants = self._qualified(qualifier, canonical_name(bare), claimants)
        if len(claimants) > 1:
            raise ContestedNameError(self._contested_message(canonical_name(bare), claimants))
        return claimants[0]

    def _qualified(self, qualifier: str, name: str, claimants: list[Registration]) -> list[Registration]:
        """The claimants of ``name`` that ``qualifier`` names; UnknownNameError naming the providers if none."""
        found = _matching(qualifier, claimants)
        if not found:
            choices = " or ".join(repr(f"{r.qualifier}:{name}") for r in claimants)
            raise UnknownNameError(
                f"no plugin distribution {qualifier!r} registers the {self.kind} {name!r}; it comes from "
                f"{_listing([r.origin for r in claimants])}: ask for {choices}."
            )
        return found

    def _contested_message(self, name: str, claimants: list[Registration]) -> str:
        """One sentence naming every claimant of ``name`` and the two ways to choose one."""
        two = len(claimants) == 2
        origins = _listing([r.origin for r in claimants])
        qualified = " or ".join(repr(f"{r.qualifier}:{name}") for r in claimants)
        message = (f"{self.kind} {name!r} is claimed by {'both ' if two else ''}{origins}, so "
                   f"{'neither' if two else 'none'} is used until you choose: ask for {qualified}")
        distributions = [r.distribution for r in claimants if r.distribution]
        if two and distributions:
            message += ", or drop one with " + " or ".join(f"VLMSHIELD_DISABLE_PLUGINS={d}" for d in distributions)
        elif distributions:
            message += (", or drop all but one with VLMSHIELD_DISABLE_PLUGINS (a comma list of "
                        f"{', '.join(distributions)})")
        return message + "."

    def __contains__(self, name: str) -> bool:
        """Whether ``name`` (an alias, ``DIST:NAME``) is registered; a contested plain name is."""
        qualifier, bare = split_qualified(name)
        claimants = self._claims.get(canonical_name(bare), [])
        return bool(claimants if qualifier is None else _matching(qualifier, claimants))

    def holding(self, obj: object) -> Registration | None:
        """The registration whose object is ``obj`` or ``obj``'s class, None when nothing registered it."""
        for registration in self._registrations:
            if registration.obj is obj or registration.obj is type(obj):
                return registration
        return None

    def contested(self) -> dict[str, list[Registration]]:
        """Every name (or alias) claimed by more than one provider, with its claimants."""
        return {name: list(claimants) for name, claimants in sorted(self._claims.items()) if len(claimants) > 1}

    def rivals(self, registration: Registration) -> list[Registration]:
        """The registrations of other providers claiming one of ``registration``'s names."""
        key = _provider_key(registration)
        found = [r for name in registration.names for r in self._claims.get(name, ()) if _provider_key(r) != key]
        return list({id(r): r for r in found}.values())

    def __iter__(self) -> Iterator[Registration]:
        """Every registration once (a contested name once per claimant), by name then provider."""
        return iter(sorted(self._registrations, key=lambda r: (r.name, _provider_key(r))))

    def __len__(self) -> int:
        return len(self._registrations)

    def names(self) -> list[str]:
        """The registered names, sorted; a contested name appears once per claimant."""
        return [r.name for r in self]


def _matching(qualifier: str, claimants: list[Registration]) -> list[Registration]:
    """The claimants from distribution ``qualifier``, else those of the plugin so named."""
    wanted = canonical_name(qualifier)
    by_distribution = [r for r in claimants if r.distribution and canonical_name(r.distribution) == wanted]
    return by_distribution or [r for r in claimants if canonical_name(r.plugin) == wanted]
