"""CelFlow's benchmark: every figure of issue 3 with its ratio to a baseline of the same run, and PASS/FAIL.

``make bench`` is the quick mode (200k events, 3 repeats, a few minutes); ``make bench-full`` builds
a 10 M-event database, streaming the workload. bench/README.md explains each figure.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import ingest
import peers
from _util import inspect_database, remove_database, rss_anon_mib, table
from queries import measure_queries
from report import figures, plot
from retention import measure_retention

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FULL_EVENTS = 10_000_000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; ``--full`` changes the defaults of --events and --big-repeats."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help=f"{FULL_EVENTS:,} events, streamed, one big run")
    p.add_argument("--smoke", action="store_true", help="a test of the harness: 20000 events, 1 repeat, few samples")
    p.add_argument("--events", type=int, help="events of the big runs (default 200000; --full: 10000000)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each smaller figure; medians shown (default 3)")
    p.add_argument(
        "--big-repeats", type=int, help="runs of the baseline and sustained ingest (default --repeats; --full: 1)"
    )
    p.add_argument("--sample", type=int, default=200_000, help="events of the other ingest figures and peers' batches")
    p.add_argument(
        "--peer-single", type=int, default=10_000, help="events of the peers' per-event paths (default 10000)"
    )
    p.add_argument("--parts", type=int, default=20, help="slices of the growth curve (default 20: every 5%%)")
    p.add_argument("--batch-size", type=int, default=1000, help="the manager's batch_size (default 1000)")
    p.add_argument("--producers", type=int, default=100, help="asyncio tasks of the concurrent figure (default 100)")
    p.add_argument("--query-samples", type=int, default=200, help="timings per query (default 200)")
    p.add_argument("--query-budget", type=float, default=10.0, help="seconds per query at most, past 5 timings")
    p.add_argument("--prebuild-limit", type=int, default=1_000_000, help="stream workloads larger than this")
    p.add_argument("--seed", type=int, default=42, help="workload seed (default 42)")
    p.add_argument("--out", help="name of the JSON and PNG in bench/results/ (default quick, full or smoke)")
    p.add_argument("--workdir", help="folder for the temporary databases (default $TMPDIR)")
    args = p.parse_args(argv)
    if args.smoke:
        args.events, args.repeats, args.peer_single, args.query_samples, args.query_budget = 20_000, 1, 1000, 20, 2.0
    args.events = args.events or (FULL_EVENTS if args.full else 200_000)
    args.big_repeats = args.big_repeats or (1 if args.full else args.repeats)
    args.sample = min(args.sample, args.events)
    args.peer_single = min(args.peer_single, args.sample)
    args.out = args.out or ("full" if args.full else "smoke" if args.smoke else "quick")
    if min(args.events, args.repeats, args.big_repeats, args.sample, args.peer_single, args.parts) < 1:
        p.error("counts must be >= 1")
    if args.events < args.parts:
        p.error("--events must be at least --parts")
    return args


class Bench:
    """Runs figures in a work folder, checks their stored counts and prints progress."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.started = time.perf_counter()
        self.runs: dict[str, list[Any]] = {}

    def log(self, key: str, text: str) -> None:
        print(f"  [{time.perf_counter() - self.started:6.0f} s] {key:<14} {text}", flush=True)

    def celflow(self, key: str, workload: ingest.Workload, run: Callable[[str], Any], *, keep: bool = False) -> Any:
        """``run(path)`` on a fresh database ``key.db``, which must then hold the workload's distinct events."""
        path = os.path.join(self.workdir, f"{key}.db")
        remove_database(path)
        gc.collect()
        result = run(path)
        stored, _ = inspect_database(path)
        if not keep:
            remove_database(path)
        if stored != workload.distinct:
            raise SystemExit(f"CORRECTNESS FAILURE: {key}: {stored:,} events stored, expected {workload.distinct:,}")
        return self._record(key, workload.n, result)

    def peer(self, key: str, count: int, run: Callable[[str], float]) -> float:
        folder = tempfile.mkdtemp(prefix=key, dir=self.workdir)
        gc.collect()
        try:
            return float(self._record(key, count, run(folder)))
        finally:
            shutil.rmtree(folder)

    def _record(self, key: str, count: int, result: Any) -> Any:
        self.runs.setdefault(key, []).append(result)
        seconds = result["seconds"] if isinstance(result, dict) else result
        self.log(key, f"{count / seconds:>12,.0f} events/s  ({seconds:.2f} s)")
        return result


