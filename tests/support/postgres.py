"""Throwaway local services for the tests and benchmarks: a PostgreSQL cluster.

Uses Debian's `postgresql` package (`apt-get install postgresql`); nothing here is needed
to use mm.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mm_platform.tracking.server import free_port


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs, or None when it is not installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found and shutil.which("initdb"):
        found = [Path(str(shutil.which("initdb")))]
    return found[-1].parent if found else None


@contextmanager
def postgres_cluster(database: str = "mlflow") -> Iterator[str]:
    """A PostgreSQL cluster on 127.0.0.1 in a temporary folder, with `database` owned by a
    role with a password; yields its URI (the password in it) and removes everything after.
    """
    import psycopg

    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="mm-pg-"))
    folder.chmod(0o755)
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(folder, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
                    "-U", "postgres", "--no-sync"], check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                    "-l", str(folder / "server.log"), "-w", "start"], check=True,
                   capture_output=True)  # fmt: skip
    try:
        password = f"pg-{secrets.token_hex(8)}"
        conninfo = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE mm LOGIN PASSWORD '{password}'")
            admin.execute(f"CREATE DATABASE {database} OWNER mm")
        yield f"postgresql://mm:{password}@127.0.0.1:{port}/{database}"
    finally:
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast",
                        "-w", "stop"], capture_output=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
