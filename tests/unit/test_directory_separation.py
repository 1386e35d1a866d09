"""No letter outside the formal space's regulator notices ever reaches a regulator, whatever the directory says.

Attacks the recipient directory from every side the issue names (letter case, +tags, subdomains, trailing
dots, IDNA spellings, display forms, whitespace, webhook userinfo/ports/upper case, duplicate YAML keys,
header injection, non-UTF-8 files) and then assumes it failed: a directory that slipped through validation
must still not get a learning-space or potential-alarm letter to a regulator (held with the reason).
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from notifications.channels.eml import EmlTransport
from notifications.recipients import Directory, DirectoryError, _DirectoryFile
from notifications.render import message_id_for, renderer_for
from schemas.signals import FormalRecipient
from services.db import Database
from services.letters import outbox
from services.letters.relay import deliver_due
from tests.support.samples import SAMPLE_PNG, sample_assessment, sample_notice
from tests.support.vouched import enqueue_vouched

DATA = Path(__file__).parents[1] / "data" / "recipients.yaml"
NOW = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
CQC = "outliers@cqc.example.nhs.uk"  # the test directory's national.cqc

# Where a non-regulator contact can sit in the directory: (path in the YAML, path named in the error).
LOCATIONS = [
    (("organisations", "RXF", "patient_safety_lead"), "organisations.RXF.patient_safety_lead"),
    (("organisations", "RXF", "lead_clinician"), "organisations.RXF.lead_clinician"),
    (("organisations", "RXF", "medical_director"), "organisations.RXF.medical_director"),
    (("organisations", "RXF", "chief_executive"), "organisations.RXF.chief_executive"),
    (("organisations", "RXF", "audits", "nela", "lead_clinician"), "organisations.RXF.audits.nela.lead_clinician"),
    (("audits", "nela", "audit_clinical_lead"), "audits.nela.audit_clinical_lead"),
    (("audits", "nela", "audit_supplier"), "audits.nela.audit_supplier"),
    (("sender",), "sender"),
]
REGULATOR_EMAILS = [
    CQC,  # the national entry itself
    "OUTLIERS@CQC.EXAMPLE.NHS.UK",  # letter case only
    "Outliers@Cqc.Example.Nhs.Uk",
    "outliers+learning@cqc.example.nhs.uk",  # plus-addressing
    "someone.else@cqc.example.nhs.uk",  # another mailbox in a national entry's domain
    "x@intel.cqc.example.nhs.uk",  # a subdomain of it
    "outliers@england.example.nhs.uk",
    "x@cqc.org.uk",  # the regulators' real domains, always
    "x@CQC.ORG.UK",
    "x@mail.cqc.org.uk",
    "x@england.nhs.uk",
    "x@team.ENGLAND.nhs.uk",
    "x@gov-wales.example.nhs.uk",
    "x@hiw.example.nhs.uk",
]
# Written so that the old shape check let them through, or so a mail system would still deliver to a regulator.
MALFORMED_EMAILS = [
    "x@cqc.org.uk.",  # trailing dot
    '"Trust" <x@cqc.org.uk>',  # display form
    "Trust <x@rxf.example.nhs.uk>",
    " x@cqc.org.uk",
    "x@cqc.org.uk ",
    "x@rxf.example.nhs.uk\n",  # a trailing newline passed the old regex
    "x@rxf.example.nhs.uk\r\nBcc: x@cqc.org.uk",
    "x@rxf.example.nhs.uk,x@cqc.org.uk",
    "x@cqc。org。uk",  # full-width dots: IDNA maps them to cqc.org.uk
    "x@сqc.org.uk",  # Cyrillic с
    "x@@cqc.org.uk",
    ".x@rxf.example.nhs.uk",
    "x..y@rxf.example.nhs.uk",
]
REGULATOR_WEBHOOKS = [
    "https://cqc.org.uk/hooks/signalbox",
    "https://HOOKS.CQC.ORG.UK:8443/x",
    "https://hooks.cqc.org.uk./x",  # trailing dot
    "https://hooks.cqc。org。uk/x",  # full-width dots
    "http://intel.cqc.example.nhs.uk/x",  # a national entry's domain
    "https://England.NHS.uk/x",
    "https://api.england.nhs.uk:443/x?trust=RXF",
]
MALFORMED_WEBHOOKS = [
    "https://trust@cqc.org.uk/x",  # userinfo: the host is cqc.org.uk
    "https://cqc.org.uk@risk.rxf.example.nhs.uk/x",  # userinfo: misleading, refused too
    "https://risk.rxf.example.nhs.uk/x\r\nHost: cqc.org.uk",
    "https://risk.rxf.example.nhs.uk/ x",
    "ftp://risk.rxf.example.nhs.uk/x",
    "https:///x",
    "https://risk.rxf.example.nhs.uk:99999/x",
    "https://risk..rxf.example.nhs.uk/x",
    'https://risk.rxf.example.nhs.uk/"x"',
]
ACCEPTED_LOOKALIKES = [
    "x@notcqc.org.uk",
    "x@evilcqc.org.uk",
    "x@cqc.org.uk.rxf.example.nhs.uk",
    "x@england.nhs.uk.rxf.example.nhs.uk",
    "x@rxf.example.nhs.uk",
    "x@nhs.uk",
    "x@nhs.net",
]
UNSAFE_NAMES = [
    "Sam\r\nBcc: x@cqc.org.uk",
    "Sam\nSafety",
    "Sam\rSafety",
    "Sam\x00Safety",
    "Sam\tSafety",
    "Sam\u2028Safety",  # line separator
    "Sam\u0085Safety",  # next line
    "Sam\u202eytefaS",  # right-to-left override
    "Sam\u200bSafety",  # zero-width space
    "Sam <x@cqc.org.uk>",
    '"Sam" Safety',
    "Sam\\Safety",
    "   ",
]


def _raw() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(DATA.read_text())
    return raw


def _set(raw: dict[str, Any], path: tuple[str, ...], contact: dict[str, Any]) -> None:
    node = raw
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = contact


def _refused(raw: dict[str, Any], *expected: str) -> str:
    with pytest.raises(DirectoryError) as caught:
        Directory.from_mapping(raw, source="dir.yaml")
    message = str(caught.value)
    assert message.startswith("dir.yaml: ")
    for part in expected:
        assert part in message, message
    return message


@pytest.mark.parametrize("address", REGULATOR_EMAILS)
@pytest.mark.parametrize(("path", "entry"), LOCATIONS)
def test_a_regulator_address_outside_national_is_refused_naming_the_entry(
    path: tuple[str, ...], entry: str, address: str
) -> None:
    raw = _raw()
    _set(raw, path, {"name": "Someone", "email": address})
    _refused(raw, f"{entry}: ", "regulator", "only under national")


@pytest.mark.parametrize("address", MALFORMED_EMAILS)
@pytest.mark.parametrize(("path", "entry"), LOCATIONS)
def test_an_address_that_is_not_one_bare_address_is_refused(path: tuple[str, ...], entry: str, address: str) -> None:
    raw = _raw()
    _set(raw, path, {"name": "Someone", "email": address})
    _refused(raw, f"{entry}.email: ")


@pytest.mark.parametrize("url", REGULATOR_WEBHOOKS)
@pytest.mark.parametrize(("path", "entry"), LOCATIONS[:5])
def test_a_webhook_on_a_regulator_host_is_refused(path: tuple[str, ...], entry: str, url: str) -> None:
    raw = _raw()
    _set(raw, path, {"name": "Risk register", "webhook": url})
    _refused(raw, f"{entry}: the webhook", "regulator domain")
    # With an ordinary email beside it the webhook is still refused: every address a contact has is checked.
    _set(raw, path, {"name": "Risk register", "email": "risk@rxf.example.nhs.uk", "webhook": url})
    _refused(raw, f"{entry}: the webhook")


@pytest.mark.parametrize("url", MALFORMED_WEBHOOKS)
def test_a_webhook_that_is_not_a_plain_url_is_refused(url: str) -> None:
    raw = _raw()
    _set(raw, ("organisations", "RYJ", "patient_safety_lead"), {"name": "Risk", "webhook": url})
    _refused(raw, "organisations.RYJ.patient_safety_lead.webhook: ")


@pytest.mark.parametrize("address", ACCEPTED_LOOKALIKES)
def test_look_alike_domains_that_are_not_a_regulators_are_accepted(address: str) -> None:
    raw = _raw()
    _set(raw, ("organisations", "RXF", "patient_safety_lead"), {"name": "Sam", "email": address})
    assert Directory.from_mapping(raw).resolve("RXF", "patient_safety_lead").email == address


@pytest.mark.parametrize("name", UNSAFE_NAMES)
@pytest.mark.parametrize(("path", "entry"), [*LOCATIONS[:1], *LOCATIONS[5:]])
def test_a_name_that_could_break_a_header_is_refused(path: tuple[str, ...], entry: str, name: str) -> None:
    raw = _raw()
    _set(raw, path, {"name": name, "email": "someone@rxf.example.nhs.uk"})
    _refused(raw, f"{entry}.name: ")


def test_declared_national_domains_are_regulators_too() -> None:
    raw = _raw()
    raw["national_domains"] = ["HIW.org.uk."]
    _set(raw, ("organisations", "7A1", "patient_safety_lead"), {"name": "Rhian", "email": "r@intel.hiw.org.uk"})
    _refused(raw, "organisations.7A1.patient_safety_lead: ", "hiw.org.uk")
    raw["national_domains"] = ["not a domain"]
    _refused(raw, "national_domains")


def test_on_nhsmail_only_the_regulators_exact_mailbox_is_a_regulators() -> None:
    raw = _raw()
    raw["national"]["cqc"] = {"name": "CQC", "email": "CQC.Outliers@nhs.net"}
    _set(raw, ("organisations", "RXF", "lead_clinician"), {"name": "Jo", "email": "jo.surgeon@nhs.net"})
    directory = Directory.from_mapping(raw)  # a trust on NHSmail is fine
    assert "nhs.net" not in directory.regulators.domains
    _set(raw, ("organisations", "RXF", "lead_clinician"), {"name": "Jo", "email": "cqc.outliers+rxf@NHS.NET"})
    _refused(raw, "organisations.RXF.lead_clinician: ", "regulator's mailbox")


def test_the_shipped_directories_pass() -> None:
    root = Path(__file__).parents[2]
    for path in ("notifications/recipients.example.yaml", "examples/recipients.yaml", "tests/data/recipients.yaml"):
        Directory.load(root / path)


# -- the file itself --------------------------------------------------------------------------------------------


DUPLICATE = """version: 1
sender: {name: s, email: s@example.nhs.uk}
organisations:
  RXF:
    patient_safety_lead: {name: Sam, email: safety@rxf.example.nhs.uk}
    patient_safety_lead: {name: Sam, email: safety@rxf.example.nhs.uk}
