"""API token lifecycle: create, list and revoke through the service, the management commands,
the admin (platform owners) and the console (a user's own tokens), each change as evidence."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from closure.choices import MetadataKind
from closure.evidence.ledger import evidence_verify
from closure.models import ApiToken, Evidence
from closure.models.accounts import hash_token
from closure.services.errors import Conflict, InvalidInput, NotFound
from closure.services.tokens import api_token_create, api_token_revoke
from tests.conftest import B, assert_problem, client_for
from tests.factories import make_user

pytestmark = pytest.mark.django_db

DASHBOARD = f"{B}/final-reporting-closure-dashboard"
ISSUED_AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def _bearer_get(raw: str):
    return Client().get(DASHBOARD, HTTP_AUTHORIZATION=f"Bearer {raw}")


def _refused(response) -> None:
    assert_problem(
        response,
        status=401,
        code="authentication_failed",
        title="Authentication failed",
        detail="Invalid, expired or revoked token.",
    )


def _token_rows() -> list[dict]:
    return list(ApiToken.objects.order_by("pk").values())


def _staff(user):
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return client_for(user)


# -- the service --------------------------------------------------------------------------------


def test_api_token_create_records_evidence_with_a_public_safe_subject(platform_owner, operator):
    # given a platform owner issuing a token for an operator, at a known time
    with time_machine.travel(ISSUED_AT, tick=False):
        # when the token is created
        issued = api_token_create(actor=platform_owner, user=operator, name="ci", days=7)

    # then the token is stored as its hash, and its evidence row names it without any secret
    token = issued.token
    assert token.token_sha256 == hash_token(issued.raw)
    assert token.expires_at == ISSUED_AT + timedelta(days=7)
    row = Evidence.objects.get()
    assert row == issued.evidence
    assert row.metadata_kind == MetadataKind.API_TOKEN
    assert row.session_id == f"gordackapitoken-{token.pk:016x}"
    assert row.signer == "petra"
    assert row.created_at == ISSUED_AT
    assert row.decision_count == 1
    assert row.payload["subject"] == {
        "change": "created",
        "token": {
            "token_id": f"gordackapitoken-{token.pk:016x}",
            "name": "ci",
            "token_prefix": issued.raw[:12],
            "owner": "olivia",
            "created_at": "2026-11-02T09:30:00.000000Z",
            "expires_at": "2026-11-09T09:30:00.000000Z",
            "revoked_at": None,
        },
    }
    stored = json.dumps(row.payload)
    assert issued.raw not in stored
    assert token.token_sha256 not in stored
    assert evidence_verify().ok is True


def test_api_token_revoke_records_evidence_and_the_api_then_refuses_the_token(operator):
    # given an operator's token that authenticates
    issued = api_token_create(actor=operator, user=operator, name="ci")
    assert _bearer_get(issued.raw).status_code == 200
    revoked_at = timezone.now().replace(microsecond=0)

    # when the operator revokes it
    revocation = api_token_revoke(actor=operator, token_pk=issued.token.pk, now=revoked_at)

    # then it is revoked, recorded as evidence, and refused by the API from then on
    token = ApiToken.objects.get()
    assert token.revoked_at == revoked_at
    row = Evidence.objects.order_by("sequence").last()
    assert row == revocation.evidence
    assert (row.metadata_kind, row.session_id, row.signer) == (
        MetadataKind.API_TOKEN,
        issued.token.token_id,
        "olivia",
    )
    assert row.payload["subject"]["change"] == "revoked"
    assert row.payload["subject"]["token"]["revoked_at"] == revoked_at.strftime(
        "%Y-%m-%dT%H:%M:%S.000000Z"
    )
    _refused(_bearer_get(issued.raw))
    assert Evidence.objects.count() == 2


def test_api_token_revoke_of_a_revoked_token_is_a_conflict_that_changes_nothing(operator):
    # given a revoked token
    issued = api_token_create(actor=operator, user=operator, name="ci")
    api_token_revoke(actor=operator, token_pk=issued.token.pk)
    before = (_token_rows(), Evidence.objects.count())

    # when it is revoked again
    with pytest.raises(Conflict) as refused:
        api_token_revoke(actor=operator, token_pk=issued.token.pk)

    # then the refusal says so, and neither the token nor the ledger changed
    assert refused.value.code == "api_token_already_revoked"
    assert refused.value.status == 409
    assert (_token_rows(), Evidence.objects.count()) == before


def test_api_token_revoke_for_an_owner_does_not_find_another_users_token(operator, auditor):
    # given the auditor's token
    issued = api_token_create(actor=auditor, user=auditor, name="audit")
    before = (_token_rows(), Evidence.objects.count())

    # when the operator tries to revoke it as their own
    with pytest.raises(NotFound) as refused:
        api_token_revoke(actor=operator, token_pk=issued.token.pk, owner=operator)

    # then it is not found, and it still works
    assert refused.value.code == "api_token_not_found"
    assert (_token_rows(), Evidence.objects.count()) == before
    assert _bearer_get(issued.raw).status_code == 200


@pytest.mark.parametrize(
    ("name", "days", "errors"),
    [
        ("  ", None, {"name": ["A name is required: say what the token is for."]}),
        ("x" * 101, None, {"name": ["At most 100 characters."]}),
        ("ci", 0, {"days": ["Between 1 and 3650 days."]}),
        ("ci", 3651, {"days": ["Between 1 and 3650 days."]}),
    ],
)
def test_api_token_create_refuses_a_bad_name_or_lifetime_and_writes_nothing(
    operator, name, days, errors
):
    with pytest.raises(InvalidInput) as refused:
        api_token_create(actor=operator, user=operator, name=name, days=days)

    assert refused.value.errors == errors
    assert ApiToken.objects.count() == 0
    assert Evidence.objects.count() == 0


def test_expired_token_fails_authentication_and_its_state_says_expired(operator):
    # given a token issued for one day
    issued = api_token_create(actor=operator, user=operator, name="short", days=1)
    later = timezone.now() + timedelta(days=1, seconds=1)

    # when it is used after its end
    with time_machine.travel(later, tick=False):
        response = _bearer_get(issued.raw)

    # then it is refused and listed as expired
    _refused(response)
    assert issued.token.state(later) == "expired"
    assert list(ApiToken.objects.expired(later)) == [issued.token]
    assert list(ApiToken.objects.active(later)) == []


# -- management commands ------------------------------------------------------------------------


def test_create_api_token_command_records_evidence_signed_by_the_command_line(operator, capsys):
    call_command("create_api_token", "olivia", "--name", "deploy bot", "--days", "3")

    captured = capsys.readouterr()
    raw = captured.out.strip()
    token = ApiToken.objects.get()
    assert token.token_sha256 == hash_token(raw)
    assert captured.err.strip() == (
        f"token {token.token_prefix}… expires {token.expires_at.isoformat()}"
    )
    row = Evidence.objects.get()
    assert (row.metadata_kind, row.signer, row.session_id) == (
        MetadataKind.API_TOKEN,
        "cavra-command-line",
        token.token_id,
    )
    assert row.payload["subject"]["token"]["name"] == "deploy bot"


def test_create_api_token_command_refuses_a_lifetime_beyond_ten_years(operator):
    with pytest.raises(CommandError, match=r"^days: Between 1 and 3650 days\.$") as refused:
        call_command("create_api_token", "olivia", "--days", "4000")

    assert refused.value.returncode == 1
    assert ApiToken.objects.count() == 0
    assert Evidence.objects.count() == 0


@pytest.fixture
def listed_tokens(operator, auditor):
    """Three tokens issued on 2026-11-02: the operator's active and revoked ones, the
    auditor's expired one (seen from 2026-11-10)."""
    with time_machine.travel(ISSUED_AT, tick=False):
        ci = api_token_create(actor=None, user=operator, name="ci", days=30).token
        old = api_token_create(actor=None, user=operator, name="old", days=30).token
        audit = api_token_create(actor=None, user=auditor, name="audit", days=1).token
    ApiToken.objects.filter(pk=ci.pk).update(last_used_at=ISSUED_AT + timedelta(hours=2))
    api_token_revoke(actor=None, token_pk=old.pk, now=ISSUED_AT + timedelta(days=1))
    return ci, old, audit


