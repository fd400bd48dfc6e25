"""CI's dependency audit: pip-audit over the installed environment, with dated exceptions.

Exit 1 when a known vulnerability is found that no unexpired exception covers, or when an
exception has expired. When the vulnerability database cannot be reached (every dependency
comes back "could not be audited"), say so plainly and exit 0: the audit did not run, and
the log must not claim that it passed. CAVRA_AUDIT_REQUIRED=1 turns that case into a failure.

Exceptions live in .ci/audit-exceptions, one per line: `<vulnerability id> <until YYYY-MM-DD>
<reason>`; lines starting with # are comments.
"""

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXCEPTIONS = ROOT / ".ci" / "audit-exceptions"


def exceptions(today: datetime.date) -> tuple[set[str], list[str]]:
    active, expired = set(), []
    if not EXCEPTIONS.exists():
        return active, expired
    for line in EXCEPTIONS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        vuln_id, until, *_ = line.split(maxsplit=2)
        if datetime.date.fromisoformat(until) < today:
            expired.append(f"{vuln_id} (expired {until})")
        else:
            active.add(vuln_id)
    return active, expired


def main() -> int:
    active, expired = exceptions(datetime.datetime.now(datetime.UTC).date())
    pip_audit = Path(sys.executable).with_name("pip-audit")
    result = subprocess.run(  # noqa: S603 (fixed arguments)
        [str(pip_audit), "--local", "--progress-spinner", "off", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        print(f"dependency audit: pip-audit failed to run:\n{result.stderr}", file=sys.stderr)
        return 1
    dependencies = report["dependencies"]
    audited = [d for d in dependencies if "skip_reason" not in d]
    # The project itself is installed from this checkout and never in the database.
    skipped = [
        d["name"] for d in dependencies if "skip_reason" in d and d["name"] != "cavra-closure"
    ]
    found = [
        f"{d['name']} {d['version']}: {v['id']}"
        for d in audited
        for v in d.get("vulns", [])
        if v["id"] not in active and not set(v.get("aliases", [])) & active
    ]
    if expired:
        print("dependency audit: expired exceptions: " + ", ".join(expired), file=sys.stderr)
    if found:
        print("dependency audit: known vulnerabilities:\n  " + "\n  ".join(found), file=sys.stderr)
    if expired or found:
        return 1
    if not audited:
        print(
            f"dependency audit: NOT RUN - the vulnerability database could not be reached "
            f"({len(skipped)} dependencies could not be audited)."
        )
        return 1 if os.environ.get("CAVRA_AUDIT_REQUIRED") == "1" else 0
    print(
        f"dependency audit: {len(audited)} dependencies audited, no known vulnerabilities"
        + (f"; {len(skipped)} could not be audited: {', '.join(skipped)}" if skipped else "")
        + (f"; exceptions in force: {', '.join(sorted(active))}" if active else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
