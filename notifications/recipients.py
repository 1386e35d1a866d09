"""The recipient directory: who, by name and address, holds each role a notice is addressed to.

Notices name recipients by role (``patient_safety_lead`` at RXF, ``cqc``); this module turns a role into a
person with an email address and/or a webhook URL. The directory is a YAML file kept by the service's
operators. It is validated when loaded, and every error names the file and the entry, so a typo is found at
start-up rather than when a letter is due.

Layout (see ``notifications/recipients.example.yaml``)::

    version: 1
    sender: {name: ..., email: ...}                 # the From address of every letter
    national:                                       # regulators, by role
      nhs_england: {name: ..., email: ...}
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

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.signals import AuditRole, FormalRole, RegulatorRole, TrustRole

TRUST_ROLES: frozenset[str] = frozenset(get_args(TrustRole))
NATIONAL_ROLES: frozenset[str] = frozenset(get_args(RegulatorRole))
AUDIT_ROLES: frozenset[str] = frozenset(get_args(AuditRole))

Channel = Literal["email", "webhook"]

_EMAIL = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_ODS = re.compile(r"^[A-Z0-9]{3,9}$")

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


class DirectoryError(ValueError):
    """The directory file is unreadable or invalid; the message names the file and the entry."""


class MissingRecipient(LookupError):
    """No contact is listed for a role a notice is addressed to."""


class Contact(BaseModel):
    """A person or mailbox: a name and at least one way to reach them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    email: str | None = None
    webhook: str | None = None

    @field_validator("email")
    @classmethod
    def _email_shape(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError(f"{value!r} is not an email address")
        return value

    @field_validator("webhook")
    @classmethod
    def _webhook_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
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


class _AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    audit_clinical_lead: Contact | None = None
    audit_supplier: Contact | None = None


class _OrganisationEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    patient_safety_lead: Contact | None = None
    lead_clinician: Contact | None = None
    medical_director: Contact | None = None
    chief_executive: Contact | None = None
    audits: dict[str, dict[TrustRole, Contact]] = Field(default_factory=dict)


class _National(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    nhs_england: Contact | None = None
    cqc: Contact | None = None
    welsh_government: Contact | None = None
    hiw: Contact | None = None


class _DirectoryFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1]
    sender: Contact
    national: _National = Field(default_factory=_National)
    audits: dict[str, _AuditEntry] = Field(default_factory=dict)
    organisations: dict[str, _OrganisationEntry] = Field(default_factory=dict)

    @field_validator("sender")
    @classmethod
    def _sender_has_email(cls, value: Contact) -> Contact:
        if value.email is None:
            raise ValueError("the sender needs an email address (it is the From of every letter)")
        return value

    @field_validator("organisations")
    @classmethod
    def _ods_keys(cls, value: dict[str, _OrganisationEntry]) -> dict[str, _OrganisationEntry]:
        for code in value:
            if not _ODS.match(code):
                raise ValueError(f"{code!r} is not an ODS code (3–9 capital letters or digits)")
        return value


def _by_audit(entries: dict[str, Any], audit: str | None) -> Any:
    """Audit names match whatever their case (``nela`` in a directory is the rule sets' ``NELA``)."""
    if audit is None:
        return None
    folded = audit.casefold()
    return next((value for key, value in entries.items() if key.casefold() == folded), None)


class Directory:
    """A validated recipient directory. Build it with :meth:`load` or :meth:`from_mapping`."""

    def __init__(self, data: _DirectoryFile, source: str) -> None:
        self._data = data
        self.source = source

    @classmethod
    def load(cls, path: str | Path) -> Directory:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DirectoryError(f"{path}: cannot read the recipient directory ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise DirectoryError(f"{path}: not valid YAML ({exc})") from exc
        return cls.from_mapping(raw, source=str(path))

    @classmethod
    def from_mapping(cls, raw: Any, *, source: str = "<directory>") -> Directory:
        if not isinstance(raw, dict):
            raise DirectoryError(f"{source}: the recipient directory must be a mapping at the top level")
        try:
            return cls(_DirectoryFile.model_validate(raw), source)
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
            raise DirectoryError(f"{source}: " + "; ".join(problems)) from exc

    @property
    def sender(self) -> Contact:
        return self._data.sender

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
        entry = self._data.audits.get(audit)
        if entry is not None:
            for contact in (entry.audit_supplier, entry.audit_clinical_lead):
                if contact is not None:
                    return contact
        return self._data.sender
