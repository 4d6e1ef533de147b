"""The API as its OpenAPI document describes it, and a populated account to call it on.

``operations(spec)`` lists every operation of the document; ``World`` is one user's full set of
resources (one of each kind a path names), built through the API itself, so that a test can
fill any operation's path (``world.path(op)``) and fails, rather than skips, an operation whose
path names something it cannot build. ``snapshot`` reads a user's rows straight from the
database, to prove that a request changed nothing (or only what it should).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import MetaData, select, update
from sqlalchemy.orm import Session as DbSession

from models import ApiToken, Turn, User, lifecycle
from models.base import Base
from models.turns import ACTIVE_STATUSES, PENDING, WEBHOOK_FAILED, WEBHOOK_PENDING
from models.users import issue_token
from tests.files_helpers import uploaded

OPENAPI_PATH = "/api/v1/docs/openapi.json"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")

# A path parameter is the id of the resource its preceding segment names:
# /rooms/{room_id}/agents/{agent_id} is a room, then an agent (a member of that room).
SEGMENT_KINDS = {
    "agents": "agent",
    "rooms": "room",
    "sessions": "session",
    "turns": "turn",
    "files": "file",
    "tokens": "token",
}


class CannotFill(AssertionError):
    """An operation names a path parameter this module does not know how to fill: a new kind
    of resource, which World must learn to build (so that it is tested, not skipped)."""


class HeldTasks:
    """A task sender that keeps the tasks: turns are accepted and stay queued, no worker runs
    them (they are cancelled at teardown, see ``cancel_unfinished``)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list]] = []

    def send_task(self, name: str, args=None, **options) -> None:
        self.sent.append((name, list(args or [])))


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    doc: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.path}"

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def is_public(self) -> bool:
        return self.doc.get("security") == []

    def kind_of(self, param: str) -> str:
        """The kind of resource ``param`` is the id of (from the path segment before it)."""
        segments = self.path.split("/")
        index = segments.index(f"{{{param}}}")
        kind = SEGMENT_KINDS.get(segments[index - 1])
        if kind is None:
            raise CannotFill(
                f"{self.label}: no resource kind for path parameter {param!r} after "
                f"{segments[index - 1]!r}; teach tests/api_world.py (SEGMENT_KINDS, World) to "
                "build one"
            )
        return kind


def schema_ref_parts(ref: str) -> list[str]:
    assert ref.startswith("#/"), ref
    return ref[2:].split("/")


def resolve(spec: dict, schema: dict | None) -> dict:
    """``schema`` with its ``$ref`` followed."""
    while schema and "$ref" in schema:
        node: Any = spec
        for part in schema_ref_parts(schema["$ref"]):
            node = node[part]
        schema = node
    return schema or {}


def operations(spec: dict) -> list[Operation]:
    return [
        Operation(method, path, doc)
        for path, item in spec["paths"].items()
        for method, doc in item.items()
        if method in HTTP_METHODS
    ]


def request_content(op: Operation) -> dict[str, Any]:
    return op.doc.get("requestBody", {}).get("content", {})


def request_schema(spec: dict, op: Operation, content_type: str = "application/json") -> dict:
    return resolve(spec, request_content(op).get(content_type, {}).get("schema"))


def success_schema(spec: dict, op: Operation) -> dict:
    """The JSON schema of the operation's first 2xx answer ({} if it has no JSON body)."""
    for status in sorted(op.doc["responses"]):
        if status.startswith("2"):
            response = resolve(spec, op.doc["responses"][status])
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            return resolve(spec, schema)
    return {}


def properties(spec: dict, schema: dict) -> dict[str, dict]:
    return {name: resolve(spec, prop) for name, prop in schema.get("properties", {}).items()}


def example_value(spec: dict, name: str, prop: dict, ids: dict[str, int]) -> Any:
    """A valid value for a required request field: an id of the world's for ``<kind>_id``
    fields (``agent_id`` is the agent that is in no room yet), else the documented example."""
    if name == "agent_id":
        return ids["spare_agent"]
    if name.endswith("_id") and name[: -len("_id")] in ids:
        return ids[name[: -len("_id")]]
    if "example" in prop:
        return prop["example"]
    if "enum" in prop:
        return prop["enum"][0]
    if "default" in prop:
        return prop["default"]
    defaults = {"string": "x", "integer": 1, "number": 1, "boolean": True, "object": {}}
    if prop.get("type") in defaults:
        return defaults[prop["type"]]
    raise CannotFill(f"no value for the required field {name!r}: {prop}")


def minimal_body(spec: dict, op: Operation, ids: dict[str, int]) -> dict[str, Any] | None:
    """The smallest valid JSON body of ``op`` (its required fields), None if it takes none."""
    content = request_content(op)
    if not content:
        return None
    if "application/json" not in content:
        raise CannotFill(f"{op.label}: no body builder for {sorted(content)}")
    schema = request_schema(spec, op)
    props = properties(spec, schema)
    return {
        name: example_value(spec, name, props.get(name, {}), ids)
        for name in schema.get("required", [])
    }


