"""Sending health alerts, acknowledging them, and an operator's waiver or manual retry."""

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from closure import models
from closure.choices import (
    ACK_KEEPS_DELIVERY_STATUSES,
    CLOSING_ACK_STATES,
    RECOVERABLE_DELIVERY_STATUSES,
    DecisionStatus,
    DeliveryStatus,
    ExecutionTrigger,
    MetadataKind,
    SuppressionReason,
)
from closure.evidence.canonical import isoformat, sha256_hex
from closure.evidence.ledger import EvidenceFilters, evidence_append
from closure.services.attempts import (
    attempt_claim,
    attempt_record,
    attempt_send,
    attempts_claim,
)
from closure.services.common import signer_of
from closure.services.errors import Conflict, InvalidInput, NotFound

DEFAULT_TIMEOUT_SECONDS = 10


def health_report_get(health_id: str | None) -> models.HealthReport:
    """The named report, or the latest one when no ID is given."""
    reports = models.HealthReport.objects.select_related("generated_by")
    if health_id:
        try:
            return reports.get(health_id=health_id)
        except models.HealthReport.DoesNotExist:
            raise NotFound(f"health report {health_id!r} does not exist") from None
    report = reports.newest_first().first()
    if report is None:
        raise NotFound("no health report has been built yet", code="no_health_report")
    return report


def unknown_providers(names: list[str]) -> InvalidInput:
    """The error for `provider` inputs that name no connector."""
    return InvalidInput(
        f"unknown provider: {', '.join(names)}",
        code="unknown_provider",
        errors={"provider": [f"Unknown connector: {name}." for name in names]},
    )


def connectors_resolve(provider: str) -> list[models.Connector]:
    """`all` (every connector) or a comma list of connector names; unknown names are an error."""
    names = [name.strip() for name in provider.split(",") if name.strip()]
    if not names:
        raise InvalidInput(
            "provider is empty", errors={"provider": ["Name at least one connector."]}
        )
    if names == ["all"]:
        return list(models.Connector.objects.order_by("name"))
    found = {c.name: c for c in models.Connector.objects.filter(name__in=names)}
    unknown = [name for name in names if name not in found]
    if unknown:
        raise unknown_providers(unknown)
    return [found[name] for name in dict.fromkeys(names)]


def alert_payload(report: models.HealthReport, alert_id: str) -> dict:
    """The public-safe message every connector renders: level, findings, counts, a link."""
    return {
        "type": "cavra.executive_retry_health_alert",
        "alert_id": alert_id,
        "health_id": report.health_id,
        "alert_level": report.alert_level,
        "alert_count": report.alert_count,
        "generated_at": isoformat(report.generated_at),
        "findings": report.findings,
        "counts": report.counts,
        "console_url": f"{settings.CAVRA_PUBLIC_BASE_URL.rstrip('/')}/console/",
    }


@dataclass
class AlertSendResult:
    alert: models.HealthAlert | None
    attempts: list[tuple[models.AlertDelivery, models.ExecutionRecord | None]] = field(
        default_factory=list
    )
    skipped_reason: str = ""

    @property
    def success(self) -> bool:
        """Every delivery reached its connector: delivered, or accepted where the connector
        counts an accepted alert as delivered."""
        return bool(self.attempts) and all(
            delivery.status == DeliveryStatus.DELIVERED
            or (
                delivery.status == DeliveryStatus.ACCEPTED
                and delivery.connector.accepted_counts_as_delivered
            )
            for delivery, _ in self.attempts
        )


def _connectors_select(
    report: models.HealthReport, connectors: list[models.Connector], *, since, force: bool
) -> tuple[list[models.Connector], list[dict]]:
    """The connectors to send to, and the suppressed ones with their reason: disabled, or
    alerted about this report since `since` (unless forced)."""
    recently_alerted = set(
        models.AlertDelivery.objects.filter(
            alert__health=report,
            alert__created_at__gte=since,
            connector__in=connectors,
        ).values_list("connector__name", flat=True)
    )
    selected, suppressed = [], []
    for connector in connectors:
        if not connector.enabled:
            suppressed.append({"provider": connector.name, "reason": "connector_disabled"})
        elif connector.name in recently_alerted and not force:
            suppressed.append({"provider": connector.name, "reason": "recently_alerted"})
        else:
            selected.append(connector)
    return selected, suppressed


def _alert_create(
    report: models.HealthReport,
    *,
    actor,
    selected: list[models.Connector],
    suppressed: list[dict],
    force,
    now,
) -> tuple[models.HealthAlert, list[models.AlertDelivery]]:
    """The alert and one pending delivery per selected connector."""
    alert = models.HealthAlert(
        health=report,
        created_at=now,
        created_by=actor,
        forced=force,
        selected_providers=[c.name for c in selected],
        suppressed_providers=suppressed,
    )
    alert.payload = alert_payload(report, alert.alert_id)
    alert.save()
    deliveries = models.AlertDelivery.objects.bulk_create(
        [
            models.AlertDelivery(
                alert=alert,
                connector=connector,
                provider=connector.name,
                created_at=now,
                updated_at=now,
            )
            for connector in selected
        ]
    )
    return alert, deliveries


