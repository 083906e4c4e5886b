"""The results table (figure, value, unit, ratio, target, PASS/FAIL) and the growth-curve plot."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ingest import tail_ratio
from queries import QUERIES

MB_PER_MIB = 1.048576


@dataclass
class Figure:
    """One row of the table; ``ok`` is None when the figure has no target."""

    key: str
    label: str
    value: float
    unit: str
    ratio: float | None = None
    ref: str = ""  # what the ratio is against
    target: str = "-"
    ok: bool | None = None
    fmt: str = "{:,.0f}"

    def cells(self) -> list[str]:
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f} {self.ref}"
        result = "-" if self.ok is None else ("PASS" if self.ok else "FAIL")
        return [self.label, self.fmt.format(self.value), self.unit, ratio, self.target, result]

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "fmt"}


def short(n: int) -> str:
    """200000 -> 200k, 10000000 -> 10M."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size and n % (size // 10) == 0:
            return f"{n / size:g}{suffix}"
    return f"{n:,}"


def _rate(count: int, seconds: list[float]) -> float:
    return count / statistics.median(seconds)


def figures(res: dict[str, Any]) -> list[Figure]:
    """Every figure of a run, from the raw results the driver collected."""
    runs, n, s, p = res["runs"], res["events"], res["sample"], res["peer_single"]
    base = statistics.median(r["events_per_s"] for r in runs["baseline"])
    sustained = statistics.median(r["events_per_s"] for r in runs["sustained"])
    tail = statistics.median(tail_ratio(r) for r in runs["sustained"])
    base_tail = statistics.median(tail_ratio(r) for r in runs["baseline"])
    single = _rate(s, runs["single"])
    batch = sustained if "batch_sample" not in runs else _rate(s, runs["batch_sample"])
    edge = "last/first 1M" if n == 10_000_000 else "last/first 10%"
    rows = [
        Figure("baseline", f"baseline: sqlite3 executemany, pre-encoded, {short(n)}", base, "events/s", 1.0, "base"),
        Figure(
            "sustained",
            f"queue_events_batch(1000), dedup+zstd, {short(n)}",
            sustained,
            "events/s",
            sustained / base,
            "base",
            ">=100,000 & >=0.70 base",
            sustained >= 100_000 and sustained / base >= 0.7,
        ),
        Figure(
            "sustained_tail", f"  same, {edge}", tail, "x", tail / base_tail, "base", ">= 0.80", tail >= 0.8, "{:.2f}"
        ),
    ]
    if "batch_sample" in runs:
        rows.append(Figure("batch_sample", f"  same, {short(s)} (vs peers)", batch, "events/s", batch / base, "base"))
    concurrent = _rate(s, runs["concurrent"])
    producers = res["config"]["producers"]
    rows += [
        Figure(
            "single",
            f"queue_event x1, one producer, {short(s)}",
            single,
            "events/s",
            single / base,
            "base",
            ">= 50,000",
            single >= 50_000,
        ),
        Figure(
            "concurrent",
            f"await store_event, {producers} tasks, {short(s)}",
            concurrent,
            "events/s",
            concurrent / base,
            "base",
            ">= 20,000",
            concurrent >= 20_000,
        ),
    ]
    peers = [
        ("aw_batch", f"aw-core SqliteStorage.insert_many(1000), {short(s)}", s, batch, "CelFlow >= 1.2x", 1.2),
        ("eventsourcing", f"eventsourcing SQLite recorder (1000), {short(s)}", s, batch, "(ratio only)", None),
        ("aw_single", f"aw-core PeeweeStorage.insert_one, {short(p)}", p, single, "CelFlow >= 10x", 10.0),
        ("persistqueue", f"persist-queue SQLiteQueue.put, {short(p)}", p, single, "CelFlow >= 10x", 10.0),
    ]
    for key, label, count, ours, target, least in peers:
        theirs = _rate(count, runs[key])
        ok = None if least is None else ours / theirs >= least
        rows.append(Figure(key, label, theirs, "events/s", ours / theirs, "CelFlow/peer", target, ok))
    for key, label in QUERIES.items():
        q = res["queries"][key]
        limit = 1.0 if key.startswith("q_") else 20.0
        unit = f"ms p99 n={q['n']}"
        rows.append(
            Figure(key, label, q["p99_ms"], unit, target=f"<= {limit:g} ms", ok=q["p99_ms"] <= limit, fmt="{:.2f}")
        )
    size, ret = res["size"], res["retention"]
    per_event = size["db_bytes"] / size["stored"]
    ratio = size["db_bytes"] / size["jsonl_bytes"]
    growth = MB_PER_MIB * max(r["rss_growth_mib"] for r in runs["sustained"])
    rows += [
        Figure(
            "size",
            "database file / same events as JSON Lines",
            per_event,
            "bytes/event",
            ratio,
            "JSONL",
            "<= 1.0 JSONL (goal 0.5)",
            ratio <= 1.0,
            "{:,.1f}",
        ),
        Figure(
            "rss",
            f"RssAnon peak growth while ingesting {short(n)}",
            growth,
            "MB",
            target="<= 50 MB",
            ok=growth <= 50,
            fmt="{:.1f}",
        ),
        Figure(
            "retention_stall",
            f"longest ingest stall, retention of {ret['removed_fraction']:.0%}",
            ret["stall_ms"],
            "ms",
            target="<= 250 ms",
            ok=ret["stall_ms"] <= 250,
            fmt="{:.1f}",
        ),
    ]
    return rows


def median_curve(runs: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """Events stored at the end of each slice, and the median rate of that slice over the runs."""
    xs = [s["events"] for s in runs[0]["slices"]]
    rates = [statistics.median(r["slices"][k]["rate"] for r in runs) for k in range(len(xs))]
    return xs, rates


def plot(res: dict[str, Any], path: Path) -> None:
    """Ingest rate per slice against events stored, CelFlow and the baseline; the database size on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for key, label, style in (
        ("sustained", "CelFlow queue_events_batch", "o-"),
        ("baseline", "sqlite3 baseline", "s--"),
    ):
        xs, rates = median_curve(res["runs"][key])
        ax.plot(xs, rates, style, label=label, markersize=4)
    ax.set_xlabel("events stored")
    ax.set_ylabel("ingest rate of the slice (events/s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    last = res["runs"]["sustained"][-1]["slices"]
    size = ax.twinx()
    size.plot([s["events"] for s in last], [s["db_bytes"] / 2**20 for s in last], ":", color="grey", label="CelFlow DB")
    size.set_ylabel("CelFlow database + WAL (MiB)")
    size.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + size.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], loc="lower left")
    ax.set_title(f"CelFlow ingest rate vs events stored ({short(res['events'])} events, median of slices)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
