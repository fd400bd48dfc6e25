"""Connector configuration: validation per kind, write-only admin forms for platform owners,
evidence without values, bootstrap from a file, and re-encryption after a key rotation."""

import json

import pytest
from cryptography.fernet import Fernet
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.test import Client

from closure.choices import MetadataKind
from closure.evidence.ledger import evidence_verify
from closure.keyring import field_fingerprint, key_id
from closure.models import Connector, Evidence
from closure.services.connectors import connector_save
from closure.services.errors import InvalidInput
from tests.conftest import closure_counts
from tests.factories import make_connector, routing_key, whsec

pytestmark = pytest.mark.django_db

SLACK_URL = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/abcdefghijklmnopqrstuvwx"
TEAMS_URL = "https://prod-01.westeurope.logic.azure.com/workflows/w1/triggers/manual/paths/invoke?sig=teamssignature0123456789"


def _changes(name: str) -> list[dict]:
    rows = Evidence.objects.filter(
        metadata_kind=MetadataKind.CONNECTOR_CHANGE, session_id=name
    ).order_by("sequence")
    return [row.payload["subject"] for row in rows]


# -- validation per kind ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "config", "errors"),
    [
        ("webhook", {}, {"config.url": ["This value is required."]}),
        (
            "webhook",
            {"url": "ftp://example.com/x"},
            {
                "config.url": [
                    "Not an allowed destination: only http and https destinations are allowed."
                ]
            },
        ),
        (
            "webhook",
            {"url": "https://example.com/x", "signing_secrets": ["whsec_c2hvcnQ="]},
            {"config.signing_secrets": ["Secret 1: shorter than 24 bytes."]},
        ),
        (
            "webhook",
            {"url": "https://example.com/x", "signing_secrets": [whsec(), whsec(), whsec()]},
            {"config.signing_secrets": ["At most 2 secrets (the new one and the previous one)."]},
        ),
        (
            "slack",
            {"url": SLACK_URL, "token": "x"},
            {"config.token": ["Not used by this kind of connector."]},
        ),
        (
            "teams",
            {"url": "http://10.0.0.5/hook"},
            {
                "config.url": [
                    "Not an allowed destination: destination address 10.0.0.5 is not allowed."
                ]
            },
        ),
        (
            "pagerduty",
            {"routing_key": "short"},
            {"config.routing_key": ["Must be the 32-character integration key."]},
        ),
        ("email", {"recipients": []}, {"config.recipients": ["Name at least one address."]}),
        (
            "email",
            {"recipients": ["cfo@example.com", "not-an-address"]},
            {"config.recipients": ["Address 2 is not a valid e-mail address."]},
        ),
        (
            "email",
            {"recipients": ["cfo@example.com"], "smtp_password": "p"},
            {"config.smtp_password": ["Set the SMTP username too, or neither."]},
        ),
    ],
)
def test_connector_save_refuses_a_configuration_its_kind_cannot_use(
    platform_owner, kind, config, errors
):
    before = closure_counts()

    with pytest.raises(InvalidInput) as raised:
        connector_save(actor=platform_owner, name="bad", kind=kind, private_config=config)

    assert raised.value.errors == errors
    assert closure_counts() == before


def test_accepted_counts_as_delivered_is_for_teams_only(platform_owner):
    with pytest.raises(InvalidInput) as raised:
        connector_save(
            actor=platform_owner,
            name="exec-slack",
            kind="slack",
            accepted_counts_as_delivered=True,
            private_config={"url": SLACK_URL},
        )
    assert raised.value.errors == {
        "accepted_counts_as_delivered": ["Only Teams connectors answer accepted."]
    }
    assert Connector.objects.count() == 0


def test_connector_save_normalises_and_encrypts(platform_owner):
    connector = connector_save(
        actor=platform_owner,
        name="exec-mail",
        kind="email",
        private_config={"recipients": "cfo@example.com,\nops@example.com, cfo@example.com"},
    )

    assert connector.private_config == {"recipients": ["cfo@example.com", "ops@example.com"]}
    assert "cfo@example.com" not in connector.config_ciphertext
    assert list(connector.config_fields) == ["recipients"]


# -- evidence -------------------------------------------------------------------------------


