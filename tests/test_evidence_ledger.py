"""The ledger under attack: tampering of every kind is detected and named, signed checkpoints
catch a cut-off tail, and nothing changes evidence through the ORM or the admin."""

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command
from django.db import DatabaseError, IntegrityError, connection, transaction

from closure.choices import MetadataKind
from closure.evidence import chain
from closure.evidence import ledger as evidence
from closure.evidence.canonical import canonical_json, sha256_hex
from closure.evidence.chain import chain_hash
from closure.evidence.ledger import CheckpointClaim, evidence_verify
from closure.models import Evidence, EvidenceCheckpoint, EvidenceImmutableError
from closure.services.errors import Conflict
from closure.services.evidence import checkpoint_serialize, evidence_checkpoint_create
from tests.conftest import client_for, using_postgres
from tests.test_evidence import DELETE_ROW, SET_PAYLOAD, _append_rows, _tamper

pytestmark = pytest.mark.django_db

MOVE_SEQUENCE = "UPDATE closure_evidence SET sequence = %s WHERE sequence = %s"
SHIFT_FROM = "UPDATE closure_evidence SET sequence = sequence + %s WHERE sequence >= %s"
DELETE_CHECKPOINTS = "DELETE FROM closure_evidencecheckpoint"
CHECKPOINT_TRIGGER = "closure_evidencecheckpoint_append_only"


def _forge_row(*, sequence: int, previous_hash: str, signer: str = "mallory") -> Evidence:
    """A row whose own hashes are consistent, as someone who knows the scheme would write it.

    Inserting is not refused by any guard (appending is what the ledger is for)."""
    payload = {**Evidence.objects.get(sequence=1).payload, "signer": signer, "session_id": "forged"}
    payload_sha = sha256_hex(canonical_json(payload))
    return Evidence.objects.create(
        sequence=sequence,
        metadata_kind=MetadataKind.CLOSURE_REVIEW,
        session_id="forged",
        created_at=Evidence.objects.get(sequence=1).created_at,
        signer=signer,
        payload=payload,
        payload_sha256=payload_sha,
        previous_hash=previous_hash,
        chain_hash=chain_hash(previous_hash, payload_sha),
    )


def _rehash_from(sequence: int) -> None:
    """Rewrite every row from `sequence` on so that it links to the one before: the chain is
    consistent again, as after a thorough attacker's work."""
    previous = Evidence.objects.get(sequence=sequence - 1).chain_hash
    for row in Evidence.objects.filter(sequence__gte=sequence).order_by("sequence"):
        new_chain = chain_hash(previous, row.payload_sha256)
        _tamper(
            "UPDATE closure_evidence SET previous_hash = %s, chain_hash = %s WHERE sequence = %s",
            [previous, new_chain, row.sequence],
        )
        previous = new_chain


def _tamper_checkpoints(sql: str) -> None:
    with connection.cursor() as cursor:
        if using_postgres():
            cursor.execute(
                f"ALTER TABLE closure_evidencecheckpoint DISABLE TRIGGER {CHECKPOINT_TRIGGER}"
            )
        cursor.execute(sql)
        if using_postgres():
            cursor.execute(
                f"ALTER TABLE closure_evidencecheckpoint ENABLE TRIGGER {CHECKPOINT_TRIGGER}"
            )


# -- tampering, each detected and named ---------------------------------------------------------


def test_verify_names_the_sequence_of_an_altered_payload(evidence_key):
    # given five rows, the fourth altered behind the application's back
    rows = _append_rows(5)
    _tamper(SET_PAYLOAD, [json.dumps({**rows[3].payload, "decision_count": 7}), 4])

    # when the chain is verified
    result = evidence_verify()

    # then the fourth row is named
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 4, 3)
    assert result.problem == "payload does not match payload_sha256"


def test_verify_names_the_sequence_of_a_deleted_row(evidence_key):
    # given five rows, the third deleted
    _append_rows(5)
    _tamper(DELETE_ROW, [3])

    # when the chain is verified, then the missing sequence is named
    result = evidence_verify()
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 3, 2)
    assert result.problem == "sequence gap: expected 3"


