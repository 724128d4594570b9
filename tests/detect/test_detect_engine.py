"""The engine's shared evaluation (decision diagram, value memo) equals rule-by-rule evaluation."""

from __future__ import annotations

import random
from typing import Any

import pytest
from detect_helpers import auditfed_rule, engine_from_yaml, event

from auditfed.detect import engine as engine_module
from auditfed.detect.fields import MISSING, compile_path, resolve
from auditfed.detect.rules import load_rules


def field(name: str, *values: str) -> str:
    """One selection line: ``name: value``, or ``name:`` with a list of values."""
    if len(values) == 1:
        return f"{name}: {values[0]}"
    return f"{name}:" + "".join(f"\n            - {v}" for v in values)


def sel(*lines: str, condition: str = "sel") -> str:
    return "sel:\n" + "".join(f"        {line}\n" for line in lines) + f"    condition: {condition}"


# One field in many rules, several fields per rule, every value kind, negations,
# keywords and a field reference (the checks a decision diagram cannot decide alone).
DETECTIONS = {
    "eq": sel(field("action", "'Auth.Login'")),
    "listed": sel(field("action", "'a.b'", "'auth.login'")),
    "cased": sel(field("action|cased", "'Auth.Login'")),
    "contains_all": sel(field("action|contains|all", "'auth'", "'login'")),
    "ends": sel(field("action|endswith", "'.login'", "'.export'")),
    "wildcard": sel(field("action", "'auth.?ogin'")),
    "regex": sel(field("action|re", "'^auth\\.l.g'")),
    "null": sel(field("reason", "null")),
    "empty": sel(field("reason", "''")),
    "exists": sel(field("reason|exists", "true")),
    "cidr": sel(field("actor.ip|cidr", "'10.0.0.0/8'")),
    "gt": sel(field("attributes.rows|gt", "5000")),
    "number": sel(field("attributes.rows", "1")),
    "bool": sel(field("attributes.rows", "true")),
    "tags_all": sel(field("attributes.tags|all", "'red'", "'blue'")),
    "deep": sel(field("a.b.c|contains", "'v'")),
    "same_list_field": "a:\n        attributes.tags: 'red'\n    b:\n        attributes.tags: 'blue'\n"
    "    condition: a and b",
    "and_not": "sel:\n        outcome: 'success'\n    f:\n        action|startswith: 'auth.'\n"
    "    condition: sel and not f",
    "one_of": "s_a:\n        outcome: 'denied'\n    s_b:\n        policy.decision: 'deny'\n    condition: 1 of s_*",
    "keyword": "sel:\n        outcome: 'denied'\n    keywords:\n        - 'INVOICES'\n    condition: sel and keywords",
    "fieldref": "a:\n        actor.id|fieldref: resource.id\n    b:\n        outcome: 'success'\n    condition: a or b",
}


def rule_pack() -> str:
    docs = []
    for n, (name, detection) in enumerate(DETECTIONS.items()):
        docs.append(
            f"title: rule {name}\nid: 00000000-0000-4000-8000-{n:012d}\nstatus: test\n"
            f"logsource:\n    product: auditfed\ndetection:\n    {detection}\n"
        )
    return "---\n".join(docs)


def random_event(rng: random.Random) -> dict[str, Any]:
    def pick(*values: Any) -> Any:
        return rng.choice(values)

    ev = event(
        action=pick("auth.login", "Auth.Login", "AUTH.LOGIN", "auth.llogin", "data.export", "a.b", "", ["x"], 5),
        outcome=pick("success", "denied", "Success", None, ["success", "denied"]),
        actor={"id": pick("u1", "u2", 1, True), "ip": pick("10.1.2.3", "11.0.0.1", "x", 10)},
        resource={"id": pick("u1", "U1", "u2", 1)},
    )
    for key, values in {
        "reason": ("", None, "CHG-1", 0),
        "attributes": (
            {"rows": pick(1, 1.0, "1", True, False, "true", 6000, None), "tags": pick(["red", "blue"], "red", [])},
        ),
        "policy": ({"decision": pick("deny", "DENY", "allow")}, [{"decision": "deny"}]),
        "policy.decision": ("deny",),
        "a": ({"b": {"c": "v"}}, {"b": [{"c": "v"}, {"c": "w"}]}, {"b.c": "v"}, [{"b": {"c": "v"}}]),
        "a.b": ({"c": "v"},),
        "note": ("billing INVOICES export",),
    }.items():
        if rng.random() < 0.4:
            ev[key] = rng.choice(values)
    return ev


