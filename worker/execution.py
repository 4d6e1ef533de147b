"""Running one turn: claim it (worker/claiming.py), let its speakers speak step by step
(worker/orchestrator.py, each agent's calls and tools in worker/agent_loop.py, every step
recorded by worker/recording.py), and end it, failing it with a code the client can show."""

from __future__ import annotations

import contextlib
import logging
import time

from celery.exceptions import SoftTimeLimitExceeded

from models import lifecycle, metrics, utcnow
from models.cooperative import gevent_patched
from models.settings import Settings
from models.turn_events import turn_events
from models.turns import FAILED, RUNNING

from . import db
from .agent_loop import Call, ToolRound
from .claiming import TurnFailure, claim, run_of
from .orchestrator import Orchestrator
from .providers.base import ProviderError
from .recording import Superseded, end, lease_of

log = logging.getLogger(__name__)


class TurnTimeLimitExceeded(BaseException):
    """The soft time limit, raised by :func:`soft_time_limit`. A BaseException, as gevent's own
    Timeout: the ``except Exception`` of a library (an HTTP client's, say) must not turn it into
    an error of its own, or retry."""


def soft_time_limit(seconds: float | None) -> contextlib.AbstractContextManager:
    """The task's soft time limit where Celery's pool does not enforce it: in a gevent process
    (the gevent pool enforces the hard limit only). Elsewhere Celery raises
    SoftTimeLimitExceeded itself (prefork), or enforces no limit (threads, solo)."""
    if not seconds or not gevent_patched():
        return contextlib.nullcontext()
    import gevent

    return gevent.Timeout(seconds, TurnTimeLimitExceeded)


def execute_turn(
    turn_id: int,
    settings: Settings,
    sender: lifecycle.TaskSender,
    soft_limit: float | None = None,
) -> None:
    """Claim and run a turn to its end. Safe to call twice: a second delivery does nothing.
    ``soft_limit``: the task's soft time limit, in seconds (see :func:`soft_time_limit`)."""
    lease = lease_of(settings)
    orchestrator: Orchestrator | None = None
    first: Call | ToolRound | str | TurnFailure | None = None
    start_error: Exception | None = None
    attempt = session_id = None
    # Claimed and loaded, then planned and the first call prepared: statements that need no
    # transaction around them (the claim is one, and the rest read or write the claimed turn).
    with db.claiming_session() as s, s.begin():
        loaded = claim(s, turn_id, lease)  # if this fails, the task fails: the turn stays queued
        if loaded is not None:
            attempt, session_id = loaded.attempt, loaded.session_id
            if attempt == 1:
                wait = (utcnow() - loaded.created_at).total_seconds()
                metrics.QUEUE_WAIT.observe(max(0.0, wait))
            try:
                orchestrator = Orchestrator(run_of(s, turn_id, loaded), settings, sender)
                first = orchestrator.start(s)
            except Exception as exc:  # nothing could be planned: the error fails the turn below
                start_error = exc
    if attempt is None:
        log.info("turn %s: not claimable (finished, running elsewhere or gone); skipped", turn_id)
        return
    events = turn_events(settings.broker_url)
    events.publish(turn_id, RUNNING, session_id)
    if attempt > 1:
        # Taken over: the tokens the earlier attempt streamed are void (its committed steps
        # stand; this attempt resumes after them).
        events.publish_delta(
            {
                "type": "superseded",
                "turn_id": turn_id,
                "attempt": attempt - 1,
                "step": None,
                "reason": "taken_over",
            },
            session_id,
        )
    claimed = time.monotonic()
    log.info("turn %s: attempt %s started", turn_id, attempt)
    try:
        if start_error is not None:
            raise start_error
        with soft_time_limit(soft_limit):
            orchestrator.drive(first)
        metrics.TURN_SECONDS.observe(time.monotonic() - claimed)
        return
    except Superseded:
        log.info("turn %s: attempt %s superseded (cancelled or taken over)", turn_id, attempt)
        events.publish(turn_id, None, session_id)
        return
    except (ProviderError, TurnFailure) as exc:  # both carry a client-facing code and message
        stop_reason, code, message = exc.code, exc.code, exc.message
    except (SoftTimeLimitExceeded, TurnTimeLimitExceeded):
        stop_reason = code = "turn_timeout"
        message = "The turn ran longer than the worker's time limit."
    except Exception:
        log.exception("turn %s: attempt %s failed unexpectedly", turn_id, attempt)
        stop_reason = code = "internal_error"
        message = "The worker hit an unexpected error running this turn."
    end(turn_id, attempt, settings, sender, FAILED, stop_reason, code, message, session_id)
    metrics.TURN_SECONDS.observe(time.monotonic() - claimed)