@dataclass
class World:
    """One user's resources, one of each kind (and what operations on them need)."""

    owner: Any  # tests.conftest.TestUser
    ids: dict[str, int] = field(default_factory=dict)
    revoked_token: str = ""

    def path(self, op: Operation, ids: dict[str, int] | None = None) -> str:
        ids = self.ids if ids is None else ids
        path = op.path
        for param in op.path_params:
            kind = op.kind_of(param)
            if kind not in ids:
                raise CannotFill(f"{op.label}: the world has no {kind} for {param!r}")
            path = path.replace(f"{{{param}}}", str(ids[kind]))
        return path

    def missing_path(self, op: Operation) -> tuple[str, list[int]]:
        """``op``'s path with ids no row has; and those ids."""
        missing = {kind: 9_000_000_000 + index for index, kind in enumerate(self.ids)}
        return self.path(op, missing), [missing[op.kind_of(p)] for p in op.path_params]


def build_world(client, engine, owner, **agent_fields: Any) -> World:
    """Every kind of resource a path can name, owned by ``owner``, made through the API:
    an agent in a room, a spare agent in no room, a session with a turn (queued unless the
    app's worker runs it), a room session, a file, a spare token and a revoked one."""
    headers = owner.headers
    tag = uuid.uuid4().hex[:8]

    def created(method: str, url: str, body: dict, status: int = 201) -> dict:
        response = client.open(url, method=method, json=body, headers=headers)
        assert response.status_code == status, (url, response.status_code, response.json)
        return response.json

    world = World(owner)
    ids = world.ids
    ids["agent"] = created("POST", "/api/v1/agents", {"name": f"member-{tag}", **agent_fields})[
        "id"
    ]
    ids["spare_agent"] = created(
        "POST", "/api/v1/agents", {"name": f"spare-{tag}", **agent_fields}
    )["id"]
    ids["room"] = created("POST", "/api/v1/rooms", {"name": f"room-{tag}"})["id"]
    created("POST", f"/api/v1/rooms/{ids['room']}/agents", {"agent_id": ids["agent"]})
    # enqueue: the owner may post a turn while the world's turn is still active.
    ids["session"] = created(
        "POST", f"/api/v1/agents/{ids['agent']}/sessions", {"multitask": "enqueue"}
    )["id"]
    ids["room_session"] = created("POST", f"/api/v1/rooms/{ids['room']}/sessions", {})["id"]
    ids["turn"] = created(
        "POST", f"/api/v1/sessions/{ids['session']}/turns", {"content": "hello"}, 202
    )["id"]
    ids["file"] = uploaded(client, owner, f"notes-{tag}.txt", b"release notes: ship on friday")[
        "id"
    ]
    with DbSession(engine) as db:
        user = db.get(User, owner.id)
        spare, _ = issue_token(db, user, name="spare")
        revoked, world.revoked_token = issue_token(db, user, name="revoked")
        db.commit()
        ids["token"], revoked_id = spare.id, revoked.id
    response = client.delete(f"/api/v1/auth/tokens/{revoked_id}", headers=headers)
    assert response.status_code == 204, response.json
    return world


def cancel_unfinished(engine, user_ids: list[int]) -> None:
    """Cancel the users' turns that no worker ran, so no later test's worker picks them up; and
    give up their webhooks (URLs a test made up), so no webhook sweep ever sends them."""
    with DbSession(engine) as db:
        unfinished = db.scalars(
            select(Turn)
            .where(Turn.user_id.in_(user_ids), Turn.status.in_((PENDING, *ACTIVE_STATUSES)))
            .order_by(Turn.id)
        ).all()
        for turn in unfinished:
            lifecycle.cancel(db, turn, stop_reason="test_teardown", promote=False)
            db.commit()
        db.execute(
            update(Turn)
            .where(Turn.user_id.in_(user_ids), Turn.webhook_status == WEBHOOK_PENDING)
            .values(webhook_status=WEBHOOK_FAILED, webhook_next_attempt_at=None)
        )
        db.commit()


# Bookkeeping the server itself writes on a read (not a change a request made).
_VOLATILE = {("api_tokens", "last_used_at")}


def owned_rows(engine, user_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every row of the user's, by table: rows with a ``user_id`` column, the user's row, and
    the rows that belong to those (room members, messages)."""
    metadata: MetaData = Base.metadata
    rows: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if (table.name, c.name) not in _VOLATILE]
            if "user_id" in table.c:
                where = table.c.user_id == user_id
            elif table.name == User.__tablename__:
                where = table.c.id == user_id
            elif table.name == "room_agents":
                rooms = metadata.tables["rooms"]
                where = table.c.room_id.in_(select(rooms.c.id).where(rooms.c.user_id == user_id))
            elif table.name == "messages":
                sessions = metadata.tables["sessions"]
                where = table.c.session_id.in_(
                    select(sessions.c.id).where(sessions.c.user_id == user_id)
                )
            else:
                continue
            result = conn.execute(select(*columns).where(where))
            rows[table.name] = [dict(row._mapping) for row in result]
    return rows


def snapshot(engine, user_id: int) -> dict[str, list[str]]:
    """``owned_rows`` in a comparable form: equal snapshots, unchanged rows."""
    return {
        table: sorted(repr(sorted(row.items())) for row in rows)
        for table, rows in owned_rows(engine, user_id).items()
    }


def token_hashes(engine, user_id: int) -> list[str]:
    with DbSession(engine) as db:
        return list(db.scalars(select(ApiToken.token_hash).where(ApiToken.user_id == user_id)))
