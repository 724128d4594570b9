"""Connection-level limits (issue 16, item 2): slow or oversized request heads and
alert streams cannot take the server away from authenticated work.

One real server on 127.0.0.1 with small limits; every load is bounded by a count and
a deadline.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.server import Server

SLOW_CLIENTS = 1000
LIMITS = {
    "AUDITFED_MAX_CONNECTIONS": "300",
    "AUDITFED_HEADER_TIMEOUT": "2",
    "AUDITFED_BODY_TIMEOUT": "2",
    "AUDITFED_MAX_HEADER_BYTES": "16384",
    "AUDITFED_MAX_STREAMS_PER_TOKEN": "2",
    "AUDITFED_MAX_STREAMS": "4",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, SLOW_CLIENTS + 512)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    running = Server(tmp_path_factory.mktemp("limits") / "data", env=LIMITS).start()
    yield running
    running.stop()


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed ``sock`` (reading whatever it answered first)."""
    try:
        while chunk := sock.recv(65536):
            del chunk
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


@contextlib.contextmanager
def slow_heads(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that started a request head and do not finish it."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Trickle: a")
            sock.setblocking(False)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def event(n: int) -> dict[str, object]:
    return {"action": "limits.probe", "actor": {"id": "probe"}, "source": {"service": "limits"}, "attributes": {"n": n}}


def test_slow_header_clients_do_not_starve_authenticated_ingest(server: Server) -> None:
    with server.client(server.admin_token) as admin:
        source = admin.post("/v1/tokens", json={"role": "source", "service": "limits"}).json()["token"]
    with slow_heads(server.port, SLOW_CLIENTS) as socks, server.client(source) as http:
        # ingest and health answer while a thousand unauthenticated clients hold heads open
        for n in range(10):
            for sock in socks[:100]:
                with contextlib.suppress(OSError):
                    sock.send(b"a")  # keep trickling
            answer = http.post("/v1/events", json=[event(n)], headers={"Connection": "close"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] == 1
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        # and every slow head is closed: shed past max_connections or timed out (408)
        deadline = time.monotonic() + 20
        open_socks = socks
        while open_socks and time.monotonic() < deadline:
            open_socks = [s for s in open_socks if not closed_by_server(s)]
            time.sleep(0.2)
        assert not open_socks, f"{len(open_socks)} slow connections still open"
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'auditfed_connections_closed_total{reason="shed"}' in metrics
    assert 'auditfed_connections_closed_total{reason="header_timeout"}' in metrics


def test_open_file_limit_is_raised_to_the_hard_limit(server: Server) -> None:
    assert server.process is not None
    limits = Path(f"/proc/{server.process.pid}/limits").read_text()
    soft, hard = next(line for line in limits.splitlines() if line.startswith("Max open files")).split()[3:5]
    assert soft == hard


def test_timed_out_head_is_answered_408(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"application/problem+json" in answer


def test_body_arriving_with_the_head_is_not_counted_as_head(server: Server) -> None:
    body = json.dumps([{**event(0), "attributes": {"pad": "p" * 200_000}}]).encode()
    head = (f"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
            f"Authorization: Bearer {server.admin_token}\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode() + body)  # one write: the server reads head and body together
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert b'"accepted":1' in answer


def test_body_not_sent_in_time_is_cut_off(server: Server) -> None:
    head = (f"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {server.admin_token}\r\nContent-Length: 100000\r\n\r\n[")
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(head.encode())
        try:
            received = sock.recv(65536)
        except TimeoutError:
            received = b"(still waiting)"
    assert received == b"", "the server kept waiting for the body"


def test_oversized_headers_are_refused_without_memory_growth(server: Server) -> None:
    assert server.process is not None
    before = rss_mb(server.process.pid)
    chunk = b"X-Big: " + b"a" * (1 << 20)
    socks = []
    try:
        for _ in range(40):  # 40 x 4 MB of unfinished headers
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            with contextlib.suppress(OSError):
                for _ in range(4):
                    sock.sendall(chunk)
            socks.append(sock)
        grown = rss_mb(server.process.pid) - before
    finally:
        for sock in socks:
            sock.close()
    assert grown < 40, f"the server grew by {grown:.0f} MB"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
        assert sock.recv(4096).startswith(b"HTTP/1.1 431 ")
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def open_stream(server: Server, token: str) -> tuple[httpx.Client, httpx.Response]:
    client = server.client(token)
    response = client.send(client.build_request("GET", "/v1/alerts/stream"), stream=True)
    return client, response


def refusal(server: Server, token: str) -> httpx.Response:
    """The answer to one more stream, read in full unless it is a stream after all."""
    with server.client(token) as client, client.stream("GET", "/v1/alerts/stream") as response:
        if response.status_code != 200:
            response.read()
        return response


def test_alert_streams_are_limited_per_token_and_in_all(server: Server) -> None:
    with server.client(server.admin_token) as admin:
        first, second, third = (admin.post("/v1/tokens", json={"role": "auditor"}).json()["token"]
                                for _ in range(3))
    streams = []
    try:
        for token in (first, first):
            streams.append(open_stream(server, token))
            assert streams[-1][1].status_code == 200
        refused = refusal(server, first)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert "Retry-After" in refused.headers
        assert "max_streams_per_token" in refused.json()["detail"]
        # another token still gets streams, and the server still answers
        for token in (second, second):
            streams.append(open_stream(server, token))
            assert streams[-1][1].status_code == 200
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        refused = refusal(server, third)  # 4 open: the server-wide limit
        assert refused.status_code == 429
        assert "(max_streams)" in refused.json()["detail"]
        # a closed stream gives its slot back
        client, response = streams.pop(0)
        response.close()
        client.close()
        deadline = time.monotonic() + 10
        while True:
            streams.append(open_stream(server, third))
            if streams[-1][1].status_code == 200 or time.monotonic() > deadline:
                break
            streams.pop()[0].close()
            time.sleep(0.2)
        assert streams[-1][1].status_code == 200
    finally:
        for client, response in streams:
            response.close()
            client.close()
