"""A real PostgreSQL server for the tests: the one on 127.0.0.1:5432 (or ``CELFLOW_TEST_POSTGRES_URL``),
started with the system's own tools when it is installed but stopped, installed from Debian's
package when it is missing (as root, with apt-get); otherwise a loud skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from debian import apt_install

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
URL = os.environ.get("CELFLOW_TEST_POSTGRES_URL", DEFAULT_URL)


def _reachable() -> str | None:
    """None if the server answers, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'celflow[postgres]')"
    try:
        with psycopg.connect(URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.Error as exc:
        return f"{URL}: {exc}".strip()


def _start() -> None:
    """Start a Debian cluster that is installed but not running (what the machine's boot does)."""
    if shutil.which("pg_ctlcluster") and os.path.isdir("/etc/postgresql"):
        for version in os.listdir("/etc/postgresql"):
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                capture_output=True,
                timeout=60,
            )


def _install() -> str | None:
    """Install Debian's PostgreSQL and make its new cluster what the tests expect: trust on
    127.0.0.1 for ``postgres``, and a ``test`` database. None when done, else why not."""
    if URL != DEFAULT_URL:
        return "CELFLOW_TEST_POSTGRES_URL names another server: not installing one"
    if os.path.isdir("/etc/postgresql"):
        return None  # installed: _start() is the way
    why = apt_install("postgresql")
    if why is not None:
        return why
    for version in os.listdir("/etc/postgresql"):
        hba = Path("/etc/postgresql") / version / "main" / "pg_hba.conf"
        # a cluster this test run just created: loopback-only trust, as on the machines the tests expect
        hba.write_text("host all postgres 127.0.0.1/32 trust\n" + hba.read_text())
    _start()
    for version in os.listdir("/etc/postgresql"):
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "reload"], timeout=60)
    created = subprocess.run(["runuser", "-u", "postgres", "--", "createdb", "test"], capture_output=True, text=True)
    if created.returncode != 0 and "already exists" not in created.stderr:
        return f"createdb test failed: {created.stderr.strip()[-300:]}"
    return None


_why_not: list[str | None] = []


def server_url() -> str:
    """The server's URL, or a loud skip saying why there is none."""
    if not _why_not:
        why = _reachable()
        if why is not None:
            _start()
            why = _reachable()
        if why is not None and not os.path.isdir("/etc/postgresql"):
            why = _install() or _reachable()
        _why_not.append(why)
    if _why_not[0] is not None:
        message = f"PostgreSQL is not available, so the PostgreSQL tests are SKIPPED: {_why_not[0]}"
        print("\n" + "!" * 20 + " " + message)
        pytest.skip(message)
    return URL


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL of a fresh, empty schema on the real server, dropped after the test."""
    import psycopg
    from psycopg import sql

    base = server_url()
    schema = f"celflow_test_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}schema={schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
