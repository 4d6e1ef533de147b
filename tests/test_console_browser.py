"""The console page in a real headless Chromium (selenium), against a live server as `make run`
starts it: the person's path from registering to logging out, and text that looks like HTML
shown as text.

Needs Debian's chromium and chromium-driver (`.ci/run` installs them); skipped without them.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time

import httpx
import pytest

from tests.conftest import FAKE_PROVIDER
from tests.fake_llm import text_reply
from tests.live_server import PASSWORD

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Without the background-networking flags Chromium's own connections (updates, sync, field
# trials) are attempted and refused on a closed network, slowing every start.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,860",
)
XSS = "<img src=x onerror=alert(1)>"
WAIT = 10


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed: the console's browser tests need"
            " `apt-get install -y chromium chromium-driver`"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="roomcast-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def api_client(live_server, token: str) -> httpx.Client:
    """The API as the page's user, to set up what the page then shows."""
    return httpx.Client(
        base_url=f"{live_server.base_url}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        trust_env=False,
        timeout=30,
    )


def until(driver, condition, message: str):
    return WebDriverWait(driver, WAIT).until(lambda _: condition(), message)


def by_id(driver, element_id: str):
    return driver.find_element(By.ID, element_id)


def visible(driver, element_id: str) -> bool:
    return by_id(driver, element_id).is_displayed()


