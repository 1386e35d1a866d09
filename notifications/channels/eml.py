"""Write letters as ``.eml`` files instead of sending them: the embedded runner's transport when no SMTP
server is configured, and a way to read exactly what would have been sent.

The file name is the Message-ID, and the content is byte-identical for the same letter, so running again
rewrites a file rather than adding a second one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from notifications.channels.base import LETTER_POLICY, DeliveryError, OutgoingMessage, build_email

_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")


def eml_name(message_id: str) -> str:
    return _UNSAFE.sub("_", message_id.strip("<>")) + ".eml"


class EmlTransport:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    async def send(self, message: OutgoingMessage) -> None:
        data = build_email(message).as_bytes(policy=LETTER_POLICY)
        target = self.directory / eml_name(message.message_id)
        tmp = target.with_suffix(".eml.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, target)  # atomic: a reader never sees half a letter
        except OSError as exc:
            raise DeliveryError(f"cannot write {target}: {exc.strerror}") from exc
