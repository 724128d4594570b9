"""One way for CLI commands to read a log: from a data dir, or from a server's API.

Commands that prove or verify do the same thing either way: read checkpoints,
entries and proofs, then check them locally with the log's verifier key. Only where
the data comes from differs.
"""

from __future__ import annotations

import abc
import base64
from collections.abc import Iterator
from typing import Any

import orjson

from auditfed.cli.client import ApiError, Client
from auditfed.config import Settings
from auditfed.errors import NotFound
from auditfed.ledger import Checkpoint, TileReader, consistency_proof, inclusion_proof
from auditfed.ledger.note import split_note
from auditfed.node import load_signer
from auditfed.query.language import parse_query
from auditfed.store import open_store
from auditfed.store.filters import Query


class LogAccess(abc.ABC):
    store_url: str | None = None
    @abc.abstractmethod
    def verifier_key(self) -> str: ...

    @abc.abstractmethod
    def checkpoint(self, size: int | None = None) -> str:
        """The signed checkpoint note: the latest, or the one signed at ``size``."""

    @abc.abstractmethod
    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]: ...

    @abc.abstractmethod
    def size(self) -> int:
        """Entries to verify: all stored, or all the latest checkpoint covers."""

    def retained_from(self) -> int:
        """Entries below this index were removed by retention. Through the API they
        cannot be checked (no leaf hashes are served): reading them is refused (410)."""
        return 0

    @abc.abstractmethod
    def checkpoint_notes(self) -> list[str]:
        """Every checkpoint that can be checked: all kept ones, or the latest."""

    @property
    def tile_reader(self) -> TileReader | None:
        return None

    @abc.abstractmethod
    def inclusion_proof(self, index: int, size: int) -> list[bytes]: ...

    @abc.abstractmethod
    def consistency_proof(self, old: int, new: int) -> list[bytes]: ...

    @abc.abstractmethod
    def search(self, q: str, limit: int, newest_first: bool) -> list[tuple[int, dict[str, Any]]]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class LocalLog(LogAccess):
    """Reads a data dir's store directly (the server may be running)."""

    def __init__(self, settings: Settings) -> None:
        self.signer = load_signer(settings)
        self.store = open_store(settings.store_url, fsync=settings.fsync)
        self.store_url = settings.store_url

    def verifier_key(self) -> str:
        return self.signer.verifier_key()

    def checkpoint(self, size: int | None = None) -> str:
        if size is None:
            record = self.store.latest_checkpoint()
        else:
            record = self.store.checkpoint_at_least(size)
            record = record if record and record.size == size else None
        if record is None:
            raise NotFound(f"no checkpoint was signed at size {size}" if size else "no checkpoint")
        return record.note

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        for index, data in self.store.iter_entries(start):
            if index >= end:
                return
            yield index, data

    def size(self) -> int:
        return self.store.size()

    def retained_from(self) -> int:
        return self.store.retained_from()

    def checkpoint_notes(self) -> list[str]:
        return [record.note for record in self.store.checkpoints()]

    @property
    def tile_reader(self) -> TileReader | None:
        return self.store

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return inclusion_proof(index, size, self.store)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        return consistency_proof(old, new, self.store)

    def search(self, q: str, limit: int, newest_first: bool) -> list[tuple[int, dict[str, Any]]]:
        rows = self.store.search(Query(parse_query(q), newest_first=newest_first, limit=limit))
        return [(i, orjson.loads(data)) for i, data in rows]

    def close(self) -> None:
        self.store.close()


class RemoteLog(LogAccess):
    """Reads through the public HTTP API only."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def verifier_key(self) -> str:
        return self.client.get_text("/v1/log/key").strip()

    def checkpoint(self, size: int | None = None) -> str:
        params = {} if size is None else {"size": size}
        try:
            return self.client.get_text("/v1/log/checkpoint", **params)
        except ApiError as exc:
            if exc.status == 404:
                raise NotFound(f"no checkpoint was signed at size {size}") from None
            raise

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        position = start
        while position < end:
            page = self.client.get_json("/v1/log/entries", start=position, end=end)["entries"]
            if not page:
                raise ApiError(0, f"the server returned no entries at {position}")
            for entry in page:
                if entry["index"] != position:
                    raise ApiError(0, f"the server returned entry {entry['index']} for {position}")
                yield position, base64.b64decode(entry["data"])
                position += 1

    def size(self) -> int:
        return self._latest().size

    def checkpoint_notes(self) -> list[str]:
        return [self.checkpoint()]

    def _latest(self) -> Checkpoint:
        return Checkpoint.parse(split_note(self.checkpoint())[0])

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        body = self.client.get_json("/v1/log/proof/inclusion", index=index, size=size)
        return [base64.b64decode(h) for h in body["hashes"]]

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        body = self.client.get_json("/v1/log/proof/consistency", old=old, new=new)
        return [base64.b64decode(h) for h in body["hashes"]]

    def search(self, q: str, limit: int, newest_first: bool) -> list[tuple[int, dict[str, Any]]]:
        order = "newest" if newest_first else "oldest"
        found: list[tuple[int, dict[str, Any]]] = []
        cursor: int | None = None
        # A server may answer fewer events than asked (a page is cut at a byte budget):
        # page on until ``limit`` are in or the server says there are no more.
        while len(found) < limit:
            params: dict[str, Any] = {"q": q, "limit": min(1000, limit - len(found)), "order": order}
            if cursor is not None:
                params["cursor"] = cursor
            body = self.client.get_json("/v1/events", **params)
            found += [(e["index"], e["event"]) for e in body["events"]]
            cursor = body.get("next_cursor")
            if cursor is None or not body["events"]:
                break
        return found

    def close(self) -> None:
        self.client.close()
