"""A small client of the auditfed HTTP API for the CLI: auth, retries, problem errors."""

from __future__ import annotations

import time
from typing import Any

import httpx

from auditfed.errors import AuditfedError

RETRY_STATUSES = (429, 502, 503, 504)


class ApiError(AuditfedError):
    """The server answered with a problem document (or could not be reached)."""

    def __init__(self, status: int, detail: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body = body or {}


class Client:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        headers = {"User-Agent": "auditfed-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def request(
        self, method: str, path: str, *, retries: int = 5, **kwargs: Any
    ) -> httpx.Response:
        """Send, retrying connection failures and 429/5xx with exponential backoff."""
        delay = 0.2
        for attempt in range(retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == retries:
                    raise ApiError(0, f"cannot reach {self.http.base_url}: {exc}") from None
            else:
                if response.status_code not in RETRY_STATUSES or attempt == retries:
                    return self._checked(response)
                delay = max(delay, float(response.headers.get("retry-after", 0) or 0))
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        if response.status_code < 400:
            return response
        try:
            body = response.json()
            detail = body.get("detail") or body.get("title") or response.text
        except ValueError:
            body, detail = None, response.text
        raise ApiError(response.status_code, f"{response.status_code}: {detail}", body)

    def get_json(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def get_text(self, path: str, **params: Any) -> str:
        return self.request("GET", path, params=params).text

    def close(self) -> None:
        self.http.close()
