"""Helpers of the body hardening tests: what a search finds, what a refusal says."""

from __future__ import annotations

from support.server import Server


def stored(server: Server, admin: str, actor: str) -> int:
    """How many stored events have ``actor.id`` ``actor``."""
    with server.client(admin) as http:
        answer = http.get("/v1/events", params={"q": f"actor:{actor}", "limit": 1000})
    assert answer.status_code == 200, answer.text
    return len(answer.json()["events"])


def assert_problem(response, status: int, *texts: str) -> dict:
    """``response`` is a problem document of ``status`` whose detail says each of ``texts``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    for text in texts:
        assert text in body["detail"], body
    return body
