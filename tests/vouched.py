"""Queue a notice's letters the way the recorder does: outbox rows and the trail's ``notice`` entry together.

The relay sends only letters the trail vouches for (``services.vouch``), so a test that queues letters directly
must also record their notice, in the log of its space, in the same transaction.
"""

from __future__ import annotations

from datetime import datetime

from notifications import outbox
from notifications.outbox import AnyNotice, OutboxRow
from notifications.recipients import Directory
from services.db import Database
from services.trail.store import Trail
from services.vouch import LOG_FOR_SPACE


def enqueue_vouched(db: Database, notice: AnyNotice, directory: Directory, *, now: datetime) -> list[OutboxRow]:
    trail = Trail(db)
    with db.transaction():
        rows = outbox.enqueue(db, notice, directory, now=now)
        trail.append(
            LOG_FOR_SPACE[notice.space],
            "notice",
            notice.model_dump(mode="json"),
            case_id=notice.case_id,
            decision_id=notice.decision_id,
        )
    return rows
