"""The OCSF view of an auditfed event (export only; never the storage format).

Spec: Open Cybersecurity Schema Framework, schema version :data:`OCSF_VERSION`
(https://schema.ocsf.io): classes API Activity (6003), Authentication (3002), Account
Change (3001) and Datastore Activity (6005). ``type_uid`` = ``class_uid * 100 +
activity_id``; ``time`` is epoch milliseconds; ``metadata.version`` is the schema
version. Every attribute the schema marks ``required`` for these classes (and for the
objects used) is filled; auditfed fields without an OCSF home go to ``unmapped``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

OCSF_VERSION = "1.9.0-dev"
PRODUCT = {"name": "auditfed", "vendor_name": "auditfed", "version": "0.1.0"}

API_ACTIVITY, AUTHENTICATION, ACCOUNT_CHANGE, DATASTORE_ACTIVITY = 6003, 3002, 3001, 6005

CLASSES: dict[int, dict[str, Any]] = {
    API_ACTIVITY: {
        "name": "API Activity", "category_uid": 6, "category": "Application Activity",
        "activities": {1: "Create", 2: "Read", 3: "Update", 4: "Delete"},
    },
    DATASTORE_ACTIVITY: {
        "name": "Datastore Activity", "category_uid": 6, "category": "Application Activity",
        "activities": {1: "Read", 2: "Update", 3: "Connect", 4: "Query", 5: "Write",
                       6: "Create", 7: "Delete", 8: "List", 9: "Encrypt", 10: "Decrypt"},
    },
    AUTHENTICATION: {
        "name": "Authentication", "category_uid": 3, "category": "Identity & Access Management",
        "activities": {1: "Logon", 2: "Logoff", 3: "Authentication Ticket",
                       4: "Service Ticket Request", 5: "Service Ticket Renew", 6: "Preauth",
                       7: "Account Switch"},
    },
    ACCOUNT_CHANGE: {
        "name": "Account Change", "category_uid": 3, "category": "Identity & Access Management",
        "activities": {1: "Create", 2: "Enable", 3: "Password Change", 4: "Password Reset",
                       5: "Disable", 6: "Delete", 7: "Attach Policy", 8: "Detach Policy",
                       9: "Lock", 10: "MFA Factor Enable", 11: "MFA Factor Disable",
                       12: "Unlock"},
    },
}
_COMMON_ACTIVITIES = {0: "Unknown", 99: "Other"}

_AUTH = re.compile(
    r"(^auth\.)|consolelogin|(^|\.)(log(in|on|out|off))(\.|$)|\.session\.(start|end)$|"
    r"^okta\.user\.authentication\.|^okta\.user\.session\.",
    re.IGNORECASE,
)
_LOGOFF = re.compile(r"log(out|off)|session\.end$", re.IGNORECASE)

# (regex on the action, activity_id) for Account Change
_ACCOUNT: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(p, re.IGNORECASE), a) for p, a in (
        (r"^iam\.(CreateUser|CreateRole|CreateServiceLinkedRole)$", 1),
        (r"^iam\.(DeleteUser|DeleteRole|DeleteServiceLinkedRole)$", 6),
        (r"^iam\.(CreateLoginProfile|UpdateLoginProfile|ChangePassword)$", 3),
        (r"^iam\.(Attach(User|Role|Group)Policy|Put(User|Role|Group)Policy|AddUserToGroup)$", 7),
        (r"^iam\.(Detach(User|Role|Group)Policy|Delete(User|Role|Group)Policy|"
         r"RemoveUserFromGroup)$", 8),
        (r"^iam\.(EnableMFADevice|CreateVirtualMFADevice)$", 10),
        (r"^iam\.(DeactivateMFADevice|DeleteVirtualMFADevice)$", 11),
        (r"^iam\.UpdateUser$", 99),
        (r"^okta\.user\.lifecycle\.create$", 1),
        (r"^okta\.user\.lifecycle\.(activate|reactivate|unsuspend)$", 2),
        (r"^okta\.user\.lifecycle\.(deactivate|suspend)$", 5),
        (r"^okta\.user\.lifecycle\.delete", 6),
        (r"^okta\.user\.account\.update_password$", 3),
        (r"^okta\.user\.account\.reset_password$", 4),
        (r"^okta\.user\.account\.lock", 9),
        (r"^okta\.user\.account\.unlock", 12),
        (r"^okta\.user\.mfa\.factor\.activate$", 10),
        (r"^okta\.user\.mfa\.factor\.(deactivate|reset_all)$", 11),
        (r"^k8s\.create\.serviceaccounts$", 1),
        (r"^k8s\.delete\.serviceaccounts$", 6),
        (r"^(account|user)\.create$", 1),
        (r"^(account|user)\.(enable|activate)$", 2),
        (r"^(account|user)\.password\.(change|update)$", 3),
        (r"^(account|user)\.password\.reset$", 4),
        (r"^(account|user)\.(disable|deactivate)$", 5),
        (r"^(account|user)\.delete$", 6),
        (r"^(account|user)\.lock$", 9),
        (r"^(account|user)\.unlock$", 12),
    )
)

_DB_ACTIVITY = (
    (re.compile(r"^(select|fetch)"), 4),
    (re.compile(r"^(insert|copy)"), 5),
    (re.compile(r"^(update|alter|merge|grant|revoke|comment)"), 2),
    (re.compile(r"^(delete|truncate|drop)"), 7),
    (re.compile(r"^create"), 6),
    (re.compile(r"^(connect|login)"), 3),
)
_S3_ACTIVITY = (
    (re.compile(r"^(GetObject|HeadObject|SelectObjectContent|RestoreObject)"), 1),
    (re.compile(r"^(PutObject|CopyObject|UploadPart|CompleteMultipartUpload)"), 5),
    (re.compile(r"^(DeleteObject|DeleteObjects|DeleteBucket)"), 7),
    (re.compile(r"^(ListObjects|ListBucket|ListObjectVersions)"), 8),
    (re.compile(r"^CreateBucket"), 6),
)

_CREATE = ("create", "post", "add", "run", "launch", "register", "import", "generate", "issue",
           "allocate", "request", "copy", "upload", "invoke", "send", "start", "exec")
_READ = ("get", "list", "describe", "read", "watch", "head", "lookup", "search", "batchget",
         "retrieve", "download", "query", "scan", "view", "check", "clone", "fetch")
_UPDATE = ("update", "patch", "modify", "set", "put", "change", "attach", "enable", "disable",
           "replace", "associate", "authorize", "stop", "reboot", "reset", "rotate", "tag",
           "untag", "apply", "edit", "rename", "restore", "share", "transfer", "leave", "join")
_DELETE = ("delete", "remove", "destroy", "detach", "terminate", "revoke", "deregister",
           "disassociate", "purge", "deletecollection")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def _verb(event: dict[str, Any]) -> str:
    action = event["action"]
    parts = action.split(".")
    kind = (event.get("source") or {}).get("kind")
    word = parts[1] if kind == "k8s-audit" and len(parts) > 1 else parts[-1]
    words = _WORDS.findall(word)
    return (words[0] if words else word).lower()


def _api_activity(event: dict[str, Any]) -> int:
    verb = _verb(event)
    if verb == "deletecollection":
        return 4
    for activity, verbs in ((4, _DELETE), (1, _CREATE), (2, _READ), (3, _UPDATE)):
        if verb in verbs:
            return activity
    return 99


def classify(event: dict[str, Any]) -> tuple[int, int]:
    """The OCSF ``(class_uid, activity_id)`` for an event."""
    action = event["action"]
    kind = (event.get("source") or {}).get("kind")
    if action.startswith("db.") or kind == "pgaudit":
        command = action.split(".", 2)[-1] if action.count(".") >= 2 else action
        for pattern, activity in _DB_ACTIVITY:
            if pattern.match(command):
                return DATASTORE_ACTIVITY, activity
        return DATASTORE_ACTIVITY, 99
    if action.startswith("s3."):
        name = action[3:]
        for pattern, activity in _S3_ACTIVITY:
            if pattern.match(name):
                return DATASTORE_ACTIVITY, activity
    for pattern, activity in _ACCOUNT:
        if pattern.search(action):
            return ACCOUNT_CHANGE, activity
    if _AUTH.search(action):
        return AUTHENTICATION, 2 if _LOGOFF.search(action) else 1
    return API_ACTIVITY, _api_activity(event)


def _ms(value: str | None) -> int | None:
    if not value:
        return None
    return int(datetime.fromisoformat(value).timestamp() * 1000)


def _user(actor: dict[str, Any]) -> dict[str, Any]:
    user: dict[str, Any] = {"uid": actor["id"], "name": actor.get("principal") or actor["id"]}
    if actor.get("type"):
        user["type"] = actor["type"]
    return user


def to_ocsf(event: dict[str, Any], index: int | None = None) -> dict[str, Any]:
    """Render a stored event as an OCSF event of one of the four supported classes.

    ``index`` (the event's place in the log) becomes ``metadata.sequence``.
    """
    class_uid, activity_id = classify(event)
    spec = CLASSES[class_uid]
    activity_name = spec["activities"].get(activity_id) or _COMMON_ACTIVITIES[activity_id]
    actor_in = event.get("actor") or {"id": "unknown"}
    source = event.get("source") or {}
    resource = event.get("resource") or {}
    attributes = event.get("attributes") or {}
    outcome = event.get("outcome", "unknown")
    time_ms = _ms(event.get("time")) or _ms(event.get("observed_time"))
    if time_ms is None:
        raise ValueError("an event needs a time to be exported to OCSF")

    profiles: list[str] = []
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": dict(PRODUCT),
        "log_name": source.get("kind") or "auditfed",
        "original_time": event.get("time") or event.get("observed_time"),
    }
    if event.get("id"):
        metadata["uid"] = event["id"]
    if index is not None:
        metadata["sequence"] = index
    logged = _ms(event.get("observed_time"))
    if logged is not None:
        metadata["logged_time"] = logged
    trace = event.get("trace") or {}
    correlation = trace.get("trace_id") or event.get("request_id")
    if correlation:
        metadata["correlation_uid"] = correlation

    actor: dict[str, Any] = {"user": _user(actor_in)}
    session = {k: v for k, v in (("uid", actor_in.get("session")),
                                 ("issuer", actor_in.get("issuer"))) if v}
    if session:
        actor["session"] = session
    chain = actor_in.get("chain") or []
    if chain:
        actor["invoked_by"] = chain[0]["id"]
    if actor_in.get("user_agent"):
        actor["app_name"] = actor_in["user_agent"][:256]

    src_endpoint: dict[str, Any] = {"ip": actor_in["ip"]} if actor_in.get("ip") else {"name": "unknown"}

    status_id = {"success": 1, "failure": 2, "denied": 2}.get(outcome, 0)
    out: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": spec["name"],
        "category_uid": spec["category_uid"],
        "category_name": spec["category"],
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{spec['name']}: {activity_name}",
        "severity_id": {"failure": 2, "denied": 3}.get(outcome, 1),
        "severity": {"failure": "Low", "denied": "Medium"}.get(outcome, "Informational"),
        "time": time_ms,
        "metadata": metadata,
        "actor": actor,
        "src_endpoint": src_endpoint,
        "status_id": status_id,
        "status": {1: "Success", 2: "Failure", 0: "Unknown"}[status_id],
        "message": " ".join(x for x in (actor_in["id"], event["action"], resource.get("id")) if x),
    }
    policy = event.get("policy") or {}
    if policy.get("reason") or outcome == "denied":
        out["status_detail"] = policy.get("reason") or "denied by policy"

    if source.get("kind") == "cloudtrail":
        cloud: dict[str, Any] = {"provider": "AWS"}
        if source.get("region"):
            cloud["region"] = source["region"]
        if source.get("account"):
            cloud["account"] = {"uid": source["account"]}
        out["cloud"] = cloud
        profiles.append("cloud")

    service = {"name": source.get("service") or "unknown"}
    if class_uid == API_ACTIVITY:
        api: dict[str, Any] = {"operation": event["action"], "service": service}
        if event.get("request_id"):
            api["request"] = {"uid": event["request_id"]}
        out["api"] = api
        if resource:
            out["resources"] = [{k: v for k, v in (("uid", resource.get("id")),
                                                    ("name", resource.get("name")),
                                                    ("type", resource.get("type"))) if v}]
        if trace.get("trace_id"):
            out["trace"] = {"uid": trace["trace_id"]}
            profiles.append("trace")
    elif class_uid == AUTHENTICATION:
        out["user"] = _user(actor_in)
        out["service"] = service
        if session:
            out["session"] = session
    elif class_uid == ACCOUNT_CHANGE:
        target = resource.get("id") or resource.get("name")
        user: dict[str, Any] = {"uid": target} if target else {"name": "unknown"}
        if resource.get("name"):
            user["name"] = resource["name"]
        if resource.get("type"):
            user["type"] = resource["type"]
        out["user"] = user
    elif class_uid == DATASTORE_ACTIVITY:
        rtype = resource.get("type")
        if event["action"].startswith("s3."):
            bucket = resource.get("name") or resource.get("id") or "unknown"
            out["databucket"] = {"name": bucket, "type_id": 1, "type": "S3"}
            out["type_id"], out["type"] = 2, "Databucket"
        else:
            db_name = attributes.get("db.name") or (resource.get("id") if rtype == "database"
                                                    else None) or source.get("service")
            relational = attributes.get("db.system") == "postgresql" or source.get("kind") == "pgaudit"
            out["database"] = {"name": db_name, "type_id": 1 if relational else 0,
                               "type": "Relational" if relational else "Unknown"}
            out["type_id"], out["type"] = 1, "Database"
            if rtype in ("table", "view", "materialized_view", "foreign_table") and resource.get("id"):
                out["table"] = {"uid": resource["id"], "name": resource.get("name") or resource["id"]}
                out["type_id"], out["type"] = 3, "Table"
        statement = attributes.get("db.statement")
        if isinstance(statement, str) and statement:
            command = attributes.get("pgaudit.command") or event["action"].rsplit(".", 1)[-1]
            out["query_info"] = {"query_string": statement, "name": str(command)}

    if profiles:
        metadata["profiles"] = profiles
    unmapped = {k: v for k, v in (
        ("action", event["action"]), ("outcome", outcome), ("resource", resource or None),
        ("source", source or None), ("request_id", event.get("request_id")),
        ("reason", event.get("reason")), ("policy", policy or None),
        ("trace", trace or None), ("chain", chain or None), ("claimed", actor_in.get("claimed")),
    ) if v is not None}
    out["unmapped"] = {"auditfed": unmapped}
    return out
