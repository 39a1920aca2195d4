"""A real PostgreSQL server for tests and benches: a temporary data directory, 127.0.0.1 on a free port.

PostgreSQL refuses to run as root (and CI runs as root), so initdb and pg_ctl run as the `postgres`
user through `runuser -u postgres --` when this process is root. `make test` installs Debian's
`postgresql` when initdb is missing. The server is stopped at the end even when tests fail.

    with PostgresServer() as pg:
        url = pg.create_database("t1")      # postgresql://postgres@127.0.0.1:PORT/t1
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ["PostgresServer", "find_bin", "pg_server", "pg_url"]


def find_bin() -> Path | None:
    """Returns the folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    hits = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(hits[-1]).parent if hits else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A PostgreSQL server of its own (temporary data dir, trust auth on 127.0.0.1 only), for a test session."""

    def __init__(self, durable: bool = False) -> None:
        self.bin = find_bin()
        if self.bin is None:
            raise FileNotFoundError("PostgreSQL is not installed (no initdb); `make test` installs it "
                                    "(apt-get install -y postgresql)")
        self.durable, self.port = durable, _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="babysit-pg-"))
        self.data = self.dir / "data"
        self._n = itertools.count()

    def _as_owner(self, *cmd: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)

    def start(self) -> "PostgresServer":
        """Runs initdb and starts the server; returns self."""
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(self._as_owner(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                                      "--auth=trust", "-E", "UTF8", "--no-sync"),
                       check=True, capture_output=True)
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=300"
        if not self.durable:  # a test server: nothing to keep after a crash
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts,
                                      "-l", str(self.dir / "server.log"), "-w", "-t", "60", "start"),
                       check=True, capture_output=True)
        return self

    def stop(self) -> None:
        """Stops the server (fast shutdown) and removes its data directory."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                          "-w", "stop"), capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str = "postgres") -> str:
        """Returns the SQLAlchemy URL of a database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str | None = None) -> str:
        """Creates a fresh database; returns its URL."""
        import psycopg2

        name = name or f"t{next(self._n)}"
        con = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        con.close()
        return self.url(name)

    def __enter__(self) -> "PostgresServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (skipped where PostgreSQL or psycopg2 is not installed)."""
    pytest.importorskip("psycopg2", reason="the postgres extra is not installed: pip install -e '.[postgres]'")
    if find_bin() is None:
        pytest.skip("PostgreSQL is not installed: `make test` installs it (apt-get install -y postgresql)")
    with PostgresServer() as pg:
        yield pg


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh database of the session's server, as a postgresql:// URL."""
    return pg_server.create_database()
