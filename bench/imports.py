"""The import graph of the ``celflow`` package: modules, edges, import cycles, third-party packages loaded.

The static graph comes from grimp, which sees every import statement of a module, function-local
ones included; imports under ``if TYPE_CHECKING:`` are left out unless ``--type-checking`` (they
never run). What ``import celflow`` and ``celflow events --help`` load is measured, not read from
the graph: each runs in a fresh interpreter that then reports its ``sys.modules``. ``--src`` points
at another tree's ``src`` folder (e.g. a git worktree of an older commit)::

    .venv/bin/python bench/imports.py                       # the importable celflow
    .venv/bin/python bench/imports.py --src /tmp/old/src --edges
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from import_graph import strongly_connected

if TYPE_CHECKING:
    import grimp

PACKAGE = "celflow"
#: Server, bus, PostgreSQL, capture, dashboard and export libraries: what a plain import should not load.
THIRD_PARTY = [
    "psycopg",
    "psycopg_pool",
    "nats",
    "uvicorn",
    "starlette",
    "watchdog",
    "psutil",
    "textual",
    "httpx",
    "websockets",
    "pyarrow",
    "prometheus_client",
]
#: What each probe runs; argv is the console script's (``celflow = "celflow.cli:entry_point"``).
PROBES = {
    "import celflow": ("import celflow", []),
    "celflow events --help": ("from celflow.cli import entry_point\nentry_point()", ["events", "--help"]),
}
# Runs the probe with stdout swallowed, then prints what was loaded; the report's own imports come after.
_PROBE = """
import contextlib, io, sys
sys.argv[0] = "celflow"
with contextlib.redirect_stdout(io.StringIO()):
    try:
        exec(compile({code!r}, "<probe>", "exec"))
        status = 0
    except SystemExit as exc:
        status = exc.code
loaded = sorted({{name.partition(".")[0] for name in sys.modules}})
origin = sys.modules["celflow"].__file__
import json
print(json.dumps({{"status": status, "loaded": loaded, "modules": len(sys.modules), "origin": origin}}))
"""


def default_src() -> Path:
    """The folder holding the ``celflow`` package this Python would import."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{PACKAGE} is not importable here; pass --src PATH (the folder holding {PACKAGE}/)")
    return Path(spec.origin).resolve().parent.parent


def subprocess_env(src: Path) -> dict[str, str]:
    """This environment with ``src`` alone on PYTHONPATH (ahead of the installed package)."""
    return os.environ | {"PYTHONPATH": str(src)}


def build_graph(src: Path, *, type_checking: bool) -> grimp.ImportGraph:
    """grimp's graph of the package under ``src``; no cache (grimp would write one into the cwd)."""
    try:
        import grimp  # here, so startup.py and ab.py can use this module's helpers without it
    except ImportError:
        raise SystemExit("grimp is not installed: .venv/bin/pip install grimp") from None
    sys.path.insert(0, str(src))
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None or Path(spec.origin).resolve().parent.parent != src:
        raise SystemExit(f"no {PACKAGE}/ package in {src}")
    return grimp.build_graph(PACKAGE, exclude_type_checking_imports=not type_checking, cache_dir=None)


def edges_of(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    """Each module -> the package's modules it imports directly."""
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def function_local_lines(src: Path, module: str) -> set[int]:
    """Line numbers of the import statements inside a function body of ``module``."""
    path = src.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines.update(n.lineno for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom))
    return lines


def cycle_edges(graph: grimp.ImportGraph, src: Path, component: Iterable[str]) -> list[dict[str, Any]]:
    """The imports between the modules of one cycle, with their line and whether a function holds them."""
    members = set(component)
    rows = []
    for importer in sorted(members):
        local = function_local_lines(src, importer)
        for imported in sorted(members & set(graph.find_modules_directly_imported_by(importer))):
            for detail in graph.get_import_details(importer=importer, imported=imported):
                line = detail["line_number"]
                rows.append({"importer": importer, "imported": imported, "line": line, "local": line in local})
    return sorted(rows, key=lambda r: (r["importer"], r["line"]))


