"""Which ASGI server keeps authenticated work served under slowloris (issue #16, item 2).

Run by hand, not by ``make bench``: ``python -m bench.server_choice [uvicorn-1000 |
uvicorn-guarded | hypercorn | granian ...]`` (hypercorn and granian are not auditfed
dependencies: ``pip install hypercorn granian`` into a scratch target and put it on
``PYTHONPATH`` to compare). Each candidate serves the same minimal ASGI app on
127.0.0.1; the script opens 1,000 connections that trickle a header line, POSTs every
0.25 s for at most 12 s (40 POSTs), then sends 50 unfinished 4 MB headers and reads
the server's RSS. The figures and the decision are in :mod:`auditfed.api.server`.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from support.server import free_port

APP = '''
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
'''

UVICORN = '''
import resource, sys, uvicorn
from app import app
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
kw = dict(host="127.0.0.1", port=int(sys.argv[2]), loop="uvloop", log_level="error", backlog=4096)
if sys.argv[1] == "uvicorn-1000":
    uvicorn.run(app, http="httptools", limit_concurrency=1000, **kw)
else:
    from prometheus_client import CollectorRegistry
    from auditfed.api.connections import ConnectionLimits, guarded_protocol
    limits = ConnectionLimits(4096, 65536, 10.0, 60.0)
    uvicorn.run(app, http=guarded_protocol(limits, CollectorRegistry()), **kw)
'''


def command(name: str, port: int) -> list[str]:
    if name.startswith("uvicorn"):
        return [sys.executable, "-c", UVICORN, name, str(port)]
    if name == "hypercorn":
        return [sys.executable, "-m", "hypercorn", "app:app", "--bind", f"127.0.0.1:{port}", "--backlog", "4096"]
    return [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
            "--backlog", "4096", "app:app"]


def closed_by_server(sock: socket.socket) -> bool:
    try:
        while sock.recv(65536):  # an answer (408) before the close
            pass
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def measure(name: str, workdir: Path) -> str:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(workdir), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen(command(name, port), cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.TransportError):
                httpx.get(url, timeout=1)
                break
            time.sleep(0.1)
        base = rss_mb(server.pid)
        slow = []
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ")
            sock.setblocking(False)
            slow.append(sock)
        answers: dict[str, int] = {}
        latencies = []
        deadline = time.monotonic() + 12
        for _ in range(40):
            if time.monotonic() > deadline:
                break
            for sock in slow[:50]:
                with contextlib.suppress(OSError):
                    sock.send(b"a")
            started = time.monotonic()
            try:
                status = str(httpx.post(f"{url}/v1/events", content=b"{}", timeout=3).status_code)
                latencies.append(time.monotonic() - started)
            except httpx.TransportError:
                status = "failed"
            answers[status] = answers.get(status, 0) + 1
            time.sleep(0.25)
        still_open = 0
        for sock in slow:
            still_open += not closed_by_server(sock)
            sock.close()
        big = []
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", port), timeout=0.5)
            with contextlib.suppress(OSError):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                for _ in range(4):
                    sock.sendall(b"X-b: " + b"a" * (1 << 20))
            big.append(sock)
        time.sleep(1)
        peak = rss_mb(server.pid)
        for sock in big:
            sock.close()
    finally:
        server.terminate()
        server.wait(10)
    median = statistics.median(latencies) * 1000 if latencies else float("nan")
    return (f"{name}: POST answers {answers} (median {median:.0f} ms); slow connections still open "
            f"{still_open}/1000; 50 x 4 MB headers: RSS {base} -> {peak} MB")


def main() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"server-choice-{os.getpid()}"
    workdir.mkdir(exist_ok=True)
    (workdir / "app.py").write_text(APP)
    for name in sys.argv[1:] or ["uvicorn-1000", "uvicorn-guarded", "hypercorn", "granian"]:
        print(measure(name, workdir), flush=True)


if __name__ == "__main__":
    main()
