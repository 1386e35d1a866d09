"""Send what the outbox holds: the one choice of transports, and the loop that runs the relay until nothing is due.

Every sender (``signalbox deliver``, the embedded ``route``, a worker's timer) comes here, so a letter goes by
the same channels whichever process sends it: SMTP when it is configured, else ``.eml`` files in a folder;
webhooks always. The relay itself (claim, check the address, render, send, mark) is ``relay.deliver_due``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from notifications.channels.base import Transport
from notifications.channels.eml import EmlTransport
from notifications.channels.smtp import SmtpSettings, SmtpTransport
from notifications.channels.webhook import WebhookTransport
from notifications.recipients import Directory
from notifications.render import renderer_for
from schemas.notices import AnyNotice
from services.db import Database
from services.letters.relay import DeliveryReport, deliver_due
from services.observability import metrics

PASS_LIMIT = 500  # letters per relay pass; passes repeat until one finds nothing to do


def default_transports(mail_dir: str | Path, smtp: SmtpSettings | None) -> dict[str, Transport]:
    """SMTP when ``smtp`` is given (``Settings.smtp``), else ``.eml`` files under ``mail_dir``; webhooks always."""
    email: Transport = SmtpTransport(smtp) if smtp is not None else EmlTransport(mail_dir)
    return {"email": email, "webhook": WebhookTransport()}


def deliver(
    db: Database,
    directory: Directory,
    transports: Mapping[str, Transport],
    *,
    plot_for: Callable[[AnyNotice], bytes | None],
    clock: Callable[[], datetime],
) -> DeliveryReport:
    """Send every letter that is due, pass after pass, in this call's own event loop (callers are synchronous:
    a command, the embedded runner, the worker's letters process). Returns what all the passes did together."""
    total = DeliveryReport()

    async def run() -> None:
        while True:
            report = await deliver_due(
                db, directory, renderer_for, transports, plot_for=plot_for,
                clock=clock, rng=random.Random(), limit=PASS_LIMIT,
            )  # fmt: skip
            total.add(report)
            if report.sent + report.failed + report.dead + report.held == 0:
                return

    asyncio.run(run())
    metrics.count_delivery(total.latencies)
    return total