def test_verify_names_the_sequence_where_rows_were_reordered(evidence_key):
    # given five rows, the second and third swapped (each keeps its own hashes)
    rows = _append_rows(5)
    _tamper(MOVE_SEQUENCE, [1000, 2])
    _tamper(MOVE_SEQUENCE, [2, 3])
    _tamper(MOVE_SEQUENCE, [3, 1000])
    assert Evidence.objects.get(sequence=2).chain_hash == rows[2].chain_hash

    # when the chain is verified
    result = evidence_verify()

    # then the first displaced position is named: its row does not link to the first row
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 2, 1)
    assert result.problem == "previous_hash does not match the preceding row"
    assert result.head == rows[0].chain_hash


def test_verify_names_the_row_after_a_forged_insertion(evidence_key):
    # given five rows, and a forged row slipped in at sequence 3 (the rest shifted up by one);
    # the forged row links correctly to the row before it
    rows = _append_rows(5)
    _tamper(SHIFT_FROM, [1000, 3])
    _tamper("UPDATE closure_evidence SET sequence = sequence - 999 WHERE sequence >= 1003", [])
    forged = _forge_row(sequence=3, previous_hash=rows[1].chain_hash)

    # when the chain is verified
    result = evidence_verify()

    # then the original third row, now at 4, no longer links to what precedes it
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 4, 3)
    assert result.problem == "previous_hash does not match the preceding row"
    assert result.head == forged.chain_hash


def test_verify_names_a_forged_row_that_does_not_link(evidence_key):
    # given five rows and a forged sixth that claims an arbitrary predecessor
    _append_rows(5)
    _forge_row(sequence=6, previous_hash="f" * 64)

    # when the chain is verified, then the forged row is named
    result = evidence_verify()
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 6, 5)
    assert result.problem == "previous_hash does not match the preceding row"


def test_verify_names_the_first_missing_sequence_when_the_tail_after_a_checkpoint_is_cut(
    evidence_key,
):
    # given five rows and a signed checkpoint of them
    rows = _append_rows(5)
    checkpoint = evidence_checkpoint_create()
    assert (checkpoint.head_sequence, checkpoint.chain_head) == (5, rows[-1].chain_hash)

    # when the last two rows are deleted, leaving a chain that is consistent on its own
    _tamper("DELETE FROM closure_evidence WHERE sequence >= %s", [4])
    result = evidence_verify()

    # then the cut is detected, and the first missing sequence named
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 4, 3)
    assert result.problem == (
        f"the chain ends at sequence 3, but the signed checkpoint of "
        f"{chain.isoformat(checkpoint.checkpointed_at)} covers up to sequence 5: "
        f"the tail was cut off"
    )
    assert result.as_dict()["checkpoint"]["matches_chain"] is False


def test_verify_without_a_checkpoint_cannot_see_a_cut_tail(evidence_key):
    # given five rows and no checkpoint, the last two deleted
    _append_rows(5)
    _tamper("DELETE FROM closure_evidence WHERE sequence >= %s", [4])

    # then the chain alone looks intact: this is the gap checkpoints close (docs/evidence.md)
    result = evidence_verify()
    assert (result.ok, result.count, result.first_broken_sequence) == (True, 3, None)


def test_verify_names_the_checkpoint_head_when_the_chain_was_rebuilt_under_it(evidence_key):
    # given a checkpoint of five rows, then a forged row inserted at 3 and every later row
    # rehashed so that the chain is consistent again
    rows = _append_rows(5)
    evidence_checkpoint_create()
    _tamper(SHIFT_FROM, [1000, 3])
    _tamper("UPDATE closure_evidence SET sequence = sequence - 999 WHERE sequence >= 1003", [])
    _forge_row(sequence=3, previous_hash=rows[1].chain_hash)
    _rehash_from(4)

    # when the chain is verified
    result = evidence_verify()

    # then the chain itself holds, but the row at the checkpoint's head is not the signed one
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 5, 5)
    assert result.problem.startswith("chain_hash differs from the signed checkpoint of ")
    assert result.problem.endswith(" at sequence 5")


