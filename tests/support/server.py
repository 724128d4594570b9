"""Real auditfed servers for tests: a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

AUDITFED = [sys.executable, "-m", "auditfed.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the ``auditfed`` CLI as a user would."""
    result = subprocess.run(
        [*AUDITFED, *args], input=input.decode() if input is not None else None,
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"auditfed {' '.join(args)} failed: {result.stderr}{result.stdout}")
    return result


class Server:
    """``auditfed serve`` in a subprocess, with its admin token and data dir."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None,
                 store: str | None = None) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.env = env or {}
        #: The store URL (``postgresql://...``), or ``None`` for SQLite in the data dir.
        self.store = store
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.admin_token = ""
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 30) -> Server:
        if not (self.data_dir / "log.key").exists():
            store = ["--store", self.store] if self.store else []
            self.admin_token = run_cli("init", "--data", str(self.data_dir), *store,
                                       check=True).stdout.strip()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*AUDITFED, "serve", "--data", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}",
             *self.extra],
            stdout=log, stderr=log, env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not start in time")

    def token(self, role: str, **binding: str) -> str:
        args = ["token", "create", "--role", role, "--data", str(self.data_dir)]
        for key, value in binding.items():
            args += [f"--{key}", value]
        return run_cli(*args, check=True).stdout.strip()

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    @property
    def store_kind(self) -> str:
        return "postgres" if self.store else "sqlite"

    def sql(self, statement: str, params: tuple = (), *, fetch: bool = True) -> list[tuple]:
        """Run SQL on the server's store directly (``?`` placeholders, either engine)."""
        if self.store:
            import psycopg

            from auditfed.store.postgres import _split_options

            with psycopg.connect(_split_options(self.store)[0], autocommit=True) as conn:
                cursor = conn.execute(statement.replace("?", "%s"), params)
                rows = cursor.fetchall() if fetch and cursor.description else []
                return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]
        import sqlite3

        conn = sqlite3.connect(self.data_dir / "auditfed.db", isolation_level=None)
        try:
            conn.execute("ATTACH DATABASE ? AS search", (str(self.data_dir / "auditfed.index.db"),))
            return conn.execute(statement, params).fetchall()
        finally:
            conn.close()

    def indexed_size(self) -> int:
        """How far the store's query index reaches (either engine)."""
        from auditfed.store import open_store

        store = open_store(self.store or f"sqlite:///{self.data_dir / 'auditfed.db'}")
        try:
            return store.indexed_size()
        finally:
            store.close()

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
