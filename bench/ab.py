"""A/B ingest: ``make bench``'s ingest figures on a git revision and on the working tree, in one run.

``--before REV`` (default ``HEAD``) is checked out as a temporary git worktree; ``--after`` is the
working tree, or another revision given as ``--after REV``. Both trees run the same harness (this
folder's ``ingest.py``), on the same workload (built once, handed over as a pickle), each figure
in a fresh interpreter whose PYTHONPATH holds that tree's ``src`` first. Repeats are interleaved:
each figure runs on both trees back to back, the order of the trees alternating repeat by repeat
(an even ``--repeats`` puts each tree first equally often).
The table gives the median events/s of each tree, after / before of the medians (the verdict: >=
0.97, issue 14), of each repeat's pair (median, range) and of the fastest runs; the raw ``sqlite3``
baseline is there for context (its ratio is noise, unless the schema changed). The worktrees and
the databases are removed at the end::

    .venv/bin/python bench/ab.py                                  # HEAD vs the working tree (~6 min)
    .venv/bin/python bench/ab.py --before 2485cfd --events 50000 --repeats 3
    .venv/bin/python bench/ab.py --after HEAD                     # HEAD vs HEAD: the noise of the ratio
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import ingest
import seed_api
from _util import inspect_database, remove_database, table

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PARTS = 20  # slices of the baseline and sustained runs, as in `make bench` (a flush per slice)
BATCH_SIZE = 1000  # the manager's batch_size, as in `make bench`
PRODUCERS = 100  # asyncio tasks of the concurrent figure, as in `make bench`
THRESHOLD = 0.97  # issue 14: the redesign must not slow the hot path

#: key -> (what is timed, the run on a database path). Keys are those of bench/README.md (`db_batch`: seed_api.py).
FIGURES: dict[str, tuple[str, Callable[[str, ingest.Workload], float]]] = {
    "baseline": (
        "sqlite3 executemany, pre-encoded rows (context)",
        lambda path, w: ingest.run_baseline(path, w, PARTS)["seconds"],
    ),
    "sustained": (
        "manager.queue_events_batch(1000), flush per slice",
        lambda path, w: ingest.run_sustained(path, w, PARTS, BATCH_SIZE)["seconds"],
    ),
    "single": ("manager.queue_event per event", lambda path, w: ingest.run_single(path, events(w), BATCH_SIZE)),
    "concurrent": (
        f"{PRODUCERS} tasks awaiting manager.store_event",
        lambda path, w: ingest.run_concurrent(path, events(w), PRODUCERS, BATCH_SIZE),
    ),
    "db_batch": ("EventDatabase.store_events_batch(1000)", seed_api.run_db_batch),
}


def events(workload: ingest.Workload) -> list[dict[str, object]]:
    """The workload's events (it is always built in memory here)."""
    assert workload.events is not None
    return workload.events


def worker(figure: str, workload_file: str, path: str) -> None:
    """In the child: one figure on a fresh database, checked; print its seconds and where celflow came from."""
    import celflow

    with open(workload_file, "rb") as f:
        workload: ingest.Workload = pickle.load(f)
    gc.collect()
    gc.freeze()  # the workload is the harness's heap, not CelFlow's (as run.py does)
    remove_database(path)
    seconds = FIGURES[figure][1](path, workload)
    stored, _ = inspect_database(path)
    remove_database(path)
    if stored != workload.distinct:
        raise SystemExit(f"CORRECTNESS FAILURE: {figure}: {stored:,} events stored, expected {workload.distinct:,}")
    print(json.dumps({"seconds": seconds, "origin": celflow.__file__}))


def git(*args: str) -> str:
    """Run git in this repository and return its output, stripped."""
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


class Tree:
    """A source tree to measure: its label, its ``src`` folder, and the git worktree made for it, if any."""

    def __init__(self, rev: str | None, folder: str) -> None:
        if rev is None:
            dirty = " with uncommitted changes" if git("status", "--porcelain", "--", "src") else ""
            self.label, self.src, self.worktree = f"working tree{dirty}", REPO / "src", None
            return
        commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
        self.worktree = Path(tempfile.mkdtemp(prefix=f"{commit[:7]}-", dir=folder))
        git("worktree", "add", "--detach", "--quiet", str(self.worktree), commit)
        self.label, self.src = f"{rev} ({commit[:7]})", self.worktree / "src"

    def remove(self) -> None:
        if self.worktree is not None:
            git("worktree", "remove", "--force", str(self.worktree))

    def run(self, figure: str, workload_file: str, path: str) -> float:
        """One figure in a fresh interpreter on this tree; its seconds."""
        env = os.environ | {"PYTHONPATH": os.pathsep.join([str(self.src), str(BENCH)])}
        argv = [sys.executable, "-P", __file__, "--worker", figure, workload_file, path]
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"{figure} on {self.label} failed (status {result.returncode}):\n{result.stderr}")
        report = json.loads(result.stdout.splitlines()[-1])
        if not Path(report["origin"]).resolve().is_relative_to(self.src.resolve()):
            raise SystemExit(f"{figure} on {self.label} imported {report['origin']}, not {self.src}")
        return float(report["seconds"])


