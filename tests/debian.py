"""Debian packages the tests need (fiu-utils, nats-server, postgresql), installed with apt-get when missing."""

from __future__ import annotations

import os
import shutil
import subprocess

__all__ = ["apt_install"]


def apt_install(*packages: str) -> str | None:
    """Install ``packages`` with apt-get; None when done, else the reason it could not be."""
    names = " ".join(packages)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"installing {names} needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # another apt-get on the machine holds the lock for a while: wait for it rather than fail
    install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *packages]
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:  # a stale package list: refresh it once
        subprocess.run(
            ["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=300"], capture_output=True, env=env, timeout=900
        )
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        return f"apt-get install {names} failed: {done.stderr.strip()[-300:]}"
    return None