def test_list_api_tokens_shows_every_token_with_its_state_and_no_secret(listed_tokens, capsys):
    ci, old, audit = listed_tokens

    with time_machine.travel(ISSUED_AT + timedelta(days=8), tick=False):
        call_command("list_api_tokens")

    out = capsys.readouterr().out
    p = {token.name: token.token_prefix for token in listed_tokens}
    width = max(len("id"), *(len(str(token.pk)) for token in listed_tokens))
    assert out.splitlines() == [
        f"{'id'.ljust(width)}  prefix         name   owner   created               "
        "expires               last used             state",
        f"{str(audit.pk).ljust(width)}  {p['audit']}…  audit  arthur  2026-11-02T09:30:00Z  "
        "2026-11-03T09:30:00Z  -                     expired",
        f"{str(old.pk).ljust(width)}  {p['old']}…  old    olivia  2026-11-02T09:30:00Z  "
        "2026-12-02T09:30:00Z  -                     revoked",
        f"{str(ci.pk).ljust(width)}  {p['ci']}…  ci     olivia  2026-11-02T09:30:00Z  "
        "2026-12-02T09:30:00Z  2026-11-02T11:30:00Z  active",
    ]
    for token in ApiToken.objects.all():
        assert token.token_sha256 not in out


def test_list_api_tokens_filters_by_user_and_state(listed_tokens, capsys):
    ci, _old, _audit = listed_tokens

    # (seen a week after issue, while ci is still active)
    with time_machine.travel(ISSUED_AT + timedelta(days=8), tick=False):
        call_command("list_api_tokens", "--user", "olivia", "--state", "active")

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[1].split()[:4] == [str(ci.pk), f"{ci.token_prefix}…", "ci", "olivia"]