"""


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (DUPLICATE.encode(), r"the key 'patient_safety_lead' appears twice in one mapping"),
        (DUPLICATE.replace("RXF:\n", "RXF:\n    name: A\n    name: B\n").encode(), r"the key 'name' appears twice"),
        (b"version: 1\nversion: 1\n", r"the key 'version' appears twice"),
        ("version: 1\nsender: {name: Zoë, email: s@example.nhs.uk}\n".encode("latin-1"), r"is not UTF-8 text \(byte"),
        (b"\xff\xfeversion: 1\n", "is not UTF-8 text"),
        ("version: 1\nsender: {name: s, email: s@example.nhs.uk}\n".encode("utf-16"), "is not UTF-8 text"),
        (b"version: [1\n", r"is not valid YAML at line 2"),
        (b"version: 1\n\tsender: x\n", r"is not valid YAML at line"),
        (b"- a list\n", "mapping at the top level"),
        (b"", "mapping at the top level"),
        (b"version: !!python/object:os.system ls\n", "not valid YAML"),
    ],
)
def test_a_bad_directory_file_is_one_sentence_naming_the_file(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "recipients.yaml"
    path.write_bytes(content)
    with pytest.raises(DirectoryError, match=expected) as caught:
        Directory.load(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_a_byte_order_mark_is_not_part_of_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "recipients.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + DATA.read_bytes())
    assert Directory.load(path).sender.email == "signalbox@example.nhs.uk"


def test_a_non_utf8_directory_ends_route_and_deliver_with_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli.app import app, main

    bad = tmp_path / "recipients.yaml"
    bad.write_bytes(DATA.read_bytes().replace(b"Sam Safety", "Sám Safety".encode("latin-1")))
    events = tmp_path / "events.jsonl"
    events.write_text("")
    result = CliRunner().invoke(app, ["route", str(events), "--out", str(tmp_path / "out"), "--recipients", str(bad)])
    assert (result.exit_code != 0 and result.exception is None) or isinstance(result.exception, SystemExit)
    assert "is not UTF-8 text" in result.output and "Traceback" not in result.output

    from services.trail.store import Trail

    store = tmp_path / "trail.sqlite"
    with Database(store) as db:
        Trail(db)  # a store as `route` leaves it: `deliver` opens only a store holding a trail
    monkeypatch.setenv("SIGNALBOX_RECIPIENTS", str(bad))
    monkeypatch.setattr("sys.argv", ["signalbox", "deliver", "--store", str(store)])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"{bad}: the recipient directory is not UTF-8 text" in " ".join(err.split())
    assert "Traceback" not in err


# -- defence in depth: a directory that slipped through ---------------------------------------------------------


def _slipped(changes: dict[tuple[str, ...], dict[str, Any]]) -> Directory:
    """A directory built without the load-time separation check, as if it had slipped through."""
    raw = _raw()
    for path, contact in changes.items():
        _set(raw, path, contact)
        if path == ("organisations", "RXF", "lead_clinician"):  # RXF's NELA lead clinician comes first
            _set(raw, ("organisations", "RXF", "audits", "nela", "lead_clinician"), contact)
    return Directory(_DirectoryFile.model_validate(raw), "slipped.yaml")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "outbox.sqlite")
    outbox.ensure_schema(database)
    yield database
    database.close()


TRUST_LETTERS = [
    ("learning_alert", "patient_safety_lead"),
    ("learning_alert", "lead_clinician"),
    ("cusum_signal", "patient_safety_lead"),
    ("favourable_notice", "lead_clinician"),
    ("favourable_notice", "medical_director"),
    ("potential_alarm", "lead_clinician"),
    ("potential_alarm", "medical_director"),
    ("alarm_confirmation", "chief_executive"),
    ("reminder", "chief_executive"),
]
SLIPPED_ADDRESSES = [
    {"name": "x", "email": CQC},
    {"name": "x", "email": "X@CQC.ORG.UK"},
    {"name": "x", "email": "outliers+rxf@england.example.nhs.uk"},
    {"name": "x", "webhook": "https://Hooks.CQC.org.uk:8443/x"},
]


def _deliver(db: Database, directory: Directory, mail: Path) -> Any:
    return asyncio.run(
        deliver_due(
            db, directory, renderer_for, {"email": EmlTransport(mail), "webhook": EmlTransport(mail)},
            plot_for=lambda notice: SAMPLE_PNG, clock=lambda: NOW, rng=random.Random(1),
        )
    )  # fmt: skip


@pytest.mark.parametrize("contact", SLIPPED_ADDRESSES)
@pytest.mark.parametrize(("template", "role"), TRUST_LETTERS)
def test_a_slipped_directory_cannot_queue_a_trust_letter_to_a_regulator(
    db: Database, tmp_path: Path, template: str, role: str, contact: dict[str, Any]
) -> None:
    directory = _slipped({("organisations", "RXF", role): contact})
    notice = sample_notice(template)
    rows = {r.recipient_role: r for r in enqueue_vouched(db, notice, directory, now=NOW)}
    held = rows[role]
    assert held.state == "held" and held.address is None
    assert "refusing to send" in (held.last_error or "") and "regulator" in (held.last_error or "")
    assert outbox.release_held(db, directory, NOW) == 0  # releasing does not get it out either
    report = _deliver(db, directory, tmp_path / "mail")
    assert all(r.state == "held" for r in outbox.rows_for_notice(db, notice.notice_id) if r.recipient_role == role)
    sent = list((tmp_path / "mail").glob("*.eml"))
    assert report.sent == len(sent) == len([r for r in rows if r != role])


@pytest.mark.parametrize("contact", SLIPPED_ADDRESSES)
@pytest.mark.parametrize(("template", "role"), TRUST_LETTERS)
def test_a_queued_letter_is_held_at_send_time_if_its_address_became_a_regulators(
    db: Database, tmp_path: Path, template: str, role: str, contact: dict[str, Any]
) -> None:
    good = Directory.load(DATA)
    notice = sample_notice(template)
    enqueue_vouched(db, notice, good, now=NOW)
    # The row itself now carries the regulator's address (an old version queued it, or someone edited it), and
    # the directory agrees: only the send-time check stands between the letter and the regulator.
    slipped = _slipped({("organisations", "RXF", role): contact})
    bad = slipped.resolve("RXF", role, audit=notice.assessment.audit)
    row = next(r for r in outbox.rows_for_notice(db, notice.notice_id) if r.recipient_role == role)
    db.execute(
        "UPDATE outbox SET address = ?, channel = ?, message_id = ? WHERE message_id = ?",
        (bad.address, bad.channel, message_id_for(notice.notice_id, bad.address), row.message_id),
    )
    report = _deliver(db, slipped, tmp_path / "mail")
    after = next(r for r in outbox.rows_for_notice(db, notice.notice_id) if r.recipient_role == role)
    assert after.state == "held" and "regulator" in (after.last_error or "")
    assert report.held >= 1
    for eml in (tmp_path / "mail").glob("*.eml"):
        text = eml.read_text().lower()
        assert "cqc" not in text.split("\n\n", 1)[0] and "england.example" not in text.split("\n\n", 1)[0]


def test_a_regulator_role_on_a_letter_that_is_not_a_regulator_notice_is_held(db: Database) -> None:
    notice = sample_notice("potential_alarm")
    widened = notice.model_copy(update={"recipients": (*notice.recipients, FormalRecipient(role="cqc"))})
    rows = {r.recipient_role: r for r in enqueue_vouched(db, widened, Directory.load(DATA), now=NOW)}
    assert rows["cqc"].state == "held" and "regulator role cqc" in (rows["cqc"].last_error or "")
    assert rows["lead_clinician"].state == "pending"


@pytest.mark.parametrize("template", ["regulator_notice", "non_compliance"])
def test_a_confirmed_alarms_regulator_notice_still_reaches_the_regulator(
    db: Database, tmp_path: Path, template: str
) -> None:
    rows = enqueue_vouched(db, sample_notice(template), Directory.load(DATA), now=NOW)
    assert {r.state for r in rows} == {"pending"}
    assert _deliver(db, Directory.load(DATA), tmp_path / "mail").sent == 2


def test_the_welsh_regulator_notice_reaches_the_welsh_regulators(db: Database, tmp_path: Path) -> None:
    welsh = sample_assessment(ods_code="7A1", organisation_name="Betsi", country="WLS", band="alarm", value=0.2)
    rows = enqueue_vouched(db, sample_notice("regulator_notice", welsh), Directory.load(DATA), now=NOW)
    assert {r.recipient_role for r in rows} == {"welsh_government", "hiw"} and {r.state for r in rows} == {"pending"}


def test_the_slipped_directory_fixture_really_bypasses_the_load_check() -> None:
    raw = copy.deepcopy(_raw())
    _set(raw, ("organisations", "RXF", "lead_clinician"), {"name": "x", "email": CQC})
    with pytest.raises(DirectoryError):
        Directory.from_mapping(raw)
    assert (
        _slipped({("organisations", "RXF", "lead_clinician"): {"name": "x", "email": CQC}})
        .resolve("RXF", "lead_clinician")
        .email
        == CQC
    )
