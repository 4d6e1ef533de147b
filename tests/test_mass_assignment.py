"""Mass assignment: no POST or PATCH of the OpenAPI document lets a client set what the server
owns (the owner, ids, statuses, usage and cost, attempts, timestamps, a file's hash and size...).

The fields tried on each operation are generated: the read-only fields of what it answers, plus
a list of server-owned names, minus the fields its request may set. Each one, added to an
otherwise valid body, is either refused (422 naming it, nothing written) or ignored (the rows
the request wrote, read back from the database, hold the server's values, not the client's).
"""

from __future__ import annotations

import io
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from tests.api_world import (
    Operation,
    build_world,
    cancel_unfinished,
    minimal_body,
    operations,
    owned_rows,
    properties,
    request_content,
    request_schema,
    snapshot,
    success_schema,
)

# Names a client must never set, whether or not an operation's answer shows them.
SERVER_OWNED = (
    "id",
    "user_id",
    "owner",
    "owner_id",
    "status",
    "usage",
    "cost",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "attempt",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "deleted_at",
    "revoked_at",
    "expires_at",
    "last_used_at",
    "lease_expires_at",
    "dispatched_at",
    "sha256",
    "size_bytes",
    "char_count",
    "text_status",
    "token",
    "token_hash",
    "token_hint",
    "password_hash",
    "session_id",
    "room_id",
    "agent_id",
    "input_message_id",
    "stop_reason",
    "error",
)
INJECTED_TIME = "2001-02-03T04:05:06+00:00"
INJECTED_INT = 987654
INJECTED_USAGE = {
    "prompt_tokens": INJECTED_INT,
    "completion_tokens": INJECTED_INT,
    "total_tokens": INJECTED_INT,
    "cost": "99.00000000",
}


def writing_operations(spec) -> list[Operation]:
    return [op for op in operations(spec) if op.method in ("post", "patch")]


def forbidden_fields(spec, op: Operation, content_type: str) -> dict[str, dict]:
    """The fields a client must not set on ``op``, with their documented schema (if any)."""
    answered = properties(spec, success_schema(spec, op))
    accepted = {
        name: prop
        for name, prop in properties(spec, request_schema(spec, op, content_type)).items()
        if not prop.get("readOnly")
    }
    fields = {name: prop for name, prop in answered.items() if prop.get("readOnly")}
    fields.update({name: answered.get(name, {}) for name in SERVER_OWNED})
    return {name: prop for name, prop in fields.items() if name not in accepted}


def injected_value(name: str, prop: dict, stranger_id: int) -> Any:
    if name in ("user_id", "owner", "owner_id"):
        return stranger_id
    if name == "usage":
        return dict(INJECTED_USAGE)
    if name == "status":
        return "completed"
    if name == "cost":
        return INJECTED_USAGE["cost"]
    if name in ("sha256", "token_hash"):
        return "0" * 64
    if name.endswith("_at") or prop.get("format") == "date-time":
        return INJECTED_TIME
    kind = prop.get("type")
    if kind == "object":
        return {"injected": INJECTED_INT}
    if kind == "array":
        return [INJECTED_INT]
    if kind == "boolean":
        return True
    if kind == "string":
        return "injected"
    return INJECTED_INT  # ids, counts and sizes


def _same(stored: Any, injected: Any) -> bool:
    if stored is None or isinstance(injected, dict | list | bool):
        return stored == injected
    if injected == INJECTED_TIME:
        return str(stored).startswith("2001-02-03")
    try:
        return Decimal(str(stored)) == Decimal(str(injected))
    except InvalidOperation:
        return str(stored) == str(injected)


def written_rows(before: dict, after: dict) -> list[tuple[str, dict]]:
    """The rows ``after`` has that ``before`` had not (new rows, and changed rows' new state)."""
    written = []
    for table, rows in after.items():
        old = [sorted(row.items()) for row in before.get(table, [])]
        written += [(table, row) for row in rows if sorted(row.items()) not in old]
    return written


def ignored_problems(
    label: str, field: str, value: Any, response, before: dict, after: dict, owner_id: int
) -> list[str]:
    """Why a 2xx answer to a body carrying ``field`` did not ignore it (empty: it did)."""
    problems = []
    body = response.get_json(silent=True)
    if isinstance(body, dict) and field in body and _same(body[field], value):
        problems.append(f"{label}: {field}={value!r} is in the answer")
    checks = {field: value, **(value if isinstance(value, dict) else {})}
    for table, row in written_rows(before, after):
        if "user_id" in row and row["user_id"] != owner_id:
            problems.append(f"{label}: {field} made a {table} row of user {row['user_id']}")
        for column, injected in checks.items():
            if column in row and _same(row[column], injected):
                problems.append(f"{label}: {field} stored {table}.{column}={row[column]!r}")
    return problems


