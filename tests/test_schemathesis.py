"""Property-based API testing against the committed OpenAPI schema, in-process (WSGI).

Every operation of openapi.yaml is called with at least 100 generated requests (valid and
invalid), authenticated as an operator with a bearer token, and each response is checked by
every Schemathesis check: no server error, status code, content type, headers and body as
documented, invalid input rejected, valid input accepted, authentication not ignored.
"""

import re
from pathlib import Path

import pytest
import schemathesis
from django.core import signals
from django.core.cache import cache
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from cavra.wsgi import application
from closure.models import ApiToken
from closure.roles import AUDITORS, OPERATORS, PLATFORM_OWNERS
from tests.factories import make_user

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"
EXAMPLES_PER_OPERATION = 100

# Statuses a valid request may get: not found, conflict with the current state, throttled.
POSITIVE_REFUSALS = {400, 404, 409, 429}
# Refusals of schema-valid input that depend on the stored state.
STATE_DEPENDENT_CODES = {"unknown_provider", "risk_notes_missing"}
# Fields whose validity depends on another field or on the ledger, or on a rule over a whole
# JSON value (the size and the NUL-free text of `details`; a time outside 2000 … 2100 or more
# than a day ahead, which a `date-time` format cannot bound), which OpenAPI 3.0 cannot say: a
# validation error of a schema-valid request may name only these.
CROSS_FIELD_PATHS = re.compile(
    r"^(dry_run|retry_policy|retry_policy\.(max_delay_minutes|retry_delay_minutes)"
    r"|events\.\d+\.(status|details|occurred_at)"
    r"|created_after|created_before|sequence_to|through_sequence)$"
)

schema = schemathesis.openapi.from_path(SCHEMA_PATH)
schema.config.update(base_url="http://localhost")
# In-process: every request (and every probe a check sends) goes to the WSGI application.
schema.app = application


@pytest.fixture(autouse=True)
def keep_the_test_connection():
    """The WSGI handler closes the database connection after each request, as in production;
    inside a test that would close the test's own transaction, so (like Django's test client)
    keep it open for the duration of the test."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(roles) -> dict[str, str]:
    # Every role at once, so that a 403 is never the reason an operation is not exercised.
    user = make_user("schemathesis", OPERATORS, AUDITORS, PLATFORM_OWNERS)
    _, raw = ApiToken.issue(user=user, name="schemathesis")
    cache.clear()
    return {"Authorization": f"Bearer {raw}"}


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_operation_conforms_to_schema(case, bearer):
    response = case.call(headers=bearer)
    # Every check but one runs as Schemathesis defines it. `positive_data_acceptance` runs
    # below with one refinement: a schema-valid request may still be refused with a 400 for a
    # reason a schema cannot express (a name that does not exist, a contradiction between
    # fields), and then only with one of the problem codes listed.
    case.validate_response(
        response,
        excluded_checks=[positive_data_acceptance],
        headers=bearer,
        transport_kwargs={"headers": bearer},
    )
    if case.meta is not None and case.meta.generation.mode.is_positive:
        assert response.status_code < 400 or response.status_code in POSITIVE_REFUSALS, (
            response.status_code,
            response.text[:500],
        )
        if response.status_code == 400:
            problem = response.json()
            # `{"dry_run": false}` without `execute` is a cross-field refusal with the code of
            # the reference implementation's fields (docs/migrating-from-reference.md).
            if problem["code"] in ("validation_error", "reference_field_unsupported"):
                assert all(CROSS_FIELD_PATHS.match(path) for path in problem["errors"]), problem
            else:
                assert problem["code"] in STATE_DEPENDENT_CODES, problem
