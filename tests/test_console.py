"""The console page at / : served without a token, locked down by its headers, and built only
on the public API (the browser drives it in tests/test_console_browser.py)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from api.console import ASSETS


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ],
)
def test_page_and_assets_need_no_token_and_are_locked_down(client, path, content_type):
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == content_type
    csp = dict(
        part.strip().split(" ", 1)
        for part in response.headers["Content-Security-Policy"].split(";")
    )
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'"  # no inline script, no eval
    assert csp["frame-ancestors"] == "'none'"
    assert csp["object-src"] == "'none'"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    # Revalidated cheaply: unchanged, a reload costs a 304.
    again = client.get(path, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    assert again.headers["Content-Security-Policy"] == response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "path",
    ["/console/__init__.py", "/console/index.html", "/console/", "/console/../auth.py", "/index"],
)
def test_only_the_page_and_its_two_assets_are_served(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.json["code"] == "not_found"


def test_the_api_still_requires_a_token_and_the_document_is_unchanged(client, user):
    for path in ("/api/v1/agents", "/api/v1/providers", "/api/v1/files"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert client.get(path, headers=user.headers).status_code == 200, path
    paths = client.get("/api/v1/docs/openapi.json").json["paths"]
    assert all(path.startswith("/api/v1/") for path in paths)
    assert client.post("/").status_code == 405


class _PageReferences(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self.labelled: set[str] = set()
        self.fields: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [attrs[name] for name in ("src", "href") if name in attrs]
        self.inline += [name for name in attrs if name.startswith("on") or name == "style"]
        if tag == "script":
            assert attrs.get("src"), "inline script"
        if tag == "label":
            self.labelled.add(attrs["for"])
        if tag in ("input", "select", "textarea") and attrs.get("type") != "checkbox":
            self.fields.append(attrs["id"])


def test_the_page_loads_nothing_from_elsewhere_and_labels_every_field():
    page = _PageReferences()
    page.feed((ASSETS / "index.html").read_text())
    assert page.urls and all(url.startswith(("/console/", "#", "data:")) for url in page.urls)
    assert page.inline == []  # the CSP would refuse inline handlers and styles
    assert set(page.fields) <= page.labelled, set(page.fields) - page.labelled


def test_the_script_never_renders_api_text_as_html():
    script = (ASSETS / "console.js").read_text()
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert unsafe not in script, unsafe
    assert not re.search(r"new\s+Function", script)
    # Only the API of its own origin: no absolute URL in the script or the stylesheet.
    for name in ("console.js", "console.css"):
        assert not re.search(r"https?://", Path(ASSETS, name).read_text()), name


def test_the_page_is_counted_under_bounded_route_labels(app):
    rules = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("console.")}
    assert rules == {"/", "/console/<any('console.js', 'console.css'):name>"}
