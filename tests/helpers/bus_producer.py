"""Subprocess side of tests/test_bus.py: a producer process publishing through NATS JetStream.

Usage (with the virtualenv's Python):

    bus_producer.py URL STREAM SUBJECT NAME COUNT OUT

Publishes COUNT events (source NAME, data {"producer": NAME, "n": i}, no timestamp: the publisher
stamps it) in calls of 25 events, 20 ms apart, so the stream keeps flowing for a while; then
flushes, writes one JSON object a line to OUT for each event (its data, and the clock just before
and just after the call that published it: its stamped timestamp lies between), prints
``done N`` and exits 0.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from celflow.bus import BusPublisher

CALL = 25


async def main(url: str, stream: str, subject: str, name: str, count: int, out: str) -> None:
    """Publish, flush, then record what was sent."""
    publisher = BusPublisher(url, stream=stream, subject=subject, batch_size=50, name=name)
    await publisher.start()
    sent = []
    for first in range(0, count, CALL):
        events = [
            {"event_type": "bus_test", "source": name, "data": {"producer": name, "n": n}}
            for n in range(first, min(first + CALL, count))
        ]
        before = time.time()
        await publisher.publish(events)
        after = time.time()
        sent.extend({"data": event["data"], "not_before": before, "not_after": after} for event in events)
        await asyncio.sleep(0.02)
    await publisher.flush(timeout=60)
    stats = publisher.stats()
    await publisher.stop()
    with open(out, "wb") as f:
        for record in sent:
            f.write(orjson.dumps(record) + b"\n")
    print(f"done {stats['published']}", flush=True)


if __name__ == "__main__":
    url, stream, subject, name, count, out = sys.argv[1:7]
    asyncio.run(main(url, stream, subject, name, int(count), out))