def test_list_api_tokens_says_when_there_is_none_and_refuses_an_unknown_user(operator, capsys):
    call_command("list_api_tokens", "--user", "olivia")
    assert capsys.readouterr().out == "No API tokens.\n"

    with pytest.raises(CommandError, match="no user named 'ghost'") as refused:
        call_command("list_api_tokens", "--user", "ghost")
    assert refused.value.returncode == 1


@pytest.mark.parametrize("reference", ["id", "prefix", "prefix…", "raw"])
def test_revoke_api_token_by_id_prefix_or_raw_value(operator, capsys, reference):
    # given two tokens
    issued = api_token_create(actor=None, user=operator, name="leaked")
    other = api_token_create(actor=None, user=operator, name="kept")
    argument = {
        "id": str(issued.token.pk),
        "prefix": issued.token.token_prefix,
        "prefix…": f"{issued.token.token_prefix}…",
        "raw": issued.raw,
    }[reference]

    # when one is revoked by reference
    call_command("revoke_api_token", argument)

    # then that one, and only that one, is revoked, and the ledger says so
    out = capsys.readouterr().out.strip()
    row = Evidence.objects.order_by("sequence").last()
    assert out == (
        f"revoked {issued.token.token_prefix}… (leaked) of olivia; evidence #{row.sequence}"
    )
    assert ApiToken.objects.get(pk=issued.token.pk).revoked_at is not None
    assert ApiToken.objects.get(pk=other.token.pk).revoked_at is None
    assert (row.signer, row.session_id) == ("cavra-command-line", issued.token.token_id)
    _refused(_bearer_get(issued.raw))


def test_revoke_api_token_refuses_unknown_ambiguous_and_revoked_tokens(operator):
    # given two tokens sharing a prefix, and a revoked one
    first = api_token_create(actor=None, user=operator, name="one").token
    second = api_token_create(actor=None, user=operator, name="two").token
    ApiToken.objects.filter(pk=second.pk).update(token_prefix=first.token_prefix)
    revoked = api_token_create(actor=None, user=operator, name="gone").token
    api_token_revoke(actor=None, token_pk=revoked.pk)
    before = (_token_rows(), Evidence.objects.count())

    # then an unknown, an ambiguous and a revoked reference are each a clear error, exit code 1
    expected = [
        ("999999", "no API token matches '999999'"),
        ("cavra_nosuch", "no API token matches 'cavra_nosuch'"),
        (
            "cavra_" + "x" * 40,
            "no API token matches 'cavra_xxxxxx…'",  # a raw value is never echoed whole
        ),
        (
            first.token_prefix,
            f"'{first.token_prefix}' matches more than one API token "
            f"(ids {first.pk}, {second.pk}): give the id",
        ),
        (
            str(revoked.pk),
            f"API token {revoked.token_prefix}… (gone) was already revoked at "
            f"{ApiToken.objects.get(pk=revoked.pk).revoked_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}",
        ),
    ]
    for argument, message in expected:
        with pytest.raises(CommandError) as refused:
            call_command("revoke_api_token", argument)
        assert (str(refused.value), refused.value.returncode) == (message, 1)
    # and nothing changed
    assert (_token_rows(), Evidence.objects.count()) == before


