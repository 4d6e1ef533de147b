"""A call's tokens as the model writes them, for the event streams that asked for the turn.

Published through the broker's pub/sub (in-process in embedded mode), never written: the reply
the step commits is the authority, and a client that reconnects gets it as a ``message``.
"""

from __future__ import annotations

import itertools

from models.turn_events import TurnEvents

from .claiming import TurnRun
from .context import Speaker
from .providers.base import OnDelta


def publisher(events: TurnEvents, run: TurnRun, step: int, index: int, speaker: Speaker) -> OnDelta:
    """The ``on_delta`` of one call: each piece of text becomes a ``delta`` (numbered from 1
    within the call); a call made again after partial output voids what it sent with a
    ``superseded`` mark of the step."""
    sequence = itertools.count(1)
    common = {"turn_id": run.turn_id, "attempt": run.attempt, "step": step}

    def on_delta(text: str | None) -> None:
        if text is None:
            events.publish_delta(
                {"type": "superseded", **common, "reason": "retried"}, run.session_id
            )
            return
        delta = {
            "type": "delta",
            **common,
            "speaker": index,
            "agent_id": speaker.id,
            "agent": speaker.name,
            "seq": next(sequence),
            "text": text,
        }
        events.publish_delta(delta, run.session_id)

    return on_delta
