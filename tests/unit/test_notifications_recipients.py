"""The recipient directory: validation that names the file and the entry, and resolution by role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from notifications.recipients import Directory, DirectoryError, MissingRecipient

ROOT = Path(__file__).parents[2]
TEST_DIRECTORY = ROOT / "tests" / "data" / "recipients.yaml"


def _raw() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(TEST_DIRECTORY.read_text())
    return raw


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "recipients.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_shipped_example_and_the_test_directory_load() -> None:
    example = Directory.load(ROOT / "notifications" / "recipients.example.yaml")
    assert example.resolve("RXF", "patient_safety_lead").email == "patient.safety@rxf.example.nhs.uk"
    assert Directory.load(TEST_DIRECTORY).resolve(None, "cqc").name == "CQC intelligence team"


def test_every_example_address_is_fictional() -> None:
    text = (ROOT / "notifications" / "recipients.example.yaml").read_text()
    for line in text.splitlines():
        if "@" in line or "https://" in line:
            assert "example.nhs.uk" in line, line


def test_trust_roles_resolve_per_trust_and_prefer_the_audit_specific_lead_clinician() -> None:
    d = Directory.load(TEST_DIRECTORY)
    assert d.resolve("RXF", "lead_clinician").email == "lead@rxf.example.nhs.uk"
    assert d.resolve("RXF", "lead_clinician", audit="nela").email == "nela.lead@rxf.example.nhs.uk"
    assert d.resolve("7A1", "chief_executive").name == "Gareth Prif"


def test_national_and_audit_roles_resolve() -> None:
    d = Directory.load(TEST_DIRECTORY)
    assert d.resolve(None, "hiw").email == "outliers@hiw.example.nhs.uk"
    assert d.resolve("RXF", "nhs_england").email == "outliers@england.example.nhs.uk"
    assert d.resolve(None, "audit_clinical_lead", audit="nela").name == "Dr Alex Example"
    assert d.reply_contact("nela").email == "nela@example.nhs.uk"
    assert d.reply_contact("unknown-audit") == d.sender


def test_a_missing_role_says_which_entry_to_add() -> None:
    d = Directory.load(TEST_DIRECTORY)
    with pytest.raises(
        MissingRecipient,
        match=r"recipients\.yaml names no lead_clinician .* for RYJ.*organisations\.RYJ\.lead_clinician",
    ):
        d.resolve("RYJ", "lead_clinician")
    with pytest.raises(MissingRecipient, match="lists no organisation RAJ"):
        d.resolve("RAJ", "patient_safety_lead")
    with pytest.raises(MissingRecipient, match=r"audits\.npda\.audit_clinical_lead"):
        d.resolve(None, "audit_clinical_lead", audit="npda")


def test_a_webhook_only_contact_uses_the_webhook_channel() -> None:
    contact = Directory.load(TEST_DIRECTORY).resolve("RYJ", "patient_safety_lead")
    assert contact.channel == "webhook"
    assert contact.address == "https://risk.ryj.example.nhs.uk/hooks/signalbox"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["organisations"]["RXF"]["lead_clinician"].update(email="not-an-email"),
         r"organisations\.RXF\.lead_clinician\.email: .*'not-an-email' is not an email address"),
        (lambda r: r["organisations"]["RXF"]["medical_director"].pop("email"),
         r"organisations\.RXF\.medical_director: needs an email or a webhook"),
        (lambda r: r["organisations"]["RXF"].update(safety_lead={"name": "x", "email": "x@example.nhs.uk"}),
         r"organisations\.RXF\.safety_lead: is not a known key here"),
        (lambda r: r["organisations"].update(rxf={}),
         r"organisations: .*'rxf' is not an ODS code"),
        (lambda r: r["national"]["cqc"].update(webhook="ftp://cqc.example.nhs.uk"),
         r"national\.cqc\.webhook: .*is not an http\(s\) URL"),
        (lambda r: r.pop("sender"), r"sender: is missing"),
    ],
)  # fmt: skip
def test_validation_errors_name_the_file_and_the_entry(tmp_path: Path, change: Any, expected: str) -> None:
    raw = _raw()
    change(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(DirectoryError, match=expected) as caught:
        Directory.load(path)
    assert str(caught.value).startswith(str(path))


def test_unreadable_and_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="cannot read"):
        Directory.load(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [1\n")
    with pytest.raises(DirectoryError, match=r"bad\.yaml: the recipient directory is not valid YAML at line 2"):
        Directory.load(bad)
    bad.write_text("- a list\n")
    with pytest.raises(DirectoryError, match="mapping at the top level"):
        Directory.load(bad)