def test_verify_refuses_a_checkpoint_not_signed_by_a_trusted_key(evidence_key):
    # given three rows and a checkpoint signed by someone else's key
    rows = _append_rows(3)
    stranger = Ed25519PrivateKey.generate()
    public = chain.public_key_b64(stranger)
    stamp = "2026-11-27T00:00:00.000000Z"
    message = chain.checkpoint_message(
        head_sequence=3,
        row_count=3,
        chain_head=rows[-1].chain_hash,
        checkpointed_at=stamp,
        key=chain.key_id(public),
    )
    EvidenceCheckpoint.objects.create(
        head_sequence=3,
        row_count=3,
        chain_head=rows[-1].chain_hash,
        checkpointed_at="2026-11-27T00:00:00Z",
        key_id=chain.key_id(public),
        public_key=public,
        signature=chain.sign(stranger, message),
    )

    # when the chain is verified
    result = evidence_verify()

    # then the checkpoint is refused, named by its head
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 3, 3)
    assert result.problem == (
        "the checkpoint at sequence 3 (database) is not signed by a trusted key"
    )
    assert result.as_dict()["checkpoint"]["signature_ok"] is False


def test_verify_accepts_a_checkpoint_of_a_rotated_key_listed_as_trusted(evidence_key, settings):
    # given a checkpoint signed with the previous key
    old_key = settings.CAVRA_EVIDENCE_SIGNING_KEY
    old_public = evidence_key
    _append_rows(2)
    evidence_checkpoint_create()

    # when the signing key is rotated, with the old public key still trusted
    settings.CAVRA_EVIDENCE_SIGNING_KEY = chain.private_key_to_b64(Ed25519PrivateKey.generate())
    settings.CAVRA_EVIDENCE_TRUSTED_PUBLIC_KEYS = [old_public]
    trusted = evidence_verify()
    # and when it is no longer trusted
    settings.CAVRA_EVIDENCE_TRUSTED_PUBLIC_KEYS = []
    untrusted = evidence_verify()

    # then the checkpoint verifies only while its key is trusted
    assert (trusted.ok, trusted.as_dict()["checkpoint"]["signature_ok"]) == (True, True)
    assert (untrusted.ok, untrusted.first_broken_sequence) == (False, 2)
    assert old_key != settings.CAVRA_EVIDENCE_SIGNING_KEY


def test_verify_with_a_checkpoint_kept_outside_detects_a_cut_that_also_removed_checkpoints(
    evidence_key, tmp_path
):
    # given a checkpoint of four rows, saved to a file by the command
    _append_rows(4)
    kept = tmp_path / "checkpoint.json"
    call_command("evidence_checkpoint", "--output", str(kept))
    # and an attacker who cuts the tail and deletes the stored checkpoints as well
    _tamper("DELETE FROM closure_evidence WHERE sequence >= %s", [3])
    _tamper_checkpoints(DELETE_CHECKPOINTS)
    assert evidence_verify().ok is True

    # when the chain is verified against the kept copy
    with pytest.raises(CommandError, match="evidence chain broken at sequence 3"):
        call_command("verify_evidence", "--checkpoint", str(kept))

    # then the copy reveals the cut
    claim = CheckpointClaim.from_dict(json.loads(kept.read_text()), source=str(kept))
    result = evidence_verify(external=(claim,))
    assert (result.ok, result.first_broken_sequence) == (False, 3)
    assert result.as_dict()["external_checkpoints"][0]["source"] == str(kept)


# -- checkpoints --------------------------------------------------------------------------------


def test_evidence_checkpoint_command_signs_and_stores_the_verified_head(evidence_key, capsys):
    # given three rows
    rows = _append_rows(3)

    # when a checkpoint is written
    call_command("evidence_checkpoint")

    # then it is stored, printed, and its signature verifies under the published key
    printed = json.loads(capsys.readouterr().out)
    checkpoint = EvidenceCheckpoint.objects.get()
    assert printed == checkpoint_serialize(checkpoint)
    assert (printed["head_sequence"], printed["row_count"]) == (3, 3)
    assert printed["chain_head"] == rows[-1].chain_hash
    assert printed["signature"]["public_key"] == evidence_key
    assert printed["signature"]["key_id"] == chain.key_id(evidence_key)
    message = CheckpointClaim.from_dict(printed, source="stdout").message()
    assert chain.signature_valid(evidence_key, message, printed["signature"]["value"])


