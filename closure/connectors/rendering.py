"""What every human-facing kind (Slack, Teams, e-mail, PagerDuty) says about an alert.

One reading of the alert payload, so each kind shows the same facts: the health level, each
finding with its count, the counts behind them, and a link back to the console. Nothing here
is secret: the payload is public-safe by construction.
"""

from dataclasses import dataclass

from closure.connectors.base import AlertMessage

LEVEL_LABELS = {"critical": "CRITICAL", "warning": "WARNING", "healthy": "HEALTHY"}
EVENT_KIND_LABELS = {
    "report_delivery": "Report deliveries",
    "retry_plan": "Retry plans",
    "retry_worker_run": "Retry worker runs",
    "retry_execution": "Retry executions",
}
MAX_FINDINGS = 10


@dataclass(frozen=True)
class FindingLine:
    severity: str
    title: str
    message: str
    count: int


@dataclass(frozen=True)
class AlertView:
    level: str
    level_label: str
    title: str
    summary: str
    findings: list[FindingLine]
    more_findings: int
    facts: list[tuple[str, str]]
    console_url: str
    health_id: str
    alert_id: str
    delivery_id: str
    attempt_number: int
    generated_at: str

    @property
    def reference(self) -> str:
        return (
            f"Health report {self.health_id} · alert {self.alert_id} · delivery "
            f"{self.delivery_id} · attempt {self.attempt_number}"
        )

    def finding_text(self, finding: FindingLine) -> str:
        return f"{finding.severity.upper()} · {finding.title} ({finding.count}): {finding.message}"

    def plain_text(self) -> str:
        """The whole alert as plain text (e-mail body, Slack fallback, PagerDuty details)."""
        lines = [self.title, "", self.summary, ""]
        if self.findings:
            lines.append("Findings:")
            lines.extend(f"- {self.finding_text(f)}" for f in self.findings)
            if self.more_findings:
                lines.append(f"- and {self.more_findings} more in the console")
        else:
            lines.append("No findings: the report is healthy (this alert was sent on request).")
        lines.append("")
        lines.append("Counts:")
        lines.extend(f"- {label}: {value}" for label, value in self.facts)
        lines.extend(["", f"Open the CAVRA console: {self.console_url}", "", self.reference])
        return "\n".join(lines)


def _title(category: str) -> str:
    return category.replace("_", " ").capitalize() if category else "Finding"


def _count(number: int, singular: str, plural: str) -> str:
    return f"{number} {singular if number == 1 else plural}"


def alert_view(message: AlertMessage) -> AlertView:
    payload = message.payload
    level = str(payload.get("alert_level") or "healthy")
    label = LEVEL_LABELS.get(level, level.upper())
    raw_findings = [f for f in payload.get("findings") or [] if isinstance(f, dict)]
    findings = [
        FindingLine(
            severity=str(f.get("severity") or "warning"),
            title=_title(str(f.get("category") or "")),
            message=str(f.get("message") or "No detail recorded."),
            count=int(f.get("count") or 0),
        )
        for f in raw_findings[:MAX_FINDINGS]
    ]
    counts = payload.get("counts") or {}
    critical = int(counts.get("critical_findings") or 0)
    warning = int(counts.get("warning_findings") or 0)
    facts = [
        ("Health level", label),
        ("Findings", f"{len(raw_findings)} ({critical} critical, {warning} warning)"),
        ("Upstream events", str(int(counts.get("events") or 0))),
    ]
    for kind, by_status in sorted((counts.get("by_kind") or {}).items()):
        if isinstance(by_status, dict) and by_status:
            statuses = ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))
            facts.append((EVENT_KIND_LABELS.get(kind, _title(kind)), statuses))
    if findings:
        summary = (
            f"Executive report delivery and its retries are {level}: "
            f"{_count(len(raw_findings), 'finding', 'findings')}, led by "
            f"{findings[0].title.lower()}."
        )
    else:
        summary = "Executive report delivery and its retries are healthy: no findings."
    return AlertView(
        level=level,
        level_label=label,
        title=f"CAVRA {label}: executive delivery retry health",
        summary=summary,
        findings=findings,
        more_findings=max(0, len(raw_findings) - MAX_FINDINGS),
        facts=facts,
        console_url=str(payload.get("console_url") or ""),
        health_id=str(payload.get("health_id") or ""),
        alert_id=str(payload.get("alert_id") or ""),
        delivery_id=message.delivery_id,
        attempt_number=message.attempt_number,
        generated_at=str(payload.get("generated_at") or ""),
    )
