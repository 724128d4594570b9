"""Ingest with verified actors (issue #4): every event carries a user JWT (RS256).

Goal: with one of 100 valid tokens on each event, at least 70 % of the events/s of
the same events without tokens, in the same run, through the HTTP API against a real
OIDC issuer on loopback. Also reported: every event with a distinct token (each
needs a full RSA signature check).

    python -m bench.bench_identity_ingest [--events 100000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import orjson
from support.oidc_issuer import OIDCIssuer

from bench.bench_ingest import BATCH, through_api
from bench.common import emit, make_events


def with_tokens(events: list[dict], tokens: list[str]) -> list[bytes]:
    for i, event in enumerate(events):
        event["actor"]["token"] = tokens[i % len(tokens)]
    return [orjson.dumps(events[i:i + BATCH]) for i in range(0, len(events), BATCH)]


def run(count: int = 100_000, distinct: int = 20_000) -> dict:
    issuer = OIDCIssuer(audience="auditfed").start()
    config = Path(tempfile.mkdtemp()) / "auditfed.toml"
    config.write_text(
        f'[[issuers]]\nissuer = "{issuer.issuer}"\njwks_uri = "{issuer.jwks_uri}"\n'
        'audiences = ["auditfed"]\n'
    )
    try:
        plain = [orjson.dumps(make_events(count)[i:i + BATCH]) for i in range(0, count, BATCH)]
        hundred = with_tokens(make_events(count), [issuer.mint({"sub": f"user{i}"}, ttl=3600)
                                                   for i in range(100)])
        unique = with_tokens(make_events(distinct), [issuer.mint({"sub": f"u{i}"}, ttl=3600)
                                                     for i in range(distinct)])
        # Alternate and keep each side's best of two: the machine is shared and noisy.
        baseline = repeated = 0.0
        for _ in range(2):
            baseline = max(baseline, through_api(plain, "--config", str(config))[0])
            repeated = max(repeated, through_api(hundred, "--config", str(config))[0])
        all_distinct, _ = through_api(unique, "--config", str(config))
    finally:
        issuer.stop()
    return {
        "benchmark": "ingest_with_user_jwts",
        "events": count,
        "no_tokens_events_per_s": round(baseline),
        "hundred_tokens_events_per_s": round(repeated),
        "ratio": round(repeated / baseline, 3),
        "goal_ratio": 0.7,
        "pass": repeated / baseline >= 0.7,
        "all_distinct_tokens_events_per_s": round(all_distinct),
        "all_distinct_events": distinct,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    emit(run(parser.parse_args().events))
