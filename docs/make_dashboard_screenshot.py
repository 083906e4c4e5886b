"""Write docs/dashboard.svg: the dashboard, exported by the app itself, on a demo database.

.venv/bin/python docs/make_dashboard_screenshot.py
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "bench"))
from celflow import EventDatabase  # noqa: E402
from celflow.dashboard import DashboardApp, DashboardSource  # noqa: E402
from workload import iter_events  # noqa: E402


def demo(path: Path) -> None:
    """A week of the benchmark's desktop mix, denser in the last hour, with patterns and stats."""
    now = time.time()
    rng = random.Random(7)
    with EventDatabase(path) as db:
        db.store_events_batch(list(iter_events(40_000, seed=7, end=now - 3600)))
        recent = list(iter_events(6_000, seed=8, end=now))
        for event in recent:
            event["timestamp"] = now - rng.random() * 3600
        db.store_events_batch(recent)
        for k in range(40):
            kind = rng.choice(["daily_routine", "app_sequence", "focus_block", "anomaly"])
            db.store_pattern(
                kind, round(rng.uniform(0.4, 0.98), 2), {"support": rng.randint(3, 90)}, embryo_id=f"e{k % 6}"
            )
        for k in range(30):
            db.record_system_stats(
                timestamp=now - 120 * (30 - k),
                total_events=40_000 + 200 * k,
                active_embryos=4 + k // 6,
                avg_fitness=round(0.52 + k * 0.011 + rng.uniform(-0.02, 0.02), 3),
            )


async def shoot(path: Path, out: Path) -> None:
    source = DashboardSource(path)
    source.total(wait=True)
    app = DashboardApp(source, interval=3600)
    async with app.run_test(size=(160, 48)) as pilot:
        while app.refreshes < 1:
            await pilot.pause(0.05)
        await pilot.press("down", "down")
        await pilot.pause(0.2)
        app.save_screenshot(out.name, path=str(out.parent))
    source.close()


def main() -> None:
    out = (HERE / "dashboard.svg").resolve()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)  # the title shows the path as given: no temporary folder in the picture
        demo(Path("events.db"))
        asyncio.run(shoot(Path("events.db"), out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
