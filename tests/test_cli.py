"""The ``roomcast`` command line against a live server (serve.py as ``make run`` starts it).

The chat and the login prompts are driven in a real terminal (pexpect: a pseudo-terminal, keys
typed, Ctrl-C sent as the terminal's interrupt character); the other commands run through
click's CliRunner, in this process.
"""

from __future__ import annotations

import io
import os
import re
import stat
import sys
import termios
import time
import tomllib
from pathlib import Path

import httpx
import pexpect
import pytest
from click.testing import CliRunner
from roomcast_client.cli.main import cli

from tests.conftest import FAKE_MODEL, FAKE_PROVIDER
from tests.processes import ROOT

INSTANT_REPLY = "This is an instant reply from Roomcast's benchmark provider."
CLIENT_PATH = str(ROOT / "clients" / "python")


@pytest.fixture(scope="module")
def account(live_server):
    """A user of the live server: (email, token)."""
    return live_server.register()


@pytest.fixture(scope="module")
def api(live_server, account):
    with httpx.Client(
        base_url=f"{live_server.base_url}/api/v1",
        headers={"Authorization": f"Bearer {account[1]}"},
        trust_env=False,
        timeout=30,
    ) as http:
        yield http


@pytest.fixture
def config_home(tmp_path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def cli_env(live_server, account, config_home) -> dict[str, str]:
    """The environment the CLI runs in: the live server, the account's token, its own
    configuration folder, a wide terminal."""
    return {
        "ROOMCAST_URL": live_server.base_url,
        "ROOMCAST_TOKEN": account[1],
        "XDG_CONFIG_HOME": str(config_home),
        "COLUMNS": "200",
    }


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def terminal(env: dict[str, str], *args: str) -> pexpect.spawn:
    """``roomcast ARGS`` in a pseudo-terminal; everything it writes is kept in ``.transcript``."""
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")},
        "PYTHONPATH": os.pathsep.join([CLIENT_PATH, str(ROOT)]),
        "TERM": "xterm-256color",
        **env,
    }
    # The terminal's own size and abilities, whatever the environment running the tests says.
    for name in (
        "COLUMNS",
        "LINES",
        "NO_COLOR",
        "FORCE_COLOR",
        "TTY_COMPATIBLE",
        "TTY_INTERACTIVE",
    ):
        full_env.pop(name, None)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "roomcast_client.cli", *args],
        env=full_env,
        encoding="utf-8",
        dimensions=(40, 160),
        timeout=20,
    )
    child.transcript = io.StringIO()
    child.logfile_read = child.transcript
    return child


