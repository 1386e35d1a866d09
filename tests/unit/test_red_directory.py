"""Red team: a regulator's server named in another spelling is still the regulator's.

The directory compares webhook hosts with the regulators' entries. The resolver, though, reads far more than a
dotted quad: ``inet_aton`` takes ``3405803781``, ``0xcb.0.0x71.5``, ``0313.0.0161.05``, ``203.0.113.005`` and
``203.113.5`` (short forms), IPv6 carries IPv4 as ``::ffff:203.0.113.5`` and 6to4, and IDNA turns full-width
digits into ASCII ones. Any of them under a trust role would carry a learning-space alert to a regulator whose
national entry posts to ``203.0.113.5``. Each is refused at load, and held at send time if a directory slipped.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from notifications.recipients import Directory, DirectoryError, _DirectoryFile, canonical_host, mailbox, webhook_host
from services.db import Database
from services.letters import outbox
from tests.support.samples import sample_notice

DATA = Path(__file__).parents[1] / "data" / "recipients.yaml"
REGULATOR_IP = "203.0.113.5"
SPELLINGS = [
    "203.0.113.5",
    "203.0.113.5.",  # trailing dot
    "3405803781",  # one 32-bit number
    "0xcb007105",
    "0xCB.0.0x71.0x5",
    "0313.0.0161.05",  # octal
    "203.0.113.005",  # a leading zero: octal 5 to the resolver
    "203.0.28933",  # short forms: the last part fills the rest
    "203.28933",
    "[::ffff:203.0.113.5]",  # IPv4-mapped IPv6
    "[::FFFF:CB00:7105]",
    "[2002:cb00:7105::1]",  # 6to4
    "３４０５８０３７８１",  # full-width digits: IDNA makes them ASCII
    "２０３．０．１１３．５",  # full-width digits and dots
]
NOT_HOSTS = ["1.2.3.4.5", "999.1.1.1", "1.2.3.0x", "4294967296", "203.0.113.5.6"]
LOCATIONS = [
    ("organisations", "RXF", "patient_safety_lead"),
    ("organisations", "RXF", "lead_clinician"),
    ("organisations", "RXF", "chief_executive"),
    ("organisations", "RXF", "audits", "nela", "lead_clinician"),
    ("audits", "nela", "audit_clinical_lead"),
    ("audits", "nela", "audit_supplier"),
]


def _raw(national_webhook: str = f"https://{REGULATOR_IP}/signalbox") -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(DATA.read_text())
    raw["national"]["cqc"]["webhook"] = national_webhook
    return raw


def _set(raw: dict[str, Any], path: tuple[str, ...], contact: dict[str, Any]) -> None:
    node = raw
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = contact


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_of_an_address_is_the_address(spelling: str) -> None:
    assert webhook_host(f"https://{spelling}:8443/x") == REGULATOR_IP


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("path", LOCATIONS, ids=".".join)
def test_a_regulators_server_in_another_spelling_is_refused_naming_the_entry(
    path: tuple[str, ...], spelling: str
) -> None:
    raw = _raw()
    _set(raw, path, {"name": "Risk register", "webhook": f"https://{spelling}/alerts"})
    with pytest.raises(DirectoryError) as caught:
        Directory.from_mapping(raw, source="dir.yaml")
    message = str(caught.value)
    assert message.startswith("dir.yaml: ") and ".".join(path) in message and REGULATOR_IP in message


@pytest.mark.parametrize("spelling", SPELLINGS[1:])
def test_the_national_entry_in_another_spelling_still_marks_the_server(spelling: str) -> None:
    raw = _raw(f"https://{spelling}/signalbox")
    _set(raw, LOCATIONS[0], {"name": "Risk register", "webhook": f"https://{REGULATOR_IP}/alerts"})
    with pytest.raises(DirectoryError, match=r"organisations\.RXF\.patient_safety_lead"):
        Directory.from_mapping(raw, source="dir.yaml")


@pytest.mark.parametrize("host", NOT_HOSTS)
def test_a_number_that_is_no_address_is_no_host(host: str) -> None:
    with pytest.raises(ValueError, match="neither a host name nor an IP address"):
        webhook_host(f"https://{host}/x")


def test_another_trusts_server_and_names_ending_in_letters_are_accepted() -> None:
    raw = _raw()
    _set(raw, LOCATIONS[0], {"name": "Risk register", "webhook": "https://203.0.113.6/alerts"})
    _set(raw, LOCATIONS[1], {"name": "Risk register", "webhook": "https://203.0.113.5.example.nhs.uk/alerts"})
    Directory.from_mapping(raw, source="dir.yaml")


def test_an_email_domain_in_another_spelling_is_the_same_mailbox() -> None:
    assert mailbox("Outliers+x@0313.0.0161.05") == mailbox("outliers@203.0.113.5") == "outliers@203.0.113.5"


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_slipped_directory_holds_the_letter_at_send_time(tmp_path: Path, spelling: str) -> None:
    raw = _raw()
    for role in ("patient_safety_lead", "lead_clinician"):
        _set(raw, ("organisations", "RXF", role), {"name": "Risk register", "webhook": f"https://{spelling}/x"})
        _set(raw, ("organisations", "RXF", "audits", "nela", role), {"name": "R", "webhook": f"https://{spelling}/x"})
    slipped = Directory(_DirectoryFile.model_validate(raw), "slipped.yaml")
    db = Database(tmp_path / "outbox.sqlite")
    outbox.ensure_schema(db)
    try:
        rows = outbox.enqueue(db, sample_notice("learning_alert"), slipped)
        assert rows and all(r.state == "held" and "regulator" in (r.last_error or "") for r in rows)
    finally:
        db.close()


def _spellings(address: ipaddress.IPv4Address, parts: int, radix: list[int]) -> str:
    """``address`` as ``inet_aton`` reads it: ``parts`` numbers (the last fills the rest), each in a radix."""
    value = int(address)
    widths = {1: [32], 2: [8, 24], 3: [8, 8, 16], 4: [8, 8, 8, 8]}[parts]
    numbers, shift = [], 32
    for width in widths:
        shift -= width
        numbers.append((value >> shift) & ((1 << width) - 1))
    form = {8: "0{:o}", 10: "{:d}", 16: "0x{:x}"}
    return ".".join(form[r].format(n) for n, r in zip(numbers, radix, strict=False))


@settings(max_examples=400, deadline=None)
@given(
    address=st.ip_addresses(v=4),
    parts=st.integers(1, 4),
    radix=st.lists(st.sampled_from([8, 10, 16]), min_size=4, max_size=4),
    mapped=st.booleans(),
)
def test_any_spelling_the_resolver_reads_compares_as_the_address_it_reaches(
    address: ipaddress.IPv4Address, parts: int, radix: list[int], mapped: bool
) -> None:
    spelling = f"::ffff:{address}" if mapped else _spellings(address, parts, radix)
    if not mapped:
        assert socket.inet_aton(spelling) == address.packed  # the spelling really reaches the address
    assert canonical_host(spelling) == str(address)


# -- the same audit listed twice under another spelling -----------------------------------------------------------

AUDIT_SPELLINGS = ["NELA", "Nela", "nelA", "NeLa"]


@pytest.mark.parametrize("spelling", AUDIT_SPELLINGS)
@pytest.mark.parametrize("where", ["audits", "organisations.RXF.audits"])
def test_an_audit_listed_twice_in_another_letter_case_is_refused(where: str, spelling: str) -> None:
    """Audit names match whatever their case, so a second spelling is the same key twice: whichever came first
    got the letters, and a reviewer reading the other entry was misled."""
    raw = _raw()
    node = raw
    for key in where.split("."):
        node = node[key]
    contact = {"name": "Someone else", "email": "else@example.nhs.uk"}
    node[spelling] = {"name": "x", "audit_clinical_lead": contact} if where == "audits" else {"lead_clinician": contact}
    with pytest.raises(DirectoryError) as caught:
        Directory.from_mapping(raw, source="dir.yaml")
    assert f"{where}: the audit {spelling!r} is listed twice (also as 'nela')" in str(caught.value)


def test_replies_go_to_the_audit_team_whatever_the_case_of_the_audit_name() -> None:
    directory = Directory.load(DATA)
    team = directory.reply_contact("nela")
    assert team.email == "nela@example.nhs.uk"
    assert directory.reply_contact("NELA") == team  # the rule sets spell it NELA
