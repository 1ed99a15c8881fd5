"""The plugin manager: built-in plugins, entry points, one registry per kind, and isolation.

vlmshield loads its built-in plugins (the standard attacks, datasets, evaluators and base models) and
then every entry point in the group ``vlmshield``, each in its own try/except: a plugin that fails to
import, raises in a hook, or registers something invalid is recorded with its error (``vlmshield
plugins`` shows it) and everything else keeps working.

A plugin's distribution declares the versions of vlmshield it was written for (its requirement on
``vlmshield``, ``vlmshield>=0.1,<0.2``); a plugin that excludes the installed version is not loaded, and its
error names both versions. A name no registry knows is reported with the plugins that failed, since one of
them may be the provider.

The built-ins keep their names: a plugin registering one fails that registration. A name that two or more
other distributions register is contested: both registrations are kept, neither plugin counts as failed,
and the plain name raises ContestedNameError until the user disables one distribution or asks for
``DIST:NAME`` (see ``registry``). ``vlmshield plugins`` lists each plugin's contested names, and the
process-wide host warns once about them.

Environment:

- ``VLMSHIELD_LOAD_PLUGINS``: comma list of distribution names to load; empty loads none. Unset loads all.
- ``VLMSHIELD_DISABLE_PLUGINS``: comma list of distribution or entry-point names never to load.
- ``VLMSHIELD_STRICT_PLUGINS=1``: any plugin error is fatal (for plugin development and CI).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import pluggy

from . import hookspecs
from .command import Command
from .errors import ContestedNameError, PluginError, UnknownNameError
from .registry import KINDS, Registration, Registry, canonical_name

ENTRY_POINT_GROUP = "vlmshield"
BUILTIN_PLUGINS = (
    "vlmshield.attacks", "vlmshield.datasets", "vlmshield.evaluators", "vlmshield.protocols", "vlmshield.trainers",
    "vlmshield.zoo.plugin", "vlmshield.world.plugin", "vlmshield.cli.commands",
)
HOOKS = {kind: f"register_{kind.replace('-', '_')}s" for kind in KINDS}


class PluginWarning(UserWarning):
    """A plugin failed to load, or plugins claim the same name; the rest of vlmshield works."""


@dataclass
class PluginInfo:
    """What ``vlmshield plugins`` shows about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: The traceback of each error that was an exception (``vlmshield plugins --debug`` prints them).
    tracebacks: list[str] = field(default_factory=list)
    contested: dict[str, list[str]] = field(default_factory=dict)  # kind -> names another distribution claims too

    def to_dict(self) -> dict:
        return asdict(self)


def _validate(kind: str, obj: object) -> str:
    """The name ``obj`` registers under, or PluginError saying why it cannot be a ``kind``."""
    from .attack import Attack, BackdoorAttack
    from .card import ModelCard, ModelSource
    from .classifier import Architecture
    from .data import DatasetEntry
    from .defense import Defense
    from .evaluator import Evaluator
    from .protocol import Protocol
    from .trainer import Trainer

    expected = {"attack": (Attack, BackdoorAttack), "defense": (Defense,), "evaluator": (Evaluator,),
                "trainer": (Trainer,)}
    instances = {"dataset": DatasetEntry, "model": ModelCard, "protocol": Protocol, "command": Command,
                 "model-source": ModelSource, "architecture": Architecture}
    if kind in expected:
        if not (isinstance(obj, type) and issubclass(obj, expected[kind])):
            names = " or ".join(t.__name__ for t in expected[kind])
            raise PluginError(f"registered {obj!r} as {kind}; expected a subclass of {names}")
        obj.check_class()
    elif not isinstance(obj, instances[kind]):
        raise PluginError(f"registered {obj!r} as {kind}; expected a {instances[kind].__name__}")
    return obj.name


