"""Circuit breakers per connector, shared by all workers through row locks.

closed → (N consecutive failed attempts) → open for a cool-down → half_open: one probe attempt
→ closed on success, open again on failure. Every transition is written as evidence in the
transaction that causes it. A wave of attempts updates each connector's circuit once.
"""

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings

from closure.choices import CircuitState, MetadataKind
from closure.evidence.canonical import isoformat
from closure.evidence.ledger import EvidenceEntry, EvidenceFilters, evidence_append_many
from closure.models import ConnectorCircuit
from closure.services.common import signer_of

CIRCUIT_FIELDS = ["state", "consecutive_failures", "open_until", "probe_in_flight", "changed_at"]


def circuits_ensure(connector_pks) -> None:
    """Create missing circuit rows (closed) before a transaction locks them."""
    ConnectorCircuit.objects.bulk_create(
        [ConnectorCircuit(connector_id=pk) for pk in set(connector_pks)], ignore_conflicts=True
    )


def circuits_locked(connector_pks, *, create: bool = False) -> dict[int, ConnectorCircuit]:
    """Lock circuit rows (in primary-key order) inside the caller's transaction.

    With `create`, missing rows are created (closed) first; that costs a statement only when
    a connector has no circuit yet.
    """
    pks = set(connector_pks)
    circuits = {
        circuit.connector_id: circuit
        for circuit in ConnectorCircuit.objects.select_for_update(of=("self",))
        .select_related("connector")
        .only(*CIRCUIT_FIELDS, "connector__name")
        .filter(connector_id__in=pks)
        .order_by("pk")
    }
    if create and len(circuits) < len(pks):
        circuits_ensure(pks)
        return circuits_locked(pks)
    return circuits


def _values(circuit: ConnectorCircuit) -> tuple:
    return tuple(getattr(circuit, name) for name in CIRCUIT_FIELDS)


def circuits_snapshot(circuits: Iterable[ConnectorCircuit]) -> dict[int, tuple]:
    """The state of locked circuits before a wave is counted on them (see `circuits_save`)."""
    return {circuit.pk: _values(circuit) for circuit in circuits}


def circuits_save(circuits: Iterable[ConnectorCircuit], *, unchanged: dict[int, tuple]) -> None:
    """Write back the circuits a wave changed, one statement per changed circuit.

    A healthy connector's closed circuit is not changed by a delivered attempt, so the usual
    wave writes none.
    """
    for circuit in circuits:
        if _values(circuit) != unchanged[circuit.pk]:
            circuit.save(update_fields=CIRCUIT_FIELDS)


def _transition(
    circuit: ConnectorCircuit, state: str, *, actor, now: datetime, cause: str
) -> EvidenceEntry:
    """Move a locked circuit to `state` (in memory) and return the transition's evidence."""
    previous = circuit.state
    circuit.state = state
    circuit.changed_at = now
    if state == CircuitState.OPEN:
        circuit.open_until = now + timedelta(seconds=settings.CAVRA_CIRCUIT_COOLDOWN_SECONDS)
    elif state == CircuitState.CLOSED:
        circuit.open_until = None
        circuit.consecutive_failures = 0
    return EvidenceEntry(
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
    )


def circuit_would_admit(
    state: str, *, open_until: datetime | None, probe_in_flight: bool, now: datetime
) -> bool:
    """Whether `circuit_admit` would let an attempt through now, without taking anything: the
    dry run's prediction. A connector without a circuit row is closed."""
    if state == CircuitState.OPEN:
        return open_until is not None and now >= open_until
    if state == CircuitState.HALF_OPEN:
        return not probe_in_flight
    return True


def circuit_admit(circuit: ConnectorCircuit, *, actor, now: datetime) -> bool:
    """May an attempt go to this connector now? Takes the probe when the circuit half-opens."""
    if circuit.state == CircuitState.CLOSED:
        return True
    if circuit.state == CircuitState.OPEN:
        if now < circuit.open_until:
            return False
        half_open = _transition(
            circuit, CircuitState.HALF_OPEN, actor=actor, now=now, cause="cool_down_over"
        )
        evidence_append_many([half_open], now=now)
        circuit.probe_in_flight = False
    if circuit.probe_in_flight:
        return False
    circuit.probe_in_flight = True
    circuit.save()
    return True


def circuit_count(
    circuit: ConnectorCircuit, *, delivered: bool, actor, now: datetime
) -> list[EvidenceEntry]:
    """Count an attempt's outcome on a locked circuit (in memory; `circuits_save` writes it).

    Returns the evidence of the transition it caused, if any, for the caller's transaction.
    """
    circuit.probe_in_flight = False
    if delivered:
        circuit.consecutive_failures = 0
        if circuit.state != CircuitState.CLOSED:
            return [
                _transition(circuit, CircuitState.CLOSED, actor=actor, now=now, cause="delivered")
            ]
        return []
    circuit.consecutive_failures += 1
    if circuit.state == CircuitState.HALF_OPEN:
        return [_transition(circuit, CircuitState.OPEN, actor=actor, now=now, cause="probe_failed")]
    if (
        circuit.state == CircuitState.CLOSED
        and circuit.consecutive_failures >= settings.CAVRA_CIRCUIT_FAILURE_THRESHOLD
    ):
        return [
            _transition(
                circuit, CircuitState.OPEN, actor=actor, now=now, cause="consecutive_failures"
            )
        ]
    return []