def measure(
    trees: list[Tree], figures: list[str], args: argparse.Namespace, folder: str
) -> dict[str, list[list[float]]]:
    """Seconds per figure: one list per tree, one entry per repeat."""
    started = time.perf_counter()
    workload = ingest.Workload(args.events, seed=args.seed, end=time.time(), prebuilt=True)
    workload_file = os.path.join(folder, "workload.pickle")
    with open(workload_file, "wb") as f:
        pickle.dump(workload, f, protocol=pickle.HIGHEST_PROTOCOL)
    log(started, f"workload: {args.events:,} events ({workload.distinct:,} distinct), seed {args.seed}")
    path = os.path.join(folder, "ab.db")
    seconds: dict[str, list[list[float]]] = {figure: [[] for _ in trees] for figure in figures}
    for repeat in range(args.repeats):
        order = list(range(len(trees))) if repeat % 2 == 0 else list(reversed(range(len(trees))))
        for figure in figures:
            for k in order:
                seconds[figure][k].append(trees[k].run(figure, workload_file, path))
                rate = args.events / seconds[figure][k][-1]
                log(started, f"repeat {repeat + 1} {figure:<10} {'before' if k == 0 else 'after':<6} {rate:>10,.0f}/s")
    return seconds


def log(started: float, text: str) -> None:
    print(f"  [{time.perf_counter() - started:5.0f} s] {text}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=f"figures: {', '.join(f'{k} ({v[0]})' for k, v in FIGURES.items())}"
    )
    p.add_argument("--before", default="HEAD", help="git revision of the before tree (default HEAD)")
    p.add_argument("--after", help="git revision of the after tree (default: the working tree as it is)")
    p.add_argument("--events", type=int, default=200_000, help="events offered per figure (default 200000)")
    p.add_argument(
        "--repeats", type=int, default=6, help="runs of each figure on each tree; even counts balance the order (6)"
    )
    p.add_argument("--figures", default=",".join(FIGURES), help="comma-separated keys (default: all)")
    p.add_argument("--seed", type=int, default=42, help="workload seed (default 42)")
    p.add_argument("--workdir", help="folder for the worktree and the databases (default $TMPDIR)")
    p.add_argument("--json", action="store_true", help="print JSON (every timing) instead of the table")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    if unknown := [f for f in args.figures if f not in FIGURES]:
        p.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    if min(args.events, args.repeats) < 1:
        p.error("--events and --repeats must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Make the worktree(s), measure interleaved, print the table (or JSON), clean up."""
    args = parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    with tempfile.TemporaryDirectory(prefix="celflow-ab-", dir=args.workdir) as folder:
        trees: list[Tree] = []
        try:
            trees.append(Tree(args.before, folder))
            trees.append(Tree(args.after, folder))
            seconds = measure(trees, args.figures, args, folder)
        finally:
            for tree in trees:
                tree.remove()
    if args.json:
        out = {"before": trees[0].label, "after": trees[1].label, "events": args.events, "seconds": seconds}
        print(json.dumps(out, indent=1))
        return 0
    rows = []
    for figure, (before, after) in seconds.items():
        paired = [b / a for b, a in zip(before, after, strict=True)]  # after/before of rates, repeat by repeat
        ratio = statistics.median(before) / statistics.median(after)
        verdict = "-" if figure == "baseline" else "ok" if ratio >= THRESHOLD else "SLOWER"
        rows.append(
            [
                figure,
                f"{args.events / statistics.median(before):,.0f}",
                f"{args.events / statistics.median(after):,.0f}",
                f"{ratio:.3f}",
                f"{statistics.median(paired):.3f}",
                f"{min(paired):.3f}-{max(paired):.3f}",
                f"{min(before) / min(after):.3f}",
                verdict,
            ]
        )
    print(f"before: {trees[0].label}\nafter:  {trees[1].label}")
    print(f"{args.events:,} events per figure, {args.repeats} interleaved repeats; events/s are medians\n")
    header = ["figure", "before", "after", "after/before", "paired", "paired range", "best", f">= {THRESHOLD}"]
    print(table(header, rows))
    print(
        "\nafter/before: of the medians (the verdict); paired: the median, lowest and highest after/before of one"
        "\nrepeat (the trees back to back); best: of the fastest runs (other load only ever slows a run down)"
    )
    for figure in seconds:
        print(f"{figure}: {FIGURES[figure][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
