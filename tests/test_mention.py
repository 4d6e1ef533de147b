"""Mention rooms: the agents the user addresses answer once each; a reply that addresses other
members as @name has them answer in the next round, up to max_rounds."""

import pytest

from tests.conftest import FAKE_MODEL, FAKE_PROVIDER
from tests.helpers import messages, post_turn, start_session, wait_done
from tests.test_orchestration import SPEAKER

pytestmark = pytest.mark.usefixtures("celery_worker")


@pytest.fixture
def mention_room(make_agent, make_room):
    def make(owner, max_rounds):
        agents = [
            make_agent(
                owner,
                name=name,
                provider=FAKE_PROVIDER,
                model=FAKE_MODEL,
                system_prompt=f"You are {name}.",
            )
            for name in ("ann", "ben", "cy")
        ]
        return make_room(owner, agents, mode="mention", max_rounds=max_rounds)

    return make


def _speakers(turn):
    return [(e["name"], e.get("round")) for e in turn["progress"]["speakers"]]


def test_addressed_agents_answer_once_each_whatever_max_rounds(
    client, user, mention_room, fake_llm
):
    fake_llm.respond_with(lambda r: f"{SPEAKER.search(r.system_prompt)[1]}: 4.")
    session = start_session(client, user, room=mention_room(user, max_rounds=3))
    turn = wait_done(
        client, user, post_turn(client, user, session["id"], "@ben what is 2+2?").json["id"]
    )
    assert turn["status"] == "completed", turn["error"]
    assert _speakers(turn) == [("ben", 1)]
    assert len(fake_llm.requests) == 1
    replies = [m for m in messages(client, user, session["id"]) if m["role"] == "assistant"]
    assert [m["content"] for m in replies] == ["ben: 4."]


def test_replies_that_address_members_add_rounds_up_to_max_rounds(
    client, user, mention_room, fake_llm
):
    said = {
        "ben": "Let me ask @cy and @ann.",
        "cy": "@ben, it is 4.",  # addresses ben again: a third round
        "ann": "Four. @ann is me, and I do not count.",
    }
    fake_llm.respond_with(lambda r: said[SPEAKER.search(r.system_prompt)[1]])
    session = start_session(client, user, room=mention_room(user, max_rounds=3))
    turn = wait_done(
        client, user, post_turn(client, user, session["id"], "@ben what is 2+2?").json["id"]
    )
    assert turn["status"] == "completed", turn["error"]
    # ben (round 1) names cy then ann for round 2; cy names ben for round 3; ben's round-3
    # reply names cy and ann again, but there is no round 4.
    assert _speakers(turn) == [("ben", 1), ("cy", 2), ("ann", 2), ("ben", 3)]
    assert turn["stop_reason"] == "completed"
    assert len(fake_llm.requests) == 4


def test_one_round_rooms_never_follow_mentions(client, user, mention_room, fake_llm):
    fake_llm.respond_with(lambda r: "ask @cy")
    session = start_session(client, user, room=mention_room(user, max_rounds=1))
    turn = wait_done(client, user, post_turn(client, user, session["id"], "@ann hi").json["id"])
    assert _speakers(turn) == [("ann", 1)]
