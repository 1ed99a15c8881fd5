"""The import graph: the contract, the engines and the plugins depend on each other in one direction.

Every module under ``src/vlmshield`` and ``plugins/*/src`` is parsed with ``ast`` (nothing is imported),
and every import statement counts, those inside functions included:

- ``vlmshield.core`` (the contract) imports nothing of vlmshield outside ``core``;
- ``vlmshield.engine`` imports ``core`` and itself only;
- the built-in plugins (``attacks``, ``datasets``, ``evaluators``, ``protocols``, ``trainers``, ``zoo``,
  ``world``, ``cli``) and the method plugins import vlmshield through ``vlmshield.api`` only, besides
  their own package;
- the top-level parts import each other without a cycle once the api is read as the facade it is: its
  re-exports of built-in plugins' names (the trainers' method bases, the zoo's packaging) are not
  dependencies of the api's own;
- no module imports a private name (``from x import _name``) of another module.

``vlmshield._version`` imports nothing of vlmshield; any part but the contract may import it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "vlmshield"
#: Parts of vlmshield that register through the hooks as third-party plugins do.
BUILTIN_PLUGINS = ("attacks", "datasets", "evaluators", "protocols", "trainers", "zoo", "world", "cli")
#: Modules that import nothing of vlmshield, which every part but the contract may import.
LEAVES = ("vlmshield._version",)



@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module imported (for ``from x import name``: x.name when that is a module, else x)
    name: str  # the name imported from ``target`` ('' for ``import x``)
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}" + (f" ({self.name})" if self.name else "")


def _module_files() -> dict[str, Path]:
    """Module name -> file, for vlmshield and every method plugin's package."""
    roots = [ROOT / "src", *sorted(ROOT.glob("plugins/*/src"))]
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _module_files()


def _imports(module: str, path: Path) -> list[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, "", node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append(Import(module, submodule if submodule in MODULES else base, alias.name, node.lineno))
    return found


def of_vlmshield(module: str) -> bool:
    """Whether ``module`` is vlmshield's (``vlmshield_fare`` is not: it is a method plugin's)."""
    return module == PACKAGE or module.startswith(f"{PACKAGE}.")


IMPORTS = [i for module, path in MODULES.items() for i in _imports(module, path)]
OURS = [i for i in IMPORTS if of_vlmshield(i.target)]


def part(module: str) -> str:
    """The top-level part a module belongs to: ``core``, ``world``, ``api``, ... (``vlmshield`` for the
    package itself), or the method plugin's package (``vlmshield_fare``)."""
    if module == PACKAGE:
        return PACKAGE
    if of_vlmshield(module):
        return module.split(".")[1]
    return module.split(".")[0]


def _inside(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(f"{prefix}.")


def _violations(allowed) -> list[Import]:
    return [i for i in OURS if not allowed(i)]


def test_the_scan_sees_the_whole_tree():
    assert {"vlmshield.core.plugins", "vlmshield.api", "vlmshield.engine.training", "vlmshield.world.models",
            "vlmshield_fare.plugin", "vlmshield_ttc.ttc"} <= set(MODULES)
    assert any(i.module == "vlmshield.world.commands" and i.target == "vlmshield.world.pretrain" for i in OURS), \
        "imports inside functions count"


def test_the_contract_imports_nothing_outside_itself():
    bad = _violations(lambda i: part(i.module) != "core" or _inside(i.target, f"{PACKAGE}.core"))
    assert not bad, "vlmshield.core must import only vlmshield.core:\n" + "\n".join(map(str, bad))


def test_the_engines_import_only_the_contract():
    bad = _violations(lambda i: part(i.module) != "engine" or i.target in LEAVES
                      or any(_inside(i.target, f"{PACKAGE}.{p}") for p in ("core", "engine")))
    assert not bad, "vlmshield.engine must import only vlmshield.core:\n" + "\n".join(map(str, bad))


def _plugin_may_import(i: Import) -> bool:
    owner = part(i.module)
    if owner in BUILTIN_PLUGINS:
        own = f"{PACKAGE}.{owner}"
    elif not of_vlmshield(i.module):  # a method plugin
        own = owner
    else:
        return True  # the contract, the engines, the api, testing: the other tests' business
    return i.target == f"{PACKAGE}.api" or i.target in LEAVES or _inside(i.target, own)


def test_plugins_import_vlmshield_through_the_api_only():
    bad = _violations(_plugin_may_import)
    assert not bad, ("a plugin (built in or not) imports vlmshield through vlmshield.api only:\n"
                     + "\n".join(map(str, bad)))


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return path[path.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_parts_import_each_other_without_a_cycle():
    graph: dict[str, set[str]] = {}
    for i in OURS:
        source, target = part(i.module), part(i.target)
        if source == target or (source == "api" and target in BUILTIN_PLUGINS):  # the facade's re-exports
            continue
        graph.setdefault(source, set()).add(target)
    assert graph["api"] == {"core", "engine"}, graph["api"]
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle between parts: " + " -> ".join(cycle)


def test_no_module_imports_another_modules_private_names():
    bad = [i for i in IMPORTS if i.name.startswith("_") and not i.name.endswith("__") and i.target != i.module]
    assert not bad, "private names stay in their module:\n" + "\n".join(map(str, bad))
