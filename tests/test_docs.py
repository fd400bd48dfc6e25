"""The README and docs/ stay true: relative links resolve and documented commands exist."""

import re
from pathlib import Path
from xml.etree import ElementTree

import pytest
from django.core.management import get_commands

from closure.choices import METADATA_KIND_PREFIX, MetadataKind

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
# [text](target) — the target up to the closing parenthesis, without a title.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
COMMAND = re.compile(r"manage\.py ([a-z_]+)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
SVG = "{http://www.w3.org/2000/svg}"
CODE_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _text(document: Path) -> str:
    return document.read_text(encoding="utf-8")


def _anchor(heading: str) -> str:
    """A heading's anchor as the repository host renders it: lower case, punctuation other than
    hyphens and underscores dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(document: Path) -> set[str]:
    headings = HEADING.findall(CODE_BLOCK.sub("", _text(document)))
    return {_anchor(heading) for heading in headings}


def _relative_links(document: Path) -> list[str]:
    prose = CODE_BLOCK.sub("", _text(document))
    return [
        target
        for target in LINK.findall(prose)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto: …
    ]


def _id(document: Path) -> str:
    return str(document.relative_to(ROOT))


def test_the_documents_exist():
    names = {_id(document) for document in DOCUMENTS}
    assert {"README.md", "docs/architecture.md", "docs/configuration.md"} <= names


def broken_links(document: Path) -> list[str]:
    broken = []
    for target in _relative_links(document):
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading with that anchor")
    return broken


def unknown_commands(document: Path) -> list[str]:
    return sorted(set(COMMAND.findall(_text(document))) - set(get_commands()))


@pytest.mark.parametrize("document", DOCUMENTS, ids=_id)
def test_relative_links_resolve(document):
    assert broken_links(document) == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=_id)
def test_documented_manage_commands_exist(document):
    assert unknown_commands(document) == []


def test_a_broken_link_and_an_unknown_command_are_caught(tmp_path):
    (tmp_path / "here.md").write_text(
        "# Here we go\n\n## `code` heading\n\n## Throughput (bench/worker_throughput.py)\n",
        encoding="utf-8",
    )
    document = tmp_path / "guide.md"
    document.write_text(
        "# Guide\n[ok](here.md) [ok](here.md#here-we-go) [ok](here.md#code-heading) "
        "[ok](here.md#throughput-benchworker_throughputpy) "
        "[ok](#guide) [gone](gone.md) [bad](here.md#nowhere) [web](https://example.com/x)\n\n"
        "Run `manage.py verify_evidence`, then `manage.py no_such_command`.\n"
        "```\n[in code](not-checked.md)\n```\n",
        encoding="utf-8",
    )

    assert broken_links(document) == [
        "gone.md: no such file",
        "here.md#nowhere: no heading with that anchor",
    ]
    assert unknown_commands(document) == ["no_such_command"]


def test_the_flow_diagram_names_the_five_steps_and_every_flow_evidence_kind():
    # The repository's own file, not untrusted input.
    svg = ElementTree.parse(ROOT / "docs" / "diagrams" / "closure-flow.svg").getroot()  # noqa: S314
    texts = ["".join(node.itertext()).strip() for node in svg.iter(f"{SVG}text")]
    steps = [text for text in texts if re.match(r"^\d · ", text)]
    assert steps == [
        "1 · Build health",
        "2 · Send alerts",
        "3 · Plan redelivery",
        "4 · Run retry worker",
        "5 · Closure dashboard",
    ]
    # The kinds sit in one group, abbreviated with F, R and H; a long one wraps onto a line
    # of its own that continues the one before.
    abbreviations = {
        "F": METADATA_KIND_PREFIX,
        "R": f"{METADATA_KIND_PREFIX}-recovery-executive-report-delivery",
        "H": f"{METADATA_KIND_PREFIX}-recovery-executive-report-delivery-retry-health",
    }
    (group,) = [g for g in svg.iter(f"{SVG}g") if g.get("id") == "evidence-kinds"]
    kinds: list[str] = []
    for line in ("".join(node.itertext()).strip() for node in group.iter(f"{SVG}text")):
        if line[0] in abbreviations:
            kinds.append(abbreviations[line[0]] + line[1:])
        else:
            kinds[-1] += line
    ack = [text for text in texts if text.startswith("Any time after step 2")]
    assert ack == [
        "Any time after step 2: Acknowledge → Acknowledgement (gordackexechealthack-…) "
        "+ H-alert-ack"
    ]
    assert abbreviations["H"] + "-alert-ack" == MetadataKind.ALERT_ACK
    assert kinds == [
        MetadataKind.HEALTH,
        MetadataKind.EVENT_INGEST,
        MetadataKind.ALERT_PLAN,
        MetadataKind.ALERT_DELIVERY,
        MetadataKind.RETRY_PLAN,
        MetadataKind.WORKER_RUN,
        MetadataKind.EXECUTION_RECORD,
        MetadataKind.CLOSURE_REVIEW,
        MetadataKind.READINESS_SUMMARY,
        MetadataKind.RUNBOOK_EXPORT,
    ]


# Settings read through these helpers name the variable as their first argument.
ENVIRONMENT_READ = re.compile(
    r"(?:os\.environ\.get|os\.environ\[|env_int|env_bool)\(?\"([A-Z0-9_]+)\""
)


def test_every_environment_variable_the_code_reads_is_in_the_deployment_table():
    sources = [*(ROOT / "cavra").rglob("*.py"), *(ROOT / "closure").rglob("*.py")]
    read = {name for path in sources for name in ENVIRONMENT_READ.findall(path.read_text())}
    deployment = _text(ROOT / "docs" / "deployment.md")
    table = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", deployment, re.MULTILINE))
    assert "DJANGO_SECRET_KEY" in read
    assert sorted(read - table) == []