def test_evidence_checkpoint_refuses_to_sign_a_broken_chain(evidence_key):
    # given a chain whose second row was altered
    rows = _append_rows(3)
    _tamper(SET_PAYLOAD, [json.dumps({**rows[1].payload, "signer": "mallory"}), 2])

    # when a checkpoint is requested, then it is refused and nothing is stored
    with pytest.raises(Conflict, match="evidence chain broken at sequence 2"):
        evidence_checkpoint_create()
    with pytest.raises(CommandError, match="evidence chain broken at sequence 2"):
        call_command("evidence_checkpoint")
    assert EvidenceCheckpoint.objects.count() == 0


def test_evidence_checkpoint_of_an_empty_ledger_covers_nothing(evidence_key):
    checkpoint = evidence_checkpoint_create()

    assert (checkpoint.head_sequence, checkpoint.chain_head) == (0, chain.GENESIS_HASH)
    assert evidence_verify().ok is True


def test_evidence_checkpoints_are_append_only(evidence_key):
    # given a checkpoint
    _append_rows(1)
    checkpoint = evidence_checkpoint_create()

    # when it is changed or deleted through the ORM, then every path is refused
    checkpoint.head_sequence = 9
    with pytest.raises(EvidenceImmutableError, match="evidence checkpoints are never updated"):
        checkpoint.save()
    with pytest.raises(EvidenceImmutableError, match="never deleted"):
        checkpoint.delete()
    with pytest.raises(EvidenceImmutableError, match="never updated"):
        EvidenceCheckpoint.objects.update(head_sequence=9)
    with pytest.raises(EvidenceImmutableError, match="never deleted"):
        EvidenceCheckpoint.objects.all().delete()
    assert EvidenceCheckpoint.objects.values_list("head_sequence", flat=True).get() == 1