def test_connector_changes_are_evidence_that_names_keys_never_values(platform_owner):
    # given a webhook created, its secret rotated, then disabled
    first, second = whsec(), whsec()
    url = "https://hooks.example.com/cavra/very-secret-path-0001"
    connector_save(
        actor=platform_owner,
        name="exec-hook",
        kind="webhook",
        private_config={"url": url, "signing_secrets": [first]},
    )
    created = Connector.objects.get(name="exec-hook")
    connector_save(
        actor=platform_owner,
        name="exec-hook",
        kind="webhook",
        private_config={"url": url, "signing_secrets": [second, first]},
    )
    rotated = Connector.objects.get(name="exec-hook")
    connector_save(actor=platform_owner, name="exec-hook", kind="webhook", enabled=False)

    # then three evidence rows say what changed, by key name and fingerprint
    created_row, rotated_row, disabled_row = _changes("exec-hook")
    assert (created_row["change"], created_row["before"]) == ("created", None)
    assert created_row["changed_config_keys"] == ["signing_secrets", "url"]
    assert rotated_row["change"] == "updated"
    assert rotated_row["changed_config_keys"] == ["signing_secrets"]
    assert rotated_row["secrets_changed"] is True
    assert rotated_row["after"]["config_fields"]["url"] == created.config_fields["url"]
    assert rotated_row["after"]["config_fields"]["signing_secrets"] == {
        "fingerprint": field_fingerprint("signing_secrets", [second, first]),
        "changed_at": rotated.config_fields["signing_secrets"]["changed_at"],
    }
    assert (disabled_row["before"]["enabled"], disabled_row["after"]["enabled"]) == (True, False)
    assert (disabled_row["secrets_changed"], disabled_row["changed_config_keys"]) == (False, [])
    # and no value appears in the ledger
    ledger = json.dumps(list(Evidence.objects.values_list("payload", flat=True)))
    for value in (url, "very-secret-path-0001", first, second, first[6:], second[6:]):
        assert value not in ledger
    assert evidence_verify().ok is True


def test_saving_what_is_stored_writes_nothing(platform_owner):
    connector_save(
        actor=platform_owner, name="exec-slack", kind="slack", private_config={"url": SLACK_URL}
    )
    before = closure_counts()
    stored = Connector.objects.get(name="exec-slack")

    connector_save(
        actor=platform_owner, name="exec-slack", kind="slack", private_config={"url": SLACK_URL}
    )

    assert closure_counts() == before
    after = Connector.objects.get(name="exec-slack")
    assert (after.config_ciphertext, after.config_changed_at) == (
        stored.config_ciphertext,
        stored.config_changed_at,
    )


# -- the admin: write-only forms for platform owners ------------------------------------------


def _admin(user) -> Client:
    user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)
    return client


def _form(**values) -> dict:
    base = {"name": "", "kind": "", "enabled": "on", "description": "", "_save": "Save"}
    return {**base, **values}


