"""Demo events from made-up services, so a newcomer sees a trail at once.

The scenario repeats with fresh ids and times: alice logs in at the identity
provider; her request goes web-gateway -> billing-api -> PostgreSQL -> an S3 export,
under one W3C trace id; the gateway and the database record policy decisions, the
billing-api hop records none (an enforcement gap); the export is done by ci-bot
acting for alice (a delegation chain). Around it: failed logins, a denied read, and
configuration changes with and without a stated reason.

Events go through the same preparation and sequencer as ``POST /v1/events``, each
bound to its own service as a ``source`` token would bind it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from auditfed.event.model import format_time
from auditfed.identity.tokens import Caller
from auditfed.ingest.prepare import prepare_event
from auditfed.node import Node

log = logging.getLogger(__name__)

ENVIRONMENT = "demo"
PEOPLE = ["alice@corp.example", "bob@corp.example", "carol@corp.example"]


def _trace() -> tuple[str, list[str]]:
    return secrets.token_hex(16), [secrets.token_hex(8) for _ in range(4)]


def request_scenario(now: datetime, person: str = "alice@corp.example") -> list[dict[str, Any]]:
    """One request across four services under one trace id."""
    trace_id, spans = _trace()
    user = person.split("@")[0]
    invoice = f"inv-{random.randint(1000, 9999)}"

    def at(ms: int) -> str:
        return format_time(now + timedelta(milliseconds=ms))

    def trace(i: int) -> dict[str, str]:
        hop = {"trace_id": trace_id, "span_id": spans[i]}
        if i:
            hop["parent_span_id"] = spans[i - 1]
        return hop

    actor = {"id": user, "type": "user", "principal": person, "ip": "203.0.113.7"}
    return [
        {"time": at(0), "action": "http.request", "outcome": "success", "actor": actor,
         "resource": {"type": "route", "id": "POST /invoices/export"},
         "source": {"service": "web-gateway", "kind": "app"}, "trace": trace(0),
         "policy": {"decision": "allow", "rule": "rbac/finance", "enforcer": "web-gateway"}},
        {"time": at(12), "action": "invoice.export", "outcome": "success", "actor": actor,
         "resource": {"type": "invoice", "id": invoice}, "reason": "quarterly close",
         "source": {"service": "billing-api", "kind": "app"}, "trace": trace(1)},
        {"time": at(20), "action": "db.query", "outcome": "success",
         "actor": {"id": f"{user}_rw", "type": "user", "principal": person},
         "resource": {"type": "table", "id": "billing.invoices", "name": "invoices"},
         "source": {"service": "postgresql", "kind": "app"}, "trace": trace(2),
         "policy": {"decision": "allow", "rule": "rbac/db-readers", "enforcer": "pg-gateway"},
         "attributes": {"statement": "SELECT * FROM billing.invoices WHERE id = $1"}},
        {"time": at(45), "action": "data.export", "outcome": "success",
         "actor": {"id": "ci-bot", "type": "service",
                   "chain": [{"id": user, "type": "user", "principal": person}]},
         "resource": {"type": "s3-object", "id": f"s3://exports/{invoice}.csv"},
         "source": {"service": "s3-export", "kind": "app"}, "trace": trace(3),
         "policy": {"decision": "allow", "rule": "export/approved", "enforcer": "s3-export"}},
    ]


def background_events(now: datetime) -> list[dict[str, Any]]:
    """Logins (some failing), a denied read, config changes with and without reason."""
    person = random.choice(PEOPLE)
    user = person.split("@")[0]
    events: list[dict[str, Any]] = []
    if random.random() < 0.3:
        events += [
            {"time": format_time(now - timedelta(seconds=i)), "action": "auth.login",
             "outcome": "failure", "actor": {"id": "mallory", "type": "user", "ip": "198.51.100.9"},
             "source": {"service": "idp", "kind": "app"}}
            for i in range(3, 0, -1)
        ]
    events.append(
        {"time": format_time(now), "action": "auth.login", "outcome": "success",
         "actor": {"id": user, "type": "user", "principal": person, "ip": "203.0.113.7"},
         "source": {"service": "idp", "kind": "app"}})
    if random.random() < 0.2:
        events.append(
            {"time": format_time(now), "action": "db.query", "outcome": "denied",
             "actor": {"id": "mallory", "type": "user"},
             "resource": {"type": "table", "id": "billing.invoices"},
             "source": {"service": "postgresql", "kind": "app"},
             "policy": {"decision": "deny", "rule": "rbac/db-readers", "enforcer": "pg-gateway"}})
    change = {"time": format_time(now), "action": "config.update", "outcome": "success",
              "actor": {"id": "bob", "type": "user", "principal": "bob@corp.example"},
              "resource": {"type": "config", "id": "billing-api/rate-limits"},
              "source": {"service": "billing-api", "kind": "app"}}
    if random.random() < 0.7:
        change["reason"] = f"CHG-{random.randint(1000, 9999)} raise limits"
    events.append(change)
    return events


async def feed_demo_events(node: Node) -> None:
    """Append demo events at about ``settings.demo_rate`` per second, forever."""
    rate = node.settings.demo_rate
    while True:
        now = datetime.now(UTC)
        batch = request_scenario(now, random.choice(PEOPLE)) + background_events(now)
        observed = format_time(now)
        try:
            prepared = [
                prepare_event(event, i, _caller(event), observed, node.enrichers)
                for i, event in enumerate(batch)
            ]
            await node.sequencer.append(prepared)
        except Exception:
            log.exception("demo events failed")
        await asyncio.sleep(len(batch) / rate)


def _caller(event: dict[str, Any]) -> Caller:
    return Caller("demo", "source", event["source"]["service"], ENVIRONMENT)