@pytest.mark.postgres
def test_evidence_checkpoint_raw_sql_delete_is_refused_by_the_database_trigger(evidence_key):
    _append_rows(1)
    evidence_checkpoint_create()

    with (
        pytest.raises(DatabaseError, match="evidence checkpoints are append-only: DELETE refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(DELETE_CHECKPOINTS)

    assert EvidenceCheckpoint.objects.count() == 1


# -- the ORM and admin guards -------------------------------------------------------------------


def test_evidence_save_with_force_update_is_refused(evidence_key):
    # given a stored row, and a new instance carrying its primary key
    [row] = _append_rows(1)
    impostor = Evidence(pk=row.pk, **{f: getattr(row, f) for f in ("sequence", "payload")})

    # when it is saved as an update, then it is refused
    with pytest.raises(EvidenceImmutableError, match="never updated"):
        impostor.save(force_update=True)
    # and saved plainly, it is an INSERT that the primary key refuses; nothing is overwritten
    with pytest.raises(IntegrityError), transaction.atomic():
        Evidence(pk=row.pk, **_copy_fields(row, signer="mallory")).save()
    assert Evidence.objects.get(pk=row.pk).signer == "arthur"


def _copy_fields(row: Evidence, **changes) -> dict:
    fields = {
        f.name: getattr(row, f.name) for f in Evidence._meta.concrete_fields if f.name != "id"
    }
    return {**fields, **changes}


def test_evidence_base_manager_and_upserts_are_guarded(evidence_key):
    # given a stored row
    [row] = _append_rows(1)

    # then neither the base manager (used by related lookups and save) nor an upsert updates it
    with pytest.raises(EvidenceImmutableError, match="never updated"):
        Evidence._base_manager.filter(pk=row.pk).update(signer="mallory")
    with pytest.raises(EvidenceImmutableError, match="never deleted"):
        Evidence._base_manager.filter(pk=row.pk).delete()
    with pytest.raises(EvidenceImmutableError, match="never updated"):
        Evidence.objects.bulk_create(
            [Evidence(**_copy_fields(row, signer="mallory"))],
            update_conflicts=True,
            unique_fields=["sequence"],
            update_fields=["signer"],
        )
    assert Evidence.objects.get(pk=row.pk).signer == "arthur"


def test_admin_refuses_to_delete_or_change_evidence_even_for_a_superuser(superuser, evidence_key):
    # given a stored row and a superuser's admin session
    [row] = _append_rows(1)
    admin = client_for(superuser)

    # when the delete and change forms are posted
    deleted = admin.post(f"/admin/closure/evidence/{row.pk}/delete/", {"post": "yes"})
    changed = admin.post(f"/admin/closure/evidence/{row.pk}/change/", {"signer": "mallory"})

    # then both are forbidden and the row is unchanged
    assert deleted.status_code == 403
    assert changed.status_code == 403
    assert Evidence.objects.get(pk=row.pk).signer == "arthur"


def test_admin_refuses_to_add_evidence_or_bulk_delete_it_even_for_a_superuser(
    superuser, evidence_key
):
    # given two stored rows and a superuser's admin session
    rows = _append_rows(2)
    admin = client_for(superuser)
    changelist = "/admin/closure/evidence/"

    # when the add form is opened and posted, and the bulk delete action is posted
    add_form = admin.get(changelist + "add/")
    added = admin.post(changelist + "add/", {"sequence": 3, "signer": "mallory"})
    bulk = admin.post(
        changelist,
        {"action": "delete_selected", "_selected_action": [r.pk for r in rows], "post": "yes"},
    )
    page = admin.get(changelist)

    # then adding is forbidden, the action does not exist, and both rows remain unchanged
    assert (add_form.status_code, added.status_code) == (403, 403)
    assert bulk.status_code == 200  # the changelist again: no such action ran
    assert "delete_selected" not in page.content.decode()
    assert list(Evidence.objects.order_by("sequence").values_list("sequence", "signer")) == [
        (1, "arthur"),
        (2, "arthur"),
    ]
    assert evidence_verify().ok is True


@pytest.mark.postgres
def test_verify_names_a_payload_altered_by_a_superuser_who_skips_triggers(evidence_key):
    # given five rows, and a superuser who silences every trigger for the session
    # (session_replication_role = replica) instead of altering the table
    rows = _append_rows(5)
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute(
                SET_PAYLOAD["postgresql"],
                [json.dumps({**rows[1].payload, "signer": "mallory"}), 2],
            )
        finally:
            cursor.execute("SET session_replication_role = DEFAULT")

    # when the chain is verified, then the second row is named
    result = evidence_verify()
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 2, 1)
    assert result.problem == "payload does not match payload_sha256"
    assert Evidence.objects.get(sequence=2).payload["signer"] == "mallory"


# -- publishing the key and the verification ----------------------------------------------------


def test_verify_endpoint_reports_the_latest_checkpoint(auditor, evidence_key):
    # given three rows and a checkpoint of them, then one more row
    rows = _append_rows(3)
    checkpoint = evidence_checkpoint_create()
    _append_rows(1)

    # when an auditor verifies through the API
    response = client_for(auditor).get("/api/v1/evidence/verify/")

    # then the chain and the checkpoint are reported
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "count": 4,
        "head": Evidence.objects.get(sequence=4).chain_hash,
        "first_broken_sequence": None,
        "problem": None,
        "checkpoint": {
            "source": "database",
            "head_sequence": 3,
            "row_count": 3,
            "chain_head": rows[-1].chain_hash,
            "checkpointed_at": chain.isoformat(checkpoint.checkpointed_at),
            "key_id": chain.key_id(evidence_key),
            "signature_ok": True,
            "matches_chain": True,
        },
    }


def test_verify_endpoint_names_a_cut_tail(auditor, evidence_key):
    _append_rows(4)
    evidence_checkpoint_create()
    _tamper("DELETE FROM closure_evidence WHERE sequence >= %s", [4])

    body = client_for(auditor).get("/api/v1/evidence/verify/").json()

    assert (body["ok"], body["count"], body["first_broken_sequence"]) == (False, 3, 4)
    assert body["problem"].endswith("covers up to sequence 4: the tail was cut off")


def test_public_key_is_published_by_command_and_endpoint(auditor, evidence_key, capsys):
    expected = {
        "algorithm": "Ed25519",
        "key_id": chain.key_id(evidence_key),
        "public_key": evidence_key,
        "derived_development_key": False,
        "trusted_key_ids": [chain.key_id(evidence_key)],
    }

    call_command("evidence_public_key")
    assert json.loads(capsys.readouterr().out) == expected
    call_command("evidence_public_key", "--raw")
    assert capsys.readouterr().out.strip() == evidence_key
    response = client_for(auditor).get("/api/v1/evidence/public-key/")
    assert (response.status_code, response.json()) == (200, expected)


def test_public_key_endpoint_needs_authentication_and_evidence_view(outsider):
    anonymous = client_for(None).get("/api/v1/evidence/public-key/")
    stranger = client_for(outsider).get("/api/v1/evidence/public-key/")

    assert anonymous.status_code == 401
    assert stranger.status_code == 403


