"""Benchmark: bearer-token verification throughput (auditfed.identity).

Runs the real loopback OIDC issuer from tests/support, warms the JWKS cache, then
measures per-verification cost for

* ``repeated``: 100 distinct valid RS256 user tokens cycled over ``--iterations``
  verifications (what ingest sees: the same user token on many events; cache hits),
* ``distinct``: ``--distinct`` tokens, each verified once (full RS256 verification
  plus claims checks; cache misses),
* ``repeated_async``: the repeated case through ``averify`` on an event loop,
* ``directory_resolve``: alias resolution (AWS assumed-role rule, cached).

Prints one JSON object. Usage::

    .venv/bin/python bench/bench_identity.py [--iterations 100000] [--distinct 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.oidc_issuer import OIDCIssuer

from auditfed.identity.directory import Directory
from auditfed.identity.jwks import JWKSCache
from auditfed.identity.oidc import IssuerConfig, TokenVerifier


def per_us(elapsed: float, n: int) -> float:
    return round(elapsed / n * 1e6, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--distinct", type=int, default=20_000)
    args = ap.parse_args()

    with OIDCIssuer() as idp, httpx.Client(timeout=5) as client:
        cfg = IssuerConfig(issuer=idp.issuer, jwks_uri=idp.jwks_uri, discovery=False, audiences=["auditfed"])

        def new_verifier() -> TokenVerifier:
            v = TokenVerifier([cfg], jwks=JWKSCache(http_client=client))
            assert all(v.prefetch().values())
            return v

        results: dict[str, object] = {
            "benchmark": "identity.verify",
            "python": platform.python_version(),
            "machine": platform.machine(),
            "algorithm": "RS256 (2048-bit)",
        }

        # -- 100 users, repeated (cache hits) --------------------------------------------
        users = [idp.mint({"sub": f"user{i}", "email": f"user{i}@corp.example"}, ttl=3600) for i in range(args.users)]
        v = new_verifier()
        for t in users:  # first sight of each token: full verification
            v.verify(t)
        n = args.iterations
        start = time.perf_counter()
        for i in range(n):
            v.verify(users[i % len(users)])
        el = time.perf_counter() - start
        results["repeated"] = {
            "distinct_tokens": len(users),
            "verifications": n,
            "per_verify_us": per_us(el, n),
            "per_sec": round(n / el),
            "cache_hits": v.cache_hits,
        }

        async def run_async() -> float:
            s = time.perf_counter()
            for i in range(n):
                await v.averify(users[i % len(users)])
            return time.perf_counter() - s

        el = asyncio.run(run_async())
        results["repeated_async"] = {"verifications": n, "per_verify_us": per_us(el, n), "per_sec": round(n / el)}

        # -- all distinct (cache misses: full verification) -------------------------------
        m = args.distinct
        t0 = time.perf_counter()
        tokens = [idp.mint({"sub": f"user{i % 1000}"}, ttl=3600) for i in range(m)]
        mint_s = time.perf_counter() - t0
        v = new_verifier()
        start = time.perf_counter()
        for t in tokens:
            v.verify(t)
        el = time.perf_counter() - start
        results["distinct"] = {
            "distinct_tokens": m,
            "verifications": m,
            "per_verify_us": per_us(el, m),
            "per_sec": round(m / el),
            "cache_hits": v.cache_hits,
            "mint_seconds": round(mint_s, 2),
        }
        results["speedup_repeated_vs_distinct"] = round(
            results["distinct"]["per_verify_us"] / results["repeated"]["per_verify_us"],  # type: ignore[index]
            1,
        )
        results["jwks_fetches"] = idp.jwks_fetches

    # -- directory ---------------------------------------------------------------------
    d = Directory(
        {"alice@corp.example": ["github:alice", "pg:alice_rw"]},
        [
            {
                "system": "aws",
                "pattern": "arn:aws:sts::*:assumed-role/*/{name}",
                "principal": "{name}@corp.example",
            }
        ],
    )
    ids = [f"arn:aws:sts::123456789012:assumed-role/dev/user{i}" for i in range(100)]
    start = time.perf_counter()
    for i in range(n):
        d.resolve("aws", ids[i % 100])
    el = time.perf_counter() - start
    results["directory_resolve"] = {"lookups": n, "per_lookup_us": per_us(el, n)}

    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
