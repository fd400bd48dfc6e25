"""Idempotency-Key on POST endpoints."""

import pytest

from closure.models import Evidence, HealthReport, IdempotencyRecord
from tests.conftest import R

pytestmark = pytest.mark.django_db


def test_idempotency_replay_returns_stored_response_and_creates_nothing(api):
    # given a health report built with a key
    first = api.post(f"{R}/delivery-retry-health", {}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 201
    evidence_after_first = Evidence.objects.count()

    # when the same request is repeated with the same key
    again = api.post(f"{R}/delivery-retry-health", {}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    # then the stored response comes back and nothing new is written
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert HealthReport.objects.count() == 1
    assert Evidence.objects.count() == evidence_after_first


def test_idempotency_same_key_other_body_is_422(api):
    api.post(f"{R}/delivery-retry-health", {}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    response = api.post(
        f"{R}/delivery-retry-health",
        {"expected_interval_minutes": 30},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k-2",
    )

    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "idempotency_key_reused"
    assert HealthReport.objects.count() == 1


def test_idempotency_key_in_progress_is_409(api, operator):
    # given a request with this key that has not finished
    from closure.services.idempotency import idempotency_begin, request_fingerprint

    fingerprint = request_fingerprint(method="POST", path=f"{R}/delivery-retry-health", body={})
    idempotency_begin(user=operator, key="k-3", fingerprint=fingerprint)

    response = api.post(f"{R}/delivery-retry-health", {}, format="json", HTTP_IDEMPOTENCY_KEY="k-3")

    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_in_progress"
    assert HealthReport.objects.count() == 0


def test_idempotency_keys_are_scoped_per_user(api, auditor, roles):
    from tests.conftest import client_for
    from tests.factories import make_user

    other = client_for(make_user("second-operator", "operators"))
    api.post(f"{R}/delivery-retry-health", {}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    response = other.post(
        f"{R}/delivery-retry-health", {}, format="json", HTTP_IDEMPOTENCY_KEY="shared"
    )

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert HealthReport.objects.count() == 2
    assert IdempotencyRecord.objects.filter(key="shared").count() == 2


def test_idempotency_key_too_long_is_400(api):
    response = api.post(
        f"{R}/delivery-retry-health", {}, format="json", HTTP_IDEMPOTENCY_KEY="x" * 201
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_idempotency_key"
    assert HealthReport.objects.count() == 0
