"""Which URLs a webhook may name, and which addresses its delivery may connect to.

A webhook makes the server send a request wherever a user says: to an address of the server's own
network (loopback, private, link-local such as the cloud metadata address 169.254.169.254) that
would reach what only the server can reach. So a webhook URL is checked twice:

- when it is set (the API answers 422): http or https only, no user info, and a host that is a
  name or a public address, however the address is written: decimal (2130706433), octal
  (0177.0.0.1), hexadecimal (0x7f.1), short (127.1), IPv4-mapped IPv6 (::ffff:127.0.0.1), with a
  trailing dot. A host whose last label is a number is an IPv4 address (as browsers read URLs).
- when it is delivered (the worker): the host is resolved once, every address it resolves to
  must be public, and the request connects to one of those checked addresses, so a DNS answer
  that changes between the check and the connection cannot send it elsewhere.

The hosts of ROOMCAST_WEBHOOK_ALLOWED_HOSTS skip the address checks: an operator's receivers on
a private network (and the test suite's receiver on loopback).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

import httpx

from .errors import ConfigError

MAX_URL_LENGTH = 2048
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, and a port (None: any port of that host).
AllowedHosts = frozenset[tuple[str, int | None]]

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
# A last label that is a number makes the host an IPv4 address (the WHATWG URL standard).
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT
# Characters URL parsers disagree about: refused rather than read one way here and another way
# by whatever connects.
_AMBIGUOUS = re.compile(r"[\\\s\x00-\x1f\x7f]")
_ALLOWED_ENTRY = re.compile(r"^(\[[^\]]+\]|[^:\[\]]+)(?::(\d{1,5}))?$")


class WebhookURLError(ValueError):
    """Why a URL cannot be a webhook; the message is shown to the client."""


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook URL, parsed: its host (lower case, no trailing dot, an IPv6 address without
    brackets), its port, and the address the host is, when it is one."""

    url: httpx.URL
    host: str
    port: int
    address: IPAddress | None

    def allowed_by(self, allowed: AllowedHosts) -> bool:
        return (self.host, self.port) in allowed or (self.host, None) in allowed


def refusal(address: IPAddress) -> str | None:
    """What makes ``address`` one a webhook must not reach, or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None and refusal(embedded):
            return f"an IPv6 address embedding {embedded}, {refusal(embedded)}"
    for kind, matches in (
        ("an unspecified", address.is_unspecified),
        ("a loopback", address.is_loopback),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("a private", address.is_private),
        ("a reserved", address.is_reserved),
        ("a shared (carrier-grade NAT)", address in _SHARED_ADDRESS_SPACE),
        ("a non-public", not address.is_global),
    ):
        if matches:
            return f"{kind} address"
    return None


def _host_address(host: str) -> IPAddress | None:
    """The address ``host`` (lower case, no trailing dot) is, or None if it is a name;
    WebhookURLError if it is neither."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise WebhookURLError(f"{host!r} is not a valid IPv6 address.") from None
    if _NUMERIC_LABEL.match(host.rsplit(".", 1)[-1]):
        try:  # every form inet_aton reads: 127.1, 0177.0.0.1, 0x7f.1, 2130706433
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            raise WebhookURLError(f"{host!r} is not a valid IPv4 address.") from None
    if not _HOST_NAME.match(host) or len(host) > 253:
        raise WebhookURLError(f"{host!r} is not a valid host name.")
    return None


def _normalized_host(raw: str) -> str:
    host = raw.lower()
    return host[:-1] if host.endswith(".") else host


def parse_webhook_url(url: str) -> WebhookTarget:
    """The URL's parts, if it has the shape of a webhook URL (its address is not checked)."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookURLError(f"Longer than {MAX_URL_LENGTH} characters.")
    if _AMBIGUOUS.search(url):
        raise WebhookURLError("Must not contain spaces, control characters or backslashes.")
    try:
        parsed = httpx.URL(url)
        raw_host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, ValueError, TypeError):
        raise WebhookURLError("Not a valid URL.") from None
    if parsed.scheme not in SCHEMES:
        raise WebhookURLError("Must be an http:// or https:// URL.")
    if parsed.userinfo:
        raise WebhookURLError("Must not contain user info (user:password@).")
    if not raw_host:
        raise WebhookURLError("Must name a host.")
    port = DEFAULT_PORTS[parsed.scheme] if parsed.port is None else parsed.port
    if not 1 <= port <= 65535:
        raise WebhookURLError("The port must be between 1 and 65535.")
    host = _normalized_host(raw_host)
    return WebhookTarget(parsed, host, port, _host_address(host))


def check_webhook_url(url: str, allowed: AllowedHosts) -> WebhookTarget:
    """``url`` parsed, if a webhook may name it: WebhookURLError otherwise."""
    target = parse_webhook_url(url)
    if target.address is not None and not target.allowed_by(allowed):
        reason = refusal(target.address)
        if reason:
            raise WebhookURLError(
                f"{target.host} is {reason}: a webhook must reach a public address"
                " (an operator may allow a host with ROOMCAST_WEBHOOK_ALLOWED_HOSTS)."
            )
    return target


class AddressRefused(Exception):
    """The webhook's host resolved to an address it must not reach."""


def resolve_checked(target: WebhookTarget, allowed: AllowedHosts) -> list[str]:
    """The addresses to connect to for ``target``: resolved once, and every one of them public
    (unless its host is allowed). AddressRefused if any is not; OSError if the name does not
    resolve."""
    infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not target.allowed_by(allowed):
        for address in addresses:
            reason = refusal(ipaddress.ip_address(address.split("%", 1)[0]))
            if reason:
                raise AddressRefused(f"{target.host} resolves to {address}, {reason}")
    return addresses


def parse_allowed_hosts(name: str, raw: str) -> AllowedHosts:
    """``host``, ``host:port`` and ``[ipv6]:port`` entries, separated by commas."""
    allowed: set[tuple[str, int | None]] = set()
    for entry in filter(None, (part.strip() for part in raw.split(","))):
        match = _ALLOWED_ENTRY.match(entry)
        host = match and _normalized_host(match.group(1).strip("[]"))
        port = match and match.group(2)
        try:
            if not host or (match.group(1).startswith("[") and ":" not in host):
                raise WebhookURLError("not a host, or brackets around no IPv6 address")
            _host_address(host)
        except WebhookURLError:
            raise ConfigError(
                f"{name}: {entry!r} is not a host or host:port (e.g. hooks.internal,"
                " 10.0.0.5:8080, [fd00::5]:443)"
            ) from None
        if port is not None and not 1 <= int(port) <= 65535:
            raise ConfigError(f"{name}: the port of {entry!r} must be between 1 and 65535")
        allowed.add((host, int(port) if port else None))
    return frozenset(allowed)
