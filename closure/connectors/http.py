"""Outbound HTTP for connectors: timeouts, a total deadline, no redirects, destination policy.

The destination is checked after DNS resolution, on every address the socket could connect to,
so a name that resolves to a private or loopback address is refused at connect time.
Only a hash and a short redacted excerpt of a response body are ever kept.
"""

import hashlib
import http.client
import ipaddress
import math
import re
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.utils import timezone

from closure.choices import ErrorClass

MAX_BODY_BYTES = 64 * 1024
EXCERPT_CHARS = 120
USER_AGENT = "CAVRA-closure/1"


class DestinationRefused(Exception):
    """The destination is not allowed (scheme, address range, malformed URL)."""


class DeadlineExceeded(Exception):
    """The attempt ran past its total deadline."""


@dataclass(frozen=True)
class HttpResult:
    status: int | None
    body: bytes
    latency_ms: int
    error_class: str
    error_detail: str
    retry_after_seconds: int | None
    headers: dict


# Cloud metadata and platform endpoints that are publicly routable, so the range checks below
# would not catch them (Azure's wire server; the others are also inside refused ranges).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "168.63.129.16",  # Azure wire server
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (classic)
        "fd00:ec2::254",  # AWS over IPv6
    )
)
NAT64_NETWORKS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, IPv4-compatible)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in NAT64_NETWORKS) or (
        int(address) >> 32 == 0 and int(address) > 0xFFFF
    ):
        # NAT64 (RFC 6052/8215) and the deprecated IPv4-compatible form ::a.b.c.d keep the
        # IPv4 address in the low 32 bits.
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True unless the address is a globally routable unicast address (loopback: by setting)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            # Judged by the IPv4 address it reaches: a NAT64 gateway or a 6to4 relay would
            # forward ::ffff:10.0.0.1, 64:ff9b::a9fe:a9fe or 2002:7f00:1:: to a private host.
            return _is_forbidden(embedded)
        if address.teredo is not None:
            return True  # a tunnel whose far end cannot be judged here
    if address in METADATA_ADDRESSES:
        return True
    if address.is_loopback:
        return not settings.CAVRA_ALLOW_LOOPBACK_CONNECTORS
    # `is_global` is False for private, link-local, CGNAT (100.64/10), unique-local (fc00::/7),
    # documentation, benchmarking and "this network" ranges; multicast and reserved ranges
    # can still be global, so they are refused on their own.
    return (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_link_local
    )


def check_address(host_address: str) -> None:
    address = ipaddress.ip_address(host_address.split("%", 1)[0])
    if _is_forbidden(address):
        raise DestinationRefused(f"destination address {address} is not allowed")


_NUMERIC_LABEL = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)")


def parse_destination(url: str) -> tuple[str, str, int, str]:
    """Split and validate a destination URL: (scheme, host, port, path with query).

    Static checks only; the address itself is checked at connect time, after DNS resolution.
    """
    if not isinstance(url, str) or not url.isascii() or any(c.isspace() for c in url):
        raise DestinationRefused("destination URL must be plain ASCII without whitespace")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise DestinationRefused("only http and https destinations are allowed")
    host = parts.hostname or ""
    if not host or parts.username is not None or parts.password is not None:
        raise DestinationRefused("destination URL has no host or embeds credentials")
    if _is_ipv6_literal(host):
        if "%" in host:
            raise DestinationRefused("destination host carries an IPv6 zone")
    elif not re.fullmatch(r"[A-Za-z0-9.-]+", host) or ".." in host or host.startswith("."):
        raise DestinationRefused("destination host is malformed")
    else:
        # A host whose last label is a number is an IPv4 address to URL parsers (WHATWG), and
        # resolvers read odd forms (2130706433, 0x7f.1, 017.0.0.1, 127.1) differently: only
        # the canonical dotted quad is accepted, so the checked and the connected address
        # cannot differ.
        labels = host.rstrip(".").split(".")
        if _NUMERIC_LABEL.fullmatch(labels[-1]) and not _is_dotted_quad(host):
            raise DestinationRefused("destination host uses a non-canonical numeric form")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise DestinationRefused("destination port is invalid") from exc
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return parts.scheme, host, port, path


def destination_validate(url: str) -> None:
    """The checks that can be made when a destination is configured (forms, bootstrap).

    Raises DestinationRefused. A literal address is judged now; a name is judged again on every
    attempt, after resolution.
    """
    _scheme, host, _port, _path = parse_destination(url)
    if _is_ipv6_literal(host) or _is_dotted_quad(host):
        check_address(host)


