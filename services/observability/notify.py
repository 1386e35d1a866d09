"""Watchdog notices: tell the operations contact (``operations`` in the recipient directory, per audit or for the
whole directory) what the watchdogs found. Never a trust, never a regulator: the directory refuses such an
address for ``operations`` at load, and these notices do not go through the letters' outbox at all, whose spaces
are the learning and formal ones.

Each finding is told once: ``watchdog_notices`` remembers what was sent (watchdog and id), so a release that
stays open is one notice, not one every five minutes. A finding that clears and comes back is not told again;
the metric and the log still show it. The text holds ids and counts only, never a trust's result.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from notifications.channels.base import OutgoingMessage, Transport
from notifications.recipients import Directory, ResolvedRecipient
from notifications.render import RenderedMessage
from schemas.vocabulary import utc_text
from services.db import Database
from services.observability.logs import get_logger
from services.observability.watchdogs import Finding, Survey

log = get_logger("signalbox.watchdogs")

SCHEMA = """
CREATE TABLE IF NOT EXISTS watchdog_notices (
    finding TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    notified_at TEXT NOT NULL
)
"""


@dataclass
class NoticeReport:
    sent: int = 0  # messages
    findings: int = 0  # findings told
    untold: int = 0  # findings with no operations contact to tell


def _key(finding: Finding) -> str:
    return f"{finding.watchdog}/{finding.audit}/{finding.subject}"


def _message(directory: Directory, audit: str, findings: list[Finding], at: datetime) -> RenderedMessage:
    digest = hashlib.sha256("\n".join(sorted(_key(f) for f in findings)).encode()).hexdigest()[:24]
    domain = (directory.sender.email or "signalbox.invalid").rpartition("@")[2]
    scope = directory.audit_name(audit) if audit else "signalbox"
    lines = [f"- {f.line()}" for f in findings]
    text = (
        f"signalbox's watchdogs found {len(findings)} problem(s) for {scope} at {utc_text(at)}:\n\n"
        + "\n".join(lines)
        + "\n\nRun `signalbox check --store ...` for the current picture. This notice carries ids only.\n"
    )
    html = "<p>" + text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>") + "</p>"
    return RenderedMessage(
        subject=f"[signalbox operations] {scope}: {len(findings)} watchdog finding(s)",
        text=text,
        html=html,
        message_id=f"<watchdog-{digest}@{domain}>",
        headers={"X-Signalbox-Kind": "watchdog"},
    )


def notify_operations(
    db: Database, directory: Directory, found: Survey, transports: Mapping[str, Transport]
) -> NoticeReport:
    """Send each new finding to its audit's operations contact (one message per contact), and remember it."""
    db.executescript(SCHEMA)
    told = {str(k) for (k,) in db.query("SELECT finding FROM watchdog_notices")}
    by_audit: dict[str, list[Finding]] = defaultdict(list)
    for finding in found.findings:
        if _key(finding) not in told:
            by_audit[finding.audit].append(finding)
    report = NoticeReport()
    for audit, findings in sorted(by_audit.items()):
        contact = directory.operations_contact(audit or None)
        if contact is None:
            report.untold += len(findings)
            log.warning("watchdog findings with no operations contact", audit=audit, findings=len(findings),
                        hint="add operations: {name, email} to the recipient directory")  # fmt: skip
            continue
        rendered = _message(directory, audit, findings, found.at)
        recipient = ResolvedRecipient(role="operations", ods_code=None, contact=contact)
        message = OutgoingMessage(rendered, directory.sender, recipient, {"kind": "watchdog", "audit": audit})
        try:
            asyncio.run(transports[contact.channel].send(message))
        except Exception as exc:  # told next run: nothing is remembered as sent
            log.error("watchdog notice not sent", audit=audit, error=f"{type(exc).__name__}: {exc}")
            continue
        with db.transaction():
            db.executemany(
                "INSERT INTO watchdog_notices (finding, message_id, notified_at) VALUES (?, ?, ?)",
                [(_key(f), rendered.message_id, utc_text(found.at)) for f in findings],
            )
        report.sent += 1
        report.findings += len(findings)
    return report
