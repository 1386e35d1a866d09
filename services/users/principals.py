"""Who a person is to signalbox: a role bound to one trust, to audits, or (a regulator) to neither.

The binding is what decides what a person sees: a trust role is bound to exactly one ODS code, an audit role to
one or more audits, a regulator role to neither. ``check_binding`` is the one place that rule is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from schemas.signals import AuditRole, RegulatorRole, TrustRole
from schemas.vocabulary import is_ods_code

Audience = Literal["trust", "audit", "regulator"]
TRUST_ROLES: tuple[str, ...] = get_args(TrustRole)
AUDIT_ROLES: tuple[str, ...] = get_args(AuditRole)
REGULATOR_USER_ROLES: tuple[str, ...] = get_args(RegulatorRole)
ROLES: tuple[str, ...] = TRUST_ROLES + AUDIT_ROLES + REGULATOR_USER_ROLES

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
AUDIT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,49}")


class BindingError(ValueError):
    """A role with the wrong binding (a trust role without an ODS code, a regulator bound to a trust…)."""


def audience_of(role: str) -> Audience:
    if role in TRUST_ROLES:
        return "trust"
    if role in AUDIT_ROLES:
        return "audit"
    if role in REGULATOR_USER_ROLES:
        return "regulator"
    raise BindingError(f"unknown role {role!r}; one of {', '.join(ROLES)}")


def check_binding(name: str, role: str, org: str | None, audits: tuple[str, ...]) -> None:
    """Raise BindingError unless ``role`` is bound as its audience requires, in one sentence."""
    if not NAME_RE.fullmatch(name):
        raise BindingError(f"user name {name!r} must be 1 to 100 of A-Z a-z 0-9 . _ @ - (starting alphanumeric)")
    audience = audience_of(role)
    if audience == "trust":
        if org is None or audits:
            raise BindingError(f"a {role} is bound to exactly one trust: give --org ODS and no --audit")
        if not is_ods_code(org):
            raise BindingError(f"--org must be an ODS code (3 to 9 of A-Z 0-9), not {org!r}")
    elif audience == "audit":
        if org is not None or not audits:
            raise BindingError(f"a {role} is bound to one or more audits: give --audit AUDIT and no --org")
        for audit in audits:
            if not AUDIT_RE.fullmatch(audit):
                raise BindingError(f"--audit must be an audit name such as NELA, not {audit!r}")
    elif org is not None or audits:
        raise BindingError(f"a {role} is a regulator, bound to no trust and no audit: give neither --org nor --audit")


@dataclass(frozen=True)
class Principal:
    """An authenticated person (or machine client acting for them)."""

    name: str
    role: str
    org: str | None = None
    audits: tuple[str, ...] = ()

    @property
    def audience(self) -> Audience:
        return audience_of(self.role)