def test_evidence_keygen_prints_a_usable_key_pair(capsys, settings):
    call_command("evidence_keygen")

    generated = json.loads(capsys.readouterr().out)
    key = chain.private_key_from_b64(generated["CAVRA_EVIDENCE_SIGNING_KEY"])
    assert chain.public_key_b64(key) == generated["public_key"]
    assert generated["key_id"] == chain.key_id(generated["public_key"])
    assert len(base64.b64decode(generated["CAVRA_EVIDENCE_SIGNING_KEY"])) == 32


def test_checkpoint_list_is_newest_first_in_fixed_queries(
    auditor, evidence_key, django_assert_num_queries
):
    # given three checkpoints at growing heads
    for _ in range(3):
        _append_rows(1)
        evidence_checkpoint_create()
    reader = client_for(auditor)

    # when the list is read: session, user, permissions (the user's and its groups' in one
    # query), count, page
    with django_assert_num_queries(5):
        response = reader.get("/api/v1/evidence/checkpoints/")

    # then the newest head comes first
    body = response.json()
    assert body["count"] == 3
    assert [c["head_sequence"] for c in body["results"]] == [3, 2, 1]
    assert body["results"][0] == checkpoint_serialize(EvidenceCheckpoint.objects.first())


@pytest.mark.postgres
def test_verify_reads_the_ledger_without_the_statement_timeout(transactional_db, monkeypatch):
    # given a session whose statements time out after 5 s, like the application's
    _append_rows(2)
    seen = []
    stream = evidence.ledger_rows

    def spying_stream(rows, **options):
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            seen.append(cursor.fetchone()[0])
        yield from stream(rows, **options)

    monkeypatch.setattr(evidence, "ledger_rows", spying_stream)
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = '5s'")
    try:
        # when the chain is verified
        result = evidence_verify()
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            after = cursor.fetchone()[0]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET statement_timeout")

    # then its read ran with no timeout (its length grows with the ledger), and only its own
    # transaction did
    assert (result.ok, result.count) == (True, 2)
    assert (seen, after) == (["0"], "5s")


# -- verification from the latest signed checkpoint (release readiness) -------------------------


def test_verify_from_a_checkpoint_reports_a_cut_tail_exactly_as_a_full_pass(evidence_key):
    # given a checkpoint of five rows, then the last two deleted
    _append_rows(5)
    evidence_checkpoint_create()
    _tamper("DELETE FROM closure_evidence WHERE sequence >= %s", [4])

    # when the chain is verified from the checkpoint, and fully
    quick = evidence_verify(full=False)
    full = evidence_verify()

    # then both name the first missing sequence, with the same report
    assert (quick.ok, quick.first_broken_sequence, quick.count) == (False, 4, 3)
    assert quick.as_dict() == full.as_dict()
    assert quick.proven_through == 0


def test_verify_from_a_checkpoint_proves_its_head_and_reads_only_from_there(evidence_key):
    # given a checkpoint of three rows and two rows after it
    _append_rows(3)
    evidence_checkpoint_create()
    _append_rows(2)

    # when the chain is verified from the checkpoint
    result = evidence_verify(full=False)

    # then rows 1-3 rest on the checkpoint, and rows 3-5 were read
    assert (result.ok, result.count, result.proven_through) == (True, 5, 3)
    assert result.head == Evidence.objects.get(sequence=5).chain_hash
    assert result.as_dict()["checkpoint"]["matches_chain"] is True
    assert result.verified_rows().endswith("; rows 3-5 verified now")


def test_verify_accepts_payloads_whose_floats_orjson_writes_differently(evidence_key):
    # given rows whose canonical JSON has floats written in exponent form
    with transaction.atomic():
        evidence.evidence_append(
            kind=MetadataKind.CLOSURE_REVIEW,
            session_id="floats",
            signer="arthur",
            subject={"ratio": 5e-05, "tiny": 1.2618626328942063e-05, "plain": 0.5},
        )
    _append_rows(2)

    # when the chain is verified, then every row holds
    result = evidence_verify()
    assert (result.ok, result.count) == (True, 3)
    assert b"5e-05" in canonical_json(Evidence.objects.get(sequence=1).payload)
