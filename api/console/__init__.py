"""The console: a page at ``/`` to try Roomcast in a browser, built on the public API only.

Three static files (index.html, console.js, console.css) served as they are: no build step, no
third-party code, nothing fetched from elsewhere, so the page works offline. The page and its
assets need no token (the API routes it calls still do) and are neither rate limited nor in the
OpenAPI document: they are documents, like the API's own docs.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

ASSETS = Path(__file__).resolve().parent
BLUEPRINT_NAME = "console"
# The page runs only its own script and style, talks only to its own origin, and may not be
# framed (clickjacking). API text is rendered with textContent, and this is the second guard:
# an injected <script> or on* attribute would not run.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (a 304 while unchanged): a new version is picked up at once.
    "Cache-Control": "no-cache",
}

blp = Blueprint(BLUEPRINT_NAME, __name__)


def _asset(name: str) -> Response:
    return send_from_directory(ASSETS, name, max_age=0)


@blp.get("/")
def page() -> Response:
    return _asset("index.html")


@blp.get("/console/<any('console.js', 'console.css'):name>")
def asset(name: str) -> Response:
    return _asset(name)


@blp.after_request
def secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response