def ended(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def make_agent(api, name: str, **fields) -> dict:
    fields = {"provider": "instant", "model": "instant", **fields}
    response = api.post("/agents", json={"name": name, **fields})
    response.raise_for_status()
    return response.json()


def unique(prefix: str) -> str:
    return f"{prefix}-{time.time_ns() % 10**9}"


# -- login and logout ------------------------------------------------------------------------


def test_login_asks_with_a_hidden_password_and_stores_the_token_for_the_owner_only(
    live_server, config_home
):
    email, password = f"{unique('cli')}@example.com", "a secret cli password"
    child = terminal({"XDG_CONFIG_HOME": str(config_home)}, "login", "--register")
    child.expect_exact("Server URL")
    child.sendline(live_server.base_url)
    child.expect_exact("Email:")
    child.sendline(email)
    child.expect_exact("Password:")
    child.sendline(password)
    child.expect_exact("Repeat for confirmation:")
    child.sendline(password)
    child.expect_exact("Logged in")
    assert ended(child) == 0
    assert password not in child.transcript.getvalue()  # never echoed

    path = config_home / "roomcast" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = tomllib.loads(path.read_text())
    assert stored["url"] == live_server.base_url and stored["email"] == email
    me = httpx.get(
        f"{live_server.base_url}/api/v1/auth/me",
        headers={"Authorization": f"Bearer {stored['token']}"},
    )
    assert me.json()["email"] == email

    # The next commands use the stored token.
    env = {"XDG_CONFIG_HOME": str(config_home), "COLUMNS": "200"}
    assert run(env, "agents").exit_code == 0

    # Logging in again (no prompt: options and ROOMCAST_PASSWORD) replaces and revokes it.
    again = run(
        {**env, "ROOMCAST_PASSWORD": password},
        "login",
        "--url",
        live_server.base_url,
        "--email",
        email,
    )
    assert again.exit_code == 0, again.output
    replaced = tomllib.loads(path.read_text())
    assert replaced["token"] != stored["token"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    old = httpx.get(
        f"{live_server.base_url}/api/v1/auth/me",
        headers={"Authorization": f"Bearer {stored['token']}"},
    )
    assert old.status_code == 401

    out = run(env, "logout")
    assert out.exit_code == 0 and "revoked" in out.output
    revoked = httpx.get(
        f"{live_server.base_url}/api/v1/auth/me",
        headers={"Authorization": f"Bearer {replaced['token']}"},
    )
    assert revoked.status_code == 401
    assert "token" not in tomllib.loads(path.read_text())
    after = run(env, "agents")
    assert after.exit_code == 1
    assert "not logged in" in after.stderr and "Traceback" not in after.output


def test_login_with_a_wrong_password_says_so_in_one_line(live_server, account, config_home):
    out = run(
        {"XDG_CONFIG_HOME": str(config_home), "ROOMCAST_PASSWORD": "not the password"},
        "login",
        "--url",
        live_server.base_url,
        "--email",
        account[0],
    )
    assert out.exit_code == 1
    assert out.stderr.count("\n") == 1 and "401" in out.stderr
    assert not (config_home / "roomcast" / "config.toml").exists()


# -- agents, rooms, files, usage -------------------------------------------------------------


def test_agents_rooms_and_files(cli_env, api, tmp_path):
    writer, critic, room = unique("writer"), unique("critic"), unique("crew")
    out = run(
        cli_env,
        "agents",
        "create",
        writer,
        "--provider",
        "instant",
        "--model",
        "instant",
        "--system-prompt",
        "You write.",
        "--tool",
        "search",
        "--tool",
        "file_read",
    )
    assert out.exit_code == 0 and f"Created agent {writer}" in out.output
    run(cli_env, "agents", "create", critic, "--provider", "instant")
    created = {a["name"]: a for a in api.get("/agents", params={"limit": 100}).json()["data"]}
    assert created[writer]["system_prompt"] == "You write."
    assert sorted(created[writer]["tools"]) == ["file_read", "search"]

    listing = run(cli_env, "agents").output
    assert writer in listing and critic in listing and "search, file_read" in listing

    out = run(cli_env, "rooms", "create", room, "--mode", "round_robin", "--agent", writer)
    assert out.exit_code == 0 and f"with {writer}" in out.output
    out = run(cli_env, "rooms", "add", room, str(created[critic]["id"]), "--position", "0")
    assert out.exit_code == 0 and "at position 0" in out.output
    line = next(line for line in run(cli_env, "rooms").output.splitlines() if room in line)
    assert "round_robin" in line and f"{critic}, {writer}" in line
    assert run(cli_env, "rooms", "remove", room, writer).exit_code == 0
    members = api.get(f"/rooms?q={room}").json()["data"][0]["agents"]
    assert [m["agent"]["name"] for m in members] == [critic]

    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\nThe launch is on Tuesday.\n")
    out = run(cli_env, "files", "upload", str(notes))
    assert out.exit_code == 0 and "Uploaded notes.md" in out.output
    assert "notes.md" in run(cli_env, "files").output

    out = run(cli_env, "agents", "delete", writer)
    assert out.exit_code == 0 and writer not in run(cli_env, "agents", "list").output


def test_a_refused_upload_fails_the_command_and_the_others_are_uploaded(cli_env, tmp_path):
    good, bad = tmp_path / "good.txt", tmp_path / "picture.gif"
    good.write_text("plain words")
    bad.write_bytes(b"GIF89a")
    out = run(cli_env, "files", "upload", str(bad), str(good))
    assert out.exit_code == 1
    assert "picture.gif" in out.stderr and "Uploaded good.txt" in out.output


def test_usage_is_a_table_of_tokens_and_cost(cli_env):
    out = run(cli_env, "usage", "--by", "model")
    assert out.exit_code == 0, out.output
    assert "Usage by model" in out.output and "total" in out.output and "$" in out.output


def test_api_and_connection_errors_are_one_clear_line_and_a_failing_exit_code(cli_env):
    out = run(cli_env, "agents", "delete", "987654321")
    assert out.exit_code == 1
    assert out.stderr == "Error: Agent 987654321 not found. (404 not_found)\n"

    out = run(cli_env, "rooms", "add", "no-such-room", "no-such-agent")
    assert out.exit_code == 1 and "no room named 'no-such-room'" in out.stderr

    out = run(cli_env, "agents", "create", "x" * 101)
    assert out.exit_code == 1
    assert "(422 validation_error)" in out.stderr and "name:" in out.stderr

    out = run(cli_env, "chat", "--session", "987654321")
    assert out.exit_code == 1
    assert re.fullmatch(r"Error: \w*Session 987654321 not found\. \(404 not_found\)\n", out.stderr)

    out = run({**cli_env, "ROOMCAST_URL": "http://127.0.0.1:9"}, "agents")
    assert out.exit_code == 1
    assert out.stderr.startswith("Error: cannot reach the server") and out.stderr.count("\n") == 1


# -- chat ------------------------------------------------------------------------------------

PROMPT = "you>"


def prompted(child: pexpect.spawn) -> None:
    """Until the chat prompts and its line editor is reading. readline reads with the terminal
    out of canonical mode; a Ctrl-D typed before it switched would be lost (as for a person
    typing ahead), so keys are sent only then."""
    child.expect_exact(PROMPT)
    deadline = time.monotonic() + 10
    while termios.tcgetattr(child.child_fd)[3] & termios.ICANON:
        assert time.monotonic() < deadline, "the prompt is not reading"
        time.sleep(0.01)


def test_chat_with_an_agent_shows_its_reply_under_its_name_then_usage_and_cost(cli_env, api):
    agent = make_agent(api, unique("helper"))
    child = terminal(cli_env, "chat", agent["name"])
    child.expect(r"session (\d+)")
    session_id = int(child.match.group(1))
    prompted(child)
    child.sendline("Hello there")
    child.expect_exact(agent["name"])
    child.expect_exact(INSTANT_REPLY)
    child.expect(
        r"turn \d+ completed · (\d+) tokens \(\d+ prompt \+ \d+ completion\) · cost \$[0-9.]+"
    )
    assert int(child.match.group(1)) > 0
    prompted(child)
    child.sendeof()  # Ctrl-D leaves
    child.expect_exact(f"roomcast chat --session {session_id}")
    assert ended(child) == 0

    # Going on with the session shows its last messages first.
    child = terminal(cli_env, "chat", "--session", str(session_id))
    child.expect_exact("Hello there")
    child.expect_exact(agent["name"])
    child.expect_exact(INSTANT_REPLY)
    prompted(child)
    child.sendintr()  # Ctrl-C at the prompt leaves too
    assert ended(child) == 0
    turns = api.get(f"/sessions/{session_id}/turns").json()["data"]
    assert [t["status"] for t in turns] == ["completed"]


def test_room_chat_shows_each_agent_with_its_own_reply(cli_env, api, fake_llm):
    alpha = make_agent(
        api,
        unique("alpha"),
        provider=FAKE_PROVIDER,
        model=FAKE_MODEL,
        system_prompt="You are Alpha.",
    )
    beta = make_agent(
        api, unique("beta"), provider=FAKE_PROVIDER, model=FAKE_MODEL, system_prompt="You are Beta."
    )
    fake_llm.respond_with(
        lambda request: (
            "Alpha agrees." if "You are Alpha." in request.system_prompt else "Beta objects."
        )
    )
    room = api.post("/rooms", json={"name": unique("pair")}).json()
    for agent in (alpha, beta):
        api.post(f"/rooms/{room['id']}/agents", json={"agent_id": agent["id"]}).raise_for_status()

    child = terminal(cli_env, "chat", "--room", room["name"])
    prompted(child)
    child.sendline("Shall we ship?")
    child.expect(re.escape(alpha["name"]) + r"\S*\r\n\s*Alpha agrees\.")
    child.expect(re.escape(beta["name"]) + r"\S*\r\n\s*Beta objects\.")
    child.expect(r"turn \d+ completed · \d+ tokens .* cost \$0\.0*[1-9]")
    prompted(child)
    child.sendeof()
    assert ended(child) == 0


def test_ctrl_c_cancels_the_running_turn_and_returns_to_the_prompt(cli_env, api, fake_llm):
    slow = make_agent(api, unique("slow"), provider=FAKE_PROVIDER, model=FAKE_MODEL)
    fake_llm.reply("Too late.", delay=4)
    child = terminal(cli_env, "chat", str(slow["id"]))
    child.expect(r"session (\d+)")
    session_id = int(child.match.group(1))
    prompted(child)
    child.sendline("Take your time")
    deadline = time.monotonic() + 10
    while not fake_llm.requests and time.monotonic() < deadline:  # the turn is running
        time.sleep(0.02)
    assert fake_llm.requests
    child.sendintr()
    child.expect(r"Turn (\d+) cancelled")
    turn_id = int(child.match.group(1))
    child.expect(rf"turn {turn_id} cancelled · \d+ tokens .* cost \$")
    prompted(child)
    child.sendeof()
    assert ended(child) == 0
    assert "Too late." not in child.transcript.getvalue()
    turn = api.get(f"/turns/{turn_id}").json()
    assert turn["status"] == "cancelled" and turn["session_id"] == session_id


def test_a_failed_turn_shows_its_error_and_the_chat_goes_on(cli_env, api, fake_llm):
    agent = make_agent(api, unique("flaky"), provider=FAKE_PROVIDER, model=FAKE_MODEL)
    fake_llm.status(500).status(500).status(500)  # the first try and both retries
    child = terminal(cli_env, "chat", agent["name"])
    prompted(child)
    child.sendline("Are you there?")
    child.expect(r"Error: \S*turn \d+ failed: [^\r\n]+ \((\w+)\)\r\n")
    assert child.match.group(1) == "llm_unavailable"
    child.expect(r"turn \d+ failed · 0 tokens")
    prompted(child)
    fake_llm.reply("Back again.")
    child.sendline("And now?")
    child.expect_exact("Back again.")
    prompted(child)
    child.sendeof()
    assert ended(child) == 0
