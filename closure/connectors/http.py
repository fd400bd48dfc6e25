"""Outbound HTTP for connectors: timeouts, a total deadline, no redirects, destination policy.

The destination address is checked after DNS resolution, on the address the socket actually
connects to, so a name that resolves to a private or loopback address is refused at connect time.
Only a hash and a short redacted excerpt of a response body are ever kept.
"""

import hashlib
import http.client
import ipaddress
import re
import socket
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

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


def _is_forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return _is_forbidden(mapped)
        if address in ipaddress.ip_network("64:ff9b::/96"):
            return _is_forbidden(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.is_loopback:
        return not settings.CAVRA_ALLOW_LOOPBACK_CONNECTORS
    return (
        address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address in ipaddress.ip_network("100.64.0.0/10")
    )


def check_address(host_address: str) -> None:
    address = ipaddress.ip_address(host_address.split("%", 1)[0])
    if _is_forbidden(address):
        raise DestinationRefused(f"destination address {address} is not allowed")


def parse_destination(url: str) -> tuple[str, str, int, str]:
    """Split and validate a destination URL: (scheme, host, port, path with query)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise DestinationRefused("only http and https destinations are allowed")
    host = parts.hostname or ""
    if not host or parts.username or parts.password:
        raise DestinationRefused("destination URL has no host or embeds credentials")
    if not re.fullmatch(r"[A-Za-z0-9.-]+", host) and not _is_ipv6_literal(host):
        raise DestinationRefused("destination host is malformed")
    # Numeric hosts in odd encodings (2130706433, 0x7f.1, 017.0.0.1) are refused outright:
    # resolvers disagree about them, so the checked and the connected address could differ.
    if re.fullmatch(r"[0-9a-fA-FxX.]+", host) and not _is_dotted_quad(host):
        raise DestinationRefused("destination host uses a non-canonical numeric form")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise DestinationRefused("destination port is invalid") from exc
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return parts.scheme, host, port, path


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
    last_error: OSError | None = None
    for family, socktype, proto, _name, sockaddr in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        check_address(sockaddr[0])
        sock = socket.socket(family, socktype, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        return sock
    raise last_error or OSError(f"cannot resolve {host}")


def parse_retry_after(value: str | None) -> int | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0, int((when - timezone.now()).total_seconds()))


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
    r"|[A-Za-z0-9_\-]{32,})"
)


def redacted_excerpt(body: bytes) -> str:
    """A short excerpt of a response body with anything that looks like a secret removed."""
    text = body[:1024].decode("utf-8", errors="replace")
    text = _SECRETISH.sub("[redacted]", text)
    text = " ".join(text.split())
    return text[:EXCERPT_CHARS]


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest() if body else ""
