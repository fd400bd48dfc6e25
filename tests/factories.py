"""Factories for the closure records used by the tests."""

import itertools
from datetime import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from closure.models import Connector, DeliveryEvent
from closure.services.events import event_body_sha256

_counter = itertools.count(1)


def make_user(username: str, *groups: str, **extra):
    user = get_user_model().objects.create_user(username=username, password="pw-for-tests-only")
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    for key, value in extra.items():
        setattr(user, key, value)
    if extra:
        user.save()
    return user


def make_connector(
    name: str, url: str = "", *, enabled: bool = True, kind: str = "webhook", **config
) -> Connector:
    connector = Connector(name=name, kind=kind, enabled=enabled)
    private = {"url": url, **config} if url else dict(config)
    if private:
        connector.set_private_config(private)
    connector.save()
    return connector


def event_body(*, kind: str, status: str, occurred_at: datetime | None = None, **fields) -> dict:
    """An API body for one delivery event."""
    number = next(_counter)
    occurred = occurred_at or timezone.now()
    return {
        "event_id": fields.pop("event_id", f"evt-{number:05d}"),
        "kind": kind,
        "status": status,
        "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
        **fields,
    }


def make_event(
    *, actor, kind: str, status: str, occurred_at: datetime | None = None, **fields
) -> DeliveryEvent:
    """Store an event directly (for tests of the health rules, not of ingest)."""
    event = {
        "event_id": fields.pop("event_id", f"evt-{next(_counter):05d}"),
        "kind": kind,
        "status": status,
        "occurred_at": occurred_at or timezone.now(),
        "provider": fields.pop("provider", ""),
        "run_id": fields.pop("run_id", ""),
        "executive_report_id": fields.pop("executive_report_id", ""),
        "schedule_enabled": fields.pop("schedule_enabled", None),
        "details": fields.pop("details", {}),
    }
    assert not fields, f"unknown event fields {fields}"
    return DeliveryEvent.objects.create(
        **event, body_sha256=event_body_sha256(event), ingested_by=actor
    )


# -- records built directly, for the API tests of lists, permissions and bad input ------------
# (added with tests/test_api_lists.py, tests/test_bad_input.py and tests/test_permissions.py)


def make_health_report(*, actor, alert_level: str = "critical", generated_at=None):
    from closure.models import HealthReport

    return HealthReport.objects.create(
        generated_at=generated_at or timezone.now(),
        generated_by=actor,
        alert_level=alert_level,
        alert_count=0 if alert_level == "healthy" else 1,
        findings=[],
        counts={},
        parameters={"expected_interval_minutes": 60, "stale_metadata_minutes": 180},
    )


def make_alert(*, report, actor, created_at=None, forced: bool = False, providers=()):
    from closure.models import HealthAlert

    return HealthAlert.objects.create(
        health=report,
        created_at=created_at or timezone.now(),
        created_by=actor,
        forced=forced,
        selected_providers=list(providers),
    )


def make_delivery(
    *,
    alert,
    connector,
    status: str = "failed",
    attempt_count: int = 1,
    created_at=None,
    **fields,
):
    """A delivery in `status`, with its attempt bookkeeping filled in consistently."""
    from closure.models import AlertDelivery

    created = created_at or timezone.now()
    defaults = {
        "last_attempt_at": created if attempt_count else None,
        "delivered_at": created if status == "delivered" else None,
        "suppression_reason": "waived" if status == "suppressed" else "",
    }
    return AlertDelivery.objects.create(
        alert=alert,
        connector=connector,
        provider=connector.name,
        status=status,
        attempt_count=attempt_count,
        created_at=created,
        updated_at=created,
        **{**defaults, **fields},
    )


