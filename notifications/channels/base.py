"""What every delivery channel shares: the message handed to a transport, and how a transport fails.

A transport either returns (the far end accepted the message) or raises ``DeliveryError``. ``permanent``
says whether retrying can help: a refused mailbox or a 404 will not fix itself, a dropped connection may.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any, Protocol

from notifications.recipients import Contact, ResolvedRecipient
from notifications.render import RenderedMessage

# CRLF line ends, and headers folded only past SMTP's own 998-character limit, so a long Message-ID stays on
# its header's line and matches the outbox row byte for byte.
LETTER_POLICY = policy.SMTP.clone(max_line_length=998)


class DeliveryError(Exception):
    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A rendered letter on its way to one recipient."""

    rendered: RenderedMessage
    sender: Contact
    recipient: ResolvedRecipient
    metadata: dict[str, Any]

    @property
    def message_id(self) -> str:
        return self.rendered.message_id


class Transport(Protocol):
    async def send(self, message: OutgoingMessage) -> None: ...


def _address(contact: Contact) -> Address:
    assert contact.email is not None
    username, domain = contact.email.rsplit("@", 1)
    return Address(display_name=contact.name, username=username, domain=domain)


def build_email(message: OutgoingMessage) -> EmailMessage:
    """A multipart/alternative letter (text, then HTML). Byte-identical for the same message, so a retry or
    a rewritten .eml is the same letter: the Date is the notice's, the MIME boundary derives from the id."""
    if message.recipient.contact.email is None:
        raise DeliveryError(f"{message.recipient.role} has no email address", permanent=True)
    email = EmailMessage(policy=LETTER_POLICY)
    email["From"] = _address(message.sender)
    email["To"] = _address(message.recipient.contact)
    email["Subject"] = message.rendered.subject
    for name, value in message.rendered.headers.items():
        email[name] = value
    email.set_content(message.rendered.text, subtype="plain", charset="utf-8")
    email.add_alternative(message.rendered.html, subtype="html", charset="utf-8")
    email.set_boundary("=_signalbox_" + hashlib.sha256(message.message_id.encode()).hexdigest()[:32])
    return email