def probe(src: Path, code: str, argv: list[str]) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (``-P``: no cwd on sys.path) and return what it loaded."""
    result = subprocess.run(
        [sys.executable, "-P", "-c", _PROBE.format(code=code), *argv],
        env=subprocess_env(src),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise SystemExit(f"the probe failed (status {result.returncode}):\n{result.stderr}")
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    if not Path(report["origin"]).resolve().is_relative_to(src):
        raise SystemExit(f"the probe imported {report['origin']}, not the package in {src}")
    return report


def analyse(src: Path, *, type_checking: bool, with_edges: bool) -> dict[str, Any]:
    """Everything the report prints, as plain values."""
    graph = build_graph(src, type_checking=type_checking)
    edges = edges_of(graph)
    cycles = strongly_connected(edges)
    runs = {name: probe(src, code, argv) for name, (code, argv) in PROBES.items()}
    installed = {name: importlib.util.find_spec(name) is not None for name in THIRD_PARTY}
    return {
        "src": str(src),
        "type_checking_imports": type_checking,
        "modules": len(edges),
        "edges": sum(len(targets) for targets in edges.values()),
        "cycles": [{"modules": c} | ({"imports": cycle_edges(graph, src, c)} if with_edges else {}) for c in cycles],
        "runtime": {
            name: {
                "status": run["status"],
                "modules_loaded": run["modules"],
                "third_party": [p for p in THIRD_PARTY if p in run["loaded"]],
            }
            for name, run in runs.items()
        },
        "not_installed": [p for p, ok in installed.items() if not ok],
    }


def render(res: dict[str, Any]) -> str:
    """The report as text."""
    tc = "included" if res["type_checking_imports"] else "excluded"
    out = [
        f"{PACKAGE} in {res['src']} (function-local imports included, TYPE_CHECKING imports {tc})",
        f"modules: {res['modules']}, internal import edges: {res['edges']}",
        f"import cycles (strongly connected components of more than one module): {len(res['cycles'])}",
    ]
    for k, cycle in enumerate(res["cycles"], 1):
        out.append(f"  {k}. {len(cycle['modules'])} modules: {', '.join(cycle['modules'])}")
        for imp in cycle.get("imports", []):
            where = "in a function" if imp["local"] else "module level"
            out.append(f"       {imp['importer']}:{imp['line']} -> {imp['imported']} ({where})")
    names = list(res["runtime"])
    out.append("\nthird-party packages loaded at run time (fresh interpreter, sys.modules afterwards):")
    width = max(len(p) for p in THIRD_PARTY)
    out.append(f"  {'package':<{width}}  " + "  ".join(names))
    for package in THIRD_PARTY:
        marks = [
            "(not installed)" if package in res["not_installed"] else "loaded" if package in r["third_party"] else "no"
            for r in res["runtime"].values()
        ]
        cells = "  ".join(mark.ljust(len(name)) for mark, name in zip(marks, names, strict=True))
        out.append(f"  {package:<{width}}  {cells}".rstrip())
    totals = ", ".join(f"{n}: {r['modules_loaded']}" for n, r in res["runtime"].items())
    out.append(f"  modules in sys.modules afterwards: {totals}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, analyse the tree, print text or JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, help=f"folder holding {PACKAGE}/ (default: the importable {PACKAGE})")
    p.add_argument(
        "--type-checking", action="store_true", help="count imports under `if TYPE_CHECKING:` too (default: not)"
    )
    p.add_argument("--edges", action="store_true", help="list each cycle's imports with their line numbers")
    p.add_argument("--json", action="store_true", help="print JSON instead of the text report")
    args = p.parse_args(argv)
    src = args.src.resolve() if args.src else default_src()
    res = analyse(src, type_checking=args.type_checking, with_edges=args.edges)
    print(json.dumps(res, indent=1) if args.json else render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
