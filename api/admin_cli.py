"""Operator commands for turns: ``flask --app api turns queue|stuck|oldest|show|redispatch|fail``.

They read and write the database the API is configured with, and send tasks to its broker, so
they run wherever the API's environment is (a shell in the API container, say). Each prints a
plain table, or JSON with ``--json`` for scripts.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import click
import redis
from flask.cli import AppGroup
from sqlalchemy import select, update

from models import Message, Turn, lifecycle
from models.base import utcnow
from models.metrics import queue_state
from models.tasking import TURNS_QUEUE
from models.turn_events import turn_events
from models.turns import ACTIVE_STATUSES, FAILED, PENDING, QUEUED, RUNNING, TERMINAL_STATUSES
from models.usage import UsageRecord

from .state import state

turns_cli = AppGroup("turns", help="Inspect and repair turns (queue, stuck turns, one timeline).")

UNFINISHED = (PENDING, QUEUED, RUNNING)
OPERATOR_STOP_REASON = "operator"


def _age(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = int((now - moment).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _emit(rows: list[dict[str, Any]], as_json: bool, columns: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        click.echo("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def broker_queue_depth(broker_url: str) -> int | None:
    """Messages waiting in the broker's turns queue (Redis); None for the in-process broker."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return None
    client = redis.Redis.from_url(broker_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return client.llen(TURNS_QUEUE)
    finally:
        client.close()


def _turn_row(turn: Turn, now: datetime) -> dict[str, Any]:
    return {
        "id": turn.id,
        "session": turn.session_id,
        "user": turn.user_id,
        "status": turn.status,
        "attempt": turn.attempt,
        "age": _age(turn.created_at, now),
        "created_at": turn.created_at.isoformat(),
        "dispatched": _age(turn.dispatched_at, now),
        "lease_left": (
            f"{int((turn.lease_expires_at - now).total_seconds())}s"
            if turn.status == RUNNING and turn.lease_expires_at
            else "-"
        ),
    }


TURN_COLUMNS = ["id", "session", "user", "status", "attempt", "age", "dispatched", "lease_left"]


@turns_cli.command("queue")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def queue(as_json: bool) -> None:
    """Queue depth: unfinished turns by status, the broker's queue, the outbox backlog."""
    with state().sessionmaker() as db:
        report = queue_state(db)
    if report["oldest_queued_age_seconds"] is not None:
        report["oldest_queued_age_seconds"] = int(report["oldest_queued_age_seconds"])
    report["broker_turns_queue"] = broker_queue_depth(state().settings.broker_url)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for name, value in report.items():
        click.echo(f"{name.replace('_', ' ')}: {'n/a' if value is None else value}")


@turns_cli.command("stuck")
@click.option(
    "--older-than",
    default=300,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seconds a turn may stay queued or running before it counts as stuck.",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stuck(older_than: int, limit: int, as_json: bool) -> None:
    """Turns that look stuck: running with an expired lease, or queued/running for too long."""
    now = utcnow()
    since = now - timedelta(seconds=older_than)
    with state().sessionmaker() as db:
        turns = db.scalars(
            select(Turn)
            .where(
                Turn.status.in_(ACTIVE_STATUSES),
                ((Turn.status == RUNNING) & (Turn.lease_expires_at < now))
                | (Turn.created_at < since),
            )
            .order_by(Turn.id)
            .limit(limit)
        ).all()
    _emit([_turn_row(t, now) for t in turns], as_json, TURN_COLUMNS)


@turns_cli.command("oldest")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def oldest(limit: int, as_json: bool) -> None:
    """The oldest unfinished (pending, queued, running) turns."""
    now = utcnow()
    with state().sessionmaker() as db:
        turns = db.scalars(
            select(Turn).where(Turn.status.in_(UNFINISHED)).order_by(Turn.id).limit(limit)
        ).all()
    _emit([_turn_row(t, now) for t in turns], as_json, TURN_COLUMNS)


def _get_turn(db, turn_id: int) -> Turn:
    turn = db.get(Turn, turn_id)
    if turn is None:
        raise click.ClickException(f"turn {turn_id} not found")
    return turn


def turn_timeline(db, turn: Turn) -> list[dict[str, Any]]:
    """What happened to a turn, in time order: its lifecycle, each message and each LLM call.

    Message contents are left out (an operator's tool); their sizes tell enough.
    """
    events: list[dict[str, Any]] = [{"at": turn.created_at, "event": "accepted", "detail": ""}]
    if turn.started_at:
        events.append({"at": turn.started_at, "event": "started", "detail": ""})
    for m in db.scalars(select(Message).where(Message.turn_id == turn.id).order_by(Message.id)):
        what = "tool call" if m.tool_calls else "tool result" if m.role == "tool" else m.role
        agent = f" agent {m.agent_id}" if m.agent_id else ""
        events.append(
            {
                "at": m.created_at,
                "event": f"step {m.step}: {what}",
                "detail": f"{m.visibility}{agent}, {len(m.content)} chars",
            }
        )
    for u in db.scalars(
        select(UsageRecord).where(UsageRecord.turn_id == turn.id).order_by(UsageRecord.id)
    ):
        events.append(
            {
                "at": u.created_at,
                "event": f"step {u.step}: LLM call (attempt {u.attempt})",
                "detail": f"{u.provider}/{u.model}, {u.prompt_tokens}+{u.completion_tokens}"
                f" tokens, {u.latency_ms} ms, cost {u.cost}",
            }
        )
    if turn.completed_at:
        reason = turn.stop_reason or ""
        if turn.error_code:
            reason += f" ({turn.error_code}: {turn.error_message})"
        events.append({"at": turn.completed_at, "event": turn.status, "detail": reason})
    events.sort(key=lambda e: e["at"])
    return events


@turns_cli.command("show")
@click.argument("turn_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(turn_id: int, as_json: bool) -> None:
    """One turn's state and timeline."""
    now = utcnow()
    with state().sessionmaker() as db:
        turn = _get_turn(db, turn_id)
        summary = _turn_row(turn, now) | {
            "stop_reason": turn.stop_reason,
            "error": turn.error_code and f"{turn.error_code}: {turn.error_message}",
            "dispatched_at": turn.dispatched_at and turn.dispatched_at.isoformat(),
            "lease_expires_at": turn.lease_expires_at and turn.lease_expires_at.isoformat(),
            "tokens": turn.prompt_tokens + turn.completion_tokens,
            "cost": str(turn.cost),
            # The delivery's state, not its URL (whose query may hold the receiver's token).
            "webhook": turn.webhook_status
            and f"{turn.webhook_status} after {turn.webhook_attempts} attempt(s), last "
            f"{turn.webhook_last_status or turn.webhook_last_error or '-'}",
        }
        timeline = turn_timeline(db, turn)
    if as_json:
        click.echo(json.dumps({"turn": summary, "timeline": timeline}, default=str, indent=2))
        return
    for name, value in summary.items():
        click.echo(f"{name}: {'-' if value is None else value}")
    click.echo("timeline:")
    for event in timeline:
        detail = f"  {event['detail']}" if event["detail"] else ""
        click.echo(f"  {event['at'].isoformat()}  {event['event']}{detail}")


@turns_cli.command("redispatch")
@click.argument("turn_id", type=int)
def redispatch(turn_id: int) -> None:
    """Send a queued turn (or a running one whose lease expired) to the workers again.

    Harmless if a worker already has it: a delivery for a turn that is not claimable is a no-op.
    """
    app_state = state()
    now = utcnow()
    with app_state.sessionmaker() as db, db.begin():
        turn = _get_turn(db, turn_id)
        if turn.status == RUNNING and turn.lease_expires_at and turn.lease_expires_at > now:
            left = int((turn.lease_expires_at - now).total_seconds())
            raise click.ClickException(
                f"turn {turn_id} is running under a live lease ({left} s left): a worker has it"
            )
        if turn.status not in ACTIVE_STATUSES:
            raise click.ClickException(
                f"turn {turn_id} is {turn.status}: only queued or running turns can be sent"
            )
        db.execute(update(Turn).where(Turn.id == turn_id).values(dispatched_at=now))
    failed = lifecycle.dispatch(app_state.celery, app_state.sessionmaker, [turn_id])
    if failed:
        raise click.ClickException(
            f"the broker refused turn {turn_id}; the outbox sweep will send it when it is back"
        )
    click.echo(f"turn {turn_id} sent to the {TURNS_QUEUE} queue")


@turns_cli.command("fail")
@click.argument("turn_id", type=int)
@click.option("--reason", required=True, help="Why; the turn's error message shows it.")
def fail(turn_id: int, reason: str) -> None:
    """Fail an unfinished turn now (stop_reason "operator"); the session's next turn goes on.

    A worker still running it keeps what it wrote and adds nothing after this (its writes are
    fenced on the turn still running).
    """
    app_state = state()
    with app_state.sessionmaker() as db, db.begin():
        turn = _get_turn(db, turn_id)
        if turn.status in TERMINAL_STATUSES:
            raise click.ClickException(f"turn {turn_id} is already {turn.status}")
        ended, promoted = lifecycle.end_unfinished(
            db,
            turn_id,
            FAILED,
            stop_reason=OPERATOR_STOP_REASON,
            error_code="failed_by_operator",
            error_message=reason,
        )
    if not ended:
        raise click.ClickException(f"turn {turn_id} ended meanwhile; nothing changed")
    if promoted is not None:
        lifecycle.dispatch(app_state.celery, app_state.sessionmaker, [promoted])
    turn_events(app_state.settings.broker_url).publish(turn_id, FAILED)
    click.echo(f"turn {turn_id} failed: {reason}")
