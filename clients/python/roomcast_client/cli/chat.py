"""``roomcast chat``: an interactive chat with one agent or a room.

Each line typed is a turn. The turn's event stream is followed as the worker commits it: each
agent's reply is printed under its name as it lands, a spinner says who is being waited for,
and the turn's usage and cost close it. Ctrl-C while a turn runs cancels that turn and returns
to the prompt; Ctrl-C or Ctrl-D at the prompt leaves.
"""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import click
import httpx
from rich.console import Console, Group
from rich.padding import Padding
from rich.status import Status
from rich.text import Text

from .. import Conflict, NotFound, Roomcast, RoomcastError
from ..models import Event, Message, Session, Turn
from .context import Connection, describe, pass_connection
from .lookup import find_agent, find_room
from .output import console, cost, escape

# Line editing and history at the prompt, where the platform has readline.
with contextlib.suppress(ImportError):
    import readline  # noqa: F401

COLOURS = ("cyan", "magenta", "yellow", "blue", "green", "bright_red")
PROMPT = "[bold green]you>[/] "


@click.command()
@click.argument("agent", required=False)
@click.option("--room", help="Chat with a room's agents (an id or a name).")
@click.option(
    "--session", "session_id", type=int, help="Go on with this session (its last messages shown)."
)
@click.option(
    "--history",
    default=6,
    show_default=True,
    type=click.IntRange(min=0, max=100),
    help="How many earlier messages --session shows.",
)
@click.option("--title", default="roomcast chat", show_default=True, help="A new session's title.")
@pass_connection
def chat(
    connection: Connection,
    agent: str | None,
    room: str | None,
    session_id: int | None,
    history: int,
    title: str,
) -> None:
    """Chat with an agent or a room, or go on with a session.

    AGENT and ROOM are ids or names. Each line you type is a turn; the agents' replies appear
    under their names as they land, then the turn's tokens and cost. Ctrl-C while a turn runs
    cancels it; Ctrl-C or Ctrl-D at the prompt leaves.
    """
    if sum(value is not None for value in (agent, room, session_id)) != 1:
        raise click.UsageError("name one of: an AGENT, --room ROOM or --session ID")
    client = connection.client()
    if session_id is not None:
        session = client.sessions.get(session_id)
        names, where = _speakers_of_session(client, session)
    elif room is not None:
        found_room = find_room(client, room)
        session = client.sessions.create(room_id=found_room.id, title=title)
        names, where = _room_speakers(client, found_room.id), f"room {found_room.name}"
    elif agent is not None:
        found = find_agent(client, agent)
        session = client.sessions.create(agent_id=found.id, title=title)
        names, where = {found.id: found.name}, found.name
    talk = Chat(client, session.id, names, console)
    console.print(
        f"[bold]Chatting with {escape(where)}[/] (session {session.id}). "
        "[dim]Ctrl-C cancels a running turn; Ctrl-D or Ctrl-C here leaves.[/]"
    )
    if session_id is not None and history:
        talk.show_history(history)
    talk.run()
    console.print(f"[dim]Go on later with: roomcast chat --session {session.id}[/]")


def _room_speakers(client: Roomcast, room_id: int) -> dict[int, str]:
    return {
        member.agent_id: member.agent.name
        for member in client.rooms.agents.list(room_id)
        if member.agent is not None
    }


