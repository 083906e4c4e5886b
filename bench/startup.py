"""Start-up time of ``celflow events --help`` and ``import celflow``, against the bare interpreter.

Each command runs ``--runs`` times in a fresh interpreter (``-P``: the cwd is not on sys.path, so
the project folder's ``celflow.py`` cannot shadow the package); the table gives the median and p90
wall time and the ratio of the median to ``python -c pass`` of the same run. Bytecode is cached in
a temporary folder (``PYTHONPYCACHEPREFIX``), as an installed package has it. ``--src`` picks the
tree (a folder holding ``celflow/``); give it twice to measure two trees interleaved, run by run::

    .venv/bin/python bench/startup.py                                   # the importable celflow
    .venv/bin/python bench/startup.py --src /tmp/old/src --src src      # before and after, interleaved
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _util import percentile, table
from imports import default_src

BARE = "python -c pass"
#: What each command runs after ``python -P -c``; the help is what the console script prints
#: (``celflow = "celflow.cli:entry_point"``), with argv[0] set as the script would have it.
COMMANDS = {
    "import celflow": ["import celflow"],
    "celflow events --help": [
        "import sys; sys.argv[0] = 'celflow'; from celflow.cli import entry_point; entry_point()",
        "events",
        "--help",
    ],
}
WARMUPS = 2  # untimed runs per command and tree first: bytecode compiled and files in the page cache


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Wall time of one run, in seconds; a failing run stops the benchmark."""
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed (status {result.returncode}):\n{result.stderr.decode()}")
    return elapsed


def measure(srcs: list[Path], runs: int, pycache: str) -> dict[str, list[float]]:
    """Timings (s) by row label; trees alternate in order run by run, so drift hits both alike.

    Bytecode goes to ``pycache`` (written by the warm-ups, whatever PYTHONDONTWRITEBYTECODE says):
    an installed package has its .pyc files, and the trees stay untouched.
    """
    python = [sys.executable, "-P", "-c"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPYCACHEPREFIX": pycache}
    jobs: dict[str, tuple[list[str], dict[str, str]]] = {BARE: ([*python, "pass"], env)}
    for name, (code, *args) in COMMANDS.items():
        for k, src in enumerate(srcs):
            jobs[label(name, k, srcs)] = ([*python, code, *args], env | {"PYTHONPATH": str(src)})
    for argv, env in jobs.values():
        for _ in range(WARMUPS):
            timed(argv, env)
    times: dict[str, list[float]] = {key: [] for key in jobs}
    for i in range(runs):
        for name in [BARE, *COMMANDS]:
            order = range(len(srcs)) if i % 2 == 0 else reversed(range(len(srcs)))
            for k in [0] if name == BARE else order:
                key = BARE if name == BARE else label(name, k, srcs)
                times[key].append(timed(*jobs[key]))
        print(f"  run {i + 1}/{runs}", file=sys.stderr, flush=True)
    return times


def label(name: str, k: int, srcs: list[Path]) -> str:
    """The row of a command: with two trees, ``[1]`` / ``[2]`` after it (the order of --src)."""
    return name if len(srcs) == 1 else f"{name} [{k + 1}]"


def main(argv: Sequence[str] | None = None) -> int:
    """Time every command, print the table (or JSON)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--src", type=Path, action="append", help="folder holding celflow/ (default: the importable one); up to 2"
    )
    p.add_argument("--runs", type=int, default=30, help="timed runs of each command (default 30)")
    p.add_argument("--json", action="store_true", help="print JSON (every timing) instead of the table")
    args = p.parse_args(argv)
    srcs = [s.resolve() for s in args.src] if args.src else [default_src()]
    if len(srcs) > 2 or args.runs < 1:
        p.error("at most two --src, and --runs >= 1")
    with tempfile.TemporaryDirectory(prefix="celflow-startup-") as pycache:
        times = measure(srcs, args.runs, pycache)
    if args.json:
        print(json.dumps({"src": [str(s) for s in srcs], "runs": args.runs, "seconds": times}, indent=1))
        return 0
    bare = statistics.median(times[BARE])
    rows = []
    for key, values in times.items():
        median = statistics.median(values)
        rows.append([key, f"{median * 1000:.1f}", f"{percentile(values, 90) * 1000:.1f}", f"{median / bare:.2f}x"])
    for k, src in enumerate(srcs):
        print(f"[{k + 1}] {src}" if len(srcs) > 1 else f"celflow from {src}")
    print(f"{args.runs} runs each, {sys.executable} -P -c ...; ratio: median / the bare interpreter's median\n")
    print(table(["command", "median ms", "p90 ms", "vs bare"], rows))
    if len(srcs) == 2:
        for name in COMMANDS:
            before, after = (statistics.median(times[label(name, k, srcs)]) for k in (0, 1))
            print(f"{name}: [2] / [1] = {after / before:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
