"""POSTing to a URL a user gave (a webhook), safely (models/webhook_urls.py says why).

- The URL's host is resolved once and every address checked (unless the operator allowed the
  host); the request then connects to a checked address itself: the URL handed to httpx names
  the address, with the Host header and the TLS server name (SNI, and the certificate check)
  set to the URL's host. No second resolution happens, so a DNS answer that changes between the
  check and the connection (DNS rebinding) cannot move the request elsewhere.
- Redirects are not followed, proxies from the environment are not used, and the answer's body
  is never read: its status and headers are all a delivery needs.
- Every error becomes an Outcome; nothing raises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from models.webhook_urls import (
    AddressRefused,
    AllowedHosts,
    WebhookURLError,
    check_webhook_url,
    resolve_checked,
)

from .retry_after import parse_retry_after

log = logging.getLogger(__name__)

# Why an attempt got no HTTP status (the turn's webhook.last_error).
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
DNS_ERROR = "dns_error"
ADDRESS_REFUSED = "address_refused"
PROTOCOL_ERROR = "protocol_error"
# Worth another attempt later; any other error is final.
TRANSIENT_ERRORS = frozenset({TIMEOUT, CONNECTION_ERROR, DNS_ERROR, PROTOCOL_ERROR})


@dataclass(frozen=True)
class Outcome:
    """An attempt's result: the answer's status, or why there was none."""

    status: int | None = None
    error: str | None = None
    # The answer's Retry-After, in seconds from now.
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def transient(self) -> bool:
        """Whether trying again later may succeed: a 5xx, a 429, or a network failure (a 4xx
        says the request itself is wrong; a redirect is not followed)."""
        if self.status is not None:
            return self.status == 429 or self.status >= 500
        return self.error in TRANSIENT_ERRORS


def post(
    url: str, body: bytes, headers: dict[str, str], *, timeout: float, allowed: AllowedHosts
) -> Outcome:
    """POST ``body`` to ``url`` once (each resolved address tried in turn until one connects)."""
    try:
        target = check_webhook_url(url, allowed)
        addresses = resolve_checked(target, allowed)
    except (WebhookURLError, AddressRefused) as refused:
        log.warning("webhook to %s refused: %s", _host_of(url), refused)
        return Outcome(error=ADDRESS_REFUSED)
    except OSError:
        return Outcome(error=DNS_ERROR)
    sent_headers = {**headers, "Host": target.url.netloc.decode("ascii")}
    # The server name for TLS (and its certificate check) is the URL's host; an address has
    # none (it is checked against the certificate's addresses).
    extensions = {"sni_hostname": target.host} if target.address is None else {}
    outcome = Outcome(error=CONNECTION_ERROR)
    for address in addresses:
        pinned = target.url.copy_with(host=address.split("%", 1)[0])
        try:
            with (
                httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
                client.stream(
                    "POST", pinned, content=body, headers=sent_headers, extensions=extensions
                ) as response,
            ):
                return Outcome(
                    status=response.status_code,
                    retry_after=parse_retry_after(response.headers),
                )
        except httpx.ConnectTimeout:
            outcome = Outcome(error=TIMEOUT)
        except httpx.ConnectError:
            outcome = Outcome(error=CONNECTION_ERROR)
        except httpx.TimeoutException:
            return Outcome(error=TIMEOUT)
        except httpx.HTTPError:  # the connection broke, or the answer was not HTTP
            return Outcome(error=PROTOCOL_ERROR)
    return outcome


def _host_of(url: str) -> str:
    """The URL's host for a log line (its path and query may carry a receiver's token)."""
    try:
        return httpx.URL(url).host or "?"
    except (httpx.InvalidURL, ValueError, TypeError):
        return "?"