# -- the admin: platform owners -----------------------------------------------------------------


def _revoke_action(client, *tokens):
    return client.post(
        "/admin/closure/apitoken/",
        {"action": "revoke_selected", "_selected_action": [token.pk for token in tokens]},
    )


def test_admin_token_pages_and_revoke_action_are_refused_to_an_operator(operator):
    # given a token and a staff operator (who lacks manage_api_tokens)
    issued = api_token_create(actor=None, user=operator, name="ci")
    client = _staff(operator)
    before = (_token_rows(), Evidence.objects.count())

    # when the operator opens the token admin, its add page, and posts the revoke action
    pages = [
        client.get("/admin/closure/apitoken/").status_code,
        client.get("/admin/closure/apitoken/add/").status_code,
        client.get(f"/admin/closure/apitoken/{issued.token.pk}/change/").status_code,
        _revoke_action(client, issued.token).status_code,
    ]

    # then every one is refused and nothing changed
    assert pages == [403, 403, 403, 403]
    assert (_token_rows(), Evidence.objects.count()) == before
    assert _bearer_get(issued.raw).status_code == 200


def test_admin_revoke_action_revokes_the_selected_tokens_as_the_platform_owner(
    platform_owner, operator, auditor
):
    # given two active tokens, one already revoked and one not selected
    ci = api_token_create(actor=None, user=operator, name="ci")
    audit = api_token_create(actor=None, user=auditor, name="audit")
    gone = api_token_create(actor=None, user=operator, name="gone")
    api_token_revoke(actor=None, token_pk=gone.token.pk)
    kept = api_token_create(actor=None, user=operator, name="kept")
    sequence = Evidence.objects.order_by("sequence").last().sequence
    client = _staff(platform_owner)

    # when the platform owner revokes the first three
    response = _revoke_action(client, ci.token, audit.token, gone.token)

    # then the two active ones are revoked, signed by the platform owner; the revoked one is
    # reported and left as it was
    assert response.status_code == 302
    shown = [str(m) for m in response.wsgi_request._messages]
    gone_token = ApiToken.objects.get(pk=gone.token.pk)
    assert shown == [
        f"Not revoked: API token {gone_token.token_prefix}… (gone) was already revoked at "
        f"{gone_token.revoked_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}.",
        f"Revoked 2 tokens: {ci.token.token_prefix}… (ci), {audit.token.token_prefix}… (audit).",
    ]
    rows = Evidence.objects.filter(sequence__gt=sequence).order_by("sequence")
    assert [(r.session_id, r.signer, r.payload["subject"]["change"]) for r in rows] == [
        (ci.token.token_id, "petra", "revoked"),
        (audit.token.token_id, "petra", "revoked"),
    ]
    assert ApiToken.objects.get(pk=kept.token.pk).revoked_at is None
    _refused(_bearer_get(ci.raw))
    _refused(_bearer_get(audit.raw))
    assert _bearer_get(kept.raw).status_code == 200


def test_admin_creates_a_token_and_shows_its_raw_value_once(platform_owner, operator):
    client = _staff(platform_owner)

    # when the platform owner creates a token for the operator
    response = client.post(
        "/admin/closure/apitoken/add/", {"user": operator.pk, "name": "pipeline", "days": "5"}
    )

    # then the answer shows the raw token, uncached; it is stored as its hash, recorded as
    # evidence, and no later page shows it
    assert response.status_code == 200
    raw = response.context["raw_token"]
    assert f'value="{raw}"' in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get()
    assert (token.user, token.name, token.token_sha256) == (operator, "pipeline", hash_token(raw))
    assert (token.expires_at - token.created_at) == timedelta(days=5)
    row = Evidence.objects.get()
    assert (row.session_id, row.signer) == (token.token_id, "petra")
    for page in (f"/admin/closure/apitoken/{token.pk}/change/", "/admin/closure/apitoken/"):
        shown = client.get(page)
        assert shown.status_code == 200
        assert raw not in shown.content.decode()
        assert token.token_sha256 not in shown.content.decode()
    assert _bearer_get(raw).status_code == 200