def test_platform_owner_adds_a_connector_in_the_admin(platform_owner):
    client = _admin(platform_owner)

    response = client.post(
        "/admin/closure/connector/add/",
        _form(name="exec-teams", kind="teams", url=TEAMS_URL, accepted_counts_as_delivered="on"),
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    connector = Connector.objects.get(name="exec-teams")
    assert (connector.kind, connector.accepted_counts_as_delivered) == ("teams", True)
    assert connector.private_config == {"url": TEAMS_URL}
    [change] = _changes("exec-teams")
    assert change["change"] == "created"
    assert Evidence.objects.get().signer == "petra"


def test_admin_change_form_shows_status_and_fingerprint_never_the_value(platform_owner):
    # given a stored Slack connector
    connector = make_connector("exec-slack", SLACK_URL, kind="slack")
    client = _admin(platform_owner)

    # when its change form is opened
    response = client.get(f"/admin/closure/connector/{connector.pk}/change/")

    # then it says the URL is set, when, and its fingerprint, but never shows it
    text = response.content.decode()
    assert response.status_code == 200
    status = connector.config_fields["url"]
    assert f"Set, changed at {status['changed_at']}, fingerprint {status['fingerprint']}." in text
    assert SLACK_URL not in text
    assert "abcdefghijklmnopqrstuvwx" not in text
    assert 'name="url"' in text and 'type="password"' in text


def test_admin_blank_inputs_keep_the_stored_values(platform_owner):
    connector = make_connector("exec-slack", SLACK_URL, kind="slack")
    client = _admin(platform_owner)

    response = client.post(
        f"/admin/closure/connector/{connector.pk}/change/",
        _form(name="exec-slack", kind="slack", description="Board channel"),
    )

    assert response.status_code == 302
    connector.refresh_from_db()
    assert connector.private_config == {"url": SLACK_URL}
    assert connector.description == "Board channel"
    [change] = _changes("exec-slack")
    assert (change["secrets_changed"], change["after"]["description"]) == (False, "Board channel")


def test_admin_rotates_then_retires_a_webhook_signing_secret(platform_owner):
    # given a webhook with one signing secret
    old, new = whsec(), whsec()
    connector = make_connector("exec-hook", "https://hooks.example.com/x", signing_secrets=[old])
    client = _admin(platform_owner)
    url = f"/admin/closure/connector/{connector.pk}/change/"

    # when a new secret is typed, then the previous one is retired
    rotate = client.post(url, _form(name="exec-hook", kind="webhook", signing_secret=new))
    connector.refresh_from_db()
    during = connector.private_config["signing_secrets"]
    retire = client.post(
        url, _form(name="exec-hook", kind="webhook", retire_previous_signing_secret="on")
    )
    connector.refresh_from_db()

    # then both sign during the rotation, and only the new one after it
    assert (rotate.status_code, retire.status_code) == (302, 302)
    assert during == [new, old]
    assert connector.private_config == {
        "url": "https://hooks.example.com/x",
        "signing_secrets": [new],
    }
    assert [c["changed_config_keys"] for c in _changes("exec-hook")] == [
        ["signing_secrets"],
        ["signing_secrets"],
    ]


def test_admin_refuses_inputs_the_kind_does_not_read_and_invalid_values(platform_owner):
    client = _admin(platform_owner)
    before = closure_counts()

    response = client.post(
        "/admin/closure/connector/add/",
        _form(name="exec-pd", kind="pagerduty", url=SLACK_URL, routing_key="too-short"),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors == {
        "url": ["Not used by a pagerduty connector."],
        "routing_key": ["Must be the 32-character integration key."],
    }
    assert closure_counts() == before
    assert "too-short" not in response.content.decode()


def test_admin_clears_an_optional_value_and_changes_kind_with_new_config(platform_owner):
    connector = make_connector(
        "exec-pd", kind="pagerduty", routing_key=routing_key(), events_url="https://eu.example/v2"
    )
    client = _admin(platform_owner)
    url = f"/admin/closure/connector/{connector.pk}/change/"

    cleared = client.post(
        url, _form(name="exec-pd", kind="pagerduty", clear_config_keys="events_url")
    )
    connector.refresh_from_db()
    assert cleared.status_code == 302
    assert list(connector.private_config) == ["routing_key"]

    # a kind change needs that kind's configuration typed in: nothing is carried over
    refused = client.post(url, _form(name="exec-pd", kind="slack"))
    assert refused.context["adminform"].form.errors == {"url": ["This value is required."]}
    moved = client.post(url, _form(name="exec-pd", kind="slack", url=SLACK_URL))
    connector.refresh_from_db()
    assert moved.status_code == 302
    assert (connector.kind, connector.private_config) == ("slack", {"url": SLACK_URL})


def test_connector_name_cannot_be_changed_in_the_admin(platform_owner):
    connector = make_connector("exec-slack", SLACK_URL, kind="slack")
    client = _admin(platform_owner)

    response = client.post(
        f"/admin/closure/connector/{connector.pk}/change/",
        _form(name="renamed", kind="slack", description="x"),
    )

    assert response.status_code == 302
    assert list(Connector.objects.values_list("name", flat=True)) == ["exec-slack"]


@pytest.mark.parametrize("who", ["auditor", "operator"])
def test_only_platform_owners_change_connectors(request, who):
    # given a viewer (view_connector only) and a stored connector
    user = request.getfixturevalue(who)
    connector = make_connector("exec-slack", SLACK_URL, kind="slack")
    client = _admin(user)
    before = closure_counts()

    # when they open it, then try to add or change one
    view = client.get(f"/admin/closure/connector/{connector.pk}/change/")
    change = client.post(
        f"/admin/closure/connector/{connector.pk}/change/",
        _form(name="exec-slack", kind="slack", url="https://evil.example/x"),
    )
    add = client.post("/admin/closure/connector/add/", _form(name="x", kind="slack", url=SLACK_URL))

    # then they see the status only, and every write is forbidden
    assert view.status_code == 200
    assert 'name="url"' not in view.content.decode()
    assert SLACK_URL not in view.content.decode()
    assert (change.status_code, add.status_code) == (403, 403)
    assert closure_counts() == before
    connector.refresh_from_db()
    assert connector.private_config == {"url": SLACK_URL}


# -- bootstrap from a file --------------------------------------------------------------------


def _bootstrap_file(tmp_path, connectors) -> str:
    path = tmp_path / "connectors.json"
    path.write_text(json.dumps({"connectors": connectors}))
    return str(path)


EVERY_KIND = [
    {
        "name": "exec-webhook",
        "kind": "webhook",
        "description": "Executive webhook",
        "config": {"url": "https://hooks.example.com/cavra", "signing_secrets": ["PLACEHOLDER"]},
    },
    {"name": "exec-slack", "kind": "slack", "config": {"url": SLACK_URL}},
    {
        "name": "exec-teams",
        "kind": "teams",
        "accepted_counts_as_delivered": True,
        "config": {"url": TEAMS_URL},
    },
    {"name": "exec-pd", "kind": "pagerduty", "config": {"routing_key": "PLACEHOLDER"}},
    {
        "name": "exec-mail",
        "kind": "email",
        "enabled": False,
        "config": {"recipients": ["cfo@example.com"], "from_email": "cavra@example.com"},
    },
]


@pytest.fixture
def every_kind():
    entries = json.loads(json.dumps(EVERY_KIND))
    entries[0]["config"]["signing_secrets"] = [whsec()]
    entries[3]["config"]["routing_key"] = routing_key()
    return entries


def test_bootstrap_creates_every_kind_then_is_idempotent(
    platform_owner, tmp_path, settings, capsys, every_kind
):
    # given a file of five connectors named by CAVRA_CONNECTORS_FILE
    settings.CAVRA_CONNECTORS_FILE = _bootstrap_file(tmp_path, every_kind)

    # when it is loaded twice
    call_command("bootstrap_connectors", "--user", "petra")
    first = capsys.readouterr().out
    evidence_after_first = Evidence.objects.count()
    call_command("bootstrap_connectors", "--user", "petra")
    second = capsys.readouterr().out

    # then the connectors match the file, and the second load changed nothing
    assert first.splitlines() == [f"{e['name']}: created" for e in every_kind]
    assert second.splitlines() == [f"{e['name']}: unchanged" for e in every_kind]
    assert evidence_after_first == 5
    assert Evidence.objects.count() == 5
    stored = {c.name: c for c in Connector.objects.all()}
    assert stored["exec-webhook"].private_config == every_kind[0]["config"]
    assert stored["exec-teams"].accepted_counts_as_delivered is True
    assert stored["exec-mail"].enabled is False
    assert stored["exec-pd"].private_config == every_kind[3]["config"]


def test_bootstrap_updates_what_changed(platform_owner, tmp_path, capsys, every_kind):
    path = _bootstrap_file(tmp_path, every_kind)
    call_command("bootstrap_connectors", "--user", "petra", "--file", path)
    capsys.readouterr()
    every_kind[1]["config"]["url"] = SLACK_URL.replace("abcdef", "zyxwvu")
    path = _bootstrap_file(tmp_path, every_kind)

    call_command("bootstrap_connectors", "--user", "petra", "--file", path)

    assert "exec-slack: updated" in capsys.readouterr().out.splitlines()
    assert _changes("exec-slack")[-1]["changed_config_keys"] == ["url"]


def test_bootstrap_refuses_an_invalid_file_whole_and_never_echoes_values(
    platform_owner, tmp_path, every_kind
):
    # given a file whose fourth entry has a bad key and whose second has an unknown field
    every_kind[3]["config"]["routing_key"] = "leaky-secret-value"
    every_kind[1]["colour"] = "blue"
    path = _bootstrap_file(tmp_path, every_kind)
    before = closure_counts()

    # when it is loaded
    with pytest.raises(CommandError) as raised:
        call_command("bootstrap_connectors", "--user", "petra", "--file", path)

    # then nothing is written and the error names paths and rules only
    message = str(raised.value)
    assert "connectors.1.colour: Unknown field." in message
    assert "connectors.3.config.routing_key: Must be the 32-character integration key." in message
    assert "leaky-secret-value" not in message
    assert closure_counts() == before


def test_bootstrap_needs_a_platform_owner(operator, tmp_path, every_kind):
    path = _bootstrap_file(tmp_path, every_kind)

    with pytest.raises(CommandError, match="olivia lacks the add/change_connector permissions"):
        call_command("bootstrap_connectors", "--user", "olivia", "--file", path)
    assert Connector.objects.count() == 0


# -- key rotation -----------------------------------------------------------------------------


def test_reencrypt_moves_every_connector_to_the_newest_key(platform_owner, settings, capsys):
    # given connectors encrypted with the old key
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CAVRA_CONNECTOR_KEYS = [old_key]
    make_connector("exec-slack", SLACK_URL, kind="slack")
    make_connector("exec-pd", kind="pagerduty", routing_key=routing_key())
    make_connector("no-config", kind="slack")
    before = {c.name: (c.config_fingerprint, c.config_changed_at) for c in Connector.objects.all()}

    # when a new key is prepended and the command runs
    settings.CAVRA_CONNECTOR_KEYS = [new_key, old_key]
    call_command("reencrypt_connectors", "--user", "petra")

    # then the new key alone decrypts everything, and nothing else about them changed
    assert capsys.readouterr().out.strip() == (
        "re-encrypted 2 connector(s) with the newest key: exec-slack, exec-pd"
    )
    settings.CAVRA_CONNECTOR_KEYS = [new_key]
    assert Connector.objects.get(name="exec-slack").private_config == {"url": SLACK_URL}
    assert len(Connector.objects.get(name="exec-pd").private_config["routing_key"]) == 32
    after = {c.name: (c.config_fingerprint, c.config_changed_at) for c in Connector.objects.all()}
    assert after == before
    # and each re-encryption is evidence naming the new key's public ID
    rows = [_changes(name)[-1] for name in ("exec-slack", "exec-pd")]
    assert [(r["change"], r["key_id"]) for r in rows] == [("reencrypted", key_id())] * 2
    assert new_key not in json.dumps(rows)


def test_reencrypt_changes_nothing_when_a_connector_cannot_be_decrypted(platform_owner, settings):
    settings.CAVRA_CONNECTOR_KEYS = [Fernet.generate_key().decode()]
    make_connector("exec-slack", SLACK_URL, kind="slack")
    settings.CAVRA_CONNECTOR_KEYS = [Fernet.generate_key().decode()]  # the old key was lost
    make_connector("exec-teams", TEAMS_URL, kind="teams")
    before = list(Connector.objects.order_by("pk").values_list("config_ciphertext", flat=True))

    with pytest.raises(
        CommandError, match="cannot be decrypted with CAVRA_CONNECTOR_KEYS: exec-slack"
    ):
        call_command("reencrypt_connectors", "--user", "petra")

    assert (
        list(Connector.objects.order_by("pk").values_list("config_ciphertext", flat=True)) == before
    )
    assert Evidence.objects.count() == 0


# -- system checks ----------------------------------------------------------------------------


def test_system_checks_refuse_unsafe_connector_settings(settings):
    settings.DEBUG = False
    settings.CAVRA_ALLOW_LOOPBACK_CONNECTORS = True
    settings.CAVRA_RETRY_AFTER_MAX_SECONDS = -1
    settings.MAILERS = {"default": {"OPTIONS": {"use_tls": True, "use_ssl": True}}}

    ids = sorted(m.id for m in run_checks() if m.id.startswith("closure.E"))

    assert ids == ["closure.E001", "closure.E002", "closure.E003"]


def test_run_demo_also_loads_the_connectors_file(db, tmp_path, settings, capsys, every_kind):
    # given CAVRA_CONNECTORS_FILE names a file of five connectors
    settings.CAVRA_CONNECTORS_FILE = _bootstrap_file(tmp_path, every_kind)

    # when the demo loads
    call_command("run_demo", "--no-serve", "--receiver-port", "0")

    # then the demo's two webhooks and the file's five connectors exist, signed by the owner
    assert sorted(Connector.objects.values_list("name", flat=True)) == sorted(
        [
            "backup-webhook",
            "exec-webhook",
            *[e["name"] for e in every_kind if e["name"] != "exec-webhook"],
        ]
    )
    assert Connector.objects.get(name="exec-webhook").private_config == every_kind[0]["config"]
    assert "exec-pd: created" in capsys.readouterr().out
    assert set(
        Evidence.objects.filter(metadata_kind=MetadataKind.CONNECTOR_CHANGE).values_list(
            "signer", flat=True
        )
    ) == {"owner"}


CHANGELIST_QUERIES = 5


@pytest.mark.parametrize("count", [2, 20])
def test_connector_changelist_query_count_does_not_grow(
    platform_owner, django_assert_num_queries, count
):
    for number in range(count):
        make_connector(f"hook-{number:02d}", f"https://hooks.example.com/{number}")
    client = _admin(platform_owner)
    client.get("/admin/closure/connector/")  # warm the session and permission caches

    # the session, the user, the permissions (one query), the paginator's count,
    # the page of connectors (the kind and enabled filters are choices: no query)
    with django_assert_num_queries(CHANGELIST_QUERIES, exact=True):
        response = client.get("/admin/closure/connector/")

    assert response.status_code == 200
    assert response.content.decode().count("/change/") >= count
