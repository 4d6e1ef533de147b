"""The ownership matrix, generated from the OpenAPI document: every operation whose path names
an id, called on a real resource of each kind as its owner (2xx), as another user (404, the same
answer as for an id that does not exist), with no token, a garbage token and a revoked token
(401). Nobody but the owner changes anything.

A new route is covered by itself: its path parameters are filled from the resource kind the
path names, and an operation whose parameters cannot be filled fails the test (no skipping).
"""

from __future__ import annotations

import re

import pytest

from tests.api_world import (
    CannotFill,
    build_world,
    cancel_unfinished,
    minimal_body,
    operations,
    snapshot,
)

GARBAGE_TOKEN = "rc_" + "A" * 43
HOSTILE = ("other_user", "no_token", "garbage_token", "revoked_token")


@pytest.fixture
def users(make_user, engine):
    """Factory of users whose unfinished turns are cancelled after the test."""
    made = []

    def make():
        made.append(make_user())
        return made[-1]

    yield make
    cancel_unfinished(engine, [u.id for u in made])


def id_operations(spec):
    return [op for op in operations(spec) if op.path_params]


def _normalised(body, ids) -> str:
    """The body's text with the path's ids blanked, so two 404s compare by everything else."""
    text = repr(body)
    for value in sorted(set(ids), reverse=True):
        text = re.sub(rf"\b{value}\b", "<id>", text)
    return text


def test_every_operation_with_a_path_id_can_be_filled(spec, held_client, users, engine):
    """The matrix covers a new route by itself: every path parameter maps to a resource kind
    the world builds. (Also asserts the document still has the operations we know of.)"""
    ops = id_operations(spec)
    assert len(ops) >= 23
    world = build_world(held_client, engine, users())
    unfillable = []
    for op in ops:
        try:
            world.path(op)
            minimal_body(spec, op, world.ids)
        except CannotFill as error:
            unfillable.append(str(error))
    assert not unfillable, "\n".join(unfillable)


def test_hostile_callers_get_404_or_401_and_change_nothing(spec, held_client, users, engine):
    """Another user: 404, exactly as for a missing id; no, garbage or revoked token: 401."""
    stranger = users()
    failures: list[str] = []
    for op in id_operations(spec):
        owner = users()
        world = build_world(held_client, engine, owner)
        path = world.path(op)
        body = minimal_body(spec, op, world.ids)
        before = snapshot(engine, owner.id)
        callers = {
            "other_user": stranger.headers,
            "no_token": {},
            "garbage_token": {"Authorization": f"Bearer {GARBAGE_TOKEN}"},
            "revoked_token": {"Authorization": f"Bearer {world.revoked_token}"},
        }
        for caller in HOSTILE:
            response = held_client.open(
                path, method=op.method.upper(), json=body, headers=callers[caller]
            )
            expected = 404 if caller == "other_user" else 401
            if response.status_code != expected:
                failures.append(
                    f"{op.label} as {caller}: {response.status_code} {response.get_data()!r}"
                )
                continue
            if response.json["code"] != ("not_found" if expected == 404 else "unauthorized"):
                failures.append(f"{op.label} as {caller}: {response.json}")
            if caller == "other_user":
                # Indistinguishable from an id that does not exist: same status, same body
                # (but for the id it names), same headers.
                missing_path, missing_ids = world.missing_path(op)
                missing = held_client.open(
                    missing_path, method=op.method.upper(), json=body, headers=stranger.headers
                )
                real_ids = [int(part) for part in re.findall(r"/(\d+)", path)]
                if (missing.status_code, _normalised(missing.json, missing_ids)) != (
                    response.status_code,
                    _normalised(response.json, real_ids),
                ):
                    failures.append(
                        f"{op.label}: another user's id answers {response.status_code} "
                        f"{response.json}, a missing id {missing.status_code} {missing.json}"
                    )
                if sorted(missing.headers.keys()) != sorted(response.headers.keys()):
                    failures.append(
                        f"{op.label}: headers differ: {sorted(response.headers.keys())} "
                        f"against {sorted(missing.headers.keys())} for a missing id"
                    )
            else:
                if not response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
                    failures.append(f"{op.label} as {caller}: no WWW-Authenticate header")
        if snapshot(engine, owner.id) != before:
            failures.append(f"{op.label}: a hostile caller changed the owner's rows")
    assert not failures, "\n".join(failures)


def test_the_owner_gets_a_success_on_every_operation(spec, held_client, users, engine):
    """The same calls as the owner succeed: the matrix's 404s and 401s are about who calls,
    not about ids or bodies that are wrong."""
    failures: list[str] = []
    for op in id_operations(spec):
        owner = users()
        world = build_world(held_client, engine, owner)
        response = held_client.open(
            world.path(op),
            method=op.method.upper(),
            json=minimal_body(spec, op, world.ids),
            headers=owner.headers,
        )
        if not 200 <= response.status_code < 300:
            failures.append(f"{op.label}: {response.status_code} {response.get_data()!r}")
        elif str(response.status_code) not in op.doc["responses"]:
            failures.append(f"{op.label}: {response.status_code} is not documented")
    assert not failures, "\n".join(failures)


def test_ids_of_another_user_inside_a_path_of_ones_own_are_404(spec, held_client, users, engine):
    """Mixed paths: the caller's own room with another user's agent (and the other way round)
    are 404, and nothing changes for either."""
    mine, theirs = users(), users()
    my_world = build_world(held_client, engine, mine)
    their_world = build_world(held_client, engine, theirs)
    failures: list[str] = []
    for op in id_operations(spec):
        if len(op.path_params) < 2:
            continue
        kinds = [op.kind_of(param) for param in op.path_params]
        body = minimal_body(spec, op, my_world.ids)
        for foreign in kinds:
            mixed = {**my_world.ids, foreign: their_world.ids[foreign]}
            before = snapshot(engine, theirs.id), snapshot(engine, mine.id)
            response = held_client.open(
                my_world.path(op, mixed), method=op.method.upper(), json=body, headers=mine.headers
            )
            if response.status_code != 404:
                failures.append(f"{op.label} with their {foreign}: {response.status_code}")
            if (snapshot(engine, theirs.id), snapshot(engine, mine.id)) != before:
                failures.append(f"{op.label} with their {foreign}: rows changed")
    # Ids in bodies: putting another user's agent in one's own room.
    response = held_client.post(
        f"/api/v1/rooms/{my_world.ids['room']}/agents",
        json={"agent_id": their_world.ids["spare_agent"]},
        headers=mine.headers,
    )
    if response.status_code != 404:
        failures.append(f"POST room agents with their agent in the body: {response.status_code}")
    assert not failures, "\n".join(failures)