def _is_ipv6_literal(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _is_dotted_quad(host: str) -> bool:
    pieces = host.split(".")
    return len(pieces) == 4 and all(
        p.isdigit() and (p == "0" or not p.startswith("0")) and int(p) <= 255 for p in pieces
    )


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = _guarded_socket(self.host, self.port, self.timeout)


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        raw = _guarded_socket(self.host, self.port, self.timeout)
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(raw, server_hostname=self.host)


def _guarded_socket(host: str, port: int, timeout: float) -> socket.socket:
    """Resolve, refuse the host if ANY of its addresses is forbidden, then connect.

    Judging every address before the first connect means a name that resolves to a public and
    a private address is refused outright, whatever order the resolver returns them in.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError("destination host does not resolve") from exc
    for *_rest, sockaddr in addresses:
        check_address(sockaddr[0])
    last_error: OSError | None = None
    for family, socktype, proto, _name, sockaddr in addresses:
        sock = socket.socket(family, socktype, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        return sock
    raise last_error or OSError("destination host has no address")


def parse_retry_after(value: str | None) -> int | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date).

    Clamped to CAVRA_RETRY_AFTER_MAX_SECONDS: a receiver must not be able to park a delivery
    for a year (or overflow the stored integer) by answering with a huge value.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = int(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:
            return None
        # Rounded up: a retry scheduled a fraction of a second early would arrive before the
        # instant the receiver allowed.
        seconds = max(0, math.ceil((when - timezone.now()).total_seconds()))
    return min(seconds, settings.CAVRA_RETRY_AFTER_MAX_SECONDS)


def post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    connect_timeout: float,
    total_timeout: float,
) -> HttpResult:
    """POST once; never raises for network or HTTP failures, it classifies them."""
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    def failure(error_class: str, detail: str, status: int | None = None) -> HttpResult:
        return HttpResult(status, b"", elapsed_ms(), error_class, detail, None, {})

    try:
        scheme, host, port, path = parse_destination(url)
    except DestinationRefused as exc:
        return failure(ErrorClass.REJECTED_BY_POLICY, str(exc))
    connection_class = _GuardedHTTPSConnection if scheme == "https" else _GuardedHTTPConnection
    conn = connection_class(host, port, timeout=min(connect_timeout, total_timeout))
    deadline = started + total_timeout
    try:
        conn.connect()
        # http.client may drop conn.sock once the response owns the stream; keep our handle.
        sock = conn.sock
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        conn.request("POST", path, body=body, headers={"User-Agent": USER_AGENT, **headers})
        response = conn.getresponse()
        chunks: list[bytes] = []
        received = 0
        while received < MAX_BODY_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded("response exceeded the total deadline")
            if response.isclosed():
                break
            if sock.fileno() >= 0:
                sock.settimeout(remaining)
            chunk = response.read1(MAX_BODY_BYTES - received)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
        status = response.status
        response_headers = {k.lower(): v for k, v in response.getheaders()}
    except DestinationRefused as exc:
        return failure(ErrorClass.REJECTED_BY_POLICY, str(exc))
    except (TimeoutError, DeadlineExceeded) as exc:
        return failure(ErrorClass.TIMEOUT, str(exc) or "timed out")
    except (OSError, http.client.HTTPException) as exc:
        return failure(ErrorClass.CONNECTION_ERROR, type(exc).__name__)
    finally:
        conn.close()
    body_bytes = b"".join(chunks)
    retry_after = None
    if status in (429, 503):
        retry_after = parse_retry_after(response_headers.get("retry-after"))
    if 200 <= status < 300:
        error_class = ""
    elif 300 <= status < 400:
        # Redirects are never followed: the destination must be configured exactly.
        error_class = ErrorClass.REJECTED_BY_POLICY
    elif status == 429:
        error_class = ErrorClass.RATE_LIMITED
    elif status < 500:
        error_class = ErrorClass.HTTP_4XX
    else:
        error_class = ErrorClass.HTTP_5XX
    return HttpResult(
        status, body_bytes, elapsed_ms(), error_class, "", retry_after, response_headers
    )


_SECRETISH = re.compile(
    r"(?i)(https?://\S+|xox[a-z]-[\w-]+|bearer\s+\S+|(?:token|key|secret|password|sig)=\S+"
    r"|[A-Za-z0-9_\-+/]{32,}={0,2})"
)


def redacted_excerpt(body: bytes, *, secrets: Iterable[str] = ()) -> str:
    """A short excerpt of a response body without secrets.

    The connector's own configured values (and their parts, see `secret_fragments`) are cut
    out first, exactly; then anything that looks like a secret (URLs, tokens, long keys).
    """
    text = body[:1024].decode("utf-8", errors="replace")
    for fragment in sorted(set(secrets), key=len, reverse=True):
        if fragment:
            text = text.replace(fragment, "[redacted]")
    text = _SECRETISH.sub("[redacted]", text)
    text = " ".join(text.split())
    return text[:EXCERPT_CHARS]


def secret_fragments(config: dict) -> list[str]:
    """Every configured value, plus the parts of it a receiver might echo back on its own:
    a URL's path, query and their longer pieces, a Standard Webhooks key without `whsec_`."""
    values: list[str] = []
    for value in config.values():
        values.extend(v for v in (value if isinstance(value, list) else [value]) if v)
    fragments: list[str] = []
    for value in (str(v) for v in values):
        fragments.append(value)
        fragments.append(value.removeprefix("whsec_"))
        parts = urlsplit(value) if "://" in value else None
        if parts is not None:
            fragments.extend([parts.path, parts.query])
            pieces = re.split(r"[/?&=;]", f"{parts.path}?{parts.query}")
            fragments.extend(unquote(piece) for piece in pieces)
            fragments.extend(pieces)
    # Short pieces ("services", "v1") are not secret and would shred the excerpt.
    return [f for f in fragments if len(f) >= 8]


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest() if body else ""


def post_json(
    url: str, *, body: bytes, timeout_seconds: float, headers: dict[str, str] | None = None
) -> HttpResult:
    """POST a JSON body with the connectors' standard timeouts (connect ≤ 5 s, total deadline)."""
    return post(
        url,
        body=body,
        headers={"Content-Type": "application/json", **(headers or {})},
        connect_timeout=min(5.0, timeout_seconds),
        total_timeout=timeout_seconds,
    )
