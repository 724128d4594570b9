"""How a node's entry is kept in the hub's log: the node's own event, tagged with its origin.

The hub stores each node entry as an *event* (so search, traces, timelines and
compliance answers at the hub see node events like any other), changed in exactly
three places, all reversible:

- ``id`` becomes ``<node>:<original id>`` (ids are unique per node, not across
  nodes; the hub's deduplication key ``(service, id)`` must not merge two nodes'
  events, and it makes a re-sent entry a duplicate instead of a second copy);
- ``source.node`` is the node's enrolled name;
- ``attributes.federation`` records the origin::

    {"node": "eu-prod", "node_index": 41, "node_leaf_hash": "<base64>",
     "id": "<original id>", "source_node": "<original source.node, if any>",
     "shadowed": <original attributes.federation, if any>, "no_attributes": true}

:func:`node_leaf_data` undoes the changes and returns the node's leaf data, the RFC
8785 (JCS) bytes whose RFC 9162 leaf hash is ``node_leaf_hash``: the hub's log
commits to every node leaf, and the node's cosigned checkpoint to the same leaf.

An entry that is not an auditfed event (the hub never drops what a node's log
holds) is kept as a ``federation.entry`` event carrying the leaf data in base64.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson

from auditfed.event import strict_json
from auditfed.event.canonical import canonical_event_bytes
from auditfed.event.model import format_time
from auditfed.ledger.hashing import leaf_hash

__all__ = ["FIELD", "RAW_ACTION", "node_leaf_data", "unwrap", "wrap"]

FIELD = "federation"
RAW_ACTION = "federation.entry"
_REQUIRED = frozenset(("id", "action", "actor", "source", "time", "outcome"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wrap(data: bytes, node: str, index: int, node_leaf: bytes | None = None) -> tuple[dict[str, Any], bytes]:
    """The hub's event for leaf ``index`` of ``node`` whose leaf data is ``data``, and its
    canonical bytes (the hub's leaf data)."""
    node_leaf = node_leaf if node_leaf is not None else leaf_hash(data)
    origin: dict[str, Any] = {"node": node, "node_index": index, "node_leaf_hash": _b64(node_leaf)}
    try:
        event = strict_json.loads(data)
        if not isinstance(event, dict) or not event.keys() >= _REQUIRED:
            raise ValueError("not an event")
        source = event["source"]
        if not isinstance(source, dict) or not isinstance(event["id"], str):
            raise ValueError("not an event")
        origin["id"] = event["id"]
        if "node" in source:
            origin["source_node"] = source["node"]
        attributes = event.get("attributes")
        if attributes is None:
            origin["no_attributes"] = True
            attributes = event["attributes"] = {}
        elif not isinstance(attributes, dict):
            raise ValueError("not an event")
        elif FIELD in attributes:
            origin["shadowed"] = attributes[FIELD]
        event["id"] = f"{node}:{event['id']}"
        source["node"] = node
        attributes[FIELD] = origin
        return event, canonical_event_bytes(event)
    except Exception:  # anything that is not an event is kept raw
        return _raw(data, node, index, node_leaf)


def _raw(data: bytes, node: str, index: int, node_leaf: bytes) -> tuple[dict[str, Any], bytes]:
    event = {
        "id": f"{node}:#{index}",
        "time": format_time(datetime.now(UTC)),
        "action": RAW_ACTION,
        "outcome": "unknown",
        "actor": {"id": f"node:{node}", "type": "node"},
        "source": {"service": "auditfed", "kind": "federation", "node": node},
        "attributes": {FIELD: {"node": node, "node_index": index, "node_leaf_hash": _b64(node_leaf),
                               "data": _b64(data)}},
    }
    return event, canonical_event_bytes(event)


def unwrap(event: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The origin record of a hub event and the node's leaf data it was made from."""
    event = orjson.loads(orjson.dumps(event))  # a deep copy
    attributes = event.get("attributes") or {}
    origin = attributes.get(FIELD)
    if not isinstance(origin, dict) or "node_leaf_hash" not in origin:
        raise ValueError("not a federated event")
    if "data" in origin:
        return origin, base64.b64decode(origin["data"])
    event["id"] = origin["id"]
    if "source_node" in origin:
        event["source"]["node"] = origin["source_node"]
    else:
        event["source"].pop("node", None)
    if origin.get("no_attributes"):
        del event["attributes"]
    elif "shadowed" in origin:
        attributes[FIELD] = origin["shadowed"]
        event["attributes"] = attributes
    else:
        del attributes[FIELD]
    return origin, canonical_event_bytes(event)


def node_leaf_data(event: dict[str, Any]) -> bytes:
    """The node's leaf data behind a hub event, checked against its recorded leaf hash."""
    origin, data = unwrap(event)
    if _b64(leaf_hash(data)) != origin["node_leaf_hash"]:
        raise ValueError("the event does not reproduce the node's leaf hash")
    return data
