"""The OpenAPI document against the live app: schemathesis generates requests for every
operation from the document (authenticated with a real token, on ids that exist) and fails on
any 5xx or any answer the document does not describe (status, content type, headers, body).

Bounded and seeded, so a run is repeatable and takes seconds."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session as DbSession

from models import ChatSession, Message, Turn, User
from models.users import issue_token
from tests.api_world import OPENAPI_PATH, cancel_unfinished

EXAMPLES_PER_OPERATION = 10
SEED = 20261201
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def fuzz_user(make_user, engine):
    """The user the run acts as; afterwards its unfinished turns are cancelled, so the outbox
    sweep of a later test's worker never sends them either, and the webhooks it made up are
    never sent (it may create a webhook secret, then set webhooks)."""
    owner = make_user()
    yield owner
    cancel_unfinished(engine, [owner.id])


def _resources(engine, owner, make_agent, make_room) -> dict[str, int]:
    """One of each resource the paths name, with a queued turn and its message."""
    agent = make_agent(owner)
    room = make_room(owner, [agent])
    with DbSession(engine) as db:
        session = ChatSession(user_id=owner.id, agent_id=agent.id)
        db.add(session)
        db.flush()
        turn = Turn(session_id=session.id, user_id=owner.id, status="completed")
        db.add(turn)
        db.flush()
        db.add(Message(session_id=session.id, turn_id=turn.id, step=0, role="user", content="hi"))
        # A token of its own for DELETE /auth/tokens/{id}: the run's token stays valid.
        token, _ = issue_token(db, db.get(User, owner.id), name="spare")
        db.commit()
        return {
            "agent_id": agent.id,
            "room_id": room.id,
            "session_id": session.id,
            "turn_id": turn.id,
            "token_id": token.id,
        }


@pytest.fixture
def fuzz_ids(engine, fuzz_user, make_agent, make_room):
    """Ids the generated paths use: ``live`` ones, and ``doomed`` ones for DELETE, so deleting
    does not leave every later operation a 404."""
    return {
        "live": _resources(engine, fuzz_user, make_agent, make_room),
        "doomed": _resources(engine, fuzz_user, make_agent, make_room),
    }


def _use_real_ids(case, ids: dict[str, dict[str, int]]) -> None:
    pool = ids["doomed" if case.method.upper() == "DELETE" else "live"]
    for name, value in list((case.path_parameters or {}).items()):
        # Every third generated id is kept, so missing ids are exercised too.
        if isinstance(value, int) and value % 3 == 0:
            continue
        if name == "scope_id":
            name = "room_id" if case.path.startswith("/api/v1/rooms/") else "agent_id"
        if name in pool:
            case.path_parameters[name] = pool[name]


def _describe(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return "\n".join(_describe(inner) for inner in error.exceptions)
    return f"{type(error).__name__}: {error}"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_answers_as_its_openapi_document_says(held_app, fuzz_user, fuzz_ids, mode):
    """Every operation, valid requests then invalid ones: no 5xx, every answer as documented."""
    api_schema = schemathesis.openapi.from_wsgi(OPENAPI_PATH, held_app)
    failures: dict[str, str] = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 35

    for operation in operations:

        @seed(SEED)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def exercise(case):
            _use_real_ids(case, fuzz_ids)
            case.call_and_validate(headers=fuzz_user.headers, checks=CHECKS)

        try:
            exercise()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # nothing to make invalid (no parameters)
        # Every operation runs; all failures are reported (schemathesis raises a group).
        except (Exception, BaseExceptionGroup) as error:
            failures[operation.label] = _describe(error)

    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
