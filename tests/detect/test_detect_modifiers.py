"""Each Sigma modifier and condition form, compiled by auditfed's own matcher."""

from __future__ import annotations

import base64

import pytest
from detect_helpers import auditfed_rule, engine_from_yaml, event, matches

from auditfed.detect.rules import load_rules


def sel(lines: str, condition: str = "selection") -> str:
    return auditfed_rule(f"    selection:\n{lines}    condition: {condition}\n")


@pytest.mark.parametrize(
    ("rule_line", "value", "expected"),
    [
        ("        action: 'Auth.Login'\n", "auth.login", True),  # case-insensitive
        ("        action: 'auth.login'\n", "auth.logins", False),
        ("        action|cased: 'Auth.Login'\n", "auth.login", False),
        ("        action|cased: 'Auth.Login'\n", "Auth.Login", True),
        ("        action|contains: 'LOG'\n", "auth.login", True),
        ("        action|contains|cased: 'LOG'\n", "auth.login", False),
        ("        action|startswith: 'auth.'\n", "AUTH.login", True),
        ("        action|startswith: 'auth.'\n", "x.auth.login", False),
        ("        action|endswith: '.login'\n", "auth.LOGIN", True),
        ("        action|endswith: '.login'\n", "auth.login.x", False),
        ("        action: 'auth.*n'\n", "auth.login", True),  # wildcard
        ("        action: 'auth.?ogin'\n", "auth.login", True),
        ("        action: 'auth.?ogin'\n", "auth.llogin", False),
        ("        action: 'auth\\*'\n", "auth*", True),  # escaped wildcard
        ("        action: 'auth\\*'\n", "authx", False),
        ("        action|re: '^auth\\.l.g'\n", "auth.login", True),
        ("        action|re: '^AUTH'\n", "auth.login", False),  # re is case-sensitive
        ("        action|re|i: '^AUTH'\n", "auth.login", True),
        ("        action|re: 'a.b'\n", "a\nb", False),
        ("        action|re|s: 'a.b'\n", "a\nb", True),
        ("        action|re: '^b'\n", "a\nb", False),
        ("        action|re|m: '^b'\n", "a\nb", True),
        ("        action|contains|all:\n            - 'auth'\n            - 'login'\n", "auth.login", True),
        ("        action|contains|all:\n            - 'auth'\n            - 'logout'\n", "auth.login", False),
        ("        action:\n            - 'a.b'\n            - 'auth.login'\n", "auth.login", True),
        ("        action: ''\n", "", True),  # empty value matches the empty string only
        ("        action: ''\n", "x", False),
    ],
)
def test_string_modifiers(rule_line: str, value: str, expected: bool) -> None:
    assert matches(sel(rule_line), event(action=value)) is expected


def test_null_and_empty() -> None:
    rule = sel("        reason: null\n")
    assert matches(rule, event())  # absent
    assert matches(rule, event(reason=None))  # JSON null
    assert not matches(rule, event(reason=""))
    assert not matches(rule, event(reason="CHG-1"))
    empty = sel("        reason: ''\n")
    assert matches(empty, event(reason=""))
    assert not matches(empty, event())


def test_exists() -> None:
    yes = sel("        reason|exists: true\n")
    no = sel("        reason|exists: false\n")
    assert matches(yes, event(reason="x")) and not matches(no, event(reason="x"))
    assert not matches(yes, event()) and matches(no, event())


def test_cidr() -> None:
    rule = sel("        actor.ip|cidr:\n            - '10.0.0.0/8'\n            - '2001:db8::/32'\n")
    assert matches(rule, event(actor={"id": "a", "ip": "10.1.2.3"}))
    assert matches(rule, event(actor={"id": "a", "ip": "2001:db8::1"}))
    assert not matches(rule, event(actor={"id": "a", "ip": "11.1.2.3"}))
    assert not matches(rule, event(actor={"id": "a", "ip": "not-an-ip"}))
    assert not matches(rule, event(actor={"id": "a"}))


