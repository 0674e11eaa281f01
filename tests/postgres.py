"""A throwaway PostgreSQL server for the multi-worker tests: initdb in a temporary directory,
listening on 127.0.0.1 on a free port, trust authentication, removed afterwards.

As root (CI here) the server runs as the `postgres` user, since PostgreSQL refuses to run as
root. Missing binaries are a failure under CI and a skip elsewhere.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tui_tuner.adapters.vllm_server import free_port


def _bindir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield the URL of a fresh, empty database `tuner` on a server of its own."""
    bindir = _bindir()
    if bindir is None or (os.geteuid() == 0 and not _has_user("postgres")):
        message = "PostgreSQL is not installed (initdb not found, or no postgres user)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    data = Path(tempfile.mkdtemp(prefix="tui-tuner-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(data, account.pw_uid, account.pw_gid)
    port = free_port()
    server: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(data / "db"), "-U",
                                  "postgres", "--auth=trust", "--no-sync"]),
                       check=True, capture_output=True)  # fmt: skip
        log = (data / "server.log").open("wb")
        server = subprocess.Popen(
            _as_owner([str(bindir / "postgres"), "-D", str(data / "db"), "-h", "127.0.0.1",
                       "-p", str(port), "-k", str(data), "-c", "fsync=off"]),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        admin = _connect(port, "postgres", server)
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE tuner")
        admin.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/tuner"
    finally:
        if server is not None:
            server.terminate()  # "smart" shutdown waits for clients; the tests have ended
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(data, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _connect(port: int, db: str, server: subprocess.Popen[bytes]) -> psycopg.Connection[Any]:
    deadline = time.monotonic() + 30
    while True:
        try:
            return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=db)
        except psycopg.OperationalError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
