"""A throwaway PostgreSQL server for tests: installed if needed, started, torn down.

Reusable by any test that needs a real PostgreSQL (the pgaudit source tests, a
PostgreSQL store, ...)::

    with postgres_server({"shared_preload_libraries": "pgaudit"},
                         packages=("postgresql-15-pgaudit",)) as pg:
        with psycopg.connect(pg.conninfo()) as conn: ...
        pg.log_files["stderr"].read_text()

* If the Debian packages are missing and we are root, ``apt-get update`` (once per
  process) and ``apt-get install -y`` them; otherwise :class:`PostgresUnavailable`.
* ``initdb`` a cluster in a temp dir (as the ``postgres`` OS user when running as root,
  since initdb refuses root), trust auth on loopback only.
* Start it on a free loopback port with the given server settings, wait until it
  accepts connections; stop it and delete everything at the end.

Logging: by default the server logs to ``<dir>/log/postgresql.log`` (stderr format)
through the logging collector; add ``jsonlog`` to ``log_destination`` to get
``postgresql.json`` too. ``log_files`` maps destination -> path.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_VERSION = "15"
_apt_updated = False


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be provided here (not installed and not root, install failed)."""


def _installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package],
        capture_output=True, text=True, check=False,
    )
    return result.returncode == 0 and "install ok installed" in result.stdout


def ensure_packages(packages: Sequence[str]) -> None:
    """Install missing Debian packages (root only; ``apt-get update`` once)."""
    global _apt_updated
    have_dpkg = shutil.which("dpkg-query") is not None
    missing = [p for p in packages if not _installed(p)] if have_dpkg else list(packages)
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable(
            f"missing packages {missing} and cannot install them (need root and apt-get)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env,
                       capture_output=True, timeout=600)
        _apt_updated = True
    result = subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env,
                            capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise PostgresUnavailable(f"apt-get install {missing} failed: {result.stderr[-2000:]}")


def bindir(version: str = DEFAULT_VERSION) -> Path:
    candidate = Path(f"/usr/lib/postgresql/{version}/bin")
    if (candidate / "initdb").exists():
        return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise PostgresUnavailable(f"initdb for PostgreSQL {version} not found")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _os_user() -> str | None:
    """The OS user to run the server as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--home-dir", "/var/lib/postgresql", "--shell", "/bin/sh",
             "postgres"],
            check=True, capture_output=True,
        )
    return "postgres"


@dataclass
class PostgresServer:
    """A running throwaway cluster."""

    root: Path
    port: int
    settings: dict[str, str]
    bindir: Path
    os_user: str | None
    host: str = "127.0.0.1"
    superuser: str = "postgres"
    log_files: dict[str, Path] = field(default_factory=dict)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def conninfo(self, user: str | None = None, dbname: str = "postgres", **extra: str) -> str:
        parts = {"host": self.host, "port": str(self.port), "user": user or self.superuser,
                 "dbname": dbname, **extra}
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def url(self, user: str | None = None, dbname: str = "postgres") -> str:
        return f"postgresql://{user or self.superuser}@{self.host}:{self.port}/{dbname}"

    def _run(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        cmd = ["runuser", "-u", self.os_user, "--", *args] if self.os_user else args
        return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]

    def start(self, timeout: float = 60) -> None:
        conf = self.datadir / "postgresql.conf"
        lines = [f"{k} = {_quote(v)}" for k, v in self.settings.items()]
        with conf.open("a") as fh:
            fh.write("\n# auditfed test settings\n" + "\n".join(lines) + "\n")
        result = self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w",
                            "-t", str(int(timeout)), "-l", str(self.root / "startup.log"),
                            "start"])
        if result.returncode != 0:
            log = ""
            for path in (self.root / "startup.log", *self.log_files.values()):
                with contextlib.suppress(OSError):
                    log += path.read_text(errors="replace")[-3000:]
            raise PostgresUnavailable(f"pg_ctl start failed: {result.stderr}\n{log}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = self._run([str(self.bindir / "pg_isready"), "-h", self.host,
                               "-p", str(self.port), "-U", self.superuser])
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresUnavailable("PostgreSQL did not become ready in time")

    def stop(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast",
                   "-w", "stop"])

    def wait_for_log(self, destination: str, needle: str, timeout: float = 10) -> str:
        """The log file's text once it contains ``needle`` (the collector writes async)."""
        path = self.log_files[destination]
        deadline = time.monotonic() + timeout
        content = ""
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                content = path.read_text(errors="replace")
                if needle in content:
                    return content
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in {path} after {timeout}s")


def _quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@contextlib.contextmanager
def postgres_server(
    settings: Mapping[str, str] | None = None,
    *,
    version: str = DEFAULT_VERSION,
    packages: Sequence[str] = (),
    log_line_prefix: str = "%m [%p] %q%u@%d ",
) -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL ``version`` with ``settings``; yield it; clean up."""
    ensure_packages([f"postgresql-{version}", *packages])
    bins = bindir(version)
    os_user = _os_user()
    root = Path(tempfile.mkdtemp(prefix="auditfed-pg-"))
    try:
        if os_user:
            info = pwd.getpwnam(os_user)
            os.chown(root, info.pw_uid, info.pw_gid)
        root.chmod(0o755)
        server = PostgresServer(root=root, port=free_port(), settings={}, bindir=bins,
                                os_user=os_user)
        init = server._run([str(bins / "initdb"), "-D", str(server.datadir), "-U", "postgres",
                            "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"])
        if init.returncode != 0:
            init = server._run([str(bins / "initdb"), "-D", str(server.datadir), "-U",
                                "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale",
                                "--no-sync"])
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {init.stderr}")
        log_dir = root / "log"
        merged = {
            "listen_addresses": server.host,
            "port": str(server.port),
            "unix_socket_directories": str(root),
            "logging_collector": "on",
            "log_directory": str(log_dir),
            "log_filename": "postgresql.log",
            "log_rotation_age": "0",
            "log_rotation_size": "0",
            "log_destination": "stderr",
            "log_line_prefix": log_line_prefix,
            "log_timezone": "UTC",
            "fsync": "off",
            **dict(settings or {}),
        }
        server.settings = merged
        destinations = [d.strip() for d in merged["log_destination"].split(",")]
        if merged.get("logging_collector") == "on":
            base = log_dir / merged["log_filename"]
            if "stderr" in destinations:
                server.log_files["stderr"] = base
            if "jsonlog" in destinations:
                server.log_files["jsonlog"] = base.with_suffix(".json")
            if "csvlog" in destinations:
                server.log_files["csvlog"] = base.with_suffix(".csv")
        else:
            server.log_files["stderr"] = root / "startup.log"
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