def test_numeric_comparisons() -> None:
    for mod, value, expected in [
        ("gt", 10, False),
        ("gt", 11, True),
        ("gte", 10, True),
        ("lt", 10, False),
        ("lte", 10, True),
        ("lt", "9", True),
        ("gt", "abc", False),
    ]:
        rule = sel(f"        attributes.rows|{mod}: 10\n")
        assert matches(rule, event(attributes={"rows": value})) is expected, (mod, value)


def test_numbers_and_booleans() -> None:
    rule = sel("        attributes.code: 403\n")
    assert matches(rule, event(attributes={"code": 403}))
    assert matches(rule, event(attributes={"code": "403"}))
    assert not matches(rule, event(attributes={"code": 404}))
    flag = sel("        actor.verified: false\n")
    assert matches(flag, event(actor={"id": "a", "verified": False}))
    assert not matches(flag, event(actor={"id": "a", "verified": True}))
    assert not matches(flag, event(actor={"id": "a"}))


def test_base64_and_base64offset() -> None:
    encoded = base64.b64encode(b"secret-command").decode()
    rule = sel("        attributes.cmd|base64: 'secret-command'\n")
    assert matches(rule, event(attributes={"cmd": encoded}))
    # Base64 is case-sensitive even though Sigma strings are not
    assert not matches(rule, event(attributes={"cmd": encoded.lower()}))
    offset = sel("        attributes.cmd|base64offset|contains: 'whoami'\n")
    for prefix in (b"", b"x", b"xy", b"run: "):
        blob = base64.b64encode(prefix + b"whoami /all").decode()
        assert matches(offset, event(attributes={"cmd": blob})), prefix
    assert not matches(offset, event(attributes={"cmd": base64.b64encode(b"who am i").decode()}))


def test_windash() -> None:
    rule = sel("        attributes.cmd|windash|contains: ' -enc '\n")
    for dash in ("-", "/", "\u2013", "\u2014", "\u2015"):
        assert matches(rule, event(attributes={"cmd": f"powershell {dash}enc AAA"})), dash
    assert not matches(rule, event(attributes={"cmd": "powershell enc AAA"}))


def test_utf16_wide_with_base64() -> None:
    rule = sel("        attributes.cmd|wide|base64offset|contains: 'ping'\n")
    blob = base64.b64encode("cmd /c ping".encode("utf-16le")).decode()
    assert matches(rule, event(attributes={"cmd": blob}))


def test_fieldref() -> None:
    rule = sel("        actor.id|fieldref: resource.id\n")
    assert matches(rule, event(resource={"id": "ALICE"}))
    assert not matches(rule, event(resource={"id": "bob"}))
    assert not matches(rule, event(resource={}))


def test_list_values_in_event_match_any_element() -> None:
    rule = sel("        attributes.groups: 'system:masters'\n")
    assert matches(rule, event(attributes={"groups": ["a", "system:masters"]}))
    assert not matches(rule, event(attributes={"groups": ["a", "b"]}))
    nested = sel("        attributes.targets.name: 'x'\n")
    assert matches(nested, event(attributes={"targets": [{"name": "y"}, {"name": "X"}]}))


def test_dotted_literal_key() -> None:
    rule = sel("        attributes.k8s.io/name: 'x'\n")
    assert matches(rule, event(attributes={"k8s.io/name": "x"}))


def test_keywords() -> None:
    rule = auditfed_rule("    keywords:\n        - 'break-glass'\n        - 'evil*tool'\n    condition: keywords\n")
    assert matches(rule, event(attributes={"note": "image-policy.k8s.io/BREAK-GLASS: true"}))
    assert matches(rule, event(attributes={"deep": [{"x": "an evil little tool"}]}))
    assert not matches(rule, event(attributes={"note": "nothing"}))


def test_timestamp_part() -> None:
    rule = sel("        time|hour: 3\n")
    assert matches(rule, event(time="2026-01-01T03:15:00Z"))
    assert not matches(rule, event(time="2026-01-01T04:15:00Z"))


