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