def main(argv: Sequence[str] | None = None) -> int:
    """Build the workloads, run every figure, print the table, write the JSON and the plot."""
    args = parse_args(argv)
    started, end = time.perf_counter(), time.time()
    big = ingest.Workload(args.events, seed=args.seed, end=end, prebuilt=args.events <= args.prebuild_limit)
    same = big.events is not None and args.sample == args.events
    sample = big if same else ingest.Workload(args.sample, seed=args.seed, end=end, prebuilt=True)
    assert sample.events is not None
    events, singles = sample.events, sample.events[: args.peer_single]
    gc.freeze()  # the workload is the harness's heap, not CelFlow's: keep it out of the collector's scans
    deps = ", ".join(f"{d} {version(d)}" for d in ("aw-core", "eventsourcing", "persist-queue"))
    mode = "streamed" if big.events is None else "in memory"
    print(
        f"CelFlow {version('celflow')}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs; {deps}\nworkload: {args.events:,} events ({mode}, seed {args.seed}), sample "
        f"{args.sample:,}; built in {time.perf_counter() - started:.1f} s; RssAnon {rss_anon_mib():,.0f} MiB",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="celflow-bench-", dir=args.workdir) as workdir:
        bench = Bench(workdir)

        def sustained(path: str) -> dict[str, Any]:
            return ingest.run_sustained(path, big, args.parts, args.batch_size)

        for _ in range(args.big_repeats):
            bench.celflow("baseline", big, lambda p: ingest.run_baseline(p, big, args.parts))
            bench.celflow("sustained", big, sustained, keep=True)  # the last one stays for the queries
        big_path = os.path.join(workdir, "sustained.db")
        stored, db_bytes = inspect_database(big_path)
        size = {"stored": stored, "db_bytes": db_bytes, "jsonl_bytes": big.counter.jsonl_bytes if big.counter else 0}
        bench.log("queries", f"on {stored:,} events ({db_bytes / 2**20:,.0f} MiB)")
        queries = measure_queries(big_path, samples=args.query_samples, budget=args.query_budget, seed=args.seed)
        for key, q in queries.items():
            bench.log(key, f"p50 {q['p50_ms']:8.2f} ms  p99 {q['p99_ms']:8.2f} ms  n={q['n']}  rows={q['rows']}")
        retention = measure_retention(big_path, end, seed=args.seed)
        bench.log("retention", ", ".join(f"{k} {v:,.3g}" for k, v in retention.items() if v is not None))
        remove_database(big_path)

        n = sample.n
        small: dict[str, Callable[[], Any]] = {
            "single": lambda: bench.celflow("single", sample, lambda p: ingest.run_single(p, events, args.batch_size)),
            "concurrent": lambda: bench.celflow(
                "concurrent", sample, lambda p: ingest.run_concurrent(p, events, args.producers, args.batch_size)
            ),
            "aw_batch": lambda: bench.peer("aw_batch", n, lambda f: peers.run_aw_batch(f, events)),
            "eventsourcing": lambda: bench.peer("eventsourcing", n, lambda f: peers.run_eventsourcing(f, events)),
            "aw_single": lambda: bench.peer("aw_single", len(singles), lambda f: peers.run_aw_single(f, singles)),
            "persistqueue": lambda: bench.peer(
                "persistqueue", len(singles), lambda f: peers.run_persistqueue(f, singles)
            ),
        }
        if not same:
            small["batch_sample"] = lambda: bench.celflow(
                "batch_sample",
                sample,
                lambda p: ingest.run_sustained(p, sample, args.parts, args.batch_size)["seconds"],
            )
        for _ in range(args.repeats):
            for run in small.values():
                run()
    res = {
        "config": vars(args),
        "events": args.events,
        "sample": args.sample,
        "peer_single": args.peer_single,
        "distinct": big.distinct,
        "environment": {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count()},
        "runs": bench.runs,
        "size": size,
        "queries": queries,
        "retention": retention,
    }
    rows = figures(res)
    runs = f"medians of {args.big_repeats} big and {args.repeats} smaller runs"
    print(f"\n{args.events:,} events (sample {args.sample:,}, per-event peers {args.peer_single:,}); {runs}:\n")
    print(table(["figure", "value", "unit", "ratio", "target", "result"], [f.cells() for f in rows]))
    failed = [f.key for f in rows if f.ok is False]
    passed = sum(f.ok is True for f in rows)
    print(
        f"\n{passed} PASS, {len(failed)} FAIL: {', '.join(failed) or '-'}\nmanager batch_size {args.batch_size}; ratio "
        "'base': / the sqlite3 baseline of this run; 'CelFlow/peer': CelFlow's batch (or per-event) rate / the peer's"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / args.out
    res["figures"] = [f.as_json() for f in rows]
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    plot(res, out.with_suffix(".png"))
    print(f"results: {out.with_suffix('.json')}, growth curve: {out.with_suffix('.png')}")
    print(f"total {time.perf_counter() - started:,.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
