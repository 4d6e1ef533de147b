"""The real local model (SmolLM2-135M-Instruct) answering turns through the worker."""

import pytest

from models.providers import LOCAL_MODEL, LOCAL_PROVIDER
from tests.helpers import messages, post_turn, start_session, wait_done

pytestmark = pytest.mark.usefixtures("celery_worker")


def test_standalone_and_room_turns_on_the_local_model(client, user, make_agent, make_room):
    def agent(name):
        return make_agent(
            user,
            name=name,
            provider=LOCAL_PROVIDER,
            model=LOCAL_MODEL,
            system_prompt="Answer in one short sentence.",
            max_tokens=24,
        )

    ann = agent("ann")
    session = start_session(client, user, agent=ann)
    turn = wait_done(
        client, user, post_turn(client, user, session["id"], "Say hello.").json["id"], timeout=120
    )
    assert turn["status"] == "completed", turn["error"]
    assert turn["usage"]["prompt_tokens"] > 0 and turn["usage"]["completion_tokens"] > 0
    assert messages(client, user, session["id"])[-1]["content"].strip()

    room = make_room(user, [ann, agent("bob")], mode="sequential")
    room_session = start_session(client, user, room=room)
    turn = wait_done(
        client,
        user,
        post_turn(client, user, room_session["id"], "Greet me.").json["id"],
        timeout=120,
    )
    assert turn["status"] == "completed", turn["error"]
    replies = [m for m in messages(client, user, room_session["id"]) if m["role"] == "assistant"]
    assert len(replies) == 2 and all(m["content"].strip() for m in replies)
    assert turn["usage"]["completion_tokens"] > 0
