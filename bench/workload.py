"""A deterministic, realistic workload of desktop-capture events for CelFlow benchmarks.

Events are dicts in CelFlow's input shape (``event_type``, ``source``, ``action``, ``timestamp``,
``data``). The mix: 8 event types from 20 sources, a median ``data`` of ~300 bytes of JSON,
~5% large events (2-8 KB of repetitive clipboard or log text), ~1% exact duplicates of a recent
event (the same dict object, which CelFlow's dedup drops), a rare word (:data:`RARE_WORD`) in about
one event in 100,000, and timestamps spread over
:data:`SPAN_DAYS` days ending at ``end``, increasing with a little capture jitter.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from celflow import prepare_event

__all__ = ["RARE_WORD", "SOURCES", "SPAN_DAYS", "encode_rows", "generate", "iter_events"]

#: Days covered by a workload: below CelFlow's default retention (30 days), so nothing expires.
SPAN_DAYS = 21
LARGE_FRACTION = 0.05
DUPLICATE_FRACTION = 0.01
JITTER_FRACTION = 0.03  # events captured slightly out of order (a second or two late)
#: A word in about one event in :data:`RARE_EVERY` (chosen by position, so the random stream, and
#: every other event, is the same as without it): what a search for a rare word finds.
RARE_WORD = "quetzalcoatl"
RARE_EVERY = 100_003

#: event type -> (weight, sources, actions)
EVENT_TYPES: dict[str, tuple[float, tuple[str, ...], tuple[str, ...]]] = {
    "file_op": (
        0.22,
        ("fs_watcher", "fsevents_downloads", "vscode_plugin"),
        ("created", "modified", "deleted", "moved"),
    ),
    "app_focus": (0.16, ("app_monitor", "accessibility_api"), ("focus_gained", "focus_lost")),
    "process": (0.12, ("process_monitor", "psutil_poller", "terminal_hook", "system_log"), ("started", "exited")),
    "clipboard": (0.06, ("clipboard_monitor", "slack_integration"), ("copy", "paste")),
    "network": (0.12, ("network_monitor", "netstat_poller"), ("connect", "disconnect", "transfer")),
    "window": (0.12, ("window_manager", "x11_window_watcher"), ("open", "close", "resize", "move")),
    "browser_tab": (0.12, ("chrome_extension", "firefox_extension", "safari_extension"), ("open", "close", "navigate")),
    "keyboard_activity": (0.08, ("input_monitor", "ime_hook"), ("typing_burst", "shortcut")),
}
SOURCES = sorted({s for _, sources, _ in EVENT_TYPES.values() for s in sources})

_APPS = ["Code", "Firefox", "Slack", "Terminal", "Finder", "Mail", "Zoom", "Spotify", "Obsidian", "Figma"]
_DIRS = ["Documents/projects/celflow", "Downloads", "Desktop", "Documents/notes", "src/app/components", "Pictures/2024"]
_EXTS = [".py", ".md", ".pdf", ".png", ".docx", ".json", ".txt", ".tsx", ".csv", ".zip"]
_WORDS = ["alpha", "beta", "report", "draft", "final", "review", "notes", "budget", "design", "plan", "invoice"]
_HOSTS = ["github.com", "docs.python.org", "mail.google.com", "news.ycombinator.com", "stackoverflow.com", "slack.com"]
_CONTEXT = {
    "host": "alice-laptop",
    "user": "alice",
    "device_id": "9f1c2e7a4b8d4e0f8a6b3c5d7e9f1a2b",
    "agent": "celflow-capture/0.1.0",
    "tz": "Europe/Berlin",
}
_LOG_LEVELS = ["INFO", "INFO", "INFO", "DEBUG", "WARNING", "ERROR"]


def _name(rng: random.Random) -> str:
    return "_".join(rng.sample(_WORDS, rng.randint(1, 3))) + rng.choice(_EXTS)


def _path(rng: random.Random) -> str:
    return f"/home/alice/{rng.choice(_DIRS)}/{_name(rng)}"


def _url(rng: random.Random) -> str:
    return f"https://{rng.choice(_HOSTS)}/{'/'.join(rng.sample(_WORDS, 3))}?id={rng.randint(1, 99999)}"


def _log_text(rng: random.Random, ts: float, size: int) -> str:
    """Repetitive log-like lines (what a crash dump or a pasted terminal output looks like)."""
    lines, total = [], 0
    while total < size:
        line = (
            f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(ts))}.{rng.randint(0, 999):03d}Z "
            f"{rng.choice(_LOG_LEVELS)} [worker-{rng.randint(1, 8)}] request completed "
            f"path=/api/v1/{rng.choice(_WORDS)} status={rng.choice((200, 200, 200, 304, 404, 500))} "
            f"duration_ms={rng.randint(1, 900)}"
        )
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)[:size]


def _data(rng: random.Random, event_type: str, action: str, ts: float, seq: int) -> dict[str, Any]:
    """The ``data`` of one event: a few realistic fields plus the capture context."""
    pid = rng.randint(300, 65000)
    app = rng.choice(_APPS)
    if event_type == "file_op":
        data: dict[str, Any] = {
            "path": _path(rng),
            "size": rng.randint(0, 50_000_000),
            "is_directory": rng.random() < 0.05,
            "mtime": round(ts - rng.uniform(0, 5), 6),
        }
        if action == "moved":
            data["dest_path"] = _path(rng)
    elif event_type == "app_focus":
        data = {
            "app_name": app,
            "bundle_id": f"com.example.{app.lower()}",
            "pid": pid,
            "window_title": f"{_name(rng)} — {app}",
            "duration_ms": rng.randint(50, 600_000),
        }
    elif event_type == "process":
        data = {
            "pid": pid,
            "ppid": rng.randint(1, 3000),
            "name": app.lower(),
            "exe": f"/usr/bin/{app.lower()}",
            "cpu_percent": round(rng.uniform(0, 200), 1),
            "memory_rss": rng.randint(10**6, 4 * 10**9),
            "num_threads": rng.randint(1, 120),
            "status": rng.choice(("running", "sleeping", "zombie")),
        }
    elif event_type == "clipboard":
        text = " ".join(rng.choices(_WORDS, k=rng.randint(3, 25)))
        data = {"content_type": "text/plain", "length": len(text), "text": text, "app": app}
    elif event_type == "network":
        data = {
            "local_addr": f"192.168.1.{rng.randint(2, 254)}:{rng.randint(1024, 65535)}",
            "remote_host": rng.choice(_HOSTS),
            "remote_port": rng.choice((443, 443, 80, 22, 5432)),
            "protocol": rng.choice(("tcp", "udp")),
            "bytes_sent": rng.randint(0, 10**7),
            "bytes_recv": rng.randint(0, 10**8),
            "pid": pid,
            "process": app.lower(),
        }
    elif event_type == "window":
        data = {
            "window_id": rng.randint(1, 10**6),
            "title": f"{_name(rng)} — {app}",
            "app": app,
            "x": rng.randint(0, 2560),
            "y": rng.randint(0, 1440),
            "width": rng.randint(200, 2560),
            "height": rng.randint(150, 1440),
            "display": rng.randint(0, 1),
            "workspace": rng.randint(1, 4),
        }
    elif event_type == "browser_tab":
        data = {
            "url": _url(rng),
            "title": " ".join(rng.sample(_WORDS, 4)).title(),
            "tab_id": rng.randint(1, 5000),
            "window_id": rng.randint(1, 20),
            "referrer": _url(rng) if rng.random() < 0.5 else None,
            "incognito": rng.random() < 0.02,
        }
    else:  # keyboard_activity: rates only, never key contents
        data = {
            "keys_per_minute": rng.randint(0, 400),
            "burst_ms": rng.randint(100, 120_000),
            "app": app,
            "shortcut": rng.choice((None, "cmd+s", "cmd+c", "cmd+v", "ctrl+shift+p")),
            "backspace_ratio": round(rng.random() * 0.3, 3),
        }
    data["context"] = {**_CONTEXT, "session": f"s{seq // 5000:05d}", "seq": seq}
    if seq % RARE_EVERY == RARE_EVERY // 2:
        data["note"] = f"mentions {RARE_WORD} once"
    return data


def iter_events(n: int, *, seed: int = 42, end: float | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``n`` events (duplicates included), the same ones for the same ``n``, ``seed`` and ``end``.

    ``end`` (seconds since the epoch, default now) is the timestamp the workload ends at.
    """
    rng = random.Random(seed)
    end = time.time() if end is None else end
    start = end - SPAN_DAYS * 86400
    gap = (end - start) / max(n, 1)
    types = list(EVENT_TYPES)
    weights = [EVENT_TYPES[t][0] for t in types]
    recent: deque[dict[str, Any]] = deque(maxlen=2000)
    t = start
    for seq in range(n):
        if recent and rng.random() < DUPLICATE_FRACTION:
            yield rng.choice(recent)  # a producer resending an event it already sent
            continue
        t = min(t + rng.expovariate(1 / gap), end)
        ts = t - rng.uniform(0.0, 2.0) if rng.random() < JITTER_FRACTION else t
        event_type = rng.choices(types, weights)[0]
        _, sources, actions = EVENT_TYPES[event_type]
        action = rng.choice(actions)
        data = _data(rng, event_type, action, ts, seq)
        if rng.random() < LARGE_FRACTION:
            text = _log_text(rng, ts, rng.randint(2048, 8192))
            if event_type == "clipboard":
                data["text"], data["length"] = text, len(text)
            else:
                data["output_tail"] = text
        event = {
            "event_type": event_type,
            "source": rng.choice(sources),
            "action": action,
            "timestamp": round(ts, 6),
            "data": data,
        }
        recent.append(event)
        yield event


def generate(n: int, *, seed: int = 42, end: float | None = None) -> list[dict[str, Any]]:
    """The first ``n`` events of :func:`iter_events` as a list."""
    return list(iter_events(n, seed=seed, end=end))


def encode_rows(events: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The rows CelFlow would insert for ``events`` (its own encoding), for a raw-SQLite baseline."""
    now = time.time()
    return [tuple(prepare_event(e, now=now)) for e in events]