def _speakers_of_session(client: Roomcast, session: Session) -> tuple[dict[int, str], str]:
    """The names of who speaks in a session, and what it is with."""
    if session.room_id is not None:
        try:
            room = client.rooms.get(session.room_id)
        except NotFound:
            return {}, f"deleted room {session.room_id}"
        return _room_speakers(client, room.id), f"room {room.name}"
    assert session.agent_id is not None  # a session is with a room or with an agent
    try:
        agent = client.agents.get(session.agent_id)
    except NotFound:
        return {}, f"deleted agent {session.agent_id}"
    return {agent.id: agent.name}, agent.name


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """A second Ctrl-C must not cut the cancellation of a turn short."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Chat:
    """One session's chat: the prompt loop, and each turn's events as they come."""

    def __init__(
        self, client: Roomcast, session_id: int, names: dict[int, str], out: Console
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.names = dict(names)
        self.out = out
        self.colours: dict[int, str] = {}
        for agent_id in names:
            self._colour(agent_id)
        self.speakers: list[dict[str, Any]] = []  # the running turn's plan and progress

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        # Ctrl-C is how a person cancels a turn or leaves: Python raises KeyboardInterrupt only
        # if SIGINT was not ignored when it started, and a process started in the background
        # of a script (`cmd &`) inherits it ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        while True:
            try:
                line = self.out.input(PROMPT)
            except (EOFError, KeyboardInterrupt):
                self.out.print()
                return
            if line.strip():
                self.turn(line)

    def turn(self, content: str) -> None:
        """Post ``content`` as a turn and follow it to its end, or cancel it on Ctrl-C."""
        # The same key again finds the turn if Ctrl-C comes before the POST has answered.
        key = uuid.uuid4().hex
        turn = None
        try:
            with self.out.status("Sending…", spinner="dots") as status:
                turn = self.client.turns.create(self.session_id, content, idempotency_key=key)
                self.follow(turn.id, status)
        except KeyboardInterrupt:
            self.cancel(turn.id if turn is not None else None, content, key)
        except (RoomcastError, httpx.HTTPError) as exc:
            self.error(describe(exc))

    def follow(self, turn_id: int, status: Status) -> None:
        self.speakers = []
        status.update(self._waiting_for())
        ended: Turn | None = None
        # The client resumes a dropped stream by itself, up to the turn's end.
        events = self.client.turns.stream(turn_id)
        try:
            for event in events:
                ended = self.on_event(event, status)
                if ended is not None:
                    break
        finally:
            close = getattr(events, "close", None)
            if close is not None:  # the HTTP response too, at once
                close()
        self.show_end(ended or self.client.turns.wait(turn_id))

    def cancel(self, turn_id: int | None, content: str, key: str) -> None:
        with sigint_ignored(), self.out.status("Cancelling…"):
            try:
                if turn_id is None:
                    turn_id = self.client.turns.create(
                        self.session_id, content, idempotency_key=key
                    ).id
                turn = self.client.turns.cancel(turn_id)
            except Conflict:
                self.out.print(f"[dim]Turn {turn_id} had already ended.[/]")
                return
            except (RoomcastError, httpx.HTTPError) as exc:
                self.error(f"could not cancel turn {turn_id}: {describe(exc)}")
                return
        self.show_end(turn)

    # -- events --------------------------------------------------------------------------------

    def on_event(self, event: Event, status: Status) -> Turn | None:
        """Show one event; the turn as it ended when it is the last."""
        name, data = event.event, event.data
        message = event.message
        if name == "message" and message is not None:
            self.show_message(message)
            self._spoke(message.agent_id)
            status.update(self._waiting_for())
        elif name == "tool_call" and message is not None:
            for call in message.tool_calls or ():
                tool = (call.get("function") or {}).get("name", "a tool")
                self.out.print(Text(f"{self.name_of(message.agent_id)} calls {tool}…", style="dim"))
        elif name == "plan":
            # Who will speak, in order; the statuses come with progress events.
            known = len(self.speakers)
            self.speakers += [
                {**s, "status": "pending"} for s in (data.get("speakers") or [])[known:]
            ]
            self._learn_names()
            status.update(self._waiting_for())
        elif name == "progress":
            self.speakers = [dict(s) for s in (data.get("progress") or {}).get("speakers") or ()]
            self._learn_names()
            status.update(self._waiting_for())
        elif name == "status" and data.get("status") == "queued":
            status.update("Queued…")
        elif name == "status" and data.get("status") == "running":
            status.update(self._waiting_for())
        elif name == "end":
            return event.turn
        return None

    def _learn_names(self) -> None:
        for speaker in self.speakers:
            if speaker.get("agent_id") is not None and speaker.get("name"):
                self.names[speaker["agent_id"]] = speaker["name"]

    def _spoke(self, agent_id: int | None) -> None:
        """The agent's reply landed: its place in the plan is done (progress may lag)."""
        for speaker in self.speakers:
            if speaker.get("agent_id") == agent_id and speaker.get("status") != "done":
                speaker["status"] = "done"
                return

    def _waiting_for(self) -> str:
        """The spinner's text: who is (or is next to be) answering."""
        upcoming = [s for s in self.speakers if s.get("status") in ("pending", "running")]
        if upcoming:
            return f"{upcoming[0].get('name') or 'The agent'} is thinking…"
        if not self.speakers and len(self.names) == 1:
            return f"{next(iter(self.names.values()))} is thinking…"
        return "Thinking…"

    def show_message(self, message: Message) -> None:
        # The user's own message is the line just typed.
        if message.role == "assistant" and message.content:
            self.say(message.agent_id, message.content)

    def say(self, agent_id: int | None, content: str) -> None:
        if agent_id is None:
            who = Text("you", style="bold green")
        else:
            who = Text(self.name_of(agent_id), style=f"bold {self._colour(agent_id)}")
        # One print: the spinner is redrawn between prints, not inside one.
        self.out.print(Group(who, Padding(Text(content), (0, 0, 0, 2), expand=False)))

    def show_end(self, turn: Turn) -> None:
        usage = turn.usage
        if turn.status == "failed" and turn.error is not None:
            self.error(f"turn {turn.id} failed: {turn.error.message} ({turn.error.code})")
        elif turn.status == "cancelled":
            self.out.print(f"[yellow]Turn {turn.id} cancelled.[/]")
        self.out.print(
            Text(
                f"turn {turn.id} {turn.status} · {usage.total_tokens} tokens "
                f"({usage.prompt_tokens} prompt + {usage.completion_tokens} completion) · "
                f"cost {cost(usage.cost)}",
                style="dim",
            )
        )

    def show_history(self, count: int) -> None:
        """The session's last ``count`` messages that a person reads (no tool traffic)."""
        latest: list[Message] = []
        for message in self.client.messages.list(self.session_id, order="desc"):
            if message.role in ("user", "assistant") and message.content:
                latest.append(message)
                if len(latest) == count:
                    break
        if latest:
            self.out.rule("earlier", style="dim")
        for message in reversed(latest):
            self.say(message.agent_id if message.role == "assistant" else None, message.content)
        if latest:
            self.out.rule(style="dim")

    # -- names ---------------------------------------------------------------------------------

    def name_of(self, agent_id: int | None) -> str:
        if agent_id is None:
            return "agent"
        if agent_id not in self.names:
            try:
                self.names[agent_id] = self.client.agents.get(agent_id).name
            except NotFound:  # deleted since it spoke
                self.names[agent_id] = f"agent {agent_id}"
        return self.names[agent_id]

    def _colour(self, agent_id: int) -> str:
        return self.colours.setdefault(agent_id, COLOURS[len(self.colours) % len(COLOURS)])

    def error(self, text: str) -> None:
        self.out.print(Text.assemble(("Error: ", "bold red"), text))