def health_alert_send(
    *,
    actor,
    health_id: str | None,
    provider: str = "all",
    force: bool = False,
    suppression_window_minutes: int = 60,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> AlertSendResult:
    """Send a health report's alert to the selected connectors, one attempt each.

    A healthy report is not sent unless forced. A connector that already received an alert for
    this report within the suppression window, or that is disabled, is suppressed. The alert and
    its deliveries commit first; each connector is then called outside any transaction and its
    outcome recorded with its own evidence.
    """
    report = health_report_get(health_id)
    connectors = connectors_resolve(provider)
    if not report.is_degraded and not force:
        return AlertSendResult(alert=None, skipped_reason="health_report_healthy")
    now = timezone.now()
    since = now - timedelta(minutes=suppression_window_minutes)
    selected, suppressed = _connectors_select(report, connectors, since=since, force=force)
    with transaction.atomic(durable=True):
        alert, deliveries = _alert_create(
            report, actor=actor, selected=selected, suppressed=suppressed, force=force, now=now
        )
        claims = attempts_claim(
            deliveries=deliveries,
            owner=alert.alert_id,
            trigger=ExecutionTrigger.INITIAL,
            now=now,
            decision_pks=[None] * len(deliveries),
        )
        evidence_append(
            kind=MetadataKind.ALERT_PLAN,
            session_id=alert.alert_id,
            signer=signer_of(actor),
            subject={
                "alert_id": alert.alert_id,
                "health_id": report.health_id,
                "alert_level": report.alert_level,
                "forced": force,
                "selected_providers": alert.selected_providers,
                "suppressed_providers": suppressed,
                "delivery_ids": [d.delivery_id for d in deliveries],
                "suppression_window_minutes": suppression_window_minutes,
            },
            filters=EvidenceFilters(
                health_id=report.health_id, provider=",".join(alert.selected_providers)
            ),
            decision_count=len(connectors),
            blocked_count=len(suppressed),
            now=now,
        )

    return _initial_attempts(alert, claims, actor=actor, timeout_seconds=timeout_seconds)


def _initial_attempts(
    alert: models.HealthAlert, claims, *, actor, timeout_seconds: float
) -> AlertSendResult:
    """Each claimed delivery's first attempt, outside any transaction, recorded as it ends."""
    result = AlertSendResult(alert=alert)
    for claim in claims:
        outcome = attempt_send(claim, timeout_seconds=timeout_seconds)
        record = attempt_record(claim=claim, outcome=outcome, actor=actor)
        delivery = models.AlertDelivery.objects.select_related("connector").get(
            pk=claim.delivery_pk
        )
        result.attempts.append((delivery, record))
    return result


def _close_open_decisions(delivery_pks: list[int], now) -> int:
    """Supersede the open decisions of deliveries that no longer need them.

    Callers have checked that no attempt holds these deliveries' leases, so an `in_flight`
    decision among them belongs to an attempt that died.
    """
    return (
        models.RetryDecision.objects.filter(delivery_id__in=delivery_pks)
        .open()
        .update(status=DecisionStatus.SUPERSEDED, closed_at=now)
    )


def _operator_evidence(*, kind, session_id, actor, alert_id, health_id, provider, details, now):
    """The evidence row of one operator decision about a report's deliveries on a connector."""
    return evidence_append(
        kind=kind,
        session_id=session_id,
        signer=signer_of(actor),
        subject={"alert_id": alert_id, "health_id": health_id, "provider": provider, **details},
        filters=EvidenceFilters(health_id=health_id, provider=provider),
        decision_count=1,
        now=now,
    )


def _suppress_acknowledged(delivery_qs, now) -> list[str]:
    """Suppress the deliveries an acknowledgement closes, and supersede their open decisions;
    the public IDs of the suppressed deliveries."""
    lock_pending_decisions(delivery_qs.values("pk"))
    open_deliveries = list(
        delivery_qs.select_for_update(of=("self",))
        .exclude(status__in=ACK_KEEPS_DELIVERY_STATUSES)
        .order_by("pk")
    )
    # A delivery with an attempt in flight records that attempt's outcome itself.
    suppressed = [d for d in open_deliveries if not d.lease_is_held(now)]
    for delivery in suppressed:
        delivery.suppress(reason=SuppressionReason.ACKNOWLEDGED, note="", now=now)
    _close_open_decisions([d.pk for d in suppressed], now)
    return [d.delivery_id for d in suppressed]


def acknowledgement_create(
    *, actor, health_id: str, provider: str, state: str, external_ref: str = "", notes: str = ""
) -> models.Acknowledgement:
    """Record a recipient's acknowledgement of a report's alert on one connector.

    An `acknowledged` or `resolved` state closes the loop on that connector: deliveries of the
    report's alerts there that are not delivered are suppressed (reason acknowledged) and their
    pending retry decisions superseded.
    """
    report = health_report_get(health_id)
    try:
        connector = models.Connector.objects.get(name=provider)
    except models.Connector.DoesNotExist:
        raise unknown_providers([provider]) from None
    now = timezone.now()
    with transaction.atomic(durable=True):
        delivery_qs = models.AlertDelivery.objects.filter(alert__health=report, connector=connector)
        latest = delivery_qs.select_related("alert").order_by("-alert__created_at", "-id").first()
        if latest is None:
            raise Conflict(
                f"no alert of {report.health_id} was sent to {provider}",
                code="alert_not_sent",
            )
        ack = models.Acknowledgement.objects.create(
            alert=latest.alert,
            health=report,
            connector=connector,
            provider=connector.name,
            state=state,
            external_ref=external_ref,
            notes=notes,
            acknowledged_at=now,
            acknowledged_by=actor,
        )
        suppressed_ids = (
            _suppress_acknowledged(delivery_qs, now) if state in CLOSING_ACK_STATES else []
        )
        _operator_evidence(
            kind=MetadataKind.ALERT_ACK,
            session_id=ack.ack_id,
            actor=actor,
            alert_id=latest.alert.alert_id,
            health_id=report.health_id,
            provider=connector.name,
            details={
                "ack_id": ack.ack_id,
                "acknowledgement_state": state,
                "external_ref": external_ref,
                "notes_present": bool(notes),
                # The notes stay out of the ledger; their hash lets a records check see an edit.
                "notes_sha256": sha256_hex(notes),
                "suppressed_delivery_ids": suppressed_ids,
            },
            now=now,
        )
    return ack


def lock_pending_decisions(delivery_pks) -> None:
    """Lock the pending decisions of these deliveries, before the deliveries themselves.

    Lock order everywhere: pending decisions, then deliveries (in primary-key order), then an
    in-flight decision only while holding its delivery. The worker's claim follows the same
    order, so planners, operators and workers never wait on each other in a cycle.
    """
    list(
        models.RetryDecision.objects.select_for_update()
        .filter(delivery_id__in=delivery_pks)
        .pending()
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _delivery_locked(delivery_id: str) -> models.AlertDelivery:
    pk = (
        models.AlertDelivery.objects.filter(delivery_id=delivery_id)
        .values_list("pk", flat=True)
        .first()
    )
    if pk is None:
        raise NotFound(f"delivery {delivery_id!r} does not exist")
    lock_pending_decisions([pk])
    return (
        models.AlertDelivery.objects.select_for_update(of=("self",))
        .select_related("alert__health", "connector")
        .get(pk=pk)
    )


def _require_recoverable(delivery: models.AlertDelivery, action: str, now) -> None:
    if delivery.status not in RECOVERABLE_DELIVERY_STATUSES:
        raise Conflict(
            f"only failed, exhausted or accepted deliveries can be {action}; "
            f"{delivery.delivery_id} is {delivery.status}",
            code="delivery_not_recoverable",
        )
    if delivery.lease_is_held(now):
        raise Conflict(
            f"an attempt of {delivery.delivery_id} is in flight", code="attempt_in_flight"
        )


def delivery_waive(*, actor, delivery_id: str, reason: str) -> models.AlertDelivery:
    """An operator closes a failed or exhausted delivery without delivering it."""
    now = timezone.now()
    with transaction.atomic(durable=True):
        delivery = _delivery_locked(delivery_id)
        _require_recoverable(delivery, "waived", now)
        previous_status = delivery.status
        delivery.suppress(reason=SuppressionReason.WAIVED, note=reason, now=now)
        superseded = _close_open_decisions([delivery.pk], now)
        _operator_evidence(
            kind=MetadataKind.DELIVERY_WAIVER,
            session_id=delivery.delivery_id,
            actor=actor,
            alert_id=delivery.alert.alert_id,
            health_id=delivery.alert.health.health_id,
            provider=delivery.provider,
            details={
                "delivery_id": delivery.delivery_id,
                "previous_status": previous_status,
                "status": delivery.status,
                "suppression_reason": delivery.suppression_reason,
                "reason": reason,
                "attempt_count": delivery.attempt_count,
                "superseded_decisions": superseded,
            },
            now=now,
        )
    return delivery


def delivery_retry_now(
    *, actor, delivery_id: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> tuple[models.AlertDelivery, models.ExecutionRecord | None]:
    """A manual retry of one failed or exhausted delivery, now."""
    now = timezone.now()
    with transaction.atomic(durable=True):
        delivery = _delivery_locked(delivery_id)
        _require_recoverable(delivery, "retried", now)
        if not delivery.connector.enabled:
            raise Conflict(f"connector {delivery.provider} is disabled", code="connector_disabled")
        _close_open_decisions([delivery.pk], now)
        claim = attempt_claim(
            delivery=delivery,
            owner=f"manual:{actor.pk}",
            trigger=ExecutionTrigger.MANUAL,
            now=now,
        )
    outcome = attempt_send(claim, timeout_seconds=timeout_seconds)
    record = attempt_record(claim=claim, outcome=outcome, actor=actor)
    delivery.refresh_from_db()
    return delivery, record
