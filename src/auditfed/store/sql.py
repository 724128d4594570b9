"""SQL shared by the SQL engines (SQLite and PostgreSQL): column lists and the
statements whose shape does not depend on the engine, only its placeholder."""

from __future__ import annotations

TOKEN_COLUMNS = "token_id, role, service, environment, description, created_at, expires_at, revoked_at"
ALERT_COLUMNS = (
    "alert_id, dedup_key, rule_id, title, level, grp, indexes, first_time, last_time, raised_at,"
    " log_index, status, notes, details, updated_at"
)
DELIVERY_COLUMNS = (
    "delivery_id, alert_id, sink, payload, attempts, next_attempt_at, last_error, delivered_at"
)


def advance_node(
    placeholder: str, name: str, expected_position: int, position: int, compact: bytes,
    checkpoint: str, seen: str,
) -> tuple[str, tuple[object, ...]]:
    """``(sql, args)`` of :meth:`~auditfed.store.base.Store.advance_federation_node`:
    one conditional update, so that it never overwrites what an admin changed."""
    p = placeholder
    sql = (f"UPDATE federation_nodes SET position = {p}, compact = {p}, checkpoint = {p},"
           f" last_seen = {p}, updated_at = {p} WHERE name = {p} AND position = {p}")
    return sql, (position, compact, checkpoint, seen, seen, name, expected_position)


def alert_listing(
    placeholder: str,
    *,
    status: str | None,
    rule_id: str | None,
    level: str | None,
    before: int | None,
    after: int | None,
    limit: int,
) -> tuple[str, list[object]]:
    """``(sql, args)`` listing alerts by log index: newest first, or oldest first after a cursor."""
    where: list[str] = []
    args: list[object] = []
    for column, value in (("status", status), ("rule_id", rule_id), ("level", level)):
        if value is not None:
            where.append(f"{column} = {placeholder}")
            args.append(value)
    if before is not None:
        where.append(f"log_index < {placeholder}")
        args.append(before)
    if after is not None:
        where.append(f"log_index > {placeholder}")
        args.append(after)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    order = "ASC" if after is not None else "DESC"
    args.append(limit)
    sql = f"SELECT {ALERT_COLUMNS} FROM alerts {clause} ORDER BY log_index {order} LIMIT {placeholder}"
    return sql, args
