"""The outbound destination policy: forbidden destinations are refused before any socket is
opened, checked on the resolved address at connect time, for every HTTP kind."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import time_machine

from closure.connectors import AlertMessage, send_alert
from closure.connectors.http import DestinationRefused, destination_validate, parse_retry_after
from closure.models import Connector
from tests.factories import routing_key

HTTP_KINDS = ["webhook", "slack", "teams", "pagerduty"]
MESSAGE = AlertMessage(
    delivery_id="gordackexechealthalertdelivery-0123456789abcdef",
    attempt_number=1,
    payload={"alert_level": "critical", "findings": [], "counts": {}, "console_url": "http://x/"},
)

# (url, fake DNS answers for its host or None). `{port}` is a live local server's port, so a
# broken guard would really connect (and the test would see it).
FORBIDDEN = [
    ("http://127.0.0.1:{port}/hook", None),  # loopback
    ("http://localhost:{port}/hook", None),  # a name that resolves to loopback
    ("http://[::1]:{port}/hook", None),  # IPv6 loopback
    ("http://10.0.0.1/hook", None),  # private
    ("http://172.16.5.4/hook", None),  # private
    ("http://192.168.1.1/hook", None),  # private
    ("http://169.254.169.254/latest/meta-data/", None),  # link-local cloud metadata
    ("http://168.63.129.16/machine", None),  # Azure wire server (publicly routable)
    ("http://100.64.0.1/hook", None),  # CGNAT
    ("http://100.100.100.200/latest/meta-data", None),  # Alibaba metadata in CGNAT
    ("http://192.0.0.192/", None),  # Oracle metadata (IETF protocol assignments)
    ("http://0.0.0.0:{port}/", None),  # unspecified
    ("http://224.0.0.1/", None),  # multicast
    ("http://255.255.255.255/", None),  # broadcast
    ("http://[fd00:ec2::254]/latest/meta-data/", None),  # AWS IPv6 metadata, unique-local
    ("http://[fc00::1]/hook", None),  # unique-local
    ("http://[fe80::1]/hook", None),  # IPv6 link-local
    ("http://[::ffff:127.0.0.1]:{port}/hook", None),  # IPv4-mapped loopback
    ("http://[::ffff:10.0.0.1]/hook", None),  # IPv4-mapped private
    ("http://[64:ff9b::a9fe:a9fe]/", None),  # NAT64 of 169.254.169.254
    ("http://[64:ff9b::7f00:1]/", None),  # NAT64 of loopback
    ("http://[64:ff9b:1::a00:1]/", None),  # local-use NAT64 of 10.0.0.1
    ("http://[2002:a00:1::]/", None),  # 6to4 of 10.0.0.1
    ("http://[2002:7f00:1::]/", None),  # 6to4 of loopback
    ("http://[::7f00:1]/", None),  # deprecated IPv4-compatible loopback
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", None),  # Teredo tunnel
    ("http://[::]/", None),  # IPv6 unspecified
    ("http://2130706433:{port}/", None),  # decimal loopback
    ("http://0x7f.1:{port}/", None),  # hex and short form
    ("http://017700000001:{port}/", None),  # octal
    ("http://0177.0.0.1:{port}/", None),  # octal dotted
    ("http://127.1:{port}/", None),  # short dotted
    ("http://0:{port}/", None),  # zero
    ("http://127.0.0.1.:{port}/", None),  # trailing dot
    ("http://127\u30020\u30020\u30021:{port}/", None),  # ideographic full stops
    ("http://user:pass@example.com/", None),  # embedded credentials
    ("ftp://example.com/hook", None),  # scheme
    ("file:///etc/passwd", None),  # scheme
    ("gopher://example.com:70/", None),  # scheme
    ("http://metadata.google.internal/computeMetadata/v1/", ["169.254.169.254"]),
    ("http://rebind.example.test/hook", ["93.184.216.34", "10.0.0.7"]),  # one bad answer
    ("http://v6only.example.test/hook", ["fd12:3456::1"]),  # resolves to unique-local
]


@pytest.mark.parametrize(
    ("index", "url_template", "dns"),
    [(i, url, dns) for i, (url, dns) in enumerate(FORBIDDEN)],
    ids=[url for url, _ in FORBIDDEN],
)
def test_forbidden_destination_is_refused_without_opening_a_socket(
    settings, httpserver, network_spy, index, url_template, dns
):
    # given production policy (no loopback) and a connector of one of the HTTP kinds aimed at
    # a forbidden destination (the table cycles through the kinds)
    settings.CAVRA_ALLOW_LOOPBACK_CONNECTORS = False
    url = url_template.format(port=httpserver.port)
    if dns is not None:
        network_spy.fake_dns[url.split("/")[2]] = dns
    kind = HTTP_KINDS[index % len(HTTP_KINDS)]
    connector = Connector(name=f"forbidden-{index}", kind=kind)
    config = {"routing_key": routing_key(), "events_url": url} if kind == "pagerduty" else {}
    connector.set_private_config(config or {"url": url})

    # when an attempt is made
    outcome = send_alert(connector, message=MESSAGE, timeout_seconds=2)

    # then it is refused by policy, and no socket connected anywhere
    assert (outcome.delivered, outcome.error_class, outcome.http_status) == (
        False,
        "rejected_by_policy",
        None,
    )
    assert outcome.response_sha256 == ""
    assert network_spy.connects == []
    assert httpserver.log == []


def test_the_forbidden_table_is_long_enough():
    assert len(FORBIDDEN) >= 20


def test_a_name_is_judged_by_the_address_it_resolves_to(settings, httpserver, network_spy):
    # given a public-looking name that resolves to the local test server
    network_spy.fake_dns["hooks.partner.example"] = ["127.0.0.1"]
    url = f"http://hooks.partner.example:{httpserver.port}/hook"
    connector = Connector(name="partner", kind="webhook")
    connector.set_private_config({"url": url})
    httpserver.expect_request("/hook").respond_with_data("ok")

    # when loopback is forbidden, then allowed (the tests' switch)
    settings.CAVRA_ALLOW_LOOPBACK_CONNECTORS = False
    refused = send_alert(connector, message=MESSAGE, timeout_seconds=2)
    refused_connects = list(network_spy.connects)
    settings.CAVRA_ALLOW_LOOPBACK_CONNECTORS = True
    allowed = send_alert(connector, message=MESSAGE, timeout_seconds=2)

    # then the refusal came after resolution and before any connect; the control connects
    assert network_spy.resolved == ["hooks.partner.example", "hooks.partner.example"]
    assert (refused.error_class, refused_connects) == ("rejected_by_policy", [])
    assert (allowed.delivered, allowed.http_status) == (True, 200)
    assert network_spy.connects == [("127.0.0.1", httpserver.port)]


def test_a_name_that_does_not_resolve_is_a_connection_error(network_spy):
    connector = Connector(name="nowhere", kind="slack")
    connector.set_private_config({"url": "https://no-such-host.invalid/hook"})

    outcome = send_alert(connector, message=MESSAGE, timeout_seconds=2)

    assert (outcome.error_class, outcome.http_status) == ("connection_error", None)
    assert network_spy.connects == []


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T000/B000/XXXX",
        "https://events.pagerduty.com/v2/enqueue",
        "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=x",
        "https://cafe.be/hook",  # hex-looking labels are fine when the last is not a number
        "https://[2606:4700:4700::1111]/hook",
        "https://93.184.216.34/hook",
    ],
)
def test_ordinary_destinations_pass_the_static_checks(url):
    destination_validate(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/hook",
        "http://0x7f.1/",
        "javascript:alert(1)",
        "http://exa mple.com/",
        "http://[fe80::1%25eth0]/",
        "http://example..com/",
    ],
)
def test_static_checks_refuse_what_can_be_judged_when_configured(url, settings):
    settings.CAVRA_ALLOW_LOOPBACK_CONNECTORS = False
    with pytest.raises(DestinationRefused):
        destination_validate(url)


# -- Retry-After parsing ----------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120),
        (" 7 ", 7),
        ("0", 0),
        (format_datetime(T0 + timedelta(seconds=90), usegmt=True), 90),
        (format_datetime(T0 - timedelta(seconds=90), usegmt=True), 0),  # in the past
        ("Mon, 02 Mar 2026 09:31:30 +0000", 90),
        ("99999999999999999999", 3600),  # clamped
        (format_datetime(T0 + timedelta(days=365), usegmt=True), 3600),  # clamped
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("١٢٠", None),  # non-ASCII digits
    ],
)
def test_parse_retry_after(settings, header, seconds):
    settings.CAVRA_RETRY_AFTER_MAX_SECONDS = 3600
    with time_machine.travel(T0, tick=False):
        assert parse_retry_after(header) == seconds