def test_admin_token_change_page_edits_nothing(platform_owner, operator):
    issued = api_token_create(actor=None, user=operator, name="ci")
    client = _staff(platform_owner)
    before = _token_rows()

    response = client.post(
        f"/admin/closure/apitoken/{issued.token.pk}/change/", {"name": "renamed"}
    )
    deleted = client.post(f"/admin/closure/apitoken/{issued.token.pk}/delete/", {"post": "yes"})

    assert (response.status_code, deleted.status_code) == (403, 403)
    assert _token_rows() == before


# 3 auth (session, user, permissions in one query); the changelist's count; the page of tokens
# with their users joined. No count of the whole table, no query per row.
ADMIN_CHANGELIST_QUERIES = 5


@pytest.mark.parametrize("count", [2, 20])
def test_admin_token_changelist_query_count_does_not_grow(
    platform_owner, operator, django_assert_num_queries, count
):
    for number in range(count):
        api_token_create(actor=None, user=operator, name=f"ci-{number}")
    client = _staff(platform_owner)

    with django_assert_num_queries(ADMIN_CHANGELIST_QUERIES, exact=True):
        response = client.get("/admin/closure/apitoken/?state=active")

    assert response.status_code == 200
    assert response.context["cl"].result_count == count


# -- the console: a user's own tokens ----------------------------------------------------------


def test_console_lists_only_the_users_own_tokens(operator, auditor):
    mine = api_token_create(actor=None, user=operator, name="mine").token
    theirs = api_token_create(actor=None, user=auditor, name="theirs").token

    response = client_for(operator).get("/console/api-tokens/")

    assert response.status_code == 200
    assert [token for token, _state in response.context["rows"]] == [mine]
    page = response.content.decode()
    assert f"{mine.token_prefix}…" in page
    assert theirs.token_prefix not in page
    assert f'action="/console/api-tokens/{mine.pk}/revoke/"' in page


def test_console_creates_a_token_and_shows_its_raw_value_only_on_the_answer(operator):
    client = client_for(operator)

    # when the operator creates a token
    response = client.post("/console/api-tokens/", {"name": "laptop", "days": "2"})

    # then the answer shows the raw value once, uncached; it is stored as its hash and recorded
    assert response.status_code == 200
    raw = response.context["issued"].raw
    assert response.content.decode().count(raw) == 1
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get()
    assert (token.user, token.name, token.token_sha256) == (operator, "laptop", hash_token(raw))
    assert Evidence.objects.get().session_id == token.token_id
    # and never again: not on the list, not in the session
    listed = client.get("/console/api-tokens/")
    assert raw not in listed.content.decode()
    assert raw not in json.dumps(dict(client.session))
    assert _bearer_get(raw).status_code == 200


def test_console_create_refuses_a_bad_lifetime_and_writes_nothing(operator):
    response = client_for(operator).post("/console/api-tokens/", {"name": "x", "days": "0"})

    assert response.status_code == 400
    assert response.context["form"].errors == {
        "days": ["Ensure this value is greater than or equal to 1."]
    }
    assert ApiToken.objects.count() == 0
    assert Evidence.objects.count() == 0


def test_console_revokes_the_users_own_token(operator):
    issued = api_token_create(actor=None, user=operator, name="laptop")

    response = client_for(operator).post(f"/console/api-tokens/{issued.token.pk}/revoke/")

    assert response.status_code == 302
    assert response["Location"] == "/console/api-tokens/"
    row = Evidence.objects.order_by("sequence").last()
    assert [str(m) for m in response.wsgi_request._messages] == [
        f"Token {issued.token.token_prefix}… (laptop) revoked: it no longer authenticates. "
        f"Recorded as evidence #{row.sequence}."
    ]
    assert (row.signer, row.payload["subject"]["change"]) == ("olivia", "revoked")
    _refused(_bearer_get(issued.raw))


def test_console_cannot_revoke_another_users_token(operator, auditor):
    # given the auditor's token
    issued = api_token_create(actor=None, user=auditor, name="audit")
    before = (_token_rows(), Evidence.objects.count())

    # when the operator posts its revocation
    response = client_for(operator).post(f"/console/api-tokens/{issued.token.pk}/revoke/")

    # then it is not found, and nothing changed
    assert response.status_code == 404
    assert (_token_rows(), Evidence.objects.count()) == before
    assert _bearer_get(issued.raw).status_code == 200


