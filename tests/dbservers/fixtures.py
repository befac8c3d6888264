"""Throwaway PostgreSQL 15 and MariaDB servers on loopback, one per test session.

Import the fixtures into a test module (``from dbservers.fixtures import mariadb, pg_dsn``).
Each server runs from Debian's packages (postgresql-15, mariadb-server-core), in a private
directory of its own under a 0755 parent (the ``postgres`` user must traverse it, which
pytest's 0700 ``tmp_path`` does not allow), on a free port, without systemd; the up-scripts
are bounded, and the down-script runs even when the up-script failed half-way.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

HERE = Path(__file__).resolve().parent
PARENT = Path(tempfile.gettempdir()) / "callwatch-dbservers"
#: The scripts' own waits are shorter; this only guards against something unforeseen.
SCRIPT_TIMEOUT = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(name: str) -> Iterator[int]:
    """Run ``{name}-up.sh BASE PORT`` (a port taken in between: try another), yield the port,
    and always run ``{name}-down.sh BASE`` and remove BASE."""
    PARENT.mkdir(mode=0o755, exist_ok=True)
    os.chmod(PARENT, 0o755)  # whatever the umask
    base = tempfile.mkdtemp(prefix=f"{name}-", dir=PARENT)
    try:
        for attempt in range(3):
            port = _free_port()
            up = subprocess.run([str(HERE / f"{name}-up.sh"), base, str(port)], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=SCRIPT_TIMEOUT)
            if up.returncode == 0:
                break
            subprocess.run([str(HERE / f"{name}-down.sh"), base], timeout=SCRIPT_TIMEOUT)
        else:
            pytest.fail(f"tests/dbservers/{name}-up.sh {base} {port} failed 3 times; last:\n{up.stdout}{up.stderr}")
        yield port
    finally:
        subprocess.run([str(HERE / f"{name}-down.sh"), base], timeout=SCRIPT_TIMEOUT)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A libpq connection string for database ``app`` on a real PostgreSQL 15."""
    with server("pg") as port:
        yield f"host=127.0.0.1 port={port} user=app password=app dbname=app"


@pytest.fixture(scope="session")
def mariadb() -> Iterator[dict[str, Any]]:
    """``pymysql.connect(**mariadb)`` arguments for database ``app`` on a real MariaDB."""
    with server("maria") as port:
        yield {"host": "127.0.0.1", "port": port, "user": "app", "password": "app", "database": "app"}
