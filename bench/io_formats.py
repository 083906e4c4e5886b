"""Export and import rates per format, and the export's peak memory.

    .venv/bin/python bench/io_formats.py --events 1000000                      # rates, 1M events
    .venv/bin/python bench/io_formats.py --events 10000000 --formats jsonl --no-import   # memory, 10M

Builds the database with the workload (through the manager) if ``--db`` does not exist, then
exports every event in each format (timed; peak RssAnon over the idle baseline sampled every
20 ms) and imports the file into an empty database (timed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _util import MemorySampler
from celflow import EventDatabase
from celflow._export import export_events, import_events
from dashboard import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", help="database to export (built with --events events if missing)")
    parser.add_argument("--formats", nargs="+", default=["jsonl", "csv", "parquet"])
    parser.add_argument("--no-import", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        db_path = args.db or os.path.join(folder, "source.db")
        if not os.path.exists(db_path):
            print(f"building {db_path} with {args.events:,} events...", flush=True)
            asyncio.run(build(db_path, args.events))
        with EventDatabase(db_path, readonly=True) as db:
            total = db.count_events()
        print(f"{total:,} events; exports and imports of all of them:")
        for fmt in args.formats:
            out = Path(folder) / f"export.{fmt}"
            with EventDatabase(db_path, readonly=True) as db, MemorySampler() as mem:
                started = time.perf_counter()
                count = export_events(db, out)
                export_s = time.perf_counter() - started
            size = out.stat().st_size
            line = (
                f"{fmt:>8}: export {count / export_s:>9,.0f} events/s ({export_s:.1f} s, {size / count:.0f} B/event, "
                f"peak RssAnon +{mem.peak - mem.before:.1f} MiB)"
            )
            if not args.no_import:
                with EventDatabase(Path(folder) / f"import-{fmt}.db") as target:
                    started = time.perf_counter()
                    report = import_events(target, out)
                    import_s = time.perf_counter() - started
                assert report.imported == count and report.rejected == 0, report.to_dict()
                line += f"; import {count / import_s:>9,.0f} events/s ({import_s:.1f} s)"
            print(line, flush=True)
            out.unlink()


if __name__ == "__main__":
    main()
