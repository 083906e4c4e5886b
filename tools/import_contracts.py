"""An import-linter contract the built-in ones lack: no import cycle between any two modules.

``acyclic_siblings`` looks at siblings only, and ``layers`` not at a package and its own modules;
this one takes the whole graph (imports inside functions too: grimp reads every import statement)
and reports each strongly connected component. Used by ``make lint`` (``[tool.importlinter]``).
"""

from __future__ import annotations

from typing import Any

from import_graph import strongly_connected
from importlinter import Contract, ContractCheck, fields, output


class AcyclicModulesContract(Contract):
    """No module of ``package`` imports, directly or through others, a module that imports it back."""

    type_name = "acyclic_modules"
    package = fields.StringField()

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        package = str(self.package)
        modules = {m for m in graph.modules if m == package or m.startswith(package + ".")}
        cycles = strongly_connected({m: graph.find_modules_directly_imported_by(m) & modules for m in modules})
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
