"""Send letters by SMTP (NHSmail or a local relay) with aiosmtplib.

Settings come from the environment:

=============================  =========================================  =========
``SIGNALBOX_SMTP_HOST``        server name; unset means "no SMTP"         (none)
``SIGNALBOX_SMTP_PORT``        port                                       587
``SIGNALBOX_SMTP_STARTTLS``    upgrade with STARTTLS (true/false)         true
``SIGNALBOX_SMTP_USER``        login name, if the server wants one        (none)
``SIGNALBOX_SMTP_PASSWORD``    password for ``SIGNALBOX_SMTP_USER``       (none)
``SIGNALBOX_SMTP_TIMEOUT``     seconds per SMTP operation                 30
=============================  =========================================  =========

A 4xx reply or a broken connection is worth retrying; a 5xx reply is permanent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import aiosmtplib

from notifications.channels.base import LETTER_POLICY, DeliveryError, OutgoingMessage, build_email

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int = 587
    starttls: bool = True
    user: str | None = None
    password: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SmtpSettings | None:
        """The settings in ``SIGNALBOX_SMTP_*``, or None when no host is set."""
        env = os.environ if env is None else env
        host = env.get("SIGNALBOX_SMTP_HOST", "").strip()
        if not host:
            return None
        starttls_text = env.get("SIGNALBOX_SMTP_STARTTLS", "true").strip().lower()
        if starttls_text not in _TRUE | _FALSE:
            raise ValueError(f"SIGNALBOX_SMTP_STARTTLS must be true or false, not {starttls_text!r}")
        port_text = env.get("SIGNALBOX_SMTP_PORT", "587").strip()
        if not port_text.isdigit():
            raise ValueError(f"SIGNALBOX_SMTP_PORT must be a port number, not {port_text!r}")
        user = env.get("SIGNALBOX_SMTP_USER") or None
        password = env.get("SIGNALBOX_SMTP_PASSWORD") or None
        if (user is None) != (password is None):
            raise ValueError("set both SIGNALBOX_SMTP_USER and SIGNALBOX_SMTP_PASSWORD, or neither")
        return cls(
            host=host,
            port=int(port_text),
            starttls=starttls_text in _TRUE,
            user=user,
            password=password,
            timeout=float(env.get("SIGNALBOX_SMTP_TIMEOUT", "30")),
        )

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