def _json_body(spec, op: Operation, world, owner) -> dict[str, Any]:
    body = minimal_body(spec, op, world.ids)
    tag = uuid.uuid4().hex[:8]
    if "name" in body:
        body["name"] = f"{body['name']}-{tag}"
    if "email" in body:
        # Log in as the owner; register someone new.
        body["email"] = owner.email if op.path.endswith("/tokens") else f"new-{tag}@example.com"
    if "password" in body:
        body["password"] = owner.password
    return body


def _send(client, spec, op: Operation, world, owner, extra: dict[str, Any]):
    """``op`` on the world's resources with a valid body (or file upload) plus ``extra``."""
    headers = {} if op.is_public else owner.headers
    content = request_content(op)
    if "multipart/form-data" in content:
        form = {name: str(value) for name, value in extra.items()}
        form["file"] = (io.BytesIO(b"some notes"), f"n-{uuid.uuid4().hex}.txt")
        return client.open(
            world.path(op),
            method=op.method.upper(),
            data=form,
            headers=headers,
            content_type="multipart/form-data",
        )
    body = _json_body(spec, op, world, owner) if content else {}
    return client.open(
        world.path(op), method=op.method.upper(), json={**body, **extra}, headers=headers
    )


def test_no_post_or_patch_sets_a_server_owned_field(spec, held_client, make_user, engine):
    stranger = make_user()
    owners = []
    failures: list[str] = []
    tried = 0
    try:
        for op in writing_operations(spec):
            owner = make_user()
            owners.append(owner.id)
            world = build_world(held_client, engine, owner)
            multipart = "multipart/form-data" in request_content(op)
            content_type = "multipart/form-data" if multipart else "application/json"

            def send(extra: dict[str, Any], op=op, world=world, owner=owner):
                return _send(held_client, spec, op, world, owner, extra)

            for field, prop in forbidden_fields(spec, op, content_type).items():
                value = injected_value(field, prop, stranger.id)
                before = owned_rows(engine, owner.id)
                response = send({field: value})
                after = owned_rows(engine, owner.id)
                tried += 1
                if response.status_code == 422:
                    errors = response.json.get("errors", {})
                    if field not in errors and not multipart:
                        failures.append(f"{op.label}: 422 for {field} without naming it: {errors}")
                    if snapshot_of(before) != snapshot_of(after):
                        failures.append(f"{op.label}: the 422 for {field} wrote rows")
                elif 200 <= response.status_code < 300:
                    failures += ignored_problems(
                        op.label, field, value, response, before, after, owner.id
                    )
                else:
                    failures.append(
                        f"{op.label} with {field}: {response.status_code} {response.json}"
                    )
            # The same request without the extra fields succeeds: the 422s above were about them.
            baseline = send({})
            if not 200 <= baseline.status_code < 300:
                failures.append(f"{op.label} (valid body): {baseline.status_code} {baseline.json}")
    finally:
        cancel_unfinished(engine, owners)
    assert tried > 100
    assert not failures, "\n".join(failures)


def snapshot_of(rows: dict) -> dict:
    return {table: sorted(repr(sorted(row.items())) for row in rows[table]) for table in rows}


def test_nested_objects_refuse_server_owned_fields_too(spec, held_client, user):
    """A room's orchestration is an object of its own: unknown fields inside are refused."""
    response = held_client.post(
        "/api/v1/rooms",
        json={"name": "nested", "orchestration": {"mode": "sequential", "user_id": 1, "id": 5}},
        headers=user.headers,
    )
    assert response.status_code == 422, response.json
    assert set(response.json["errors"]["orchestration"]) == {"user_id", "id"}


def test_query_strings_set_nothing_either(held_client, make_user, engine):
    """Server-owned fields in the query string of a write are ignored, not applied."""
    owner, stranger = make_user(), make_user()
    before = snapshot(engine, stranger.id)
    response = held_client.post(
        f"/api/v1/agents?user_id={stranger.id}&id=987654&created_at={INJECTED_TIME}",
        json={"name": "from-query"},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.json
    assert response.json["id"] != INJECTED_INT
    assert not response.json["created_at"].startswith("2001")
    assert snapshot(engine, stranger.id) == before
    (agent,) = [a for a in owned_rows(engine, owner.id)["agents"] if a["name"] == "from-query"]
    assert agent["user_id"] == owner.id
