"""The seed's events tool: ``python tools/celflow_events.py ...`` is ``celflow events ...``."""

import sys

if __name__ == "__main__":
    try:
        from celflow.cli import main
    except ImportError as exc:
        sys.exit(f"celflow is not installed in this Python ({exc}); run `make run` or `. .venv/bin/activate` first")
    sys.exit(main(["events", *sys.argv[1:]]))