@pytest.mark.parametrize(
    ("condition", "fields", "expected"),
    [
        ("sel_a and sel_b", {"action": "a", "outcome": "failure"}, True),
        ("sel_a and sel_b", {"action": "a", "outcome": "success"}, False),
        ("sel_a or sel_b", {"action": "x", "outcome": "failure"}, True),
        ("sel_a and not sel_b", {"action": "a", "outcome": "success"}, True),
        ("sel_a and not sel_b", {"action": "a", "outcome": "failure"}, False),
        ("1 of sel_*", {"action": "x", "outcome": "failure"}, True),
        ("all of sel_*", {"action": "x", "outcome": "failure"}, False),
        ("all of sel_*", {"action": "a", "outcome": "failure"}, True),
        ("1 of them", {"action": "zz", "outcome": "success"}, True),  # filter matches
        ("all of them", {"action": "a", "outcome": "failure"}, False),
        ("(sel_a or filter) and not sel_b", {"action": "zz", "outcome": "success"}, True),
        ("not 1 of sel_*", {"action": "x", "outcome": "success"}, True),
    ],
)
def test_condition_forms(condition: str, fields: dict, expected: bool) -> None:
    rule = auditfed_rule(
        "    sel_a:\n        action: 'a'\n"
        "    sel_b:\n        outcome: 'failure'\n"
        "    filter:\n        action: 'zz'\n"
        f"    condition: {condition}\n"
    )
    assert matches(rule, event(**fields)) is expected


def test_list_of_maps_is_or() -> None:
    rule = auditfed_rule(
        "    selection:\n        - action: 'a'\n          outcome: 'failure'\n"
        "        - action: 'b'\n    condition: selection\n"
    )
    assert matches(rule, event(action="a", outcome="failure"))
    assert not matches(rule, event(action="a", outcome="success"))
    assert matches(rule, event(action="b", outcome="success"))


def test_unsupported_construct_is_refused_with_name() -> None:
    text = auditfed_rule("    selection:\n        action|expand: '%admins%'\n    condition: selection\n")
    ruleset = load_rules(texts=[("bad.yml", text)])
    assert not ruleset.detections
    (error,) = ruleset.errors
    assert error.construct == "expand" and "Test rule" in str(error) and "placeholder" in str(error)


def test_unknown_logsource_is_refused() -> None:
    text = (
        "title: Windows thing\nlogsource:\n    product: windows\n"
        "detection:\n    sel:\n        EventID: 1\n    condition: sel\n"
    )
    ruleset = load_rules(texts=[("win.yml", text)])
    (error,) = ruleset.errors
    assert error.construct == "logsource" and "product=windows" in str(error)


def test_unknown_modifier_is_refused() -> None:
    text = auditfed_rule("    selection:\n        action|bogus: 'x'\n    condition: selection\n")
    ruleset = load_rules(texts=[("bad.yml", text)])
    assert not ruleset.detections and ruleset.errors
    assert "bogus" in str(ruleset.errors[0])


def test_rules_only_see_their_source_kind() -> None:
    text = (
        "title: Console\nlogsource:\n    product: aws\n    service: cloudtrail\n"
        "detection:\n    sel:\n        eventName: ConsoleLogin\n    condition: sel\n"
    )
    engine = engine_from_yaml(text)
    ct = {"source": {"kind": "cloudtrail"}, "original": {"eventName": "ConsoleLogin"}}
    k8s = {"source": {"kind": "k8s-audit"}, "original": {"eventName": "ConsoleLogin"}}
    canonical = {"source": {"kind": "cloudtrail"}, "eventName": "ConsoleLogin", "original": {}}
    assert engine.matching_rules(ct)
    assert not engine.matching_rules(k8s)
    assert not engine.matching_rules(canonical)


def test_field_mapping_is_configurable() -> None:
    text = (
        "title: Mapped\nlogsource:\n    product: okta\n    service: okta\n"
        "detection:\n    sel:\n        actor.alternateId: 'alice@corp.example'\n    condition: sel\n"
    )
    ruleset = load_rules(texts=[("m.yml", text)])
    plain = engine_from_yaml(text)
    ev = {"source": {"kind": "okta"}, "actor": {"principal": "alice@corp.example"}, "original": {}}
    assert not plain.matching_rules(ev)
    from auditfed.detect import DetectionEngine, LogsourceMap

    mapped = load_rules(
        texts=[("m.yml", text)],
        logsources=LogsourceMap(None, {"okta": {"actor.alternateId": "actor.principal"}}),
    )
    assert DetectionEngine(mapped).matching_rules(ev)
    assert ruleset.detections
