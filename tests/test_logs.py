"""Log lines: JSON with the ids of the request and the turn, carried from the API's request into
the worker's lines for that turn, and never a token, a password or a message's content."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from models import logs
from models.webhook_secrets import new_secret
from tests.helpers import post_turn, start_session, wait_done


@pytest.fixture
def lines():
    """Every line logged at INFO and above during the test, as the JSON objects written."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonLines())
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_the_request_id_is_echoed_or_made(client, user):
    sent = client.get("/api/v1/agents", headers={**user.headers, "X-Request-ID": "abc-123"})
    assert sent.headers["X-Request-ID"] == "abc-123"
    made = client.get("/api/v1/agents", headers=user.headers).headers["X-Request-ID"]
    assert len(made) == 32 and made != "abc-123"
    # Not a plain token (spaces, control characters, too long): replaced, never echoed.
    for bad in ("a b", "x" * 129, "id\x7f"):
        answer = client.get("/api/v1/agents", headers={**user.headers, "X-Request-ID": bad})
        assert answer.headers["X-Request-ID"] != bad
    # Refusals carry one too.
    assert client.get("/api/v1/agents").headers["X-Request-ID"]


def test_worker_lines_for_a_turn_carry_its_ids_and_no_content(
    lines, client, user, make_agent, celery_worker
):
    session = start_session(client, user, agent=make_agent(user))
    secret_words = "zebra-umbrella-quartz"
    posted = post_turn(
        client, user, session["id"], f"tell me about {secret_words}", {"X-Request-ID": "req-42"}
    )
    assert posted.status_code == 202 and posted.headers["X-Request-ID"] == "req-42"
    turn_id = posted.json["id"]
    assert wait_done(client, user, turn_id)["status"] == "completed"

    deadline = time.monotonic() + 10
    while True:  # the worker logs the end just after committing it
        written = lines()
        ended = [
            line
            for line in written
            if line.get("turn_id") == turn_id and "completed" in line["message"]
        ]
        if ended or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ended, written
    assert ended[0]["request_id"] == "req-42"
    assert ended[0]["logger"].startswith("worker.") and ended[0]["level"] == "INFO"
    assert {"time", "level", "logger", "message"} <= set(ended[0])
    text = json.dumps(written)
    assert secret_words not in text and user.token not in text and user.password not in text


def test_token_shaped_strings_are_masked_and_text_format_has_the_ids(caplog):
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "got rc_%s", ("A" * 43,), None)
    with logs.bound(turn_id=7, request_id="r1"):
        logs.ContextFilter().filter(record)
    line = json.loads(logs.JsonLines().format(record))
    assert line["message"] == "got rc_***" and line["turn_id"] == 7
    plain = logs.PlainText().format(record)
    assert plain.endswith("[request_id=r1 turn_id=7]") and "AAAA" not in plain
    secret = new_secret()
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "signed with %s", (secret,), None)
    assert json.loads(logs.JsonLines().format(record))["message"] == "signed with whsec_***"


def test_bound_ids_do_not_leak_between_threads():
    import threading

    seen = {}

    def other() -> None:
        seen["ids"] = logs.current()

    with logs.bound(turn_id=1):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen["ids"] == {} and logs.current() == {}