@pytest.mark.parametrize("memo_limit", [engine_module.MEMO_LIMIT, 7])
def test_matches_equal_rule_by_rule_evaluation(monkeypatch: pytest.MonkeyPatch, memo_limit: int) -> None:
    # a tiny limit makes the diagram start afresh again and again
    monkeypatch.setattr(engine_module, "MEMO_LIMIT", memo_limit)
    ruleset = load_rules(texts=[("pack.yml", rule_pack())])
    assert not ruleset.errors, [str(e) for e in ruleset.errors]
    engine = engine_from_yaml(rule_pack())
    rng = random.Random(5)
    for _ in range(3000):
        ev = random_event(rng)
        expected = [rule.id for rule in ruleset.detections if rule.matches(ev)]
        assert [rule.id for rule in engine.matching_rules(ev)] == expected, ev


def test_numbers_booleans_and_strings_are_told_apart() -> None:
    # equal as dict keys, so the remembered outcome of one must not serve the other
    engine = engine_from_yaml(auditfed_rule("    sel:\n        attributes.rows: 1\n    condition: sel\n"))
    outcomes = [bool(engine.matching_rules(event(attributes={"rows": v}))) for v in (True, 1, 1.0, "1", True, 1)]
    assert outcomes == [False, True, True, True, False, True]


def test_two_selections_on_one_list_field() -> None:
    rule = auditfed_rule(
        "    a:\n        attributes.tags: 'red'\n    b:\n        attributes.tags: 'blue'\n    condition: a and b\n"
    )
    engine = engine_from_yaml(rule)
    assert engine.matching_rules(event(attributes={"tags": ["red", "blue"]}))
    assert not engine.matching_rules(event(attributes={"tags": ["red"]}))


def test_alerts_follow_rule_order() -> None:
    text = "---\n".join(
        f"title: r{n}\nid: 00000000-0000-4000-8000-{n:012d}\nstatus: test\nlogsource:\n    product: auditfed\n"
        f"detection:\n    {sel(line)}\n"
        for n, line in enumerate(["outcome: 'success'", "action: 'x'", "actor.id: 'alice'", "action|contains: 'x'"])
    )
    alerts = engine_from_yaml(text).process(0, event(action="x"))
    assert [a.title for a in alerts] == ["r0", "r1", "r2", "r3"]


def random_tree(rng: random.Random, depth: int = 0) -> Any:
    if depth > 3 or rng.random() < 0.25:
        return rng.choice(["v", 1, None, True])
    if rng.random() < 0.2:
        return [random_tree(rng, depth + 1) for _ in range(rng.randrange(3))]
    keys = ["a", "b", "c", "a.b", "b.c", "a.b.c"]
    return {k: random_tree(rng, depth + 1) for k in rng.sample(keys, rng.randrange(1, 4))}


def test_getters_find_what_resolve_finds() -> None:
    rng = random.Random(11)
    paths = ["a", "a.b", "b.c", "a.b.c", "a.b.c.a", "c.a.b"]
    getters = {p: compile_path(p) for p in paths}
    for _ in range(5000):
        obj = random_tree(rng)
        if not isinstance(obj, dict):
            continue
        for path, get in getters.items():
            assert get(obj) == resolve(obj, tuple(path.split("."))), (path, obj)
    assert getters["a.b"]({"a": {}}) is MISSING
