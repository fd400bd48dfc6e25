"""Circuit breakers per connector, shared by all workers through row locks.

closed → (N consecutive failed attempts) → open for a cool-down → half_open: one probe attempt
→ closed on success, open again on failure. Every transition is written as evidence in the
transaction that causes it.
"""

from datetime import datetime, timedelta

from django.conf import settings

from closure.choices import CircuitState, MetadataKind
from closure.evidence import EvidenceFilters, evidence_append, isoformat
from closure.models import Connector, ConnectorCircuit
from closure.services.common import signer_of


def circuits_ensure(connector_pks) -> None:
    """Create missing circuit rows (closed) before a transaction locks them."""
    ConnectorCircuit.objects.bulk_create(
        [ConnectorCircuit(connector_id=pk) for pk in set(connector_pks)], ignore_conflicts=True
    )


def circuits_locked(connector_pks) -> dict[int, ConnectorCircuit]:
    """Lock circuit rows (in primary-key order) inside the caller's transaction."""
    return {
        circuit.connector_id: circuit
        for circuit in ConnectorCircuit.objects.select_for_update(of=("self",))
        .select_related("connector")
        .filter(connector_id__in=set(connector_pks))
        .order_by("pk")
    }


def _transition(circuit: ConnectorCircuit, state: str, *, actor, now: datetime, cause: str) -> None:
    previous = circuit.state
    circuit.state = state
    circuit.changed_at = now
    if state == CircuitState.OPEN:
        circuit.open_until = now + timedelta(seconds=settings.CAVRA_CIRCUIT_COOLDOWN_SECONDS)
    elif state == CircuitState.CLOSED:
        circuit.open_until = None
        circuit.consecutive_failures = 0
    evidence_append(
        kind=MetadataKind.CONNECTOR_CIRCUIT,
        session_id=circuit.connector.name,
        signer=signer_of(actor),
        subject={
            "provider": circuit.connector.name,
            "previous_state": previous,
            "state": state,
            "cause": cause,
            "consecutive_failures": circuit.consecutive_failures,
            "open_until": isoformat(circuit.open_until),
        },
        filters=EvidenceFilters(provider=circuit.connector.name),
        decision_count=1,
        blocked_count=int(state != CircuitState.CLOSED),
        now=now,
    )


def circuit_admit(circuit: ConnectorCircuit, *, actor, now: datetime) -> bool:
    """May an attempt go to this connector now? Takes the probe when the circuit half-opens."""
    if circuit.state == CircuitState.CLOSED:
        return True
    if circuit.state == CircuitState.OPEN:
        if now < circuit.open_until:
            return False
        _transition(circuit, CircuitState.HALF_OPEN, actor=actor, now=now, cause="cool_down_over")
        circuit.probe_in_flight = False
    if circuit.probe_in_flight:
        return False
    circuit.probe_in_flight = True
    circuit.save()
    return True


def circuit_record(*, connector: Connector, delivered: bool, actor, now: datetime) -> None:
    """Count an attempt's outcome; runs in the transaction that records the attempt."""
    circuits_ensure([connector.pk])
    circuit = circuits_locked([connector.pk])[connector.pk]
    circuit.probe_in_flight = False
    if delivered:
        if circuit.state != CircuitState.CLOSED:
            _transition(circuit, CircuitState.CLOSED, actor=actor, now=now, cause="delivered")
        circuit.consecutive_failures = 0
    else:
        circuit.consecutive_failures += 1
        if circuit.state == CircuitState.HALF_OPEN:
            _transition(circuit, CircuitState.OPEN, actor=actor, now=now, cause="probe_failed")
        elif (
            circuit.state == CircuitState.CLOSED
            and circuit.consecutive_failures >= settings.CAVRA_CIRCUIT_FAILURE_THRESHOLD
        ):
            _transition(
                circuit, CircuitState.OPEN, actor=actor, now=now, cause="consecutive_failures"
            )
    circuit.save()
