# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Print the import graph of plugins/module_utils and fail on an import cycle or on a use of another module's
private name.

Usage: python tools/import_graph.py [COLLECTION_ROOT] [--collection NAMESPACE.NAME]   (run by `make import-graph`)

Every .py file under plugins/module_utils is a node, named by its dotted path below module_utils (`_checkpoint.ops`;
a package is its `__init__.py`: `_checkpoint`); plugins/modules/*.py are scanned as importers. One line per module:
the collection modules it imports. Imports under `if TYPE_CHECKING:` are listed apart ("types only") and do not make
cycles, since they never run.

It fails (exit 1) on:
- a cycle of runtime imports between collection modules (the cycle's path is printed);
- a use of another module's private name: `from X import _name`, or `alias._name` where alias is an imported
  collection module; X is a module (a .py file), or a package whose `_name` is not a submodule. Underscore-prefixed
  packages and modules themselves (`_checkpoint`, `_docker.api`) are the collection's private-module convention: fine;
- an import of the top layer from below: `_checkpoint` (the checkpoint operations) builds on `_docker`,
  `_containerd`, `_criu` and `_host`, never the other way round (see docs/architecture.md).
Only the standard library (ast).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import re
import sys


@dataclasses.dataclass
class Module:
    """One collection module: its dotted name below plugins (`module_utils._checkpoint.ops`) and what it imports."""

    name: str
    path: str
    is_package: bool
    imports: set[str] = dataclasses.field(default_factory=set)
    type_imports: set[str] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def collection_name(root: str) -> str:
    """NAMESPACE.NAME from galaxy.yml (two top-level keys; no YAML parser needed)."""
    try:
        with open(os.path.join(root, "galaxy.yml"), encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        sys.exit(f"import-graph: cannot read galaxy.yml ({exc}); pass --collection NAMESPACE.NAME")
    keys = dict(re.findall(r"^(namespace|name):\s*['\"]?([A-Za-z0-9_]+)", text, re.MULTILINE))
    if set(keys) != {"namespace", "name"}:
        sys.exit("import-graph: galaxy.yml has no namespace/name; pass --collection NAMESPACE.NAME")
    return f"{keys['namespace']}.{keys['name']}"


def find_modules(root: str) -> dict[str, Module]:
    """Every .py file under plugins/module_utils, and plugins/modules/*.py, by dotted name below plugins."""
    modules: dict[str, Module] = {}
    plugins = os.path.join(root, "plugins")
    for top, recursive in (("module_utils", True), ("modules", False)):
        base = os.path.join(plugins, top)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__") if recursive else []
            for filename in sorted(filenames):
                if not filename.endswith(".py"):
                    continue
                path = os.path.join(dirpath, filename)
                parts = os.path.relpath(path, plugins)[:-3].split(os.sep)
                is_package = parts[-1] == "__init__"
                if is_package:
                    parts = parts[:-1]
                modules[".".join(parts)] = Module(".".join(parts), path, is_package)
    return modules


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes that sit under `if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    found.update(id(sub) for sub in ast.walk(stmt) if isinstance(sub, (ast.Import, ast.ImportFrom)))
    return found


class Scanner:
    """Resolves one file's imports to collection modules and finds its uses of other modules' private names."""

    def __init__(self, modules: dict[str, Module], prefix: str) -> None:
        self.modules = modules
        self.prefix = prefix  # ansible_collections.NAMESPACE.NAME.plugins

    def to_node(self, dotted: str) -> str | None:
        """The node name for an absolute dotted import path, if it is a collection module."""
        if dotted == self.prefix or not dotted.startswith(self.prefix + "."):
            return None
        name = dotted[len(self.prefix) + 1:]
        return name if name in self.modules else None

    def absolute(self, module: Module, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
        base = package[:len(package) - (node.level - 1)]
        return ".".join([self.prefix, *base, *([node.module] if node.module else [])])

    def scan(self, module: Module) -> list[Problem]:
        with open(module.path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), module.path)
        type_only = _type_checking_nodes(tree)
        problems: list[Problem] = []
        bound: dict[str, str] = {}  # local name or dotted path -> node it refers to

        def edge(target: str, node: ast.AST) -> None:
            if target != module.name:
                (module.type_imports if id(node) in type_only else module.imports).add(target)

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = self.to_node(alias.name)
                    if target is None:
                        continue
                    edge(target, node)
                    bound[alias.asname or alias.name] = target
            elif isinstance(node, ast.ImportFrom):
                source = self.absolute(module, node)
                source_node = self.to_node(source)
                for alias in node.names:
                    submodule = self.to_node(f"{source}.{alias.name}")
                    if submodule is not None:
                        edge(submodule, node)
                        bound[alias.asname or alias.name] = submodule
                        continue
                    if source_node is None:
                        continue
                    edge(source_node, node)
                    if _is_private(alias.name):
                        problems.append(Problem(module.path, node.lineno,
                                                f"imports private name {alias.name!r} of {display(source_node)}"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                target = self.resolve(node.value, bound)
                if target is not None and self.to_node(f"{self.prefix}.{target}.{node.attr}") is None:
                    problems.append(Problem(module.path, node.lineno,
                                            f"uses private name {node.attr!r} of {display(target)}"))
        return problems

    def resolve(self, expr: ast.expr, bound: dict[str, str]) -> str | None:
        """The collection module an expression like `alias` or `alias.sub` or `pkg.a.b` refers to, if any."""
        if isinstance(expr, ast.Name):
            return bound.get(expr.id)
        if isinstance(expr, ast.Attribute):
            dotted = _dotted(expr)
            if dotted is not None and dotted in bound:
                return bound[dotted]
            parent = self.resolve(expr.value, bound)
            if parent is not None:
                return self.to_node(f"{self.prefix}.{parent}.{expr.attr}")
        return None


def _dotted(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        head = _dotted(expr.value)
        return None if head is None else f"{head}.{expr.attr}"
    return None


def find_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """One cycle path per strongly connected group of runtime imports (Tarjan), each starting at its smallest name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(name: str) -> None:  # recursion depth is bounded by the number of modules (dozens)
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target in sorted(modules[name].imports):
            if target not in index:
                connect(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == name:
                    break
            if len(group) > 1 or name in modules[name].imports:
                groups.append(sorted(group))

    for name in sorted(modules):
        if name not in index:
            connect(name)
    return [_cycle_in(group, modules) for group in sorted(groups)]


def _cycle_in(group: list[str], modules: dict[str, Module]) -> list[str]:
    """A shortest import path from the group's first module back to itself, staying inside the group."""
    start = group[0]
    members = set(group)
    previous: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for name in frontier:
            for target in sorted(modules[name].imports & members):
                if target == start:
                    path = [name]
                    while (before := previous[path[-1]]) is not None:
                        path.append(before)
                    return [*reversed(path), start]
                if target not in previous:
                    previous[target] = name
                    following.append(target)
        frontier = following
    return [start, start]  # not reached: every module of a group lies on a cycle through its first


def display(name: str) -> str:
    """module_utils nodes by their path below module_utils (`_checkpoint.ops`); modules as `modules.NAME`."""
    return name[len("module_utils."):] if name.startswith("module_utils.") else name


def _label(module: Module) -> str:
    return display(module.name) + ("/__init__" if module.is_package else "")


def render(modules: dict[str, Module]) -> list[str]:
    lines = []
    for section, title in (("module_utils", "plugins/module_utils"), ("modules", "plugins/modules (importers)")):
        names = [n for n in sorted(modules) if n == section or n.startswith(section + ".")]
        if not names:
            continue
        lines.append(f"== {title}: {len(names)} files; each -> the collection modules it imports ==")
        width = max(len(_label(modules[n])) for n in names)
        for name in names:
            module = modules[name]
            label = _label(module)
            targets = ", ".join(display(t) for t in sorted(module.imports)) or "-"
            extra = f"  (types only: {', '.join(display(t) for t in sorted(module.type_imports))})" \
                if module.type_imports - module.imports else ""
            lines.append(f"  {label:<{width}} -> {targets}{extra}")
    return lines


TOP_LAYER = "module_utils._checkpoint"


def layer_problems(modules: dict[str, Module]) -> list[Problem]:
    """Imports of the top layer (TOP_LAYER) from the layers below it."""
    problems = []
    for name in sorted(modules):
        module = modules[name]
        if not name.startswith("module_utils.") or name == TOP_LAYER or name.startswith(TOP_LAYER + "."):
            continue
        for target in sorted(module.imports | module.type_imports):
            if target == TOP_LAYER or target.startswith(TOP_LAYER + "."):
                problems.append(Problem(module.path, 0, f"{display(name)} imports {display(target)}: the layers "
                                                        f"below {display(TOP_LAYER)} must not import it"))
    return problems


def check(root: str, collection: str | None = None) -> tuple[dict[str, Module], list[Problem], list[list[str]]]:
    collection = collection or collection_name(root)
    modules = find_modules(root)
    scanner = Scanner(modules, "ansible_collections." + collection + ".plugins")
    problems: list[Problem] = []
    for name in sorted(modules):
        problems.extend(scanner.scan(modules[name]))
    problems.extend(layer_problems(modules))
    return modules, problems, find_cycles(modules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print plugins/module_utils' import graph; fail on a cycle or on "
                                                 "an import of another module's private name.")
    parser.add_argument("root", nargs="?", default=".", help="the collection's root (default: .)")
    parser.add_argument("--collection", help="NAMESPACE.NAME (default: read from ROOT/galaxy.yml)")
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.root, "plugins", "module_utils")):
        print(f"import-graph: {args.root}/plugins/module_utils not found", file=sys.stderr)
        return 2
    modules, problems, cycles = check(args.root, args.collection)
    print("\n".join(render(modules)))
    if not problems and not cycles:
        print(f"import-graph: OK ({len(modules)} files, no cycle, no private name used across modules, "
              "no import of _checkpoint from below)")
        return 0
    for cycle in cycles:
        print(f"import-graph: cycle: {' -> '.join(display(n) for n in cycle)}", file=sys.stderr)
    for problem in problems:
        print(f"import-graph: {problem}", file=sys.stderr)
    print(f"import-graph: FAILED: {len(cycles)} import cycle(s), {len(problems)} other problem(s). Break a cycle by "
          "moving what both sides need into a module of its own; make a name that other modules need public (no "
          "leading underscore); move what a lower layer needs out of _checkpoint.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
