"""Send letters by SMTP (NHSmail or a local relay) with aiosmtplib.

The settings are a value (``SmtpSettings``) the caller gives: notifications read no environment (the service
builds them from ``SIGNALBOX_SMTP_*`` in ``services.settings``).

A 4xx reply or a broken connection is worth retrying; a 5xx reply is permanent.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosmtplib

from notifications.channels.base import LETTER_POLICY, DeliveryError, OutgoingMessage, build_email


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int = 587
    starttls: bool = True
    user: str | None = None
    password: str | None = None
    timeout: float = 30.0

    def __repr__(self) -> str:  # never print the password
        return (
            f"SmtpSettings(host={self.host!r}, port={self.port}, starttls={self.starttls}, "
            f"user={self.user!r}, password={'***' if self.password else None})"
        )


class SmtpTransport:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, message: OutgoingMessage) -> None:
        email = build_email(message)
        # Flattened here rather than by aiosmtplib, which re-folds headers at 78 characters and would split
        # the Message-ID onto a continuation line.
        data = email.as_bytes(policy=LETTER_POLICY)
        if message.sender.email is None or message.recipient.contact.email is None:
            raise DeliveryError("a letter by SMTP needs a sender and a recipient email address", permanent=True)
        s = self.settings
        try:
            await aiosmtplib.send(
                data,
                sender=message.sender.email,
                recipients=[message.recipient.contact.email],
                hostname=s.host,
                port=s.port,
                start_tls=s.starttls,
                username=s.user,
                password=s.password,
                timeout=s.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise DeliveryError(
                f"SMTP server refused the recipient: {'; '.join(str(r) for r in exc.recipients)}",
                permanent=all(500 <= c < 600 for c in codes),
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"SMTP server replied {exc.code} {exc.message}", permanent=500 <= exc.code < 600
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"SMTP delivery to {s.host}:{s.port} failed: {exc}") from exc
