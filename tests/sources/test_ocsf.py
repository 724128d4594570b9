"""The OCSF export against the real OCSF schema files (tests/data/ocsf-schema)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import orjson
import pytest

from auditfed.sources import decode, to_ocsf
from auditfed.sources.ocsf import OCSF_VERSION

SCHEMA = Path(__file__).resolve().parent.parent / "data" / "ocsf-schema"
CLASS_FILES = {
    6003: "events/application/api_activity.json",
    6005: "events/application/datastore_activity.json",
    3002: "events/iam/authentication.json",
    3001: "events/iam/account_change.json",
}


def _load(rel):
    return json.loads((SCHEMA / rel).read_text())


@cache
def dictionary():
    return _load("dictionary.json")["attributes"]


@cache
def categories():
    return _load("categories.json")["attributes"]


def _find(name):
    """A class file by name (for ``extends``)."""
    for path in (SCHEMA / "events").rglob("*.json"):
        data = json.loads(path.read_text())
        if data.get("name") == name:
            return data
    raise KeyError(name)


def _merge_attrs(target, attrs, applied_profiles, source_profile=None):
    for key, spec in attrs.items():
        if key == "$include":
            for inc in spec:
                inc_data = _load(inc)
                profile = inc_data.get("name") if inc_data.get("meta") == "profile" else None
                _merge_attrs(target, inc_data.get("attributes", {}), applied_profiles, profile)
            continue
        if source_profile and source_profile not in applied_profiles:
            continue  # attributes of a profile count only when the profile is applied
        merged = {**target.get(key, {}), **spec}
        if "enum" in spec and "enum" in target.get(key, {}):
            merged["enum"] = {**target[key]["enum"], **spec["enum"]}  # enums extend
        target[key] = merged


def resolve(data, kind, applied_profiles=()):
    """Attributes (with requirement) and constraints of a class or object, extends resolved."""
    chain = [data]
    while chain[-1].get("extends"):
        parent = chain[-1]["extends"]
        chain.append(_find(parent) if kind == "event" else _load(f"objects/{parent}.json"))
    attrs, constraints = {}, {}
    for level in reversed(chain):
        _merge_attrs(attrs, level.get("attributes", {}), set(applied_profiles))
        constraints.update(level.get("constraints") or {})
    return attrs, constraints


def check_object(value, attrs, constraints, path, applied):
    """Every required attribute present, at_least_one constraints met, recursively."""
    for key, spec in attrs.items():
        if spec.get("requirement") == "required":
            assert key in value, f"{path}.{key} is required by OCSF"
    if "at_least_one" in constraints:
        assert any(k in value for k in constraints["at_least_one"]), \
            f"{path}: needs one of {constraints['at_least_one']}"
    for key, sub in value.items():
        assert key in attrs, f"{path}.{key} is not an attribute of this OCSF class/object"
        type_name = dictionary()[key]["type"] if key in dictionary() else None
        obj_file = SCHEMA / "objects" / f"{type_name}.json"
        if type_name and type_name != "object" and not type_name.endswith("_t") \
                and obj_file.exists():
            obj_attrs, obj_constraints = resolve(json.loads(obj_file.read_text()), "object",
                                                 applied)
            for item in sub if isinstance(sub, list) else [sub]:
                assert isinstance(item, dict), f"{path}.{key} must be an object"
                check_object(item, obj_attrs, obj_constraints, f"{path}.{key}", applied)


def check_against_schema(ocsf):
    cls = _load(CLASS_FILES[ocsf["class_uid"]])
    applied = ocsf["metadata"].get("profiles", [])
    attrs, constraints = resolve(cls, "event", applied)
    category = categories()[_find(cls["extends"])["category"]]["uid"]
    assert ocsf["category_uid"] == category
    assert ocsf["class_uid"] == category * 1000 + cls["uid"]
    assert ocsf["type_uid"] == ocsf["class_uid"] * 100 + ocsf["activity_id"]
    activities = {**attrs["activity_id"]["enum"]}
    assert str(ocsf["activity_id"]) in activities, ocsf["activity_id"]
    assert ocsf["activity_name"] == activities[str(ocsf["activity_id"])]["caption"]
    assert str(ocsf["status_id"]) in {"0", "1", "2", "99"}
    assert ocsf["severity_id"] in range(0, 7)
    assert isinstance(ocsf["time"], int) and ocsf["time"] > 10**12
    assert ocsf["metadata"]["version"] == _load("version.json")["version"] == OCSF_VERSION
    check_object(ocsf, attrs, constraints, ocsf["class_name"], applied)


def _event(action, **extra):
    base = {"action": action, "actor": {"id": "alice", "ip": "203.0.113.7", "session": "s-1"},
            "source": {"service": "svc", "kind": "app"}, "time": "2026-11-27T17:00:00.123456Z",
            "outcome": "success", "id": "e-1"}
    base.update(extra)
    return base


def test_required_attributes_of_the_four_classes_are_known():
    """The schema as copied names the attributes this export must fill."""
    required = {}
    for uid, rel in CLASS_FILES.items():
        attrs, _ = resolve(_load(rel), "event")
        required[uid] = sorted(k for k, v in attrs.items() if v.get("requirement") == "required")
    base = {"activity_id", "category_uid", "class_uid", "metadata", "severity_id", "time",
            "type_uid"}
    assert set(required[6003]) == base | {"actor", "api", "src_endpoint"}
    assert set(required[6005]) == base | {"actor", "src_endpoint"}
    assert set(required[3002]) == base | {"user"}
    assert set(required[3001]) == base | {"user"}


@pytest.mark.parametrize(("event", "class_uid", "activity_id"), [
    (_event("k8s.create.pods.exec", source={"service": "kubernetes", "kind": "k8s-audit"}),
     6003, 1),
    (_event("k8s.get.secrets", source={"service": "kubernetes", "kind": "k8s-audit"},
            trace={"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}), 6003, 2),
    (_event("ec2.ModifyInstanceAttribute", request_id="r-1"), 6003, 3),
    (_event("cloudtrail.DeleteTrail", outcome="denied",
            policy={"decision": "deny", "reason": "no"}), 6003, 4),
    (_event("ssm.Frobnicate"), 6003, 99),
    (_event("auth.login"), 3002, 1),
    (_event("okta.user.session.end"), 3002, 2),
    (_event("iam.CreateUser", resource={"type": "iam.user", "id": "bob", "name": "bob"}), 3001, 1),
    (_event("iam.AttachUserPolicy"), 3001, 7),
    (_event("okta.user.account.lock"), 3001, 9),
    (_event("db.read.select", source={"service": "postgresql", "kind": "pgaudit"},
            resource={"type": "table", "id": "public.t", "name": "t"},
            attributes={"db.name": "app", "db.statement": "SELECT 1"}), 6005, 4),
    (_event("db.write.insert", actor={"id": "bob"}), 6005, 5),
    (_event("s3.GetObject", resource={"type": "AWS::S3::Object", "id": "arn:aws:s3:::b/k"}),
     6005, 1),
])
def test_classes_and_activities(event, class_uid, activity_id):
    ocsf = to_ocsf(event, 17)
    assert ocsf["class_uid"] == class_uid
    assert ocsf["activity_id"] == activity_id
    assert ocsf["metadata"]["sequence"] == 17
    assert ocsf["time"] == int(datetime(2026, 11, 27, 17, 0, 0, 123000, UTC).timestamp() * 1000)
    assert ocsf["actor"]["user"]["uid"] == event["actor"]["id"]
    check_against_schema(ocsf)


def test_real_sources_export_valid_ocsf(data_dir):
    events = []
    for path in sorted((data_dir / "cloudtrail/stratus-red-team").glob("*.json")):
        events += decode("cloudtrail", path.read_bytes(), None, {}).events
    for path in sorted((data_dir / "k8s-audit").glob("*.json")):
        events += decode("k8s-audit", path.read_bytes(), None, {}).events
    classes = set()
    for index, event in enumerate(events):
        ocsf = to_ocsf(event, index)
        check_against_schema(ocsf)
        classes.add(ocsf["class_uid"])
        orjson.dumps(ocsf)
    assert {6003, 3001, 3002} <= classes
    login = next(e for e in events if e["action"] == "signin.ConsoleLogin")
    ocsf = to_ocsf(login, 0)
    assert ocsf["class_uid"] == 3002 and ocsf["user"]["uid"] == login["actor"]["id"]
    assert ocsf["cloud"]["provider"] == "AWS" and "cloud" in ocsf["metadata"]["profiles"]
    denied = next(e for e in events if e["outcome"] == "denied")
    ocsf = to_ocsf(denied, 1)
    assert ocsf["status_id"] == 2 and ocsf["severity_id"] == 3
