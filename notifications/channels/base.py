"""What every delivery channel shares: the message handed to a transport, and how a transport fails.

A transport either returns (the far end accepted the message) or raises ``DeliveryError``. ``permanent``
says whether retrying can help: a refused mailbox or a 404 will not fix itself, a dropped connection may.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from typing import Any, Protocol, cast

from notifications.recipients import Contact, ResolvedRecipient
from notifications.render import MESSAGE_ID_DOMAIN, RenderedMessage

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
    reply_to: Contact | None = None  # the audit team: a reply must reach people, not the service's sender
    cc: tuple[Contact, ...] = ()  # the notice's other recipients, shown as copied (each gets its own letter)

    @property
    def message_id(self) -> str:
        return self.rendered.message_id


class Transport(Protocol):
    async def send(self, message: OutgoingMessage) -> None: ...


def _address(contact: Contact) -> Address:
    assert contact.email is not None
    username, domain = contact.email.rsplit("@", 1)
    return Address(display_name=contact.name, username=username, domain=domain)


def header_message_id(message_id: str, sender: Contact) -> str:
    """The Message-ID as sent: the outbox's id (one per notice and recipient) in the sender's own domain, as
    RFC 5322 asks; the same letter always gets the same header."""
    local = message_id.strip("<>").rsplit("@", 1)[0]
    domain = (sender.email or "").rsplit("@", 1)[-1] or "localhost"
    return f"<{local}@{domain}>"


def root_content_id(message_id: str) -> str:
    """The Content-ID (without angle brackets) of a letter's root part, the text/HTML alternative."""
    local = message_id.strip("<>").rsplit("@", 1)[0]
    return f"body.{hashlib.sha256(local.encode()).hexdigest()[:24]}@{MESSAGE_ID_DOMAIN}"


def build_email(message: OutgoingMessage) -> EmailMessage:
    """A letter: ``multipart/related`` (RFC 2387; ``type=multipart/alternative``, ``start`` naming the root)
    whose root is ``multipart/alternative`` of the text and the HTML, followed by the funnel plot PNG the HTML
    shows by ``cid:`` (Outlook, Outlook on the web and Gmail show no inline SVG and block remote images).
    Letters without a plot have the same shape with the root alone.

    Byte-identical for the same message, so a retry or a rewritten .eml is the same letter: the Date is the
    notice's, every MIME boundary derives from the id. It is an automatic letter (RFC 3834
    ``Auto-Submitted``), so out-of-office replies are not sent back to it; replies go to ``reply_to``."""
    if message.recipient.contact.email is None:
        raise DeliveryError(f"{message.recipient.role} has no email address", permanent=True)
    email = EmailMessage(policy=LETTER_POLICY)
    email["From"] = _address(message.sender)
    email["To"] = _address(message.recipient.contact)
    copied = [_address(c) for c in message.cc if c.email is not None and c.email != message.recipient.contact.email]
    if copied:
        email["Cc"] = copied
    if message.reply_to is not None and message.reply_to.email is not None:
        email["Reply-To"] = _address(message.reply_to)
    email["Subject"] = message.rendered.subject
    for name, value in message.rendered.headers.items():
        email[name] = header_message_id(value, message.sender) if name == "Message-ID" else value
    email["Auto-Submitted"] = "auto-generated"
    email["X-Auto-Response-Suppress"] = "All"  # Outlook/Exchange: no out-of-office or read-receipt replies
    root = MIMEPart(policy=LETTER_POLICY)
    root.set_content(message.rendered.text, subtype="plain", charset="utf-8")
    root.add_alternative(message.rendered.html, subtype="html", charset="utf-8")
    # The top level is multipart/related (RFC 2387) whose root, named by ``start`` and described by ``type``,
    # is the alternative of text and HTML; the images sit beside it. Every letter has this shape, with or
    # without a plot, so a reader (and a test) finds the same structure in every kind of letter.
    email.make_related()
    email.attach(cast(EmailMessage, root))  # typeshed types attach() as taking the parent's class
    root_cid = f"<{root_content_id(message.message_id)}>"
    root["Content-ID"] = root_cid
    email.set_param("type", "multipart/alternative")
    email.set_param("start", root_cid)
    for image in message.rendered.images:
        email.add_related(
            image.data, maintype="image", subtype=image.subtype, cid=f"<{image.cid}>", disposition="inline",
            filename=f"funnel-plot.{image.subtype}",
        )  # fmt: skip
    seed = hashlib.sha256(message.message_id.encode()).hexdigest()
    for depth, part in enumerate(p for p in email.walk() if p.is_multipart()):
        part.set_boundary(f"=_signalbox_{depth}_{seed[:32]}")
    return email
