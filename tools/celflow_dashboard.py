"""The seed's dashboard: ``python tools/celflow_dashboard.py [--db PATH]`` is ``celflow dashboard``."""

import sys

if __name__ == "__main__":
    try:
        from celflow.cli import main
    except ImportError as exc:
        sys.exit(f"celflow is not installed in this Python ({exc}); run `make run` or `. .venv/bin/activate` first")
    sys.exit(main(["dashboard", *sys.argv[1:]]))
