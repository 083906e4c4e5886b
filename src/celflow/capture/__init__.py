"""Capture sources of `celflow run`: the filesystem (watchdog) and processes (psutil)."""
