"""An import-linter contract the built-in ones lack: no import cycle between any two modules.

``acyclic_siblings`` looks at siblings only, and ``layers`` not at a package and its own modules;
this one takes the whole graph (imports inside functions too: grimp reads every import statement)
and reports each strongly connected component. Used by ``make lint`` (``[tool.importlinter]``).
"""

from __future__ import annotations

from typing import Any

from importlinter import Contract, ContractCheck, fields, output


def _cycles(graph: Any, modules: set[str]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & modules))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


class AcyclicModulesContract(Contract):
    """No module of ``package`` imports, directly or through others, a module that imports it back."""

    type_name = "acyclic_modules"
    package = fields.StringField()

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        package = str(self.package)
        modules = {m for m in graph.modules if m == package or m.startswith(package + ".")}
        cycles = _cycles(graph, modules)
        return ContractCheck(kept=not cycles, metadata={"cycles": cycles, "graph": graph})

    def render_broken_contract(self, check: ContractCheck) -> None:
        graph = check.metadata["graph"]
        for cycle in check.metadata["cycles"]:
            output.print_error(f"An import cycle of {len(cycle)} modules:", bold=True)
            members = set(cycle)
            for importer in cycle:
                for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
                    details = graph.get_import_details(importer=importer, imported=imported)
                    lines = ", ".join(str(d["line_number"]) for d in details)
                    output.print_error(f"  {importer} -> {imported} (l. {lines})")
            output.new_line()