def _installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (as every plugin's is read), None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def incompatibility(distribution: importlib.metadata.Distribution, version: str | None) -> str | None:
    """Why a plugin's distribution cannot run on vlmshield ``version`` (its requirement on vlmshield excludes
    it), or None."""
    from packaging.requirements import InvalidRequirement, Requirement

    if version is None:
        return None
    for line in distribution.requires or ():
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if canonical_name(requirement.name) != "vlmshield" or (requirement.marker is not None
                                                                and "extra" in str(requirement.marker)):
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            return (f"was written for vlmshield {requirement.specifier} and this is vlmshield {version}: install a "
                    f"version of {distribution.metadata['Name']} made for it (or a vlmshield it accepts)")
    return None


def _env_names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {canonical_name(n) for n in value.split(",") if n.strip()}


class PluginHost:
    """A plugin manager with its plugins loaded and its registries filled."""

    def __init__(self, plugins=(), *, builtins: bool = True, entry_points: bool = True,
                 strict: bool = False, allow: set[str] | None = None, block: set[str] = frozenset()):
        self.strict = strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.registries = {kind: Registry(kind) for kind in KINDS}
        self.version = _installed_version("vlmshield")
        if builtins:
            for module in BUILTIN_PLUGINS:
                self._add(lambda m=module: importlib.import_module(m),
                          PluginInfo(module, "vlmshield", self.version, builtin=True))
        for plugin in plugins:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            self._add(lambda p=plugin: p, PluginInfo(name))
        if entry_points:
            self._load_entry_points(allow, block)
        self._collect()
        self._note_contested()

    @classmethod
    def from_environment(cls) -> PluginHost:
        strict = os.environ.get("VLMSHIELD_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")
        return cls(strict=strict, allow=_env_names("VLMSHIELD_LOAD_PLUGINS"),
                   block=_env_names("VLMSHIELD_DISABLE_PLUGINS") or set())

    # ------------------------------------------------------------------ loading
    def _fail(self, info: PluginInfo, message: str, error: BaseException | None = None) -> None:
        info.errors.append(message)
        if error is not None:
            info.tracebacks.append("".join(traceback.format_exception(error)))
        if self.strict:
            raise PluginError(f"plugin {info.name}: {message} (VLMSHIELD_STRICT_PLUGINS is set)") from error

    def _add(self, load: Callable[[], object], info: PluginInfo) -> None:
        if info.name in self.infos:
            info.name = f"{info.name}#{len(self.infos)}"
        self.infos[info.name] = info
        try:
            plugin = load()
            self.pm.register(plugin, name=info.name)
        except (Exception, SystemExit) as error:  # a plugin's sys.exit() is its failure, not the program's end
            self._fail(info, f"failed to load: {type(error).__name__}: {error}", error)
            return
        callers = self.pm.get_hookcallers(plugin) or []
        info.hooks = sorted(caller.name for caller in callers)
        for caller in callers:
            if caller.spec is None:
                self._fail(info, f"implements {caller.name}, which is not a vlmshield hook")

    def _load_entry_points(self, allow: set[str] | None, block: set[str]) -> None:
        seen = set()
        for dist in importlib.metadata.distributions():
            dist_name = dist.metadata["Name"] or "?"
            canonical = canonical_name(dist_name)
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP or (canonical, ep.name) in seen:
                    continue
                seen.add((canonical, ep.name))
                if allow is not None and canonical not in allow:
                    continue
                if canonical in block or canonical_name(ep.name) in block:
                    continue
                problem = incompatibility(dist, self.version)
                if problem:
                    info = PluginInfo(ep.name, dist_name, dist.version)
                    self.infos[ep.name] = info
                    self._fail(info, problem)
                    continue
                self._add(ep.load, PluginInfo(ep.name, dist_name, dist.version))
        known = {name for pair in seen for name in (pair[0], canonical_name(pair[1]))}
        for variable, names in (("VLMSHIELD_LOAD_PLUGINS", allow or set()), ("VLMSHIELD_DISABLE_PLUGINS", block)):
            for name in sorted(names - known):
                warnings.warn(f"{variable} names {name!r}, but no installed vlmshield plugin (distribution or entry "
                              f"point) has that name; check the spelling (`vlmshield plugins` lists them).",
                              PluginWarning, stacklevel=4)

    def _collect(self) -> None:
        """Call every plugin's hooks one at a time; keep what validates, report the rest."""
        for kind, hook_name in HOOKS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                info = self.infos[impl.plugin_name]
                pending: list[tuple[object, tuple[str, ...]]] = []

                def register(*objs, aliases=(), _pending=pending):
                    aliases = (aliases,) if isinstance(aliases, str) else tuple(aliases)
                    if not objs:
                        raise PluginError("register() needs at least one object")
                    if aliases and len(objs) > 1:
                        raise PluginError(f"aliases name one object: register(obj, aliases=...) it alone, not "
                                          f"beside {len(objs) - 1} other(s)")
                    _pending.extend((obj, aliases) for obj in objs)

                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except (Exception, SystemExit) as error:  # the whole hook is dropped, not half of it
                    self._fail(info, f"{hook_name} raised {type(error).__name__}: {error}", error)
                    continue
                for obj, aliases in pending:
                    try:
                        name = _validate(kind, obj)
                        self.registries[kind].add(Registration(
                            kind, name, obj, info.name, info.distribution, info.version, aliases, info.builtin))
                    except PluginError as error:
                        self._fail(info, str(error), error)
                        continue
                    info.registered.setdefault(kind, []).append(name)

    def _note_contested(self) -> None:
        """Record on each plugin the names it claims that another distribution claims too."""
        for kind, registry in self.registries.items():
            for name, claimants in registry.contested().items():
                for registration in claimants:
                    self.infos[registration.plugin].contested.setdefault(kind, []).append(name)

    # ------------------------------------------------------------------ queries
    def get(self, kind: str, name: str) -> Registration:
        """The registration of ``name`` among ``kind``s; UnknownNameError with suggestions if none, naming the
        plugins that failed (one of them may be its provider)."""
        try:
            return self.registries[kind].get(name)
        except ContestedNameError:
            raise
        except UnknownNameError as error:
            failed = [info for info in self.infos.values() if info.errors]
            if not failed:
                raise
            named = "; ".join(f"{info.name} ({info.distribution or 'in-process'} {info.version or ''}".rstrip()
                              + f"): {info.errors[0]}" for info in failed)
            raise UnknownNameError(f"{error} Plugins that failed, one of which may provide it: {named}.") from None

    def create(self, kind: str, name: str, **params):
        """An instance of the registered ``kind`` class ``name`` (an attack, defense or evaluator)."""
        return self.get(kind, name).obj.create(**params)

    def plugins(self) -> list[PluginInfo]:
        return list(self.infos.values())

    def provider_of(self, kind: str, obj) -> dict:
        """Who registered ``obj`` (a registered object, an instance of a registered class, or a name) as a
        ``kind``: distribution, version and plugin, each None when nothing registered it."""
        registry = self.registries[kind]
        if isinstance(obj, str):
            registration = registry.get(obj) if obj in registry else None
        else:
            registration = registry.holding(obj)
        if registration is None:
            return {"distribution": None, "version": None, "plugin": None}
        return registration.provenance

    def loaded_plugins(self) -> list[dict]:
        """Name, distribution and version of every plugin that loaded without errors, by distribution then name."""
        loaded = sorted((info for info in self.infos.values() if not info.errors),
                        key=lambda info: (info.distribution or "", info.name))
        return [{"name": info.name, "distribution": info.distribution, "version": info.version} for info in loaded]

    def contested_note(self) -> str:
        """Every contested name and who claims it ("defense 'x' (a 1.0 and b 2.0), ..."), or ''."""
        return ", ".join(f"{kind} {name!r} ({' and '.join(r.origin for r in claimants)})"
                         for kind, registry in self.registries.items()
                         for name, claimants in registry.contested().items())


_host: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, created on first use from the environment."""
    global _host
    if _host is None:
        _host = PluginHost.from_environment()
        failed = [info.name for info in _host.infos.values() if info.errors]
        if failed:
            warnings.warn(f"plugin(s) {', '.join(failed)} failed to load; see `vlmshield plugins`",
                          PluginWarning, stacklevel=2)
        contested = _host.contested_note()
        if contested:
            warnings.warn(f"plugin names claimed by more than one distribution stay unused until you choose "
                          f"(`vlmshield info NAME` says how): {contested}", PluginWarning, stacklevel=2)
    return _host


def reset_host() -> None:
    """Forget the process-wide host; the next use reloads plugins from the environment."""
    global _host
    _host = None


@contextmanager
def temporary_host(*plugins, builtins: bool = True, entry_points: bool = False,
                   strict: bool = False) -> Iterator[PluginHost]:
    """Use a host with exactly these extra plugins for the duration (tests, notebooks)."""
    global _host
    saved = _host
    _host = PluginHost(plugins, builtins=builtins, entry_points=entry_points, strict=strict)
    try:
        yield _host
    finally:
        _host = saved


def plugins() -> list[dict]:
    """What is loaded: one dict per plugin (name, distribution, version, hooks, registered, errors)."""
    return [info.to_dict() for info in get_host().plugins()]