def make_execution(
    *,
    delivery,
    actor,
    execution_status: str = "failed",
    attempt_number: int = 1,
    trigger: str = "initial",
    executed_at=None,
    **fields,
):
    from closure.models import ExecutionRecord

    if execution_status == "failed":
        fields.setdefault("error_class", "http_5xx")
        fields.setdefault("http_status", 500)
    return ExecutionRecord.objects.create(
        delivery=delivery,
        execution_status=execution_status,
        executed_at=executed_at or timezone.now(),
        executed_by=actor,
        provider=delivery.provider,
        attempt_number=attempt_number,
        trigger=trigger,
        execution_hash="0" * 64,
        **fields,
    )


def make_acknowledgement(*, alert, connector, actor, state: str = "acknowledged", at=None):
    from closure.models import Acknowledgement

    return Acknowledgement.objects.create(
        alert=alert,
        health=alert.health,
        connector=connector,
        provider=connector.name,
        state=state,
        acknowledged_at=at or timezone.now(),
        acknowledged_by=actor,
    )


def make_retry_plan(*, actor, alert_level: str = "healthy", generated_at=None):
    from closure.models import RetryPlan

    return RetryPlan.objects.create(
        generated_at=generated_at or timezone.now(),
        generated_by=actor,
        policy={"max_retry_attempts": 3},
        alert_level=alert_level,
    )


def make_decision(*, plan, delivery, action: str = "retry", status: str = "pending", **fields):
    from closure.models import RetryDecision

    fields.setdefault(
        "reason",
        {"retry": "retry_due", "wait": "backoff_pending"}.get(action, "max_attempts_reached"),
    )
    fields.setdefault("next_retry_at", timezone.now() if action != "suppress" else None)
    return RetryDecision.objects.create(
        plan=plan,
        delivery=delivery,
        action=action,
        status=status,
        retry_count=delivery.attempt_count,
        max_retry_attempts=3,
        retry_delay_minutes=15,
        **fields,
    )


def make_worker_run(
    *, actor, dry_run: bool = True, status: str = "no_work", started_at=None, **fields
):
    from closure.models import WorkerRun

    started = started_at or timezone.now()
    return WorkerRun.objects.create(
        dry_run=dry_run,
        status=status,
        started_at=started,
        finished_at=started,
        heartbeat_at=started,
        started_by=actor,
        **fields,
    )


def make_evidence(*, kind, session_id: str, signer: str, now=None, **filters):
    """Append one evidence row through the ledger (inside its own atomic block)."""
    from django.db import transaction

    from closure.evidence.ledger import EvidenceFilters, evidence_append

    with transaction.atomic():
        return evidence_append(
            kind=kind,
            session_id=session_id,
            signer=signer,
            subject={"session_id": session_id},
            filters=EvidenceFilters(**filters),
            now=now,
        )


# -- connectors of every kind (added with the connector tests) --------------------------------


def whsec(nbytes: int = 24) -> str:
    """A fresh Standard Webhooks secret."""
    import base64
    import secrets

    return "whsec_" + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def routing_key() -> str:
    """A fresh 32-character PagerDuty integration key."""
    import secrets

    return secrets.token_hex(16)


def make_kind_connector(kind: str, name: str, url: str = "", **config) -> Connector:
    """A connector of `kind` aimed at `url` (PagerDuty: its events URL; e-mail: no URL)."""
    if kind == "pagerduty":
        return make_connector(
            name,
            kind=kind,
            routing_key=config.pop("routing_key", None) or routing_key(),
            events_url=url,
            **config,
        )
    if kind == "email":
        config.setdefault("recipients", ["exec-team@example.com"])
        return make_connector(name, kind=kind, **config)
    return make_connector(name, url, kind=kind, **config)


# -- closure reviews (added with tests/test_closure_reviews.py) --------------------------------


def make_closure_review(*, actor, decision: str = "confirm_closed", **notes):
    """A review recorded through the service, so it has its snapshot and its evidence."""
    from closure.services.reviews import closure_review_create

    return closure_review_create(actor=actor, decision=decision, risk_notes=notes or None)
