"""A PostgreSQL cluster as a federation node: one log, so one forwarder — the leader's.

Every server of the cluster is configured with the same ``--node-name`` and
``--upstream``; only the log's leader may send (two senders of one log would race
each other's batches at the hub). When the leader dies, the next one resumes from
the hub's position: every entry reaches the hub exactly once.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from federation.federation_helpers import Hub, node_key, wait_for

NAME = "eu-cluster"


def _forwarding_states(cluster) -> dict[int, str]:
    states = {}
    for server in cluster.alive():
        with server.client(cluster.admin_token) as http:
            states[server.port] = http.get("/v1/federation/status").json()["upstream"]["state"]
    return states


def _send(server, token: str, count: int, tag: str) -> None:
    events = [{"id": f"{tag}-{i}", "action": "db.query", "actor": {"id": "alice"}} for i in range(count)]
    answer = httpx.post(f"{server.url}/v1/events", json=events, timeout=30,
                        headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text


def _hub_indexes(hub: Hub) -> list[int]:
    return sorted(e["attributes"]["federation"]["node_index"] for e in hub.federated()
                  if e["attributes"]["federation"]["node"] == NAME)


def _wait_forwarded(cluster, hub: Hub) -> int:
    """Wait until the hub holds the cluster's whole log. The size comes from
    ``/healthz``: an authenticated read would append an access record each time."""
    cluster.wait_drained()
    leader = cluster.leader()

    def done() -> int | None:
        size = httpx.get(f"{leader.url}/healthz", timeout=5).json()["size"]
        position = hub.position(NAME)["position"]
        return position if position >= size else None
    return wait_for(done, timeout=30, what="the hub to hold the cluster's log")


def test_only_the_leader_forwards_and_the_next_leader_takes_over(make_cluster, tmp_path: Path) -> None:
    hub = Hub(tmp_path / "hub-side")
    try:
        def enrol(first: Path) -> tuple[str, ...]:
            token = hub.enrol(NAME, node_key(first))
            return ("--node-name", NAME, "--upstream", hub.url, "--upstream-token", token)

        cluster = make_cluster(2, setup=enrol)
        leader = cluster.leader()
        follower = next(s for s in cluster.alive() if s is not leader)
        token = leader.token("source", service="billing")
        _send(follower, token, 300, "a")
        _send(leader, token, 300, "b")
        _wait_forwarded(cluster, hub)
        states = wait_for(lambda: (s := _forwarding_states(cluster)) and
                          s[leader.port] == "forwarding" and s[follower.port] == "standby" and s,
                          what="one forwarding server")
        assert states == {leader.port: "forwarding", follower.port: "standby"}

        leader.kill()
        wait_for(lambda: cluster.status()["leader"] and cluster.leader() is follower, timeout=20,
                 what="the follower to lead")
        _send(follower, token, 200, "c")
        wait_for(lambda: _forwarding_states(cluster) == {follower.port: "forwarding"},
                 what="the new leader's forwarder to take over")
        position = _wait_forwarded(cluster, hub)
        assert _hub_indexes(hub) == list(range(position)), "not every entry exactly once"
        assert hub.position(NAME)["status"] == "active"  # no alert, no refusal
    finally:
        hub.stop()