def test_console_revoke_of_a_revoked_token_says_so_and_changes_nothing(operator):
    issued = api_token_create(actor=None, user=operator, name="laptop")
    api_token_revoke(actor=None, token_pk=issued.token.pk)
    before = (_token_rows(), Evidence.objects.count())

    response = client_for(operator).post(f"/console/api-tokens/{issued.token.pk}/revoke/")

    assert response.status_code == 302
    [message] = response.wsgi_request._messages
    assert message.level_tag == "error"
    assert str(message).startswith(f"Not revoked: API token {issued.token.token_prefix}…")
    assert (_token_rows(), Evidence.objects.count()) == before


def test_console_token_forms_need_the_csrf_token(operator):
    issued = api_token_create(actor=None, user=operator, name="laptop")
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    before = (_token_rows(), Evidence.objects.count())

    created = client.post("/console/api-tokens/", {"name": "x", "days": "1"})
    revoked = client.post(f"/console/api-tokens/{issued.token.pk}/revoke/")

    assert (created.status_code, revoked.status_code) == (403, 403)
    assert (_token_rows(), Evidence.objects.count()) == before


# 2 auth (session, user; the page needs no permission); the bounded count of the user's
# tokens; the page of them. No query per row.
CONSOLE_LIST_QUERIES = 4


@pytest.mark.parametrize("count", [2, 30])
def test_console_token_list_query_count_does_not_grow(
    operator, auditor, django_assert_num_queries, count
):
    for number in range(count):
        api_token_create(actor=None, user=operator, name=f"ci-{number}")
    api_token_create(actor=None, user=auditor, name="not listed")
    client = client_for(operator)

    with django_assert_num_queries(CONSOLE_LIST_QUERIES, exact=True):
        response = client.get("/console/api-tokens/")

    assert response.status_code == 200
    assert response.context["paginator"].count == count
    assert len(response.context["rows"]) == min(count, 25)


def test_every_signed_in_user_may_manage_own_tokens_but_not_anonymous_visitors(db):
    # given a user in no group
    nobody = make_user("nobody")

    # then they see their page, and an anonymous visitor is sent to sign in
    assert client_for(nobody).get("/console/api-tokens/").status_code == 200
    anonymous = Client().get("/console/api-tokens/")
    assert anonymous["Location"] == "/console/login/?next=/console/api-tokens/"


# -- concurrency (PostgreSQL) ---------------------------------------------------------------------

LOCK_DEADLINE_SECONDS = 10


def _waiting_for_a_row_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_revocation_waits_for_the_token_lock_and_then_sees_the_other_revocation(roles):
    # given a token whose row another revocation holds locked, not yet committed
    owner = make_user("olivia")
    token = api_token_create(actor=None, user=owner, name="ci").token
    locked, release = threading.Event(), threading.Event()
    outcome = {}

    def first_revocation():
        try:
            with transaction.atomic():
                ApiToken.objects.select_for_update().get(pk=token.pk)
                locked.set()
                release.wait(LOCK_DEADLINE_SECONDS)
                ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
        finally:
            connection.close()

    def second_revocation():
        try:
            api_token_revoke(actor=None, token_pk=token.pk)
            outcome["second"] = "revoked"
        except Conflict as exc:
            outcome["second"] = exc.code
        finally:
            connection.close()

    first = threading.Thread(target=first_revocation)
    first.start()
    assert locked.wait(LOCK_DEADLINE_SECONDS)
    second = threading.Thread(target=second_revocation)
    second.start()

    # when the second one has waited for the lock (a service that took none would not wait:
    # it would finish, revoking a second time) and the first one commits
    deadline = time.monotonic() + LOCK_DEADLINE_SECONDS
    while second.is_alive() and not _waiting_for_a_row_lock() and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    first.join(LOCK_DEADLINE_SECONDS)
    second.join(LOCK_DEADLINE_SECONDS)

    # then the second re-checked the locked row: a conflict, and no second evidence row
    assert outcome == {"second": "api_token_already_revoked"}
    assert list(Evidence.objects.values_list("payload__subject__change", flat=True)) == ["created"]
