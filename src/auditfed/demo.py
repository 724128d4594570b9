"""Demo events from made-up services, so a newcomer sees a trail at once.

The scenario repeats with fresh ids and times: alice logs in at the identity
provider; her request goes web-gateway -> billing-api -> PostgreSQL -> an S3 export,
under one W3C trace id; the gateway and the database record policy decisions, the
billing-api hop records none (an enforcement gap); the export is done by ci-bot
acting for alice (a delegation chain). Around it: failed logins, a denied read, and
configuration changes that carry their change ticket as ``reason``, as a real team's
would. The rare exceptions are the story the bundled rules should surface: now and
then a change without a reason, mallory finally getting in after her failed logins,
and dave exporting invoices right after being granted a role.

The console stays quiet: instead of a log line per alert, one summary line every
``SUMMARY_INTERVAL`` seconds (events so far, alerts by rule); ``--log-level debug``
shows each alert as it is raised.

Events go through the same preparation and sequencer as ``POST /v1/events``, each
bound to its own service as a ``source`` token would bind it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from auditfed.detect.service import ALERT_RAISED
from auditfed.detect.service import log as detection_log
from auditfed.event.model import format_time
from auditfed.identity.tokens import Caller
from auditfed.ingest.prepare import prepare_event
from auditfed.node import Node

log = logging.getLogger(__name__)

ENVIRONMENT = "demo"
PEOPLE = ["alice@corp.example", "bob@corp.example", "carol@corp.example"]
#: Seconds between two summary lines on the console.
SUMMARY_INTERVAL = 10.0
#: Every this many rounds of events, one change goes in without a reason (~20 s at the default rate).
UNJUSTIFIED_EVERY = 50
#: Every this many rounds, one incident (first after ~4 s, then ~every 40 s, alternating).
INCIDENT_EVERY, INCIDENT_FIRST = 100, 10


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
    change["reason"] = f"CHG-{random.randint(1000, 9999)} raise limits"
    events.append(change)
    return events


def unjustified_change(now: datetime) -> dict[str, Any]:
    """A production change nobody stated a reason for ("Change Without a Reason")."""
    return {"time": format_time(now), "action": "config.update", "outcome": "success",
            "actor": {"id": "carol", "type": "user", "principal": "carol@corp.example"},
            "resource": {"type": "config", "id": "billing-api/feature-flags"},
            "source": {"service": "billing-api", "kind": "app"}}


def account_takeover(now: datetime) -> list[dict[str, Any]]:
    """mallory's failed logins, then one that works ("Failed Logins Followed by a Successful Login")."""
    def login(seconds_ago: int, outcome: str) -> dict[str, Any]:
        return {"time": format_time(now - timedelta(seconds=seconds_ago)), "action": "auth.login",
                "outcome": outcome, "actor": {"id": "mallory", "type": "user", "ip": "198.51.100.9"},
                "source": {"service": "idp", "kind": "app"}}

    return [login(i, "failure") for i in range(6, 0, -1)] + [login(0, "success")]


def grant_then_export(now: datetime) -> list[dict[str, Any]]:
    """dave gets a role and exports every invoice a moment later
    ("Privilege Grant Followed by a Bulk Export by the Grantee")."""
    dave = "dave@corp.example"
    return [
        {"time": format_time(now - timedelta(seconds=1)), "action": "iam.role.grant", "outcome": "success",
         "actor": {"id": "bob", "type": "user", "principal": "bob@corp.example"},
         "resource": {"type": "principal", "id": dave}, "reason": "CHG-4711 finance read access",
         "source": {"service": "idp", "kind": "app"}, "attributes": {"role": "finance-admin"}},
        {"time": format_time(now), "action": "invoice.bulk_export", "outcome": "success",
         "actor": {"id": "dave", "type": "user", "principal": dave, "ip": "203.0.113.50"},
         "resource": {"type": "table", "id": "billing.invoices"},
         "source": {"service": "billing-api", "kind": "app"}},
    ]


def demo_round(now: datetime, round_number: int) -> list[dict[str, Any]]:
    """The events of one round: a request, background noise, and now and then the story."""
    events = request_scenario(now, random.choice(PEOPLE)) + background_events(now)
    if round_number % UNJUSTIFIED_EVERY == UNJUSTIFIED_EVERY - 1:
        events.append(unjustified_change(now))
    if round_number % INCIDENT_EVERY == INCIDENT_FIRST:
        incident = account_takeover if round_number // INCIDENT_EVERY % 2 == 0 else grant_then_export
        events += incident(now)
    return events


class AlertTally(logging.Filter):
    """Counts the detection service's "alert raised" records by rule, and holds them
    back from the console unless ``show`` (the summary line names them instead)."""

    def __init__(self, show: bool) -> None:
        super().__init__()
        self.show = show
        self.by_rule: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        alert = getattr(record, "alert", None)
        if not isinstance(alert, dict) or not record.msg.startswith(ALERT_RAISED):
            return True
        self.by_rule[f"{alert['title']} ({alert['level'] or 'none'})"] += 1
        return self.show


def summary(events: int, tally: AlertTally) -> tuple[str, dict[str, Any]]:
    """The summary line and its structured fields."""
    total = sum(tally.by_rule.values())
    rules = ", ".join(f"{count} {rule}" for rule, count in tally.by_rule.most_common()) or "none yet"
    text = f"demo: {events} events so far; alerts by rule: {rules}"
    return text, {"events": events, "alerts": total, "alerts_by_rule": dict(tally.by_rule)}


async def feed_demo_events(node: Node) -> None:
    """Append demo events at about ``settings.demo_rate`` per second, forever, logging a
    summary every SUMMARY_INTERVAL seconds in place of a line per alert."""
    rate = node.settings.demo_rate
    tally = AlertTally(show=node.settings.log_level.lower() == "debug")
    detection_log.addFilter(tally)
    sent, round_number = 0, 0
    next_summary = time.monotonic() + SUMMARY_INTERVAL
    try:
        while True:
            now = datetime.now(UTC)
            batch = demo_round(now, round_number)
            round_number += 1
            observed = format_time(now)
            try:
                prepared = [
                    prepare_event(event, i, _caller(event), observed, node.enrichers)
                    for i, event in enumerate(batch)
                ]
                await node.sequencer.append(prepared)
                sent += len(batch)
            except Exception:
                log.exception("demo events failed")
            if time.monotonic() >= next_summary:
                text, fields = summary(sent, tally)
                log.info(text, extra={"demo": fields})
                next_summary += SUMMARY_INTERVAL
            await asyncio.sleep(len(batch) / rate)
    finally:
        detection_log.removeFilter(tally)


def _caller(event: dict[str, Any]) -> Caller:
    return Caller("demo", "source", event["source"]["service"], ENVIRONMENT)
