"""The recipient directory: who, by name and address, holds each role a notice is addressed to.

Notices name recipients by role (``patient_safety_lead`` at RXF, ``cqc``); this module turns a role into a
person with an email address and/or a webhook URL. The directory is a YAML file kept by the service's
operators. It is validated when loaded, and every error names the file and the entry, so a typo is found at
start-up rather than when a letter is due.

Separation. A regulator's address may appear only under ``national``. Anywhere else (a trust role, an audit
role, the sender) it would let a learning-space alert or an unconfirmed potential alarm reach a regulator, so
the directory is refused at load, naming the entry. "A regulator's address" is checked case-insensitively,
ignoring ``+tags``, trailing dots and IDNA spellings: any address or webhook host in ``cqc.org.uk``,
``england.nhs.uk``, a domain the directory declares in ``national_domains``, or the domain of any ``national``
entry (for NHSmail, ``nhs.net``, which every NHS body shares, only the exact mailbox). Names and addresses go
into mail headers, so control characters (CR/LF above all) and header punctuation are refused too. The relay
repeats the check when it sends (``regulator_refusal``), in case a directory ever slips through.

Layout (see ``notifications/recipients.example.yaml``)::

    version: 1
    sender: {name: ..., email: ...}                 # the From address of every letter
    national:                                       # regulators, by role
      nhs_england: {name: ..., email: ...}
    national_domains: [hiw.org.uk]                  # optional: more regulator domains (cqc.org.uk and
                                                    # england.nhs.uk are always regulators')
    audits:
      nela:
        name: National Emergency Laparotomy Audit
        audit_clinical_lead: {name: ..., email: ...}
        audit_supplier: {name: ..., email: ...}     # replies go here (or to the clinical lead)
    organisations:
      RXF:
        patient_safety_lead: {name: ..., email: ..., webhook: https://...}
        lead_clinician: {...}
        audits:                                     # optional: a lead clinician per audit
          nela: {lead_clinician: {...}}
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator

from schemas.config_files import ConfigFileError, load_yaml
from schemas.signals import AuditRole, FormalRole, RegulatorRole, TrustRole
from schemas.vocabulary import Record, is_ods_code

TRUST_ROLES: frozenset[str] = frozenset(get_args(TrustRole))
NATIONAL_ROLES: frozenset[str] = frozenset(get_args(RegulatorRole))
AUDIT_ROLES: frozenset[str] = frozenset(get_args(AuditRole))

Channel = Literal["email", "webhook"]

_ATOM = r"[A-Za-z0-9_%+'-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+")  # used with fullmatch: no trailing newline
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")

# Regulators' own domains: always regulators', whatever a directory says.
REGULATOR_DOMAINS: tuple[str, ...] = ("cqc.org.uk", "england.nhs.uk")
# NHSmail is shared by every NHS organisation, regulators included: there only the exact mailbox identifies one.
SHARED_MAIL_DOMAINS = frozenset({"nhs.net"})
# Characters a name or address must never carry into a header or a letter: CR, LF and every other control or
# invisible formatting character (bidi overrides), and the punctuation that delimits addresses in a header.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_HEADER_PUNCTUATION = frozenset('<>"\\')

ROLE_LABELS: dict[str, str] = {
    "patient_safety_lead": "patient-safety lead",
    "lead_clinician": "lead clinician for the audit",
    "medical_director": "medical director",
    "chief_executive": "chief executive",
    "nhs_england": "NHS England",
    "cqc": "Care Quality Commission",
    "welsh_government": "Welsh Government",
    "hiw": "Healthcare Inspectorate Wales",
    "audit_clinical_lead": "audit clinical lead",
    "audit_supplier": "audit team",
}


class DirectoryError(ConfigFileError):
    """The directory file is unreadable or invalid; the message names the file and the entry."""


class MissingRecipient(LookupError):
    """No contact is listed for a role a notice is addressed to."""


class Contact(Record):
    """A person or mailbox: a name and at least one way to reach them."""

    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(None, max_length=254)
    webhook: str | None = Field(None, max_length=2000)

    @field_validator("name")
    @classmethod
    def _name_is_header_safe(cls, value: str) -> str:
        bad = _unsafe_characters(value)
        if bad:
            raise ValueError(f"{value!r} contains {bad}, which a name in a letter's header must not")
        if not value.strip():
            raise ValueError("is blank")
        return value

    @field_validator("email")
    @classmethod
    def _email_shape(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.fullmatch(value):
            raise ValueError(f"{value!r} is not an email address (a bare address, no name or spaces)")
        return value

    @field_validator("webhook")
    @classmethod
    def _webhook_shape(cls, value: str | None) -> str | None:
        if value is not None:
            webhook_host(value)
        return value

    @model_validator(mode="after")
    def _reachable(self) -> Contact:
        if self.email is None and self.webhook is None:
            raise ValueError("needs an email or a webhook (or both)")
        return self

    @property
    def channel(self) -> Channel:
        """Email when there is one (a letter is the record); the webhook otherwise."""
        return "email" if self.email is not None else "webhook"

    @property
    def address(self) -> str:
        """The address the channel sends to; it also keys the Message-ID."""
        value = self.email if self.channel == "email" else self.webhook
        assert value is not None
        return value


def _unsafe_characters(text: str) -> str:
    """A description of the header-unsafe characters in ``text``, or "" when there are none."""
    found = sorted({c for c in text if c in _HEADER_PUNCTUATION or unicodedata.category(c) in _UNSAFE_CATEGORIES})
    return ", ".join(f"U+{ord(c):04X}" if not c.isprintable() else repr(c) for c in found)


def _ip_address(host: str) -> str | None:
    """The address a numeric host connects to, in one spelling, or None for a DNS name.

    The resolver reads more than dotted quads (``inet_aton``: ``3405803781``, ``0xcb.0.0x71.5``, ``203.0.113.005``,
    ``203.113.5``), and ``::ffff:203.0.113.5`` is an IPv4 address too: every spelling must compare equal to the
    regulator's, or a trust's webhook could name a regulator's server in another form. A host whose last label is
    a number is an address (no top-level domain is numeric) and is refused unless it reads as one.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        last = host.rpartition(".")[2]
        if not re.fullmatch(r"[0-9]+|0x[0-9a-f]*", last):
            return None
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            raise ValueError(f"{host!r} is neither a host name nor an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.ipv4_mapped or ip.sixtofour or ip
    return str(ip)


def canonical_host(host: str) -> str:
    """A host as the network reads it: IDNA-encoded (full-width dots and digits too), lower case, no trailing dot;
    an IP address in its one spelling."""
    try:
        ascii_host = host.encode("idna").decode("ascii").lower().removesuffix(".")
    except UnicodeError:
        raise ValueError(f"{host!r} is not a valid host name") from None
    address = _ip_address(ascii_host)
    if address is not None:
        return address
    if not _HOST.fullmatch(ascii_host):
        raise ValueError(f"{host!r} is not a valid host name")
    return ascii_host


def webhook_host(url: str) -> str:
    """The canonical host a webhook URL posts to; ValueError unless it is a plain http(s) URL."""
    if _unsafe_characters(url) or any(c.isspace() for c in url):
        raise ValueError(f"{url!r} contains spaces, control characters or header punctuation")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if "@" in parts.netloc:
        raise ValueError(f"{url!r} has a user name or password before its host; put credentials elsewhere")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return canonical_host(parts.hostname or "")


def mailbox(email: str) -> str:
    """An address as a mail system delivers it: case folded, ``+tag`` dropped, canonical domain."""
    local, _, domain = email.rpartition("@")
    return f"{local.split('+', 1)[0].lower()}@{canonical_host(domain)}"


def _under(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


@dataclass(frozen=True, slots=True)
class RegulatorAddresses:
    """What counts as a regulator's address: whole domains, and exact mailboxes on shared domains."""

    domains: frozenset[str]
    mailboxes: frozenset[str]

    def why(self, contact: Contact) -> str | None:
        """Why ``contact`` reaches a regulator (any of its addresses), or None."""
        if contact.email is not None:
            box = mailbox(contact.email)
            if box in self.mailboxes:
                return f"{contact.email} is a regulator's mailbox (listed under national)"
            domain = box.rpartition("@")[2]
            hit = next((d for d in sorted(self.domains) if _under(domain, d)), None)
            if hit is not None:
                return f"{contact.email} is an address in the regulator domain {hit}"
        if contact.webhook is not None:
            host = webhook_host(contact.webhook)
            hit = next((d for d in sorted(self.domains) if _under(host, d)), None)
            if hit is not None:
                return f"the webhook {contact.webhook} posts to {host}, in the regulator domain {hit}"
        return None


@dataclass(frozen=True, slots=True)
class ResolvedRecipient:
    """A notice's recipient role, with the contact that holds it."""

    role: str
    ods_code: str | None
    contact: Contact

    @property
    def name(self) -> str:
        return self.contact.name

    @property
    def address(self) -> str:
        return self.contact.address

    @property
    def channel(self) -> Channel:
        return self.contact.channel

    @property
    def role_label(self) -> str:
        return ROLE_LABELS.get(self.role, self.role)


class _AuditEntry(Record):
    name: str = Field(min_length=1)
    audit_clinical_lead: Contact | None = None
    audit_supplier: Contact | None = None
    operations: Contact | None = None  # who runs signalbox for this audit: told when a watchdog finds something


def _one_key_per_audit(value: dict[str, Any]) -> dict[str, Any]:
    """Audit names match whatever their case, so ``nela`` and ``NELA`` in one mapping are the same key twice:
    a reviewer reading one entry would be misled about where the other sends letters."""
    seen: dict[str, str] = {}
    for key in value:
        earlier = seen.setdefault(key.casefold(), key)
        if earlier != key:
            raise ValueError(f"the audit {key!r} is listed twice (also as {earlier!r}); audit names ignore case")
    return value


class _OrganisationEntry(Record):
    name: str | None = None
    patient_safety_lead: Contact | None = None
    lead_clinician: Contact | None = None
    medical_director: Contact | None = None
    chief_executive: Contact | None = None
    audits: dict[str, dict[TrustRole, Contact]] = Field(default_factory=dict)

    _audits = field_validator("audits")(_one_key_per_audit)


class _National(Record):
    nhs_england: Contact | None = None
    cqc: Contact | None = None
    welsh_government: Contact | None = None
    hiw: Contact | None = None


class _DirectoryFile(Record):
    version: Literal[1]
    sender: Contact
    national: _National = Field(default_factory=_National)
    national_domains: tuple[str, ...] = ()
    audits: dict[str, _AuditEntry] = Field(default_factory=dict)
    organisations: dict[str, _OrganisationEntry] = Field(default_factory=dict)
    operations: Contact | None = None  # told about watchdog findings for audits without their own contact

    @field_validator("sender")
    @classmethod
    def _sender_has_email(cls, value: Contact) -> Contact:
        if value.email is None:
            raise ValueError("the sender needs an email address (it is the From of every letter)")
        return value

    @field_validator("national_domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(canonical_host(d) for d in value)

    _audits = field_validator("audits")(_one_key_per_audit)

    @field_validator("organisations")
    @classmethod
    def _ods_keys(cls, value: dict[str, _OrganisationEntry]) -> dict[str, _OrganisationEntry]:
        for code in value:
            if not is_ods_code(code):
                raise ValueError(f"{code!r} is not an ODS code (3–9 capital letters or digits)")
        return value


def _by_audit(entries: dict[str, Any], audit: str | None) -> Any:
    """Audit names match whatever their case (``nela`` in a directory is the rule sets' ``NELA``)."""
    if audit is None:
        return None
    folded = audit.casefold()
    return next((value for key, value in entries.items() if key.casefold() == folded), None)


def _regulator_addresses(data: _DirectoryFile) -> RegulatorAddresses:
    domains = set(REGULATOR_DOMAINS) | set(data.national_domains)
    mailboxes: set[str] = set()
    for role in sorted(NATIONAL_ROLES):
        contact: Contact | None = getattr(data.national, role)
        if contact is None:
            continue
        if contact.email is not None:
            box = mailbox(contact.email)
            mailboxes.add(box)
            domain = box.rpartition("@")[2]
            if not any(_under(domain, shared) for shared in SHARED_MAIL_DOMAINS):
                domains.add(domain)
        if contact.webhook is not None:
            domains.add(webhook_host(contact.webhook))
    return RegulatorAddresses(frozenset(domains), frozenset(mailboxes))


def _non_regulator_contacts(data: _DirectoryFile) -> Iterator[tuple[str, Contact]]:
    """Every contact outside ``national``, with the path that names its entry."""
    yield "sender", data.sender
    if data.operations is not None:
        yield "operations", data.operations
    for audit, entry in data.audits.items():
        if entry.operations is not None:
            yield f"audits.{audit}.operations", entry.operations
        for role in sorted(AUDIT_ROLES):
            contact: Contact | None = getattr(entry, role)
            if contact is not None:
                yield f"audits.{audit}.{role}", contact
    for code, org in data.organisations.items():
        for role in sorted(TRUST_ROLES):
            found: Contact | None = getattr(org, role)
            if found is not None:
                yield f"organisations.{code}.{role}", found
        for audit, contacts in org.audits.items():
            for role, per_audit in contacts.items():
                yield f"organisations.{code}.audits.{audit}.{role}", per_audit


class Directory:
    """A validated recipient directory. Build it with :meth:`load` or :meth:`from_mapping`."""

    def __init__(self, data: _DirectoryFile, source: str) -> None:
        self._data = data
        self.source = source
        self.regulators = _regulator_addresses(data)

    @classmethod
    def load(cls, path: str | Path) -> Directory:
        path = Path(path)
        try:
            raw = load_yaml(path, "recipient directory")
        except ConfigFileError as exc:
            raise DirectoryError(str(exc)) from None
        return cls.from_mapping(raw, source=str(path))

    @classmethod
    def from_mapping(cls, raw: Any, *, source: str = "<directory>") -> Directory:
        if not isinstance(raw, dict):
            raise DirectoryError(f"{source}: the recipient directory must be a mapping at the top level")
        try:
            data = _DirectoryFile.model_validate(raw)
        except ValidationError as exc:
            problems = []
            for err in exc.errors(include_url=False):
                where = ".".join(str(p) for p in err["loc"]) or "(top level)"
                message = err["msg"].removeprefix("Value error, ")
                if err["type"] == "missing":
                    message = "is missing"
                elif err["type"] == "extra_forbidden":
                    message = "is not a known key here"
                problems.append(f"{where}: {message}")
            raise DirectoryError(f"{source}: " + "; ".join(problems)) from None
        directory = cls(data, source)
        leaks = [
            f"{where}: {why}; a regulator may be listed only under national"
            for where, contact in _non_regulator_contacts(data)
            if (why := directory.regulators.why(contact)) is not None
        ]
        if leaks:
            raise DirectoryError(f"{source}: " + "; ".join(leaks))
        trusts = {
            mailbox(c.email)
            for where, c in _non_regulator_contacts(data)
            if where.startswith("organisations.") and c.email
        }
        shared = [
            f"{where}: {c.email} is a trust's contact; operations notices never go to a trust"
            for where, c in _non_regulator_contacts(data)
            if where.endswith("operations") and c.email and mailbox(c.email) in trusts
        ]
        if shared:
            raise DirectoryError(f"{source}: " + "; ".join(shared))
        return directory

    @property
    def sender(self) -> Contact:
        return self._data.sender

    def operations_contact(self, audit: str | None) -> Contact | None:
        """Who is told about a watchdog's findings: the audit's ``operations`` contact, else the directory's
        top-level ``operations``; None when neither is listed. Never a trust's or a regulator's contact (refused
        at load)."""
        entry = _by_audit(self._data.audits, audit) if audit else None
        found: Contact | None = entry.operations if entry is not None else None
        return found or self._data.operations

    def organisation_name(self, ods_code: str) -> str | None:
        entry = self._data.organisations.get(ods_code)
        return entry.name if entry else None

    def audit_name(self, audit: str) -> str:
        entry = _by_audit(self._data.audits, audit)
        return entry.name if entry else audit

    def resolve(self, ods_code: str | None, role: str, *, audit: str | None = None) -> Contact:
        """The contact for ``role``: at the trust ``ods_code``, nationally, or for ``audit``.

        A trust role looks for an audit-specific contact first (a lead clinician per audit), then the trust's.
        """
        if role in TRUST_ROLES:
            if ods_code is None:
                raise MissingRecipient(f"The role {role} belongs to a trust, but no ODS code was given.")
            org = self._data.organisations.get(ods_code)
            if org is None:
                raise MissingRecipient(
                    f"{self.source} lists no organisation {ods_code}, so there is nobody to send the "
                    f"{ROLE_LABELS[role]}'s letter to; add organisations.{ods_code}.{role}."
                )
            per_audit: dict[str, Contact] | None = _by_audit(org.audits, audit)
            if per_audit is not None and role in per_audit:
                return per_audit[role]
            contact: Contact | None = getattr(org, role)
            if contact is None:
                raise MissingRecipient(
                    f"{self.source} names no {role} ({ROLE_LABELS[role]}) for {ods_code}, so the letter has "
                    f"nobody to go to; add organisations.{ods_code}.{role}."
                )
            return contact
        if role in NATIONAL_ROLES:
            national: Contact | None = getattr(self._data.national, role)
            if national is None:
                raise MissingRecipient(f"{self.source} lists no contact for {ROLE_LABELS[role]}; add national.{role}.")
            return national
        if role in AUDIT_ROLES:
            if audit is None:
                raise MissingRecipient(f"The role {role} belongs to an audit, but no audit was given.")
            entry = _by_audit(self._data.audits, audit)
            found: Contact | None = getattr(entry, role) if entry else None
            if found is None:
                raise MissingRecipient(
                    f"{self.source} lists no {ROLE_LABELS[role]} for the audit {audit}; add audits.{audit}.{role}."
                )
            return found
        raise MissingRecipient(f"{role!r} is not a recipient role signalbox knows ({sorted(get_args(FormalRole))}).")

    def recipient(self, ods_code: str | None, role: str, *, audit: str | None = None) -> ResolvedRecipient:
        return ResolvedRecipient(role=role, ods_code=ods_code, contact=self.resolve(ods_code, role, audit=audit))

    def reply_contact(self, audit: str) -> Contact:
        """Who a reader should write back to about ``audit``: its team, else its clinical lead, else the sender."""
        entry: _AuditEntry | None = _by_audit(self._data.audits, audit)
        if entry is not None:
            for contact in (entry.audit_supplier, entry.audit_clinical_lead):
                if contact is not None:
                    return contact
        return self._data.sender
