"""``celflow dashboard``: a Textual app that shows a database live, refreshed every second."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, ClassVar

import orjson
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Input, Sparkline, Static

from .._exceptions import CelflowError, DatabaseClosedError
from .._location import Location
from .._types import StoredEvent
from ._data import RATE_MINUTES, WINDOWS, DashboardSource, Filters, Snapshot

__all__ = ["DashboardApp"]

_BLOCKS = " ▁▂▃▄▅▆▇█"
HELP = (
    "q quit · p pause/resume · w window (hour/day/week) · / filter recent events "
    "(type:T source:S words) · Esc leave the filter · ↑↓ pick an event for the detail view"
)


def _spark(values: list[int]) -> str:
    top = max(values) if values else 0
    if not top:
        return _BLOCKS[1] * len(values)
    return "".join(_BLOCKS[max(1, round(v / top * 8))] if v else _BLOCKS[0] for v in values)


def _bar_table(counts: dict[str, int], title: str, width: int = 12) -> Table:
    total = sum(counts.values())
    table = Table(title=title, title_justify="left", expand=True, box=None, padding=(0, 1))
    table.add_column("name", no_wrap=True, overflow="ellipsis", ratio=2)
    table.add_column("", no_wrap=True, ratio=3)
    table.add_column("events", justify="right", no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    if not counts:
        table.add_row(Text("no events in this window", style="dim"), "", "", "")
    top = max(counts.values(), default=0)
    for name, n in counts.items():
        bar = "█" * max(1, round(n / top * width)) if top else ""
        table.add_row(name, Text(bar, style="cyan"), f"{n:,}", f"{100 * n / total:.1f}%")
    return table


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _mb(value: float) -> str:
    return f"{value:,.1f} MB"


class DashboardApp(App[None]):
    """The live dashboard of one CelFlow database (read-only)."""

    TITLE = "CelFlow"
    CSS = """
    Grid#panels { grid-size: 3 2; grid-gutter: 0 1; height: 22; }
    .panel { border: round $accent; padding: 0 1; height: 100%; overflow: hidden hidden; }
    #bottom { height: 1fr; }
    #recent-box { width: 2fr; border: round $accent; }
    #detail { width: 1fr; border: round $accent; padding: 0 1; }
    #filter { height: 3; }
    #rate-line { height: 3; }
    DataTable { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("p", "pause", "Pause"),
        Binding("w", "window", "Window"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "leave_filter", "Leave filter", show=False),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(self, source: DashboardSource, *, interval: float = 1.0, show_timings: bool = True) -> None:
        super().__init__()
        self.source = source
        self.interval = interval
        self.show_timings = show_timings  # off for snapshot tests: timings differ from run to run
        self.window = "hour"
        self.filters = Filters()
        self.paused = False
        self.snapshot: Snapshot | None = None
        self.refreshes = 0
        self.selected: StoredEvent | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Grid(id="panels"):
            yield Static(id="capture", classes="panel")
            with Vertical(classes="panel", id="rate-panel"):
                yield Static(id="rate-title")
                yield Sparkline([], id="rate-line")
                yield Static(id="rate-types")
            yield Static(id="performance", classes="panel")
            yield Static(id="types", classes="panel")
            yield Static(id="sources", classes="panel")
            yield Static(id="learning", classes="panel")
        yield Input(placeholder="filter recent events: type:file_op source:filesystem words  (/ to edit)", id="filter")
        with Horizontal(id="bottom"):
            with Vertical(id="recent-box"):
                yield DataTable(id="recent", cursor_type="row", zebra_stripes=True)
            yield Static(id="detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#recent", DataTable)
        table.add_columns("id", "time", "type", "action", "source", "data")
        self.query_one("#detail", Static).update(Text("select an event (↑↓) to see its data", style="dim"))
        table.focus()  # keys go to the app; / moves to the filter box
        self.load()
        self.set_interval(self.interval, self.tick)

    def tick(self) -> None:
        if not self.paused:
            self.load()

    @work(thread=True, exclusive=True, group="refresh")
    def load(self) -> None:
        """Read a snapshot on a worker thread (the UI never waits for the database)."""
        try:
            snapshot = self.source.snapshot(self.window, self.filters)
        except CelflowError as exc:  # closed while quitting, or a read failed: say so, keep going
            if not isinstance(exc, DatabaseClosedError):
                self.call_from_thread(self.notify, str(exc), title="refresh failed", severity="error")
            return
        self.call_from_thread(self.show, snapshot)

    # -- rendering -----------------------------------------------------------------------------

    def show(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.refreshes += 1
        state = "paused" if self.paused else f"every {self.interval:g} s"
        self.sub_title = f"{self.source.path} · window: last {snap.window} · {state}"
        self.query_one("#capture", Static).update(self._capture(snap))
        self.query_one("#rate-title", Static).update(
            Text(f"events per minute, last {RATE_MINUTES} min · now {snap.rate_now:,.1f}/s", style="bold")
        )
        self.query_one("#rate-line", Sparkline).data = [float(v) for v in snap.per_minute]
        types = Table(box=None, expand=True, padding=(0, 1), show_header=False)
        types.add_column(no_wrap=True, overflow="ellipsis")
        types.add_column(no_wrap=True)
        types.add_column(justify="right", no_wrap=True)
        for kind, values in snap.per_minute_by_type.items():
            types.add_row(kind, Text(_spark(values[-20:]), style="green"), f"{values[-1]:,}/min")
        self.query_one("#rate-types", Static).update(types)
        self.query_one("#performance", Static).update(self._performance(snap))
        self.query_one("#types", Static).update(_bar_table(snap.by_type, f"event types, last {snap.window}"))
        self.query_one("#sources", Static).update(_bar_table(snap.by_source, f"top sources, last {snap.window}"))
        self.query_one("#learning", Static).update(self._learning(snap))
        self._recent(snap)

    def _capture(self, snap: Snapshot) -> Table:
        table = Table(title="capture", title_justify="left", box=None, expand=True, show_header=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        service = snap.service
        table.add_row("events", "counting…" if snap.total is None else f"{snap.total:,}")
        table.add_row("today", f"{snap.today:,}")
        table.add_row("last hour", f"{snap.last_hour:,}")
        if snap.window != "hour":
            table.add_row(f"last {snap.window}", f"{snap.in_window:,}")
        table.add_row("duplicates (this run)", f"{service['duplicates']:,}" if service else "-")
        table.add_row("dropped (this run)", f"{service['dropped']:,}" if service else "-")
        if not self.source.is_file:  # the server's WAL is its own: only the tables' size is CelFlow's
            table.add_row("database (PostgreSQL)", _mb(snap.sizes.get("database_size_mb", 0.0)))
        else:
            table.add_row("database", _mb(snap.sizes.get("file_size_mb", 0.0)))
            table.add_row("WAL", _mb(snap.sizes.get("wal_size_mb", 0.0)))
        return table

    def _performance(self, snap: Snapshot) -> Group:
        table = Table(title="performance", title_justify="left", box=None, expand=True, show_header=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        service = snap.service
        if service:
            table.add_row("service", "running" if service["healthy"] else "UNHEALTHY")
            table.add_row("ingest now", f"{service['events_per_second']:,.1f}/s")
            table.add_row("batch latency", f"{service['avg_batch_ms']:,.1f} ms avg")
            table.add_row("queue", f"{service['queue_size']:,} / {service['max_queue_size']:,}")
            table.add_row("stored this run", f"{service['total_stored']:,}")
        else:
            reading = "the file" if self.source.is_file else "the database"
            table.add_row("service", Text(f"not running (reading {reading})", style="dim"))
        table.add_row("ingest, last 10 s", f"{snap.rate_now:,.1f}/s")
        table.add_row("this refresh", f"{snap.query_ms:,.1f} ms" if self.show_timings else "-")
        return Group(table)

    def _learning(self, snap: Snapshot) -> Group:
        table = Table(title="AI learning", title_justify="left", box=None, expand=True)
        table.add_column("pattern type", no_wrap=True, overflow="ellipsis")
        table.add_column("count", justify="right")
        table.add_column("avg conf.", justify="right")
        if not snap.patterns:
            table.add_row(Text("no patterns yet", style="dim"), "", "")
        for kind, n, confidence in snap.patterns[:5]:
            table.add_row(kind, f"{n:,}", f"{confidence:.2f}")
        parts: list[Any] = [table]
        if snap.newest_patterns:
            newest = snap.newest_patterns[0]
            parts.append(
                Text(f"newest: {newest.pattern_type} ({newest.confidence:.2f}) {newest.created_at}", style="dim")
            )
        stats = snap.system_stats
        if stats:
            latest = stats[0]
            embryos = [s.active_embryos or 0 for s in reversed(stats)]
            fitness = [round((s.avg_fitness or 0) * 100) for s in reversed(stats)]
            parts.append(Text(f"embryos {latest.active_embryos} {_spark(embryos)}"))
            parts.append(
                Text(f"fitness {latest.avg_fitness if latest.avg_fitness is not None else '-'} {_spark(fitness)}")
            )
        else:
            parts.append(Text("no system stats yet", style="dim"))
        return Group(*parts)

    def _recent(self, snap: Snapshot) -> None:
        table = self.query_one("#recent", DataTable)
        keep = table.cursor_row
        table.clear()
        for event in snap.recent:
            data = orjson.dumps(event.data).decode()
            table.add_row(
                str(event.id),
                _when(event.timestamp),
                event.event_type,
                event.action or "",
                event.source,
                data if len(data) <= 80 else data[:79] + "…",
                key=str(event.id),
            )
        if snap.recent:
            table.move_cursor(row=min(keep, len(snap.recent) - 1))
        box = self.query_one("#recent-box", Vertical)
        note = f" · {snap.recent_note}" if snap.recent_note else ""
        box.border_title = f"recent events ({len(snap.recent)}){note}"

    def on_data_table_row_highlighted(self, message: DataTable.RowHighlighted) -> None:
        snap = self.snapshot
        if snap is None or message.row_key.value is None:
            return
        event = next((e for e in snap.recent if str(e.id) == message.row_key.value), None)
        if event is not None:
            self.selected = event
            detail = orjson.dumps(event.to_dict(), option=orjson.OPT_INDENT_2).decode()
            self.query_one("#detail", Static).update(Text(detail))

    # -- keys ----------------------------------------------------------------------------------

    def action_pause(self) -> None:
        self.paused = not self.paused
        if self.snapshot is not None:
            self.show(self.snapshot)

    def action_window(self) -> None:
        names = list(WINDOWS)
        self.window = names[(names.index(self.window) + 1) % len(names)]
        self.load()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.query_one("#recent", DataTable).focus()

    def action_help(self) -> None:
        self.notify(HELP, title="keys", timeout=8)

    def on_input_submitted(self, message: Input.Submitted) -> None:
        self.filters = Filters.parse(message.value)
        self.query_one("#recent", DataTable).focus()
        self.load()


def run_dashboard(
    location: str | os.PathLike[str] | Location,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    interval: float = 1.0,
) -> None:
    """Open ``location`` (a database file or a ``postgresql://`` URL) read-only and run the dashboard
    until the user quits; ``data_dir`` holds the running service's ``service.json`` (see DashboardSource)."""
    source = DashboardSource(location, data_dir=data_dir)
    try:
        DashboardApp(source, interval=interval).run()
    finally:
        source.close()
