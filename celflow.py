"""The seed's headless entry point: ``python celflow.py`` is ``celflow run``.

Run it with the project's environment (``make run`` sets it up, or ``. .venv/bin/activate``).
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# This file would shadow the `celflow` package when the project folder is on sys.path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

if __name__ == "__main__":
    try:
        from celflow.cli import main
    except ImportError as exc:
        sys.exit(f"celflow is not installed in this Python ({exc}); run `make run` or `. .venv/bin/activate` first")
    sys.exit(main(["run", *sys.argv[1:]]))
else:  # imported as `celflow` by mistake: hand over the real package
    import importlib

    del sys.modules[__name__]
    sys.modules[__name__] = importlib.import_module(__name__)