def texts(driver, selector: str) -> list[str]:
    """The text of each element matching ``selector``, read at once (the page re-renders
    lists as they change, so elements found one call earlier may be gone)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)", selector
    )


def fill(driver, element_id: str, value: str) -> None:
    field = by_id(driver, element_id)
    field.clear()
    field.send_keys(value)


def create_agent(driver, name: str) -> None:
    if not by_id(driver, "agent-new").get_attribute("open"):
        driver.find_element(By.CSS_SELECTOR, "#agent-new summary").click()
    fill(driver, "agent-name", name)
    Select(by_id(driver, "agent-provider")).select_by_value("instant")
    driver.find_element(By.CSS_SELECTOR, "#agent-form button[type=submit]").click()


def agent_names(driver) -> list[str]:
    return texts(driver, "#agent-list .name")


def messages(driver) -> list[tuple[str, str]]:
    """The transcript as (author, content) pairs."""
    return [
        tuple(pair)
        for pair in driver.execute_script(
            """return [...document.querySelectorAll("#transcript > li")].map((item) => [
                item.querySelector(".author .name").textContent,
                item.querySelector(".content")?.textContent ?? "",
            ])"""
        )
    ]


def send(driver, text: str, *, keyboard: bool = False) -> None:
    fill(driver, "message", text)
    if keyboard:
        by_id(driver, "message").send_keys(Keys.CONTROL, Keys.ENTER)
    else:
        driver.find_element(By.CSS_SELECTOR, "#composer button[type=submit]").click()
    until(
        driver,
        lambda: by_id(driver, "turn-usage").text.startswith("Usage:"),
        "the turn's usage after its end",
    )


def no_script_ran(driver) -> None:
    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        alert = None
    assert alert is None, f"a script ran: {alert.text}"
    assert driver.find_elements(By.CSS_SELECTOR, "main img") == []


def error_shown(driver) -> str:
    until(driver, lambda: visible(driver, "error"), "an error shown")
    return by_id(driver, "error").text


def test_a_person_chats_with_a_room_and_an_agent(browser, live_server):
    driver = browser
    email = f"console-{time.time_ns()}@example.com"
    driver.get(live_server.base_url + "/")

    # Register (and so log in) through the form; a wrong password first shows the API's error
    # (Enter in the form logs in, as the form's first button).
    fill(driver, "auth-email", email)
    fill(driver, "auth-password", PASSWORD)
    by_id(driver, "auth-password").send_keys(Keys.ENTER)
    assert "Wrong email or password." in error_shown(driver)
    by_id(driver, "register").click()
    until(driver, lambda: by_id(driver, "whoami").text == email, "logged in")
    assert not visible(driver, "error") and not visible(driver, "auth-view")
    token = driver.execute_script("return JSON.parse(sessionStorage['roomcast.console']).auth")
    assert token["token"].startswith("rc_")

    # Agents (the catalog's providers in the select); a duplicate name is the API's 409.
    for name in ("ann", "bob", XSS):
        create_agent(driver, name)
        until(driver, lambda name=name: name in agent_names(driver), f"agent {name} listed")
    create_agent(driver, "ann")
    assert "You already have an agent named 'ann'." in error_shown(driver)
    no_script_ran(driver)

    # A room with two members.
    driver.find_element(By.CSS_SELECTOR, "#room-new summary").click()
    fill(driver, "room-name", "crew")
    Select(by_id(driver, "room-mode")).select_by_value("sequential")
    driver.find_element(By.CSS_SELECTOR, "#room-form button[type=submit]").click()
    until(driver, lambda: texts(driver, "#room-list .room > .name") == ["crew"], "room listed")
    for name in ("ann", "bob"):
        Select(driver.find_element(By.CSS_SELECTOR, ".add-member select")).select_by_visible_text(
            name
        )
        driver.find_element(By.CSS_SELECTOR, ".add-member button").click()
        until(
            driver, lambda name=name: name in texts(driver, ".members .name, .members span"), name
        )
    assert texts(driver, ".members li span") == ["ann", "bob"]

    # A room session: both replies land under their agents' names, then the turn's usage.
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Chat in crew']").click()
    until(driver, lambda: by_id(driver, "chat-title").text == "Room crew", "the room's chat")
    send(driver, f"hello {XSS}")
    until(driver, lambda: len(messages(driver)) == 3, "both replies")
    (you, said), *replies = messages(driver)
    assert (you, said) == ("You", f"hello {XSS}")
    assert [author for author, _ in replies] == ["ann", "bob"]
    assert all(content for _, content in replies)
    assert by_id(driver, "turn-status").text.endswith("completed")
    assert [s.split(" ")[0] for s in texts(driver, "#turn-speakers li")] == ["ann", "bob"]
    assert "cost $" in by_id(driver, "turn-usage").text
    assert by_id(driver, "announce").text.startswith("bob: ")
    no_script_ran(driver)

    # More turns than a history page, through the API; after a reload the page reopens the
    # session with its latest page, and "Load earlier" reaches the first message.
    session_id = int(by_id(driver, "session-select").get_attribute("value"))
    with api_client(live_server, token["token"]) as http:
        for n in range(10):
            turn = http.post(f"/sessions/{session_id}/turns", json={"content": f"n{n}"})
            assert turn.status_code == 202, turn.text
            done = http.get(f"/turns/{turn.json()['id']}?wait=20&until=terminal")
            assert done.json()["status"] == "completed"
    driver.refresh()
    until(driver, lambda: len(messages(driver)) == 30, "the latest history page")
    assert messages(driver)[-3][1] == "n9"
    assert visible(driver, "load-earlier")
    by_id(driver, "load-earlier").click()
    until(driver, lambda: len(messages(driver)) == 33, "the earlier messages")
    assert messages(driver)[0] == ("You", f"hello {XSS}")
    assert not visible(driver, "load-earlier")

    # A standalone session with one agent.
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Chat with ann']").click()
    until(driver, lambda: by_id(driver, "chat-title").text == "Chat with ann", "ann's chat")
    assert messages(driver) == []
    # Focused once the chat has loaded its (empty) history: on a busy machine, after the title.
    until(
        driver,
        lambda: driver.switch_to.active_element == by_id(driver, "message"),
        "the message box focused",
    )
    send(driver, "just you", keyboard=True)
    until(driver, lambda: len(messages(driver)) == 2, "ann's reply")
    assert [author for author, _ in messages(driver)] == ["You", "ann"]

    # A file: uploaded, then listed; one of a refused type shows the API's 415.
    folder = tempfile.mkdtemp(prefix="roomcast-upload-")
    notes = os.path.join(folder, "notes.txt")
    with open(notes, "w") as handle:
        handle.write("Release notes: ship the console.\n")
    by_id(driver, "file-input").send_keys(notes)
    driver.find_element(By.CSS_SELECTOR, "#file-form button").click()
    until(driver, lambda: "notes.txt" in texts(driver, "#file-list .name"), "the file listed")
    binary = os.path.join(folder, "image.png")
    with open(binary, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
    by_id(driver, "file-input").send_keys(binary)
    driver.find_element(By.CSS_SELECTOR, "#file-form button").click()
    assert "415" in error_shown(driver)
    shutil.rmtree(folder)

    # Log out: the token is revoked, and the tab forgets it.
    by_id(driver, "logout").click()
    until(driver, lambda: visible(driver, "auth-view"), "the login form")
    assert driver.execute_script("return sessionStorage.length") == 0
    with api_client(live_server, token["token"]) as http:
        assert http.get("/auth/me").status_code == 401
    # No script error; the browser logs the answers the test provoked (the wrong password, the
    # duplicate name, the refused file) as failed loads.
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert {e["source"] for e in errors} <= {"network"}, errors
    statuses = {int(m) for e in errors for m in re.findall(r"status of (\d+)", e["message"])}
    assert statuses == {401, 409, 415}, errors


# Replies of the scripted LLM server (the suite's "fake" provider) by the agent's system prompt.
REPLIES = {
    "dee": "Draft for 2.0: a console page at /, live replies per agent, and usage per turn.",
    "eve": "Reviewed: keep it short, lead with the console, and link the screenshot.",
}
# Records the text of every draft reply as token deltas land, by author.
WATCH_DRAFTS = """
window.drafts = [];
new MutationObserver((records) => {
  for (const record of records) {
    const draft = record.target.closest?.("li.draft");
    if (!draft || !record.target.classList?.contains("content")) continue;
    for (const node of record.addedNodes) {
      window.drafts.push([draft.querySelector(".author .name").textContent, node.textContent]);
    }
  }
}).observe(document.getElementById("transcript"), {childList: true, subtree: true});
"""


def test_replies_stream_in_as_token_deltas(browser, live_server, fake_llm):
    """With a real LLM server the replies are streamed: each shows up under its agent's name as
    it is written, and is then replaced by the committed message."""
    driver = browser
    email, token = live_server.register(f"grace-{time.time_ns() % 10**6}@example.com")

    def reply(request):
        (name,) = (name for name in REPLIES if f"You are {name}." in request.system_prompt)
        # The first speaker is slow: the page's stream asks for tokens before the second
        # speaker's call starts (the worker checks once per call).
        return text_reply(REPLIES[name], delay=1.2 if name == "dee" else 0)

    fake_llm.respond_with(reply)
    with api_client(live_server, token) as http:
        ids = [
            http.post(
                "/agents",
                json={"name": name, "provider": FAKE_PROVIDER, "system_prompt": f"You are {name}."},
            ).json()["id"]
            for name in REPLIES
        ]
        room = http.post("/rooms", json={"name": "release notes"}).json()
        for agent_id in ids:
            assert http.post(f"/rooms/{room['id']}/agents", json={"agent_id": agent_id}).is_success

    driver.get(live_server.base_url + "/")
    until(driver, lambda: visible(driver, "auth-view"), "the login form")
    fill(driver, "auth-email", email)
    fill(driver, "auth-password", PASSWORD)
    by_id(driver, "login").click()
    until(driver, lambda: by_id(driver, "whoami").text == email, "logged in")
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Chat in release notes']").click()
    until(driver, lambda: visible(driver, "composer"), "the room's chat")
    driver.execute_script(WATCH_DRAFTS)
    send(driver, "Draft the 2.0 release notes, then review them.")
    until(driver, lambda: len(messages(driver)) == 3, "both replies")
    assert messages(driver)[1:] == [("dee", REPLIES["dee"]), ("eve", REPLIES["eve"])]
    drafts = driver.execute_script("return window.drafts")
    streamed = "".join(text for author, text in drafts if author == "eve")
    # Pieces that land after the committed reply are dropped (the message is the authority).
    assert streamed and REPLIES["eve"].startswith(streamed), drafts
    assert driver.find_elements(By.CSS_SELECTOR, "li.draft") == []
    usage = by_id(driver, "turn-usage").text
    assert re.fullmatch(
        r"Usage: \d+ tokens \(\d+ prompt, \d+ completion\) · cost \$0\.\d{8}", usage
    )
    if screenshot := os.environ.get("CONSOLE_SCREENSHOT"):  # how docs/console.png is taken
        driver.save_screenshot(screenshot)
